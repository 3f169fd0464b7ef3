"""The real CLI, end to end, on a small synthetic CIFAR-10 in the official format."""
import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli
from omegaconf import OmegaConf
from PIL import Image

QUICK = ("trainer.epochs=1", "trainer.batch_size=32", "trainer.eval_batch_size=100", "trainer.progress=false")


def test_one_epoch_writes_metrics_curves_and_summary(tmp_path, fake_cifar_root):
    result = run_cli(*QUICK, "trainer.epochs=2", f"data.root={fake_cifar_root}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "step", "train_seconds", "lr", "train_loss", "train_acc", "test_loss",
                             "test_acc", "images_per_s", "val_loss", "val_acc"]
    assert {(r["val_loss"], r["val_acc"]) for r in rows} == {("", "")}  # no validation split: empty cells
    assert [float(r["epoch"]) for r in rows] == [1.0, 2.0]
    summary = json.loads((run / "summary.json").read_text())
    last = rows[-1]
    assert summary["status"] == "completed" and summary["stopped_by"] == "epochs"
    assert summary["final_test_acc"] == pytest.approx(float(last["test_acc"]))
    assert summary["best_test_acc"] == pytest.approx(max(float(r["test_acc"]) for r in rows))
    assert summary["selection"] == {"best_checkpoint": "test_acc", "objective": "final_test_acc"}
    assert "final_val_acc" not in summary
    assert summary["epochs"] == pytest.approx(float(last["epoch"]))
    assert summary["train_seconds"] == pytest.approx(float(last["train_seconds"]), abs=1e-3)
    assert summary["steps"] == int(last["step"]) == 2 * 7  # 200 images at batch 32: 6 full + 1 remainder
    assert summary["params"] == 1_632_080 and summary["device"].startswith("cpu")
    assert summary["config"]["model"]["name"] == "lenet" and summary["config"]["trainer"]["epochs"] == 2
    assert summary["command"].startswith("python -m cifarbench ") and "trainer.epochs=2" in summary["command"]
    assert set(summary["git"]) == {"revision", "dirty"}
    assert 0 <= summary["final_test_acc"] <= 1
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    with Image.open(run / "curves.png") as image:
        assert image.size[0] > 300 and image.size[1] > 200
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()


def test_budget_stops_training_and_still_evaluates(tmp_path, fake_cifar_root, compose_with):
    from cifarbench.trainer import train

    summary = train(compose_with(*QUICK, "trainer.epochs=1000", "trainer.budget_min=0.02",
                                 f"data.root={fake_cifar_root}"), tmp_path)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_by"] == "budget"
    assert 0 < summary["epochs"] < 1000 and summary["train_seconds"] >= 0.02 * 60
    assert summary["final_test_acc"] is not None


def test_unknown_model_lists_the_available_ones(tmp_path):
    result = run_cli("model=no_such_net", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "no_such_net" in result.stderr and "lenet" in result.stderr


def test_unknown_model_field_is_named(tmp_path, fake_cifar_root):
    result = run_cli(*QUICK, "+model.depth=3", f"data.root={fake_cifar_root}", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "model 'lenet' has no field(s) depth" in result.stdout + result.stderr


def test_missing_dataset_offline_says_where_to_put_it(tmp_path):
    result = run_cli("data.download=false", f"data.root={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "CIFAR-10 not found" in output and "cifar-10-python.tar.gz" in output
    assert "Traceback" not in output


CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("optim", "sched", "aug")


def group_entries(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def registry_rows() -> list[tuple[str, ...]]:
    """Overrides that together use every entry of every group and every preprocessing at least once
    (row i takes entry i of each, wrapping around), so a new entry is trained the day it is added."""
    from cifarbench.data import PREPROCESSES

    entries = {group: group_entries(group) for group in GROUPS}
    entries["data.preprocess"] = PREPROCESSES.names()
    rows = max(len(e) for e in entries.values())
    return [tuple(f"{group}={names[i % len(names)]}" for group, names in entries.items()) for i in range(rows)]


def test_every_registered_entry_has_a_config():
    from cifarbench.aug import AUGMENTS
    from cifarbench.optim import OPTIMIZERS
    from cifarbench.sched import SCHEDULES

    for group, registry in (("optim", OPTIMIZERS), ("sched", SCHEDULES), ("aug", AUGMENTS)):
        names = {OmegaConf.load(CONF / group / f"{entry}.yaml").get("name", entry) for entry in group_entries(group)}
        assert set(registry.names()) <= names, (group, set(registry.names()) - names)


@pytest.mark.parametrize("overrides", registry_rows(), ids=lambda o: ",".join(v.split("=")[1] for v in o))
def test_every_group_entry_trains(tmp_path, shared_fake_root, compose_with, overrides):
    from cifarbench.trainer import train

    cfg = compose_with(*QUICK, *overrides, "model=lenet5", "trainer.plots=none", f"data.root={shared_fake_root}")
    summary = train(cfg, tmp_path)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "nan" not in rows[1]
    assert summary["status"] == "completed"
    assert [summary["optim"], summary["config"]["sched"]["name"], summary["config"]["data"]["preprocess"]] == [
        cfg.optim.name, cfg.sched.name, cfg.data.preprocess]
