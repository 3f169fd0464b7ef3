"""cifarbench's Hydra sweepers, where Hydra looks for plugins (the `hydra_plugins` namespace package):
`hydra/sweeper=optuna` and `hydra/sweeper=successive_halving`, their fields and defaults stored in Hydra's
ConfigStore (so an unknown field is refused as Hydra refuses any). The work is done in cifarbench.search;
importing this module (Hydra imports every plugin at start) imports neither Optuna nor torch."""

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
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.cifarbench_sweepers.OptunaSweeper"
    direction: str = "maximize"
    study_name: str = "search"
    storage: Optional[str] = None  # an SQLAlchemy URL; None: sqlite:///<sweep dir>/optuna.db
    n_trials: int = 20
    n_jobs: int = 1
    sampler: Dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: Dict[str, Any] = field(default_factory=lambda: {"name": "none"})
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
