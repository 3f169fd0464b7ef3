"""Horizontal flips of a uint8 batch (N, C, H, W) on its device.

- random: each image mirrored with p = ½, one uniform draw per image from the augmentation generator
  (`random_mask`; translate_flip and keras_affine draw it in their own order of draws);
- alternating (Jordan 2024, airbench): each image mirrored on every other epoch, from a random
  per-image phase drawn once from the run's seed, so any two consecutive epochs show every image both
  ways (`AlternatingFlip`).

`Flip` is the `flip` argument of the augmentations that offer both; validate checks a config's value
against it (Registry.choices) before any data loads.
"""
from __future__ import annotations

from typing import Literal

import torch

Flip = Literal[True, False, "alternating"]


def mirror(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`images` (N, C, H, W), any dtype, with those whose `mask` ((N,) bool) is set mirrored left–right."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(3), images)


def random_mask(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n,) bool on `device`, each True with p = ½: which images a random flip mirrors (one uniform draw
    per image from `generator`)."""
    return torch.rand(n, generator=generator, device=device) < 0.5


class AlternatingFlip:
    """airbench's alternating flip (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"): image
    i of the dataset is mirrored in epoch e (1 for the first) when `phase[i]` differs from e's parity, so
    it is seen both ways in any two consecutive epochs, half of the images each way in every epoch.

    The phase, (num_images,) bool, is drawn once as `torch.rand(num_images) < ½` from a generator seeded
    with `seed` on the device of the first batch: the same on every process and after a resume, so it is
    not saved. (Until the aug package, the loader drew it first from its order generator, seeded alike:
    the phase is the same as then; the epoch orders are now those of every other flip.)
    """

    def __init__(self, num_images: int, seed: int):
        if num_images < 1:
            raise ValueError(f"the alternating flip needs the dataset's number of images, got {num_images}")
        self.num_images, self.seed = num_images, seed
        self._phase: torch.Tensor | None = None

    def phase(self, device: torch.device) -> torch.Tensor:
        """(num_images,) bool on `device`: True where an image is mirrored in the even epochs."""
        if self._phase is None or self._phase.device != torch.device(device):
            generator = torch.Generator(device).manual_seed(self.seed)
            self._phase = torch.rand(self.num_images, generator=generator, device=device) < 0.5
        return self._phase

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """`images` (B, C, H, W), the dataset's images `indices` ((B,) int64, same device), as epoch `epoch`
        (1 for the first) shows them."""
        return mirror(images, self.phase(images.device)[indices] ^ bool(epoch % 2))
