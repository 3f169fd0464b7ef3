"""Failing well: divergence, Ctrl-C and unwritable output (config errors: config/test_config_checks.py)."""
import json
import signal
import subprocess
import sys
import time

import pytest
from helpers import cli_in_process

from cifarbench.core.files import OutputError, atomic_write_json

QUICK = ("trainer.batch_size=32", "trainer.progress=false", "trainer.eval_batch_size=100", "trainer.plots=none")


def test_divergence_stops_with_step_and_lr_and_keeps_the_last_good_checkpoint(tmp_path, fake_cifar_root,
                                                                              monkeypatch, capsys):
    # A sane first epoch, then the lr jumps ×1e8 half-way: the loss blows up in epoch 2.
    assert cli_in_process(monkeypatch, *QUICK, "trainer.epochs=2", "sched=multistep", "sched.milestones=[0.5]",
                          "sched.gamma=1e8", f"data.root={fake_cifar_root}", f"hydra.run.dir={tmp_path}") == 1
    output = "".join(capsys.readouterr())
    assert "loss became non-finite at step" in output and "(lr 1e+06)" in output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["error"].startswith("loss became non-finite at step")
    last_pt = tmp_path / "checkpoints" / "last.pt"
    assert summary["error"].endswith(f"the last good checkpoint is {last_pt}")
    import torch

    from cifarbench.run.checkpoint import load_checkpoint

    last = load_checkpoint(last_pt)
    assert last.state["step"] == 7 and last.loader["epoch"] == 1  # 200 images / 32: 7 steps an epoch
    assert all(torch.isfinite(v).all() for v in last.model.values())


def test_divergence_before_the_first_evaluation_says_there_is_no_checkpoint(tmp_path, fake_cifar_root,
                                                                           compose_with):
    """Seen: the message named a last.pt that did not exist."""
    from cifarbench.engine.loop import train

    summary = train(compose_with(*QUICK, "trainer.epochs=1", "optim.lr=1e12", f"data.root={fake_cifar_root}"),
                    tmp_path)
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

    monkeypatch.setattr("cifarbench.core.files.os.replace", disk_full)
    with pytest.raises(OutputError, match="could not write .*summary.json \\(No space left on device\\); check"):
        atomic_write_json(tmp_path / "summary.json", {"status": "completed"})
    assert list(tmp_path.iterdir()) == []


def test_unwritable_run_folder_fails_the_cli_cleanly(tmp_path, fake_cifar_root, monkeypatch, capsys):
    (tmp_path / "checkpoints").write_text("a file where the checkpoints/ folder must go")
    assert cli_in_process(monkeypatch, *QUICK, "trainer.epochs=1", f"data.root={fake_cifar_root}",
                          f"hydra.run.dir={tmp_path}") == 2
    output = "".join(capsys.readouterr())
    assert "could not write" in output and "checkpoints" in output and "Traceback" not in output
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"
