"""Evaluation, the same for training, `inspect`, `predict` and the benchmarks: loss, accuracy and
predictions of a model over a loader, with optional test-time augmentation (TTA)."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from cifarbench.aug.tta import tta_logits
from cifarbench.core.distributed import World


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
