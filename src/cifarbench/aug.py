"""Batched augmentation on the device.

Each augmentation is a pure function of a uint8 batch (N, C, H, W) and a torch.Generator on the
batch's device, so it runs the same on CPU and CUDA and every image draws its own randomness.
`build_augment(cfg)` turns the `aug=` config into such a function (or None for no augmentation).
"""
from __future__ import annotations

from typing import Callable

import torch

from cifarbench.registry import Registry

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


def build_augment(cfg) -> Augment | None:
    fields = {k: v for k, v in cfg.items() if k != "name"}
    return AUGMENTS.build(cfg.name, **fields)
