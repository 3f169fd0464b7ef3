"""A report's leaderboards: runs grouped into settings (their seeds), each run and each setting as a
row, ranked by the objective; one Board per test set."""
from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cifarbench.core.config_diff import flatten
from cifarbench.report.runs import NOT_STARTED, Run
from cifarbench.report.stats import mean_interval, p_above, seeds_to_resolve, welch
from cifarbench.run.metrics import objective
from cifarbench.run.setting import SEED, is_setting_override

THRESHOLDS = (0.5, 0.7, 0.9)  # time-to-accuracy columns (test accuracy)
SECONDS_TO = tuple(f"seconds_to_{int(100 * a)}" for a in THRESHOLDS)
FIGURES = ("compare_time.png", "compare_epoch.png", "final_acc.png")
LABEL_CHARS = 36  # a figure's labels are cut to this many characters (the tables keep them whole)
LEVEL = 0.95  # confidence level of the intervals; differences are resolved at 1 − LEVEL (report --level)
# A setting row's verdict against the top setting (column vs_top)
TOP, TIED, BELOW = "top", "tied with top", "below top"
PRUNED = "pruned"  # a trial a search's pruner stopped early (hydra/sweeper=optuna): ranked apart
ONE_SEED, NO_SEED, TOP_ONE_SEED = "one seed", "no completed seed", "top has one seed"


def seconds_to(rows: list[dict], accuracy: float) -> float | None:
    return next((r["train_seconds"] for r in rows if r["test_acc"] >= accuracy), None)


