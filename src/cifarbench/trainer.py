"""The training loop: one loop for every model, optimizer, augmentation, device and precision.

`train(cfg, run_dir)` reads top to bottom: checks and the resume decision → device, precision,
seeds → the run folder's recorder → data on the device, model, whitening init (timed as training,
as speed runs count them) → optimizer, schedule, averaging, the step → restore a checkpoint →
compile every graph up front (timed apart) → the loop → the final evaluation and files.

The parts live by concern: `step.TrainStep` (one optimisation step), `clock` (RunState, budget,
seconds, CUDA sync points), `recorder` (metrics, checkpoints, plots, summary), `evaluate`
(evaluation and TTA), `averaging` (EMA, Lookahead), `data.loader` (the data and its position).
The step does no host–device synchronisation; a divergence check reads one flag every 50 steps.
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
from cifarbench.averaging import EMA, Lookahead
from cifarbench.aug import build_augment, build_mix
from cifarbench.checkpoint import (RESUMABLE_CHANGES, config_changes, find_resumable, load_checkpoint,
                                   plain_config, restore_rng, rng_state)
from cifarbench.clock import Clock, RunState
from cifarbench.data import DeviceLoader, build_preprocess, load_dataset, training_subset, validation_split
from cifarbench.data.preprocess import preprocess_state
from cifarbench.device import describe_device, resolve_amp, resolve_device
from cifarbench.diagnostics import write_diagnostics
from cifarbench.evaluate import evaluate, tta_views
from cifarbench.models import build_model, count_params
from cifarbench.models.init import whiten_first_conv
from cifarbench.optim import build_optimizer
from cifarbench.provenance import command_line, git_state
from cifarbench.recorder import Recorder, metrics_row
from cifarbench.registry import ConfigError
from cifarbench.sched import build_schedule
from cifarbench.step import DIVERGENCE_CHECK_EVERY, Plan, TrainStep, build_criterion
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
    torch.compile wrapper (same parameters); `eval_model` is what evaluation reads (the EMA's
    weights when there is one); `val_loader` holds the validation split (None without one)."""
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

    def checkpoint(self, state: RunState, extra: dict) -> dict:
        """Everything a resume needs, as tensors and plain containers (`extra`: config, classes, ...)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "lookahead": self.lookahead.state_dict() if self.lookahead else None,
                "loader": self.train_loader.state_dict(), "window": self.step.state_dict(),
                "state": vars(state), "rng": rng_state(), **extra}

    def restore(self, checkpoint: dict) -> RunState:
        """Load a checkpoint (tensors on the CPU: each piece moves to where it lives); returns its RunState."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])  # moves the state to the parameters' device
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None and checkpoint["ema"]:
            self.ema.load_state_dict(checkpoint["ema"])
        if self.lookahead is not None and checkpoint["lookahead"]:
            self.lookahead.load_state_dict(checkpoint["lookahead"])
        self.train_loader.load_state_dict(checkpoint["loader"])
        self.step.load_state_dict(checkpoint["window"])
        restore_rng(checkpoint["rng"])
        return RunState(**checkpoint["state"])


