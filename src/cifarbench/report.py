"""Turn a folder of runs — a finished or half-finished sweep, or single runs — into a comparison:
leaderboard.csv, leaderboard.md, compare_time.png, compare_epoch.png and final_acc.png.

    python -m cifarbench.report outputs/multirun/2026-11-24/10-00-00      (or: cifarbench report PATH)

A multirun writes them into its sweep folder when it ends (LeaderboardCallback, registered in the
root config). Accuracies are fractions; the leaderboard is sorted by best test accuracy, which is
chosen on the test set (the honest number is final_test_acc, shown beside it).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from cifarbench.files import atomic_write_text
from cifarbench.runlog import new_figure, read_metrics, save_png

log = logging.getLogger(__name__)
THRESHOLDS = (0.5, 0.7, 0.9)  # time-to-accuracy columns
COLUMNS = ("run", "model", "optim", "aug", "params", "best_test_acc", "final_test_acc", "epochs", "train_seconds",
           *(f"seconds_to_{int(100 * a)}" for a in THRESHOLDS), "status", "error", "path")


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
    """Each run's overrides that not every run shares (what distinguishes it), else its folder name."""
    common = set.intersection(*(set(r.overrides) for r in runs)) if runs else set()
    return [" ".join(o for o in r.overrides if o not in common and not o.startswith("hydra.")) or r.path.name
            for r in runs]


def leaderboard(runs: list[Run]) -> list[dict]:
    table = []
    for run, label in zip(runs, label_runs(runs)):
        s, rows = run.summary, run.rows
        best = s.get("best_test_acc", max((r["test_acc"] for r in rows), default=None))
        final = s.get("final_test_acc", rows[-1]["test_acc"] if rows else None)
        config = s.get("config", {})
        table.append({
            "run": label, "model": s.get("model", config.get("model", {}).get("name")),
            "optim": s.get("optim", config.get("optim", {}).get("name")), "aug": s.get("aug"),
            "params": s.get("params"), "best_test_acc": best, "final_test_acc": final,
            "epochs": s.get("epochs", rows[-1]["epoch"] if rows else None),
            "train_seconds": s.get("train_seconds", rows[-1]["train_seconds"] if rows else None),
            **{f"seconds_to_{int(100 * a)}": seconds_to(rows, a) for a in THRESHOLDS},
            "status": run.status, "error": s.get("error", ""), "path": str(run.path),
        })
    return sorted(table, key=lambda r: -1 if r["best_test_acc"] is None else r["best_test_acc"], reverse=True)


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column.endswith("_acc"):
        return f"{value:.4f}"
    if column == "epochs":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def to_markdown(table: list[dict]) -> str:
    columns = [c for c in COLUMNS if c != "path"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, row[c]).replace("|", "\\|") for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


def to_csv(table: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def plot_comparisons(folder: Path, runs: list[Run], labels: list[str]):
    """Test accuracy (fraction) against training seconds and against epoch, one line per run
    (compare_time.png, compare_epoch.png: 900 × 500 px), and final test accuracy per run as bars (final_acc.png)."""
    for x, name in (("train_seconds", "compare_time.png"), ("epoch", "compare_epoch.png")):
        fig = new_figure(9, 5)
        axis = fig.add_axes((0.08, 0.11, 0.9, 0.86))
        for run, label in zip(runs, labels):
            if run.rows:
                axis.plot([r[x] for r in run.rows], [r["test_acc"] for r in run.rows], "o-", ms=3, label=label)
        axis.set(xlabel="training seconds" if x == "train_seconds" else "epoch", ylabel="test accuracy")
        axis.grid(alpha=0.3)
        if any(run.rows for run in runs):
            axis.legend(fontsize=7, loc="lower right")
        save_png(fig, folder / name)

    ordered = sorted(zip(runs, labels), key=lambda p: p[0].summary.get("final_test_acc") or 0)
    fig = new_figure(9, 1 + 0.35 * len(ordered))
    fig.set_layout_engine("constrained")  # the bar labels are run labels of any length
    axis = fig.add_subplot()
    finals = [run.summary.get("final_test_acc") or 0 for run, _ in ordered]
    colours = ["tab:blue" if run.status == "completed" else "tab:red" for run, _ in ordered]
    axis.barh([f"{label} ({run.status})" if run.status != "completed" else label for run, label in ordered], finals,
              color=colours)
    for i, value in enumerate(finals):
        axis.text(value, i, f" {value:.1%}", va="center", fontsize=8)
    axis.set(xlabel="final test accuracy", xlim=(0, 1))
    save_png(fig, folder / "final_acc.png")


def write_report(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    runs = find_runs(folder)
    table = leaderboard(runs)
    atomic_write_text(folder / "leaderboard.csv", to_csv(table))
    atomic_write_text(folder / "leaderboard.md", to_markdown(table))
    plot_comparisons(folder, runs, label_runs(runs))
    return table


class LeaderboardCallback(Callback):
    """Writes the report into the sweep folder when a multirun ends."""

    def on_multirun_end(self, config, **kwargs):
        table = write_report(config.hydra.sweep.dir)
        log.info("leaderboard of %d runs: %s", len(table), Path(config.hydra.sweep.dir) / "leaderboard.md")


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
    print(f"wrote leaderboard.csv, leaderboard.md, compare_time.png, compare_epoch.png, final_acc.png to {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
