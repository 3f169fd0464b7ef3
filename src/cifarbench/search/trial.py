"""The job's side of an Optuna search (`hydra/sweeper=optuna`, search/optuna_search.py): the sweeper
names each job's trial in the job's environment (`TRIAL_ENV`, set through `hydra.job.env_set`), and the
job reports its objective to that trial at every evaluation and asks the study's pruner whether to go on.
The engine calls the reporter as a plain `on_evaluation(row) -> bool` (engine/loop.py), so it never
imports Optuna; this module imports it only inside the functions a search calls.

The study, its storage and its pruner are read from the job's Hydra config (`hydra.sweeper`), the same
config the sweeper was built from, so the job and the sweeper agree on them.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)
TRIAL_ENV = "CIFARBENCH_OPTUNA_TRIAL"  # the number of the job's trial in its study
STORAGE_FILE = "optuna.db"  # the study's SQLite file in the sweep folder, without hydra.sweeper.storage
PRUNERS = ("none", "median", "successive_halving", "hyperband")
SAMPLERS = ("tpe", "random")


def storage_url(sweeper: DictConfig, sweep_dir: str | Path) -> str:
    """Where the study lives: `hydra.sweeper.storage` (an SQLAlchemy URL: `sqlite:///searches.db`), else
    an SQLite file `optuna.db` in the sweep folder (made absolute, so every job finds the same file)."""
    return sweeper.get("storage") or f"sqlite:///{Path(sweep_dir).resolve() / STORAGE_FILE}"


@functools.lru_cache(maxsize=4)
def open_storage(url: str):
    """The Optuna storage at `url`, opened once per process (opening an SQLite storage checks its schema,
    a large part of a small job's start): the sweeper and the trials it runs in its own process share it."""
    import optuna

    return optuna.storages.get_storage(url)


def make_pruner(spec: DictConfig | dict | None):
    """An Optuna pruner from `hydra.sweeper.pruner`: `name` (one of PRUNERS; `none` never prunes) and the
    pruner's own arguments (`median`: optuna.pruners.MedianPruner's n_startup_trials, n_warmup_steps,
    interval_steps; `successive_halving`: SuccessiveHalvingPruner's min_resource, reduction_factor;
    `hyperband`: HyperbandPruner's min_resource, max_resource, reduction_factor). Steps and resources are
    epochs (`epoch_step`). Raises ValueError for another name."""
    import optuna

    arguments = dict(spec or {})
    name = arguments.pop("name", "none")
    pruners = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
               "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
               "hyperband": optuna.pruners.HyperbandPruner}
    if name not in pruners:
        raise ValueError(f"hydra.sweeper.pruner.name={name!r}; choose one of {', '.join(PRUNERS)}")
    return pruners[name](**arguments)


def make_sampler(spec: DictConfig | dict | None):
    """An Optuna sampler from `hydra.sweeper.sampler`: `name` (`tpe`, the default, or `random`) and its
    arguments (`seed`, ...). Raises ValueError for another name."""
    import optuna

    arguments = dict(spec or {})
    name = arguments.pop("name", "tpe")
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    if name not in samplers:
        raise ValueError(f"hydra.sweeper.sampler.name={name!r}; choose one of {', '.join(SAMPLERS)}")
    return samplers[name](**arguments)


def epoch_step(row: dict) -> int:
    """The step an evaluation is reported at: the whole epochs trained (metrics.csv's `epoch`, rounded
    down; an evaluation at a budget's end inside an epoch counts with the epoch before it)."""
    return int(row["epoch"] + 1e-9)


def row_objective(row: dict) -> float:
    """An evaluation's value of the objective (run.metrics.objective): its validation accuracy with a
    split, else its test accuracy (fractions)."""
    return row["val_acc"] if row["val_acc"] is not None else row["test_acc"]


def trial_reporter(hydra_cfg: DictConfig) -> Callable[[dict], bool] | None:
    """The `on_evaluation` hook of a job an Optuna search launched (`TRIAL_ENV` set), else None: it
    reports each evaluation's objective (`row_objective`) to the trial at its `epoch_step` and returns
    whether the study's pruner stops the trial there (Optuna's Trial.report and Trial.should_prune)."""
    number = os.environ.get(TRIAL_ENV)
    if number is None:
        return None
    import optuna

    sweeper = hydra_cfg.sweeper
    storage = open_storage(storage_url(sweeper, hydra_cfg.sweep.dir))
    study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=make_pruner(sweeper.pruner))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(sweeper.study_name),
                                                               int(number))
    trial = optuna.trial.Trial(study, trial_id)

    def report(row: dict) -> bool:
        value, step = row_objective(row), epoch_step(row)
        if value != value:  # NaN: a diverging run, which ends itself
            return False
        if step in storage.get_trial(trial_id).intermediate_values:
            return False  # (a second evaluation in one epoch: the first is its value)
        trial.report(value, step)
        if trial.should_prune():
            log.info("trial %s pruned by the search's pruner at epoch %d (objective %.4f)", number, step, value)
            return True
        return False

    return report
