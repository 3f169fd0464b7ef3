"""The device loader: the whole uint8 dataset lives on the training device; an epoch is a
`randperm` and index slices, augmented and normalised on whole batches. No workers, no PIL.

The loader owns the run's position in the data (epoch, batch within the epoch, the epoch's order and
the generator that draws the orders), and `state_dict()` saves it, so a run stopped after any step
resumes at the very next batch with the same images. The augmentation draws come from a generator of
their own (`generator`), one stream per process. What augmentation does is not the loader's business:
it calls one function on every batch (`augment`, an `aug.Augmentation` in training).

Several processes (DDP) share one order: each epoch's permutation is drawn from the same seed on every
rank, and each rank takes its share of every (global) batch, so the global position, and the saved
state, do not depend on the number of processes.
"""
from __future__ import annotations

import torch
from torch import nn

from cifarbench.aug import Transform
from cifarbench.core.distributed import World, rank_seed


class DeviceLoader:
    """Yields `(inputs, labels)`: inputs (B, C, H, W) float in `memory_format`, labels (B,) int64.

    Args:
        images: (N, C, H, W) uint8 on the training device; labels: (N,) int64 on the same device.
        batch_size: images per (global) batch; the last batch of an epoch holds the remainder unless
            `drop_last`. In a `world` of several processes each rank yields its share of every batch
            (`World.shard`: contiguous, sizes differing by at most one).
        preprocess: uint8 batch → network input (normalisation), applied after augmentation.
        augment: `augment(images, indices, generator, epoch) -> images` (`aug.Transform`), or None: the
            batch's uint8 images (B, C, H, W), their positions (B,) int64 in `images` (the same for an
            image every epoch), this rank's augmentation generator and the epoch (1 for the first) →
            the augmented uint8 batch (B, C, H, W).
        shuffle: a new permutation each epoch (training) or the stored order (evaluation).
        seed: seeds the epoch orders (the same on every rank) and, with the rank, the augmentation
            draws of `generator` (on the images' device).
        drop_last: skip the last partial batch (airbench94 does; every step then has the same shape).
        world: the processes training together (a world of one by default).
        per_epoch: gather the whole dataset in the epoch's order, augment and preprocess it once at the
            start of each epoch (`aug.per_epoch`, as airbench94 translates and flips its resident training
            set), then take each batch as a slice of it: every image draws its own augmentation as per
            batch (the same distribution), with a few kernels per epoch instead of an augmentation's
            dozens, and a gather, per batch. Costs a float copy of the
            dataset on the device (4 bytes a value: 614 MB for CIFAR-10's training set). Under several
            processes each rank draws the whole set's views from its own generator and takes its share.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, preprocess: nn.Module,
                 augment: Transform | None = None, shuffle: bool = True, seed: int = 0,
                 memory_format: torch.memory_format = torch.contiguous_format, drop_last: bool = False,
                 world: World = World(), per_epoch: bool = False):
        self.images, self.labels = images, labels
        self.batch_size, self.preprocess, self.augment, self.per_epoch = batch_size, preprocess, augment, per_epoch
        self.epoch_inputs: torch.Tensor | None = None  # per_epoch: the current epoch's network inputs, in its order
        self.epoch_labels: torch.Tensor | None = None  # per_epoch: their labels
        self.epoch_start: torch.Tensor | None = None  # per_epoch: `generator`'s state when they were drawn
        self.shuffle, self.memory_format, self.drop_last, self.world = shuffle, memory_format, drop_last, world
        self.order_generator = torch.Generator(images.device).manual_seed(seed)
        self.generator = torch.Generator(images.device).manual_seed(rank_seed(seed, world.rank))
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

        A remainder of less than two images per process joins the last full batch instead: batch norm
        cannot train on one image.
        """
        n, size = len(self.images), self.batch_size
        if self.drop_last:
            return [(s, s + size) for s in range(0, n - size + 1, size)]
        starts = list(range(0, n, size))
        if len(starts) > 1 and n - starts[-1] < 2 * self.world.size:
            starts.pop()
        return list(zip(starts, starts[1:] + [n]))

    def share(self, batch: int) -> tuple[int, int]:
        """This rank's [start, end) in the epoch's order of batch number `batch` (0-based)."""
        start, end = self.bounds[batch]
        first, last = self.world.shard(end - start)
        return start + first, start + last

    def loss_weight(self) -> float:
        """For the batch last yielded: this rank's share of it × the number of processes / its size,
        1.0 when the shares are equal. DDP averages the ranks' gradients, so a rank's mean loss
        weighted by it makes the gradient that of the mean over the whole batch."""
        start, end = self.share(self.batch - 1)
        first, last = self.bounds[self.batch - 1]
        return (end - start) * self.world.size / (last - first)

    @property
    def epoch_done(self) -> bool:
        return self.order is None or self.batch >= len(self)

    def __iter__(self):
        """The rest of the current epoch, or a whole new one if the last has ended."""
        if self.epoch_done:
            self.epoch += 1
            self.batch = 0
            self.order = (torch.randperm(len(self.images), generator=self.order_generator, device=self.images.device)
                          if self.shuffle else torch.arange(len(self.images), device=self.images.device))
            self.epoch_inputs = self.epoch_labels = None  # (release the last epoch's first)
        if self.per_epoch and self.epoch_inputs is None:  # (a new epoch, or a resume inside one)
            self.epoch_inputs = self._epoch_inputs()
        while self.batch < len(self):
            start, end = self.share(self.batch)
            self.batch += 1  # before the yield: a batch handed out is a batch trained on
            index = self.order[start:end]
            if self.per_epoch:  # (in the epoch's order already: views, no gather)
                yield self.epoch_inputs[start:end], self.epoch_labels[start:end]
                continue
            images = self.images[index]
            if self.augment is not None:
                images = self.augment(images, index, self.generator, self.epoch)
            yield self.preprocess(images).contiguous(memory_format=self.memory_format), self.labels[index]

    def _epoch_inputs(self) -> torch.Tensor:
        """per_epoch: the whole dataset in the epoch's order, augmented as epoch `epoch` and preprocessed,
        (N, C, H, W) float in `memory_format` (and `epoch_labels` (N,) in the same order), so that a batch is
        a slice. Drawn from `generator` (its state before is kept in `epoch_start`; a resume inside the
        epoch draws them again from there, on a generator of its own, and `generator` goes on where it
        stood)."""
        generator = self.generator
        if self.epoch_start is None or self.batch == 0:
            self.epoch_start = self.generator.get_state()
        else:
            generator = torch.Generator(self.images.device)
            generator.set_state(self.epoch_start)
        images, self.epoch_labels = self.images[self.order], self.labels[self.order]
        if self.augment is not None:
            images = self.augment(images, self.order, generator, self.epoch)
        return self.preprocess(images).contiguous(memory_format=self.memory_format)

    def state_dict(self) -> dict:
        """Where the loader stands: CPU tensors and ints (safe for `torch.load(weights_only=True)`). All
        but `generator` (this rank's augmentation draws) is the same on every rank (with per_epoch,
        `epoch_start` is this rank's too, saved beside `generator`)."""
        return {"epoch": self.epoch, "batch": self.batch, "order_generator": self.order_generator.get_state(),
                "order": None if self.order is None else self.order.cpu(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict):
        """Where the loader stood (`state_dict`). With per_epoch, a resume inside an epoch also needs that
        epoch's `epoch_start`, this rank's (the checkpoint keeps it per rank; None: drawn afresh)."""
        self.epoch, self.batch = state["epoch"], state["batch"]
        self.epoch_start = self.epoch_inputs = self.epoch_labels = None
        # set_state takes a CPU ByteTensor, even for a CUDA generator
        self.order_generator.set_state(state["order_generator"].cpu())
        self.generator.set_state(state["generator"].cpu())
        self.order = None if state["order"] is None else state["order"].to(self.images.device)
