"""Turn a folder of runs — a finished or half-finished sweep, or single runs — into a comparison:
leaderboard.csv and leaderboard.md (one row per setting: runs whose configs differ only in
`trainer.seed` share a row), leaderboard_runs.csv (one row per run), compare_time.png,
compare_epoch.png and final_acc.png; reported_vs_measured.md/.csv for studies whose configs carry
reported figures (studies.py).

    python -m cifarbench.report outputs/multirun/2026-11-24/10-00-00      (or: cifarbench report PATH)

A multirun writes them into its sweep folder when it ends (LeaderboardCallback, registered in the
root config). Accuracies are fractions; seconds are training seconds. Runs are ranked by the value
the sweeper maximises (`runlog.objective`: final validation accuracy with a validation split, else
final test accuracy; -inf for a run that did not complete), settings by the mean of their runs'
values, so a setting with a failed, diverged or unfinished seed ranks below every fully completed one.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from cifarbench.files import atomic_write_text
from cifarbench.runlog import new_figure, objective, read_metrics, save_png
from cifarbench.studies import write_reported

log = logging.getLogger(__name__)
SEED = "trainer.seed"
THRESHOLDS = (0.5, 0.7, 0.9)  # time-to-accuracy columns (test accuracy)
SECONDS_TO = tuple(f"seconds_to_{int(100 * a)}" for a in THRESHOLDS)
RUN_COLUMNS = ("run", "seed", "model", "optim", "aug", "params", "objective", "best_test_acc", "final_test_acc",
               "final_val_acc", "epochs", "train_seconds", *SECONDS_TO, "status", "error", "path")
# One row per setting: mean and sample standard deviation over its completed runs (n of them; no std
# for n = 1), medians of seconds (a run that never reached an accuracy counts as never reaching it).
COLUMNS = ("setting", "model", "optim", "aug", "params", "seeds", "n", "objective", "final_test_acc_mean",
           "final_test_acc_std", "final_val_acc_mean", "final_val_acc_std", "train_seconds_median",
           *(f"{c}_median" for c in SECONDS_TO), "status", "error")


@dataclass
class Run:
    path: Path
    summary: dict
    rows: list[dict]
    overrides: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        status = self.summary.get("status")
        # "running" in a finished report means the process died (killed) or is still going.
        return "incomplete" if status in (None, "running") else status

    @property
    def setting(self) -> str:
        """What the run's config is apart from its seed (its folder when there is no config)."""
        config = self.summary.get("config")
        if not config:
            return f"path:{self.path}"
        return json.dumps({**config, "trainer": {k: v for k, v in config.get("trainer", {}).items() if k != "seed"}},
                          sort_keys=True)


def find_runs(folder: str | Path) -> list[Run]:
    runs = []
    for marker in sorted({*Path(folder).rglob("summary.json"), *Path(folder).rglob("metrics.csv")}):
        path = marker.parent
        if any(r.path == path for r in runs):
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
        runs.append(Run(path, summary, rows, overrides))
    return runs


def seconds_to(rows: list[dict], accuracy: float) -> float | None:
    return next((r["train_seconds"] for r in rows if r["test_acc"] >= accuracy), None)


def label_runs(runs: list[Run]) -> list[str]:
    """Each run's overrides that not every run shares (what distinguishes it), its seed left out; else
    its folder name."""
    def distinguishing(run: Run) -> list[str]:
        return [o for o in run.overrides if not o.startswith(("hydra.", f"{SEED}="))]

    common = set.intersection(*(set(distinguishing(r)) for r in runs)) if runs else set()
    return [" ".join(o for o in distinguishing(r) if o not in common) or r.path.name for r in runs]


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
        "status": run.status, "error": s.get("error", ""), "path": str(run.path),
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
        "error": next((r["error"] for r in rows if r["error"]), ""),
    }


