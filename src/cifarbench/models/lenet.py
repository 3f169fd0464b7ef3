"""LeNet as used in SPEC §1 ("CIFAR-10 in 10 minutes"): conv(20,5)-ReLU-pool, conv(50,5)-ReLU-pool,
FC(500)-ReLU, FC(10), 'same' padding."""
from __future__ import annotations

from torch import nn

from cifarbench.models import MODELS


class LeNet(nn.Module):
    def __init__(self, num_classes: int = 10, channels: tuple[int, int] = (20, 50), hidden: int = 500):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 8 * 8, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register()
def lenet(num_classes: int = 10) -> LeNet:
    """SPEC §1 baseline: 1,632,080 parameters."""
    return LeNet(num_classes)
