"""`hydra/sweeper=optuna`: an Optuna (≥ 4) search through its ask-and-tell interface, each trial a job of
the chosen launcher (Hydra's basic one runs them here, one after another; `hydra/launcher=parallel` runs
`n_jobs` at once).

    cifarbench hparams_search=lenet_optuna data.val_split=5000 hydra.sweep.dir=outputs/search

The search space is `hydra.sweeper.params` and the command line's sweeps, in Hydra's override syntax:
`interval(a, b)` (uniform; `tag(log, interval(a, b))` log-uniform; integers when both ends are),
`range(a, b[, step])` (integers, or floats with a float step) and `a,b,c` / `choice(a, b, c)`
(categorical); the command line's other overrides hold in every trial. Each batch asks the study for
`n_jobs` trials, launches them as jobs, and tells it each job's result: the value the job returns (the
objective, run.metrics.objective; for a job that failed or diverged the worst value, -inf, or +inf
under `direction=minimize`, so that it is never the best trial), `pruned`
when the trial's pruner stopped it (its summary.json says so; search/trial.py), `fail` when the job
raised. Job k of the sweep is trial k of the study, in a folder `k_<overrides>`.

The study lives in SQLite, `optuna.db` in the sweep folder, or where `hydra.sweeper.storage` says
(any SQLAlchemy URL): the same command run again with the same `hydra.sweep.dir` (or storage and
`study_name`) loads it and runs trials until `n_trials` have finished in it, numbered on from the last;
a trial a killed search left running is marked failed and its parameters are asked again first. A
seeded sampler is seeded with seed + the trials the study already holds, so that a rerun does not draw
the first run's points again.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import OmegaConf

from cifarbench.run.layout import RunFolder
from cifarbench.search.sweeper import CifarbenchSweeper, job_error, require_some_result
from cifarbench.search.trial import TRIAL_ENV, make_pruner, make_sampler, open_storage, require_optuna, storage_url

log = logging.getLogger(__name__)


def distribution(override: Override):
    """The Optuna distribution of one sweep override: IntervalSweep → FloatDistribution (IntDistribution when
    both ends are integers; `log` tag: log scale), RangeSweep → IntDistribution (FloatDistribution with a
    float step), ChoiceSweep and a,b,c → CategoricalDistribution of the values as override text. Raises
    HydraException for another kind of sweep (a shuffled range)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, IntervalSweep):
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    if isinstance(value, RangeSweep) and not value.shuffle:
        step = value.step if value.step is not None else 1
        if all(isinstance(v, int) for v in (value.start, value.stop, step)):  # range's stop is excluded
            return IntDistribution(value.start, value.stop - 1, step=step, log=log_scale)
        return FloatDistribution(value.start, value.stop - step, step=step, log=log_scale)
    if isinstance(value, ChoiceSweep) or override.is_discrete_sweep():
        return CategoricalDistribution(list(override.sweep_string_iterator()))
    raise HydraException(f"the Optuna sweeper cannot search {override.input_line}: use interval(...), range(...), "
                         f"choice(...) or a,b,c")


def finished(study) -> int:
    """The trials of `study` that count towards n_trials: completed, pruned or failed, but not those a killed
    search left running (failed, and asked again as a trial whose user attribute `retry_of` names them)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return sum(1 for t in trials if t.state.is_finished() and t.number not in retried)


def requeue_interrupted(study) -> int:
    """Trials left running by a search that was killed: each told failed and its parameters queued to be
    asked again first (user attribute `retry_of`: its number). Returns how many."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for frozen in stale:
        study.tell(frozen.number, state=TrialState.FAIL)
        study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})
    return len(stale)


def worst(direction: str) -> float:
    """The worst value a study of `direction` ("maximize" or "minimize") can be told: -inf, or +inf when it
    minimises. Raises HydraException, in one line, for another direction."""
    if direction not in ("maximize", "minimize"):
        raise HydraException(f"hydra.sweeper.direction={direction!r}; choose maximize (the objective is an "
                             f"accuracy) or minimize")
    return -math.inf if direction == "maximize" else math.inf


