"""Multirun sweeps end in a leaderboard and plots; every study composes and runs in debug mode."""
import csv
import json
from pathlib import Path

import pytest
from helpers import cli_in_process, run_cli
from PIL import Image

CONF = Path(__file__).resolve().parents[2] / "conf"
QUICK = ("trainer.epochs=1", "trainer.batch_size=64", "trainer.eval_batch_size=100", "trainer.progress=false")


def test_two_by_two_multirun_writes_a_matching_leaderboard(tmp_path, fake_cifar_root, monkeypatch):
    """Under the joblib launcher (hydra/launcher=parallel, here one worker process; each job draws its own
    figures there); the in-process launcher's sweeps are tested all around."""
    assert cli_in_process(monkeypatch, "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=1",
                          "model=lenet,lenet_bn", "optim=sgd,adam", *QUICK, f"data.root={fake_cifar_root}",
                          f"hydra.sweep.dir={tmp_path}") == 0
    with open(tmp_path / "leaderboard_runs.csv") as f:
        board = list(csv.DictReader(f))
    assert len(board) == 4
    assert {row["run"] for row in board} == {f"model={m} optim={o}" for m in ("lenet", "lenet_bn") for o in ("sgd", "adam")}
    for row in board:
        summary = json.loads((Path(row["path"]) / "summary.json").read_text())
        for figure in ("curves.png", "confusion.png", "samples.png"):
            assert (Path(row["path"]) / figure).is_file()
        assert float(row["best_test_acc"]) == pytest.approx(summary["best_test_acc"])
        assert float(row["final_test_acc"]) == float(row["objective"]) == pytest.approx(summary["final_test_acc"])
        assert (row["model"], row["optim"], row["status"]) == (summary["model"], summary["optim"], "completed")
    accuracies = [float(row["objective"]) for row in board]  # no validation split: the final test accuracy
    assert accuracies == sorted(accuracies, reverse=True)
    with open(tmp_path / "leaderboard.csv") as f:
        settings = list(csv.DictReader(f))
    assert [(s["setting"], s["n"]) for s in settings] == [(r["run"], "1") for r in board]
    assert "final_test_acc_std" not in settings[0]  # one seed each: no spread, a column empty in every row
    leaderboard = (tmp_path / "leaderboard.md").read_text()
    assert leaderboard.count("\n") == 8  # header, rule, 4 settings, then the aggregate throughput after a blank line
    # 4 jobs × 1 epoch × 200 training images, over the wall time from the first job's start to the last one's end
    summaries = [json.loads(path.read_text()) for path in tmp_path.glob("*/summary.json")]
    wall = max(s["ended_at"] for s in summaries) - min(s["started_at"] for s in summaries)
    assert [s["train_images"] for s in summaries] == [200] * 4
    assert leaderboard.endswith(f"\nTogether: 4 completed run(s) trained 800 images in {wall:.1f} s of wall time "
                                f"(first start to last end): {800 / wall:,.1f} images/s.\n")
    for name in ("compare_time.png", "compare_epoch.png", "final_acc.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 300


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, fake_cifar_root, monkeypatch):
    """resnet_cifar at depth 21 cannot be built: that job fails, the other one still trains."""
    assert cli_in_process(monkeypatch, "-m", "model=resnet_cifar", "model.depth=20,21", *QUICK, "trainer.plots=none",
                          f"data.root={fake_cifar_root}", f"hydra.sweep.dir={tmp_path}") == 0
    board = {row["setting"]: row for row in csv.DictReader(open(tmp_path / "leaderboard.csv"))}
    assert board["model.depth=20"]["status"] == "completed"
    assert board["model.depth=21"]["status"] == "failed"
    assert "model.depth=21; it must be 6n+2" in board["model.depth=21"]["error"]


