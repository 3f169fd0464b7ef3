"""A run's metrics: the columns of metrics.csv (one row per evaluation), written atomically and read
back, and the objective a sweep maximises. Accuracies are fractions in [0, 1]; seconds are training seconds."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from cifarbench.core.clock import RunState
from cifarbench.core.hardware import HARDWARE_METRICS
from cifarbench.core.files import atomic_write_text

# val_loss and val_acc are empty cells (None in memory) when the run holds out no validation split;
# grad_norm (the mean L2 norm of the gradients before clipping, over the window) when it does not clip; the
# hardware columns (core/hardware.py: peak memory in MiB, GPU utilisation and power) where the device has none.
METRICS = ("epoch", "step", "train_seconds", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
           "images_per_s", "val_loss", "val_acc", "grad_norm", *HARDWARE_METRICS)


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
    interrupted, killed, pruned) or has no such value, so it ranks below every completed run. Never NaN,
    which Optuna's study.tell refuses (the Optuna sweeper tells -inf as the worst value for its direction)."""
    value = summary.get(summary.get("selection", {}).get("objective", "final_test_acc"))
    if summary.get("status") != "completed" or value is None or math.isnan(value):
        return -math.inf
    return float(value)


def metrics_row(state: RunState, steps_per_epoch: int, lr: float, window: dict, test: tuple[float, float],
                val: tuple[float, float] | tuple[None, None] = (None, None), hardware: dict | None = None) -> dict:
    """One metrics.csv row; `window` is TrainStep.window() (training metrics since the last row);
    `test` and `val` are (mean cross-entropy, accuracy as a fraction), `val` (None, None) without a split;
    `hardware` is HardwareMonitor.read() (the window's peak memory, ...; None: empty cells)."""
    return {"epoch": round(state.step / steps_per_epoch, 4), "step": state.step,
            "train_seconds": round(state.train_seconds, 3), "lr": lr, "train_loss": window["train_loss"],
            "train_acc": window["train_acc"], "test_loss": test[0], "test_acc": test[1],
            "images_per_s": round(window["seen"] / state.window_seconds, 1) if state.window_seconds else 0.0,
            "val_loss": val[0], "val_acc": val[1], "grad_norm": window["grad_norm"],
            **dict.fromkeys(HARDWARE_METRICS), **(hardware or {})}