def setting_overrides(run: Run) -> dict[str, object]:
    """The run's overrides that make its setting, as {key: value} (`optim.lr=0.01` → {"optim.lr": 0.01}, the
    value read as YAML, as Hydra does): not its seed, nor what is not the setting (run/setting.py: paths,
    data.root, trackers, trainer.resume, …), nor Hydra's own."""
    pairs = {}
    for override in run.overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if is_setting_override(override) and key != SEED:
            try:
                pairs[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                pairs[key] = value
    return pairs


DEFAULT = object()  # a key a run neither overrides nor records: the config's default


def value_of(run: Run, key: str, pairs: dict[str, object]):
    """The value `key` has in `run`: its override, else its recorded config's (a group's choice, `model`, is
    its entry's `name`), else DEFAULT."""
    if key in pairs:
        return pairs[key]
    flat = flatten(run.summary.get("config") or {})
    return flat.get(key, flat.get(f"{key}.name", DEFAULT))


def varying(runs: list[Run], pairs: list[dict[str, object]]) -> list[str]:
    """The override keys of `runs` whose value is not the same in all of them, in the order they first appear."""
    keys = list(dict.fromkeys(key for p in pairs for key in p))
    return [key for key in keys if len({json.dumps(value_of(run, key, p), default=repr)
                                        for run, p in zip(runs, pairs)}) > 1]


def as_override(key: str, value) -> str:
    """`key=value` as one would type it (true, null, 0.01; a float to 4 significant digits; a default as
    `key=default`). Two settings whose labels this makes equal are told apart by `settings_of`."""
    if value is DEFAULT:
        return f"{key}=default"
    if isinstance(value, float):  # a sampled value (a search's 0.0029723442531939316) to 4 digits: 0.002972
        return f"{key}={value:.4g}"
    return f"{key}={json.dumps(value) if value is None or isinstance(value, bool) else value}"


def distinguishing(runs: list[Run], report: list[Run] | None = None, without: tuple[str, ...] = ()
                   ) -> list[list[str]]:
    """What labels each run's setting, as overrides (seed, what is not the setting and the keys `without`
    left out): the override keys whose value varies across `runs` (one test set's runs), each with this run's
    value; where none varies (one setting), those that vary across `report` (every run reported:
    `data.test_subset=500` tells one test set's only setting from another's); where none does either, the
    run's own overrides; without any, its model and optimizer."""
    def pairs_of(group: list[Run]) -> list[dict[str, object]]:
        return [{k: v for k, v in setting_overrides(run).items() if k not in without} for run in group]

    pairs = pairs_of(runs)
    keys = varying(runs, pairs)
    if not keys and report:
        keys = varying(report, pairs_of(report))
    if keys:
        return [[as_override(key, value_of(run, key, p)) for key in keys] for run, p in zip(runs, pairs)]
    return [[as_override(k, v) for k, v in p.items()] or
            [f"{k}={run.summary[k]}" for k in ("model", "optim") if run.summary.get(k)] for run, p in zip(runs, pairs)]


def short_override(override: str) -> str:
    """An override as a figure shows it: a group's choice as the choice (`model=lenet_bn` → `lenet_bn`,
    `study/tenminute=lenet_bc` → `lenet_bc`), a field by its last name (`optim.lr=0.01` → `lr=0.01`)."""
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


def completed_values(rows: list[dict], column: str) -> list[float]:
    """The values of `column` in the completed run rows of one setting (its seeds' sample)."""
    return [r[column] for r in rows if r["status"] == "completed" and r[column] is not None
            and math.isfinite(r[column])]


def setting_row(label: str, rows: list[dict], level: float = LEVEL, target: float | None = None) -> dict:
    """One leaderboard.csv row from the run rows of one setting (its seeds): means, sample standard
    deviations and `level` confidence intervals (Student's t; n ≥ 2) over its completed runs; with a
    `target` accuracy (fraction), the one-sided t-test that the mean final test accuracy exceeds it and
    the seeds that would resolve it at the observed spread. The columns against the top setting
    (p_vs_top, vs_top) are filled in by `compare_to_top`."""
    done = [r for r in rows if r["status"] == "completed"]

    def spread(column: str, interval: bool = True) -> dict:
        values = completed_values(rows, column)
        low_high = mean_interval(values, level) or (None, None)
        return {f"{column}_mean": statistics.fmean(values) if values else None,
                f"{column}_std": statistics.stdev(values) if len(values) > 1 else None,
                **({f"{column}_ci_low": low_high[0], f"{column}_ci_high": low_high[1]} if interval else {})}

    objectives = completed_values(rows, "objective")
    ci = mean_interval(objectives, level) or (None, None)
    statuses = Counter(r["status"] for r in rows)
    row = {
        "setting": label, **{k: rows[0][k] for k in ("model", "optim", "aug", "params")},
        "seeds": ",".join(str(r["seed"]) for r in rows if r["seed"] is not None), "n": len(done),
        "objective": statistics.fmean(r["objective"] for r in rows),
        "objective_ci_low": ci[0], "objective_ci_high": ci[1], "p_vs_top": None, "vs_top": None,
        **spread("final_test_acc"), **spread("final_val_acc", interval=False),
        "train_seconds_median": _median_seconds([r["train_seconds"] for r in done]) if done else None,
        **{f"{c}_median": _median_seconds([r[c] for r in done]) if done else None for c in SECONDS_TO},
        "status": (", ".join(f"{n} {status}" for status, n in statuses.items()) if len(statuses) > 1
                   else rows[0]["status"]),
        "error": next((r["error"] for r in rows if r["error"]), ""), "test_set": rows[0]["test_set"],
        "target": target, "p_above_target": None, "above_target": None, "seeds_for_target": None,
    }
    if target is not None:
        accuracies = completed_values(rows, "final_test_acc")
        row["p_above_target"] = p_above(accuracies, target)
        row["above_target"] = (ONE_SEED if len(accuracies) == 1 else NO_SEED if not accuracies else
                               "yes" if row["p_above_target"] < 1 - level else
                               "no (mean not above)" if row["final_test_acc_mean"] <= target else "not resolved")
        if len(accuracies) > 1:
            row["seeds_for_target"] = seeds_to_resolve(row["final_test_acc_mean"], row["final_test_acc_std"],
                                                             target, 1 - level)
    return row


def compare_to_top(table: list[tuple[dict, list[float]]], level: float = LEVEL):
    """Fill in p_vs_top and vs_top of each ranked setting row (best first, each with its completed runs'
    objectives): Welch's two-sided t-test against the top setting; a difference with p < 1 − level is
    resolved ("below top"), else the setting is "tied with top". A setting (or top) with one seed cannot
    be tested and says so."""
    if not table:
        return
    (top, best), *others = table
    top["vs_top"] = TOP if best else NO_SEED
    for row, values in others:
        test = welch(best, values)
        row["p_vs_top"] = test[2] if test else None
        row["vs_top"] = (NO_SEED if not values else ONE_SEED if len(values) == 1 else
                         TOP_ONE_SEED if test is None else TIED if test[2] >= 1 - level else BELOW)


@dataclass
class Setting:
    """The runs of one setting (its seeds), its label in tables (`label`) and in figures (`short`)."""
    label: str
    short: str
    runs: list[Run]

    def rows(self) -> list[dict]:
        return [run_row(run, self.label) for run in self.runs]


def settings_of(runs: list[Run], report: list[Run] | None = None) -> list[Setting]:
    """The settings of `runs`, in the order they first appear; a setting is labelled by its first run, with
    the overrides that tell it apart (`distinguishing`; `report`: every run reported, when `runs` are one
    test set's). A job its sweep never started joins the setting of a started job of the same sweep whose
    overrides differ from its own only in the seed. Labels two settings would share get their folder's name."""
    config_of = {json.dumps(run.seedless_job): run.setting for run in runs if run.summary.get("config")}
    groups: dict[str, Setting] = {}
    for run, overrides in zip(runs, distinguishing(runs, report)):
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


def retried(rows: list[dict]) -> list[dict]:
    """The run rows of one setting without the attempts a completed run of the same seed retried (an
    interrupted, preempted or failed run of a seed that then completed: a search's trial asked again after
    a kill, a job rerun in a new folder): the setting's statistics count each seed once. A seed that never
    completed keeps its rows, so a failure still weighs on its setting."""
    completed = {r["seed"] for r in rows if r["status"] == "completed"}
    return [r for r in rows if r["status"] == "completed" or r["seed"] not in completed]


def leaderboards(settings: list[Setting], level: float = LEVEL,
                 target: float | None = None) -> tuple[list[dict], list[dict]]:
    """(setting rows, run rows), each best first by the objective (settings: its mean over the runs,
    then the mean final test accuracy); setting rows with their intervals and tests (`setting_row`,
    `compare_to_top`) at confidence `level`, against `target` (a fraction) when given."""
    run_table, setting_table = [], []
    for setting in settings:
        rows = setting.rows()
        run_table += rows
        rows = retried(rows)
        setting_table.append((setting_row(setting.label, rows, level, target), completed_values(rows, "objective")))
    run_table.sort(key=lambda r: r["objective"], reverse=True)
    setting_table.sort(key=lambda pair: (pair[0]["objective"], pair[0]["final_test_acc_mean"] or -1), reverse=True)
    compare_to_top(setting_table, level)
    return [row for row, _ in setting_table], run_table


@dataclass
class Board:
    """The report of the runs scored on one test set: settings and runs ranked, the figure files.
    `pruned_rows`: the run rows of the settings whose every run a search's pruner stopped (status `pruned`),
    the furthest trained first; they are not ranked with the others (not in `settings` nor `setting_rows`,
    last in `run_rows`), since a run stopped mid-schedule is not comparable with finished ones."""
    test_set: str
    settings: list[Setting]
    setting_rows: list[dict]
    run_rows: list[dict]
    figures: list[Path]
    level: float = LEVEL
    pruned_rows: list[dict] = field(default_factory=list)


def pruned_apart(settings: list[Setting]) -> tuple[list[Setting], list[dict]]:
    """(the settings to rank, the run rows of the pruned ones: those whose every run was pruned, by epochs
    trained and then the objective's value when stopped, largest first)."""
    pruned = [s for s in settings if all(run.status == PRUNED for run in s.runs)]
    rows = [row for setting in pruned for row in setting.rows()]
    rows.sort(key=lambda r: (r["epochs"] or 0, r["final_val_acc"] if r["final_val_acc"] is not None
                             else r["final_test_acc"] or 0), reverse=True)
    return [s for s in settings if s not in pruned], rows


def not_started(boards: list[Board]) -> list[Run]:
    """The jobs of the reported sweeps that never started, by sweep and job number."""
    return sorted((run for board in boards for setting in board.settings for run in setting.runs
                   if run.status == NOT_STARTED), key=lambda run: (str(run.sweep), run.summary["job"]))


def build_boards(runs: list[Run], out: Path, level: float = LEVEL, target: float | None = None) -> list[Board]:
    """One Board per test set, the one with the most runs first; figure names get `_set<k>` with several;
    statistics at confidence `level`, against `target` (a fraction) when given (see `leaderboards`)."""
    test_sets = [name for name, _ in Counter(run.test_set for run in runs).most_common()]
    boards = []
    for k, test_set in enumerate(test_sets, start=1):
        settings, pruned_rows = pruned_apart(settings_of([run for run in runs if run.test_set == test_set], runs))
        setting_rows, run_rows = leaderboards(settings, level, target)
        rank = {row["setting"]: k for k, row in enumerate(setting_rows)}
        settings.sort(key=lambda setting: rank[setting.label])  # so colours and legends follow the ranking
        for setting, short in zip(settings, figure_labels([setting.short for setting in settings])):
            setting.short = short
        suffix = f"_set{k}" if len(test_sets) > 1 else ""
        boards.append(Board(test_set, settings, setting_rows, run_rows + pruned_rows,
                            [out / name.replace(".png", f"{suffix}.png") for name in FIGURES], level, pruned_rows))
    return boards


def throughput(runs: list[Run]) -> dict | None:
    """The training throughput of `runs` together, as a sweep whose jobs ran side by side (the parallel
    launcher's `jobs_per_device`) achieved it: the images every completed run trained (its `epochs` ×
    `train_images`, an epoch's images) over the wall seconds from the first run's start to the last one's
    end (summary.json's `started_at`, `ended_at`: Unix seconds). Returns {"jobs", "images", "wall_seconds",
    "images_per_s"}, or None without a completed run that records them (older runs). Read it for one sweep:
    the wall span of runs from different days holds the days between them."""
    done = [run.summary for run in runs if run.status == "completed"
            and all(run.summary.get(key) is not None for key in ("started_at", "ended_at", "train_images", "epochs"))]
    if not done:
        return None
    wall = max(s["ended_at"] for s in done) - min(s["started_at"] for s in done)
    images = sum(s["epochs"] * s["train_images"] for s in done)
    return {"jobs": len(done), "images": round(images), "wall_seconds": round(wall, 3),
            "images_per_s": round(images / wall, 1) if wall > 0 else None}
