"""Geometric augmentations as pure batch functions: each takes a uint8 batch (N, C, H, W) and a
torch.Generator on the batch's device and returns a uint8 batch (N, C, H, W), every image drawing its
own randomness from that generator alone, so they run the same on CPU and CUDA.

- `translate_flip`: the standard CIFAR augmentation (He et al. 2016, §4.2): pad-and-crop translation
  by up to ±max_shift px and a random horizontal mirror;
- `keras_affine`: Keras ImageDataGenerator's rotation, shift, shear, zoom, channel shift and flip
  (Chollet et al., Keras 2015), as study §1 and §2 (docs/studies.md) used it;
- `cutout_squares`: one square zeroed per image (DeVries & Taylor 2017);
- `random_erasing`: one rectangle of random size, aspect and place per image, erased with a probability
  (Zhong et al. 2020), as timm's `RandomErasing`.
"""
from __future__ import annotations

import math
import typing
from typing import Literal

import torch
import torch.nn.functional as F

from cifarbench.aug.flip import random_mask

PadMode = Literal["zeros", "reflect", "edge"]
ErasingFill = Literal["random", "mean"]
ERASING_ATTEMPTS = 10  # candidate rectangles per image, as timm's RandomErasing (none fits: nothing erased)
PAD_MODES: tuple[str, ...] = typing.get_args(PadMode)


def check_pad_mode(pad_mode: str):
    """Raise ValueError unless `pad_mode` is one of PAD_MODES."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"aug.pad_mode={pad_mode!r}; choose one of {', '.join(PAD_MODES)}")


def _source_index(index: torch.Tensor, size: int, pad_mode: str) -> torch.Tensor:
    """Map source coordinates that fall outside [0, size) back inside, as the padding mode says."""
    if pad_mode == "reflect":  # mirror without repeating the edge pixel, as numpy/torch 'reflect'
        index = index.abs()
        return torch.where(index > size - 1, 2 * (size - 1) - index, index)
    return index.clamp(0, size - 1)  # 'edge' as is; 'zeros' masks these pixels afterwards


def translate_flip(images: torch.Tensor, generator: torch.Generator, max_shift: int = 4, flip: bool = True,
                   pad_mode: PadMode = "zeros") -> torch.Tensor:
    """uint8 (N, C, H, W) → uint8 (N, C, H, W): each image translated by its own (dy, dx) in
    [-max_shift, max_shift] (positive: the content moves up-left) and, with `flip`, mirrored with p = ½.

    Same result as padding by max_shift (`pad_mode`: zeros, reflect as numpy's, edge) then a random
    crop, without materialising the padded batch: one gather over the flattened pixels with a
    per-image source index (the mirror reverses columns). Draws: the shifts (2, N), then the mirrors (N,).
    """
    check_pad_mode(pad_mode)
    n, c, h, w = images.shape
    device = images.device
    shift = torch.randint(-max_shift, max_shift + 1, (2, n), generator=generator, device=device)
    rows = torch.arange(h, device=device) + shift[0, :, None]  # (n, h) source row of each output row
    cols = torch.arange(w, device=device) + shift[1, :, None]
    if flip:
        cols = torch.where(random_mask(n, generator, device)[:, None], cols.flip(1), cols)
    source = _source_index(rows, h, pad_mode)[:, :, None] * w + _source_index(cols, w, pad_mode)[:, None, :]
    out = images.reshape(n, c, h * w).gather(2, source.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
    if pad_mode == "zeros":
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        out = out * inside[:, None].to(out.dtype)
    return out


def _uniform(n: int, bound: float, generator: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * bound


def keras_affine(images: torch.Tensor, generator: torch.Generator, rotation: float = 0.0, width_shift: float = 0.0,
                 height_shift: float = 0.0, shear: float = 0.0, zoom: float = 0.0, channel_shift: float = 0.0,
                 horizontal_flip: bool = False) -> torch.Tensor:
    """uint8 (N, C, H, W) → uint8 (N, C, H, W): Keras ImageDataGenerator's random transforms (Chollet et
    al., Keras 2015), per image, in one affine grid_sample per batch.

    rotation and shear in degrees; shifts as fractions of the size; zoom draws each axis's scale in
    [1 − zoom, 1 + zoom]; channel_shift adds one intensity in ±channel_shift (0–255 units) to every
    channel; horizontal_flip mirrors with p = ½; fill mode 'nearest' (border replication), bilinear
    interpolation, rounded back to uint8. All ranges 0 and no flip: the identity.
    """
    n, device = len(images), images.device
    angle = _uniform(n, math.radians(rotation), generator, device)
    shear_angle = _uniform(n, math.radians(shear), generator, device)
    zoom_x = 1 + _uniform(n, zoom, generator, device)
    zoom_y = 1 + _uniform(n, zoom, generator, device)
    shift_x = _uniform(n, 2 * width_shift, generator, device)  # grid coordinates span 2 per image side
    shift_y = _uniform(n, 2 * height_shift, generator, device)
    if horizontal_flip:
        zoom_x = torch.where(random_mask(n, generator, device), -zoom_x, zoom_x)
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


def cutout_squares(images: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) → uint8 (N, C, H, W): cutout (DeVries & Taylor 2017): a size×size square
    (clipped at the borders) zeroed in every channel, centred on a random pixel of each image."""
    n, _, h, w = images.shape
    device = images.device
    top = torch.randint(0, h, (n, 1), generator=generator, device=device) - size // 2
    left = torch.randint(0, w, (n, 1), generator=generator, device=device) - size // 2
    rows = torch.arange(h, device=device) - top  # row offset inside the square, per image
    cols = torch.arange(w, device=device) - left
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return images * (~inside)[:, None].to(images.dtype)


