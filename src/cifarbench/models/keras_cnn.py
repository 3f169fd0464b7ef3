"""The plain Keras CNNs of study §1 and §2: the 10-layer CNN, the BC-learning deep CNN and the
Fashion-MNIST sample CNN."""
from __future__ import annotations

from torch import nn

from cifarbench.models.registry import MODELS
from cifarbench.models.layers import conv_bn_act, flat_size


class CNN10(nn.Module):
    """study §2: three sets of conv1×1 → conv3×3 → conv5×5 (each BN + ReLU, 'valid' padding), widths
    64/128/256, max-pool between sets 1 and 2, dropout 0.25 after each set, flatten, FC(10).
    Spatial sizes 32→32→30→26 →pool 13 →13→11→7 →7→5→1. `kernels=[5,3,1]` gives the study's descending
    ablation. Its 'valid' convs need 32×32: a smaller input is edge-padded to 32×32 first (MNIST's black background
    goes on), as LeNet-5 read MNIST in a 32×32 field."""
    INPUTS = "its 'valid' convs need 32×32: smaller inputs are edge-padded to 32×32 first"

    def __init__(self, num_classes: int = 10, widths=(64, 128, 256), kernels=(1, 3, 5), dropout: float = 0.25,
                 in_channels: int = 3, image_size: int = 32):
        super().__init__()
        layers, in_ch = [], in_channels
        if image_size < (fit := self.min_size(kernels)):  # edge replication: digits' background goes on
            layers.append(nn.ReplicationPad2d(((fit - image_size) // 2, (fit - image_size + 1) // 2) * 2))
        for i, width in enumerate(widths):
            for k in kernels:
                layers.append(conv_bn_act(in_ch, width, k, padding=0, bias=True))  # Keras: conv bias + BN
                in_ch = width
            if i == 0:
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.Dropout(dropout))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(),
                                        nn.Linear(flat_size(self.features, in_channels, image_size), num_classes))

    @staticmethod
    def min_size(kernels) -> int:
        """The smallest input side with a 1×1 output: each set shrinks by s = Σ(k − 1) ('valid') and the
        pool after set 1 halves, so (side − s) // 2 − 2s ≥ 1 (32 for the study's kernels)."""
        shrink = sum(k - 1 for k in kernels)
        return 2 * (2 * shrink + 1) + shrink

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register(info="§2 10-layer CNN")
def cnn10(num_classes: int = 10, kernels=(1, 3, 5), dropout: float = 0.25, in_channels: int = 3,
          image_size: int = 32) -> CNN10:
    return CNN10(num_classes, kernels=tuple(kernels), dropout=dropout, in_channels=in_channels, image_size=image_size)


class DeepCNN(nn.Module):
    """study §1 (BC-learning): [conv(64,3)-BN-ReLU]×3, avgpool2, [conv(128,3)-BN-ReLU]×3, avgpool2,
    [conv(256,3)-BN-ReLU]×3, global average pool, FC(10)."""
    INPUTS = "any size: global average pool"

    def __init__(self, num_classes: int = 10, widths=(64, 128, 256), convs: int = 3, in_channels: int = 3):
        super().__init__()
        layers, in_ch = [], in_channels
        for i, width in enumerate(widths):
            if i:
                layers.append(nn.AvgPool2d(2))
            for _ in range(convs):
                layers.append(conv_bn_act(in_ch, width, 3))
                in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register(info="§1 Deep CNN (BC)")
def deep_cnn(num_classes: int = 10, in_channels: int = 3) -> DeepCNN:
    return DeepCNN(num_classes, in_channels=in_channels)


class FashionCNN(nn.Module):
    """study §1: 3 × [BN, conv(256,5)-ELU, maxpool2, dropout 0.25], FC(256)-ELU, dropout 0.5, FC(10)."""
    INPUTS = "28×28 is the Keras sample's own input: 14→7→3, the FC reads 256×3×3"

    def __init__(self, num_classes: int = 10, width: int = 256, hidden: int = 256, in_channels: int = 3,
                 image_size: int = 32):
        super().__init__()
        layers, in_ch = [], in_channels
        for _ in range(3):
            layers += [nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, width, 5, padding="same"), nn.ELU(inplace=True),
                       nn.MaxPool2d(2), nn.Dropout(0.25)]
            in_ch = width
        self.features = nn.Sequential(*layers)
        flat = flat_size(self.features, in_channels, image_size)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ELU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register(info="§1 Fashion-MNIST sample CNN")
def fashion_cnn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> FashionCNN:
    return FashionCNN(num_classes, in_channels=in_channels, image_size=image_size)
