"""ResNet-18/34/50/101/152 (He et al. 2016).

`stem=cifar` (default): the usual CIFAR variant (3×3 stem, no max-pool, post-activation blocks, as in
kuangliu/pytorch-cifar): ResNet-18 has 11,173,962 parameters. `stem=imagenet`: study §3's Keras
builder — conv(64,7,/2)-BN-ReLU, max-pool 3/2, pre-activation blocks (the first block of the first
stage starts with its conv), 1×1 projection shortcuts, final BN-ReLU, He-normal init and an L2 of
`l2` on conv weights, applied as weight decay on those weights only (`conv_weight_decay`).
"""
from __future__ import annotations

from typing import Literal

from torch import nn

from cifarbench.core.registry import ConfigError
from cifarbench.models.layers import Residual, conv_bn_act, set_stochastic_depth
from cifarbench.models.registry import MODELS


DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
STEMS = ("cifar", "imagenet")


def conv(in_ch, out_ch, k, stride=1):
    return nn.Conv2d(in_ch, out_ch, k, stride, padding=k // 2, bias=False)


def branch_layers(kind: str, in_ch: int, planes: int, stride: int, preact: bool) -> list[nn.Module]:
    """The residual branch as a flat list: basic = two 3×3 convs, bottleneck = 1×1, 3×3, 1×1 (×4).
    Post-activation puts BN(-ReLU) after each conv; pre-activation puts BN-ReLU before each."""
    if kind == "basic":
        convs = [conv(in_ch, planes, 3, stride), conv(planes, planes, 3)]
    else:
        convs = [conv(in_ch, planes, 1), conv(planes, planes, 3, stride), conv(planes, 4 * planes, 1)]
    layers = []
    for i, c in enumerate(convs):
        if preact:
            layers += [nn.BatchNorm2d(c.in_channels), nn.ReLU(inplace=True), c]
        else:
            layers += [c, nn.BatchNorm2d(c.out_channels)] + ([nn.ReLU(inplace=True)] if i < len(convs) - 1 else [])
    return layers


class ResNet(nn.Module):
    INPUTS = "any size: global average pool"

    def __init__(self, depth: int = 18, num_classes: int = 10, stem: str = "cifar", l2: float = 1e-4,
                 in_channels: int = 3):
        super().__init__()
        if depth not in DEPTHS:
            raise ConfigError(f"model.depth={depth}; choose one of {', '.join(map(str, DEPTHS))}")
        if stem not in STEMS:
            raise ConfigError(f"model.stem={stem!r}; choose one of {', '.join(STEMS)}")
        kind, blocks = DEPTHS[depth]
        expansion = 1 if kind == "basic" else 4
        preact = stem == "imagenet"
        # Keras' L2 `l2·Σw²` on conv kernels is weight decay 2·l2 on exactly those tensors.
        self.conv_weight_decay = 2 * l2 if preact else None
        if preact:
            self.stem = nn.Sequential(conv_bn_act(in_channels, 64, 7, stride=2, padding=3),
                                      nn.MaxPool2d(3, 2, padding=1))
        else:
            self.stem = conv_bn_act(in_channels, 64, 3)
        layers, in_ch = [], 64
        for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                out_ch = planes * expansion
                branch = branch_layers(kind, in_ch, planes, stride, preact)
                if preact and stage == 0 and i == 0:
                    branch = branch[2:]  # the stem's BN-ReLU already ran
                transition = stride != 1 or in_ch != out_ch
                shortcut = None
                if transition:
                    shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
                    shortcut = shortcut if preact else nn.Sequential(shortcut, nn.BatchNorm2d(out_ch))
                post = None if preact else nn.ReLU()  # not in place: a dropped branch passes x itself
                layers.append(Residual(nn.Sequential(*branch), shortcut, post, transition))
                in_ch = out_ch
        self.layers = nn.Sequential(*layers)
        head = [nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True)] if preact else []
        self.head = nn.Sequential(*head, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes))
        if preact:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")  # Keras he_normal

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


Stem = Literal["cifar", "imagenet"]


def _resnet(depth: int, num_classes: int, stem: str, l2: float, stochastic_depth: float, in_channels: int) -> ResNet:
    return set_stochastic_depth(ResNet(depth, num_classes, stem, l2, in_channels), stochastic_depth)


@MODELS.register(info="standard CIFAR ResNet")
def resnet18(num_classes: int = 10, stem: Stem = "cifar", l2: float = 1e-4, stochastic_depth: float = 0.0,
             in_channels: int = 3) -> ResNet:
    return _resnet(18, num_classes, stem, l2, stochastic_depth, in_channels)


@MODELS.register(info="§3 ResNet-34 (model.stem=imagenet)")
def resnet34(num_classes: int = 10, stem: Stem = "cifar", l2: float = 1e-4, stochastic_depth: float = 0.0,
             in_channels: int = 3) -> ResNet:
    return _resnet(34, num_classes, stem, l2, stochastic_depth, in_channels)


@MODELS.register(info="standard CIFAR ResNet")
def resnet50(num_classes: int = 10, stem: Stem = "cifar", l2: float = 1e-4, stochastic_depth: float = 0.0,
             in_channels: int = 3) -> ResNet:
    return _resnet(50, num_classes, stem, l2, stochastic_depth, in_channels)


@MODELS.register(info="standard CIFAR ResNet")
def resnet101(num_classes: int = 10, stem: Stem = "cifar", l2: float = 1e-4, stochastic_depth: float = 0.0,
              in_channels: int = 3) -> ResNet:
    return _resnet(101, num_classes, stem, l2, stochastic_depth, in_channels)


@MODELS.register(info="standard CIFAR ResNet")
def resnet152(num_classes: int = 10, stem: Stem = "cifar", l2: float = 1e-4, stochastic_depth: float = 0.0,
              in_channels: int = 3) -> ResNet:
    return _resnet(152, num_classes, stem, l2, stochastic_depth, in_channels)
