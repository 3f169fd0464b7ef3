"""study §1's Keras ResNets: conv(16,3); stages of blocks at 16, 32, 64 channels joined by
avgpool2 + conv(C,3); flatten; FC(10). Block: shortcut = BN(x); x → conv3-BN-ReLU-conv3-BN; add; ReLU.
resnet_k24: 3 blocks per stage, 3 stages; resnet_k12: 2 blocks per stage, 2 stages."""
from __future__ import annotations

from torch import nn

from cifarbench.models.registry import MODELS
from cifarbench.models.layers import Residual, conv_bn_act, flat_size, set_stochastic_depth


class KerasResNet(nn.Module):
    INPUTS = "each stage's pool halves the side, the FC reads the flattened map (28×28: 7×7)"

    def __init__(self, num_classes: int = 10, widths=(16, 32, 64), blocks: int = 3, in_channels: int = 3,
                 image_size: int = 32):
        super().__init__()
        layers, in_ch = [], in_channels
        for stage, width in enumerate(widths):
            if stage:
                layers.append(nn.AvgPool2d(2))
            layers.append(nn.Conv2d(in_ch, width, 3, padding=1))
            for _ in range(blocks):
                branch = nn.Sequential(conv_bn_act(width, width, 3), conv_bn_act(width, width, 3, act=None))
                layers.append(Residual(branch, nn.BatchNorm2d(width), nn.ReLU()))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(),
                                        nn.Linear(flat_size(self.features, in_channels, image_size), num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register(info="§1 ResNet 24-layer")
def resnet_k24(num_classes: int = 10, stochastic_depth: float = 0.0, in_channels: int = 3,
               image_size: int = 32) -> KerasResNet:
    return set_stochastic_depth(KerasResNet(num_classes, (16, 32, 64), 3, in_channels, image_size), stochastic_depth)


@MODELS.register(info="§1 ResNet 12-layer")
def resnet_k12(num_classes: int = 10, stochastic_depth: float = 0.0, in_channels: int = 3,
               image_size: int = 32) -> KerasResNet:
    return set_stochastic_depth(KerasResNet(num_classes, (16, 32), 2, in_channels, image_size), stochastic_depth)
