"""Run folders cannot collide or be refused: a per-process run id, job folder names under the limit."""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import cli_in_process

from cifarbench.run import naming
from cifarbench.run.naming import RUN_ID_ENV, run_id, short_name

QUICK = ("trainer.epochs=1", "data.train_subset=100", "data.test_subset=100", "trainer.batch_size=50",
         "trainer.eval_batch_size=100", "trainer.progress=False")  # as Hydra records it


@pytest.fixture
def fresh_run_id(monkeypatch):
    """run_id() as a new process would draw it, with $CIFARBENCH_RUN_ID unset unless the test sets it."""
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    run_id.cache_clear()
    yield
    run_id.cache_clear()


def test_short_name_keeps_short_names_and_cuts_long_ones_with_a_hash():
    assert short_name("model=lenet,optim.lr=0.1") == "model=lenet,optim.lr=0.1"
    assert short_name("data.root=/tmp/x") == "data.root=_tmp_x"  # one folder, not two
    long = ",".join(f"+notes.field_{k:02d}={'x' * 40}" for k in range(13))
    name = short_name(long)
    assert len(name.encode()) == naming.MAX_NAME_BYTES
    assert name == long[:109] + "-" + hashlib.sha1(long.encode()).hexdigest()[:10]
    assert short_name(long + "y") != name  # differing only past the cut: still two folders
    wide = short_name("é" * 100)  # 200 bytes; the cut may not split a character
    assert len(wide.encode()) <= naming.MAX_NAME_BYTES and wide.startswith("é" * 54 + "-")


def test_run_id_is_drawn_once_per_process(fresh_run_id):
    first = run_id()
    assert re.fullmatch(rf"{os.getpid()}-[0-9a-f]{{6}}", first) and run_id() == first
    run_id.cache_clear()
    assert run_id() != first  # another process (a fresh draw) gets another id


def test_run_id_env_var_is_shared_by_the_processes_that_set_it(fresh_run_id, monkeypatch):
    monkeypatch.setenv(RUN_ID_ENV, "job/42")
    assert run_id() == "job_42"


@pytest.mark.parametrize("chosen", [None, "shared-by-all-ranks"])
def test_the_run_and_sweep_folders_of_a_process_carry_its_run_id(fresh_run_id, monkeypatch, chosen):
    from hydra import compose, initialize_config_module

    if chosen:
        monkeypatch.setenv(RUN_ID_ENV, chosen)
    with initialize_config_module("cifarbench.conf", version_base="1.3"):
        folders = compose("config", overrides=["model=lenet_bn", "optim=adam"], return_hydra_config=True).hydra
        expected = chosen or run_id()
        assert folders.run.dir.endswith(f"_lenet_bn_adam_{expected}") and folders.sweep.dir.endswith(f"_{expected}")
        assert compose("config", return_hydra_config=True).hydra.run.dir.endswith(f"_lenet_sgd_{expected}")


