"""Stopping and resuming (issue 26): every stop signal ends a run as Ctrl-C does, a stop at an epoch's
end keeps that epoch's evaluation, `trainer.resume=auto` never resumes a run another one carried on,
and a GradScaler-less checkpoint resumes under fp16. Signals are raised in this process at a chosen
step (a real signal, the real handler), so no interpreter is started."""
import csv
import json
import signal

import pytest
import torch
from helpers import cli_in_process

from cifarbench.engine import loop
from cifarbench.run.checkpoint import load_checkpoint

# 200 fake training images in batches of 32: 7 steps an epoch (the last batch holds 8)
RUN = ("model=lenet5", "trainer.batch_size=32", "trainer.progress=false", "trainer.plots=none",
       "trainer.eval_batch_size=100", "trainer.deterministic=true")
STEPS_PER_EPOCH = 7
TIMING = ("train_seconds", "images_per_s")


def signal_at(monkeypatch, step: int, *signums: int):
    """Raise `signums` in this process (the main thread) right after training step `step`."""
    decide = loop.stop_reason

    def stop_reason(training, state, plan, clock, interrupted):
        if state.step == step:
            for signum in signums:
                signal.raise_signal(signum)
        return decide(training, state, plan, clock, interrupted)

    monkeypatch.setattr(loop, "stop_reason", stop_reason)


def metrics_without_timing(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_saves_the_step_records_interrupted_and_exits_128_plus_its_number(
        signum, tmp_path, fake_cifar_root, monkeypatch, capsys):
    """Seen: SIGTERM (scancel, docker stop, torchrun) ended the run with exit 143 and no word; summary.json
    said "running" forever. Stopped after step 10 of 14 (epoch 2 of 2): 10 / 7 = 1.43 epochs trained,
    where the message said "after 1.00 epochs" (the last evaluation's)."""
    before = signal.getsignal(signum)
    signal_at(monkeypatch, 10, signum)
    status = cli_in_process(monkeypatch, *RUN, "trainer.epochs=2", f"data.root={fake_cifar_root}",
                            f"hydra.run.dir={tmp_path}")
    assert status == 128 + signum  # 130 for SIGINT, 143 for SIGTERM
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["signal"], summary["steps"]) == ("interrupted", signal.Signals(signum).name, 10)
    assert summary["epochs"] == round(10 / 7, 4)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt").state["step"] == 10
    output = "".join(capsys.readouterr())
    assert f"at step 10 ({10 / 7:.2f} epochs)" in output and f"after {10 / 7:.2f} epochs" in output
    assert f"resume with trainer.resume={tmp_path / 'checkpoints' / 'last.pt'}" in output
    assert signal.getsignal(signum) == before  # the handler is gone after the run


def test_every_stop_signal_is_deferred_and_a_second_one_stops_at_once():
    """The whole kind: each signal that can be caught and would end the process (but those Python or its
    libraries use) sets the flag with its number; the same signal again raises Interrupted."""
    names = {signal.Signals(s).name for s in loop.STOP_SIGNALS}
    assert {"SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGXCPU"} <= names
    for signum in loop.STOP_SIGNALS:
        before = signal.getsignal(signum)
        with loop.deferred_interrupt() as flag:
            signal.raise_signal(signum)
            assert flag.is_set() and flag.signum == signum
            with pytest.raises(loop.Interrupted) as second:
                signal.raise_signal(signum)
            assert second.value.signum == signum and loop.exit_status(signum) == 128 + signum
        assert signal.getsignal(signum) == before


def test_a_second_signal_stops_at_once_and_still_leaves_no_run_running(tmp_path, fake_cifar_root, monkeypatch):
    signal_at(monkeypatch, 3, signal.SIGTERM, signal.SIGTERM)
    assert cli_in_process(monkeypatch, *RUN, "trainer.epochs=2", f"data.root={fake_cifar_root}",
                          f"hydra.run.dir={tmp_path}") == 143
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["signal"]) == ("interrupted", "SIGTERM")


