"""Several processes training one model (DDP on CPU with gloo): the same weights as one process, one
run folder written by rank 0, stops that every rank agrees on, resume on another number of processes,
and one clear line for each bad setup.

The 2-process runs are one torchrun launch of tests/engine/ddp_worker.py (see there); the 1-process runs
they are compared with run here, in this process, with the same config (`BASE`).
"""
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import cli_in_process, make_fake_cifar, slowed, wait_for
from ddp_worker import BASE, SCENARIOS

from cifarbench.engine import loop as trainer
from cifarbench.run.checkpoint import load_checkpoint
from cifarbench.data import DeviceLoader
from cifarbench.core.distributed import World, process_group
from cifarbench.core.registry import ConfigError

# The module-scoped runs below are shared by its tests: one pytest-xdist worker runs them all.
pytestmark = pytest.mark.xdist_group("test_distributed")

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_fake_cifar(tmp_path_factory.mktemp("data"), n_train=205, n_test=101)


@pytest.fixture(scope="module")
def two(data, tmp_path_factory):
    """The worker's scenarios on 2 processes: (output folder, {(scenario, rank): summary}, output)."""
    out = tmp_path_factory.mktemp("two")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(WORKER), str(data), str(out)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-3000:]}"
    summaries = {(path.stem.rsplit("-", 1)[0], int(path.stem.rsplit("-", 1)[1])): json.loads(path.read_text())
                 for path in (out / "summaries").glob("*.json")}
    assert len(summaries) == 2 * len(SCENARIOS), f"{sorted(summaries)}\n{result.stdout[-3000:]}"
    return out, summaries, output


@pytest.fixture(scope="module")
def one(data, tmp_path_factory, compose_with):
    """The `equal` scenario on 1 process: its run folder."""
    run = tmp_path_factory.mktemp("one")
    summary = trainer.train(compose_with(*BASE, *SCENARIOS["equal"], f"data.root={data}"), run)
    assert summary["status"] == "completed" and summary["processes"] == 1
    return run


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(two, one):
    """205 images in batches of 8 (the last, 5 images, shared 3 + 2: the loss weighting keeps the
    gradient the batch mean), EMA and Lookahead on; the test set's 101 images shared 51 + 50."""
    out, summaries, _ = two
    both, alone = load_checkpoint(out / "equal" / "checkpoints" / "last.pt"), load_checkpoint(one / "checkpoints" / "last.pt")
    assert both.state["step"] == alone.state["step"] == 52
    assert max_difference(both.model, alone.model) < 1e-5
    assert max_difference(both.ema["module"], alone.ema["module"]) < 1e-5
    # Metrics count every image of both ranks: accuracies equal as fractions of 205 and 101 images.
    for a, b in zip(rows(out / "equal"), rows(one), strict=True):
        assert a["train_acc"] == b["train_acc"] and a["test_acc"] == b["test_acc"]
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), abs=1e-5)
        assert float(a["test_loss"]) == pytest.approx(float(b["test_loss"]), abs=1e-5)
    assert summaries[("equal", 0)]["processes"] == 2
    assert summaries[("equal", 0)]["final_test_acc"] == summaries[("equal", 1)]["final_test_acc"]


def test_accumulation_under_ddp_trains_the_weights_of_one_process_with_the_large_batch(two, one):
    """Batches of 8 as 2 micro-batches of 4 (each rank's share of a micro-batch: 2 images; the last batch
    of 5 shared 3 + 2 and split 2 + 1, 1 + 1), only the last all-reducing, equal the 1-process batches of 8."""
    out, _, _ = two
    both, alone = (load_checkpoint(out / "accumulate" / "checkpoints" / "last.pt"),
                   load_checkpoint(one / "checkpoints" / "last.pt"))
    assert both.state["step"] == alone.state["step"] == 52
    assert max_difference(both.model, alone.model) < 1e-5
    for a, b in zip(rows(out / "accumulate"), rows(one), strict=True):
        assert a["train_acc"] == b["train_acc"] and a["test_acc"] == b["test_acc"]


