"""LeNet and the variants of study §1 ("CIFAR-10 in 10 minutes"), and LeNet-5 of study §4.

One family with fields, so variants combine from the command line (`model.width=2 model.bn=true`):
stages of `convs_per_stage` convolutions (each ReLU, then BN if `bn`), a 2×2 max-pool per stage,
FC(hidden)-ReLU(-BN), FC(classes); `dropout` adds the study's 0.2 after each pool and 0.5 after the FC.
`kernel` replaces every 5×5 conv by two 3×3 (`3x3`) or by two (1×3 then 3×1) pairs (`3x1`).
"""
from __future__ import annotations

import inspect
from typing import Literal

from torch import nn

from cifarbench.core.registry import ConfigError
from cifarbench.models.layers import flat_size
from cifarbench.models.registry import MODELS


KERNELS = {"5x5": [5], "3x3": [3, 3], "3x1": [(1, 3), (3, 1), (1, 3), (3, 1)]}


class LeNet(nn.Module):
    INPUTS = "'same' convs, each pool halves the side, the FC reads the flattened map (28×28: 7×7; lenet_deep 3×3)"

    def __init__(self, num_classes: int = 10, channels=(20, 50), hidden: int = 500, width: float = 1,
                 convs_per_stage: int = 1, kernel: Literal["5x5", "3x3", "3x1"] = "5x5", bn: bool = False,
                 dropout: bool = False,
                 in_channels: int = 3, image_size: int = 32):
        super().__init__()
        if kernel not in KERNELS:
            raise ConfigError(f"model.kernel={kernel!r}; choose one of {', '.join(KERNELS)}")
        layers, in_ch = [], in_channels
        for ch in channels:
            ch = round(ch * width)
            for _ in range(convs_per_stage):
                for k in KERNELS[kernel]:
                    layers += [nn.Conv2d(in_ch, ch, k, padding="same"), nn.ReLU(inplace=True)]
                    layers += [nn.BatchNorm2d(ch)] if bn else []
                    in_ch = ch
            layers.append(nn.MaxPool2d(2))
            layers += [nn.Dropout(0.2)] if dropout else []
        hidden = round(hidden * width)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat_size(self.features, in_channels, image_size), hidden), nn.ReLU(inplace=True),
            *([nn.BatchNorm1d(hidden)] if bn else []), *([nn.Dropout(0.5)] if dropout else []),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _preset(name: str, info: str, **preset):
    """Register a LeNet variant: the preset's fields, overridable by the config's."""
    def build(num_classes: int = 10, **fields) -> LeNet:
        return LeNet(num_classes, **{**preset, **fields})

    build.__signature__ = inspect.signature(LeNet)  # so unknown fields are reported by name
    MODELS.register(name, info)(build)


_preset("lenet", "§1 LeNet baseline")
_preset("lenet_bn", "§1 LeNet-BN", bn=True)
_preset("lenet_wide", "§1 LeNet-4wide", width=4)
_preset("lenet_deep", "§1 LeNet-2deep", channels=(20, 50, 50), convs_per_stage=2)
_preset("lenet_3x3", "§1 LeNet-3x3", kernel="3x3")
_preset("lenet_3x1", "§1 LeNet-3x1+1x3", kernel="3x1")
_preset("lenet_dropout", "§1 LeNet-Dropout", dropout=True)


class LeNet5(nn.Module):
    """study §4: conv(6,5, valid)-ReLU-pool, conv(16,5, valid)-ReLU-pool, FC(120), FC(84), FC(10)."""
    INPUTS = "'valid' convs as published (28×28: 24→12→8→4, FC(120) reads 16×4×4)"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat_size(self.features, in_channels, image_size), 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register(info="§4 LeNet-5")
def lenet5(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> LeNet5:
    return LeNet5(num_classes, in_channels, image_size)
