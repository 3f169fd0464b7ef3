"""A speed-run network after Keller Jordan's airbench94 (the fastest published CIFAR-10 training):
a 2×2 patch conv meant to be initialised as a whitening filter bank (`trainer.whiten_init=true`),
then three blocks of conv-pool-BN-GELU-conv-BN-GELU at 64/256/256 channels, a 3×3 max-pool and a
linear head whose logits are scaled down by 1/9. airbench's batch-norm settings (momentum, eps, no
learned scale) and Dirac init are config fields any model takes (conf/experiment/speedrun94.yaml)."""
from __future__ import annotations

import torch
from torch import nn

from cifarbench.models.registry import MODELS
from cifarbench.models.layers import flat_size


def block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding="same", bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(out_ch), nn.GELU(),
        nn.Conv2d(out_ch, out_ch, 3, padding="same", bias=False), nn.BatchNorm2d(out_ch), nn.GELU(),
    )


class SpeedNet(nn.Module):
    INPUTS = "28×28: 27→13→6→3, the 3×3 max-pool leaves 1×1 as on 32×32"

    def __init__(self, num_classes: int = 10, widths=(64, 256, 256), whiten_width: int = 24,
                 logit_scale: float = 1 / 9, in_channels: int = 3, image_size: int = 32,
                 head_std: float | None = None):
        super().__init__()
        # RGB: 3·2·2 = 12 patch dimensions, 12 filters and their negatives
        self.whiten = nn.Conv2d(in_channels, whiten_width, 2)
        layers, in_ch = [], whiten_width
        for width in widths:
            layers.append(block(in_ch, width))
            in_ch = width
        self.blocks = nn.Sequential(nn.GELU(), *layers)
        pooled = flat_size(nn.Sequential(self.whiten, self.blocks, nn.MaxPool2d(3)), in_channels, image_size)
        self.head = nn.Sequential(nn.MaxPool2d(3), nn.Flatten(), nn.Linear(pooled, num_classes, bias=False))
        self.logit_scale = logit_scale
        if head_std is not None:  # airbench94_muon: w *= 1 / w.std() after PyTorch's init
            with torch.no_grad():
                self.head[-1].weight.mul_(head_std / self.head[-1].weight.std())

    def forward(self, x):
        return self.head(self.blocks(self.whiten(x))) * self.logit_scale


@MODELS.register(info="speed run (airbench94-style)")
def speednet(num_classes: int = 10, widths=(64, 256, 256), whiten_width: int = 24, logit_scale: float = 1 / 9,
             head_std: float | None = None, in_channels: int = 3, image_size: int = 32) -> SpeedNet:
    """`logit_scale`: the logits' multiplier; `head_std`: the classifier's initial weights rescaled to
    this standard deviation (null: PyTorch's init)."""
    return SpeedNet(num_classes, tuple(widths), whiten_width, logit_scale, in_channels, image_size, head_std)