def test_muon_under_ddp_matches_one_process(two, data, compose_with, tmp_path):
    """Seen: 0.0098 apart after 3 steps while DDP's gradients were bucket views (Muon read each rank's
    own gradient); 7e-9 to 6e-5 since, as the thread count of the 1-process run changes which bfloat16
    roundings differ. Only 3 steps: Muon orthogonalises in bfloat16, which grows the 1e-8 differences of
    averaging to 1e-2 over 26 steps (chaotic, not a bug: 1e-9 after one step). The bar, 1e-3, sits
    between that rounding and the bug."""
    out, _, _ = two
    alone = trainer.train(compose_with(*BASE, *SCENARIOS["muon"], f"data.root={data}"), tmp_path)
    assert alone["steps"] == 3
    assert max_difference(load_checkpoint(out / "muon" / "checkpoints" / "last.pt").model,
                          load_checkpoint(tmp_path / "checkpoints" / "last.pt").model) < 1e-3


def test_one_run_folder_written_by_rank_0_alone(two):
    """`cifarbench` under torchrun: Hydra names a folder per process (${now:} and the run id differ);
    rank 1 makes none, writes nothing, and logs warnings only."""
    out, summaries, output = two
    (folder,) = (out / "cli" / "outputs" / "runs").glob("*/*")
    assert sorted(p.name for p in (out / "cli").iterdir()) == ["outputs"]
    assert {p.name for p in folder.iterdir()} == {".hydra", "train.log", "checkpoints", "metrics.csv", "summary.json"}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2 and summary["steps"] == 26
    assert output.count(f"run folder: {folder}") == 2  # rank 0's first and last lines; rank 1's are info, not shown
    for name in SCENARIOS:
        assert not (out / f"{name}-rank1").exists(), f"rank 1 wrote into its own run_dir in {name}"
        assert summaries[(name, 0)]["status"] == summaries[(name, 1)]["status"]


def test_the_accuracy_two_processes_report_is_their_checkpoints(two, data, capsys):
    """Issue 26: under DDP each rank evaluated with its own batch-norm statistics (each updated them on its
    own share), so the run's reported accuracy was not its checkpoint's (lenet_bn, 2 processes: run 0.3025,
    inspect 0.30). The `cli` run (LeNet with BN, 2 processes, its test images shared 51 + 50) evaluated the
    statistics it saved: `inspect` of its last.pt on one process finds its accuracy and loss."""
    from cifarbench.commands.inspect import main as inspect

    out, _, _ = two
    (folder,) = (out / "cli" / "outputs" / "runs").glob("*/*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["config"]["model"]["bn"] is True and summary["processes"] == 2
    capsys.readouterr()
    assert inspect([f"ckpt={folder / 'checkpoints' / 'last.pt'}", f"data.root={data}"]) == 0
    out_text = capsys.readouterr().out
    report = json.loads(out_text[:out_text.rindex("}") + 1])
    assert report["test_images"] == 101
    assert report["test_acc"] == summary["final_test_acc"]  # a count of the same 101 images
    assert report["test_loss"] == pytest.approx(summary["final_test_loss"], rel=1e-6)  # summed in another order


@pytest.mark.parametrize("name, status, stopped_by, steps", [
    ("budget", "completed", "budget", 26),         # over budget at once; the ranks agree at the epoch's end
    ("diverged", "diverged", "diverged", 26),
    ("interrupt", "interrupted", "interrupted", 50),  # rank 1's Ctrl-C at step 30; both stop at step 50
])
def test_stops_end_both_processes_with_one_summary(two, name, status, stopped_by, steps):
    out, summaries, _ = two
    summary = json.loads((out / name / "summary.json").read_text())
    assert (summary["status"], summary["stopped_by"], summary["steps"]) == (status, stopped_by, steps)
    assert (summaries[(name, 1)]["status"], summaries[(name, 1)]["steps"]) == (status, steps)
    if name == "diverged":
        assert re.fullmatch(r"loss became non-finite at step \d+ \(lr .+\); no checkpoint was written yet",
                            summary["error"])


def test_a_checkpoint_of_two_processes_resumes_on_one(two, one, data, compose_with, caplog):
    """Stopped by Ctrl-C at step 50 of 52 (mid-epoch) on 2 processes, continued on 1: the weights (and
    EMA) of the uninterrupted 1-process run."""
    out, _, _ = two
    last = out / "interrupt" / "checkpoints" / "last.pt"
    saved = load_checkpoint(last)
    assert (saved.loader["epoch"], saved.loader["batch"], len(saved.ranks)) == (2, 24, 2)
    resumed = trainer.train(compose_with(*BASE, *SCENARIOS["interrupt"], f"data.root={data}", f"trainer.resume={last}"),
                            out / "interrupt")
    assert resumed["status"] == "completed" and resumed["steps"] == 52
    assert "a checkpoint written by 2: the weights and the data order continue exactly" in caplog.text
    continued, whole = load_checkpoint(last), load_checkpoint(one / "checkpoints" / "last.pt")
    assert max_difference(continued.model, whole.model) < 1e-5
    assert max_difference(continued.ema["module"], whole.ema["module"]) < 1e-5


@pytest.fixture(scope="module")
def two_nodes(data, tmp_path_factory):
    """`cifarbench` (the `interrupt` scenario's config, each step slowed by 0.1 s: helpers.slowed)
    on two torchrun "nodes" of one process each, on this machine: `--nnodes=2`, `--node_rank` 0 and 1, one
    c10d rendezvous at 127.0.0.1 on a free port. Once metrics.csv has its first row (step 26), both torchrun
    agents get SIGTERM (as scancel sends it to every node), which they pass on to their workers. Returns the
    run folder and the agents' output."""
    out = tmp_path_factory.mktemp("nodes")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node}", "--nproc_per_node=1",
         "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=two-nodes", "-m", "cifarbench",
         *BASE, *SCENARIOS["interrupt"], f"data.root={data}", f"hydra.run.dir={out / 'run'}"],
        cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**slowed(0.1), "OMP_NUM_THREADS": "1"}) for node in (0, 1)]
    try:
        wait_for(out / "run" / "metrics.csv", *agents)
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
        output = "".join(agent.communicate(timeout=120)[0] for agent in agents)
    finally:
        for agent in agents:
            agent.kill()
    return out / "run", output


