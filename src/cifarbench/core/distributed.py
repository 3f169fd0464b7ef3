"""One model trained by several processes: PyTorch's DistributedDataParallel (DDP; Li et al. 2020,
"PyTorch Distributed: Experiences on Accelerating Data Parallel Training"), one process per device,
started by `torchrun` or, under `hydra/launcher=slurm`, as the tasks of a submitit job.

Each process is a rank of the world. `torchrun` sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT; a submitit job with several tasks (SLURM's srun, or submitit's local executor) gets the
same variables from `submitit.helpers.TorchDistributedEnvironment`, which reads SLURM_PROCID,
SLURM_LOCALID, SLURM_NTASKS and the first host of SLURM_JOB_NODELIST. `process_group(trainer)` joins
the world for a `with` block (NCCL on CUDA, gloo on CPU, `trainer.dist_timeout_s` for the rendezvous
and every collective); `World.current()` is this process's place in it, with the few collectives the
training loop uses. A single process is a world of one: nothing is initialised and every collective
returns its input.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cifarbench.core.device import resolve_device
from cifarbench.core.registry import ConfigError

log = logging.getLogger(__name__)
BACKENDS = ("auto", "nccl", "gloo")


def rank_seed(seed: int, *keys: int) -> int:
    """A seed for an independent random stream per `keys` (e.g. the rank), derived from `seed` as
    NumPy's SeedSequence spawns child streams (consecutive seeds would give related streams)."""
    return int(np.random.SeedSequence(seed, spawn_key=keys).generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class World:
    """This process's place among the `size` processes that train one model: `rank` in 0..size-1
    (rank 0 alone writes files), `local_rank` its index on its node (its GPU). `comm_device` is where
    the tensors of this module's collectives live (CUDA for NCCL, else the CPU)."""
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def current(cls) -> World:
        """The initialised default process group's world, or a world of one."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        comm = torch.device("cuda", local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        return cls(dist.get_rank(), local_rank, dist.get_world_size(), comm)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files."""
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's [start, end) of `n` items split into contiguous shares in rank order, whose
        sizes differ by at most one (the first n mod size ranks hold one more)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def any(self, *flags: bool) -> list[bool]:
        """Each flag, true where it is true on any rank (one all-reduce of them all)."""
        if self.size == 1:
            return list(flags)
        tensor = torch.tensor(flags, dtype=torch.int32, device=self.comm_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(v) for v in tensor.tolist()]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of `tensor` (same shape on every rank), on `tensor`'s device."""
        if self.size == 1:
            return tensor
        total = tensor.to(self.comm_device, copy=True)
        dist.all_reduce(total)
        return total.to(tensor.device)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's `tensor` (n_rank, ...) concatenated in rank order (the n_rank may differ), on
        `tensor`'s device: the shares of `shard` put back together."""
        if self.size == 1:
            return tensor
        counts = [torch.zeros(1, dtype=torch.long, device=self.comm_device) for _ in range(self.size)]
        dist.all_gather(counts, torch.tensor([len(tensor)], device=self.comm_device))
        sizes = [int(count) for count in counts]
        padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=self.comm_device)
        padded[:len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)  # all_gather needs equal shapes: padded, then cut back
        return torch.cat([part[:n] for part, n in zip(parts, sizes)]).to(tensor.device)

    def broadcast(self, obj):
        """Rank 0's `obj` (any picklable value) on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.comm_device)
        return box[0]

    def gather_objects(self, obj) -> list:
        """Every rank's `obj` (picklable), as a list indexed by rank, on every rank."""
        if self.size == 1:
            return [obj]
        objects = [None] * self.size
        dist.all_gather_object(objects, obj)
        return objects

    def average_buffers(self, *modules: nn.Module):
        """Set every floating-point buffer of `modules` (batch norm's running mean and variance) to its
        mean over the ranks, in place (one all-reduce, summed in float64); integer buffers (BN's
        num_batches_tracked) are equal on every rank already. Each rank updates these statistics on its
        own batches, so without this every rank would evaluate, and rank 0 save, different ones; after
        it every rank evaluates what is saved (timm's `--dist-bn reduce`). A world of one: a no-op."""
        if self.size == 1:
            return
        buffers = list({id(b): b for m in modules for b in m.buffers() if b.is_floating_point()}.values())
        if not buffers:
            return
        total = torch.cat([b.detach().reshape(-1).to(self.comm_device, torch.float64) for b in buffers])
        dist.all_reduce(total)
        for buffer, mean in zip(buffers, (total / self.size).split([b.numel() for b in buffers])):
            buffer.copy_(mean.view_as(buffer))

    def device(self, name: str) -> torch.device:
        """The training device for `trainer.device`: on CUDA each rank of a world of several takes
        cuda:LOCAL_RANK. Raises ConfigError when that GPU does not exist."""
        device = resolve_device(name)
        if device.type != "cuda" or self.size == 1:
            return device
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ConfigError(f"LOCAL_RANK={self.local_rank} but this node has {count} CUDA device(s); start at "
                              f"most {count} process(es) per node (torchrun --nproc_per_node={count})")
        return torch.device("cuda", self.local_rank)

    def sync_batchnorm(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`trainer.sync_bn=true`: batch norms that normalise over the global batch (SyncBatchNorm)
        instead of each process's share. A world of one returns `model` unchanged (its BN already sees
        the whole batch). Raises ConfigError on CPU: PyTorch's SyncBatchNorm runs on GPUs only."""
        if self.size == 1:
            return model
        if device.type != "cuda":
            raise ConfigError(f"trainer.sync_bn=true on {self.size} CPU processes: PyTorch's SyncBatchNorm runs on "
                              f"CUDA devices only; set trainer.sync_bn=false (each process normalises its share)")
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` as its training forward: DistributedDataParallel(model) in a world of several (the
        gradients averaged over ranks in the backward), else `model`. Call after the memory format is
        set and before torch.compile. Modules that may skip their parameters in a step (stochastic
        depth's `drop_prob`) need DDP's search for unused parameters. The averaged gradients are copied
        into each parameter's own `.grad` (gradient_as_bucket_view=False, DDP's default), which every
        optimizer (Muon too) reads after the backward."""
        if self.size == 1:
            return model
        skips = any(getattr(module, "drop_prob", 0) for module in model.modules())
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                   find_unused_parameters=skips)


def environment_ranks() -> tuple[int, int, int]:
    """(rank, local rank, world size) as torchrun sets them (RANK, LOCAL_RANK, WORLD_SIZE); inside a
    submitit job of several tasks (hydra/launcher=slurm with tasks_per_node > 1, or submitit's local
    executor) first exported from submitit's view of the job. A plain `python -m cifarbench` (even
    inside a SLURM allocation) is (0, 0, 1)."""
    if "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR"):
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # each task keeps cuda:LOCAL_RANK
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def resolve_backend(name: str, device: torch.device) -> str:
    """`trainer.dist_backend`: auto (NCCL on CUDA, gloo on CPU), nccl or gloo; raises ConfigError for
    another value or NCCL without CUDA."""
    if name not in BACKENDS:
        raise ConfigError(f"trainer.dist_backend={name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name == "nccl" and (device.type != "cuda" or not dist.is_nccl_available()):
        raise ConfigError(f"trainer.dist_backend=nccl needs CUDA devices (this run trains on {device.type}); "
                          f"use trainer.dist_backend=auto or gloo")
    return name


@contextlib.contextmanager
def process_group(trainer) -> Iterator[World]:
    """Join the world this process was started in for the `with` block, and leave it at the end;
    yields this process's World (a world of one, and nothing initialised, outside torchrun and
    multi-task submitit jobs). A process group that already exists (a test's, a notebook's) is used
    as it is and left open.

    `trainer`: the config's trainer group (device, dist_backend, dist_timeout_s). Raises ConfigError
    for a bad backend, a missing GPU, or processes that do not all join within dist_timeout_s.
    """
    if dist.is_available() and dist.is_initialized():
        yield World.current()
        return
    rank, local_rank, size = environment_ranks()
    if size == 1:
        yield World()
        return
    device = World(rank, local_rank, size).device(trainer.device)
    backend = resolve_backend(trainer.dist_backend, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=trainer.dist_timeout_s),
                                device_id=device if backend == "nccl" else None)
    except dist.DistError as e:  # the store's rendezvous timed out, or its address cannot be reached
        address = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise ConfigError(f"rank {rank} of {size}: the processes did not all join at {address} within "
                          f"trainer.dist_timeout_s={trainer.dist_timeout_s} ({str(e).strip().splitlines()[0]}); "
                          f"start every process (torchrun on every node, same --rdzv_endpoint) or raise "
                          f"trainer.dist_timeout_s") from e
    try:
        world = World.current()
        log.info("rank %d of %d (local rank %d) on %s, backend %s", world.rank, world.size, world.local_rank,
                 device, backend)
        yield world
    finally:
        dist.destroy_process_group()
