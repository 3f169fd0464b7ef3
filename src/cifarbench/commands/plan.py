"""`cifarbench plan OVERRIDE...` (or `cifarbench -m OVERRIDE... --plan`): what a sweep would do, before it
does it. Composes every job of the multirun as Hydra's basic sweeper would (the command line's sweeps and
an experiment's `hydra.sweeper.params`), checks each config as a run would before its data loads
(validate.py), and prints the job count, each job that would fail (one line each), the folders the sweep
would write, and an estimate of its training time on this device; nothing is trained into them.

The estimate comes from a short timed probe per distinct speed setting (model, augmentation, data,
batch size, device, precision, compile): the job's own config trained for PROBE_EPOCHS epochs of a few
batches (PROBE_BATCHES, at least PROBE_IMAGES images) in a temporary folder. Its last epoch gives the
training throughput (images/s, steady state); the rest of its wall time, less its training at that speed
and its evaluations, is a job's fixed seconds (start, data, network, the first steps' warm-up, figures). A job then takes
fixed + trained images / throughput + evaluated images / (EVAL_SPEEDUP × throughput) seconds, its
training capped by `trainer.budget_min`. A search sweeper (Optuna) draws its trials as it goes: its
`n_trials` jobs are planned from the base config. Successive halving (hydra/sweeper=successive_halving)
is planned rung by rung, each later rung from the first configurations (which survive is decided as it runs).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
PROBE_EPOCHS = 3  # a probe's epochs: the last is timed (on a CPU the first 10 to 20 steps are slower)
PROBE_BATCHES = 12  # training batches of a probe's epoch ...
PROBE_IMAGES = 1536  # ... and at least this many images, when the job has them
PROBE_TEST_IMAGES = 500  # test images a probe evaluates
EVAL_SPEEDUP = 3.0  # evaluation's images/s over training's: a forward pass alone, about a third of a step
# What decides a job's images/s, besides the whole model config (the probe of one serves every job sharing them)
SPEED_KEYS = ("data.name", "data.preprocess", "trainer.batch_size", "trainer.device", "trainer.amp",
              "trainer.channels_last", "trainer.compile", "trainer.tta", "trainer.ema", "optim.name")


@dataclass
class Job:
    """One job of the sweep: its number, overrides, folder, and its config (None: it would fail, `error` says why)."""
    num: int
    overrides: list[str]
    folder: Path | None
    config: object | None
    error: str = ""


@dataclass
class Probe:
    """What a probe measured: training images per second (steady state), a job's fixed seconds, the device."""
    images_per_s: float
    fixed_s: float
    device: str


def halving_plan(sweeper, overrides) -> tuple[list[list[str]], str]:
    """The jobs of a successive-halving sweep (search/halving.py) as the plan lists them, and its note: every
    configuration at rung 0's budget, then each later rung's count of them at its budget (the first ones
    stand for the survivors, which are chosen as it runs)."""
    from cifarbench.search.halving import configurations, rung_budget, rung_sizes

    compared = configurations(overrides, sweeper.budget)
    sizes = rung_sizes(len(compared), sweeper.eta)
    budgets = [rung_budget(sweeper.min_budget, sweeper.eta, rung) for rung in range(len(sizes))]
    lists = [[*compared[i], f"{sweeper.budget}={budget}"] for size, budget in zip(sizes, budgets) for i in range(size)]
    return lists, (f"{len(lists)} job(s): successive halving of {len(compared)} configuration(s), rungs of "
                   f"{' + '.join(map(str, sizes))} at {sweeper.budget}={', '.join(map(str, budgets))} (each later "
                   f"rung planned from the first configurations; the survivors are chosen as it runs)")

