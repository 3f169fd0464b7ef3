"""The figures of a run and of a report, drawn with matplotlib without pyplot, saved atomically as PNG:
`new_figure`, `save_png`, and curves.png (`plot_curves`)."""
from __future__ import annotations

from pathlib import Path

from cifarbench.core.files import atomic_write

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