@pytest.mark.long
def test_two_nodes_train_as_one_process_and_sigterm_preempts_every_rank(two_nodes, one, data, compose_with):
    """Issue 28, multi-node torchrun and SIGTERM under torchrun: the two nodes' ranks agree to stop at step 50
    (their next agreed step after the signal), rank 0 saves last.pt there and writes "preempted"; the
    first evaluation (step 26) counts every image as one process does, and the run resumed on one process
    (trainer.resume=auto in its folder) ends with the weights and EMA of the 1-process run never stopped."""
    run, output = two_nodes
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["signal"], summary["steps"], summary["processes"]) == (
        "preempted", "SIGTERM", 50, 2), output[-3000:]
    assert "preempted by SIGTERM at step 50" in output
    assert load_checkpoint(run / "checkpoints" / "last.pt").state["step"] == 50
    first, alone = rows(run)[0], rows(one)[0]
    assert (first["step"], first["train_acc"], first["test_acc"]) == (alone["step"], alone["train_acc"], alone["test_acc"])
    resumed = trainer.train(compose_with(*BASE, *SCENARIOS["interrupt"], f"data.root={data}", "trainer.resume=auto"),
                            run)
    assert resumed["status"] == "completed" and resumed["steps"] == 52
    continued, whole = load_checkpoint(run / "checkpoints" / "last.pt"), load_checkpoint(one / "checkpoints" / "last.pt")
    assert max_difference(continued.model, whole.model) < 1e-5
    assert max_difference(continued.ema["module"], whole.ema["module"]) < 1e-5