def sweep_jobs(overrides: list[str]) -> tuple[list[Job], Path, str]:
    """Every job of the multirun `overrides` describe, each composed and validated as its run would be:
    (jobs, the sweep folder, a note on how they were drawn). Raises Hydra's error when the sweep itself
    does not compose."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from cifarbench.commands.cli import one_line
    from cifarbench.commands.train import user_errors
    from cifarbench.search.sweeper import cartesian, compose_job, sweep_overrides
    from cifarbench.validate import validate_config

    with initialize_config_module("cifarbench.conf", version_base="1.3", job_name="train"):
        hydra = GlobalHydra.instance().hydra
        master = hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN)
        loader = hydra.config_loader
        task_overrides = list(master.hydra.overrides.task)
        sweeper = master.hydra.sweeper
        parsed = sweep_overrides(OverridesParser.create(config_loader=loader), sweeper.get("params"), task_overrides)
        if sweeper._target_ == BASIC_SWEEPER:
            lists = cartesian(parsed)
            note = f"{len(lists)} job(s)"
        elif sweeper._target_.endswith(".SuccessiveHalvingSweeper"):
            lists, note = halving_plan(sweeper, parsed)
        else:  # (the Optuna sweeper: what it fixes holds in every trial, params' fixed values included)
            trials = int(sweeper.get("n_trials", 1))
            base = [o.input_line for o in parsed if not o.is_sweep_override()]
            lists = [base] * trials
            note = (f"{trials} trial(s) that {sweeper._target_.rpartition('.')[2]} draws as it goes, each planned "
                    f"from the base config (what it searches: {', '.join(sweeper.get('params') or {}) or '-'})")
        sweep_dir = Path(str(master.hydra.sweep.dir))
        jobs = []
        for num, job_overrides in enumerate(lists):
            try:
                cfg, task = compose_job(loader, master, job_overrides, num)
                folder = sweep_dir / str(cfg.hydra.sweep.subdir)
                validate_config(task, 1)
                jobs.append(Job(num, list(job_overrides), folder, task))
            except (HydraException, OmegaConfBaseException) as e:
                jobs.append(Job(num, list(job_overrides), None, None, one_line(e)))
            except user_errors() as e:
                jobs.append(Job(num, list(job_overrides), None, None, str(e)))
    return jobs, sweep_dir, note


SIZES: dict[str, tuple[int, int]] = {}  # (training, test) images of the datasets read so far, by entry and root


def dataset_sizes(data_cfg) -> tuple[int, int]:
    """(training, test) images of the dataset `data_cfg` names: as read from data.root (its decoded cache),
    else as its registry entry says (the official sizes; nothing is downloaded)."""
    from cifarbench.data.datasets import dataset_source

    source = dataset_source(data_cfg)
    key = f"{source!r} in {data_cfg.get('root')}"
    if key not in SIZES and data_cfg.get("root"):
        try:
            data = source.load(data_cfg.root, download=False)
            SIZES[key] = (len(data.train_labels), len(data.test_labels))
        except Exception:  # not there (yet): the official sizes
            pass
    return SIZES.get(key, source.sizes)


def images_of(cfg) -> tuple[int, int]:
    """(training images per epoch, images evaluated at each evaluation: test set and validation split) of a run."""
    n_train, n_test = dataset_sizes(cfg.data)
    subset = cfg.data.get("train_subset")
    if subset is not None:
        n_train = min(n_train, round(subset * n_train) if 0 < subset < 1 else int(subset))
    val = int(cfg.data.get("val_split") or 0)
    test = cfg.data.get("test_subset")
    return n_train - val, (min(n_test, int(test)) if test else n_test) + val


def evaluations(epochs: float, every: float) -> int:
    """How many evaluations a run of `epochs` makes: one per `every` epochs, and a final one."""
    return max(1, math.floor(epochs / every + 1e-9) + (0 if math.isclose(epochs % every, 0, abs_tol=1e-9) else 1))


def job_seconds(cfg, probe: Probe) -> float:
    """A job's estimated wall seconds: the probe's fixed seconds, its training (images × epochs at the
    probe's images/s, capped by trainer.budget_min) and its evaluations (EVAL_SPEEDUP times faster)."""
    t = cfg.trainer
    n_train, n_eval = images_of(cfg)
    training = n_train * t.epochs / probe.images_per_s
    if t.get("budget_min"):
        training = min(training, 60 * t.budget_min)
    evaluated = evaluations(t.epochs, t.eval_every) * n_eval
    return probe.fixed_s + training + evaluated / (EVAL_SPEEDUP * probe.images_per_s)


def speed_key(cfg) -> str:
    """What a job's throughput depends on (the model config whole, SPEED_KEYS, the augmentation)."""
    from omegaconf import OmegaConf

    return json.dumps([OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.aug),
                       [OmegaConf.select(cfg, key) for key in SPEED_KEYS]], sort_keys=True, default=str)


