"""The training loop: one loop for every model, optimizer, augmentation, device and precision.

`train(cfg, run_dir)` reads top to bottom: set up (checks, the resume decision, device, precision,
seeds) → the run folder's recorder → data on the device, network and whitening init (timed as
training, as speed runs count them) → loaders, optimizer, schedule, averaging, the step
(engine/build.py) → restore a checkpoint (engine/resume.py) → compile every graph up front (timed
apart) → the loop → the final evaluation and files (run/recorder.py). The step does no host–device
synchronisation; a divergence check reads one flag every 50 steps.

Under several processes (`core.distributed`: torchrun or submitit's tasks) the same function runs on
every rank: `trainer.batch_size` is the global batch, each rank trains on its share of it through DDP
and evaluates its share of the test set; the ranks agree on when to stop (`stop_reason`); rank 0 alone
writes the run folder.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import threading
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from cifarbench.core.clock import Clock, RunState
from cifarbench.core.device import describe_device
from cifarbench.data.prepared import PreparedData, prepared_data
from cifarbench.data.preprocess import preprocess_state
from cifarbench.engine.build import Setup, Training, build_network, build_training, set_up, warm_up_compiled
from cifarbench.engine.evaluate import evaluate
from cifarbench.engine.step import DIVERGENCE_CHECK_EVERY, Plan
from cifarbench.models import count_params
from cifarbench.run.diagnostics import write_diagnostics
from cifarbench.run.layout import RunFolder
from cifarbench.run.metrics import metrics_row
from cifarbench.run.recorder import Recorder, start_recorder

log = logging.getLogger(__name__)


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


def stop_reason(training: Training, state: RunState, plan: Plan, clock: Clock,
                interrupted: threading.Event) -> str | None:
    """After a step: None to go on, or why training stops ("epochs", "diverged", "interrupted", "budget"),
    the same answer on every rank.

    One process reads its host flags (Ctrl-C, budget) after every step and its losses (one sync)
    every DIVERGENCE_CHECK_EVERY steps, at the last step and when a flag is up. Several processes
    decide at those steps and at each epoch's end only, on all three at once (one all-reduce of the
    flags), so a rank never waits on a collective that another has skipped: under DDP a budget or a
    Ctrl-C stops training at the next such step."""
    world, done = training.world, state.step >= plan.total_steps
    at_check = state.step % DIVERGENCE_CHECK_EVERY == 0 or done
    if world.size > 1 and not (at_check or training.train_loader.epoch_done):
        return None
    host = [interrupted.is_set(), clock.over_budget()]
    diverged = (at_check or world.size > 1 or any(host)) and training.train_step.diverged(state.step) is not None
    flags = world.any(diverged, *host)
    reason = next((reason for reason, flag in zip(("diverged", "interrupted", "budget"), flags) if flag), None)
    return reason or ("epochs" if done else None)


class Evaluation:
    """Evaluate on the validation split (if any) and the test set, the same way; add a metrics row;
    checkpoint (last.pt, and best.pt at a new best by the recorder's selection accuracy). Calling it
    returns the test predictions ((N,) int64, CPU). Every rank calls it (the evaluation is sharded, the
    metrics summed over ranks)."""

    def __init__(self, training: Training, recorder: Recorder, setup: Setup, data: PreparedData, tta: str):
        self.training, self.recorder, self.autocast, self.tta = training, recorder, setup.autocast, tta
        self.checkpoint = functools.partial(training.checkpoint, config=setup.config,
                                            preprocess=preprocess_state(data.preprocess), classes=list(data.classes))

    def __call__(self, state: RunState) -> torch.Tensor:
        training, world = self.training, self.training.world
        val = ((None, None) if training.val_loader is None
               else evaluate(training.eval_model, training.val_loader, self.autocast, self.tta, world)[:2])
        test_loss, test_acc, predictions = evaluate(training.eval_model, training.test_loader, self.autocast,
                                                    self.tta, world)
        best = self.recorder.add_row(state, metrics_row(state, len(training.train_loader),
                                                        training.optimizer.param_groups[0]["lr"],
                                                        training.train_step.window(), (test_loss, test_acc), val))
        training.train_step.reset()
        state.window_seconds = 0.0
        self.recorder.save(self.checkpoint(state), best)
        return predictions


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train `cfg.model` per the config; write metrics.csv, curves.png, confusion.png, samples.png,
    checkpoints/ and summary.json into `run_dir` (run/layout.py); return the summary (accuracies as
    fractions, seconds of training and of compilation apart). With `data.val_split=N`, N of the training
    images (stratified by class, drawn with `data.val_seed`) are held out: never trained on, not used
    to fit the preprocessing, evaluated beside the test set at every evaluation, and they choose best.pt.

    Inside a process group (`core.distributed.process_group`: torchrun, submitit tasks) every rank calls
    it with the same config; each trains on batch_size / world size images a step; rank 0 writes its
    `run_dir` (the other ranks' `run_dir` is replaced by rank 0's) and every rank returns the same summary.

    Raises ConfigError (a bad value, caught before any data loads, or a resume under a config that
    changes what a step means), CheckpointError, DatasetError or OutputError, each with a one-line message.
    """
    setup = set_up(cfg, run_dir)
    t, world = cfg.trainer, setup.world
    recorder = start_recorder(cfg, setup.run_dir, setup.config, setup.world, setup.checkpoint)
    # Data (decoded once, to the device once as uint8; kept for the next job with the same data), model
    # and whitening init: a speed run's clock counts the on-device preparation, so these are training
    # seconds, charged at what preparing the data took even when it was reused (a resume restores its own).
    data = prepared_data(cfg.data, setup.device)
    recorder.summary["data_preparation"] = {"from_cache": data.from_cache, "seconds": round(data.prepare_seconds, 3)}
    state = RunState(train_seconds=data.prepare_seconds, window_seconds=data.prepare_seconds)
    clock = Clock(setup.device, state, t.budget_min * 60 if t.budget_min else math.inf)
    with clock.training():
        model, first_conv = build_network(cfg, setup, data)
    training, plan = build_training(cfg, setup, model, first_conv, data, clock.budget_s)
    evaluate_and_save = Evaluation(training, recorder, setup, data, t.tta)
    if setup.checkpoint is not None:
        state = clock.state = resume(training, setup, recorder, plan, t.seed)
    if t.compile:
        with clock.compiling():
            warm_up_compiled(training, setup.autocast, t.tta)
    describe(recorder, cfg, setup, data, training, plan)

    stopped_by = None if state.step < plan.total_steps else "epochs"  # (a resumed run may have no step left)
    predictions, train_loader = None, training.train_loader
    with deferred_interrupt() as interrupted:
        while stopped_by is None:
            training.train_forward.train()
            with clock.training():
                for images, labels in tqdm(train_loader, desc=f"epoch {state.step // len(train_loader) + 1}",
                                           leave=False, disable=None if t.progress and world.main else True,
                                           unit="batch"):
                    training.train_step(images, labels, state.step, clock.elapsed(), train_loader.loss_weight())
                    state.step += 1
                    stopped_by = stop_reason(training, state, plan, clock, interrupted)
                    if stopped_by is not None:
                        break
            if stopped_by is None and train_loader.epoch_done and train_loader.epoch % t.eval_every == 0:
                predictions = evaluate_and_save(state)  # (the final evaluation comes after the loop)
    return finish(training, state, stopped_by, predictions, recorder, evaluate_and_save, setup, data, t.tta)


def resume(training: Training, setup: Setup, recorder: Recorder, plan: Plan, seed: int) -> RunState:
    """Put the checkpoint `setup` holds back into `training`; returns its RunState. The folder the
    checkpoint came from lends its best.pt until this run evaluates better."""
    state = training.restore(setup.checkpoint, seed)
    recorder.adopt_best(RunFolder.of_checkpoint(setup.resume_from).best)
    epochs = (setup.checkpoint.config["trainer"]["epochs"], setup.config["trainer"]["epochs"])
    if epochs[0] != epochs[1]:
        log.info("trainer.epochs changed from %s to %s: the schedule is re-planned over %d steps", *epochs,
                 plan.total_steps)
    loader = training.train_loader
    log.info("resumed from %s at step %d (epoch %d, batch %d; %.1f s of training)", setup.resume_from, state.step,
             loader.epoch, loader.batch, state.train_seconds)
    return state


def describe(recorder: Recorder, cfg: DictConfig, setup: Setup, data: PreparedData, training: Training, plan: Plan):
    """Record the parameters, device, processes and precision in the summary, and log them in one line."""
    params = count_params(training.model)
    recorder.summary.update(params=params, device=describe_device(setup.device), processes=setup.world.size,
                            amp=str(setup.amp_dtype).removeprefix("torch.") if setup.amp_dtype else "off")
    log.info("%s: %s parameters, %d training images (%d held out for validation), %d steps/epoch, %d steps on %s "
             "× %d process(es) (amp: %s)", cfg.model.name, f"{params:,}", len(data.train_images),
             len(data.val_labels), len(training.train_loader), plan.total_steps, recorder.summary["device"],
             setup.world.size, recorder.summary["amp"])


def finish(training: Training, state: RunState, stopped_by: str, predictions: torch.Tensor | None,
           recorder: Recorder, evaluate_and_save: Evaluation, setup: Setup, data: PreparedData, tta: str) -> dict:
    """End the run as `stopped_by` says and return its summary: a diverged run keeps its last good
    checkpoint and records its first bad step; an interrupted one saves a checkpoint at this very step
    (resume continues with the next batch); otherwise the final evaluation (always at the last step),
    the diagnostics figures and the final summary."""
    world = training.world
    if stopped_by == "diverged":
        reason = next(filter(None, world.gather_objects(training.train_step.diverged(state.step))))
        log.error("diverged: %s; %s", reason, recorder.last_good())
        recorder.summary["error"] = f"{reason}; {recorder.last_good()}"
        return recorder.finish(state, "diverged", "diverged")
    if stopped_by == "interrupted":
        recorder.save(evaluate_and_save.checkpoint(state))
        log.warning("interrupted at step %d; resume with trainer.resume=%s", state.step, recorder.folder.last)
        return recorder.finish(state, "interrupted", "interrupted")
    if training.lookahead is not None:
        training.lookahead.finish()  # evaluate and keep the slow weights
    if not state.rows or state.rows[-1]["step"] != state.step:
        predictions = evaluate_and_save(state)
    elif predictions is None:  # resumed after its final evaluation (stopped while drawing): predict again
        predictions = evaluate(training.eval_model, training.test_loader, setup.autocast, tta, world)[2]
    diagnostics = functools.partial(write_diagnostics, setup.run_dir, data.test_images, data.test_labels,
                                    predictions.numpy(), data.classes)
    return recorder.finish(state, "completed", stopped_by, diagnostics)
