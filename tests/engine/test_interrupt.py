"""Stopping and resuming (issue 26): every stop signal ends a run as Ctrl-C does, a stop at an epoch's
end keeps that epoch's evaluation, `trainer.resume=auto` never resumes a run another one carried on,
and a GradScaler-less checkpoint resumes under fp16. Signals are raised in this process at a chosen
step (a real signal, the real handler), so no interpreter is started."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import cli_in_process, metrics_without_timing, signal_at, slowed, wait_for

from cifarbench.engine import loop
from cifarbench.run.checkpoint import load_checkpoint

# 200 fake training images in batches of 32: 7 steps an epoch (the last batch holds 8)
RUN = ("model=lenet5", "trainer.batch_size=32", "trainer.progress=false", "trainer.plots=none",
       "trainer.eval_batch_size=100", "trainer.deterministic=true")
STEPS_PER_EPOCH = 7


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "preempted")])
def test_a_stop_signal_saves_the_step_records_its_status_and_exits_128_plus_its_number(
        signum, status, tmp_path, fake_cifar_root, monkeypatch, capsys):
    """Seen: SIGTERM (scancel, docker stop, torchrun) ended the run with exit 143 and no word; summary.json
    said "running" forever. Stopped after step 10 of 14 (epoch 2 of 2): 10 / 7 = 1.43 epochs trained,
    where the message said "after 1.00 epochs" (the last evaluation's); the accuracy it reports is the
    last evaluation's, at epoch 1.00, and the message says so. Ctrl-C is a person's "interrupted"; SIGTERM
    is a scheduler's "preempted" (issue 28; the other signals: test_the_schedulers_signals_preempt...)."""
    before = signal.getsignal(signum)
    signal_at(monkeypatch, 10, signum)
    exit_code = cli_in_process(monkeypatch, *RUN, "trainer.epochs=2", f"data.root={fake_cifar_root}",
                               f"hydra.run.dir={tmp_path}")
    assert exit_code == 128 + signum  # 130 for SIGINT, 143 for SIGTERM
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["stopped_by"], summary["signal"], summary["steps"]) == (
        status, status, signal.Signals(signum).name, 10)
    assert summary["epochs"] == round(10 / 7, 4)
    assert summary["resume"] == f"trainer.resume={tmp_path / 'checkpoints' / 'last.pt'}"
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt").state["step"] == 10
    output = "".join(capsys.readouterr())
    assert f"{status} by {signal.Signals(signum).name} at step 10 ({10 / 7:.2f} epochs)" in output
    # the accuracy reported is that of the last evaluation, at the end of epoch 1, and says so
    accuracy = summary["final_test_acc"]
    assert re.search(rf"{status} after {10 / 7:.2f} epochs, [\d.]+ s of training; its last evaluation, at epoch "
                     rf"1\.00: test accuracy {100 * accuracy:.2f}%", output)
    last = tmp_path / "checkpoints" / "last.pt"
    assert (f"resume with trainer.resume={last}: python -m cifarbench {' '.join(RUN)} trainer.epochs=2 "
            f"data.root={fake_cifar_root} trainer.resume={last}") in output
    assert signal.getsignal(signum) == before  # the handler is gone after the run


def test_the_schedulers_signals_preempt_and_the_others_interrupt():
    """SIGTERM (scancel, preemption, docker stop, torchrun) and SIGUSR1/2 (SLURM's --signal) take the machine
    back: "preempted"; Ctrl-C, SIGHUP (a closed terminal), SIGQUIT, SIGXCPU: "interrupted"."""
    statuses = {signal.Signals(s).name: loop.stop_status(s) for s in loop.STOP_SIGNALS}
    assert statuses == {"SIGINT": "interrupted", "SIGTERM": "preempted", "SIGHUP": "interrupted",
                        "SIGQUIT": "interrupted", "SIGUSR1": "preempted", "SIGUSR2": "preempted",
                        "SIGXCPU": "interrupted"}


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


def test_a_second_signal_stops_at_once_and_still_leaves_no_run_running(tmp_path, fake_cifar_root, monkeypatch,
                                                                        capsys):
    """Stopped at once in epoch 1, before any checkpoint: the hint is to start again, not to resume a
    last.pt that does not exist."""
    signal_at(monkeypatch, 3, signal.SIGTERM, signal.SIGTERM)
    assert cli_in_process(monkeypatch, *RUN, "trainer.epochs=2", f"data.root={fake_cifar_root}",
                          f"hydra.run.dir={tmp_path}") == 143
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["signal"]) == ("preempted", "SIGTERM")
    assert (f"no checkpoint was written yet; to start again: python -m cifarbench {' '.join(RUN)} trainer.epochs=2 "
            f"data.root={fake_cifar_root}\n") in "".join(capsys.readouterr())


@pytest.fixture(scope="module")
def whole(shared_fake_root, compose_with, tmp_path_factory) -> Path:
    """The folder of the tests' run (RUN, 2 epochs, 14 steps) trained without a stop."""
    folder = tmp_path_factory.mktemp("whole")
    assert loop.train(compose_with(*RUN, "trainer.epochs=2", f"data.root={shared_fake_root}"), folder)["status"] == "completed"
    return folder