def test_each_rank_takes_its_share_of_one_shared_order_with_its_own_augmentation():
    from cifarbench.aug import flip_shift

    n = 21  # batches of 8: 8, 8, then 5 shared 3 + 2
    images = torch.arange(n).repeat_interleave(3 * 8 * 8).view(n, 3, 8, 8).to(torch.uint8)

    def loader(rank: int, size: int, augment=None):
        return DeviceLoader(images, torch.arange(n), 8, lambda x: x.float(), augment, seed=5,
                            world=World(rank, rank, size))

    alone, ranks = loader(0, 1), [loader(r, 2) for r in range(2)]
    for (_, whole), (_, first), (_, second) in zip(alone, *ranks, strict=True):
        assert torch.equal(whole, torch.cat([first, second]))
    assert [ranks[0].share(b) for b in range(3)] == [(0, 4), (8, 12), (16, 19)]
    assert [ranks[1].loss_weight() for _ in [0]] == [2 * 2 / 5]  # after the last batch: 2 of its 5 images
    # A remainder of under 2 images per process joins the last full batch (batch norm needs 2).
    assert DeviceLoader(images[:19], torch.arange(19), 8, lambda x: x.float(), world=World(0, 0, 2)).bounds == \
        [(0, 8), (8, 19)]
    shifted = [next(iter(loader(r, 2, flip_shift(2))))[0] for r in range(2)]
    unshifted = [next(iter(loader(r, 2)))[0] for r in range(2)]
    assert not torch.equal(shifted[0] - unshifted[0], shifted[1] - unshifted[1]), "each rank draws its own shifts"


def test_shards_cover_every_item_once_in_rank_order():
    assert [World(r, 0, 4).shard(10) for r in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert World().shard(7) == (0, 7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_process_that_never_joins_is_one_line_after_the_timeout(monkeypatch, compose_with):
    port = free_port()
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^rank 0 of 2: the processes did not all join at 127\.0\.0\.1:{port} "
                                          r"within trainer\.dist_timeout_s=1 \(Timed out after .*\); start every "
                                          r"process .* or raise trainer\.dist_timeout_s$"):
        with process_group(compose_with("trainer.device=cpu", "trainer.dist_timeout_s=1").trainer):
            pass
    assert time.monotonic() - start < 15 and not dist.is_initialized()


def test_bad_setups_are_one_line_each(monkeypatch, compose_with, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"^trainer\.dist_backend=nccl needs CUDA devices \(this run trains on cpu\); "
                                          r"use trainer\.dist_backend=auto or gloo$"):
        with process_group(compose_with("trainer.device=cpu", "trainer.dist_backend=nccl").trainer):
            pass
    with pytest.raises(ConfigError, match=r"^trainer\.sync_bn=true on 2 CPU processes: PyTorch's SyncBatchNorm runs "
                                          r"on CUDA devices only; set trainer\.sync_bn=false"):
        World(0, 0, 2).sync_batchnorm(torch.nn.BatchNorm2d(3), torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"^LOCAL_RANK=2 but this node has 2 CUDA device\(s\); start at most 2 "
                                          r"process\(es\) per node \(torchrun --nproc_per_node=2\)$"):
        World(2, 2, 4).device("cuda")
    assert cli_in_process(monkeypatch, "-m", "model=lenet,lenet_bn") == 2
    assert "torchrun trains one run on several processes and takes no sweep" in capsys.readouterr().err


def test_a_global_batch_that_does_not_divide_among_the_processes(monkeypatch, compose_with, tmp_path):
    monkeypatch.setattr(World, "current", classmethod(lambda cls: World(0, 0, 3)))
    with pytest.raises(ConfigError, match=r"^trainer\.batch_size=8 is the global batch: it must divide evenly among "
                                          r"the 3 processes \(WORLD_SIZE=3\); use a multiple of 3$"):
        trainer.train(compose_with(*BASE, f"data.root={tmp_path}"), tmp_path)
    assert not list(tmp_path.iterdir()), "nothing written"


@pytest.mark.parametrize("override, message", [
    ("trainer.dist_backend=mpi", "trainer.dist_backend='mpi'; it must be one of auto, nccl, gloo"),
    ("trainer.dist_timeout_s=0", "trainer.dist_timeout_s=0; it must be a positive number"),
    ("trainer.sync_bn=1", "trainer.sync_bn=1; it must be true or false"),
])
def test_the_distributed_fields_are_checked_with_the_others(compose_with, override, message):
    from cifarbench.validate import validate_config

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        validate_config(compose_with(override))
