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
import inspect
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig

log = logging.getLogger(__name__)
TRIAL_ENV = "CIFARBENCH_OPTUNA_TRIAL"  # the number of the job's trial in its study
STORAGE_FILE = "optuna.db"  # the study's SQLite file in the sweep folder, without hydra.sweeper.storage


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """Where the study lives: `storage` (`hydra.sweeper.storage`, an SQLAlchemy URL: `sqlite:///searches.db`),
    else an SQLite file `optuna.db` in the sweep folder (made absolute, so every job finds the same file)."""
    return storage or f"sqlite:///{Path(sweep_dir).resolve() / STORAGE_FILE}"


@functools.lru_cache(maxsize=4)
def open_storage(url: str):
    """The Optuna storage at `url`, opened once per process (opening an SQLite storage checks its schema,
    a large part of a small job's start): the sweeper and the trials it runs in its own process share it."""
    return require_optuna().storages.get_storage(url)


def require_optuna():
    """Optuna, imported; HydraException in one line when it is not installed."""
    try:
        import optuna
    except ImportError:
        raise HydraException("hydra/sweeper=optuna needs the optuna package (>= 4), which is not installed: "
                             "pip install 'cifarbench[search]' (or pip install optuna)") from None
    return optuna


def build(kind: str, choices: dict, spec) -> object:
    """The Optuna object `choices[spec.name]` built with the fields of `spec` that are set (not null). Raises
    HydraException, in one line, for another name or a field that class does not take."""
    arguments = {key: value for key, value in dict(spec or {}).items() if value is not None}
    name = arguments.pop("name")
    if name not in choices:
        raise HydraException(f"hydra.sweeper.{kind}.name={name!r}; choose one of {', '.join(choices)}")
    accepted = inspect.signature(choices[name]).parameters
    unknown = sorted(set(arguments) - set(accepted))
    if unknown:
        raise HydraException(f"hydra.sweeper.{kind}.{unknown[0]} does not apply to the {name} {kind}; it takes "
                             f"{', '.join(k for k in accepted if k != 'self')}")
    return choices[name](**arguments)


def make_pruner(spec):
    """An Optuna pruner from `hydra.sweeper.pruner`: `name` (`none`, never prunes; `median`:
    optuna.pruners.MedianPruner with n_startup_trials, n_warmup_steps, interval_steps; `successive_halving`:
    SuccessiveHalvingPruner with min_resource, reduction_factor; `hyperband`: HyperbandPruner with
    min_resource, max_resource, reduction_factor), the fields left null taking Optuna's defaults. Steps and
    resources are epochs (`epoch_step`). Raises HydraException (see `build`)."""
    optuna = require_optuna()
    return build("pruner", {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
                            "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                            "hyperband": optuna.pruners.HyperbandPruner}, spec)


def make_sampler(spec):
    """An Optuna sampler from `hydra.sweeper.sampler`: `name` (`tpe`, optuna.samplers.TPESampler, or
    `random`) and `seed`. Raises HydraException (see `build`)."""
    optuna = require_optuna()
    return build("sampler", {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}, spec)


def epoch_step(row: dict) -> int:
    """The step an evaluation is reported at: the whole epochs trained (metrics.csv's `epoch`, rounded
    down; an evaluation at a budget's end inside an epoch counts with the epoch before it)."""
    return int(row["epoch"] + 1e-9)


def row_objective(row: dict) -> float:
    """An evaluation's value of the objective (run.metrics.objective): its validation accuracy with a
    split, else its test accuracy (fractions)."""
    return row["val_acc"] if row["val_acc"] is not None else row["test_acc"]


def never_prunes(row: dict) -> bool:
    """The `on_evaluation` hook of a trial's DDP ranks other than 0: it reports nothing and never stops the
    run on its own (rank 0's verdict, shared by engine/loop.py, decides for all of them)."""
    return False


def trial_reporter(hydra_cfg: DictConfig, main_rank: bool = True) -> Callable[[dict], bool] | None:
    """The `on_evaluation` hook of a job an Optuna search launched (`TRIAL_ENV` set), else None: on the main
    rank it reports each evaluation's objective (`row_objective`) to the trial at its `epoch_step` and
    returns whether the study's pruner stops the trial there (Optuna's Trial.report and Trial.should_prune);
    on another rank (`main_rank` false) `never_prunes`, which opens no storage but still has the rank take
    part in agreeing on the verdict."""
    number = os.environ.get(TRIAL_ENV)
    if number is None:
        return None
    if not main_rank:
        return never_prunes
    optuna = require_optuna()
    sweeper = hydra_cfg.sweeper
    storage = open_storage(storage_url(sweeper.get("storage"), hydra_cfg.sweep.dir))
    study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=make_pruner(sweeper.pruner))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(sweeper.study_name),
                                                               int(number))
    trial = optuna.trial.Trial(study, trial_id)

    def report(row: dict) -> bool:
        value, step = row_objective(row), epoch_step(row)
        if math.isnan(value):  # a diverging run, which ends itself
            return False
        if step in storage.get_trial(trial_id).intermediate_values:
            return False  # (a second evaluation in one epoch: the first is its value)
        trial.report(value, step)
        if trial.should_prune():
            log.info("trial %s pruned by the search's pruner at epoch %d (objective %.4f)", number, step, value)
            return True
        return False

    return report
