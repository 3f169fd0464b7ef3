"""The Chainer networks of study §5: a 3-layer CNN (with and without BN) and the VGG-like net.

Chainer's max_pooling_2d(3, 2) covers the whole input (cover_all), which is PyTorch's ceil_mode.
"""
from __future__ import annotations

from torch import nn

from cifarbench.models.registry import MODELS
from cifarbench.models.layers import conv_bn_act, flat_size, mlp_head


class ChainerCNN(nn.Module):
    """3 × [conv(64/64/128, 5, pad 2)-(BN)-ReLU, maxpool 3/2], dropout, FC(1000)-ReLU, dropout, FC(10)."""
    INPUTS = "pools shrink 28→14→7→3, the FC reads 128×3×3"

    def __init__(self, num_classes: int = 10, widths=(64, 64, 128), hidden: int = 1000, bn: bool = False,
                 in_channels: int = 3, image_size: int = 32):
        super().__init__()
        layers, in_ch = [], in_channels
        for width in widths:
            layers += [conv_bn_act(in_ch, width, 5, padding=2, bn=bn), nn.MaxPool2d(3, 2, ceil_mode=True)]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5),
                                        nn.Linear(flat_size(self.features, in_channels, image_size), hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register(info="§5 CNN")
def chainer_cnn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> ChainerCNN:
    return ChainerCNN(num_classes, in_channels=in_channels, image_size=image_size)


@MODELS.register(info="§5 CNN-BN")
def chainer_cnn_bn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> ChainerCNN:
    return ChainerCNN(num_classes, bn=True, in_channels=in_channels, image_size=image_size)


# The VGG-like net as data: conv widths per stage; each stage ends in max-pool 2 and dropout 0.25.
VGG_STAGES = ((64, 64), (128, 128), (256, 256, 256, 256))


class VGG(nn.Module):
    """conv(64,3)×2, pool, drop .25, conv(128,3)×2, pool, drop .25, conv(256,3)×4, pool, drop .25,
    FC(1024)×2 with dropout 0.5, FC(10); every conv BN + ReLU."""
    INPUTS = "pools shrink 28→14→7→3, the FC reads 256×3×3"

    def __init__(self, num_classes: int = 10, stages=VGG_STAGES, hidden: int = 1024, in_channels: int = 3,
                 image_size: int = 32):
        super().__init__()
        layers, in_ch = [], in_channels
        for stage in stages:
            for width in stage:
                layers.append(conv_bn_act(in_ch, width, 3))
                in_ch = width
            layers += [nn.MaxPool2d(2), nn.Dropout(0.25)]
        self.features = nn.Sequential(*layers)
        self.classifier = mlp_head(flat_size(self.features, in_channels, image_size), hidden, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register(info="§5 VGG-like")
def vgg(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> VGG:
    return VGG(num_classes, in_channels=in_channels, image_size=image_size)
