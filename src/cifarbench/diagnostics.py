"""What a trained model gets right and wrong: confusion.png, samples.png and per-class accuracy.

Written at the end of every run from the final test predictions; `python -m cifarbench.diagnostics
ckpt=PATH [out=DIR]` (or `cifarbench inspect ...`) does the same for any checkpoint.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cifarbench.files import atomic_write


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, -1)


def per_class_accuracy(confusion: np.ndarray, classes) -> dict[str, float]:
    totals = confusion.sum(1)
    return {c: float(confusion[i, i] / totals[i]) if totals[i] else float("nan") for i, c in enumerate(classes)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path):
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    _pyplot().close(fig)


def plot_confusion(path: str | Path, confusion: np.ndarray, classes):
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7, 6), constrained_layout=True)
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(confusion.shape):
        axis.text(j, i, confusion[i, j], ha="center", va="center", fontsize=7,
                  color="white" if rates[i, j] > 0.5 else "black")
    axis.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true",
             title=f"test accuracy {np.trace(confusion) / confusion.sum():.2%}")
    axis.set_xticklabels(classes, rotation=45, ha="right")
    axis.set_yticklabels(classes)
    fig.colorbar(image, ax=axis, label="fraction of the true class")
    _save(fig, Path(path))


def plot_samples(path: str | Path, images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes,
                 count: int = 32, seed: int = 0):
    """A grid of random test images, 'true → predicted', wrong ones in red with a red frame."""
    plt = _pyplot()
    pick = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False)
    columns = 8
    fig, axes = plt.subplots(-(-len(pick) // columns), columns, figsize=(2 * columns, 2.3 * -(-len(pick) // columns)),
                             squeeze=False, constrained_layout=True)
    for axis in axes.flat:
        axis.axis("off")
    for axis, i in zip(axes.flat, pick):
        wrong = predictions[i] != labels[i]
        axis.imshow(images[i].transpose(1, 2, 0))
        axis.set_title(f"{classes[labels[i]]}\n→ {classes[predictions[i]]}", fontsize=8, color="red" if wrong else "black")
        if wrong:
            axis.axis("on")
            axis.set(xticks=[], yticks=[])
            for spine in axis.spines.values():
                spine.set(color="red", linewidth=3)
    _save(fig, Path(path))


def write_diagnostics(out_dir: str | Path, images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                      classes) -> dict[str, float]:
    """confusion.png and samples.png into `out_dir`; returns per-class accuracy."""
    confusion = confusion_matrix(labels, predictions, len(classes))
    plot_confusion(Path(out_dir) / "confusion.png", confusion, classes)
    plot_samples(Path(out_dir) / "samples.png", images, labels, predictions, classes)
    return per_class_accuracy(confusion, classes)


def main(argv: list[str] | None = None) -> int:
    """Diagnostics for a checkpoint on the test set of its config's data (or data.root=...)."""
    import contextlib
    import json

    import torch
    from omegaconf import OmegaConf

    # (imported here: the training modules import this one)
    from cifarbench.data import DeviceLoader, load_cifar10
    from cifarbench.predict import load_trained
    from cifarbench.evaluate import evaluate

    args = OmegaConf.from_dotlist(list(argv if argv is not None else sys.argv[1:]))
    if "ckpt" not in args:
        print("usage: cifarbench inspect ckpt=PATH [out=DIR] [data.root=DIR]", file=sys.stderr)
        return 2
    trained = load_trained(args.ckpt)
    root = OmegaConf.select(args, "data.root") or trained.config["data"]["root"]
    data = load_cifar10(root, download=False)
    loader = DeviceLoader(torch.from_numpy(data.test_images), torch.from_numpy(data.test_labels), 1000,
                          trained.preprocess, shuffle=False)
    images, labels = data.test_images, data.test_labels
    predictions = evaluate(trained.model, loader, contextlib.nullcontext())[2].numpy()
    out = Path(args.get("out") or Path(args.ckpt).resolve().parent.parent)
    accuracy = write_diagnostics(out, images, labels, predictions, trained.classes)
    print(json.dumps({"test_acc": float((predictions == labels).mean()), "per_class_acc": accuracy}, indent=2))
    print(f"wrote {out / 'confusion.png'} and {out / 'samples.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