def outcome(ret: JobReturn, direction: str = "maximize") -> tuple[str, float | None]:
    """(state, value) to tell a study of `direction` of a finished job: ("pruned", None) when its summary.json
    says it was pruned; ("complete", what it returned), where the -inf a job that failed, diverged or did not
    finish returns (any value that is not finite) becomes the worst value for the direction (`worst`: -inf
    when maximising, +inf when minimising), which the sampler learns from where a failed trial it would
    ignore, and which never makes it the best trial; ("fail", None) when the job raised or returned no number."""
    folder = RunFolder(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else None
    summary = (folder.read_summary() if folder else None) or {}
    if summary.get("status") == "pruned":
        return "pruned", None
    value = ret.return_value if ret.status == JobStatus.COMPLETED else None
    if value is None or math.isnan(float(value)):
        return "fail", None
    return "complete", float(value) if math.isfinite(float(value)) else worst(direction)


class OptunaSearch(CifarbenchSweeper):
    """Hydra sweeper `optuna` (hydra_plugins.cifarbench_sweepers.OptunaSweeper): see the module docstring.

    direction: "maximize" (the objective is an accuracy) or "minimize"; study_name: the study in its
    storage; storage: an SQLAlchemy URL, None for optuna.db in the sweep folder; n_trials: finished trials
    the study should hold when the search ends (a rerun runs the rest); n_jobs: trials per batch (launched
    together); sampler: {name: tpe|random, seed}; pruner: {name: none|median|successive_halving|hyperband,
    its arguments} (search/trial.py `make_pruner`; steps are epochs); params: the search space."""

    def __init__(self, direction: str = "maximize", study_name: str = "search", storage: str | None = None,
                 n_trials: int = 20, n_jobs: int = 1, sampler: dict | None = None, pruner: dict | None = None,
                 params: dict | None = None):
        super().__init__(params)
        self.direction, self.study_name, self.n_trials, self.n_jobs = direction, study_name, n_trials, n_jobs
        self.storage, self.sampler, self.pruner = storage, dict(sampler or {}), pruner

    def check(self):
        worst(self.direction)  # (a direction Optuna does not know: one line, at once)

    def sweep(self, arguments: list[str]) -> Any:
        optuna = require_optuna()
        sampler, pruner = make_sampler(self.sampler), make_pruner(self.pruner)  # (a bad field: one line, at once)
        overrides = {o.get_key_element(): o for o in self.overrides(arguments)}
        space = {key: distribution(o) for key, o in overrides.items() if o.is_sweep_override()}
        fixed = [o.input_line for o in overrides.values() if not o.is_sweep_override()]
        self.check_job(fixed)  # (what every trial shares, before the first)
        sweep_dir = self.open_sweep_dir()
        if not OmegaConf.select(self.config, "data.val_split", default=0):
            log.warning("the search maximises the final test accuracy: hold out data.val_split=N images so that "
                        "no choice reads the test set")
        url = storage_url(self.storage, sweep_dir)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name=self.study_name, storage=open_storage(url), sampler=sampler,
                                    pruner=pruner, direction=self.direction, load_if_exists=True)
        held = len(study.get_trials(deepcopy=False))
        if held and self.sampler.get("seed") is not None:  # else a rerun draws again what the first drew
            study.sampler = make_sampler({**self.sampler, "seed": self.sampler["seed"] + held})
        requeued, done = requeue_interrupted(study), finished(study)
        log.info("optuna: study %r in %s: %d trial(s) finished before%s; %d to run, %d at a time", self.study_name,
                 url, done, f", {requeued} interrupted (asked again)" if requeued else "",
                 max(0, self.n_trials - done), self.n_jobs)
        returns = []
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            jobs = [[*fixed, *(f"{key}={value}" for key, value in trial.params.items()),
                     f"+hydra.job.env_set.{TRIAL_ENV}={trial.number}"] for trial in trials]
            # (not validated apart, as Hydra's basic sweeper does: a batch of one would be composed twice)
            results = self.launch(jobs, [trial.number for trial in trials])
            for trial, ret in zip(trials, results):
                state, value = outcome(ret, self.direction)
                study.tell(trial, value, state=optuna.trial.TrialState[state.upper()])
                error = job_error(ret)
                log.info("trial %d: %s%s%s", trial.number, state, f" {value:.4f}" if value is not None else "",
                         f" ({error})" if error else "")
            done += len(trials)
            returns.append(results)
        require_some_result([ret for results in returns for ret in results], "this search")
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if completed:
            log.info("optuna: best trial %d: %.4f with %s", study.best_trial.number, study.best_value,
                     " ".join(f"{k}={v}" for k, v in study.best_params.items()))
        return returns

    def launch(self, jobs: list[list[str]], numbers: list[int]) -> list[JobReturn]:
        """The jobs of one batch through the launcher, job k of the sweep being trial k: together when the
        trials' numbers follow each other (one process asks them), else one by one."""
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(jobs, initial_job_idx=numbers[0]))
        return [ret for job, number in zip(jobs, numbers)
                for ret in self.launcher.launch([job], initial_job_idx=number)]
