"""Reported vs measured: a study's published figures are data in its variant configs, and a report
puts them beside what the runs measured."""
import csv
import json
import statistics
from pathlib import Path

import pytest

from cifarbench.report import write_report
from cifarbench.run.studies import to_markdown

STUDY_JOBS = {  # composed overrides → (study, variant, reported test accuracy as a fraction)
    ("experiment=tenminute", "study/tenminute=lenet"): ("tenminute", "LeNet (baseline)", 0.68),
    ("experiment=tenminute", "study/tenminute=resnet_k24"): ("tenminute", "ResNet 24-layer", 0.80),
    ("experiment=chainer", "study/chainer=cnn"): ("chainer", "CNN", 1 - 0.1894),  # reported as 18.94% test error
    ("experiment=chainer", "study/chainer=resnet74_sd"): ("chainer", "ResNet-74 + stochastic depth", 1 - 0.0742),
    ("experiment=cnn10",): ("cnn10", "10-layer CNN", 0.9010),
    ("experiment=resnet34",): ("resnet34", "ResNet-34", 0.9561),
}


@pytest.mark.parametrize("overrides", list(STUDY_JOBS), ids=lambda o: o[-1].split("=")[-1])
def test_variant_configs_carry_the_published_figures(compose_with, overrides):
    reported = compose_with(*overrides).reported
    study, variant, accuracy = STUDY_JOBS[overrides]
    assert (reported.study, reported.variant) == (study, variant)
    assert reported.test_acc == pytest.approx(accuracy, abs=1e-9)


def test_plain_runs_report_nothing(compose_with):
    assert compose_with("model=resnet18").reported is None


# A study is one experiment file (conf/experiment/<study>.yaml) holding what all its variants share, and
# one file per variant (conf/study/<study>/<variant>.yaml) holding only that variant's difference.
CONF = Path(__file__).resolve().parents[2] / "conf"
SHARED = {  # study → what every variant composes to, declared once, in the experiment file
    "tenminute": {"trainer.budget_min": 10, "trainer.epochs": 1000, "reported.study": "tenminute",
                  "reported.hardware": "Keras on a Colab GPU"},
    "chainer": {"trainer.epochs": 300, "trainer.batch_size": 128, "data.preprocess": "mean", "sched.name": "step",
                "sched.every": pytest.approx(1 / 3), "sched.gamma": 0.1, "aug.name": "flip_shift",
                "reported.study": "chainer", "reported.epochs": 300, "reported.hardware": "Chainer on a GPU"},
    "lenet_alexnet": {"trainer.epochs": 20, "trainer.batch_size": 128, "optim.name": "adam", "aug.name": "none",
                      "reported": None},
}
OWN = {  # (study, variant) → some of what that variant's file says
    ("tenminute", "lenet"): {"model.name": "lenet", "optim.name": "sgd", "optim.lr": 0.01, "aug.name": "none",
                             "trainer.batch_size": 1024, "reported.variant": "LeNet (baseline)",
                             "reported.test_acc": 0.68, "reported.seconds_per_epoch": 4.1, "reported.epochs": 150},
    ("tenminute", "lenet_augment"): {"optim.name": "adam", "aug.name": "keras", "aug.rotation": 10.0,
                                     "aug.width_shift": 0.1, "aug.height_shift": 0.1, "aug.shear": 0.05,
                                     "aug.zoom": 0.1, "aug.horizontal_flip": True, "trainer.batch_size": 1024},
    ("tenminute", "lenet_bc"): {"aug.name": "flip_shift", "aug.mix": "bc", "trainer.batch_size": 128,
                                "reported.test_acc": 0.75, "reported.seconds_per_epoch": 30},
    ("tenminute", "deep_cnn_bc"): {"model.name": "deep_cnn", "aug.mix": "bc", "reported.epochs": 10},
    ("chainer", "cnn"): {"model.name": "chainer_cnn", "optim.name": "adam", "optim.lr": 0.001,
                         "reported.variant": "CNN", "reported.train_seconds": None},
    ("chainer", "resnet74"): {"model.name": "resnet74", "optim.name": "sgd", "optim.lr": 0.1, "optim.nesterov": False,
                              "reported.test_acc": 0.9194, "reported.train_seconds": 36000},
    ("lenet_alexnet", "mnist"): {"data.name": "mnist", "data.train_subset": None, "data.flip": False},
    ("lenet_alexnet", "mnist_50"): {"data.name": "mnist", "data.train_subset": 0.02},
    ("lenet_alexnet", "cifar10_1000"): {"data.name": "cifar10", "data.train_subset": 0.02},
}