def run_probe(cfg) -> Probe:
    """Train `cfg` for PROBE_EPOCHS epochs of PROBE_BATCHES batches (at least PROBE_IMAGES images) in a
    temporary folder, evaluating PROBE_TEST_IMAGES test images after each, and time it: the last epoch gives
    the steady images/s; the rest of the wall time, less the training at that speed and the evaluations, is
    a job's fixed seconds (start, data, network, the first steps' warm-up, figures)."""
    from omegaconf import open_dict

    from cifarbench.engine.loop import train
    from cifarbench.run.layout import METRICS
    from cifarbench.run.metrics import read_metrics

    n_train, n_eval = images_of(cfg)
    n_train, n_test = n_train + int(cfg.data.get("val_split") or 0), n_eval - int(cfg.data.get("val_split") or 0)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        subset = min(n_train, max(PROBE_IMAGES, PROBE_BATCHES * cfg.trainer.batch_size))
        cfg.data.update(train_subset=subset, test_subset=min(n_test, PROBE_TEST_IMAGES), val_split=0, download=False)
        cfg.trainer.update(epochs=PROBE_EPOCHS, budget_min=None, progress=False, resume=None, eval_every=1)
        cfg.logger = {"csv": {}}  # no tracker store gets the probe's run
    with tempfile.TemporaryDirectory(prefix="cifarbench-plan-") as folder:
        start = time.perf_counter()
        summary = train(cfg, folder)
        wall = time.perf_counter() - start
        before, last = read_metrics(Path(folder) / METRICS)[-2:]
    images_per_s = subset / max(last["train_seconds"] - before["train_seconds"], 1e-6)
    n_test = images_of(cfg)[1]  # the probe's own
    fixed = wall - PROBE_EPOCHS * (subset / images_per_s + n_test / (EVAL_SPEEDUP * images_per_s))
    return Probe(images_per_s, max(0.0, fixed), summary.get("device", "?"))


def duration(seconds: float) -> str:
    """`≈ 40 s`, `≈ 12 min`, `≈ 4.2 h`."""
    if seconds < 90:
        return f"≈ {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"≈ {seconds / 60:.0f} min"
    return f"≈ {seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cifarbench plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="the sweep's overrides, as for -m")
    parser.add_argument("--no-probe", action="store_true", help="list and check the jobs, estimate no time")
    args, unknown = parser.parse_known_args([a for a in (argv or []) if a not in ("-m", "--multirun")])
    if unknown:
        parser.error(f"unknown option(s) {' '.join(unknown)} (a plan takes the sweep's overrides, --no-probe)")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cifarbench.commands.cli import errors_in_one_line

    with errors_in_one_line((HydraException, OmegaConfBaseException)):
        jobs, sweep_dir, note = sweep_jobs(args.overrides)
    good, bad = [job for job in jobs if job.config is not None], [job for job in jobs if job.config is None]
    print(f"plan: {note}, into {sweep_dir}/ (nothing is trained there)")
    for job in good:
        print(f"  #{job.num} {' '.join(job.overrides) or '(the base config)'} → {job.folder.name}/")
    if bad:
        print(f"{len(bad)} job(s) would fail:")
        for job in bad:
            print(f"  #{job.num} {' '.join(job.overrides)}: {job.error}")
    if args.no_probe or not good:
        return 1 if bad else 0
    probes: dict[str, Probe | str] = {}
    total, devices = 0.0, set()
    for job in good:
        key = speed_key(job.config)
        if key not in probes:
            try:
                probes[key] = run_probe(job.config)
            except Exception as e:  # a job that cannot run here: said once per speed setting, no estimate
                probes[key] = str(e).splitlines()[0] if str(e) else type(e).__name__
            probe = probes[key]
            print(f"  probe of {job.config.model.name} (batch {job.config.trainer.batch_size}): " +
                  (f"{probe.images_per_s:,.0f} training images/s, {probe.fixed_s:.1f} s per job besides training"
                   if isinstance(probe, Probe) else f"failed: {probe}"))
        if isinstance(probes[key], Probe):
            total += job_seconds(job.config, probes[key])
            devices.add(probes[key].device)
    estimated = sum(isinstance(probes[speed_key(job.config)], Probe) for job in good)
    if not estimated:
        print("no estimate: no probe ran")
        return 1
    seconds = f" ({total:.0f} s)" if total >= 90 else ""
    print(f"estimate: {duration(total)}{seconds} for {estimated} job(s) on {', '.join(sorted(devices)) or '-'}"
          + (f" ({len(good) - estimated} job(s) could not be probed)" if estimated < len(good) else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