def test_ctrl_c_on_an_epochs_last_step_keeps_that_epochs_evaluation(tmp_path, shared_fake_root, compose_with,
                                                                    monkeypatch, whole):
    """Seen: last.pt was saved before the epoch's evaluation and the resumed run never evaluated it, so its
    metrics.csv lacked that row. Stopped after step 7 = the end of epoch 1: the row of epoch 1 is written
    before the checkpoint, and the resumed run's metrics equal an uninterrupted run's, row for row."""
    run = (*RUN, "trainer.epochs=2", f"data.root={shared_fake_root}")
    signal_at(monkeypatch, STEPS_PER_EPOCH, signal.SIGINT)
    stopped = loop.train(compose_with(*run), tmp_path / "run")
    assert stopped["status"] == "interrupted"
    assert [row["epoch"] for row in metrics_without_timing(tmp_path / "run" / "metrics.csv")] == ["1.0"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").state["rows"][-1]["step"] == STEPS_PER_EPOCH
    monkeypatch.undo()
    resumed = loop.train(compose_with(*run, "trainer.resume=auto"), tmp_path / "run")
    assert resumed["status"] == "completed"
    assert metrics_without_timing(tmp_path / "run" / "metrics.csv") == metrics_without_timing(whole / "metrics.csv")
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


def test_sigterm_after_the_first_evaluation_preempts_and_the_resume_ends_as_an_uninterrupted_run(
        tmp_path, shared_fake_root, compose_with, whole):
    """Issue 28: a real process (slowed to 0.25 s a step) gets SIGTERM once metrics.csv has its first row (step
    7): it finishes the step it is in, saves last.pt there, says "preempted" with the step, exits 143
    (128 + 15); `trainer.resume=auto` in the same folder (what a requeued job does) ends with the metrics of
    a run never stopped, row for row."""
    run = (*RUN, "trainer.epochs=2", f"data.root={shared_fake_root}")
    folder = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "cifarbench", *run, f"hydra.run.dir={folder}"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=slowed(0.25))
    wait_for(folder / "metrics.csv", process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    step = summary["steps"]
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH  # the step after the signal (8 or 9)
    assert (summary["status"], summary["signal"], summary["stopped_by"]) == ("preempted", "SIGTERM", "preempted")
    assert load_checkpoint(folder / "checkpoints" / "last.pt").state["step"] == step
    assert f"preempted by SIGTERM at step {step}" in output
    assert loop.train(compose_with(*run, "trainer.resume=auto"), folder)["status"] == "completed"
    assert metrics_without_timing(folder / "metrics.csv") == metrics_without_timing(whole / "metrics.csv")


def test_a_failed_runs_folder_says_what_happened_and_how_to_resume(tmp_path):
    """A torchrun rank whose peer was killed fails in a collective: its folder's summary.json says so (the
    error's first line) and how to continue the run (`resume`: its last.pt), rather than "running"."""
    from cifarbench.run.recorder import record_failure

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    (tmp_path / "summary.json").write_text(json.dumps({"status": "running", "config": {}}))
    record_failure(tmp_path, RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer\nmore"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == {"status": "failed", "config": {}, "resume": f"trainer.resume={tmp_path / 'checkpoints' / 'last.pt'}",
                       "error": "RuntimeError: [../gloo/transport/tcp/pair.cc:534] Connection closed by peer"}


def processes_running(marker: str) -> list[int]:
    """The ids of the processes whose command line holds `marker` (Linux's /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:  # ended meanwhile
            pass
    return found


@pytest.mark.long
@pytest.mark.skipif(not Path("/proc/self/cmdline").is_file(), reason="finds submitit's task in Linux's /proc")
def test_a_submitit_job_preempted_mid_run_is_requeued_and_completes_as_an_uninterrupted_run(
        tmp_path, shared_fake_root, whole):
    """Issue 28: a job of `hydra/launcher=submitit_local` (slowed to 0.25 s a step) gets submitit's preemption
    signal (SIGUSR2, what its controller sends before a time limit and SLURM with --signal) once its
    metrics.csv has a row: it saves last.pt at that step, hands itself back to submitit
    (hydra-submitit-launcher's checkpoint: the same job), is started again, resumes in its folder, and
    ends with the metrics of a run never stopped; the sweep exits 0 with its leaderboard."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="install cifarbench[slurm]")
    sweep, job = tmp_path / "sweep", tmp_path / "sweep" / "job"
    process = subprocess.Popen(
        [sys.executable, "-m", "cifarbench", "-m", "hydra/launcher=submitit_local", *RUN, "trainer.epochs=2",
         f"data.root={shared_fake_root}", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=slowed(0.25))
    wait_for(job / "metrics.csv", process)
    (task,) = processes_running(f"submitit.core._submit {sweep}")
    os.kill(task, signal.SIGUSR2)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
    logs = "".join(path.read_text() for path in sorted((sweep / ".submitit").glob("*/*_log.*")))
    step = int(logs.split("preempted by SIGUSR2 at step ")[1].split()[0])
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH and "Requeued job" in logs
    assert f"resumed from {job / 'checkpoints' / 'last.pt'} at step {step}" in logs
    summary = json.loads((job / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("completed", 2 * STEPS_PER_EPOCH)
    assert summary["resumed_from"] == str((job / "checkpoints" / "last.pt").resolve()) and summary["resumes"] == 1
    assert metrics_without_timing(job / "metrics.csv") == metrics_without_timing(whole / "metrics.csv")
    assert (sweep / "leaderboard.md").is_file()


def test_a_preempted_job_is_handed_back_to_submitit_until_max_requeues(monkeypatch):
    """A preempted job raises submitit's preemption signal (USR2 unless $SUBMITIT_PREEMPT_SIGNAL says
    otherwise), whose handler requeues it, while it was resumed fewer than trainer.max_requeues times."""
    pytest.importorskip("submitit", reason="install cifarbench[slurm]")
    from cifarbench.commands.train import requeue

    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    received = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        assert requeue({"status": "preempted"}, 3) and requeue({"status": "preempted", "resumes": 2}, 3)
        assert not requeue({"status": "preempted", "resumes": 3}, 3) and not requeue({"status": "preempted"}, 0)
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert received == [signal.SIGUSR2] * 2


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
