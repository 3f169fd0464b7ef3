"""Schedules: exact in integer steps at every milestone, ramps that never train at lr 0, and progress
that follows steps or the wall-clock budget."""
import math

import pytest
from omegaconf import OmegaConf

from cifarbench.core.registry import ConfigError
from cifarbench.sched import build_schedule, progress


def schedule(**cfg):
    return build_schedule(OmegaConf.create(cfg))


@pytest.mark.parametrize("total", [1000, 1234, 999, 7, 30])
@pytest.mark.parametrize("every, gamma", [(0.1, 0.1), (1 / 3, 0.1), (0.25, 0.5), (0.2, 0.1)])
def test_step_decays_by_gamma_k_from_step_k_every_total_on(total, every, gamma):
    """Seen: every=0.1 over 1000 steps gave 1e-2 at step 300 (should be 1e-3): float milestones.
    Here in integers: every = num/den, and step s (0-based) is past milestone k when s·den >= k·num·total."""
    num, den = {0.1: (1, 10), 1 / 3: (1, 3), 0.25: (1, 4), 0.2: (1, 5)}[every]
    lr = schedule(name="step", every=every, gamma=gamma)
    for s in range(total):
        k = sum(s * den >= j * num * total for j in range(1, den // num))
        assert lr(s, total) == gamma ** k, s


def test_the_issue_example_values():
    lr = schedule(name="step", every=0.1, gamma=0.1)
    assert [lr(s, 1000) for s in (0, 99, 100, 299, 300, 600, 700, 999)] == [
        1, 1, 0.1, 0.1 ** 2, 0.1 ** 3, 0.1 ** 6, 0.1 ** 7, 0.1 ** 9]


def test_values_at_chosen_steps():
    assert schedule(name="constant")(70, 100) == 1.0
    spec5 = schedule(name="step", every=1 / 3, gamma=0.1)  # study §5: ×0.1 at epochs 100 and 200 of 300
    assert [spec5(e, 300) for e in (0, 99, 100, 199, 200, 299)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    multi = schedule(name="multistep", milestones=[0.5, 0.75], gamma=0.5)
    assert [multi(s, 100) for s in (49, 50, 80)] == [1, 0.5, 0.25]
    cosine = schedule(name="cosine", final=0.1)
    assert [cosine(s, 100) for s in (0, 50, 100)] == pytest.approx([1, 0.55, 0.1])
    one = schedule(name="onecycle", peak=0.2, initial=0.1, final=0.0)  # the rise reads the end of the step
    assert [one(s, 100) for s in (0, 9, 19, 60, 100)] == pytest.approx([0.1 + 0.9 * 0.05, 0.55, 1, 0.5, 0])


@pytest.mark.parametrize("cfg", [dict(name="cosine", final=0.0, warmup=0.1),
                                 dict(name="onecycle", peak=0.25, initial=0.0, final=0.0),
                                 dict(name="constant", warmup=0.5)])
def test_a_ramp_first_step_trains_at_a_small_positive_lr(cfg):
    """Seen: warmup, and onecycle with initial 0, trained the first step at lr 0."""
    lr = schedule(**cfg)
    ramp = cfg.get("warmup") or cfg.get("peak")
    assert lr(0, 1000) == pytest.approx(1 / (ramp * 1000), rel=1e-3)
    assert 0 < lr(0, 1000) < lr(1, 1000)


def test_warmup_multiplies_the_decay_and_ends_at_its_fraction():
    warm = schedule(name="cosine", final=0.0, warmup=0.1)
    assert warm(49, 1000) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.049)))
    assert warm(500, 1000) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="sched.warmup=0.1: sched=onecycle ramps up by itself"):
        schedule(name="onecycle", warmup=0.1)


def test_progress_by_steps_or_budget():
    assert progress(50, 200, elapsed_s=1.0) == 0.25  # no budget: steps
    assert progress(50, 200, elapsed_s=30.0, budget_s=60.0) == 0.5  # the budget is further along
    assert progress(150, 200, elapsed_s=30.0, budget_s=60.0) == 0.75
    assert progress(10, 10_000, elapsed_s=60.0, budget_s=60.0) == 1.0  # reaches 1 at the budget
    assert progress(10, 10_000, elapsed_s=90.0, budget_s=60.0) == 1.0


def test_a_budgeted_run_anneals_towards_its_final_lr(tmp_path, fake_cifar_root, compose_with):
    """With a budget, the last logged lr sits near the schedule's end although epochs are far from done."""
    from cifarbench.engine.loop import train

    summary = train(compose_with("trainer.epochs=10000", "trainer.budget_min=0.05", "sched=cosine",
                                 "trainer.batch_size=16", "trainer.progress=false", "trainer.plots=none",
                                 f"data.root={fake_cifar_root}"), tmp_path)
    last_lr = float((tmp_path / "metrics.csv").read_text().splitlines()[-1].split(",")[3])
    assert summary["stopped_by"] == "budget" and summary["epochs"] < 10000
    assert last_lr < 0.01 * 0.05  # under 5% of the base lr: the cosine ran (almost) to its end
