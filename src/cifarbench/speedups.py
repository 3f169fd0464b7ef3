"""Options a recipe may turn on (all off by default): weight averaging (EMA), Lookahead, test-time
augmentation, and a whitening initialisation of the first convolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

TTA_MODES = ("none", "flip", "flip_translate")


def build_ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of the weights (and BN statistics), evaluated instead of the model."""
    if not decay:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"trainer.ema={decay}; it must be a decay in (0, 1) or null")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class Lookahead:
    """Lookahead (Zhang et al. 2019) around any optimizer: every k steps the slow weights move
    alpha of the way to the fast ones, and the fast weights restart from there."""

    def __init__(self, model: nn.Module, k: int, alpha: float = 0.5):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.slow = [p.detach().clone() for p in self.params]
        self.k, self.alpha = k, alpha

    @torch.no_grad()
    def after_step(self, step: int):
        if step % self.k == 0:
            torch._foreach_lerp_(self.slow, self.params, self.alpha)
            torch._foreach_copy_(self.params, self.slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow}

    def load_state_dict(self, state: dict):
        torch._foreach_copy_(self.slow, state["slow"])


def translate(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift by (dy, dx) pixels, filling the edge by reflection."""
    pad = max(abs(dy), abs(dx))
    h, w = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def tta_views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views whose logits are averaged at evaluation: the image, its mirror, and with
    flip_translate also both moved one pixel down-right."""
    if mode not in TTA_MODES:
        raise ValueError(f"trainer.tta={mode!r}; choose one of {', '.join(TTA_MODES)}")
    views = [images]
    if mode != "none":
        views.append(images.flip(3))
    if mode == "flip_translate":
        views += [translate(v, 1, 1) for v in views]
    return views


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor, eps: float = 5e-4):
    """Initialise the first convolution's filters so that its outputs on the training patches are
    white (decorrelated, unit variance), as the fastest CIFAR-10 speed runs do: the filters are the
    patch covariance's eigenvectors scaled by 1/√(λ + eps), followed by their negatives if there is room."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    patches = F.unfold(images.float(), conv.kernel_size).transpose(1, 2).flatten(0, 1).double()
    patches = patches - patches.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)).T.flip(0)  # largest variance first
    filters = torch.cat([filters, -filters])[:conv.out_channels]
    conv.weight[:len(filters)] = filters.view(len(filters), *conv.weight.shape[1:]).to(conv.weight)
    if conv.bias is not None:
        conv.bias.zero_()