def test_report_on_failed_finished_and_killed_runs(tmp_path, fake_cifar_root, monkeypatch, capsys):
    assert cli_in_process(monkeypatch, *QUICK, "trainer.plots=none", f"data.root={fake_cifar_root}",
                          f"hydra.run.dir={tmp_path / 'good'}") == 0
    assert cli_in_process(monkeypatch, *QUICK, "trainer.plots=none", "trainer.device=tpu",
                          f"data.root={fake_cifar_root}", f"hydra.run.dir={tmp_path / 'bad'}") == 2
    killed = tmp_path / "killed"  # what a SIGKILLed run leaves: status running, a partial metrics.csv
    killed.mkdir()
    (killed / "summary.json").write_text(json.dumps({"status": "running", "model": "lenet"}))
    (killed / "metrics.csv").write_text((tmp_path / "good" / "metrics.csv").read_text())
    from cifarbench.commands.report import main as report

    capsys.readouterr()
    assert report([str(tmp_path)]) == 0
    board = {Path(row["path"]).name: row for row in csv.DictReader(open(tmp_path / "leaderboard_runs.csv"))}
    assert board["good"]["status"] == "completed" and "bad" not in board  # a refused command is no run (issue 26)
    assert board["killed"]["status"] == "incomplete" and board["killed"]["best_test_acc"] != ""
    assert board["good"]["objective"] == board["good"]["final_test_acc"]
    assert board["killed"]["objective"] == "-inf"  # ranked last
    assert list(board)[0] == "good"
    assert "| completed |" in capsys.readouterr().out


STUDIES = {study: CONF / "study" / study for study in ("tenminute", "chainer", "lenet_alexnet")}
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def experiment_jobs() -> list[tuple[str, tuple[str, ...]]]:
    """(label, overrides) of every job every experiment runs: one, or one per study variant."""
    jobs = []
    for experiment in EXPERIMENTS:
        study = STUDIES.get(experiment)
        for variant in sorted(p.stem for p in study.glob("*.yaml")) if study else [None]:
            extra = (f"study/{experiment}={variant}",) if variant else ()
            jobs.append((f"{experiment}-{variant}" if variant else experiment, (f"experiment={experiment}", *extra)))
    return jobs


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_a_study_sweeps_exactly_its_variants(study):
    from hydra import compose, initialize_config_module

    with initialize_config_module("cifarbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={study}"], return_hydra_config=True)
    listed = cfg.hydra.sweeper.params[f"study/{study}"].split(",")
    assert sorted(listed) == sorted(p.stem for p in STUDIES[study].glob("*.yaml")), "the sweep runs them all"


@pytest.mark.long
def test_every_experiment_job_runs_in_debug_mode(tmp_path, fake_cifar_root, compose_with, monkeypatch):
    """Each recipe, and each variant of each study, composes and trains under debug=quick (compile is
    tested apart on a tiny model: tests/engine/test_engine.py); the MNIST and Fashion-MNIST ones on fake files
    whose MD5s are patched into the registry."""
    from helpers import make_fake_mnist, with_md5s_of

    from cifarbench.data import idx
    from cifarbench.engine.loop import train

    for name, entry in (("MNIST", idx.MNIST), ("FASHION_MNIST", idx.FASHION_MNIST)):
        make_fake_mnist(fake_cifar_root / entry.folder, 64, 20)
        monkeypatch.setattr(idx, name, with_md5s_of(entry, fake_cifar_root / entry.folder))

    jobs = experiment_jobs()
    assert len(jobs) == len(EXPERIMENTS) - len(STUDIES) + sum(len(list(d.glob("*.yaml"))) for d in STUDIES.values())
    failed, reported = [], []
    for label, overrides in jobs:
        cfg = compose_with(*overrides, "debug=quick", "data.train_subset=32", "trainer.batch_size=16",
                           "data.test_subset=20", "trainer.eval_batch_size=20", "trainer.compile=false",
                           "trainer.plots=none",
                           f"data.root={fake_cifar_root}")
        summary = train(cfg, tmp_path / label)
        if summary["status"] != "completed" or not 0 <= summary["final_test_acc"] <= 1:
            failed.append((label, summary["status"], summary.get("error")))
        if cfg.reported is not None:  # a reproduced study's job: its published figures beside its own
            with open(tmp_path / label / "reported_vs_measured.csv") as f:
                (row,) = csv.DictReader(f)
            reported.append((float(row["reported_test_acc"]), float(row["measured_test_acc_mean"])))
            assert reported[-1] == (cfg.reported.test_acc, summary["final_test_acc"])
    assert not failed
    # (lenet_alexnet's one reported figure, AlexNet's on 1,000 CIFAR-10 images, is not per variant file)
    reproduced = [job for job in jobs if job[0].startswith(("tenminute-", "chainer-")) or job[0] in ("cnn10", "resnet34")]
    assert len(reported) == len(reproduced)


