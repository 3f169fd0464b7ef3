"""Mixing a normalised training batch with partners from the same batch, each mix with the loss its
targets train with: `Mixup` (Zhang et al. 2018), `BetweenClass` (BC-learning, Tokozume et al. 2018),
and `NoMix` (the batch as it is: cross-entropy with label smoothing).

A mix is called by the training step on the batch as the loader yields it, before the forward:
`mix(images, labels, generator)` with images (B, C, H, W) float, labels (B,) int64 and the loader's
augmentation generator (to draw from) returns

- the images to train on, (B, C, H, W), the input's dtype;
- the targets its `criterion(logits, targets)` takes: the labels themselves without mixing, else soft
  targets (B, classes) float32, each row summing to 1;
- the dominant labels (B,) int64, against which the training accuracy is counted.

`criterion(logits, targets)` is the mean loss over the batch, a float32 scalar, of logits (B, classes).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Mixed = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, targets, dominant labels


def mix_pairs(images: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor, weight: torch.Tensor,
              num_classes: int) -> Mixed:
    """weight·(x_i, y_i) + (1 − weight)·(x_partner, y_partner) for images (B, C, H, W) float, labels and
    partner (B,) int64, weight (B,) float in [0, 1]; returns images, soft targets (B, classes) float32
    and dominant labels (the own label where weight ≥ ½)."""
    w = weight.to(images.dtype)
    mixed = images * w.view(-1, 1, 1, 1) + images[partner] * (1 - w).view(-1, 1, 1, 1)
    onehot = F.one_hot(labels, num_classes).float()
    targets = onehot * weight.view(-1, 1) + onehot[partner] * (1 - weight).view(-1, 1)
    return mixed, targets, torch.where(weight >= 0.5, labels, labels[partner])


def mixup(images: torch.Tensor, labels: torch.Tensor, alpha: float, num_classes: int,
          generator: torch.Generator) -> Mixed:
    """mixup (Zhang et al. 2018): each image mixed with its partner in a random permutation of the batch,
    λ ~ Beta(α, α) drawn per image (the paper draws one per batch)."""
    n = len(labels)
    partner = torch.randperm(n, generator=generator, device=labels.device)
    concentration = torch.full((n,), float(alpha), device=labels.device)
    weight = torch.distributions.Beta(concentration, concentration).sample()  # global RNG, seeded by the trainer
    return mix_pairs(images, labels, partner, weight, num_classes)


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


@dataclass(frozen=True)
class NoMix(Mix):
    """No mixing: the batch as it is, trained with cross-entropy on the labels, smoothed by
    `label_smoothing` (trainer.label_smoothing)."""
    label_smoothing: float = 0.0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Mixed:
        return images, labels, labels

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)


@dataclass(frozen=True)
class Mixup(Mix):
    """mixup (Zhang et al. 2018; `mixup`), trained with cross-entropy on the soft targets, smoothed by
    `label_smoothing`; λ ~ Beta(alpha, alpha)."""
    num_classes: int
    label_smoothing: float
    alpha: float = 1.0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Mixed:
        return mixup(images, labels, self.alpha, self.num_classes, generator)

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)


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
