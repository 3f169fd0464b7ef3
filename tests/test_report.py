"""Leaderboards over seeds and the value sweeps maximise."""
import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from PIL import Image

from cifarbench.report import find_runs, group_runs, mean_band, write_report
from cifarbench.runlog import objective

SETTINGS = {"optim.lr=0.001": ("optim.lr=0.001",), "optim.lr=0.003": ("optim.lr=0.003",)}
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("summary, value", [
    ({"status": "completed", "final_test_acc": 0.5, "best_test_acc": 0.6}, 0.5),  # final, never best-on-test
    ({"status": "completed", "final_test_acc": 0.5, "final_val_acc": 0.4,
      "selection": {"best_checkpoint": "val_acc", "objective": "final_val_acc"}}, 0.4),
    ({"status": "diverged", "final_test_acc": 0.5}, -math.inf),
    ({"status": "failed", "error": "ConfigError: ..."}, -math.inf),
    ({"status": "running", "final_test_acc": 0.5}, -math.inf),
    ({"status": "completed", "final_test_acc": math.nan}, -math.inf),
])
def test_the_objective_is_the_final_selection_accuracy_and_minus_inf_for_what_did_not_complete(summary, value):
    assert objective(summary) == value


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory, compose_with):
    """2 settings × 3 seeds of LeNet on the fake dataset with a validation split, laid out as a Hydra
    sweep (job folders with .hydra/overrides.yaml), trained in-process."""
    from conftest import make_fake_cifar

    from cifarbench.trainer import train

    base = tmp_path_factory.mktemp("seeds")
    root = make_fake_cifar(base / "data")
    sweep = base / "sweep"
    job = 0
    for overrides in SETTINGS.values():
        for seed in SEEDS:
            folder = sweep / str(job)
            job_overrides = [*overrides, f"trainer.seed={seed}"]
            train(compose_with(*job_overrides, "model=lenet", "optim=adam", "trainer.epochs=2", "trainer.batch_size=64",
                               "trainer.progress=false", "trainer.plots=none", "data.val_split=40",
                               f"data.root={root}"), folder)
            (folder / ".hydra").mkdir()
            (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(job_overrides))
            job += 1
    return sweep


def test_seeds_of_a_setting_form_one_row_with_their_spread(seed_sweep):
    write_report(seed_sweep)
    with open(seed_sweep / "leaderboard.csv") as f:
        board = list(csv.DictReader(f))
    with open(seed_sweep / "leaderboard_runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert sorted(row["setting"] for row in board) == sorted(SETTINGS) and len(runs) == 6
    for row in board:
        summaries = [json.loads((Path(r["path"]) / "summary.json").read_text())
                     for r in runs if r["run"] == row["setting"]]
        assert sorted(s["config"]["trainer"]["seed"] for s in summaries) == list(SEEDS)
        assert (row["n"], sorted(row["seeds"].split(","))) == ("3", ["0", "1", "2"])
        for key in ("final_test_acc", "final_val_acc"):
            values = [s[key] for s in summaries]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-12, abs=1e-15)
        assert float(row["objective"]) == pytest.approx(float(row["final_val_acc_mean"]), rel=1e-12)
        assert float(row["train_seconds_median"]) == statistics.median(s["train_seconds"] for s in summaries)
        to_50 = [next((r["train_seconds"] for r in run.rows if r["test_acc"] >= 0.5), math.inf)
                 for run in find_runs(seed_sweep) if run.overrides[0] == row["setting"]]
        assert row["seconds_to_50_median"] == ("" if math.isinf(statistics.median(to_50))
                                               else str(statistics.median(to_50)))
        assert row["status"] == "completed"
    assert [float(r["objective"]) for r in board] == sorted((float(r["objective"]) for r in board), reverse=True)
    assert "±" in (seed_sweep / "leaderboard.md").read_text()
    for name in ("compare_time.png", "compare_epoch.png"):
        with Image.open(seed_sweep / name) as image:
            assert image.size == (900, 500)
    assert (seed_sweep / "final_acc.png").is_file()


def test_the_band_is_the_mean_min_and_max_over_seeds(seed_sweep):
    (label, runs), _ = group_runs(find_runs(seed_sweep))
    assert len(runs) == 3
    xs, mean, low, high = mean_band(runs, "epoch")
    accuracies = [[r["test_acc"] for r in run.rows] for run in runs]
    assert xs == [1.0, 2.0]
    assert mean == [statistics.fmean(a) for a in zip(*accuracies)]
    assert (low, high) == ([min(a) for a in zip(*accuracies)], [max(a) for a in zip(*accuracies)])
