"""Input preprocessing: statistics fitted on the training images, applied identically to every batch.

`build_preprocess(name, train_images)` returns a module mapping a uint8 batch (N, 3, H, W) on any
device to the float input of the network.
"""
from __future__ import annotations

import torch
from torch import nn

from cifarbench.registry import Registry

PREPROCESSES = Registry("preprocessing")


class Normalize(nn.Module):
    """(x / 255 − mean) / std per channel, with mean and std measured on the training images."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        # Folded into one multiply-add on the raw bytes: x * scale + shift.
        self.register_buffer("scale", (1 / (255 * std)).view(1, -1, 1, 1).float())
        self.register_buffer("shift", (-mean / std).view(1, -1, 1, 1).float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mul_(self.scale).add_(self.shift)


def channel_stats(images: torch.Tensor, chunk: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1] units, accumulated in float64 by chunks."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to("cpu", torch.float64).div_(255).transpose(0, 1).flatten(1)
        total += x.sum(1)
        squares += x.square().sum(1)
    count = images.numel() // images.shape[1]
    mean = total / count
    return mean, (squares / count - mean.square()).clamp_min(0).sqrt()


@PREPROCESSES.register("meanstd")
def meanstd(train_images: torch.Tensor) -> nn.Module:
    return Normalize(*channel_stats(train_images))


def build_preprocess(name: str, train_images: torch.Tensor) -> nn.Module:
    return PREPROCESSES.build(name, train_images)
