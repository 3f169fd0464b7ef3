"""Mixing a normalised training batch with partners from the same batch, each mix with the loss its
targets train with: `Mixup` (Zhang et al. 2018), `CutMix` (Yun et al. 2019), `MixupCutMix` (one of the
two per batch, as timm's `Mixup` switches), `BetweenClass` (BC-learning, Tokozume et al. 2018), and
`NoMix` (the batch as it is: cross-entropy with label smoothing).

A mix is called by the training step on the batch as the loader yields it, before the forward:
`mix(images, labels, generator)` with images (B, C, H, W) float, labels (B,) int64 and the loader's
augmentation generator (every draw comes from it, none from the global RNG) returns

- the images to train on, (B, C, H, W), the input's dtype;
- the targets its `criterion(logits, targets)` takes: the labels themselves without mixing, else soft
  targets (B, classes) float32, each row summing to 1;
- the dominant labels (B,) int64, against which the training accuracy is counted.

`criterion(logits, targets)` is the mean loss over the batch, a float32 scalar, of logits (B, classes).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Mixed = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, targets, dominant labels
GAMMA_ROUNDS = 24  # candidates per Gamma draw; all rejected with probability < 0.049**24 < 1e-31


def mix_pairs(images: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor, weight: torch.Tensor,
              num_classes: int, pixel_weight: torch.Tensor | None = None) -> Mixed:
    """weight·(x_i, y_i) + (1 − weight)·(x_partner, y_partner) for images (B, C, H, W) float, labels and
    partner (B,) int64, weight (B,) float in [0, 1]; returns images, soft targets (B, classes) float32
    and dominant labels (the own label where weight ≥ ½). `pixel_weight` (B, 1, H, W), when given,
    weighs the pixels instead (CutMix's box: 0 inside, 1 outside; `weight` is then its mean)."""
    w = (weight.view(-1, 1, 1, 1) if pixel_weight is None else pixel_weight).to(images.dtype)
    mixed = images * w + images[partner] * (1 - w)
    onehot = F.one_hot(labels, num_classes).float()
    targets = onehot * weight.view(-1, 1) + onehot[partner] * (1 - weight).view(-1, 1)
    return mixed, targets, torch.where(weight >= 0.5, labels, labels[partner])


def log_gamma_draws(alpha: float, shape: tuple[int, ...], generator: torch.Generator,
                    device: torch.device) -> torch.Tensor:
    """log X, X ~ Gamma(alpha, 1), float64 of `shape`, from `generator` alone and without a host sync.

    Marsaglia & Tsang (2000, "A simple method for generating gamma variables"): with d = a − 1/3 and
    c = 1/√(9d), a candidate x ~ N(0, 1), v = (1 + cx)³ is accepted when v > 0 and
    log u < x²/2 + d − dv + d·log v (u ~ U(0, 1)), and then d·v ~ Gamma(a). For alpha < 1 it draws
    Gamma(alpha + 1) and multiplies by U^(1/alpha) (their §6), in logs so nothing underflows.

    Rather than loop until every draw is accepted (a host sync per round), it draws GAMMA_ROUNDS
    candidates per value and keeps the first accepted one: the same distribution, except that with
    probability below 1e-31 per value (a ≥ 1 rejects a candidate with probability ≤ 0.049) none is
    accepted and log d is returned.
    """
    a = alpha + 1 if alpha < 1 else alpha
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)
    x = torch.randn((GAMMA_ROUNDS, *shape), generator=generator, device=device, dtype=torch.float64)
    u = torch.rand((GAMMA_ROUNDS, *shape), generator=generator, device=device, dtype=torch.float64)
    v = (1 + c * x) ** 3
    log_v = v.clamp_min(torch.finfo(torch.float64).tiny).log()
    accepted = (v > 0) & (u.log() < x * x / 2 + d - d * v + d * log_v)
    first = accepted.to(torch.uint8).argmax(0, keepdim=True)  # the first accepted round (0 if none)
    log_x = torch.where(accepted.any(0), math.log(d) + log_v.gather(0, first)[0], math.log(d))
    if alpha < 1:
        log_x = log_x + torch.rand(shape, generator=generator, device=device, dtype=torch.float64).log() / alpha
    return log_x


