"""`hydra/sweeper=successive_halving`: successive halving over budgets (Jamieson & Talwalkar 2016,
"Non-stochastic best arm identification and hyperparameter optimization"; the rungs of Li et al. 2017,
Hyperband, with one bracket).

    cifarbench -m hydra/sweeper=successive_halving hydra.sweeper.eta=3 hydra.sweeper.min_budget=1 \\
        optim.lr=0.001,0.003,0.01 optim.weight_decay=0,5e-4,5e-3 data.val_split=5000

The configurations are the cartesian product of the command line's sweeps and `hydra.sweeper.params`
(as Hydra's basic sweeper makes them). Rung 0 trains every configuration to the end of `min_budget`
(of the config key `budget`: `trainer.epochs`, or `trainer.budget_min` in minutes); each rung keeps the
best ⌊n/η⌋ (at least one) by the objective the jobs return (run.metrics.objective; the first of equals)
and trains them again, from scratch, at η× the previous budget, until a rung of one configuration has
trained. Because schedules follow training progress (sched.py), every job anneals fully within its own
budget: a rung compares finished runs, not runs cut mid-schedule. 9 configurations with η = 3 are
9 + 3 + 1 jobs at budgets b, 3b, 9b; the report's rung table (report/rungs.py) lists each rung.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException

from cifarbench.search.sweeper import CifarbenchSweeper, cartesian, require_some_result

log = logging.getLogger(__name__)
BUDGETS = ("trainer.epochs", "trainer.budget_min")  # what a rung's budget may be


def rung_sizes(configurations: int, eta: int) -> list[int]:
    """How many configurations each rung trains: n, then ⌊n/η⌋ (at least one) until one (9, η=3: 9, 3, 1)."""
    sizes = [configurations]
    while sizes[-1] > 1:
        sizes.append(max(1, sizes[-1] // eta))
    return sizes


def configurations(overrides: list[Override], budget: str) -> list[list[str]]:
    """Every configuration (its overrides) a successive-halving sweep compares: the cartesian product of the
    parsed `overrides`' sweeps, in Hydra's basic sweeper's order. Raises HydraException when they set or
    sweep the budget key, which the sweeper sets itself."""
    if any(o.get_key_element().lstrip("+~") == budget for o in overrides):
        raise HydraException(f"successive halving sets {budget} itself (rung k trains min_budget · eta^k); "
                             f"leave it off the command line and set hydra.sweeper.min_budget instead")
    return cartesian(overrides)


def survivors(values: list[float], eta: int) -> list[int]:
    """The positions of the best ⌊len(values)/eta⌋ values (at least one), largest first, the earlier of
    equal values first: the configurations a rung promotes."""
    keep = max(1, len(values) // eta)
    return sorted(range(len(values)), key=lambda i: -values[i])[:keep]


def rung_budget(min_budget: float, eta: int, rung: int) -> int | float:
    """The budget of rung `rung` (0 first): min_budget · eta^rung, an int when it is whole (trainer.epochs)."""
    budget = min_budget * eta ** rung
    return int(budget) if float(budget).is_integer() else budget


def job_value(ret: JobReturn) -> float:
    """What a job returned (its objective), -inf when it raised or returned no finite number."""
    value = ret.return_value if ret.status == JobStatus.COMPLETED else None
    return float(value) if value is not None and math.isfinite(float(value)) else -math.inf


class SuccessiveHalvingSearch(CifarbenchSweeper):
    """Hydra sweeper `successive_halving` (hydra_plugins.cifarbench_sweepers.SuccessiveHalvingSweeper): see
    the module docstring. eta: the reduction factor (≥ 2); budget: the config key each rung sets;
    min_budget: rung 0's budget (epochs, or minutes for trainer.budget_min); params: more sweeps. Raises
    HydraException when the command line or params sweep or set the budget key itself, eta < 2, the
    budget is neither of BUDGETS, or every job of a rung failed."""

    def __init__(self, eta: int = 3, budget: str = "trainer.epochs", min_budget: float = 1,
                 params: dict | None = None):
        super().__init__(params)
        self.eta, self.budget, self.min_budget = eta, budget, min_budget

    def check(self):
        if self.eta < 2:
            raise HydraException(f"hydra.sweeper.eta={self.eta}; successive halving keeps 1/eta of each rung: "
                                 f"eta >= 2 (3 is usual)")
        if self.min_budget <= 0:
            raise HydraException(f"hydra.sweeper.min_budget={self.min_budget:g}; rung 0's budget must be positive")
        if self.budget not in BUDGETS:
            raise HydraException(f"hydra.sweeper.budget={self.budget}; choose {' or '.join(BUDGETS)} (what a "
                                 f"schedule runs over: each rung's runs anneal fully within it)")

    def sweep(self, arguments: list[str]) -> Any:
        compared = configurations(self.overrides(arguments), self.budget)
        self.check_job([*compared[0], f"{self.budget}={self.min_budget}"])  # (before the first job)
        self.open_sweep_dir()
        alive, job_idx, returns = list(range(len(compared))), 0, []
        for rung in range(len(rung_sizes(len(compared), self.eta))):
            budget = rung_budget(self.min_budget, self.eta, rung)
            jobs = [[*compared[i], f"{self.budget}={budget}"] for i in alive]
            log.info("successive halving: rung %d, %d configuration(s) at %s=%s", rung, len(jobs), self.budget, budget)
            # (not composed apart first, as Hydra's basic sweeper does, which doubles a small job's start: `--plan`
            # checks every job of the sweep before it runs)
            results = list(self.launcher.launch(jobs, initial_job_idx=job_idx))
            require_some_result(results, f"rung {rung}")
            job_idx, returns = job_idx + len(jobs), [*returns, results]
            alive = [alive[i] for i in survivors([job_value(ret) for ret in results], self.eta)]
        log.info("successive halving: %s won (objective %.4f at %s=%s)", " ".join(compared[alive[0]]),
                 job_value(results[0]), self.budget, budget)
        return returns
