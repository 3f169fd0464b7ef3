"""The training loop: one loop for every model, optimizer, augmentation, device and precision.

`train(cfg, run_dir)` reads top to bottom: checks and the resume decision → device, precision,
seeds → the run folder's recorder → data on the device, model, whitening init (timed as training,
as speed runs count them) → optimizer, schedule, averaging, the step → restore a checkpoint →
compile every graph up front (timed apart) → the loop → the final evaluation and files.

The parts live by concern: `step.TrainStep` (one optimisation step), `clock` (RunState, budget,
seconds, CUDA sync points), `recorder` (metrics, checkpoints, plots, summary), `evaluate`
(evaluation and TTA), `averaging` (EMA, Lookahead), `data.loader` (the data and its position).
The step does no host–device synchronisation; a divergence check reads one flag every 50 steps.

Under several processes (`distributed`: torchrun or submitit's tasks) the same function runs on every
rank: `trainer.batch_size` is the global batch, each rank trains on its share of it through DDP and
evaluates its share of the test set; the ranks agree on when to stop (`stop_reason`); rank 0 alone
writes the run folder.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import platform
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from cifarbench import __version__
from cifarbench.engine.averaging import EMA, Lookahead
from cifarbench.aug import build_augment, build_mix
from cifarbench.run.checkpoint import (RESUMABLE_CHANGES, config_changes, find_resumable, load_checkpoint,
                                   plain_config, restore_rng, rng_state)
from cifarbench.core.clock import Clock, RunState
from cifarbench.data import DeviceLoader
from cifarbench.data.prepared import prepared_data
from cifarbench.data.preprocess import preprocess_state
from cifarbench.core.device import describe_device, resolve_amp
from cifarbench.run.diagnostics import write_diagnostics
from cifarbench.core.distributed import World, rank_seed
from cifarbench.engine.evaluate import evaluate, tta_views
from cifarbench.run.trackers import Loggers
from cifarbench.models import build_model, count_params
from cifarbench.models.init import whiten_first_conv
from cifarbench.optim import build_optimizer
from cifarbench.run.provenance import command_line, running_source_state
from cifarbench.run.recorder import Recorder, metrics_row
from cifarbench.core.registry import ConfigError
from cifarbench.sched import build_schedule
from cifarbench.engine.step import DIVERGENCE_CHECK_EVERY, Plan, TrainStep, build_criterion
from cifarbench.validate import validate_config

log = logging.getLogger(__name__)


def configure_determinism(deterministic: bool, device: torch.device):
    """Reproducible kernels or fast ones. Only touches the global switch when it must change (the
    first call costs seconds). On CUDA, cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before its first use."""
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic  # autotuned kernels are faster but not reproducible


@contextlib.contextmanager
def deferred_interrupt():
    """Ctrl-C sets a flag that the loop reads after each step, so the run can save and exit cleanly;
    a second Ctrl-C interrupts at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        log.warning("interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort now)")
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Training:
    """Everything the loop works with, built before it starts. `compiled` is `model` or its
    torch.compile wrapper (same parameters), around DDP's under several processes: the training
    forward; `eval_model` is what evaluation reads (the EMA's weights when there is one, never DDP's
    wrapper); `val_loader` holds the validation split (None without one); the evaluation loaders
    hold this rank's share of their images."""
    model: torch.nn.Module
    compiled: torch.nn.Module
    eval_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: TrainStep
    train_loader: DeviceLoader
    test_loader: DeviceLoader
    val_loader: DeviceLoader | None
    ema: EMA | None
    lookahead: Lookahead | None
    world: World

    def checkpoint(self, state: RunState, extra: dict) -> dict:
        """Everything a resume needs, as tensors and plain containers (`extra`: config, classes, ...).
        The weights (of the plain module), optimizer and data position are the same on every rank;
        `ranks` holds each rank's random states (global RNGs, augmentation draws; `loader` holds
        rank 0's, so a loader restores alone). Under DDP this gathers from every rank: all call it,
        rank 0's recorder saves it."""
        ranks = self.world.gather_objects({"rng": rng_state(), "augment": self.train_loader.generator.get_state()})
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "lookahead": self.lookahead.state_dict() if self.lookahead else None,
                "loader": self.train_loader.state_dict(), "window": self.step.state_dict(),
                "state": vars(state), "ranks": ranks, **extra}

    def restore(self, checkpoint: dict, seed: int) -> RunState:
        """Load a checkpoint (tensors on the CPU: each piece moves to where it lives); returns its RunState.
        Written by as many processes as now, each rank continues its own random streams; written by
        another number, the weights and the data order continue exactly and each rank's random draws
        start afresh from `seed`, its rank and the step."""
        state = RunState(**checkpoint["state"])
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])  # moves the state to the parameters' device
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None and checkpoint["ema"]:
            self.ema.load_state_dict(checkpoint["ema"])
        if self.lookahead is not None and checkpoint["lookahead"]:
            self.lookahead.load_state_dict(checkpoint["lookahead"])
        self.train_loader.load_state_dict(checkpoint["loader"])
        self.step.load_state_dict(checkpoint["window"])
        ranks, world = checkpoint["ranks"], self.world
        if len(ranks) == world.size:
            restore_rng(ranks[world.rank]["rng"])
            self.train_loader.generator.set_state(ranks[world.rank]["augment"].cpu())
        else:
            if world.main:
                log.warning("resuming on %d process(es) a checkpoint written by %d: the weights and the data order "
                            "continue exactly, the random draws (augmentation, dropout) start afresh", world.size,
                            len(ranks))
            torch.manual_seed(rank_seed(seed, world.rank, state.step))
            self.train_loader.generator.manual_seed(rank_seed(seed, world.rank, state.step))
        return state