def beta_draws(alpha: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n,) float32 draws of Beta(alpha, alpha) from `generator` alone: X / (X + Y) with X, Y ~ Gamma(alpha)
    independent (`log_gamma_draws`), as sigmoid(log X − log Y). Mean ½, variance 1 / (4(2·alpha + 1))."""
    log_x, log_y = log_gamma_draws(alpha, (2, n), generator, device)
    return torch.sigmoid(log_x - log_y).nan_to_num(0.5).float()  # (nan: both −inf, probability ~2⁻¹⁰⁶)


def mixup(images: torch.Tensor, labels: torch.Tensor, alpha: float, num_classes: int,
          generator: torch.Generator) -> Mixed:
    """mixup (Zhang et al. 2018): each image mixed with its partner in a random permutation of the batch,
    λ ~ Beta(α, α) drawn per image (the paper draws one per batch).

    Draws, all from `generator`: the permutation, then λ (`beta_draws`). Until the aug package λ came
    from the global RNG (torch.distributions.Beta): the same seed now mixes with other λ.
    """
    n = len(labels)
    partner = torch.randperm(n, generator=generator, device=labels.device)
    weight = beta_draws(alpha, n, generator, labels.device)
    return mix_pairs(images, labels, partner, weight, num_classes)


def cutmix_boxes(lam: torch.Tensor, height: int, width: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix's boxes (Yun et al. 2019, §3.1; timm's `rand_bbox`): for λ (B,) float in [0, 1], a box of
    ⌊H·√(1 − λ)⌋ × ⌊W·√(1 − λ)⌋ px centred on a uniformly drawn pixel (centre row, then column, from
    `generator`), its half-sides ⌊h/2⌋ each way, clipped at the borders.

    Returns the pixel weights (B, 1, H, W) float32, 0 inside the box (the partner's pixels) and 1 outside,
    and the corrected λ (B,) float32: 1 − (clipped box area) / (H·W), the fraction of the image's own pixels,
    which the soft targets use (timm's `correct_lam`)."""
    n, device = len(lam), lam.device
    cut = (1 - lam).clamp(0, 1).sqrt()
    half_h = (height * cut).floor().long() // 2
    half_w = (width * cut).floor().long() // 2
    centre_y = torch.randint(0, height, (n,), generator=generator, device=device)
    centre_x = torch.randint(0, width, (n,), generator=generator, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside_rows = (rows >= (centre_y - half_h)[:, None]) & (rows < (centre_y + half_h)[:, None])  # (B, H)
    inside_cols = (cols >= (centre_x - half_w)[:, None]) & (cols < (centre_x + half_w)[:, None])  # (B, W)
    inside = inside_rows[:, :, None] & inside_cols[:, None, :]
    area = inside_rows.sum(1) * inside_cols.sum(1)
    return (~inside)[:, None].float(), 1 - area.float() / (height * width)


def cutmix(images: torch.Tensor, labels: torch.Tensor, alpha: float, num_classes: int,
           generator: torch.Generator) -> Mixed:
    """CutMix (Yun et al. 2019): each image gets a box of its partner in a random permutation of the batch
    pasted in (`cutmix_boxes`), λ ~ Beta(α, α) drawn per image, the soft targets in proportion to the
    pixels each image keeps (λ corrected for boxes clipped at the border).

    Draws, all from `generator`: the permutation, λ (`beta_draws`), then the boxes' centres."""
    n = len(labels)
    partner = torch.randperm(n, generator=generator, device=labels.device)
    lam = beta_draws(alpha, n, generator, labels.device)
    pixel_weight, kept = cutmix_boxes(lam, images.shape[2], images.shape[3], generator)
    return mix_pairs(images, labels, partner, kept, num_classes, pixel_weight)


def mixup_or_cutmix(images: torch.Tensor, labels: torch.Tensor, alpha: float, cutmix_alpha: float,
                    switch_prob: float, num_classes: int, generator: torch.Generator) -> Mixed:
    """timm's `Mixup` switching (`switch_prob`, batch mode): the whole batch is CutMix'ed (λ ~
    Beta(cutmix_alpha, cutmix_alpha)) with probability `switch_prob`, else mixup'ed (λ ~ Beta(alpha, alpha)).

    Draws, all from `generator`: the permutation, mixup's λ, CutMix's λ, the boxes' centres, then the
    coin; both mixes' weights are computed and the coin picks one with `torch.where`, so the choice
    needs no host sync and the number of draws does not depend on it."""
    n, device = len(labels), labels.device
    partner = torch.randperm(n, generator=generator, device=device)
    mixup_lam = beta_draws(alpha, n, generator, device)
    pixel_weight, kept = cutmix_boxes(beta_draws(cutmix_alpha, n, generator, device), images.shape[2],
                                      images.shape[3], generator)
    use_cutmix = torch.rand((), generator=generator, device=device) < switch_prob
    weight = torch.where(use_cutmix, kept, mixup_lam)
    pixel_weight = torch.where(use_cutmix, pixel_weight, mixup_lam.view(-1, 1, 1, 1))
    return mix_pairs(images, labels, partner, weight, num_classes, pixel_weight)


def bc_partners(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each sample of labels (B,) int64, the index (B,) int64 of a uniformly drawn partner of a
    different class (itself only if none exists), without a host sync: in class-sorted order, a class's
    samples form one block; draw a rank among the others and step over the block."""
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
                  generator: torch.Generator) -> Mixed:
    """BC-learning (Tokozume et al. 2018) as study §1 (docs/studies.md) trains it: each image mixed with a
    partner of another class, r ~ U(0, 1) made dominant as max(r, 1 − r). Draws, from `generator`: the
    partners (`bc_partners`), then r."""
    partner = bc_partners(labels, generator)
    r = torch.rand(len(labels), generator=generator, device=labels.device)
    return mix_pairs(images, labels, partner, torch.maximum(r, 1 - r), num_classes)


class Mix(ABC):
    """A way to mix the training batch and the loss its targets train with (see the module docstring)."""

    @abstractmethod
    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Mixed:
        """images (B, C, H, W) float, labels (B,) int64 → images, targets, dominant labels."""

    @abstractmethod
    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss of logits (B, classes) against this mix's targets."""


class CrossEntropyMix(Mix):
    """A mix trained with cross-entropy on its targets (hard labels or soft targets), smoothed by
    `label_smoothing` (a field of each subclass, a dataclass)."""

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)


@dataclass(frozen=True)
class NoMix(CrossEntropyMix):
    """No mixing: the batch as it is, trained with cross-entropy on the labels, smoothed by
    `label_smoothing` (trainer.label_smoothing)."""
    label_smoothing: float = 0.0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Mixed:
        return images, labels, labels


@dataclass(frozen=True)
class Mixup(CrossEntropyMix):
    """mixup (Zhang et al. 2018; `mixup`), trained with cross-entropy on the soft targets, smoothed by
    `label_smoothing`; λ ~ Beta(alpha, alpha)."""
    num_classes: int
    label_smoothing: float
    alpha: float = 1.0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Mixed:
        return mixup(images, labels, self.alpha, self.num_classes, generator)


@dataclass(frozen=True)
class CutMix(CrossEntropyMix):
    """CutMix (Yun et al. 2019; `cutmix`), trained with cross-entropy on the soft targets, smoothed by
    `label_smoothing`; λ ~ Beta(alpha, alpha) (the paper's α = 1: λ uniform)."""
    num_classes: int
    label_smoothing: float
    alpha: float = 1.0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Mixed:
        return cutmix(images, labels, self.alpha, self.num_classes, generator)


@dataclass(frozen=True)
class MixupCutMix(CrossEntropyMix):
    """mixup or CutMix per batch (`mixup_or_cutmix`, timm's `Mixup` with `switch_prob`): CutMix with
    probability `switch_prob` (λ ~ Beta(cutmix_alpha, cutmix_alpha)), else mixup (λ ~ Beta(alpha, alpha));
    cross-entropy on the soft targets, smoothed by `label_smoothing`."""
    num_classes: int
    label_smoothing: float
    alpha: float = 1.0
    cutmix_alpha: float = 1.0
    switch_prob: float = 0.5

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Mixed:
        return mixup_or_cutmix(images, labels, self.alpha, self.cutmix_alpha, self.switch_prob, self.num_classes,
                               generator)


@dataclass(frozen=True)
class BetweenClass(Mix):
    """BC-learning (Tokozume et al. 2018; `between_class`), trained as the paper does with the KL
    divergence from the mixed targets to the softmax (cross-entropy less the targets' entropy, which the
    weights do not change); label smoothing does not apply."""
    num_classes: int
    label_smoothing: float  # (taken as every mix is, unused)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Mixed:
        return between_class(images, labels, self.num_classes, generator)

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits.float(), 1), targets, reduction="batchmean")
