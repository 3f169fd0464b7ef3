"""What a trained model gets right and wrong: confusion.png, samples.png and per-class accuracy.

Written at the end of every run from the final test predictions; `cifarbench inspect ckpt=PATH [out=DIR]`
(commands/inspect.py) does the same for any checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cifarbench.run.background import draw
from cifarbench.run.figures import DPI, new_figure, save_png
from cifarbench.run.layout import RunFolder

FRAME = 4  # pixels of margin around each sample tile, red for a wrong prediction
RED = (220, 20, 20, 255)  # RGBA
CAPTION = 30  # pixels of white band above each sample tile for its caption
LEGEND = 30  # pixels of white band above the sample montage for the line that says how to read its captions
SAMPLES_LEGEND = "each caption reads true class → predicted class; wrong predictions are framed in red"
CELL_NUMBERS_UP_TO = 20  # classes; with more, the heat map has no per-cell numbers and lists the top confusions
TOP_CONFUSIONS = 15


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, -1)


def per_class_accuracy(confusion: np.ndarray, classes) -> dict[str, float]:
    """Fraction of each true class predicted right (NaN for a class with no test images)."""
    totals = confusion.sum(1)
    return {c: float(confusion[i, i] / totals[i]) if totals[i] else float("nan") for i, c in enumerate(classes)}


def top_confusions(confusion: np.ndarray, classes, count: int = TOP_CONFUSIONS) -> list[tuple[str, str, int, float]]:
    """The `count` most frequent mistakes as (true class, predicted class, test images, percent of the
    true class), most images first (ties: lower true, then predicted, class id)."""
    totals = confusion.sum(1)
    wrong = confusion * (1 - np.eye(len(confusion), dtype=confusion.dtype))
    order = np.lexsort((np.arange(wrong.size), -wrong.ravel()))[:count]
    return [(classes[i], classes[j], int(wrong[i, j]), 100 * wrong[i, j] / max(totals[i], 1))
            for i, j in (divmod(int(k), len(confusion)) for k in order) if wrong[i, j]]


def confusion_figure(confusion: np.ndarray, classes):
    """Heat map of `confusion` (rows: true class). Up to CELL_NUMBERS_UP_TO classes, 750 × 600 px: cell
    numbers and colour bar share one unit, percent of the true class (each row sums to 100; cells under
    0.5 % are left blank); each row's label gives its number of test images. With more classes (CIFAR-100),
    `many_classes_figure`: no cell numbers, and the top confusions listed beside the map."""
    if len(classes) > CELL_NUMBERS_UP_TO:
        return many_classes_figure(confusion, classes)
    totals = confusion.sum(1, keepdims=True)
    percent = 100 * confusion / np.maximum(totals, 1)
    fig = new_figure(7.5, 6)
    axis = fig.add_axes((0.25, 0.17, 0.58, 0.76))
    image = axis.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for (i, j), value in np.ndenumerate(percent.round().astype(int)):
        if value:  # figure-level texts placed in data coordinates: unlike axis.text, no clip path to build
            fig.text(j, i, value, transform=axis.transData, ha="center", va="center", fontsize=7,
                     color="white" if value > 50 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), [f"{c} ({n})" for c, n in zip(classes, totals[:, 0])])
    axis.set(xlabel="predicted (blank: under 0.5 %)", ylabel="true (test images)",
             title=f"test accuracy {np.trace(confusion) / max(confusion.sum(), 1):.2%}")
    fig.colorbar(image, cax=fig.add_axes((0.86, 0.17, 0.03, 0.76)), label="% of the true class")
    return fig


def many_classes_figure(confusion: np.ndarray, classes):
    """1300 × 800 px: the heat map in percent of the true class on a square-root colour scale (so the
    few-percent confusions show beside a diagonal near 100), axes ticked with class ids every 10, and the
    TOP_CONFUSIONS most frequent mistakes written out with their class names."""
    from matplotlib.colors import PowerNorm

    n = len(classes)
    percent = 100 * confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    fig = new_figure(13, 8)
    axis = fig.add_axes((0.06, 0.08, 0.5, 0.82))
    image = axis.imshow(percent, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=100), interpolation="nearest")
    ticks = range(0, n, 10)
    axis.set_xticks(ticks, ticks)
    axis.set_yticks(ticks, ticks)
    axis.set(xlabel="predicted class id", ylabel="true class id",
             title=f"{n} classes, test accuracy {np.trace(confusion) / max(confusion.sum(), 1):.2%}")
    fig.colorbar(image, cax=fig.add_axes((0.57, 0.08, 0.012, 0.82)), label="% of the true class (√ scale)")
    lines = [f"{true} → {predicted}: {images} ({share:.0f} %)"
             for true, predicted, images, share in top_confusions(confusion, classes)]
    fig.text(0.64, 0.9, "most frequent mistakes (true → predicted:\ntest images, % of the true class)",
             va="top", fontsize=10, weight="bold")
    fig.text(0.64, 0.82, "\n".join(lines) or "none", va="top", fontsize=9, linespacing=1.5)
    return fig


def plot_confusion(path: str | Path, confusion: np.ndarray, classes):
    """confusion_figure as a PNG."""
    save_png(confusion_figure(confusion, classes), path)


def montage(images: np.ndarray, wrong: np.ndarray, columns: int, scale: int) -> np.ndarray:
    """One uint8 RGBA picture of `images` (N, C, H, W), C = 3 (RGB) or 1 (grey), in rows of `columns`
    tiles: each image enlarged `scale` times (nearest pixel) under a CAPTION-pixel white band, inside a
    FRAME-pixel margin that is red where `wrong` is true and white otherwise; unused tiles stay white.
    RGBA because Agg draws it as is."""
    height, width = images.shape[2] * scale, images.shape[3] * scale
    tile_h, tile_w = CAPTION + height + 2 * FRAME, width + 2 * FRAME
    rows = -(-len(images) // columns)
    picture = np.full((rows, columns, tile_h, tile_w, 4), 255, np.uint8)
    tiles = picture.reshape(rows * columns, tile_h, tile_w, 4)[:len(images)]
    tiles[wrong, CAPTION:] = RED
    rgb = np.broadcast_to(images, (len(images), 3, *images.shape[2:]))  # grey: the same value in R, G and B
    tiles[:, CAPTION + FRAME:-FRAME, FRAME:-FRAME, :3] = rgb.transpose(0, 2, 3, 1).repeat(scale, 1).repeat(scale, 2)
    return picture.transpose(0, 2, 1, 3, 4).reshape(rows * tile_h, columns * tile_w, 4)


def samples_figure(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes, count: int = 32,
                   seed: int = 0, columns: int = 8, scale: int = 5):
    """`count` random test images ((N, C, H, W) uint8, RGB or grey; the same pick for the same seed and
    test set) captioned 'true → predicted', wrong ones framed and captioned in red, under a line saying so
    (SAMPLES_LEGEND, in a LEGEND px band): one montage drawn one picture pixel per PNG pixel (each tile
    W·scale + 8 px wide, 1344 px for 8 columns of 32×32 images at scale 5), one caption artist per tile."""
    pick = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False)
    wrong = predictions[pick] != labels[pick]
    picture = montage(images[pick], wrong, columns, scale)
    height, width = picture.shape[:2]
    fig = new_figure(width / DPI, (height + LEGEND) / DPI)
    fig.figimage(picture, origin="upper")  # pasted pixel for pixel below the legend band: no axes, no resampling
    fig.text(0.5, 1 - LEGEND / 2 / (height + LEGEND), SAMPLES_LEGEND, ha="center", va="center", fontsize=10)
    tile_h, tile_w = height // -(-len(pick) // columns), width // columns
    for k, i in enumerate(pick):
        row, column = divmod(k, columns)
        fig.text((column + 0.5) * tile_w / width, 1 - (LEGEND + row * tile_h + CAPTION / 2) / (height + LEGEND),
                 f"{classes[labels[i]]} → {classes[predictions[i]]}", ha="center", va="center", fontsize=9,
                 color=np.divide(RED, 255) if wrong[k] else "black")
    return fig


def plot_samples(path: str | Path, images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes,
                 **options):
    """samples.png: `samples_figure(images, labels, predictions, classes, **options)`."""
    save_png(samples_figure(images, labels, predictions, classes, **options), path)


def write_diagnostics(out_dir: str | Path, images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                      classes) -> dict[str, float]:
    """confusion.png and samples.png into `out_dir` (drawn by `run.background.draw`: in a sweep, in the background);
    returns the accuracy (fraction) of each true class."""
    confusion = confusion_matrix(labels, predictions, len(classes))
    folder = RunFolder(out_dir)
    draw(plot_confusion, folder.confusion, confusion, classes)
    draw(plot_samples, folder.samples, images, labels, predictions, classes)
    return per_class_accuracy(confusion, classes)