def group_runs(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """(label, runs) per setting, in the order settings first appear; a setting's label is its first run's."""
    groups: dict[str, tuple[str, list[Run]]] = {}
    for run, label in zip(runs, label_runs(runs)):
        groups.setdefault(run.setting, (label, []))[1].append(run)
    return list(groups.values())


def leaderboards(runs: list[Run]) -> tuple[list[dict], list[dict]]:
    """(setting rows, run rows), each best first by the objective (settings: its mean over the runs,
    then the mean final test accuracy)."""
    run_table, setting_table = [], []
    for label, members in group_runs(runs):
        rows = [run_row(run, label) for run in members]
        run_table += rows
        setting_table.append(setting_row(label, rows))
    run_table.sort(key=lambda r: r["objective"], reverse=True)
    setting_table.sort(key=lambda r: (r["objective"], r["final_test_acc_mean"] or -1), reverse=True)
    return setting_table, run_table


def _cell(column: str, value) -> str:
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


def to_markdown(table: list[dict]) -> str:
    """The setting rows as a Markdown table, each mean with its spread (mean ± std)."""
    columns = [c for c in COLUMNS if not c.endswith("_std")]

    def cell(row: dict, column: str) -> str:
        text = _cell(column, row[column])
        spread = _cell(column, row.get(column.replace("_mean", "_std")) if column.endswith("_mean") else None)
        return f"{text} ± {spread}" if text and spread else text

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row, c).replace("|", "\\|") for c in columns) + " |" for row in table]
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


def plot_comparisons(folder: Path, settings: list[tuple[str, list[Run]]]):
    """Per setting, the mean test accuracy (fraction) of its seeds with their min–max band, against
    training seconds and against epoch (compare_time.png, compare_epoch.png: 900 × 500 px); and the
    mean final test accuracy of its completed seeds as a bar with ± one standard deviation (final_acc.png)."""
    for x, name in (("train_seconds", "compare_time.png"), ("epoch", "compare_epoch.png")):
        fig = new_figure(9, 5)
        axis = fig.add_axes((0.08, 0.11, 0.9, 0.86))
        for label, runs in settings:
            xs, mean, low, high = mean_band(runs, x)
            if xs:
                seeds = sum(bool(run.rows) for run in runs)
                line, = axis.plot(xs, mean, "o-", ms=3, label=f"{label} (mean of {seeds})" if seeds > 1 else label)
                axis.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        axis.set(xlabel="training seconds" if x == "train_seconds" else "epoch", ylabel="test accuracy")
        axis.grid(alpha=0.3)
        if any(run.rows for _, runs in settings for run in runs):
            axis.legend(fontsize=7, loc="lower right")
        save_png(fig, folder / name)

    bars = []
    for label, runs in settings:
        row = setting_row(label, [run_row(run, label) for run in runs])
        bars.append((row["final_test_acc_mean"] or 0, row["final_test_acc_std"] or 0,
                     label if row["status"] == "completed" else f"{label} ({row['status']})", row["status"] == "completed"))
    bars.sort(key=lambda bar: bar[0])
    fig = new_figure(9, 1 + 0.35 * len(bars))
    fig.set_layout_engine("constrained")  # the bar labels are run labels of any length
    axis = fig.add_subplot()
    axis.barh([label for _, _, label, _ in bars], [mean for mean, *_ in bars], xerr=[std for _, std, *_ in bars],
              color=["tab:blue" if ok else "tab:red" for *_, ok in bars])
    for i, (mean, *_) in enumerate(bars):
        axis.text(mean, i, f" {mean:.1%}", va="center", fontsize=8)
    axis.set(xlabel="final test accuracy (mean ± std over seeds)", xlim=(0, 1))
    save_png(fig, folder / "final_acc.png")


def write_report(folder: str | Path) -> list[dict]:
    """Write the report files into `folder`; returns the setting rows (best first)."""
    folder = Path(folder)
    runs = find_runs(folder)
    settings, run_table = leaderboards(runs)
    atomic_write_text(folder / "leaderboard.csv", to_csv(settings))
    atomic_write_text(folder / "leaderboard.md", to_markdown(settings))
    atomic_write_text(folder / "leaderboard_runs.csv", to_csv(run_table, RUN_COLUMNS))
    settings_runs = group_runs(runs)
    plot_comparisons(folder, settings_runs)
    write_reported(folder, [(label, [run.summary for run in members]) for label, members in settings_runs])
    return settings


class LeaderboardCallback(Callback):
    """Writes the report into the sweep folder when a multirun ends."""

    def on_multirun_end(self, config, **kwargs):
        table = write_report(config.hydra.sweep.dir)
        log.info("leaderboard of %d settings: %s", len(table), Path(config.hydra.sweep.dir) / "leaderboard.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cifarbench report", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a folder holding runs (searched recursively)")
    args = parser.parse_args(argv)
    if not Path(args.path).is_dir():
        parser.error(f"{args.path} is not a folder")
    table = write_report(args.path)
    if not table:
        print(f"no runs (folders with summary.json or metrics.csv) under {args.path}")
        return 1
    print(to_markdown(table))
    print(f"wrote leaderboard.csv, leaderboard.md, leaderboard_runs.csv, compare_time.png, compare_epoch.png, "
          f"final_acc.png to {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