@pytest.mark.parametrize("launcher, plugin, target", [
    ("parallel", "hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_joblib_launcher"),
    ("slurm", "hydra_plugins.hydra_submitit_launcher", "hydra_plugins.hydra_submitit_launcher")])
def test_launcher_configs_compose(launcher, plugin, target):
    pytest.importorskip(plugin, reason=f"install cifarbench[{launcher}] to use hydra/launcher={launcher}")
    result = run_cli(f"hydra/launcher={launcher}", "--cfg", "hydra")
    assert result.returncode == 0, result.stderr
    assert f"_target_: {target}" in result.stdout


def test_jobs_per_device_sets_the_workers_and_pins_job_k_to_gpu_k_mod_count(monkeypatch):
    """Issue 28: hydra.launcher.n_jobs='${jobs_per_device:K}' runs K jobs per device at once (K × the GPUs; a
    CPU-only machine is one device); job k trains on GPU k mod count, so 8 jobs on 4 GPUs go 0, 1, 2, 3, 0, 1,
    2, 3 (2 per GPU), and one GPU (or none) pins nothing."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="install cifarbench[parallel]")
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from cifarbench.core.device import job_device, parallel_jobs
    from cifarbench.core.registry import ConfigError

    assert [job_device(k, 4) for k in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [job_device(k, 2) for k in range(3)] == [0, 1, 0]
    assert job_device(5, 1) is None and job_device(5, 0) is None and job_device(None, 4) is None
    assert (parallel_jobs(8, 1), parallel_jobs(8, 0), parallel_jobs(2, 4)) == (8, 8, 8)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match=r"jobs_per_device:.*: use a positive integer"):
            parallel_jobs(bad, 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with initialize_config_module("cifarbench.conf", version_base="1.3"):
        default, eight = (compose("config", overrides=["hydra/launcher=parallel", *extra], return_hydra_config=True)
                          for extra in ([], ["hydra.launcher.n_jobs=${jobs_per_device:8}"]))
        assert instantiate(default.hydra.launcher).joblib["n_jobs"] == 2 * 4
        assert instantiate(eight.hydra.launcher).joblib["n_jobs"] == 8 * 4


def test_a_sweeps_aggregate_images_per_second():
    """Two completed jobs side by side: 2 epochs × 500 images from t = 100 s to 110 s and 3 × 400 from 102 s to
    112 s: 2,200 images in 12 s = 183.3 images/s; a failed job and a job of an older version (no timestamps)
    count for nothing, and without a job that records them there is no line. (The real sweep's line:
    test_two_by_two_multirun_writes_a_matching_leaderboard.)"""
    from cifarbench.report.board import throughput
    from cifarbench.report.runs import Run
    from cifarbench.report.tables import throughput_line

    def job(status, **fields):
        return Run(Path(status), {"status": status, **fields}, [])

    runs = [job("completed", started_at=100.0, ended_at=110.0, epochs=2.0, train_images=500),
            job("completed", started_at=102.0, ended_at=112.0, epochs=3.0, train_images=400),
            job("failed", started_at=90.0, ended_at=200.0, epochs=1.0, train_images=500), job("completed", epochs=1.0)]
    assert throughput(runs) == {"jobs": 2, "images": 2200, "wall_seconds": 12.0, "images_per_s": 183.3}
    assert throughput_line(throughput(runs)) == (
        "\nTogether: 2 completed run(s) trained 2,200 images in 12.0 s of wall time (first start to last end): "
        "183.3 images/s.\n")
    assert throughput(runs[2:]) is None and throughput_line(None) == ""


def test_optuna_search_composes(monkeypatch, capsys):
    """Our sweeper (hydra_plugins.cifarbench_sweepers), found by Hydra in an editable install too, takes
    today's config; composing needs no Optuna (the search does). (The wheel's: tests/commands/test_install.py.)"""
    assert cli_in_process(monkeypatch, "hparams_search=lenet_optuna", "--cfg", "hydra") == 0
    printed = capsys.readouterr().out
    assert "_target_: hydra_plugins.cifarbench_sweepers.OptunaSweeper" in printed
    assert "direction: maximize" in printed and "optim.lr: tag(log, interval(1e-4, 3e-1))" in printed
