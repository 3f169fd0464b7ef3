"""study §4's AlexNet for small images: conv(96,11,/4)-ReLU, maxpool 3/2, BN, conv(256,5)-ReLU, maxpool
3/2, BN, conv(384,3), conv(384,3), conv(256,3) (ReLU each), maxpool 3/2, BN, FC(2048)-dropout 0.5 ×2,
FC(10). On 32×32 inputs the pools pad by 1 so the map shrinks 8→4→2→1 instead of vanishing."""
from __future__ import annotations

from torch import nn

from cifarbench.models.registry import MODELS
from cifarbench.models.layers import flat_size, mlp_head


class AlexNet(nn.Module):
    INPUTS = "the same layers (28×28: 7→4→2→1, the FC reads 256×1×1 as on 32×32)"

    def __init__(self, num_classes: int = 10, hidden: int = 2048, in_channels: int = 3, image_size: int = 32):
        super().__init__()

        def pool_bn(ch):
            return [nn.MaxPool2d(3, 2, padding=1), nn.BatchNorm2d(ch)]

        def conv(in_ch, out_ch, k, stride=1):
            return [nn.Conv2d(in_ch, out_ch, k, stride, padding=k // 2), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(in_channels, 96, 11, 4), *pool_bn(96),
            *conv(96, 256, 5), *pool_bn(256),
            *conv(256, 384, 3), *conv(384, 384, 3), *conv(384, 256, 3), *pool_bn(256),
        )
        self.classifier = mlp_head(flat_size(self.features, in_channels, image_size), hidden, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register(info="§4 AlexNet (small images)")
def alexnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> AlexNet:
    return AlexNet(num_classes, in_channels=in_channels, image_size=image_size)
