"""On a CUDA GPU (skipped elsewhere; `pytest -m cuda`): AMP training, resume from a CUDA checkpoint,
compiling without recompiles, fp16 with the gradient scaler, and deterministic kernels."""
import functools
import os

import pytest
import torch
from helpers import make_fake_cifar

from cifarbench.engine import loop as trainer
from cifarbench.run.checkpoint import load_checkpoint

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
QUICK = ("trainer.device=cuda", "trainer.progress=false", "trainer.batch_size=64", "trainer.eval_batch_size=200")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_cifar(tmp_path_factory.mktemp("data"), n_train=1000, n_test=200)


def test_lenet_amp_run_and_its_resume_from_a_cuda_checkpoint(tmp_path, data, compose_with):
    """Seen (by reading): a CUDA resume loaded the RNG states onto the GPU and set_rng_state refused them."""
    run = ("model=lenet", "trainer.amp=bf16", "trainer.deterministic=true", "trainer.ema=0.99", f"data.root={data}")
    whole = trainer.train(compose_with(*QUICK, *run, "trainer.epochs=2"), tmp_path / "whole")
    assert whole["status"] == "completed" and whole["amp"] == "bfloat16" and whole["device"].startswith("cuda")
    first = trainer.train(compose_with(*QUICK, *run, "trainer.epochs=1"), tmp_path / "run")
    assert first["status"] == "completed"
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cuda")
    assert state.ranks[0]["rng"]["torch"].is_cuda  # what used to break resume: restore_rng must move it back
    from cifarbench.run.checkpoint import restore_rng

    restore_rng(state.ranks[0]["rng"])
    resumed = trainer.train(compose_with(*QUICK, *run, "trainer.epochs=2",
                                         f"trainer.resume={tmp_path / 'run' / 'checkpoints' / 'last.pt'}"),
                            tmp_path / "run")
    assert resumed["status"] == "completed" and resumed["steps"] == whole["steps"]
    assert resumed["final_test_acc"] == pytest.approx(whole["final_test_acc"], abs=0.02)


def test_fp16_trains_with_the_gradient_scaler(tmp_path, data, compose_with):
    summary = trainer.train(compose_with(*QUICK, "model=lenet_bn", "trainer.amp=fp16", "trainer.epochs=2",
                                         f"data.root={data}"), tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert summary["status"] == "completed" and summary["amp"] == "float16"
    assert state.scaler["scale"] > 0 and summary["final_test_acc"] > 0.2


def test_deterministic_runs_repeat_exactly(tmp_path, data, compose_with):
    cfg = compose_with(*QUICK, "model=lenet_bn", "trainer.epochs=1", "trainer.deterministic=true", f"data.root={data}")
    a = trainer.train(cfg, tmp_path / "a")
    b = trainer.train(cfg, tmp_path / "b")
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert a["final_test_loss"] == b["final_test_loss"]


def test_compiled_channels_last_resnet18_does_not_recompile(tmp_path, data, compose_with, monkeypatch):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counter))
    summary = trainer.train(compose_with(*QUICK, "model=resnet18", "trainer.compile=true", "trainer.channels_last=true",
                                         "trainer.epochs=2", "data.train_subset=1000", "trainer.batch_size=384",
                                         f"data.root={data}"), tmp_path)
    # training at 384 and 232 images, evaluation at 200: three graphs, none added during the two epochs
    assert summary["status"] == "completed" and counter.frame_count == 3
    assert summary["compile_seconds"] > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs: SyncBatchNorm has no CPU kernels, "
                                                          "and NCCL takes one GPU per process")
def test_sync_bn_on_two_gpus_trains_the_weights_of_one_process(tmp_path, compose_with):
    """`trainer.sync_bn=true`: two processes (NCCL, cuda:0 and cuda:1) with global batch 8 normalise over
    the whole batch, as one process does, so they reach its weights and running statistics (within
    1e-4: the GPUs' reductions round in another order). Never run here: at most one GPU is lent."""
    import subprocess
    import sys

    from ddp_worker import BASE

    root = make_fake_cifar(tmp_path / "data", n_train=205, n_test=101)
    run = [{"model=lenet": "model=lenet_bn", "trainer.device=cpu": "trainer.device=cuda"}.get(o, o) for o in BASE]
    run += ["trainer.sync_bn=true", "trainer.deterministic=true", f"data.root={root}"]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "cifarbench", *run, f"hydra.run.dir={tmp_path / 'two'}"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    alone = trainer.train(compose_with(*run), tmp_path / "one")
    assert alone["processes"] == 1
    both = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    assert both.state["step"] == one.state["step"] == 52
    assert both.model.keys() == one.model.keys()
    for name, tensor in one.model.items():
        if tensor.is_floating_point():
            assert torch.allclose(both.model[name], tensor, atol=1e-4), name
