"""The device loader: the whole uint8 dataset lives on the training device; an epoch is a
`randperm` and index slices, augmented and normalised on whole batches. No workers, no PIL."""
from __future__ import annotations

import torch
from torch import nn

from cifarbench.aug import Augment


class DeviceLoader:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, preprocess: nn.Module,
                 augment: Augment | None = None, shuffle: bool = True, seed: int = 0,
                 memory_format: torch.memory_format = torch.contiguous_format, alternating_flip: bool = False):
        self.images, self.labels = images, labels
        self.batch_size, self.preprocess, self.augment = batch_size, preprocess, augment
        self.shuffle, self.memory_format = shuffle, memory_format
        self.generator = torch.Generator(images.device).manual_seed(seed)
        # Alternating flip (airbench): each image mirrored on every other epoch, from a random start,
        # so every image is seen both ways in any two consecutive epochs. `epoch` counts the passes
        # (a resumed run sets it) so the parity survives a restart.
        self.flip_phase = (torch.rand(len(images), generator=self.generator, device=images.device) < 0.5
                           if alternating_flip else None)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._bounds())

    def _bounds(self) -> list[tuple[int, int]]:
        """Full batches, then the remainder, so every image is seen exactly once per epoch.

        A remainder of one image joins the last full batch instead: batch norm cannot train on one.
        """
        n, size = len(self.images), self.batch_size
        starts = list(range(0, n, size))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        return [(s, e) for s, e in zip(starts, starts[1:] + [n])]

    def __iter__(self):
        self.epoch += 1
        order = (torch.randperm(len(self.images), generator=self.generator, device=self.images.device)
                 if self.shuffle else torch.arange(len(self.images), device=self.images.device))
        for start, end in self._bounds():
            index = order[start:end]
            images = self.images[index]
            if self.flip_phase is not None:
                flip = self.flip_phase[index] ^ bool(self.epoch % 2)
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
            if self.augment is not None:
                images = self.augment(images, self.generator)
            yield self.preprocess(images).contiguous(memory_format=self.memory_format), self.labels[index]