def test_ctrl_c_on_an_epochs_last_step_keeps_that_epochs_evaluation(tmp_path, fake_cifar_root, compose_with,
                                                                    monkeypatch):
    """Seen: last.pt was saved before the epoch's evaluation and the resumed run never evaluated it, so its
    metrics.csv lacked that row. Stopped after step 7 = the end of epoch 1: the row of epoch 1 is written
    before the checkpoint, and the resumed run's metrics equal an uninterrupted run's, row for row."""
    run = (*RUN, "trainer.epochs=2", f"data.root={fake_cifar_root}")
    whole = loop.train(compose_with(*run), tmp_path / "whole")
    signal_at(monkeypatch, STEPS_PER_EPOCH, signal.SIGINT)
    stopped = loop.train(compose_with(*run), tmp_path / "run")
    assert stopped["status"] == "interrupted"
    assert [row["epoch"] for row in metrics_without_timing(tmp_path / "run" / "metrics.csv")] == ["1.0"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").state["rows"][-1]["step"] == STEPS_PER_EPOCH
    monkeypatch.undo()
    resumed = loop.train(compose_with(*run, "trainer.resume=auto"), tmp_path / "run")
    assert resumed["status"] == "completed" and resumed["final_test_acc"] == whole["final_test_acc"]
    assert (metrics_without_timing(tmp_path / "run" / "metrics.csv")
            == metrics_without_timing(tmp_path / "whole" / "metrics.csv"))
    assert [row["epoch"] for row in metrics_without_timing(tmp_path / "run" / "metrics.csv")] == ["1.0", "2.0"]


def test_resume_auto_never_resumes_a_run_that_another_folder_carried_on(tmp_path, fake_cifar_root, monkeypatch,
                                                                        capsys):
    """Seen: A interrupted, resumed with resume=auto into B and completed; every later resume=auto picked
    A's last.pt again and left one more completed run. Now B records `resumed_from`, A is B's, and a
    later resume=auto finds the config completed (B) and trains nothing."""
    out = tmp_path / "outputs"
    run = (*RUN, "trainer.epochs=1", f"data.root={fake_cifar_root}", f"paths.output_dir={out}")
    signal_at(monkeypatch, 3, signal.SIGINT)
    assert cli_in_process(monkeypatch, *run, f"hydra.run.dir={out / 'A'}") == 130
    monkeypatch.undo()
    assert cli_in_process(monkeypatch, *run, "trainer.resume=auto", f"hydra.run.dir={out / 'B'}") == 0
    b = json.loads((out / "B" / "summary.json").read_text())
    assert b["status"] == "completed" and b["resumed_from"] == str((out / "A" / "checkpoints" / "last.pt").resolve())
    assert cli_in_process(monkeypatch, *run, "trainer.resume=auto", f"hydra.run.dir={out / 'C'}") == 0
    assert f"this job completed in {(out / 'B').resolve()} before; skipped" in "".join(capsys.readouterr())
    assert not (out / "C" / "summary.json").exists() and not (out / "C" / "checkpoints").exists()


@pytest.mark.parametrize("status", ["interrupted", "running"])  # "running": a killed torchrun rank's folder
def test_find_resumable_passes_over_a_run_a_later_one_continued(tmp_path, status):
    from cifarbench.engine.resume import completed_run, find_resumable

    config = {"trainer": {"seed": 0}}

    def run(name, status, resumed_from=None):
        folder = tmp_path / name
        (folder / "checkpoints").mkdir(parents=True)
        torch.save({}, folder / "checkpoints" / "last.pt")
        summary = {"status": status, "config": config}
        if resumed_from:
            summary["resumed_from"] = str(tmp_path / resumed_from / "checkpoints" / "last.pt")
        (folder / "summary.json").write_text(json.dumps(summary))

    run("A", status)
    assert find_resumable(tmp_path / "new", config, tmp_path) == (tmp_path / "A" / "checkpoints" / "last.pt")
    run("B", "completed", resumed_from="A")
    assert find_resumable(tmp_path / "new", config, tmp_path) is None
    assert completed_run(tmp_path / "new", config, tmp_path)[0] == tmp_path / "B"
    run("C", "interrupted", resumed_from="C")  # resumed in its own folder: still its own to resume
    assert find_resumable(tmp_path / "new", config, tmp_path) == tmp_path / "C" / "checkpoints" / "last.pt"
    assert completed_run(tmp_path / "new", config, tmp_path) is None  # something newer is unfinished


def test_a_checkpoint_without_a_grad_scaler_resumes_under_fp16():
    """Seen: a CPU bf16 checkpoint (a disabled GradScaler saves {}) resumed where amp=auto means fp16 died
    with "The source state dict is empty"."""
    from cifarbench.engine.build import load_scaler

    fp16 = torch.amp.GradScaler("cpu", enabled=True)
    load_scaler(fp16, torch.amp.GradScaler("cpu", enabled=False).state_dict())
    assert fp16.get_scale() == 2.0 ** 16  # afresh: GradScaler's default init_scale
    saved = torch.amp.GradScaler("cpu", init_scale=256.0)
    saved.scale(torch.ones(1))  # makes its scale tensor
    load_scaler(fp16, saved.state_dict())
    assert fp16.get_scale() == 256.0
    load_scaler(torch.amp.GradScaler("cpu", enabled=False), saved.state_dict())  # fp16 → bf16/off: ignored


def test_a_lean_speed_run_stopped_inside_an_epoch_resumes_to_the_same_metrics(tmp_path, fake_cifar_root,
                                                                              compose_with, monkeypatch):
    """Issue 25's options together (speedrun94: augmentation per epoch, BN without a step counter, the
    whitening bias frozen by requires_grad after epoch 1 of 6 steps), stopped at step 8 of 9: the resumed
    run redraws epoch 2's views from the saved epoch-start state and freezes the bias again, and its
    metrics equal an uninterrupted run's, row for row."""
    run = ("experiment=speedrun94", "model.widths=[4,4,4]", "trainer.batch_size=32", "trainer.epochs=1.5",
           "trainer.whiten_bias_epochs=1", "trainer.eval_every=1", "trainer.tta=none", "trainer.progress=false",
           "trainer.plots=none", "trainer.deterministic=true", "data.test_subset=100", f"data.root={fake_cifar_root}")
    whole = loop.train(compose_with(*run), tmp_path / "whole")
    signal_at(monkeypatch, 8, signal.SIGINT)
    assert loop.train(compose_with(*run), tmp_path / "run")["status"] == "interrupted"
    monkeypatch.undo()
    resumed = loop.train(compose_with(*run, "trainer.resume=auto"), tmp_path / "run")
    assert resumed["status"] == "completed" and resumed["steps"] == whole["steps"] == 9
    assert (metrics_without_timing(tmp_path / "run" / "metrics.csv")
            == metrics_without_timing(tmp_path / "whole" / "metrics.csv"))
