"""What a run leaves behind: metrics.csv (one row per evaluation), curves.png, summary.json.

Every file is written atomically; accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from cifarbench.files import atomic_write, atomic_write_text

METRICS = ("epoch", "step", "train_seconds", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
           "images_per_s")


def write_metrics(path: str | Path, rows: list[dict]):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_metrics(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_curves(path: str | Path, rows: list[dict], title: str = ""):
    """Accuracy and loss against epoch, train and test, in two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for axis, key, label in ((acc, "acc", "accuracy"), (loss, "loss", "loss")):
        axis.plot(epochs, [r[f"train_{key}"] for r in rows], "o-", ms=3, label="train")
        axis.plot(epochs, [r[f"test_{key}"] for r in rows], "o-", ms=3, label="test")
        axis.set(xlabel="epoch", ylabel=label)
        axis.grid(alpha=0.3)
        axis.legend()
    acc.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
