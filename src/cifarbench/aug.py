"""Batched augmentation on the device.

Each augmentation is a pure function of a uint8 batch (N, C, H, W) and a torch.Generator on the
batch's device, so it runs the same on CPU and CUDA and every image draws its own randomness.
`build_augment(cfg)` turns the `aug=` config into such a function (or None for no augmentation).

Mixing (`aug.mix: mixup | bc`) combines with any of them: `build_mix(cfg)` gives a function of the
normalised batch and its labels that returns mixed images, soft targets and the dominant labels
(training accuracy under mixing is counted against the dominant label).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from cifarbench.core.registry import ConfigError, Registry

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTS = Registry("augmentation")
PAD_MODES = ("zeros", "reflect", "edge")


def _check_pad_mode(pad_mode: str):
    if pad_mode not in PAD_MODES:
        raise ValueError(f"aug.pad_mode={pad_mode!r}; choose one of {', '.join(PAD_MODES)}")


def _source_index(index: torch.Tensor, size: int, pad_mode: str) -> torch.Tensor:
    """Map source coordinates that fall outside [0, size) back inside, as the padding mode says."""
    if pad_mode == "reflect":  # mirror without repeating the edge pixel, as numpy/torch 'reflect'
        index = index.abs()
        return torch.where(index > size - 1, 2 * (size - 1) - index, index)
    return index.clamp(0, size - 1)  # 'edge' as is; 'zeros' masks these pixels afterwards


def translate_flip(images: torch.Tensor, generator: torch.Generator, max_shift: int = 4, flip: bool = True,
                   pad_mode: str = "zeros") -> torch.Tensor:
    """Translate each image by its own (dy, dx) in [-max_shift, max_shift] and mirror half of them.

    Same result as pad-by-max_shift then random crop, without materialising the padded batch: one
    gather over the flattened pixels with a per-image source index (the mirror reverses columns).
    """
    _check_pad_mode(pad_mode)
    n, c, h, w = images.shape
    device = images.device
    shift = torch.randint(-max_shift, max_shift + 1, (2, n), generator=generator, device=device)
    rows = torch.arange(h, device=device) + shift[0, :, None]  # (n, h) source row of each output row
    cols = torch.arange(w, device=device) + shift[1, :, None]
    if flip:
        mirrored = torch.rand(n, generator=generator, device=device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    source = _source_index(rows, h, pad_mode)[:, :, None] * w + _source_index(cols, w, pad_mode)[:, None, :]
    out = images.reshape(n, c, h * w).gather(2, source.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
    if pad_mode == "zeros":
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        out = out * inside[:, None].to(out.dtype)
    return out


@AUGMENTS.register("none")
def no_augment() -> None:
    return None


@AUGMENTS.register("flip_shift")
def flip_shift(max_shift: int = 4, flip: bool = True, pad_mode: str = "zeros") -> Augment:
    """SPEC's standard CIFAR augmentation: translate by up to ±4 px (pad-and-crop), mirror with p=0.5."""
    _check_pad_mode(pad_mode)
    return lambda images, generator: translate_flip(images, generator, max_shift, flip, pad_mode)


