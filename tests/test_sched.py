"""Schedules are functions of training progress; progress follows steps or the wall-clock budget."""
import math

import pytest
from omegaconf import OmegaConf

from cifarbench.sched import build_schedule, progress


def schedule(**cfg):
    return build_schedule(OmegaConf.create(cfg))


def test_values_at_chosen_progress_points():
    assert schedule(name="constant")(0.7) == 1.0
    spec5 = schedule(name="step", every=1 / 3, gamma=0.1)  # SPEC §5: ×0.1 at epochs 100 and 200 of 300
    assert [spec5(e / 300) for e in (0, 99, 100, 199, 200, 299)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    multi = schedule(name="multistep", milestones=[0.5, 0.75], gamma=0.5)
    assert [multi(p) for p in (0.49, 0.5, 0.8)] == [1, 0.5, 0.25]
    cosine = schedule(name="cosine", final=0.1)
    assert [cosine(p) for p in (0, 0.5, 1)] == pytest.approx([1, 0.55, 0.1])
    one = schedule(name="onecycle", peak=0.2, initial=0.1, final=0.0)
    assert [one(p) for p in (0, 0.1, 0.2, 0.6, 1)] == pytest.approx([0.1, 0.55, 1, 0.5, 0])


def test_warmup_ramps_any_schedule():
    warm = schedule(name="cosine", final=0.0, warmup=0.1)
    assert warm(0.0) == 0 and warm(0.05) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert warm(0.5) == pytest.approx(0.5)


def test_progress_by_steps_or_budget():
    assert progress(50, 200, elapsed_s=1.0) == 0.25  # no budget: steps
    assert progress(50, 200, elapsed_s=30.0, budget_s=60.0) == 0.5  # the budget is further along
    assert progress(150, 200, elapsed_s=30.0, budget_s=60.0) == 0.75
    assert progress(10, 10_000, elapsed_s=60.0, budget_s=60.0) == 1.0  # reaches 1 at the budget
    assert progress(10, 10_000, elapsed_s=90.0, budget_s=60.0) == 1.0


def test_a_budgeted_run_anneals_to_its_final_lr(tmp_path, fake_cifar_root):
    """With a budget, the last logged lr sits near the schedule's end although epochs are far from done."""
    from conftest import run_cli

    result = run_cli("trainer.epochs=10000", "trainer.budget_min=0.05", "sched=cosine", "trainer.batch_size=16",
                     "trainer.progress=false", f"data.root={fake_cifar_root}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    last_lr = float((tmp_path / "metrics.csv").read_text().splitlines()[-1].split(",")[3])
    assert summary["stopped_by"] == "budget" and summary["epochs"] < 10000
    assert last_lr < 0.01 * 0.02  # under 2% of the base lr: the cosine ran (almost) to its end
