"""Learning-rate schedules: a multiplier of the base lr for each training step.

A schedule is a function of training progress in [0, 1]: steps done / total steps, kept as an exact
`Fraction`, or elapsed training time / budget when a wall-clock budget is set (whichever is further),
so a budgeted run anneals fully as its time runs out without anyone guessing an epoch count.
Milestones are fractions of training, compared exactly: `sched=step every=0.1` over 1000 steps
multiplies by gamma**k from step 100·k on, for every k and every total.

Decays read the progress at the start of the step; ramps (warm-up, one-cycle's rise) read it at the
end of the step, so a warm-up's first step trains at a small positive lr, never at 0.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from cifarbench.core.registry import ConfigError, Registry

Progress = float | Fraction
SCHEDULES = Registry("schedule")


def exact(fraction: float) -> Fraction:
    """A config's float fraction (0.1, 1/3) as the exact fraction it stands for."""
    return Fraction(fraction).limit_denominator(1_000_000)


def progress(step: int, total_steps: int, elapsed_s: float = 0.0, budget_s: float = math.inf) -> Progress:
    """How far training is, in [0, 1]: by steps (exact), or by the wall-clock budget if that is further."""
    by_steps = Fraction(min(step, total_steps), max(1, total_steps))
    if budget_s == math.inf:
        return by_steps
    return min(1, max(by_steps, elapsed_s / budget_s))


@dataclass(frozen=True)
class Schedule:
    """`decay(p)` times a linear ramp from `ramp_from` to 1 over the first `ramp` of training."""
    decay: Callable[[Progress], float]
    ramp: float = 0.0
    ramp_from: float = 0.0

    def __call__(self, step: int, total_steps: int, elapsed_s: float = 0.0, budget_s: float = math.inf) -> float:
        """The lr multiplier for step `step` (0-based) of `total_steps`."""
        scale = self.decay(progress(step, total_steps, elapsed_s, budget_s))
        if self.ramp > 0:
            done = progress(step + 1, total_steps, elapsed_s, budget_s)
            scale *= self.ramp_from + (1 - self.ramp_from) * min(1, float(done) / self.ramp)
        return scale


@SCHEDULES.register()
def constant() -> Schedule:
    return Schedule(lambda p: 1.0)


@SCHEDULES.register()
def multistep(milestones=(0.5, 0.75), gamma: float = 0.1) -> Schedule:
    """× gamma at each milestone (fractions of training)."""
    marks = sorted(exact(m) for m in milestones)
    return Schedule(lambda p: gamma ** bisect.bisect_right(marks, p))


@SCHEDULES.register()
def step(every: float = 1 / 3, gamma: float = 0.1) -> Schedule:
    """× gamma every `every` of training: study §5's ×0.1 at epochs 100 and 200 of 300 is every=1/3."""
    every = exact(every)
    return multistep([every * k for k in range(1, math.ceil(1 / every))], gamma)


@SCHEDULES.register()
def cosine(final: float = 0.0) -> Schedule:
    """Half a cosine from 1 down to `final`."""
    return Schedule(lambda p: final + (1 - final) * 0.5 * (1 + math.cos(math.pi * p)))


@SCHEDULES.register()
def onecycle(peak: float = 0.25, initial: float = 0.0, final: float = 0.0) -> Schedule:
    """Linear from `initial` up to 1 at progress `peak`, then linear down to `final` (airbench94's
    triangle is peak 0.23, initial 0.2, final 0.07)."""
    return Schedule(lambda p: 1 + (final - 1) * max(0.0, float(p) - peak) / max(1e-12, 1 - peak), peak, initial)


@SCHEDULES.register()
def inverse(k: float = 1.0) -> Schedule:
    """1 / (1 + k·progress): Keras' time-based `decay` d over N steps is k = d·N (study §3: d = 1e-4)."""
    return Schedule(lambda p: 1 / (1 + k * p))


def build_schedule(cfg) -> Schedule:
    """The `sched=` config as a Schedule; `sched.warmup` adds a linear warm-up from 0 over that fraction.

    Raises ConfigError for an unknown name or field, or a warm-up on a schedule that ramps by itself.
    """
    fields = {k: v for k, v in cfg.items() if k not in ("name", "warmup")}
    schedule = SCHEDULES.build(cfg.name, **fields)
    warmup = cfg.get("warmup") or 0.0
    if warmup and schedule.ramp:
        raise ConfigError(f"sched.warmup={warmup}: sched={cfg.name} ramps up by itself (its peak); leave warmup at 0")
    return Schedule(schedule.decay, warmup, 0.0) if warmup else schedule
