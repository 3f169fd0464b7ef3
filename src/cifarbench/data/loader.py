"""The device loader: the whole uint8 dataset lives on the training device; an epoch is a
`randperm` and index slices, augmented and normalised on whole batches. No workers, no PIL.

The loader owns the run's position in the data (epoch, batch within the epoch, the epoch's order and
the generator that draws every shuffle and augmentation), and `state_dict()` saves it, so a run
stopped after any step resumes at the very next batch with the same images and the same draws.
"""
from __future__ import annotations

import torch
from torch import nn

from cifarbench.aug import Augment


class DeviceLoader:
    """Yields `(inputs, labels)`: inputs (B, C, H, W) float in `memory_format`, labels (B,) int64.

    Args:
        images: (N, C, H, W) uint8 on the training device; labels: (N,) int64 on the same device.
        batch_size: images per batch; the last batch of an epoch holds the remainder unless `drop_last`.
        preprocess: uint8 batch → network input (normalisation), applied after augmentation.
        augment: `augment(uint8 batch, generator) -> uint8 batch`, or None.
        shuffle: a new permutation each epoch (training) or the stored order (evaluation).
        seed: seeds the loader's own generator (on the images' device).
        alternating_flip: airbench's flip: each image mirrored on every other epoch, from a random start.
        drop_last: skip the last partial batch (airbench94 does; every step then has the same shape).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, preprocess: nn.Module,
                 augment: Augment | None = None, shuffle: bool = True, seed: int = 0,
                 memory_format: torch.memory_format = torch.contiguous_format, alternating_flip: bool = False,
                 drop_last: bool = False):
        self.images, self.labels = images, labels
        self.batch_size, self.preprocess, self.augment = batch_size, preprocess, augment
        self.shuffle, self.memory_format, self.drop_last = shuffle, memory_format, drop_last
        self.generator = torch.Generator(images.device).manual_seed(seed)
        # Alternating flip: the parity of `epoch` decides which images are mirrored, so every image
        # is seen both ways in any two consecutive epochs; the phase is drawn once from the seed.
        self.flip_phase = (torch.rand(len(images), generator=self.generator, device=images.device) < 0.5
                           if alternating_flip else None)
        self.bounds = self._bounds()
        if not self.bounds:
            raise ValueError(f"{len(images)} images make no batch of {batch_size} with drop_last")
        self.epoch = 0  # epochs started
        self.batch = 0  # batches of the current epoch already yielded
        self.order: torch.Tensor | None = None  # the current epoch's order

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.bounds)

    def _bounds(self) -> list[tuple[int, int]]:
        """Full batches, then the remainder (unless drop_last), so every image is seen once per epoch.

        A remainder of one image joins the last full batch instead: batch norm cannot train on one.
        """
        n, size = len(self.images), self.batch_size
        if self.drop_last:
            return [(s, s + size) for s in range(0, n - size + 1, size)]
        starts = list(range(0, n, size))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        return list(zip(starts, starts[1:] + [n]))

    @property
    def epoch_done(self) -> bool:
        return self.order is None or self.batch >= len(self)

    def __iter__(self):
        """The rest of the current epoch, or a whole new one if the last has ended."""
        if self.epoch_done:
            self.epoch += 1
            self.batch = 0
            self.order = (torch.randperm(len(self.images), generator=self.generator, device=self.images.device)
                          if self.shuffle else torch.arange(len(self.images), device=self.images.device))
        while self.batch < len(self):
            start, end = self.bounds[self.batch]
            self.batch += 1  # before the yield: a batch handed out is a batch trained on
            index = self.order[start:end]
            images = self.images[index]
            if self.flip_phase is not None:
                flip = self.flip_phase[index] ^ bool(self.epoch % 2)
                images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
            if self.augment is not None:
                images = self.augment(images, self.generator)
            yield self.preprocess(images).contiguous(memory_format=self.memory_format), self.labels[index]

    def state_dict(self) -> dict:
        """Where the loader stands: CPU tensors and ints (safe for `torch.load(weights_only=True)`)."""
        return {"epoch": self.epoch, "batch": self.batch, "generator": self.generator.get_state(),
                "order": None if self.order is None else self.order.cpu()}

    def load_state_dict(self, state: dict):
        self.epoch, self.batch = state["epoch"], state["batch"]
        self.generator.set_state(state["generator"].cpu())  # set_state takes a CPU ByteTensor, even for CUDA
        self.order = None if state["order"] is None else state["order"].to(self.images.device)
