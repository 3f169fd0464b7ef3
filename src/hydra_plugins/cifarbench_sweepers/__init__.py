"""cifarbench's Hydra sweepers, where Hydra looks for plugins (the `hydra_plugins` namespace package):
`hydra/sweeper=optuna` and `hydra/sweeper=successive_halving`, their fields and defaults stored in Hydra's
ConfigStore (so an unknown field is refused as Hydra refuses any). The work is done in cifarbench.search;
importing this module (Hydra imports every plugin at start) imports neither Optuna nor torch. (typing's
Optional and Dict, which OmegaConf's structured configs read; and no `from __future__ import annotations`:
Hydra runs this module before it is in sys.modules, where dataclasses look up string annotations.)"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore

from cifarbench.search.halving import SuccessiveHalvingSearch
from cifarbench.search.optuna_search import OptunaSearch


class OptunaSweeper(OptunaSearch):
    """hydra/sweeper=optuna: cifarbench.search.optuna_search.OptunaSearch."""


class SuccessiveHalvingSweeper(SuccessiveHalvingSearch):
    """hydra/sweeper=successive_halving: cifarbench.search.halving.SuccessiveHalvingSearch."""


@dataclass
class PrunerConf:
    """Which pruner stops bad trials (steps and resources are epochs); a field left null is Optuna's default."""
    name: str = "none"  # none | median | successive_halving | hyperband
    n_startup_trials: Optional[int] = None  # median: completed trials before any is pruned (Optuna: 5)
    n_warmup_steps: Optional[int] = None  # median: epochs a trial trains before it may be pruned (0)
    interval_steps: Optional[int] = None  # median: epochs between pruning checks (1)
    min_resource: Any = None  # successive_halving, hyperband: epochs before the first rung ("auto")
    max_resource: Any = None  # hyperband: the epochs of a full trial ("auto")
    reduction_factor: Optional[int] = None  # successive_halving, hyperband: η (4, 3)


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random
    seed: Optional[int] = None


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.cifarbench_sweepers.OptunaSweeper"
    direction: str = "maximize"
    study_name: str = "search"
    storage: Optional[str] = None  # an SQLAlchemy URL; None: sqlite:///<sweep dir>/optuna.db
    n_trials: int = 20
    n_jobs: int = 1
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    params: Dict[str, str] = field(default_factory=dict)


@dataclass
class SuccessiveHalvingSweeperConf:
    _target_: str = "hydra_plugins.cifarbench_sweepers.SuccessiveHalvingSweeper"
    eta: int = 3
    budget: str = "trainer.epochs"  # or trainer.budget_min
    min_budget: float = 1
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="cifarbench")
ConfigStore.instance().store(group="hydra/sweeper", name="successive_halving", node=SuccessiveHalvingSweeperConf,
                             provider="cifarbench")
