"""Batched augmentation on the device.

Each augmentation is a pure function of a uint8 batch (N, C, H, W) and a torch.Generator on the
batch's device, so it runs the same on CPU and CUDA and every image draws its own randomness.
`build_augment(cfg)` turns the `aug=` config into such a function (or None for no augmentation).

Mixing (`aug.mix: mixup | bc`) combines with any of them: `build_mix(cfg)` gives a function of the
normalised batch and its labels that returns mixed images, soft targets and the dominant labels
(training accuracy under mixing is counted against the dominant label).
"""
from __future__ import annotations

from typing import Callable

import torch

from cifarbench.aug.geometric import PAD_MODES, _check_pad_mode, cutout_squares, keras_affine, translate_flip
from cifarbench.aug.mix import MIXES, Mix, between_class, bc_partners, mix_pairs, mixup
from cifarbench.core.registry import ConfigError, Registry

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTS = Registry("augmentation")


@AUGMENTS.register("none")
def no_augment() -> None:
    return None


@AUGMENTS.register("flip_shift")
def flip_shift(max_shift: int = 4, flip: bool = True, pad_mode: str = "zeros") -> Augment:
    """SPEC's standard CIFAR augmentation: translate by up to ±4 px (pad-and-crop), mirror with p=0.5."""
    _check_pad_mode(pad_mode)
    return lambda images, generator: translate_flip(images, generator, max_shift, flip, pad_mode)


@AUGMENTS.register("keras")
def keras(rotation: float = 0.0, width_shift: float = 0.0, height_shift: float = 0.0, shear: float = 0.0,
          zoom: float = 0.0, channel_shift: float = 0.0, horizontal_flip: bool = True) -> Augment:
    """The Keras ImageDataGenerator settings of SPEC §1 and §2."""
    return lambda images, generator: keras_affine(images, generator, rotation, width_shift, height_shift, shear,
                                                  zoom, channel_shift, horizontal_flip)


@AUGMENTS.register("cutout")
def cutout(size: int = 16, max_shift: int = 4, flip: bool = True, pad_mode: str = "zeros") -> Augment:
    """flip_shift, then a cutout square (DeVries & Taylor 2017)."""
    base = flip_shift(max_shift, flip, pad_mode)
    return lambda images, generator: cutout_squares(base(images, generator), generator, size)


def build_augment(cfg) -> Augment | None:
    fields = {k: v for k, v in cfg.items() if k not in ("name", "mix", "mix_alpha")}
    if fields.get("flip") == "alternating":  # the DeviceLoader flips, by epoch parity
        fields["flip"] = False
    return AUGMENTS.build(cfg.name, **fields)


def build_mix(cfg, num_classes: int, generator: torch.Generator) -> Mix | None:
    kind = cfg.get("mix")
    if kind is None:
        return None
    if kind == "mixup":
        alpha = cfg.get("mix_alpha") or 1.0
        return lambda images, labels: mixup(images, labels, alpha, num_classes, generator)
    if kind == "bc":
        return lambda images, labels: between_class(images, labels, num_classes, generator)
    raise ConfigError(f"aug.mix={kind!r}; choose one of {', '.join(MIXES)} or null")
