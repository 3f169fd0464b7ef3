"""The CIFAR ResNets of He et al. 2016 (§4.2), depth 6n+2 — ResNet-20/32/44/56/110, and study §5's
ResNet-74: conv(16,3); three stages of n basic blocks at 16, 32, 64 channels, stride 2 at stage entry;
option-A shortcuts (2× average-pool subsampling, channels zero-padded); global average pool; FC."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from cifarbench.core.registry import ConfigError
from cifarbench.models.layers import Residual, conv_bn_act, set_stochastic_depth
from cifarbench.models.registry import MODELS


class PadShortcut(nn.Module):
    """Option A: no parameters; subsample by 2×2 average pooling, zero-pad the new channels."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x):
        return F.pad(F.avg_pool2d(x, 2), (0, 0, 0, 0, 0, self.extra_channels))


class CifarResNet(nn.Module):
    INPUTS = "any size: global average pool"

    def __init__(self, depth: int = 20, num_classes: int = 10, widths=(16, 32, 64), in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"model.depth={depth}; it must be 6n+2 (20, 32, 44, 56, 74, 110, ...)")
        n = (depth - 2) // 6
        self.stem = conv_bn_act(in_channels, widths[0], 3)
        blocks, in_ch = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                branch = nn.Sequential(conv_bn_act(in_ch, width, 3, stride, padding=1),
                                       conv_bn_act(width, width, 3, act=None))
                transition = stride != 1
                shortcut = PadShortcut(width - in_ch) if transition else None
                blocks.append(Residual(branch, shortcut, nn.ReLU(), transition))
                in_ch = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


@MODELS.register(info="He et al. CIFAR ResNet, depth 6n+2")
def resnet_cifar(num_classes: int = 10, depth: int = 20, stochastic_depth: float = 0.0,
                 in_channels: int = 3) -> CifarResNet:
    return set_stochastic_depth(CifarResNet(depth, num_classes, in_channels=in_channels), stochastic_depth)


@MODELS.register(info="§5 ResNet-74")
def resnet74(num_classes: int = 10, stochastic_depth: float = 0.0, in_channels: int = 3) -> CifarResNet:
    return resnet_cifar(num_classes, 74, stochastic_depth, in_channels)


@MODELS.register(info="§5 ResNet-74 + stochastic depth")
def resnet74_sd(num_classes: int = 10, stochastic_depth: float = 0.5, in_channels: int = 3) -> CifarResNet:
    return resnet_cifar(num_classes, 74, stochastic_depth, in_channels)
