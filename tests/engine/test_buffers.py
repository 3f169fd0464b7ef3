"""Under several processes every rank evaluates, and rank 0 saves, the same batch-norm statistics: their
mean over the ranks (issue 26: each rank evaluated its own, so the run's accuracy was not its checkpoint's)."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


def _average_on(rank: int, port: int, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from cifarbench.core.distributed import World

    model, ema = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    model.running_mean.fill_(rank + 1.0)  # rank 0: 1, rank 1: 2
    model.running_var.fill_(4.0 * (rank + 1))  # 4 and 8
    ema.running_mean.fill_(10.0 * rank)  # 0 and 10
    model.num_batches_tracked.fill_(7)
    World.current().average_buffers(model, ema, model)  # a module named twice is averaged once
    torch.save((model.running_mean.tolist(), model.running_var.tolist(), ema.running_mean.tolist(),
                int(model.num_batches_tracked)), f"{folder}/{rank}.pt")
    dist.destroy_process_group()


def test_batch_norm_statistics_are_averaged_over_the_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_average_on, args=(port, tmp_path), nprocs=2, start_method="fork")  # fork: no new imports
    results = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in (0, 1)]
    # by hand: (1 + 2) / 2 = 1.5, (4 + 8) / 2 = 6, (0 + 10) / 2 = 5; the step count untouched
    assert results[0] == results[1] == ([1.5] * 3, [6.0] * 3, [5.0] * 3, 7)


def test_one_process_keeps_its_statistics():
    from cifarbench.core.distributed import World

    bn = nn.BatchNorm2d(2)
    bn.running_mean.fill_(3.0)
    World().average_buffers(bn)
    assert torch.equal(bn.running_mean, torch.full((2,), 3.0))
