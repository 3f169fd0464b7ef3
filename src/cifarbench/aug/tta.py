"""Test-time augmentation (TTA): the weighted views of a batch of network inputs whose logits are
summed at evaluation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TTA_MODES = ("none", "flip", "flip_translate")


def translate(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift the content by (dy, dx) pixels (positive: down, right), filling the edge by reflection."""
    pad = max(abs(dy), abs(dx))
    h, w = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def tta_views(images: torch.Tensor, mode: str) -> list[tuple[float, torch.Tensor]]:
    """The weighted views whose logits are summed at evaluation (weights sum to 1):

    - none: the image;
    - flip: the image and its mirror, ½ each;
    - flip_translate (airbench94's TTA level 2): the flip pair (½), and the flip pairs of the image
      moved one pixel down-right and one pixel up-left (¼ each), i.e. 1/4, 1/4, 1/8 × 4.

    Raises ValueError for an unknown mode.
    """
    if mode not in TTA_MODES:
        raise ValueError(f"trainer.tta={mode!r}; choose one of {', '.join(TTA_MODES)}")
    if mode == "none":
        return [(1.0, images)]
    pairs = [(1.0, images)]
    if mode == "flip_translate":
        pairs = [(0.5, images), (0.25, translate(images, 1, 1)), (0.25, translate(images, -1, -1))]
    return [(weight / 2, view) for weight, source in pairs for view in (source, source.flip(3))]


def tta_logits(model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """(N, classes) float32 logits of `model` on `images` (network inputs), summed over the TTA views
    of `tta_views` with their weights. Raises ValueError for an unknown mode."""
    return sum(weight * model(view).float() for weight, view in tta_views(images, tta))
