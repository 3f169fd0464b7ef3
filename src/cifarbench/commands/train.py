"""The training command: `cifarbench [OVERRIDE...]` (`python -m cifarbench`), a thin Hydra entry point
around `engine.loop.train`.

A job that fails records the failure in its summary.json (status "failed" and the error's first
line); inside a multirun the other jobs go on, a single run exits non-zero. An error the user
caused (a bad value, a bad checkpoint, data that cannot load) prints one line and exits 2; with
HYDRA_FULL_ERROR=1 it raises, traceback and all.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


log = logging.getLogger("cifarbench")
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"  # Hydra's default: jobs in this process


def pin_gpu(job_num: int | None):
    """On a box with several GPUs, job k of a (parallel) sweep trains on GPU k mod count."""
    import torch

    if job_num is not None and torch.cuda.device_count() > 1:
        torch.cuda.set_device(job_num % torch.cuda.device_count())


def user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message says all a user needs (a value, a file, a folder): shown as one line."""
    from cifarbench.run.checkpoint import CheckpointError
    from cifarbench.data import DatasetError
    from cifarbench.core.files import OutputError
    from cifarbench.core.registry import ConfigError

    return DatasetError, ConfigError, CheckpointError, OutputError


def tracebacks_wanted() -> bool:
    """Whether the user set HYDRA_FULL_ERROR=1 (`main` sets it for Hydra's sake, keeping the user's
    value in CIFARBENCH_FULL_ERROR)."""
    return os.environ.get("CIFARBENCH_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR")) == "1"


@hydra.main(version_base="1.3", config_path="pkg://cifarbench.conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """Train one job; returns the objective a Hydra sweeper maximises (`run.metrics.objective`): the final
    validation accuracy with `data.val_split`, else the final test accuracy (fractions); -inf for a job
    that failed or diverged, so it ranks last (never NaN, which Optuna refuses).
    A job of a sweep run again in its folder with `trainer.resume=auto` that completed there before is
    not trained again: its summary stays as it is and its objective is returned. A trial of an Optuna search
    (hydra/sweeper=optuna) that its pruner stops ends with status "pruned" and returns -inf."""
    from cifarbench.core.distributed import environment_ranks, process_group
    from cifarbench.engine.loop import exit_status, train
    from cifarbench.engine.resume import completed_run
    from cifarbench.run.background import in_background
    from cifarbench.run.layout import RunFolder
    from cifarbench.run.metrics import objective
    from cifarbench.run.recorder import record_ending, record_failure
    from cifarbench.search.trial import trial_reporter

    hydra_cfg = HydraConfig.get()
    run_dir, multirun = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    main_rank = environment_ranks()[0] == 0
    if not main_rank:  # one run, one writer: the other ranks of a DDP run log warnings only and write nothing
        logging.getLogger().setLevel(logging.WARNING)
    log.info("run folder: %s", run_dir)
    resume_hint = ("run the sweep's command again with trainer.resume=auto" if multirun else
                   f"resume with trainer.resume={RunFolder(run_dir).last}")
    # A single run looks for its config's newest run under the outputs folder; a job of a sweep in its own folder.
    outputs = None if multirun else Path(OmegaConf.select(cfg, "paths.output_dir", default="outputs"))
    config = None  # resolved below: an interpolation that cannot resolve is the user's override, one line
    try:
        config = resolved_config(cfg)
        if cfg.trainer.resume == "auto" and (done := completed_run(run_dir, config, outputs)):
            log.info("trainer.resume=auto: this job completed in %s before; skipped (its files are kept; "
                     "trainer.resume=null trains a new run)", done[0])
            return objective(done[1])
        # The jobs of a sweep run here one after another: the next one trains while these figures render.
        in_process = multirun and hydra_cfg.launcher._target_ == BASIC_LAUNCHER
        with process_group(cfg.trainer) as world, in_background(in_process):
            if world.size == 1:
                pin_gpu(hydra_cfg.job.get("num") if multirun else None)
            # A trial of an Optuna search reports each evaluation to its study, whose pruner may stop it (every
            # rank gets the hook, so that all take part in agreeing on the verdict; rank 0 alone calls it).
            summary = train(cfg, run_dir, trial_reporter(hydra_cfg) if multirun else None)
    except KeyboardInterrupt as e:  # a second stop signal (engine.loop.Interrupted), or Ctrl-C outside the loop
        signum = getattr(e, "signum", signal.SIGINT)
        if main_rank:
            record_ending(run_dir, "interrupted", stopped_by="interrupted", signal=signal.Signals(signum).name)
        log.warning("stopped at once by %s (no checkpoint at this step); %s", signal.Signals(signum).name,
                    resume_hint)
        sys.exit(exit_status(signum))
    except user_errors() as e:  # the message says it all
        log.error("%s", e)
        if main_rank:
            record_failure(run_dir, e, (config or {}) if multirun else None)
        if not multirun and tracebacks_wanted():
            raise
        if multirun:
            return -math.inf
        sys.exit(2)
    except Exception as e:
        if main_rank:
            record_failure(run_dir, e, (config or {}) if multirun else None)
        if not multirun:
            raise
        log.exception("job failed; the sweep goes on")
        return -math.inf
    finally:
        log.info("run folder: %s (the run's files)", run_dir)
    if summary.get("signal"):  # a stop signal ends a sweep too, with the shell's status for that signal
        if summary["status"] == "interrupted":
            log.warning("%s", resume_hint)
        sys.exit(exit_status(signal.Signals[summary["signal"]]))
    if summary["status"] == "diverged" and not multirun:
        sys.exit(1)
    return objective(summary)


def resolved_config(cfg: DictConfig) -> dict:
    """`cfg` resolved as plain dicts (core.config_diff.plain_config). Raises ConfigError, in one line naming
    the key, for an interpolation that cannot resolve (`'optim.lr=${oc.env:NO_SUCH_VAR}'`): only the
    user's overrides and configs can hold one (an OmegaConf error from inside training is a bug and keeps
    its traceback)."""
    from cifarbench.core.config_diff import plain_config
    from cifarbench.core.registry import ConfigError

    try:
        return plain_config(cfg)
    except OmegaConfBaseException as e:
        message = (str(e).strip().splitlines() or [""])[0].partition("raised while resolving interpolation: ")
        message = (message[2] or message[0]).strip("\"'")  # what failed, without OmegaConf's wrapping
        raise ConfigError(f"{getattr(e, 'full_key', None) or 'the config'} cannot be resolved: {message}; fix the "
                          f"override or set what it reads") from None


class SlurmCheck(Callback):
    """Registered in the root config: a multirun whose launcher submits to SLURM on a machine without
    SLURM (no `sbatch` on PATH) stops before any job with one line saying so and what to use here
    instead, rather than submitit's traceback. (Hydra turns a callback's exceptions into warnings, so it
    prints and exits 2 itself, as `errors_in_one_line` does.)"""

    def on_multirun_start(self, config: DictConfig, **kwargs):
        launcher = OmegaConf.select(config, "hydra.launcher._target_", default="") or ""
        if launcher.endswith(".SlurmLauncher") and shutil.which("sbatch") is None:
            print("error: hydra/launcher=slurm submits to SLURM, and this machine has none (no sbatch on PATH); "
                  "to run the jobs here use hydra/launcher=submitit_local (one process per job, "
                  "pip install 'cifarbench[slurm]') or hydra/launcher=parallel", file=sys.stderr)
            sys.exit(2)