def warm_up_compiled(training: Training, autocast, tta: str):
    """Compile every graph the run will use before it starts (each training batch size forward and
    backward, each evaluation batch size under no_grad), so nothing recompiles inside the timed loop.
    The model's weights, statistics and the RNG are left as they were: no step is taken."""
    saved = {name: tensor.clone() for name, tensor in training.model.state_dict().items()}
    rng = rng_state()

    def inputs(loader: DeviceLoader, size: int) -> torch.Tensor:
        return loader.preprocess(loader.images[:size]).contiguous(memory_format=loader.memory_format)

    training.compiled.train()
    train_loader = training.train_loader
    # One batch of each global size, so every rank runs as many backward passes (DDP's collectives)
    # on its own share's size.
    for batch in sorted({end - start: i for i, (start, end) in enumerate(train_loader.bounds)}.values()):
        start, end = train_loader.share(batch)
        with autocast:
            training.compiled(inputs(train_loader, end - start)).float().mean().backward()
    training.optimizer.zero_grad(set_to_none=True)
    training.eval_model.eval()
    with torch.no_grad():
        for loader in [loader for loader in (training.test_loader, training.val_loader) if loader is not None]:
            for size in sorted({end - start for start, end in loader.bounds}):
                for _, view in tta_views(inputs(loader, size), tta):
                    with autocast:
                        training.eval_model(view)
    training.model.load_state_dict(saved)
    restore_rng(rng)


def evaluate_and_save(training: Training, state: RunState, recorder: Recorder, autocast, tta: str,
                      extra: dict) -> torch.Tensor:
    """Evaluate on the validation split (if any) and the test set, the same way; add a metrics row;
    checkpoint (last.pt, and best.pt at a new best by the recorder's selection accuracy); returns the
    test predictions ((N,) int64, CPU). Every rank calls it (the evaluation is sharded, the metrics
    summed over ranks)."""
    world = training.world
    val = ((None, None) if training.val_loader is None
           else evaluate(training.eval_model, training.val_loader, autocast, tta, world)[:2])
    test_loss, test_acc, predictions = evaluate(training.eval_model, training.test_loader, autocast, tta, world)
    best = recorder.add_row(state, metrics_row(state, len(training.train_loader),
                                               training.optimizer.param_groups[0]["lr"], training.step.window(),
                                               (test_loss, test_acc), val))
    training.step.reset()
    state.window_seconds = 0.0
    recorder.save(training.checkpoint(state, extra), best)
    return predictions