def erasing_boxes(n: int, height: int, width: int, generator: torch.Generator, device, probability: float = 0.5,
                  scale: tuple[float, float] = (0.02, 0.4), ratio: tuple[float, float] = (0.3, 1 / 0.3)
                  ) -> torch.Tensor:
    """Random erasing's rectangles (Zhong et al. 2020, Algorithm 1; timm's `RandomErasing`): (n, 1, H, W)
    bool, True inside the rectangle of each image that is erased.

    Each image is erased with probability `probability` (the paper's defaults: p = ½, scale (0.02, 0.4),
    ratio (0.3, 1/0.3)). Its rectangle has area S_e = s·H·W with
    s ~ U(scale) and aspect r_e = h/w log-uniform in `ratio` (as timm; the paper draws r_e uniformly), so
    h = round(√(S_e·r_e)), w = round(√(S_e/r_e)); of ERASING_ATTEMPTS such candidates the first with
    h < H and w < W is kept (none: the image is not erased), its top-left corner uniform over the
    positions where it fits. Draws, all from `generator`: the coins (n,), the areas and aspects
    (ATTEMPTS, n) each, then the rows and columns of the corners (n,) each; no host sync."""
    erase = torch.rand(n, generator=generator, device=device) < probability
    s = torch.empty(ERASING_ATTEMPTS, n, device=device).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(ERASING_ATTEMPTS, n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                    generator=generator)
    area, aspect = s * (height * width), log_r.exp()
    h, w = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
    fits = (h < height) & (w < width)
    first = fits.to(torch.uint8).argmax(0, keepdim=True)  # the first candidate that fits (0 if none)
    h, w = h.gather(0, first)[0], w.gather(0, first)[0]
    erase &= fits.any(0)
    top = (torch.rand(n, generator=generator, device=device) * (height - h + 1)).long()
    left = (torch.rand(n, generator=generator, device=device) * (width - w + 1)).long()
    rows = torch.arange(height, device=device) - top[:, None]  # row offset inside the rectangle, per image
    cols = torch.arange(width, device=device) - left[:, None]
    inside = ((rows >= 0) & (rows < h[:, None]))[:, :, None] & ((cols >= 0) & (cols < w[:, None]))[:, None, :]
    return (inside & erase[:, None, None])[:, None]


def random_erasing(images: torch.Tensor, generator: torch.Generator, probability: float = 0.5,
                   scale: tuple[float, float] = (0.02, 0.4), ratio: tuple[float, float] = (0.3, 1 / 0.3),
                   fill: ErasingFill = "random") -> torch.Tensor:
    """uint8 (N, C, H, W) → uint8 (N, C, H, W): random erasing (Zhong et al. 2020): the rectangle of
    `erasing_boxes` filled, in every channel, with random values (`fill="random"`: each pixel and channel
    uniform in 0..255, the paper's RE-R) or the batch's per-channel mean (`"mean"`: an estimate of the
    training set's mean pixel, the paper's RE-M; 0 after mean–std normalisation). Draws from `generator`:
    `erasing_boxes`'s, then (random fill) the values (N, C, H, W)."""
    n, c, h, w = images.shape
    inside = erasing_boxes(n, h, w, generator, images.device, probability, scale, ratio)
    if fill == "random":
        values = torch.randint(0, 256, images.shape, generator=generator, device=images.device, dtype=images.dtype)
    else:
        values = images.float().mean((0, 2, 3), keepdim=True).round().to(images.dtype).expand_as(images)
    return torch.where(inside, values, images)
