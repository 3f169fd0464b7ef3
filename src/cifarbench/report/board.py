"""A report's leaderboards: runs grouped into settings (their seeds), each run and each setting as a
row, ranked by the objective; one Board per test set."""
from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cifarbench.report.runs import NOT_STARTED, Run
from cifarbench.run.metrics import objective
from cifarbench.run.setting import SEED

THRESHOLDS = (0.5, 0.7, 0.9)  # time-to-accuracy columns (test accuracy)
SECONDS_TO = tuple(f"seconds_to_{int(100 * a)}" for a in THRESHOLDS)
FIGURES = ("compare_time.png", "compare_epoch.png", "final_acc.png")
LABEL_CHARS = 36  # a figure's labels are cut to this many characters (the tables keep them whole)


def seconds_to(rows: list[dict], accuracy: float) -> float | None:
    return next((r["train_seconds"] for r in rows if r["test_acc"] >= accuracy), None)


def distinguishing(runs: list[Run]) -> list[list[str]]:
    """Each run's overrides that not every run shares (what distinguishes it), its seed left out."""
    own = [[o for o in run.overrides if not o.startswith(("hydra.", f"{SEED}="))] for run in runs]
    common = set.intersection(*map(set, own)) if own else set()
    return [[o for o in overrides if o not in common] for overrides in own]


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
        "status": (", ".join(f"{n} {status}" for status, n in statuses.items()) if len(statuses) > 1
                   else rows[0]["status"]),
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


@dataclass
class Board:
    """The report of the runs scored on one test set: settings and runs ranked, the figure files."""
    test_set: str
    settings: list[Setting]
    setting_rows: list[dict]
    run_rows: list[dict]
    figures: list[Path]


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
