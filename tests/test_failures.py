"""Failing well: divergence, Ctrl-C, unwritable output, and config errors before any data loads."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from cifarbench.files import OutputError, atomic_write_json
from cifarbench.registry import ConfigError
from cifarbench.validate import validate_config

QUICK = ("trainer.batch_size=32", "trainer.progress=false", "trainer.eval_batch_size=100")


def test_divergence_stops_with_step_and_lr_and_keeps_the_last_good_checkpoint(tmp_path, fake_cifar_root):
    # A sane first epoch, then the lr jumps ×1e8 half-way: the loss blows up in epoch 2.
    result = run_cli(*QUICK, "trainer.epochs=2", "sched=multistep", "sched.milestones=[0.5]", "sched.gamma=1e8",
                     f"data.root={fake_cifar_root}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "loss became non-finite at step" in output and "(lr 1e+06)" in output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["error"].startswith("loss became non-finite at step")
    last_pt = tmp_path / "checkpoints" / "last.pt"
    assert summary["error"].endswith(f"the last good checkpoint is {last_pt}")
    import torch

    from cifarbench.checkpoint import load_checkpoint

    last = load_checkpoint(last_pt)
    assert last["state"]["step"] == 7 and last["loader"]["epoch"] == 1  # 200 images / 32: 7 steps an epoch
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_divergence_before_the_first_evaluation_says_there_is_no_checkpoint(tmp_path, fake_cifar_root):
    """Seen: the message named a last.pt that did not exist."""
    result = run_cli(*QUICK, "trainer.epochs=1", "optim.lr=1e12", f"data.root={fake_cifar_root}",
                     f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["error"].endswith("no checkpoint was written yet")
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_ctrl_c_saves_a_checkpoint_and_exits_non_zero(tmp_path, fake_cifar_root):
    process = subprocess.Popen([sys.executable, "-m", "cifarbench", *QUICK, "trainer.epochs=100000",
                                f"data.root={fake_cifar_root}", f"hydra.run.dir={tmp_path}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] > 0
    assert "finishing this step" in output


def test_unwritable_output_is_a_clear_error_and_leaves_nothing_partial(tmp_path, monkeypatch):
    import errno

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cifarbench.files.os.replace", disk_full)
    with pytest.raises(OutputError, match="could not write .*summary.json \\(No space left on device\\); check"):
        atomic_write_json(tmp_path / "summary.json", {"status": "completed"})
    assert list(tmp_path.iterdir()) == []


def test_unwritable_run_folder_fails_the_cli_cleanly(tmp_path, fake_cifar_root):
    (tmp_path / "checkpoints").write_text("a file where the checkpoints/ folder must go")
    result = run_cli(*QUICK, "trainer.epochs=1", f"data.root={fake_cifar_root}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "could not write" in output and "checkpoints" in output and "Traceback" not in output
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"



@pytest.mark.parametrize("override, message", [
    ("trainer.batch_size=0", "trainer.batch_size=0; it must be a positive number"),
    ("trainer.batch_size=-8", "trainer.batch_size=-8; it must be a positive number"),
    ("trainer.epochs=0", "trainer.epochs=0; it must be a positive number"),
    ("trainer.budget_min=-1", "trainer.budget_min=-1; it must be a positive number or null"),
    ("optim.lr=0", "optim.lr=0; it must be a positive number"),
    ("trainer.device=tpu", "trainer.device='tpu'; choose one of auto, cpu, cuda"),
    ("trainer.amp=fp8", "trainer.amp='fp8'; choose one of auto, bf16, fp16, off"),
    ("data.train_subset=60000", "data.train_subset=60000; it must be an integer in 1..50000 or null"),
    ("+trainer.epoch=3", "unknown key(s) trainer.epoch; trainer has"),
    ("+data.subset=3", "unknown key(s) data.subset; data has"),
    ("+lr=0.1", "unknown top-level key(s) lr"),
])
def test_each_bad_value_is_named(compose_with, override, message):
    with pytest.raises(ConfigError) as error:
        validate_config(compose_with(override))
    assert message in str(error.value)


def test_cuda_and_fp16_need_a_gpu(compose_with):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="trainer.device=cuda but PyTorch sees no CUDA GPU"):
        validate_config(compose_with("trainer.device=cuda"))
    with pytest.raises(ConfigError, match="trainer.amp=fp16 needs a CUDA device"):
        validate_config(compose_with("trainer.amp=fp16"))


def test_validation_happens_before_data_is_loaded(tmp_path):
    """No dataset anywhere and download off: the config error still comes first."""
    result = run_cli("trainer.batch_size=0", "data.download=false", f"data.root={tmp_path / 'none'}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "trainer.batch_size=0" in output and "CIFAR-10 not found" not in output
