"""`python -m cifarbench` / `cifarbench`: a thin Hydra wrapper around `trainer.train`, and its commands.

A job that fails records the failure in its summary.json (status "failed" and the error's first
line); inside a multirun the other jobs go on, a single run exits non-zero. An error the user
caused (a bad value, a config that does not compose, an unknown override key, a bad checkpoint)
prints one line and exits 2; with HYDRA_FULL_ERROR=1 it raises, traceback and all.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import shutil
import sys
import traceback
from pathlib import Path
from unittest import mock

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from cifarbench.core.registry import did_you_mean, unknown_fields

log = logging.getLogger("cifarbench")
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"  # Hydra's default: jobs in this process


def record_failure(run_dir: Path, cfg: DictConfig, error: BaseException):
    from cifarbench.core.files import atomic_write_json
    from cifarbench.run.trackers import end_tracked_run

    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        summary = {"config": OmegaConf.to_container(cfg, resolve=True)}
    first_line = (str(error).strip().splitlines() or [""])[0]
    summary.update(status="failed", error=f"{type(error).__name__}: {first_line}")
    try:
        atomic_write_json(summary_path, summary)
    except OSError:
        pass  # the failure may be that the folder is unwritable; the log still says it
    end_tracked_run(summary)  # the MLflow run's status follows summary.json's


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


@hydra.main(version_base="1.3", config_path="pkg://cifarbench.conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """Train one job; returns the objective a Hydra sweeper maximises (`runlog.objective`): the final
    validation accuracy with `data.val_split`, else the final test accuracy (fractions); -inf for a job
    that failed or diverged, so it ranks last (a NaN would fail Optuna's trial and stop its search).
    A job of a sweep run again in its folder with `trainer.resume=auto` that completed there before is
    not trained again: its summary stays as it is and its objective is returned."""
    from cifarbench.run.checkpoint import completed_run, plain_config
    from cifarbench.core.distributed import environment_ranks, process_group
    from cifarbench.run.background import in_background
    from cifarbench.run.metrics import objective
    from cifarbench.engine.loop import train

    hydra_cfg = HydraConfig.get()
    run_dir, multirun = Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN
    main_rank = environment_ranks()[0] == 0
    if not main_rank:  # one run, one writer: the other ranks of a DDP run log warnings only and write nothing
        logging.getLogger().setLevel(logging.WARNING)
    log.info("run folder: %s", run_dir)
    if multirun and cfg.trainer.resume == "auto" and (done := completed_run(run_dir, plain_config(cfg))):
        log.info("trainer.resume=auto: this job completed in %s before; skipped (its files are kept)", run_dir)
        return objective(done)
    # The jobs of a sweep run here one after another: the next one trains while these figures render.
    in_process = multirun and hydra_cfg.launcher._target_ == BASIC_LAUNCHER
    try:
        with process_group(cfg.trainer) as world, in_background(in_process):
            if world.size == 1:
                pin_gpu(hydra_cfg.job.get("num") if multirun else None)
            summary = train(cfg, run_dir)
    except user_errors() as e:  # the message says it all
        log.error("%s", e)
        if main_rank:
            record_failure(run_dir, cfg, e)
        if not multirun and tracebacks_wanted():
            raise
        if multirun:
            return -math.inf
        sys.exit(2)
    except Exception as e:
        if main_rank:
            record_failure(run_dir, cfg, e)
        if not multirun:
            raise
        log.exception("job failed; the sweep goes on")
        return -math.inf
    finally:
        log.info("run folder: %s (the run's files)", run_dir)
    if summary["status"] == "interrupted":
        sys.exit(130)  # Ctrl-C ends a sweep too
    if summary["status"] == "diverged" and not multirun:
        sys.exit(1)
    return objective(summary)


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


# `cifarbench NAME ...` runs `python -m MODULE ...`; each module has main(argv), which takes --help.
COMMANDS = {
    "models": ("cifarbench.commands.models", "list the models: parameters, MACs, the study (docs/studies.md) each reproduces"),
    "report": ("cifarbench.report", "leaderboard and comparison plots of a folder of runs"),
    "predict": ("cifarbench.commands.predict", "classify image files, folders or glob patterns with a checkpoint"),
    "inspect": ("cifarbench.run.diagnostics",
                "confusion matrix, sample predictions and per-class accuracy of a checkpoint"),
}

HELP = """usage: cifarbench COMMAND [--help | ARGS...]
       cifarbench [OVERRIDE...] [-m] [--cfg job] [--help]     train (Hydra overrides, below)

commands:
{commands}

common overrides (`cifarbench --cfg job ...` prints the composed config and runs nothing):
  model=lenet optim=sgd sched=constant aug=flip_shift     pick a group's entry (lists below)
  experiment=speedrun94                                    a whole recipe
  trainer.epochs=20 trainer.batch_size=128 trainer.budget_min=10 trainer.device=auto
  data.root=DIR data.train_subset=10000 optim.lr=0.05     change one field
  +model.norm_momentum=0.1                                 add a field the YAML lacks
  -m optim=sgd,adam model=lenet,resnet18                   a sweep: one job per combination

outputs, relative to the current folder:
  outputs/runs/<date>/<time>_<model>_<optim>_<run id>/     one run (printed at its start and end)
  outputs/multirun/<date>/<time>_<run id>/<job>_<overrides>/   a sweep's jobs, leaderboard.md beside them

shell completion: eval "$(cifarbench -sc install=bash)"   (see README, "Shell completion")
"""


# Appended to the overrides of torchrun's ranks other than 0, whose Hydra would otherwise make a run
# folder of its own (its ${now:} and run id differ from rank 0's): the current folder (which exists)
# as the run folder, no .hydra/ in it, and logs to the console only.
OTHER_RANKS = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout")


def usage() -> str:
    return HELP.format(commands="\n".join(f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items()))


def is_command(word: str) -> bool:
    """A bare first word is a command: Hydra's overrides hold '=' and its options start with '-'
    (overrides may also start with '+' or '~', which hold '=' or name a key to delete)."""
    return "=" not in word and not word.startswith(("-", "+", "~"))


def one_line(error: BaseException) -> str:
    """A Hydra or OmegaConf error as one line: an unknown key lists the group's fields with the
    nearest one, a missing config lists the options; otherwise the message's lines joined."""
    cause = error.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and isinstance(cause.parent_node, DictConfig) \
            and cause.full_key:
        group, key = cause.full_key.rpartition(".")[::2]
        name = cause.parent_node.get("name")
        where = f"{group} {name!r}" if isinstance(name, str) else group or "the config"
        return f"{unknown_fields(where, [key], list(cause.parent_node))} (to add a new field: +{cause.full_key}=VALUE)"
    if isinstance(error, MissingConfigException) and error.options:
        first = str(error).splitlines()[0].removeprefix("In 'config': ")
        missing = (error.missing_cfg_file or "").rpartition("/")[2]
        return f"{first}{did_you_mean(missing, error.options)}; available: {', '.join(error.options)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, OverrideParseException):
        lines.insert(0, f"cannot parse the override {error.override!r}:")
    if isinstance(cause, OmegaConfBaseException):
        lines.append(str(cause).splitlines()[0])
    return " ".join(lines)


def tracebacks_wanted() -> bool:
    """Whether the user set HYDRA_FULL_ERROR=1 (`main` sets it for Hydra's sake, keeping the user's
    value in CIFARBENCH_FULL_ERROR)."""
    return os.environ.get("CIFARBENCH_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR")) == "1"


