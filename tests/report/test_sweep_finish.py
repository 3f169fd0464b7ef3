"""Sweeps you can finish: a multirun stopped by Ctrl-C in its second job, run again with the same sweep
folder and trainer.resume=auto, skips the completed job, resumes the interrupted one, runs the rest, and
leaves one folder and one leaderboard row per job (in-process: Hydra's basic launcher runs the jobs here);
hydra/launcher=slurm without SLURM says so in one line."""
import csv
import json
import os
import shlex
import signal

import pytest
from helpers import cli_in_process, make_fake_cifar

from cifarbench.engine import build as engine_build
from cifarbench.engine import loop as trainer


def job_folders(sweep) -> dict[int, object]:
    """The job folders of a sweep by job number (Hydra names them `<number>_<overrides>`)."""
    folders = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len({p.name.split("_")[0] for p in folders}) == len(folders), "one folder per job"
    assert not any("resume" in p.name for p in folders)
    return {int(p.name.split("_")[0]): p for p in folders}


def interrupt_job(monkeypatch, job: int, forward: int):
    """A real SIGINT during training forward number `forward` (1-based) of the `job`-th model built (0-based)."""
    build, built = engine_build.build_model, []

    calls = []

    def hook(module, args):
        if module.training:
            calls.append(1)
            if len(calls) == forward:
                os.kill(os.getpid(), signal.SIGINT)

    def build_with_hook(*args, **kwargs):
        model = build(*args, **kwargs)
        if len(built) == job:
            model.register_forward_pre_hook(hook)
        built.append(model)
        return model

    monkeypatch.setattr(engine_build, "build_model", build_with_hook)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_cifar(tmp_path_factory.mktemp("data"), n_train=256, n_test=100)


def test_an_interrupted_sweep_run_again_finishes_without_duplicates(tmp_path, data, monkeypatch, capsys):
    """Seen: the rerun trained the completed job again and added `…,trainer.resume=auto` folders beside
    the old ones (5 leaderboard rows for 3 jobs). The first command may also hold trainer.resume=auto."""
    sweep = tmp_path / "sweep"
    command = ("model=lenet", "trainer.seed=0,1,2", "trainer.epochs=2", "data.train_subset=64",
               "trainer.batch_size=16", "data.test_subset=20", "trainer.progress=false", "trainer.plots=none",
               f"data.root={data}", f"hydra.sweep.dir={sweep}")
    with monkeypatch.context() as patch:
        interrupt_job(patch, job=1, forward=6)  # in epoch 2 of job 1 (4 steps an epoch)
        assert cli_in_process(patch, "-m", *command) == 130
    # Seen: the hint was the single-run command (or "run the sweep again" without its folder, which makes a
    # new sweep folder where nothing resumes). Now: the sweep's own command, in its folder, resuming.
    hint = ("to finish the sweep, run its command again in its folder with trainer.resume=auto: python -m cifarbench "
            f"-m {' '.join(command[:-1])} hydra.sweep.dir={sweep} trainer.resume=auto")
    assert hint in "".join(capsys.readouterr())
    jobs = job_folders(sweep)
    assert list(jobs) == [0, 1]  # job 2 never started
    first = (jobs[0] / "summary.json").read_text()
    interrupted = json.loads((jobs[1] / "summary.json").read_text())
    assert json.loads(first)["status"] == "completed"
    assert interrupted["status"] == "interrupted" and interrupted["steps"] == 6
    assert not (sweep / "leaderboard_runs.csv").exists()

    assert cli_in_process(monkeypatch, *shlex.split(hint.partition(": ")[2])[3:]) == 0  # the hint's command
    log = capsys.readouterr().out  # (Hydra's job logging writes to stdout)
    assert job_folders(sweep).keys() == {0, 1, 2} and job_folders(sweep)[1] == jobs[1]
    jobs = job_folders(sweep)
    assert (jobs[0] / "summary.json").read_text() == first  # kept, not trained again
    assert f"this job completed in {jobs[0]} before; skipped" in log
    assert f"resumed from {jobs[1] / 'checkpoints' / 'last.pt'} at step 6" in log
    summaries = [json.loads((jobs[k] / "summary.json").read_text()) for k in range(3)]
    assert [(s["status"], s["steps"], s["config"]["trainer"]["seed"]) for s in summaries] == \
        [("completed", 8, seed) for seed in range(3)]
    with open(jobs[1] / "metrics.csv") as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["4", "8"]  # its epoch-1 row kept, then the rest
    with open(sweep / "leaderboard_runs.csv") as f:
        board = list(csv.DictReader(f))
    assert sorted(row["seed"] for row in board) == ["0", "1", "2"]
    assert {row["status"] for row in board} == {"completed"}
    # Seen: job 0 recorded trainer.resume=null and the resumed jobs trainer.resume=auto, and the leaderboard
    # showed two rows (n=1 and n=2) for one setting. Right: one row of its three seeds.
    with open(sweep / "leaderboard.csv") as f:
        settings = list(csv.DictReader(f))
    assert [(row["n"], row["seeds"], row["status"]) for row in settings] == [("3", "0,1,2", "completed")]


def test_a_run_stopped_after_its_final_checkpoint_resumes_to_its_figures(tmp_path, data, compose_with):
    """A run stopped while drawing (its last.pt holds the final evaluation, its summary still says running)
    resumes without training and still writes its confusion matrix, samples and per-class accuracy."""
    overrides = ("model=lenet", "trainer.epochs=1", "trainer.batch_size=64", "trainer.progress=false",
                 "trainer.eval_batch_size=100", f"data.root={data}")
    whole = trainer.train(compose_with(*overrides), tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({**whole, "status": "running"}))
    for figure in ("confusion.png", "samples.png"):
        (tmp_path / figure).unlink()
    again = trainer.train(compose_with(*overrides, "trainer.resume=auto"), tmp_path)
    assert again["status"] == "completed" and again["steps"] == whole["steps"] == 4
    assert again["per_class_acc"] == whole["per_class_acc"]
    assert (tmp_path / "confusion.png").is_file() and (tmp_path / "samples.png").is_file()


@pytest.mark.parametrize("launcher, sbatch, stops", [("slurm", False, True), ("slurm", True, False),
                                                     ("submitit_local", False, False)])
def test_the_slurm_launcher_without_slurm_stops_in_one_line(tmp_path, monkeypatch, capsys, launcher, sbatch, stops):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="install cifarbench[slurm]")
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("cifarbench.conf", version_base="1.3"):
        config = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    if sbatch:
        (tmp_path / "sbatch").write_text("#!/bin/sh\n")
        (tmp_path / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    check = instantiate(config.hydra.callbacks.slurm_check)
    if not stops:
        check.on_multirun_start(config=config)
        return
    with pytest.raises(SystemExit) as stopped:
        check.on_multirun_start(config=config)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "error: hydra/launcher=slurm submits to SLURM, and this machine has none (no sbatch on PATH); to run the "
        "jobs here use hydra/launcher=submitit_local (one process per job, pip install 'cifarbench[slurm]') or "
        "hydra/launcher=parallel\n")
