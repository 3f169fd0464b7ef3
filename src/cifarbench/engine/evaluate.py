"""Evaluation, the same for training, `inspect`, `predict` and the benchmarks: loss, accuracy and
predictions of a model over a loader, with optional test-time augmentation (TTA)."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from cifarbench.core.distributed import World

TTA_MODES = ("none", "flip", "flip_translate")


def translate(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift the content by (dy, dx) pixels (positive: down, right), filling the edge by reflection."""
    pad = max(abs(dy), abs(dx))
    h, w = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def tta_views(images: torch.Tensor, mode: str) -> list[tuple[float, torch.Tensor]]:
    """The weighted views whose logits are summed at evaluation (weights sum to 1):

    - none: the image;
    - flip: the image and its mirror, ½ each;
    - flip_translate (airbench94's TTA level 2): the flip pair (½), and the flip pairs of the image
      moved one pixel down-right and one pixel up-left (¼ each), i.e. 1/4, 1/4, 1/8 × 4.

    Raises ValueError for an unknown mode.
    """
    if mode not in TTA_MODES:
        raise ValueError(f"trainer.tta={mode!r}; choose one of {', '.join(TTA_MODES)}")
    if mode == "none":
        return [(1.0, images)]
    pairs = [(1.0, images)]
    if mode == "flip_translate":
        pairs = [(0.5, images), (0.25, translate(images, 1, 1)), (0.25, translate(images, -1, -1))]
    return [(weight / 2, view) for weight, source in pairs for view in (source, source.flip(3))]


def tta_logits(model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """(N, classes) float32 logits of `model` on `images` (network inputs), summed over the TTA views
    of `tta_views` with their weights. Raises ValueError for an unknown mode."""
    return sum(weight * model(view).float() for weight, view in tta_views(images, tta))


@torch.no_grad()
def evaluate(model: nn.Module, loader, autocast=None, tta: str = "none",
             world: World = World()) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy (nats), accuracy (fraction) and predicted classes ((N,) int64 on the CPU) of
    `model` over every batch of `loader` (a `DeviceLoader` without shuffling), in eval mode, logits
    summed over the TTA views with their weights; one host–device sync at the end.

    In a `world` of several processes each rank's loader holds its share of the images (`World.shard`
    of them, in rank order) and `model` is the plain module (not DDP's wrapper, whose forward would
    broadcast buffers): the sums are all-reduced and the predictions gathered, so every rank returns
    the metrics and predictions of the whole set, each image counted once."""
    model.eval()
    autocast = autocast or contextlib.nullcontext()
    loss_sum = torch.zeros((), device=loader.images.device)
    predictions = []
    for images, labels in loader:
        with autocast:
            logits = tta_logits(model, images, tta)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        predictions.append(logits.argmax(1))
    predictions = torch.cat(predictions)
    loss_sum, correct, n = world.sum(torch.stack([loss_sum.double(), (predictions == loader.labels).sum().double(),
                                                  torch.tensor(len(predictions), dtype=torch.float64,
                                                               device=loss_sum.device)])).tolist()
    return loss_sum / n, correct / n, world.gather(predictions).cpu()