def raised_in_a_job(error: BaseException) -> bool:
    """Whether `error` came from inside `run` (a bug in training, whose traceback matters), not from
    composing the config."""
    return any(frame.f_code is run.__wrapped__.__code__ for frame, _ in traceback.walk_tb(error.__traceback__))


@contextlib.contextmanager
def errors_in_one_line(kinds: tuple[type[BaseException], ...], unless=lambda error: False):
    """Errors of `kinds` print `error: <one line>` and exit 2, unless tracebacks are wanted or
    `unless(error)` holds (then they raise)."""
    try:
        yield
    except kinds as e:
        if tracebacks_wanted() or unless(e):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


def run_command(name: str, argv: list[str]) -> int:
    module = importlib.import_module(COMMANDS[name][0])
    with errors_in_one_line(user_errors()):
        return module.main(argv)


def key_value_args(argv: list[str], usage_line: str, required: tuple[str, ...]) -> DictConfig:
    """The `key=value` arguments of a command, as a config. `-h`/`--help` prints `usage_line` and exits
    0; a missing required key or an argument that is not `key=value` prints it and exits 2."""
    if {"-h", "--help"} & set(argv):
        print(usage_line)
        sys.exit(0)
    bad = [arg for arg in argv if "=" not in arg]
    args = OmegaConf.from_dotlist([arg for arg in argv if "=" in arg])
    missing = [key for key in required if not args.get(key)]
    if bad or missing:
        problem = f"not key=value: {' '.join(bad)}" if bad else f"missing {', '.join(missing)}"
        print(f"{usage_line}\n({problem})", file=sys.stderr)
        sys.exit(2)
    return args


def main():
    """Dispatch `cifarbench COMMAND ...`, explain an unknown command, else train under Hydra."""
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:
        sys.exit(run_command(argv[0], argv[1:]))
    if argv and is_command(argv[0]):
        print(f"cifarbench: unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)}; "
              f"commands: {', '.join(COMMANDS)} (or none, to train; cifarbench --help)", file=sys.stderr)
        sys.exit(2)
    if {"-h", "--help"} & set(argv):
        print(usage())
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and {"-m", "--multirun"} & set(argv):
        print("cifarbench: torchrun trains one run on several processes and takes no sweep (-m); sweep DDP runs "
              "with hydra/launcher=slurm hydra.launcher.tasks_per_node=N, or start torchrun once per setting",
              file=sys.stderr)
        sys.exit(2)
    if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks: no run folder, no log file (rank 0 has them)
        argv = [*argv, *OTHER_RANKS]
    # Hydra prints its own errors in several lines, unless HYDRA_FULL_ERROR=1: then it raises them to us.
    with mock.patch.dict(os.environ, {"CIFARBENCH_FULL_ERROR": str(int(tracebacks_wanted())),
                                      "HYDRA_FULL_ERROR": "1"}), mock.patch.object(sys, "argv", [sys.argv[0], *argv]):
        with errors_in_one_line((HydraException, OmegaConfBaseException), unless=raised_in_a_job):
            run()


if __name__ == "__main__":
    main()