def _uniform(n: int, bound: float, generator: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * bound


def keras_affine(images: torch.Tensor, generator: torch.Generator, rotation: float = 0.0, width_shift: float = 0.0,
                 height_shift: float = 0.0, shear: float = 0.0, zoom: float = 0.0, channel_shift: float = 0.0,
                 horizontal_flip: bool = False) -> torch.Tensor:
    """Keras ImageDataGenerator's random transforms, per image, in one affine grid_sample per batch.

    rotation and shear in degrees; shifts as fractions of the size; zoom draws each axis's scale in
    [1 − zoom, 1 + zoom]; channel_shift adds one intensity in ±channel_shift (0–255 units) to every
    channel; fill mode 'nearest' (border replication).
    """
    n, device = len(images), images.device
    angle = _uniform(n, math.radians(rotation), generator, device)
    shear_angle = _uniform(n, math.radians(shear), generator, device)
    zoom_x = 1 + _uniform(n, zoom, generator, device)
    zoom_y = 1 + _uniform(n, zoom, generator, device)
    shift_x = _uniform(n, 2 * width_shift, generator, device)  # grid coordinates span 2 per image side
    shift_y = _uniform(n, 2 * height_shift, generator, device)
    if horizontal_flip:
        zoom_x = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -zoom_x, zoom_x)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output → input coordinates: rotation · shear · zoom, then the shift (as Keras composes them).
    theta = torch.stack([
        torch.stack([cos * zoom_x, (-sin + cos * torch.tan(shear_angle)) * zoom_y, shift_x], 1),
        torch.stack([sin * zoom_x, (cos + sin * torch.tan(shear_angle)) * zoom_y, shift_y], 1),
    ], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    if channel_shift:
        out = out + _uniform(n, channel_shift, generator, device).view(n, 1, 1, 1)
    return out.round_().clamp_(0, 255).to(images.dtype)


@AUGMENTS.register("keras")
def keras(rotation: float = 0.0, width_shift: float = 0.0, height_shift: float = 0.0, shear: float = 0.0,
          zoom: float = 0.0, channel_shift: float = 0.0, horizontal_flip: bool = True) -> Augment:
    """The Keras ImageDataGenerator settings of SPEC §1 and §2."""
    return lambda images, generator: keras_affine(images, generator, rotation, width_shift, height_shift, shear,
                                                  zoom, channel_shift, horizontal_flip)


def cutout_squares(images: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """Zero a size×size square (clipped at the borders) centred on a random pixel of each image."""
    n, _, h, w = images.shape
    device = images.device
    top = torch.randint(0, h, (n, 1), generator=generator, device=device) - size // 2
    left = torch.randint(0, w, (n, 1), generator=generator, device=device) - size // 2
    rows = torch.arange(h, device=device) - top  # row offset inside the square, per image
    cols = torch.arange(w, device=device) - left
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return images * (~inside)[:, None].to(images.dtype)


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


# Mixing ------------------------------------------------------------------------------------------
Mix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
MIXES = ("mixup", "bc")


def mix_pairs(images: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor, weight: torch.Tensor,
              num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """weight·(x_i, y_i) + (1 − weight)·(x_partner, y_partner); returns images, soft targets, dominant labels."""
    w = weight.to(images.dtype)
    mixed = images * w.view(-1, 1, 1, 1) + images[partner] * (1 - w).view(-1, 1, 1, 1)
    onehot = F.one_hot(labels, num_classes).float()
    targets = onehot * weight.view(-1, 1) + onehot[partner] * (1 - weight).view(-1, 1)
    return mixed, targets, torch.where(weight >= 0.5, labels, labels[partner])


def mixup(images: torch.Tensor, labels: torch.Tensor, alpha: float, num_classes: int,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mixup (Zhang et al. 2018): partners from a permutation of the batch, λ ~ Beta(α, α) per image."""
    n = len(labels)
    partner = torch.randperm(n, generator=generator, device=labels.device)
    concentration = torch.full((n,), float(alpha), device=labels.device)
    weight = torch.distributions.Beta(concentration, concentration).sample()  # global RNG, seeded by the trainer
    return mix_pairs(images, labels, partner, weight, num_classes)


def bc_partners(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each sample, a uniformly drawn partner of a different class (itself only if none exists),
    without a host sync: in class-sorted order, a class's samples form one block; draw a rank among
    the others and step over the block."""
    n = len(labels)
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    start = torch.searchsorted(sorted_labels, labels)  # where each sample's class block begins
    size = torch.searchsorted(sorted_labels, labels, right=True) - start
    others = n - size
    rank = (torch.rand(n, generator=generator, device=labels.device) * others).long()
    rank = torch.where(rank >= start, rank + size, rank)
    return torch.where(others > 0, order[rank.clamp(max=n - 1)], torch.arange(n, device=labels.device))


def between_class(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SPEC's BC-learning: a partner of another class, r ~ U(0, 1) made dominant with max(r, 1 − r)."""
    partner = bc_partners(labels, generator)
    r = torch.rand(len(labels), generator=generator, device=labels.device)
    return mix_pairs(images, labels, partner, torch.maximum(r, 1 - r), num_classes)


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
