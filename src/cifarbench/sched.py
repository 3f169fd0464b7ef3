"""Learning-rate schedules as functions of training progress in [0, 1] → multiplier of the base lr.

Progress is steps done / total steps, or elapsed training time / budget when a wall-clock budget is
set (whichever is further), so a budgeted run anneals fully as its time runs out without anyone
guessing an epoch count. Milestones are therefore fractions of training, not epochs.
"""
from __future__ import annotations

import bisect
import math
from typing import Callable

from cifarbench.registry import Registry

Schedule = Callable[[float], float]
SCHEDULES = Registry("schedule")


def progress(step: int, total_steps: int, elapsed_s: float, budget_s: float = math.inf) -> float:
    """How far training is, in [0, 1]: by steps, or by the wall-clock budget if that is further."""
    return min(1.0, max(step / max(1, total_steps), elapsed_s / budget_s))


@SCHEDULES.register()
def constant() -> Schedule:
    return lambda p: 1.0


@SCHEDULES.register()
def multistep(milestones=(0.5, 0.75), gamma: float = 0.1) -> Schedule:
    """× gamma at each milestone (fractions of training)."""
    milestones = sorted(milestones)
    return lambda p: gamma ** bisect.bisect_right(milestones, p)


@SCHEDULES.register()
def step(every: float = 1 / 3, gamma: float = 0.1) -> Schedule:
    """× gamma every `every` of training: SPEC §5's ×0.1 at epochs 100 and 200 of 300 is every=1/3."""
    return multistep([every * k for k in range(1, math.ceil(1 / every))], gamma)


@SCHEDULES.register()
def cosine(final: float = 0.0) -> Schedule:
    """Half a cosine from 1 down to `final`."""
    return lambda p: final + (1 - final) * 0.5 * (1 + math.cos(math.pi * p))


@SCHEDULES.register()
def onecycle(peak: float = 0.25, initial: float = 0.0, final: float = 0.0) -> Schedule:
    """Linear from `initial` up to 1 at progress `peak`, then linear down to `final`."""
    def schedule(p: float) -> float:
        if p < peak:
            return initial + (1 - initial) * p / peak
        return 1 + (final - 1) * (p - peak) / max(1e-12, 1 - peak)

    return schedule


@SCHEDULES.register()
def inverse(k: float = 1.0) -> Schedule:
    """1 / (1 + k·progress): Keras' time-based `decay` d over N steps is k = d·N (SPEC §3: d = 1e-4)."""
    return lambda p: 1 / (1 + k * p)


def with_warmup(schedule: Schedule, warmup: float) -> Schedule:
    """Linear ramp over the first `warmup` fraction of training, multiplying `schedule`."""
    if warmup <= 0:
        return schedule
    return lambda p: schedule(p) * min(1.0, p / warmup)


def build_schedule(cfg) -> Schedule:
    fields = {k: v for k, v in cfg.items() if k not in ("name", "warmup")}
    return with_warmup(SCHEDULES.build(cfg.name, **fields), cfg.get("warmup") or 0.0)