def warm_up_compiled(training: Training, autocast, tta: str):
    """Compile every graph the run will use before it starts (each training batch size forward and
    backward, each evaluation batch size under no_grad), so nothing recompiles inside the timed loop.
    The model's weights, statistics and the RNG are left as they were: no step is taken."""
    saved = {name: tensor.clone() for name, tensor in training.model.state_dict().items()}
    rng = rng_state()

    def inputs(loader: DeviceLoader, size: int) -> torch.Tensor:
        return loader.preprocess(loader.images[:size]).contiguous(memory_format=loader.memory_format)

    training.compiled.train()
    for size in sorted({end - start for start, end in training.train_loader.bounds}):
        with autocast:
            training.compiled(inputs(training.train_loader, size)).float().mean().backward()
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
    test predictions ((N,) int64, CPU)."""
    val = ((None, None) if training.val_loader is None
           else evaluate(training.eval_model, training.val_loader, autocast, tta)[:2])
    test_loss, test_acc, predictions = evaluate(training.eval_model, training.test_loader, autocast, tta)
    best = recorder.add_row(state, metrics_row(state, len(training.train_loader),
                                               training.optimizer.param_groups[0]["lr"], training.step.window(),
                                               (test_loss, test_acc), val))
    training.step.reset()
    state.window_seconds = 0.0
    recorder.save(training.checkpoint(state, extra), best)
    return predictions


def checkpoint_to_resume(resume: str | None, run_dir: Path, config: dict) -> tuple[str | None, dict | None]:
    """`trainer.resume` (null, auto or a path) → (path, loaded checkpoint), or (None, None) to start afresh.
    Raises ConfigError when the checkpoint's config differs in a key that changes what a step means."""
    resume_from = find_resumable(run_dir, config) if resume == "auto" else resume
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
                   budget_s: float) -> tuple[Training, Plan]:
    """The loaders (training; test, then validation if given, from uint8 NCHW arrays), optimizer,
    scaler, averaging, compiled model and step of a run, and its Plan; every decision before the loop."""
    t = cfg.trainer
    device, memory_format = train_images.device, torch.channels_last if t.channels_last else torch.contiguous_format
    if first_conv is not None and t.whiten_freeze:
        first_conv.weight.requires_grad_(False)
    bias_epochs = ({id(first_conv.bias): t.whiten_bias_epochs}
                   if first_conv is not None and first_conv.bias is not None and t.whiten_bias_epochs is not None
                   else None)
    train_loader = DeviceLoader(train_images, train_labels, t.batch_size, preprocess, build_augment(cfg.aug),
                                seed=t.seed, memory_format=memory_format,
                                alternating_flip=cfg.aug.get("flip") == "alternating", drop_last=t.drop_last)
    test_loader, val_loader = [DeviceLoader(torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device),
                                            t.eval_batch_size, preprocess, shuffle=False, memory_format=memory_format)
                               for images, labels in evaluation_sets] + [None] * (2 - len(evaluation_sets))
    plan = Plan(math.ceil(t.epochs * len(train_loader)), len(train_loader), budget_s)
    optimizer = build_optimizer(cfg.optim, model, bias_epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = EMA(model, t.ema, warmup=t.ema_warmup) if t.ema else None
    lookahead = (Lookahead(model, t.lookahead.every, t.lookahead.decay, t.lookahead.decay_power)
                 if t.lookahead.every else None)
    compiled = torch.compile(model, dynamic=False) if t.compile else model
    step = TrainStep(model, compiled, optimizer, scaler, build_criterion(cfg.aug.get("mix"), t.label_smoothing),
                     autocast, build_schedule(cfg.sched), plan, build_mix(cfg.aug, num_classes, train_loader.generator),
                     ema, lookahead)
    return Training(model, compiled, ema.module if ema else compiled, optimizer, scaler, step, train_loader,
                    test_loader, val_loader, ema, lookahead), plan


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train `cfg.model` per the config; write metrics.csv, curves.png, confusion.png, samples.png,
    checkpoints/ and summary.json into `run_dir`; return the summary (accuracies as fractions,
    seconds of training and of compilation apart). With `data.val_split=N`, N of the training images
    (stratified by class, drawn with `data.val_seed`) are held out: never trained on, not used to fit
    the preprocessing, evaluated beside the test set at every evaluation, and they choose best.pt.

    Raises ConfigError (a bad value, or a resume under a config that changes what a step means),
    CheckpointError, DatasetError or OutputError, each with a one-line message.
    """
    validate_config(cfg)
    t = cfg.trainer
    run_dir = Path(run_dir)
    config = plain_config(cfg)
    resume_from, checkpoint = checkpoint_to_resume(t.resume, run_dir, config)  # before this run writes anything

    device = resolve_device(t.device)
    amp_dtype = resolve_amp(t.amp, device)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    configure_determinism(t.deterministic, device)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    val_split = cfg.data.val_split
    recorder = Recorder(run_dir, {
        "status": "running", "model": cfg.model.name, "optim": cfg.optim.name,
        "aug": "+".join(filter(None, (cfg.aug.name, cfg.aug.get("mix")))), "command": command_line(),
        "versions": {"cifarbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git": git_state(), "config": config,
    }, t.plots, validation=val_split != 0)

    # Data (decoded once, to the device once as uint8), model and whitening init: a speed run's clock
    # counts the on-device preparation, so these are training seconds (a resume restores its own).
    data = load_dataset(cfg.data)
    subset = training_subset(data.train_labels, cfg.data.train_subset, cfg.data.subset_seed)
    train_part, val_part = (subset[part] for part in validation_split(data.train_labels[subset], val_split,
                                                                       cfg.data.val_seed))
    train_size = len(train_part)
    if t.drop_last and t.batch_size > train_size:
        raise ConfigError(f"trainer.batch_size={t.batch_size} with trainer.drop_last=true: {train_size} training "
                          f"images make no full batch; lower the batch size or set trainer.drop_last=false")
    test_images, test_labels = data.test_images[:cfg.data.test_subset], data.test_labels[:cfg.data.test_subset]
    state = RunState()
    clock = Clock(device, state, t.budget_min * 60 if t.budget_min else math.inf)
    with clock.training():
        train_images = torch.from_numpy(data.train_images[train_part]).to(device)
        train_labels = torch.from_numpy(data.train_labels[train_part]).to(device)
        preprocess = build_preprocess(cfg.data.preprocess, train_images, cache_dir=cfg.data.root).to(device)
        model = build_model(cfg.model, len(data.classes), data.train_images.shape[1:])
        model = model.to(device, memory_format=memory_format)
        first_conv = whiten_first_conv(model, preprocess(train_images[:5000])) if t.whiten_init else None
    evaluation_sets = [(test_images, test_labels)]
    if len(val_part):
        evaluation_sets.append((data.train_images[val_part], data.train_labels[val_part]))
    training, plan = build_training(cfg, model, first_conv, preprocess, train_images, train_labels, evaluation_sets,
                                    autocast, amp_dtype, len(data.classes), clock.budget_s)
    train_loader, step, lookahead = training.train_loader, training.step, training.lookahead
    extra = {"config": config, "preprocess": preprocess_state(preprocess), "classes": list(data.classes)}
    if checkpoint is not None:
        state = clock.state = training.restore(checkpoint)
        if checkpoint["config"]["trainer"]["epochs"] != t.epochs:
            log.info("trainer.epochs changed from %s to %s: the schedule is re-planned over %d steps",
                     checkpoint["config"]["trainer"]["epochs"], t.epochs, plan.total_steps)
        log.info("resumed from %s at step %d (epoch %d, batch %d; %.1f s of training)", resume_from, state.step,
                 train_loader.epoch, train_loader.batch, state.train_seconds)
    if t.compile:
        with clock.compiling():
            warm_up_compiled(training, autocast, t.tta)
    params = count_params(model)
    recorder.summary.update(params=params, device=describe_device(device),
                            amp=str(amp_dtype).removeprefix("torch.") if amp_dtype else "off")
    log.info("%s: %s parameters, %d training images (%d held out for validation), %d steps/epoch, %d steps on %s (amp: %s)", cfg.model.name,
             f"{params:,}", len(train_images), len(val_part), len(train_loader), plan.total_steps, recorder.summary["device"],
             recorder.summary["amp"])

    stopped_by, predictions = "epochs", None
    with deferred_interrupt() as interrupted:
        while state.step < plan.total_steps and stopped_by == "epochs":
            training.compiled.train()
            with clock.training():
                for images, labels in tqdm(train_loader, desc=f"epoch {state.step // len(train_loader) + 1}", leave=False,
                                           disable=None if t.progress else True, unit="batch"):
                    step(images, labels, state.step, clock.elapsed())
                    state.step += 1
                    if state.step % DIVERGENCE_CHECK_EVERY == 0 and step.diverged(state.step):
                        stopped_by = "diverged"
                    elif interrupted.is_set():
                        stopped_by = "interrupted"
                    elif clock.over_budget():
                        stopped_by = "budget"
                    if stopped_by != "epochs" or state.step >= plan.total_steps:
                        break
            if (stopped_by == "epochs" and state.step < plan.total_steps and train_loader.epoch_done
                    and train_loader.epoch % t.eval_every == 0):  # (the final evaluation comes after the loop)
                predictions = evaluate_and_save(training, state, recorder, autocast, t.tta, extra)

    reason = step.diverged(state.step)
    if reason:  # keep the last good checkpoint; record what happened
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
    diagnostics = (functools.partial(write_diagnostics, run_dir, test_images, test_labels, predictions.numpy(),
                                     data.classes) if predictions is not None else None)
    return recorder.finish(state, "completed", stopped_by, diagnostics)
