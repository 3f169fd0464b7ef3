"""Learning-rate schedules as functions of training progress in [0, 1] → multiplier of the base lr.

Progress is steps done / total steps, or elapsed training time / budget when a wall-clock budget is
set (whichever is further), so a budgeted run anneals fully as its time runs out.
"""
from __future__ import annotations

from typing import Callable

from cifarbench.registry import Registry

Schedule = Callable[[float], float]
SCHEDULES = Registry("schedule")


@SCHEDULES.register()
def constant() -> Schedule:
    return lambda progress: 1.0


def with_warmup(schedule: Schedule, warmup: float) -> Schedule:
    """Linear ramp from 0 over the first `warmup` fraction of training, then `schedule`."""
    if warmup <= 0:
        return schedule
    return lambda progress: schedule(progress) * min(1.0, progress / warmup)


def build_schedule(cfg) -> Schedule:
    fields = {k: v for k, v in cfg.items() if k not in ("name", "warmup")}
    return with_warmup(SCHEDULES.build(cfg.name, **fields), cfg.get("warmup") or 0.0)
