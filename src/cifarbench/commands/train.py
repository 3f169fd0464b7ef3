"""The training command: `cifarbench [OVERRIDE...]` (`python -m cifarbench`), a thin Hydra entry point
around `engine.loop.train`.

A job that fails records the failure in its summary.json (status "failed" and the error's first
line); inside a multirun the other jobs go on, a single run exits non-zero. An error the user
caused (a bad value, a bad checkpoint, data that cannot load) prints one line and exits 2; with
HYDRA_FULL_ERROR=1 it raises, traceback and all. A run a signal stopped exits with 128 + the signal's
number; under a submitit launcher a preempted job is handed back to submitit to be requeued, and the
requeued job resumes in its folder (`requeue`, `resume_if_requeued`).
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
    """On a box with several GPUs, job k of a (parallel) sweep trains on GPU k mod count (core/device.py
    `job_device`): its current CUDA device, set before the job touches CUDA, which `trainer.device=cuda` means."""
    import torch

    from cifarbench.core.device import job_device

    device = job_device(job_num, torch.cuda.device_count())
    if device is not None:
        torch.cuda.set_device(device)


def resume_hint(hydra_cfg, run_dir: Path, multirun: bool) -> str:
    """How to carry on a stopped run, with the command to paste. A job of a sweep: the sweep's own command
    (its overrides as its multirun.yaml records them: the sweep's values, not this job's) in the same sweep
    folder (`hydra.sweep.dir`, so its jobs find their folders) with `trainer.resume=auto`, which skips the
    completed jobs, resumes the stopped ones and runs those never started. A single run: its command with
    `trainer.resume=` its last.pt, or, when none was written yet, the same command again."""
    import yaml

    from cifarbench.report.runs import sweep_of
    from cifarbench.run.layout import RunFolder
    from cifarbench.run.provenance import command_line
    from cifarbench.run.recorder import resume_override

    def kept(overrides) -> list[str]:
        return [o for o in overrides if not o.lstrip("+~").startswith(("trainer.resume=", "hydra.sweep.dir=",
                                                                        "hydra.mode="))]

    if multirun:
        sweep = sweep_of(run_dir) or run_dir.parent  # the folder holding multirun.yaml
        try:
            overrides = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["overrides"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            return f"run the sweep's command again with hydra.sweep.dir={sweep} trainer.resume=auto"
        hydra_overrides = overrides.get("hydra") or []
        argv = [*(["-m"] if "hydra.mode=MULTIRUN" in hydra_overrides else []), *kept(hydra_overrides),
                *kept(overrides.get("task") or []), f"hydra.sweep.dir={sweep}", "trainer.resume=auto"]
        return ("to finish the sweep, run its command again in its folder with trainer.resume=auto: "
                + command_line(argv))
    folder, command = RunFolder(run_dir), kept(hydra_cfg.overrides.task)
    if not folder.last.is_file():
        return f"no checkpoint was written yet; to start again: {command_line(command)}"
    return f"resume with {resume_override(folder)}: {command_line([*command, resume_override(folder)])}"


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
    from cifarbench.engine.loop import exit_status, stop_status, train
    from cifarbench.engine.resume import completed_run
    from cifarbench.run.background import in_background
    from cifarbench.run.layout import RunFolder
    from cifarbench.run.metrics import objective
    from cifarbench.run.recorder import record_ending, record_failure
    from cifarbench.search.trial import trial_reporter

    hydra_cfg = HydraConfig.get()
    run_dir, multirun = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    if hydra_cfg.job.chdir:
        typed_paths_absolute(cfg, hydra_cfg.runtime.cwd)
    main_rank = environment_ranks()[0] == 0
    if not main_rank:  # one run, one writer: the other ranks of a DDP run log warnings only and write nothing
        logging.getLogger().setLevel(logging.WARNING)
    # A single run looks for its config's newest run under the outputs folder; a job of a sweep in its own folder.
    outputs = None if multirun else Path(OmegaConf.select(cfg, "paths.output_dir", default="outputs"))
    config = None  # resolved below: an interpolation that cannot resolve is the user's override, one line
    requeued = resume_if_requeued(cfg, run_dir)
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
            # rank gets a hook, so that all take part in agreeing on the verdict; rank 0's alone opens the study).
            summary = train(cfg, run_dir, trial_reporter(hydra_cfg, main_rank) if multirun else None)
    except KeyboardInterrupt as e:  # a second stop signal (engine.loop.Interrupted), or Ctrl-C outside the loop
        signum = getattr(e, "signum", signal.SIGINT)
        if main_rank:
            status = stop_status(signum)
            record_ending(run_dir, status, stopped_by=status, signal=signal.Signals(signum).name)
        log.warning("stopped at once by %s (no checkpoint at this step); %s", signal.Signals(signum).name,
                    resume_hint(hydra_cfg, run_dir, multirun))
        sys.exit(exit_status(signum))
    except user_errors() as e:  # the message says it all
        log.error("%s", e)
        if main_rank:
            record_failure(run_dir, e, (config or {}) if multirun else None)
        if not multirun and tracebacks_wanted():
            raise
        if multirun:
            return -math.inf
        if main_rank and RunFolder(run_dir).read_summary() is None:  # refused before it started: no run, no folder
            run_dir = remove_hydras_files(run_dir, hydra_cfg.job.name)
        sys.exit(2)
    except Exception as e:  # a bug, or under torchrun a peer process that was lost (its folder says how to resume)
        if main_rank:
            record_failure(run_dir, e, (config or {}) if multirun else None)
            if RunFolder(run_dir).last.is_file():
                log.error("%s: %s; %s", type(e).__name__, (str(e).strip().splitlines() or [""])[0],
                          resume_hint(hydra_cfg, run_dir, multirun))
        if not multirun:
            raise
        log.exception("job failed; the sweep goes on")
        return -math.inf
    finally:
        if run_dir is not None:
            log.info("run folder: %s (the run's files)", run_dir)
    if summary.get("signal"):  # a stop signal ends a sweep too, with the shell's status for that signal
        if summary["status"] == "preempted" and submitit_job():
            requeue(summary, cfg.trainer.max_requeues)  # (exits the process when submitit takes the job back)
        if summary["status"] in ("interrupted", "preempted"):
            log.warning("%s", resume_hint(hydra_cfg, run_dir, multirun))
        sys.exit(exit_status(signal.Signals[summary["signal"]]))
    if requeued:
        log.info("this job was requeued after a preemption and has now %s", summary["status"])
    if summary["status"] == "diverged" and not multirun:
        sys.exit(1)
    return objective(summary)


USER_PATHS = ("paths.output_dir", "paths.data_dir", "data.root", "trainer.resume")  # trainer.resume: or auto
USER_URIS = ("paths.mlflow_uri", "logger.mlflow.tracking_uri")


def typed_paths_absolute(cfg: DictConfig, cwd: str):
    """With `hydra.job.chdir=true` a job runs in its own folder: the relative paths a user typed (USER_PATHS:
    `data.root=data`, `paths.output_dir`, `trainer.resume=<last.pt>`; USER_URIS: the MLflow store) are made
    absolute from `cwd`, the folder the command was run in (`hydra.runtime.cwd`, as hydra.utils.to_absolute_path
    does), so they mean what they mean without chdir and the jobs of a sweep share one MLflow store. A value
    that does not resolve is left for `resolved_config` to report."""
    from cifarbench.run.trackers import tracking_uri

    def value(key: str):
        try:
            return OmegaConf.select(cfg, key)
        except OmegaConfBaseException:
            return None

    for key in USER_PATHS:
        path = value(key)
        if isinstance(path, str) and path != "auto" and not Path(path).expanduser().is_absolute():
            OmegaConf.update(cfg, key, str(Path(cwd) / path))
    for key in USER_URIS:
        if isinstance(uri := value(key), str):
            OmegaConf.update(cfg, key, tracking_uri(uri, cwd))


def remove_hydras_files(run_dir: Path, job_name: str) -> Path | None:
    """Remove what Hydra wrote into a run folder before the job started (`.hydra/`, the job's log), then
    the folder and its date folder if that left them empty. Returns None when the folder is gone, else
    `run_dir` (a folder the user pointed at that holds files of their own is kept as it was)."""
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / f"{job_name}.log").unlink(missing_ok=True)
    for folder in (run_dir, run_dir.parent):
        try:
            folder.rmdir()  # only an empty one
        except OSError:
            return run_dir if folder == run_dir else None
    return None


def submitit_job() -> bool:
    """Whether this process is a task of a submitit job (hydra/launcher=slurm or submitit_local)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def resume_if_requeued(cfg: DictConfig, run_dir: Path) -> bool:
    """A submitit job whose folder holds a preempted run is that job requeued (`requeue`): unless
    `trainer.resume` says otherwise it resumes there (trainer.resume=auto, which checks that the config is
    the run's). Returns whether it does."""
    from cifarbench.run.layout import RunFolder

    summary = RunFolder(run_dir).read_summary() if submitit_job() and cfg.trainer.resume is None else None
    if not summary or summary.get("status") != "preempted":
        return False
    cfg.trainer.resume = "auto"
    log.info("requeued after a preemption: resuming the run in %s (trainer.resume=auto)", run_dir)
    return True


def requeue(summary: dict, max_requeues: int) -> bool:
    """Hand a preempted job back to submitit to be requeued, unless it was resumed `max_requeues` times
    already (`trainer.max_requeues`; the summary's `resumes`); returns False when it is not. It raises
    submitit's preemption signal ($SUBMITIT_PREEMPT_SIGNAL, USR2 by default), whose handler (submitit's own,
    installed before the job started and back in place once training ended) calls hydra-submitit-launcher's
    `checkpoint` (a DelayedSubmission of the same job: same overrides, same folder, where
    `resume_if_requeued` resumes it), requeues it (SLURM: scontrol requeue; submitit's local executor starts
    its tasks again) and ends this process. Submitit also stops requeueing a job stopped at its time limit
    after max_num_timeout times (hydra.launcher.max_num_timeout under SLURM; 3 under the local executor).
    Rank 0 alone requeues (submitit's rule); where the handler is not submitit's the job ends preempted."""
    from submitit import JobEnvironment

    signum = JobEnvironment._usr_sig()  # (submitit's own reading of $SUBMITIT_PREEMPT_SIGNAL)
    if summary.get("resumes", 0) >= max_requeues:
        log.warning("preempted, and not requeued: resumed %d time(s) already (trainer.max_requeues=%d)",
                    summary.get("resumes", 0), max_requeues)
        return False
    if not callable(signal.getsignal(signum)):
        return False
    log.warning("preempted: handing the job back to submitit to be requeued")
    signal.raise_signal(signum)
    return True


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
