"""Input preprocessing: statistics fitted on the training images, applied identically to every batch
(train and test) after augmentation.

`build_preprocess(name, train_images, cache_dir)` returns a module mapping a uint8 batch
(N, C, H, W) (RGB or grey) on any device to the float input of the network. Names (`data.preprocess`):
meanstd (per-channel mean/std, the default), mean (study §5: subtract the training set's mean image),
contrast (per-image zero mean, unit std), zca (contrast, then ZCA whitening fitted on the training
set and cached in `cache_dir`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from cifarbench.core.files import read_cache, write_cache
from cifarbench.core.registry import Registry

PREPROCESSES = Registry("preprocessing")


class Normalize(nn.Module):
    """(x / 255 − mean) / std with per-channel (or per-pixel) statistics in [0, 1] units."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        shape = (1, -1, 1, 1) if mean.ndim == 1 else (1, *mean.shape)
        # Folded into one multiply-add on the raw bytes: x * scale + shift.
        self.register_buffer("scale", (1 / (255 * std)).expand_as(mean).reshape(shape).float())
        self.register_buffer("shift", (-mean / std).reshape(shape).float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mul_(self.scale).add_(self.shift)


def contrast_normalize(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each image to zero mean and unit standard deviation over all its pixels and channels."""
    x = images.float().flatten(1)
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + eps)
    return x.view(images.shape)


class ContrastNormalize(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return contrast_normalize(images)


class ZCAWhiten(nn.Module):
    """Contrast normalisation, then x ↦ (x − μ) W with W = U diag(1/√(λ + ε)) Uᵀ from the training covariance."""

    def __init__(self, mean: torch.Tensor, whitening: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("whitening", whitening.float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = contrast_normalize(images).flatten(1)
        return ((x - self.mean) @ self.whitening).view(images.shape)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std, (C,) float64 on the images' device, of uint8 images
    (N, C, H, W) in [0, 1] units, fitted where the images are (no host copy) in one pass over chunks of
    `chunk` images (a float64 copy of one chunk at a time: 8 bytes a value).

    The sums of the byte values and of their squares are exact: every term and partial sum is an
    integer below 2^53 (for N·H·W up to 2^53 / 255² ≈ 1.4·10^11 values a channel, 2.7 million CIFAR
    training sets), so they do not depend on the order of summation; the mean and variance are then
    rounded once each (float64, E[x²] − E[x]²)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].double()
        total += x.sum((0, 2, 3))
        squares += x.square_().sum((0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = total / count
    return mean / 255, (squares / count - mean.square()).clamp_min(0).sqrt() / 255


def fit_zca(images: torch.Tensor, epsilon: float, chunk: int = 5_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean μ (D,) and ZCA matrix W (D, D) of the contrast-normalised images (N, C, H, W), D = C·H·W:
    W = U diag(1/√(λ + ε)) Uᵀ from the eigen-decomposition of their covariance, in float64.

    With fewer images than pixels (a subset; N < D) the covariance has rank < N, and W comes exactly
    from the N×N Gram matrix instead (W = I/√ε + V diag(1/√(λ + ε) − 1/√ε) Vᵀ over the non-zero
    eigenvectors V): O(N²D) rather than the O(D³) of a 3072×3072 eigen-decomposition."""
    n, d = len(images), images[0].numel()
    if n < d:
        x = contrast_normalize(images.cpu()).flatten(1).double()
        mean = x.mean(0)
        x -= mean
        gram_values, gram_vectors = torch.linalg.eigh(x @ x.T / n)
        kept = gram_values > gram_values.max() * n * torch.finfo(torch.float64).eps
        eigenvalues = gram_values[kept]
        eigenvectors = x.T @ gram_vectors[:, kept] / torch.sqrt(eigenvalues * n)  # (D, rank), orthonormal
        shrink = 1 / torch.sqrt(eigenvalues + epsilon) - 1 / epsilon ** 0.5
        whitening = torch.eye(d, dtype=torch.float64) / epsilon ** 0.5 + (eigenvectors * shrink) @ eigenvectors.T
        return mean, whitening
    total = torch.zeros(d, dtype=torch.float64)
    outer = torch.zeros(d, d, dtype=torch.float64)
    for start in range(0, n, chunk):
        x = contrast_normalize(images[start:start + chunk].cpu()).flatten(1).double()
        total += x.sum(0)
        outer += x.T @ x
    mean = total / n
    covariance = outer / n - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    whitening = eigenvectors @ torch.diag(1 / torch.sqrt(eigenvalues.clamp_min(0) + epsilon)) @ eigenvectors.T
    return mean, whitening


@PREPROCESSES.register()
def meanstd(train_images: torch.Tensor, cache_dir=None) -> nn.Module:
    return Normalize(*channel_stats(train_images))


@PREPROCESSES.register()
def mean(train_images: torch.Tensor, cache_dir=None) -> nn.Module:
    """study §5: subtract the mean image of the training set (pixels in [0, 1])."""
    mean_image = torch.zeros(train_images.shape[1:], dtype=torch.float64, device=train_images.device)
    for start in range(0, len(train_images), 4096):  # (exact integer sums, on the images' device)
        mean_image += train_images[start:start + 4096].double().sum(0)
    return Normalize(mean_image / (255 * len(train_images)), torch.ones(1, dtype=torch.float64,
                                                                       device=train_images.device))


@PREPROCESSES.register()
def contrast(train_images: torch.Tensor, cache_dir=None) -> nn.Module:
    return ContrastNormalize()


@PREPROCESSES.register()
def zca(train_images: torch.Tensor, cache_dir: str | Path | None = None, epsilon: float = 1e-2) -> nn.Module:
    """Fitting costs seconds to minutes on a CPU, so the result is cached per training set and ε
    (an unreadable cache file is fitted again and replaced)."""
    key = hashlib.sha1(train_images.cpu().numpy().tobytes()).hexdigest()[:16]
    cache = Path(cache_dir).expanduser() / f"zca-{key}-eps{epsilon:g}.npz" if cache_dir else None
    if cache and (cached := read_cache(cache, ("mean", "whitening"))):
        return ZCAWhiten(torch.from_numpy(cached["mean"]), torch.from_numpy(cached["whitening"]))
    mean_vector, whitening = fit_zca(train_images, epsilon)
    if cache:
        write_cache(cache, {"mean": mean_vector.numpy(), "whitening": whitening.numpy()})
    return ZCAWhiten(mean_vector, whitening)


def preprocess_state(module: nn.Module) -> dict:
    """What a checkpoint stores to rebuild the preprocessing without the training set."""
    return {"kind": type(module).__name__, "buffers": dict(module.named_buffers())}


def restore_preprocess(state: dict) -> nn.Module:
    """Rebuild a preprocessing module from `preprocess_state`: its forward only reads its buffers."""
    kinds = {cls.__name__: cls for cls in (Normalize, ContrastNormalize, ZCAWhiten)}
    module = nn.Module.__new__(kinds[state["kind"]])
    nn.Module.__init__(module)
    for name, tensor in state["buffers"].items():
        module.register_buffer(name, tensor)
    return module


def build_preprocess(name: str, train_images: torch.Tensor, cache_dir: str | Path | None = None) -> nn.Module:
    return PREPROCESSES.build(name, train_images, cache_dir=cache_dir)
