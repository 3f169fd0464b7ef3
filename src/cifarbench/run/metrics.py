"""What a run leaves behind: metrics.csv (one row per evaluation), curves.png, summary.json.

Every file is written atomically; accuracies are fractions in [0, 1]. `new_figure` and `save_png` are the
pyplot-free matplotlib helpers every figure of a run and of a report is drawn with.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from cifarbench.core.files import atomic_write, atomic_write_text

# val_loss and val_acc are empty cells (None in memory) when the run holds out no validation split.
METRICS = ("epoch", "step", "train_seconds", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
           "images_per_s", "val_loss", "val_acc")


def write_metrics(path: str | Path, rows: list[dict]):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.csv as floats; an empty cell (no validation split) reads as None."""
    with open(path, newline="") as f:
        return [{k: float(v) if v != "" else None for k, v in row.items()} for row in csv.DictReader(f)]


def objective(summary: dict) -> float:
    """The number a sweep maximises and leaderboards rank by, from a run's summary.json: the value of
    the key its `selection.objective` names (`final_val_acc` with a validation split, else
    `final_test_acc`; a fraction), or -inf for a run that did not complete (failed, diverged,
    interrupted, killed) or has no such value, so it ranks below every completed run. Never NaN:
    Hydra's Optuna sweeper fails the whole search on a NaN return."""
    value = summary.get(summary.get("selection", {}).get("objective", "final_test_acc"))
    if summary.get("status") != "completed" or value is None or math.isnan(value):
        return -math.inf
    return float(value)


DPI = 100  # figure pixels per inch: a figure of w × h inches is saved as a (100·w) × (100·h) pixel PNG


def new_figure(width: float, height: float):
    """A matplotlib Figure of `width` × `height` inches on an Agg canvas, without pyplot: no global
    figure registry to close, no backend selection, and matplotlib is imported only when drawing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path):
    """Write `fig` to `path` as a PNG, atomically, at DPI pixels per inch."""
    # zlib level 3 instead of PIL's 6: a third less time for a few percent more bytes
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"compress_level": 3}))


def plot_curves(path: str | Path, rows: list[dict], title: str = ""):
    """Accuracy (fraction) and loss (mean cross-entropy) against epoch, train, validation (when the
    run holds out a split) and test, in two panels (1000 × 400 px); `rows` as written to metrics.csv."""
    fig = new_figure(10, 4)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.12, top=0.88 if title else 0.96, wspace=0.2)
    acc, loss = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in rows]
    parts = ("train", "val", "test") if rows and rows[-1].get("val_acc") is not None else ("train", "test")
    for axis, key, label in ((acc, "acc", "accuracy"), (loss, "loss", "loss")):
        for part in parts:
            axis.plot(epochs, [r[f"{part}_{key}"] for r in rows], "o-", ms=3, label=part)
        axis.set(xlabel="epoch", ylabel=label)
        axis.grid(alpha=0.3)
        axis.locator_params(nbins=5)  # each tick is a handful of artists: most of the drawing time
    acc.legend(loc="lower right")
    acc.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    save_png(fig, path)