def flat_keys(tree: dict, prefix: str = "") -> set[str]:
    return {k for key, value in tree.items() for k in (
        flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"})}


@pytest.mark.parametrize("study", sorted(SHARED))
def test_each_variant_holds_only_its_difference_and_composes_as_before(compose_with, study):
    from omegaconf import OmegaConf

    variants = sorted(p.stem for p in (CONF / "study" / study).glob("*.yaml"))
    assert len(variants) == {"tenminute": 16, "chainer": 5, "lenet_alexnet": 4}[study]
    assert {v for s, v in OWN if s == study} <= set(variants)
    for variant in variants:
        own = OmegaConf.to_container(OmegaConf.load(CONF / "study" / study / f"{variant}.yaml"))
        assert not flat_keys(own) & set(SHARED[study]), f"{variant} repeats what its experiment file declares"
        cfg = compose_with(f"experiment={study}", f"study/{study}={variant}")
        expected = {**SHARED[study], **OWN.get((study, variant), {})}
        assert {key: OmegaConf.select(cfg, key) for key in expected} == expected, variant


@pytest.mark.parametrize("overrides", [("experiment=lenet_alexnet", "study/lenet_alexnet=mnist_50"),
                                       ("experiment=tenminute", "study/tenminute=lenet")])
def test_debug_shrinks_a_study_variant(compose_with, overrides):
    """debug is the last overlay of the root defaults list: it wins over the experiment and its variant."""
    cfg = compose_with(*overrides, "debug=quick")
    assert (cfg.data.train_subset, cfg.data.test_subset, cfg.trainer.epochs, cfg.trainer.budget_min) == (
        256, 500, 1, 0.02)


def _run(folder, seed, accuracy, status="completed", reported=True, epochs=10.0, seconds=50.0, model="lenet"):
    config = {"model": {"name": model}, "trainer": {"seed": seed, "budget_min": 10},
              "reported": {"study": "tenminute", "variant": "LeNet (baseline)", "test_acc": 0.68,
                           "seconds_per_epoch": 4.1, "epochs": 150, "hardware": "Keras on a Colab GPU"}
              if reported else None}
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "status": status, "model": "lenet", "optim": "sgd", "final_test_acc": accuracy, "best_test_acc": accuracy,
        "epochs": epochs, "train_seconds": seconds, "device": "cpu:x86_64 (2 threads)", "config": config}))


def test_report_aggregates_seeds_beside_the_reported_figures(tmp_path):
    _run(tmp_path / "0_seed0", 0, 0.70, epochs=10.0, seconds=50.0)
    _run(tmp_path / "1_seed1", 1, 0.73, epochs=12.0, seconds=48.0)
    _run(tmp_path / "2_seed2", 2, 0.10, status="diverged")  # counted in status, not in the measured figures
    _run(tmp_path / "3_other", 0, 0.55, reported=False, model="lenet_bn")  # a setting without reported figures: no row
    write_report(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "reported_vs_measured.csv")))
    assert len(rows) == 1
    row = rows[0]
    assert (row["study"], row["variant"], row["n"]) == ("tenminute", "LeNet (baseline)", "2")
    assert float(row["reported_test_acc"]) == 0.68
    assert float(row["measured_test_acc_mean"]) == pytest.approx(0.715)
    assert float(row["measured_test_acc_std"]) == pytest.approx(statistics.stdev([0.70, 0.73]))
    assert float(row["delta_test_acc"]) == pytest.approx(0.035)
    # written to six significant digits: 0.715 − 0.68 is 0.03499999999999992 in floating point
    assert (row["measured_test_acc_mean"], row["delta_test_acc"]) == ("0.715", "0.035")
    assert float(row["measured_seconds_per_epoch"]) == pytest.approx((5.0 + 4.0) / 2)
    assert float(row["measured_epochs"]) == 11.0 and float(row["budget_min"]) == 10
    assert row["status"] == "completed, diverged" and row["measured_on"] == "cpu:x86_64 (2 threads)"
    table = (tmp_path / "reported_vs_measured.md").read_text()
    assert "| tenminute | LeNet (baseline) | 68.00% | 71.50 ± 2.12% (n=2) | +3.50 | 4.1 | 4.5 | 150 | 11 |" in table


def test_markdown_lists_notes_below_the_table():
    row = {"study": "cnn10", "variant": "10-layer CNN", "setting": "s", "reported_test_acc": 0.901,
           "measured_test_acc_mean": None, "measured_test_acc_std": None, "n": 0, "delta_test_acc": None,
           "reported_seconds_per_epoch": 54, "measured_seconds_per_epoch": None, "reported_epochs": 700,
           "measured_epochs": None, "reported_train_seconds": 43200, "measured_train_seconds": None,
           "budget_min": None, "reported_hardware": "Keras on a Colab GPU", "measured_on": None, "status": "failed",
           "note": "best validation accuracy"}
    lines = to_markdown([row]).splitlines()
    assert lines[2] == "| cnn10 | 10-layer CNN | 90.10% |  |  | 54 |  | 700 |  |  | Keras on a Colab GPU |  | failed |"
    assert lines[-1] == "- 10-layer CNN: best validation accuracy"


def test_reported_figures_are_metadata_a_resume_or_a_finished_job_may_differ_in():
    """A corrected published figure does not change what a step means: a run resumes under it and a
    completed sweep job is not trained again for it."""
    from cifarbench.run.setting import resume_conflicts, same_run

    old = {"trainer": {"lr": 0.1}, "reported": {"test_acc": 0.68, "note": None}}
    new = {"trainer": {"lr": 0.1}, "reported": {"test_acc": 0.69, "note": "corrected"}}
    assert resume_conflicts(old, new) == [] and same_run(old, new)
    assert resume_conflicts(old, {**new, "trainer": {"lr": 0.2}}) == ["trainer.lr: 0.1 → 0.2"]
