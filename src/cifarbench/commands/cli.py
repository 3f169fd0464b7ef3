"""`cifarbench` / `python -m cifarbench`: dispatch to a command (`models`, `report`, `predict`, `inspect`, `plan`)
or train under Hydra (commands/train.py); help, and Hydra's and OmegaConf's errors as one line.

A config that does not compose, an unknown override key or an override Hydra cannot parse prints one
line (`error: ...`) and exits 2; with HYDRA_FULL_ERROR=1 it raises, traceback and all.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import traceback

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from cifarbench.commands.train import run, tracebacks_wanted, user_errors
from cifarbench.core.registry import did_you_mean, unknown_fields

# `cifarbench NAME ...` runs MODULE.main(argv) (each takes --help); `python -m MODULE` does the same.
COMMANDS = {
    "models": ("cifarbench.commands.models",
               "list the models: parameters, MACs, the study (docs/studies.md) each reproduces"),
    "report": ("cifarbench.commands.report", "leaderboard and comparison plots of a folder of runs"),
    "predict": ("cifarbench.commands.predict", "classify image files, folders or glob patterns with a checkpoint"),
    "inspect": ("cifarbench.commands.inspect",
                "confusion matrix, sample predictions and per-class accuracy of a checkpoint"),
    "plan": ("cifarbench.commands.plan",
             "what a sweep would run: its jobs, those that would fail, its folders, its time (no training)"),
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
  -m ... --plan                                            its jobs, those that would fail, folders, time; no training

outputs, relative to the current folder:
  outputs/runs/<date>/<time>_<model>_<optim>_<run id>/     one run (printed at its start and end)
  outputs/multirun/<date>/<time>_<run id>/<job>_<overrides>/   a sweep's jobs, leaderboard.md beside them

shell completion: eval "$(cifarbench -sc install=bash)"   (see README, "Shell completion")
"""


# Appended to the overrides of torchrun's ranks other than 0, whose Hydra would otherwise make a run
# folder of its own (its ${now:} and run id differ from rank 0's): the current folder (which exists)
# as the run folder, no .hydra/ in it, and logs to the console only.
FULL_ERROR_VARIABLES = ("CIFARBENCH_FULL_ERROR", "HYDRA_FULL_ERROR")  # set while Hydra runs, then restored
OTHER_RANKS = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout")


def usage() -> str:
    return HELP.format(commands="\n".join(f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items()))


def is_command(word: str) -> bool:
    """A bare first word is a command: Hydra's overrides hold '=' and its options start with '-'
    (overrides may also start with '+' or '~', which hold '=' or name a key to delete)."""
    return "=" not in word and not word.startswith(("-", "+", "~"))


# Hydra's advice for these two refusals misleads here: the overlay groups are in the root defaults list
# (`debug: null`), and a study's variants compose only inside their experiment.
_APPEND_TO_DEFAULTS = re.compile(r"Multiple values for ([\w/]+)\. To override a value use 'override \1: (.+)'")
_STUDY_VARIANT = re.compile(r"Could not override '(study/(\w+))'\. .*use \+study/\w+=(.+)")


def composition_hint(message: str) -> str:
    """For Hydra's refusal of `+debug=quick` (an overlay the root config already lists) or of a study
    variant without its experiment, the one line that says what to write instead; else ''."""
    if found := _APPEND_TO_DEFAULTS.search(message):
        group, value = found.groups()
        return f"{group} is in the root defaults list already: write {group}={value}, without '+'"
    if found := _STUDY_VARIANT.search(" ".join(message.split())):
        group, study, value = found.groups()
        return (f"{group} is not an option on its own: a study's variants are chosen inside its experiment, "
                f"experiment={study} {group}={value}")
    return ""


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
    if hint := composition_hint(str(error)):
        return hint
    if isinstance(error, OverrideParseException):
        lines.insert(0, f"cannot parse the override {error.override!r}:")
    if isinstance(cause, OmegaConfBaseException):
        lines.append(str(cause).splitlines()[0])
    return " ".join(lines)


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


MULTIRUN = {"-m", "--multirun"}


def main():
    """Dispatch `cifarbench COMMAND ...`, explain an unknown command, else train under Hydra."""
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:
        sys.exit(run_command(argv[0], argv[1:]))
    if "--plan" in argv:  # cifarbench -m OVERRIDES --plan: the sweep's plan (commands/plan.py), nothing trained
        sys.exit(run_command("plan", [a for a in argv if a != "--plan"]))
    if argv and is_command(argv[0]):
        print(f"cifarbench: unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)}; "
              f"commands: {', '.join(COMMANDS)} (or none, to train; cifarbench --help)", file=sys.stderr)
        sys.exit(2)
    if {"-h", "--help"} & set(argv):
        print(usage())
    # Hydra's parser takes -m before the overrides only (argparse does not resume a list of positionals
    # after a flag): `cifarbench model=lenet -m optim.lr=0.1,0.01` means the same as with -m first.
    argv = [a for a in argv if a in MULTIRUN] + [a for a in argv if a not in MULTIRUN]
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and MULTIRUN & set(argv):
        print("cifarbench: torchrun trains one run on several processes and takes no sweep (-m); sweep DDP runs "
              "with hydra/launcher=slurm hydra.launcher.tasks_per_node=N, or start torchrun once per setting",
              file=sys.stderr)
        sys.exit(2)
    if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks: no run folder, no log file (rank 0 has them)
        argv = [*argv, *OTHER_RANKS]
    # Hydra prints its own errors in several lines, unless HYDRA_FULL_ERROR=1: then it raises them to us.
    saved_env, saved_argv = {k: os.environ.get(k) for k in FULL_ERROR_VARIABLES}, sys.argv
    os.environ.update(CIFARBENCH_FULL_ERROR=str(int(tracebacks_wanted())), HYDRA_FULL_ERROR="1")
    sys.argv = [sys.argv[0], *argv]
    try:
        with errors_in_one_line((HydraException, OmegaConfBaseException), unless=raised_in_a_job):
            run()
    finally:  # (tests and scripts call main() in their own process)
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    main()
