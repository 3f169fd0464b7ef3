"""Turn folders of runs — finished or half-finished sweeps, or single runs — into a comparison:
leaderboard.csv and leaderboard.md (one row per setting: runs whose configs differ only in
`trainer.seed` share a row), leaderboard_runs.csv (one row per run), compare_time.png,
compare_epoch.png, final_acc.png, and report.html, one page holding all of it;
reported_vs_measured.md/.csv for studies whose configs carry reported figures (studies.py).

    python -m cifarbench.report outputs/multirun/2026-11-24/10-00-00      (or: cifarbench report PATH)
    cifarbench report SWEEP_A SWEEP_B --out DIR                            (several folders, one report)

A multirun writes them into its sweep folder when it ends (LeaderboardCallback, registered in the
root config). Accuracies are fractions; seconds are training seconds. Runs are ranked by the value
the sweeper maximises (`runlog.objective`: final validation accuracy with a validation split, else
final test accuracy; -inf for a run that did not complete), settings by the mean of their runs'
values, so a setting with a failed, diverged or unfinished seed ranks below every fully completed one.
Runs evaluated on different test sets (another dataset or `data.test_subset`) are never ranked
together: each test set gets its own table and figures. The jobs a sweep's `multirun.yaml` lists
that left no run behind are listed as "not started".
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from cifarbench.core.files import atomic_write_text
from cifarbench.run.metrics import new_figure, objective, read_metrics, save_png
from cifarbench.run.studies import write_reported

log = logging.getLogger(__name__)
SEED = "trainer.seed"
NOT_STARTED = "not started"
# Keys that say how a job is run or watched, not what it trains: ignored when matching a sweep's jobs
# to their folders and when telling settings apart.
NOT_THE_SETTING = ("hydra.", "trainer.resume=", "logger=", "logger.")
# The data fields that choose the training side (images, split, preprocessing) or where the files are;
# every other data field (the dataset, data.test_subset) decides the test set a run is scored on.
NOT_THE_TEST_SET = {"root", "download", "url", "train_subset", "val_split", "val_seed", "preprocess"}
THRESHOLDS = (0.5, 0.7, 0.9)  # time-to-accuracy columns (test accuracy)
SECONDS_TO = tuple(f"seconds_to_{int(100 * a)}" for a in THRESHOLDS)
RUN_COLUMNS = ("run", "seed", "model", "optim", "aug", "params", "objective", "best_test_acc", "final_test_acc",
               "final_val_acc", "epochs", "train_seconds", *SECONDS_TO, "status", "error", "path", "test_set")
# One row per setting: mean and sample standard deviation over its completed runs (n of them; no std
# for n = 1), medians of seconds (a run that never reached an accuracy counts as never reaching it).
COLUMNS = ("setting", "model", "optim", "aug", "params", "seeds", "n", "objective", "final_test_acc_mean",
           "final_test_acc_std", "final_val_acc_mean", "final_val_acc_std", "train_seconds_median",
           *(f"{c}_median" for c in SECONDS_TO), "status", "error", "test_set")
FIGURES = ("compare_time.png", "compare_epoch.png", "final_acc.png")
LABEL_CHARS = 36  # a figure's labels are cut to this many characters (the tables keep them whole)


@dataclass
class Run:
    """One run folder (`path`), or a job its sweep never started (`path` its sweep folder, `summary`
    {"status": "not started"}, `data` the sweep's data config with the job's data overrides)."""
    path: Path
    summary: dict
    rows: list[dict]
    overrides: list[str] = field(default_factory=list)
    sweep: Path | None = None  # the sweep folder (holding multirun.yaml) the run is a job of
    data: dict | None = None

    @property
    def status(self) -> str:
        status = self.summary.get("status")
        # "running" in a finished report means the process died (killed) or is still going.
        return "incomplete" if status in (None, "running") else status

    @property
    def job(self) -> tuple[str, ...]:
        """The overrides that make this job the job it is in its sweep (seed included)."""
        return tuple(sorted(o for o in self.overrides if not o.startswith(NOT_THE_SETTING)))

    @property
    def seedless_job(self) -> tuple:
        """(its sweep, its job's overrides but the seed): what the seeds of one setting share."""
        return str(self.sweep), [o for o in self.job if not o.startswith(f"{SEED}=")]

    @property
    def setting(self) -> str:
        """What the run's config is apart from its seed and trackers (without a config: its sweep and
        overrides, else its folder)."""
        config = self.summary.get("config")
        if config:
            return json.dumps({**{k: v for k, v in config.items() if k != "logger"},
                               "trainer": {k: v for k, v in config.get("trainer", {}).items() if k != "seed"}},
                              sort_keys=True)
        if self.overrides:
            return json.dumps(self.seedless_job)
        return f"path:{self.path}"

    @property
    def test_set(self) -> str:
        """The test set the run is scored on, as its data fields that decide it (`data.test_subset=500`)."""
        data = self.summary.get("config", {}).get("data", self.data)
        if data is None:
            return "unknown (no config recorded)"
        return ", ".join(f"data.{k}={'null' if v is None else v}" for k, v in sorted(data.items())
                         if k not in NOT_THE_TEST_SET) or "data (default)"


def sweep_of(path: Path) -> Path | None:
    return next((p for p in path.parents if (p / "multirun.yaml").is_file()), None)


TRACKER_STORES = {"mlartifacts", "mlruns"}  # MLflow's copies of run files (logger=mlflow), not runs


def find_runs(folder: str | Path) -> list[Run]:
    """Every run folder (holding summary.json or metrics.csv) under `folder`, in path order."""
    runs = []
    for marker in sorted({*Path(folder).rglob("summary.json"), *Path(folder).rglob("metrics.csv")}):
        path = marker.parent
        if any(r.path == path for r in runs) or TRACKER_STORES & set(marker.relative_to(folder).parts):
            continue
        summary, rows, overrides = {}, [], []
        try:
            summary = json.loads((path / "summary.json").read_text())
        except (OSError, ValueError):
            pass
        try:
            rows = read_metrics(path / "metrics.csv")
        except (OSError, ValueError, KeyError):
            pass
        try:
            overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            pass
        runs.append(Run(path, summary, rows, overrides, sweep_of(path.resolve())))
    return runs


def sweep_jobs(sweep: Path) -> tuple[list[list[str]], dict] | None:
    """What a sweep folder's multirun.yaml says its sweeper launches: the overrides of each job in job-number
    order, expanded by Hydra's own BasicSweeper from the sweeper's params and the command line's
    overrides; and the sweep's data config. None for another sweeper (Optuna draws its trials as it
    goes) or an unreadable record."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        record = yaml.safe_load((sweep / "multirun.yaml").read_text())
        hydra = record["hydra"]
        if not hydra["sweeper"]["_target_"].endswith(".BasicSweeper"):
            return None
        params = [f"{key}={value}" for key, value in (hydra["sweeper"].get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides([*params, *hydra["overrides"]["task"]])
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, HydraException):
        return None
    return jobs, record.get("data") or {}


def unstarted_jobs(folders: list[Path], runs: list[Run]) -> list[Run]:
    """The jobs listed by the multirun.yaml of each sweep under `folders` that left no run folder (with a
    summary.json or metrics.csv) behind, each as a Run with status "not started"."""
    missing = []
    for sweep in sorted({m.parent.resolve() for folder in folders for m in Path(folder).rglob("multirun.yaml")}):
        found = sweep_jobs(sweep)
        if found is None:
            continue
        jobs, data = found
        started = {run.job for run in runs if run.sweep == sweep}
        for number, overrides in enumerate(jobs):
            run = Run(sweep, {"status": NOT_STARTED, "job": number}, [], overrides, sweep)
            if run.job not in started:
                pairs = (o.split("=", 1) for o in overrides if o.startswith("data.") and "=" in o)
                run.data = {**data, **{key.removeprefix("data."): yaml.safe_load(value) for key, value in pairs}}
                missing.append(run)
    return missing


def seconds_to(rows: list[dict], accuracy: float) -> float | None:
    return next((r["train_seconds"] for r in rows if r["test_acc"] >= accuracy), None)


def distinguishing(runs: list[Run]) -> list[list[str]]:
    """Each run's overrides that not every run shares (what distinguishes it), its seed left out."""
    own = [[o for o in run.overrides if not o.startswith(("hydra.", f"{SEED}="))] for run in runs]
    common = set.intersection(*map(set, own)) if own else set()
    return [[o for o in overrides if o not in common] for overrides in own]


def short_override(override: str) -> str:
    """An override as a figure shows it: a group's choice as the choice (`model=lenet_bn` → `lenet_bn`,
    `+tenminute=lenet_bc` → `lenet_bc`), a field by its last name (`optim.lr=0.01` → `lr=0.01`)."""
    key, _, value = override.lstrip("+~").partition("=")
    if "." not in key and value.lower() not in ("none", "null", "true", "false"):
        return value
    return f"{key.rpartition('.')[2]}={value}"


def short_label(overrides: list[str], fallback: str) -> str:
    """A figure's label: the short overrides (`lenet_bn, lr=0.01`), else `fallback`."""
    return ", ".join(map(short_override, overrides)) or fallback


def figure_labels(labels: list[str]) -> list[str]:
    """`labels` cut to LABEL_CHARS for a figure, still telling settings apart: a long start every label
    shares becomes "…" (up to a `_`, `,`, `=` or space), then longer ones lose their end, and labels the
    cut made equal get " #1", " #2", ..."""
    if all(len(label) <= LABEL_CHARS for label in labels):
        return labels
    shared = os.path.commonprefix(labels) if len(labels) > 1 else ""
    cut = max((shared.rfind(mark) for mark in "_,= "), default=-1) + 1
    labels = [f"…{label[cut:]}" if cut >= LABEL_CHARS // 3 else label for label in labels]
    labels = [label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…" for label in labels]
    counts, seen = Counter(labels), Counter()
    for i, label in enumerate(labels):
        if counts[label] > 1:
            seen[label] += 1
            labels[i] = f"{label} #{seen[label]}"
    return labels


def run_row(run: Run, label: str) -> dict:
    """The leaderboard_runs.csv row of one run (from its summary, else from its metrics)."""
    s, rows = run.summary, run.rows
    config = s.get("config", {})
    return {
        "run": label, "seed": config.get("trainer", {}).get("seed"),
        "model": s.get("model", config.get("model", {}).get("name")),
        "optim": s.get("optim", config.get("optim", {}).get("name")), "aug": s.get("aug"),
        "params": s.get("params"), "objective": objective(s),
        "best_test_acc": s.get("best_test_acc", max((r["test_acc"] for r in rows), default=None)),
        "final_test_acc": s.get("final_test_acc", rows[-1]["test_acc"] if rows else None),
        "final_val_acc": s.get("final_val_acc"),
        "epochs": s.get("epochs", rows[-1]["epoch"] if rows else None),
        "train_seconds": s.get("train_seconds", rows[-1]["train_seconds"] if rows else None),
        **{column: seconds_to(rows, a) for column, a in zip(SECONDS_TO, THRESHOLDS)},
        "status": run.status, "error": s.get("error", ""), "path": str(run.path), "test_set": run.test_set,
    }


def _median_seconds(values: list[float | None]) -> float | None:
    """Median where None (never reached) counts as infinitely late; None when the median is never."""
    median = statistics.median([math.inf if v is None else v for v in values]) if values else math.inf
    return None if math.isinf(median) else median


def setting_row(label: str, rows: list[dict]) -> dict:
    """One leaderboard.csv row from the run rows of one setting (its seeds)."""
    done = [r for r in rows if r["status"] == "completed"]

    def spread(column: str) -> dict:
        values = [r[column] for r in done if r[column] is not None]
        return {f"{column}_mean": statistics.fmean(values) if values else None,
                f"{column}_std": statistics.stdev(values) if len(values) > 1 else None}

    statuses = Counter(r["status"] for r in rows)
    return {
        "setting": label, **{k: rows[0][k] for k in ("model", "optim", "aug", "params")},
        "seeds": ",".join(str(r["seed"]) for r in rows if r["seed"] is not None), "n": len(done),
        "objective": statistics.fmean(r["objective"] for r in rows),
        **spread("final_test_acc"), **spread("final_val_acc"),
        "train_seconds_median": _median_seconds([r["train_seconds"] for r in done]) if done else None,
        **{f"{c}_median": _median_seconds([r[c] for r in done]) if done else None for c in SECONDS_TO},
        "status": ", ".join(f"{n} {status}" for status, n in statuses.items()) if len(statuses) > 1 else rows[0]["status"],
        "error": next((r["error"] for r in rows if r["error"]), ""), "test_set": rows[0]["test_set"],
    }


@dataclass
class Setting:
    """The runs of one setting (its seeds), its label in tables (`label`) and in figures (`short`)."""
    label: str
    short: str
    runs: list[Run]

    def rows(self) -> list[dict]:
        return [run_row(run, self.label) for run in self.runs]


def settings_of(runs: list[Run]) -> list[Setting]:
    """The settings of `runs`, in the order they first appear; a setting is labelled by its first run. A
    job its sweep never started joins the setting of a started job of the same sweep whose overrides
    differ from its own only in the seed. Labels two settings would share get their folder's name."""
    config_of = {json.dumps(run.seedless_job): run.setting for run in runs if run.summary.get("config")}
    groups: dict[str, Setting] = {}
    for run, overrides in zip(runs, distinguishing(runs)):
        key = run.setting if run.summary.get("config") else config_of.get(json.dumps(run.seedless_job), run.setting)
        label = " ".join(overrides) or run.path.name
        groups.setdefault(key, Setting(label, short_label(overrides, run.path.name), []))
        groups[key].runs.append(run)
    settings = list(groups.values())
    for label, n in Counter(s.label for s in settings).items():
        for setting in (s for s in settings if n > 1 and s.label == label):
            where = setting.runs[0].sweep or setting.runs[0].path.parent
            setting.label, setting.short = f"{label} [{where.name}]", f"{setting.short} [{where.name}]"
    return settings


def group_runs(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """(label, runs) per setting, in the order settings first appear (see settings_of)."""
    return [(s.label, s.runs) for s in settings_of(runs)]


def leaderboards(settings: list[Setting]) -> tuple[list[dict], list[dict]]:
    """(setting rows, run rows), each best first by the objective (settings: its mean over the runs,
    then the mean final test accuracy)."""
    run_table, setting_table = [], []
    for setting in settings:
        rows = setting.rows()
        run_table += rows
        setting_table.append(setting_row(setting.label, rows))
    run_table.sort(key=lambda r: r["objective"], reverse=True)
    setting_table.sort(key=lambda r: (r["objective"], r["final_test_acc_mean"] or -1), reverse=True)
    return setting_table, run_table


def format_cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if column.endswith(("_acc", "_acc_mean", "_acc_std", "objective")):
        return f"{value:.4f}"
    if column == "epochs":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_columns() -> list[str]:
    """The leaderboard.md columns: each mean with its spread, no std or test-set column of their own."""
    return [c for c in COLUMNS if not c.endswith("_std") and c != "test_set"]


def markdown_cell(row: dict, column: str) -> str:
    """A setting row's value as leaderboard.md and report.html show it (a mean as mean ± std)."""
    text = format_cell(column, row[column])
    spread = format_cell(column, row.get(column.replace("_mean", "_std")) if column.endswith("_mean") else None)
    return f"{text} ± {spread}" if text and spread else text


def to_markdown(table: list[dict]) -> str:
    """The setting rows as a Markdown table, each mean with its spread (mean ± std)."""
    columns = markdown_columns()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(row, c).replace("|", "\\|") for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


def to_csv(table: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def mean_band(runs: list[Run], x: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Test accuracy of the seeds of one setting against `x` (a metrics column: "epoch" or
    "train_seconds"): at each evaluation k, the mean of x, and the mean, min and max of test_acc over
    the runs that have metrics, up to the shortest of them (no curve: four empty lists)."""
    curves = [run.rows for run in runs if run.rows]
    length = min((len(rows) for rows in curves), default=0)
    points = [[rows[k] for rows in curves] for k in range(length)]
    accuracies = [[r["test_acc"] for r in point] for point in points]
    return ([statistics.fmean(r[x] for r in point) for point in points], [statistics.fmean(a) for a in accuracies],
            [min(a) for a in accuracies], [max(a) for a in accuracies])


def setting_colours(n: int) -> list:
    """n distinct colours, one per setting, the same in every figure: tab10, tab20, else turbo's range."""
    from matplotlib import colormaps

    if n <= 20:
        palette = colormaps["tab10" if n <= 10 else "tab20"]
        return [palette(i) for i in range(n)]
    return [colormaps["turbo"](0.05 + 0.9 * i / (n - 1)) for i in range(n)]


LEGEND_ROWS = 32  # legend entries per column beside a comparison plot (fits its 500 px)


def comparison_figure(settings: list[Setting], x: str, title: str):
    """Per setting, the mean test accuracy (fraction) of its seeds at each evaluation, with their min–max
    band, against `x` ("train_seconds" or "epoch"); the legend outside the axes, on the right, in as
    many columns of LEGEND_ROWS as it needs. 900 × 500 px with one legend column, 300 px wider per more."""
    columns = max(1, math.ceil(len(settings) / LEGEND_ROWS))
    fig = new_figure(9 + 3 * (columns - 1), 5)
    fig.set_layout_engine("constrained")
    axis = fig.add_subplot()
    for setting, colour in zip(settings, setting_colours(len(settings))):
        xs, mean, low, high = mean_band(setting.runs, x)
        if xs:
            seeds = sum(bool(run.rows) for run in setting.runs)
            axis.plot(xs, mean, "o-", ms=3, color=colour,
                      label=f"{setting.short} ({seeds})" if seeds > 1 else setting.short)
            axis.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0)
    axis.set(xlabel="training seconds" if x == "train_seconds" else "epoch", ylabel="test accuracy", title=title)
    axis.grid(alpha=0.3)
    if axis.lines:
        fig.legend(loc="outside right upper", fontsize=7, ncols=columns, title="setting (seeds)", title_fontsize=7)
    return fig


def final_acc_figure(settings: list[Setting], title: str):
    """Per setting, a bar of the mean final test accuracy (fraction) of its completed seeds with ± one
    standard deviation, each seed's own value a dot on it, in the setting's colour; hatched, with its
    status in the label, when not every seed completed. Best at the top; 900 px wide, 35 px per bar."""
    bars = []
    for setting, colour in zip(settings, setting_colours(len(settings))):
        rows = setting.rows()
        row = setting_row(setting.label, rows)
        ok = row["status"] == "completed"
        seeds = [r["final_test_acc"] for r in rows if r["status"] == "completed" and r["final_test_acc"] is not None]
        value = f"{row['final_test_acc_mean']:.1%}" if seeds else "no completed seed"
        bars.append((row["final_test_acc_mean"] or 0, row["final_test_acc_std"] or 0, setting.short, ok, colour, seeds,
                     value if ok else f"{value} ({row['status']})"))
    bars.sort(key=lambda bar: bar[0])
    fig = new_figure(9, 1.2 + 0.35 * len(bars))
    fig.set_layout_engine("constrained")  # the bar labels are run labels of up to LABEL_CHARS characters
    axis = fig.add_subplot()
    for i, (mean, std, _, ok, colour, seeds, value) in enumerate(bars):
        axis.barh(i, mean, xerr=std, color=colour, hatch=None if ok else "//", edgecolor="black", linewidth=0.5)
        axis.plot(seeds, [i] * len(seeds), "o", ms=3, color="black")
        # past the error bar, and room for a status
        axis.text(min(mean + std, 0.9 if ok else 0.75), i, f" {value}", va="center", fontsize=8)
    axis.set_yticks(range(len(bars)), [label for _, _, label, *_ in bars], fontsize=8)
    axis.set_ylim(-0.6, len(bars) - 0.4)
    axis.set(xlabel="final test accuracy (mean ± std over seeds; dots: the seeds)", xlim=(0, 1), title=title)
    return fig


@dataclass
class Board:
    """The report of the runs scored on one test set: settings and runs ranked, the figure files."""
    test_set: str
    settings: list[Setting]
    setting_rows: list[dict]
    run_rows: list[dict]
    figures: list[Path]


def plot_comparisons(board: Board, several: bool):
    """compare_time.png, compare_epoch.png and final_acc.png of `board` (file names as in board.figures);
    titles name the test set when the report has several."""
    where = f" — test set {board.test_set}" if several else ""
    time_png, epoch_png, final_png = board.figures
    save_png(comparison_figure(board.settings, "train_seconds", f"Test accuracy against training time{where}"),
             time_png)
    save_png(comparison_figure(board.settings, "epoch", f"Test accuracy against epoch{where}"), epoch_png)
    save_png(final_acc_figure(board.settings, f"Final test accuracy per setting{where}"), final_png)


def not_started(boards: list[Board]) -> list[Run]:
    """The jobs of the reported sweeps that never started, by sweep and job number."""
    return sorted((run for board in boards for setting in board.settings for run in setting.runs
                   if run.status == NOT_STARTED), key=lambda run: (str(run.sweep), run.summary["job"]))


def build_boards(runs: list[Run], out: Path) -> list[Board]:
    """One Board per test set, the one with the most runs first; figure names get `_set<k>` with several."""
    test_sets = [name for name, _ in Counter(run.test_set for run in runs).most_common()]
    boards = []
    for k, test_set in enumerate(test_sets, start=1):
        settings = settings_of([run for run in runs if run.test_set == test_set])
        setting_rows, run_rows = leaderboards(settings)
        rank = {row["setting"]: k for k, row in enumerate(setting_rows)}
        settings.sort(key=lambda setting: rank[setting.label])  # so colours and legends follow the ranking
        for setting, short in zip(settings, figure_labels([setting.short for setting in settings])):
            setting.short = short
        suffix = f"_set{k}" if len(test_sets) > 1 else ""
        boards.append(Board(test_set, settings, setting_rows, run_rows,
                            [out / name.replace(".png", f"{suffix}.png") for name in FIGURES]))
    return boards


def boards_markdown(boards: list[Board]) -> str:
    if len(boards) <= 1:
        return to_markdown(boards[0].setting_rows if boards else [])
    return "Runs scored on different test sets are ranked apart: one table per test set.\n\n" + "\n".join(
        f"## Test set {k}: {board.test_set}\n\n{to_markdown(board.setting_rows)}" for k, board in enumerate(boards, 1))


def write_report(folders: str | Path | list, out: str | Path | None = None) -> list[Board]:
    """Write the report of the runs under `folders` (one folder or several) into `out` (default: the
    first folder); returns its Boards, one per test set, the most used first."""
    from cifarbench.report.page import write_page

    folders = [Path(f) for f in (folders if isinstance(folders, (list, tuple)) else [folders])]
    out = Path(out) if out is not None else folders[0]
    found = {run.path.resolve(): run for folder in folders for run in find_runs(folder)}  # a folder may hold another
    runs = list(found.values())
    runs += unstarted_jobs(folders, runs)
    boards = build_boards(runs, out)
    settings = [row for board in boards for row in board.setting_rows]
    atomic_write_text(out / "leaderboard.csv", to_csv(settings))
    atomic_write_text(out / "leaderboard.md", boards_markdown(boards))
    atomic_write_text(out / "leaderboard_runs.csv",
                      to_csv([row for board in boards for row in board.run_rows], RUN_COLUMNS))
    for board in boards:
        plot_comparisons(board, len(boards) > 1)
    write_reported(out, [(setting.label, [run.summary for run in setting.runs])
                         for board in boards for setting in board.settings])
    write_page(out / "report.html", folders, boards)
    return boards


class LeaderboardCallback(Callback):
    """Writes the report into the sweep folder when a multirun ends."""

    def on_multirun_end(self, config, **kwargs):
        boards = write_report(config.hydra.sweep.dir)
        log.info("leaderboard of %d settings: %s (all of it: report.html)", sum(len(b.settings) for b in boards),
                 Path(config.hydra.sweep.dir) / "leaderboard.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cifarbench report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="path", help="a folder holding runs (searched recursively)")
    parser.add_argument("--out", help="where the report goes (default: the folder, when there is one)")
    args = parser.parse_args(argv)
    for path in args.paths:
        if not Path(path).is_dir():
            parser.error(f"{path} is not a folder")
    if len(args.paths) > 1 and args.out is None:
        parser.error("several folders: say where their report goes with --out DIR")
    out = Path(args.out or args.paths[0])
    boards = write_report(args.paths, out)
    if not boards:
        print(f"no runs (folders with summary.json or metrics.csv) under {' '.join(args.paths)}")
        return 1
    print((out / "leaderboard.md").read_text())
    waiting = not_started(boards)
    if waiting:
        print(f"{len(waiting)} job(s) never started: " + "; ".join(
            f"#{run.summary['job']} {' '.join(run.overrides)} (sweep {run.sweep})" for run in waiting))
    figures = ", ".join(f.name for board in boards for f in board.figures)
    print(f"wrote leaderboard.csv, leaderboard.md, leaderboard_runs.csv, {figures} and report.html to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
