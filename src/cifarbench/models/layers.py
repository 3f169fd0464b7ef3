"""Building blocks shared by the model families: conv-BN-activation, residual blocks with stochastic
depth, the flatten size of a feature extractor for a given input, and the multiply–accumulate counter."""
from __future__ import annotations

import math

import torch
from torch import nn

from cifarbench.core.registry import ConfigError


def conv_bn_act(in_ch: int, out_ch: int, kernel, stride: int = 1, padding: int | str = "same", bn: bool = True,
                act: type[nn.Module] | None = nn.ReLU, bias: bool | None = None) -> nn.Sequential:
    """conv → (BN) → (activation); the conv has a bias only when no BN follows it, unless told.
    ('same' padding needs stride 1: strided convs pass an explicit padding.)"""
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=not bn if bias is None else bias)]
    if bn:
        layers.append(nn.BatchNorm2d(out_ch))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """out = post(shortcut(x) + branch(x)).

    Stochastic depth (Huang et al. 2016): in training the whole branch is skipped for the batch with
    probability `drop_prob`; at evaluation the branch is scaled by its survival probability 1 − p.
    """

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None, post: nn.Module | None = None,
                 transition: bool = False):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.post = post if post is not None else nn.Identity()
        self.transition = transition  # changes the shape: stochastic depth never drops it
        self.drop_prob = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.shortcut(x)
        if self.drop_prob and self.training and torch.rand(()) < self.drop_prob:  # CPU RNG: no device sync
            return self.post(skip)
        branch = self.branch(x)
        if self.drop_prob and not self.training:
            branch = branch * (1 - self.drop_prob)
        return self.post(skip + branch)


def set_stochastic_depth(model: nn.Module, final_prob: float) -> nn.Module:
    """study §5's linear rule: block i of L is dropped with p_i = i / (L − 1) · p_L (0 for the first,
    p_L for the last); blocks that change the shape (transitions) are never dropped."""
    if not 0 <= final_prob < 1:
        raise ConfigError(f"model.stochastic_depth={final_prob}; it must be in [0, 1)")
    blocks = [m for m in model.modules() if isinstance(m, Residual)]
    for i, block in enumerate(blocks):
        block.drop_prob = 0.0 if block.transition else final_prob * i / max(1, len(blocks) - 1)
    return model


@torch.no_grad()
def flat_size(features: nn.Module, in_channels: int, image_size: int) -> int:
    """How many values `features` outputs for one in_channels × image_size × image_size input: the
    input width of the linear layer after a flatten, from one forward pass of zeros in eval mode (no
    statistics or random numbers are touched). Raises ConfigError when the input is too small for
    the network's convolutions and pools."""
    was_training = features.training
    try:
        return math.prod(features.eval()(torch.zeros(1, in_channels, image_size, image_size)).shape[1:])
    except RuntimeError as e:
        raise ConfigError(f"a {in_channels}×{image_size}×{image_size} input is too small for this network "
                          f"({str(e).splitlines()[0]})") from None
    finally:
        features.train(was_training)


def mlp_head(in_features: int, hidden: int, num_classes: int, dropout: float = 0.5) -> nn.Sequential:
    """Flatten, then FC(hidden)-ReLU-Dropout twice and FC(num_classes): the classifier of AlexNet
    (Krizhevsky et al. 2012) and of the VGG-like net; input (N, ...) flattening to `in_features`."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes),
    )


def count_macs(model: nn.Module, shape: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Multiply–accumulates of one forward pass on one image of `shape` (C, H, W), counted from the layers."""
    total = 0

    def conv(module: nn.Conv2d, _, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output[0].numel() * module.in_channels // module.groups * kh * kw

    def linear(module: nn.Linear, _, output):
        nonlocal total
        total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape, device=next(model.parameters()).device))
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    return total