def checkpoint_to_resume(resume: str | None, run_dir: Path, config: dict,
                         world: World = World()) -> tuple[str | None, dict | None]:
    """`trainer.resume` (null, auto or a path) → (path, loaded checkpoint), or (None, None) to start afresh.
    With auto, rank 0 looks in its run folder and tells the other ranks what it found; every rank
    then loads the checkpoint itself. Raises ConfigError when the checkpoint's config differs in a key
    that changes what a step means."""
    resume_from = resume
    if resume == "auto":
        resume_from = world.broadcast(find_resumable(run_dir, config) if world.main else None)
    if not resume_from:
        if resume == "auto":
            log.info("trainer.resume=auto: no unfinished run with this config; starting afresh")
        return None, None
    checkpoint = load_checkpoint(resume_from)
    changes = config_changes(checkpoint["config"], config, RESUMABLE_CHANGES)
    if changes:
        raise ConfigError(f"cannot resume {resume_from}: the config changes what a step means "
                          f"({'; '.join(changes)}); set these back or start a new run")
    return str(resume_from), checkpoint


def build_training(cfg: DictConfig, model: torch.nn.Module, first_conv: torch.nn.Conv2d | None,
                   preprocess: torch.nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor,
                   evaluation_sets: list[tuple[np.ndarray, np.ndarray]], autocast, amp_dtype, num_classes: int,
                   budget_s: float, world: World = World()) -> tuple[Training, Plan]:
    """The loaders (training; test, then validation if given, from uint8 NCHW arrays of which this
    rank keeps its share), optimizer, scaler, averaging, compiled model and step of a run, and its
    Plan; every decision before the loop. The training forward is wrapped in this order: memory
    format (already set on `model`), DDP under several processes, then torch.compile."""
    t = cfg.trainer
    device, memory_format = train_images.device, torch.channels_last if t.channels_last else torch.contiguous_format
    if first_conv is not None and t.whiten_freeze:
        first_conv.weight.requires_grad_(False)
    bias_epochs = ({id(first_conv.bias): t.whiten_bias_epochs}
                   if first_conv is not None and first_conv.bias is not None and t.whiten_bias_epochs is not None
                   else None)
    train_loader = DeviceLoader(train_images, train_labels, t.batch_size, preprocess, build_augment(cfg.aug),
                                seed=t.seed, memory_format=memory_format,
                                alternating_flip=cfg.aug.get("flip") == "alternating", drop_last=t.drop_last,
                                world=world)
    shares = [slice(*world.shard(len(labels))) for _, labels in evaluation_sets]
    test_loader, val_loader = [DeviceLoader(torch.from_numpy(images[share]).to(device),
                                            torch.from_numpy(labels[share]).to(device), t.eval_batch_size, preprocess,
                                            shuffle=False, memory_format=memory_format)
                               for (images, labels), share in zip(evaluation_sets, shares)] + [None] * (2 - len(shares))
    plan = Plan(math.ceil(t.epochs * len(train_loader)), len(train_loader), budget_s)
    optimizer = build_optimizer(cfg.optim, model, bias_epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = EMA(model, t.ema, warmup=t.ema_warmup) if t.ema else None
    lookahead = (Lookahead(model, t.lookahead.every, t.lookahead.decay, t.lookahead.decay_power)
                 if t.lookahead.every else None)
    def compiled_if_asked(module: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(module, dynamic=False) if t.compile else module

    compiled = compiled_if_asked(model)  # evaluation reads the plain module; training, DDP's wrapper if any
    forward = compiled if world.size == 1 else compiled_if_asked(world.wrap(model))
    step = TrainStep(model, forward, optimizer, scaler, build_criterion(cfg.aug.get("mix"), t.label_smoothing),
                     autocast, build_schedule(cfg.sched), plan, build_mix(cfg.aug, num_classes, train_loader.generator),
                     ema, lookahead, world)
    return Training(model, forward, ema.module if ema else compiled, optimizer, scaler, step, train_loader,
                    test_loader, val_loader, ema, lookahead, world), plan


def stop_reason(training: Training, state: RunState, plan: Plan, clock: Clock, interrupted: threading.Event) -> str:
    """After a step: "epochs" to go on, or why training stops ("diverged", "interrupted", "budget"),
    the same answer on every rank.

    One process reads its host flags (Ctrl-C, budget) after every step and its losses (one sync)
    every DIVERGENCE_CHECK_EVERY steps, at the last step and when a flag is up. Several processes
    decide at those steps and at each epoch's end only, on all three at once (one all-reduce of the
    flags), so a rank never waits on a collective that another has skipped: under DDP a budget or a
    Ctrl-C stops training at the next such step."""
    world = training.world
    at_check = state.step % DIVERGENCE_CHECK_EVERY == 0 or state.step >= plan.total_steps
    if world.size > 1 and not (at_check or training.train_loader.epoch_done):
        return "epochs"
    host = [interrupted.is_set(), clock.over_budget()]
    diverged = (at_check or world.size > 1 or any(host)) and training.step.diverged(state.step) is not None
    flags = world.any(diverged, *host)
    return next((reason for reason, flag in zip(("diverged", "interrupted", "budget"), flags) if flag), "epochs")


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train `cfg.model` per the config; write metrics.csv, curves.png, confusion.png, samples.png,
    checkpoints/ and summary.json into `run_dir`; return the summary (accuracies as fractions,
    seconds of training and of compilation apart). With `data.val_split=N`, N of the training images
    (stratified by class, drawn with `data.val_seed`) are held out: never trained on, not used to fit
    the preprocessing, evaluated beside the test set at every evaluation, and they choose best.pt.

    Inside a process group (`distributed.process_group`: torchrun, submitit tasks) every rank calls
    it with the same config; each trains on batch_size / world size images a step; rank 0 writes its
    `run_dir` (the other ranks' `run_dir` is replaced by rank 0's) and every rank returns the same summary.

    Raises ConfigError (a bad value, a batch that does not divide among the processes, or a resume
    under a config that changes what a step means), CheckpointError, DatasetError or OutputError,
    each with a one-line message.
    """
    validate_config(cfg)
    t = cfg.trainer
    world = World.current()
    if t.batch_size % world.size:
        raise ConfigError(f"trainer.batch_size={t.batch_size} is the global batch: it must divide evenly among the "
                          f"{world.size} processes (WORLD_SIZE={world.size}); use a multiple of {world.size}")
    run_dir = Path(world.broadcast(str(run_dir)))  # rank 0's folder, which its messages name on every rank
    config = plain_config(cfg)
    resume_from, checkpoint = checkpoint_to_resume(t.resume, run_dir, config, world)  # before this run writes anything

    device = world.device(t.device)
    amp_dtype = resolve_amp(t.amp, device)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    configure_determinism(t.deterministic, device)
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    np.random.seed(t.seed)
    recorder = Recorder(run_dir, {
        "status": "running", "model": cfg.model.name, "optim": cfg.optim.name,
        "aug": "+".join(filter(None, (cfg.aug.name, cfg.aug.get("mix")))), "command": command_line(),
        "versions": {"cifarbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git": running_source_state(), "config": config,
    }, t.plots, validation=cfg.data.val_split != 0, writes=world.main,
        loggers=Loggers(cfg.logger, config, resumed=checkpoint.get("loggers") if checkpoint else None)
        if world.main else None)

    # Data (decoded once, to the device once as uint8; kept for the next job with the same data), model
    # and whitening init: a speed run's clock counts the on-device preparation, so these are training
    # seconds, charged at what preparing the data took even when it was reused (a resume restores its own).
    data = prepared_data(cfg.data, device)
    recorder.summary["data_preparation"] = {"from_cache": data.from_cache, "seconds": round(data.prepare_seconds, 3)}
    train_images, train_labels, preprocess = data.train_images, data.train_labels, data.preprocess
    train_size = len(train_labels)
    if t.drop_last and t.batch_size > train_size:
        raise ConfigError(f"trainer.batch_size={t.batch_size} with trainer.drop_last=true: {train_size} training "
                          f"images make no full batch; lower the batch size or set trainer.drop_last=false")
    evaluation_sets = [(data.test_images, data.test_labels)]
    if len(data.val_labels):
        evaluation_sets.append((data.val_images, data.val_labels))
    if min(len(labels) for _, labels in evaluation_sets) < world.size:
        raise ConfigError(f"{min(len(labels) for _, labels in evaluation_sets)} evaluation images for {world.size} "
                          f"processes: each evaluates a share; raise data.test_subset (or data.val_split)")
    state = RunState(train_seconds=data.prepare_seconds, window_seconds=data.prepare_seconds)
    clock = Clock(device, state, t.budget_min * 60 if t.budget_min else math.inf)
    with clock.training():
        model = build_model(cfg.model, len(data.classes), train_images.shape[1:])
        model = model.to(device, memory_format=memory_format)
        if t.sync_bn:
            model = world.sync_batchnorm(model, device)
        first_conv = whiten_first_conv(model, preprocess(train_images[:5000])) if t.whiten_init else None
    torch.manual_seed(rank_seed(t.seed, world.rank))  # each rank its own dropout and stochastic-depth draws
    training, plan = build_training(cfg, model, first_conv, preprocess, train_images, train_labels, evaluation_sets,
                                    autocast, amp_dtype, len(data.classes), clock.budget_s, world)
    train_loader, step, lookahead = training.train_loader, training.step, training.lookahead
    extra = {"config": config, "preprocess": preprocess_state(preprocess), "classes": list(data.classes)}
    if checkpoint is not None:
        state = clock.state = training.restore(checkpoint, t.seed)
        recorder.adopt_best(Path(resume_from).with_name("best.pt"))
        if checkpoint["config"]["trainer"]["epochs"] != t.epochs:
            log.info("trainer.epochs changed from %s to %s: the schedule is re-planned over %d steps",
                     checkpoint["config"]["trainer"]["epochs"], t.epochs, plan.total_steps)
        log.info("resumed from %s at step %d (epoch %d, batch %d; %.1f s of training)", resume_from, state.step,
                 train_loader.epoch, train_loader.batch, state.train_seconds)
    if t.compile:
        with clock.compiling():
            warm_up_compiled(training, autocast, t.tta)
    params = count_params(model)
    recorder.summary.update(params=params, device=describe_device(device), processes=world.size,
                            amp=str(amp_dtype).removeprefix("torch.") if amp_dtype else "off")
    log.info("%s: %s parameters, %d training images (%d held out for validation), %d steps/epoch, %d steps on %s "
             "× %d process(es) (amp: %s)", cfg.model.name, f"{params:,}", len(train_images), len(data.val_labels),
             len(train_loader), plan.total_steps, recorder.summary["device"], world.size, recorder.summary["amp"])

    stopped_by, predictions = "epochs", None
    with deferred_interrupt() as interrupted:
        while state.step < plan.total_steps and stopped_by == "epochs":
            training.compiled.train()
            with clock.training():
                for images, labels in tqdm(train_loader, desc=f"epoch {state.step // len(train_loader) + 1}", leave=False,
                                           disable=None if t.progress and world.main else True, unit="batch"):
                    step(images, labels, state.step, clock.elapsed(), train_loader.loss_weight())
                    state.step += 1
                    stopped_by = stop_reason(training, state, plan, clock, interrupted)
                    if stopped_by != "epochs" or state.step >= plan.total_steps:
                        break
            if (stopped_by == "epochs" and state.step < plan.total_steps and train_loader.epoch_done
                    and train_loader.epoch % t.eval_every == 0):  # (the final evaluation comes after the loop)
                predictions = evaluate_and_save(training, state, recorder, autocast, t.tta, extra)

    if stopped_by == "diverged":  # keep the last good checkpoint; record what happened (a rank's first bad step)
        reason = next(filter(None, world.gather_objects(step.diverged(state.step))))
        log.error("diverged: %s; %s", reason, recorder.last_good())
        recorder.summary["error"] = f"{reason}; {recorder.last_good()}"
        return recorder.finish(state, "diverged", "diverged")
    if stopped_by == "interrupted":  # a checkpoint at this very step: resume continues with the next batch
        recorder.save(training.checkpoint(state, extra))
        log.warning("interrupted at step %d; resume with trainer.resume=%s", state.step, recorder.last)
        return recorder.finish(state, "interrupted", "interrupted")
    if lookahead is not None:
        lookahead.finish()  # evaluate and keep the slow weights
    if not state.rows or state.rows[-1]["step"] != state.step:  # the final evaluation always happens
        predictions = evaluate_and_save(training, state, recorder, autocast, t.tta, extra)
    elif predictions is None:  # resumed after its final evaluation (stopped while drawing): predict again
        predictions = evaluate(training.eval_model, training.test_loader, autocast, t.tta, world)[2]
    diagnostics = functools.partial(write_diagnostics, run_dir, data.test_images, data.test_labels,
                                    predictions.numpy(), data.classes)
    return recorder.finish(state, "completed", stopped_by, diagnostics)
