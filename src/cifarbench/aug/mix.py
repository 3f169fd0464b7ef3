"""Mixing a normalised training batch with partners from the same batch: mixup and BC-learning."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

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