def test_two_runs_started_together_get_two_folders(tmp_path, fake_cifar_root):
    env = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV} | {"OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-m", "cifarbench", *QUICK, "trainer.plots=none", f"optim.lr={lr}",
                              f"data.root={fake_cifar_root}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for lr in (0.01, 0.05)]
    for run in runs:
        _, errors = run.communicate(timeout=300)
        assert run.returncode == 0, errors
    folders = sorted((tmp_path / "outputs" / "runs").glob("*/*"))
    assert len(folders) == 2
    learning_rates = []
    for folder in folders:
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert f"optim.lr={summary['config']['optim']['lr']}" in overrides
        learning_rates.append(summary["config"]["optim"]["lr"])
    assert sorted(learning_rates) == [0.01, 0.05]


# Real overrides, written as Hydra records them; with QUICK and the swept lr, 21 (the one failing case seen).
RECIPE = ("trainer.eval_every=1", "data.download=False",
          "data.preprocess=meanstd", "model.hidden=120", "model.channels=[6,16]", "model.dropout=True",
          "optim.momentum=0.85", "optim.nesterov=False", "optim.weight_decay=0.0005", "sched.warmup=0.1",
          "aug.max_shift=2", "aug.pad_mode=reflect", "trainer.seed=12345", "trainer.label_smoothing=0.1")


def test_a_multirun_with_21_overrides_gets_short_job_folders(tmp_path, fake_cifar_root, monkeypatch):
    overrides = [*QUICK, *RECIPE, "optim.lr=0.01,0.05"]
    assert len(overrides) == 21 and len(",".join(overrides).encode()) > 400  # Hydra's plain name: over 255 bytes
    sweep = tmp_path / "sweep"
    assert cli_in_process(monkeypatch, "-m", *overrides, f"data.root={fake_cifar_root}", f"hydra.sweep.dir={sweep}") == 0
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name[:2] for p in jobs] == ["0_", "1_"]
    for job, lr in zip(jobs, ("0.01", "0.05")):
        assert len(job.name.encode()) <= 2 + naming.MAX_NAME_BYTES
        recorded = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert recorded == [*QUICK, *RECIPE, f"optim.lr={lr}", f"data.root={fake_cifar_root}"]  # all, in full
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed", summary.get("error")
        assert summary["config"]["optim"]["lr"] == float(lr) and summary["config"]["aug"]["pad_mode"] == "reflect"


# Every path in one place: conf/paths/default.yaml, read by interpolation ------------------------------
def test_paths_move_the_run_folders_the_datasets_and_the_mlflow_store(compose_with, monkeypatch, tmp_path):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from cifarbench.run.trackers import tracking_uri
    from cifarbench.validate import PATHS

    conf = Path(__file__).resolve().parents[2] / "conf" / "paths" / "default.yaml"
    assert list(OmegaConf.load(conf)) == list(PATHS.fields)  # each path declared once, and validated
    monkeypatch.setenv("CIFAR10_ROOT", "/env/root")
    monkeypatch.chdir(tmp_path)
    with initialize_config_module("cifarbench.conf", version_base="1.3"):
        default = compose("config", overrides=["logger=mlflow"], return_hydra_config=True)
        moved = compose("config", overrides=["logger=mlflow", "data=mnist", "paths.output_dir=/scratch/out",
                                             "paths.data_dir=/data"], return_hydra_config=True)
    assert default.hydra.run.dir.startswith("outputs/runs/") and default.hydra.sweep.dir.startswith("outputs/multirun/")
    assert (default.data.root, default.logger.mlflow.tracking_uri) == ("/env/root", "sqlite:///outputs/mlflow.db")
    # a relative SQLite store is made absolute from the current folder, as the null of old configs was
    assert tracking_uri(default.logger.mlflow.tracking_uri) == tracking_uri(None) == (
        f"sqlite:///{tmp_path.resolve() / 'outputs' / 'mlflow.db'}")
    assert moved.hydra.run.dir.startswith("/scratch/out/runs/") and moved.hydra.sweep.dir.startswith("/scratch/out/multirun/")
    assert (moved.data.root, moved.logger.mlflow.tracking_uri) == ("/data", "sqlite:////scratch/out/mlflow.db")
    assert tracking_uri(moved.logger.mlflow.tracking_uri) == "sqlite:////scratch/out/mlflow.db"
    own = compose_with("logger=mlflow", "paths.data_dir=/data", "data.root=/mine", "logger.mlflow.tracking_uri=http://h:5000")
    assert (own.data.root, own.logger.mlflow.tracking_uri) == ("/mine", "http://h:5000")  # a field's own value wins


def test_a_run_goes_under_paths_output_dir(tmp_path, fake_cifar_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_in_process(monkeypatch, *QUICK, "trainer.plots=none", f"paths.data_dir={fake_cifar_root}",
                          "paths.output_dir=elsewhere") == 0
    (folder,) = (tmp_path / "elsewhere" / "runs").glob("*/*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["config"]["data"]["root"] == str(fake_cifar_root)
    assert not (tmp_path / "outputs").exists()
