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
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from cifarbench.core.clock import Clock, RunState
from cifarbench.core.device import describe_device
from cifarbench.core.hardware import HardwareMonitor
from cifarbench.data.prepared import PreparedData, prepared_data
from cifarbench.data.preprocess import preprocess_state
from cifarbench.engine.build import (Setup, Training, build_network, build_training, compiled_graphs, set_up,
                                    warm_up_compiled)
from cifarbench.engine.evaluate import evaluate
from cifarbench.engine.step import DIVERGENCE_CHECK_EVERY, Plan
from cifarbench.models import count_params
from cifarbench.run.diagnostics import write_diagnostics
from cifarbench.run.layout import RunFolder
from cifarbench.run.metrics import metrics_row
from cifarbench.run.recorder import Recorder, resume_override, start_recorder

log = logging.getLogger(__name__)


# Every signal that can be caught and whose default action ends the process, but those Python or its
# libraries use themselves (SIGPIPE, which Python ignores; SIGALRM and the profiling timers): Ctrl-C
# (SIGINT), SIGTERM (kill, scancel, docker stop, torchrun stopping its workers), SIGHUP (a closed
# terminal), SIGQUIT, SIGUSR1/SIGUSR2 (SLURM's --signal warnings) and SIGXCPU (a CPU-time limit).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1",
                                                        "SIGUSR2", "SIGXCPU") if hasattr(signal, name))
# Of those, the ones a scheduler sends to take the machine back: SIGTERM (scancel, a preemption, docker stop,
# torchrun passing on its own SIGTERM) and SIGUSR1/SIGUSR2 (SLURM's `--signal` warning before a time limit). A run
# they stop is "preempted" (to be requeued and resumed); one any other stops (Ctrl-C, a closed terminal) "interrupted".
PREEMPTION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


class StopRequest(threading.Event):
    """Set by the first stop signal this process receives; `signum` says which (None before one)."""
    signum: int | None = None


class Interrupted(KeyboardInterrupt):
    """A second stop signal: the run ends at once, without a checkpoint at this step. `signum`: which
    signal; the process exits with 128 + signum, as a shell reports a process that signal ended."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(signum: int) -> int:
    """The exit status of a run a signal stopped: 128 + its number (130 for Ctrl-C, 143 for SIGTERM,
    129 for SIGHUP), the shell's convention, so a scheduler or a sweep sees which signal it was."""
    return 128 + signum


def stop_status(signum: int) -> str:
    """The summary.json status of a run signal `signum` stopped: "preempted" for PREEMPTION_SIGNALS (the
    machine was taken back: resume it, or let the launcher requeue it), else "interrupted" (a person
    stopped it). Either way its MLflow run ends KILLED and the process exits with exit_status(signum)."""
    return "preempted" if signum in PREEMPTION_SIGNALS else "interrupted"


@contextlib.contextmanager
def deferred_interrupt():
    """The one place where signals are handled: while it is open, each of STOP_SIGNALS sets the yielded
    StopRequest (with its number) and the loop reads it after each step (several processes: at the
    steps where they agree), so the run finishes the step, saves a checkpoint and records that it was
    interrupted; a second stop signal raises Interrupted at once. Outside the main thread (where
    Python cannot handle signals) the flag is yielded and never set."""
    flag = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise Interrupted(signum)
        flag.signum = signum
        log.warning("%s (%s): finishing this step, then saving a checkpoint (%s again to abort now)",
                    stop_status(signum), signal.Signals(signum).name,
                    "Ctrl-C" if signum == signal.SIGINT else "the signal")
        flag.set()

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        for signum in STOP_SIGNALS:
            signal.signal(signum, handler)
        yield flag
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler_before is None else handler_before)


def stop_reason(training: Training, state: RunState, plan: Plan, clock: Clock,
                interrupted: StopRequest) -> str | None:
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
    metrics summed over ranks).

    `on_evaluation(row)`, when given, is called on rank 0 with each metrics row (run/metrics.py's
    `metrics_row`) after its checkpoint is saved, and returns whether the run should stop there (a search's
    pruner: cifarbench.search.trial); the ranks agree on it, and `pruned` becomes true. Every rank must be
    given a hook or none (the agreement is a collective)."""

    def __init__(self, training: Training, recorder: Recorder, setup: Setup, data: PreparedData, tta: str,
                 on_evaluation: Callable[[dict], bool] | None = None):
        self.training, self.recorder, self.autocast, self.tta = training, recorder, setup.autocast, tta
        self.on_evaluation, self.pruned = on_evaluation, False
        self.hardware = HardwareMonitor(setup.device)  # each row's window: since the previous row
        self.checkpoint = functools.partial(training.checkpoint, config=setup.config,
                                            preprocess=preprocess_state(data.preprocess), classes=list(data.classes))

    def __call__(self, state: RunState) -> torch.Tensor:
        training, world = self.training, self.training.world
        world.average_buffers(training.model, training.eval_model)  # evaluate what is saved, the same on every rank
        val = ((None, None) if training.val_loader is None
               else evaluate(training.eval_model, training.val_loader, self.autocast, self.tta, world)[:2])
        test_loss, test_acc, predictions = evaluate(training.eval_model, training.test_loader, self.autocast,
                                                    self.tta, world)
        best = self.recorder.add_row(state, metrics_row(state, len(training.train_loader),
                                                        training.optimizer.param_groups[0]["lr"],
                                                        training.train_step.window(), (test_loss, test_acc), val,
                                                        self.hardware.read()))
        training.train_step.reset()
        state.window_seconds = 0.0
        self.recorder.save(self.checkpoint(state), best)
        if self.on_evaluation is not None:
            self.pruned = world.any(world.main and bool(self.on_evaluation(state.rows[-1])))[0]
        return predictions


def train(cfg: DictConfig, run_dir: str | Path, on_evaluation: Callable[[dict], bool] | None = None) -> dict:
    """Train `cfg.model` per the config; write metrics.csv, curves.png, confusion.png, samples.png,
    checkpoints/ and summary.json into `run_dir` (run/layout.py); return the summary (accuracies as
    fractions, seconds of training and of compilation apart). With `data.val_split=N`, N of the training
    images (stratified by class, drawn with `data.val_seed`) are held out: never trained on, not used
    to fit the preprocessing, evaluated beside the test set at every evaluation, and they choose best.pt.

    Inside a process group (`core.distributed.process_group`: torchrun, submitit tasks) every rank calls
    it with the same config; each trains on batch_size / world size images a step; rank 0 writes its
    `run_dir` (the other ranks' `run_dir` is replaced by rank 0's) and every rank returns the same summary.
    `on_evaluation(row)` is called with each evaluation's metrics row (see `Evaluation`); when it returns
    true the run stops there, keeps its files and ends with status "pruned" (a search's pruner).

    Raises ConfigError (a bad value, caught before any data loads, or a resume under a config that
    changes what a step means), CheckpointError, DatasetError or OutputError, each with a one-line message.
    """
    with deferred_interrupt() as interrupted:  # from the first second: no signal leaves a run "running"
        setup = set_up(cfg, run_dir)
        t, world = cfg.trainer, setup.world
        # Data (decoded once, kept for the next job with the same data; to the device as uint8 and its statistics
        # fitted there by every job), model and whitening init: a speed run's clock counts the on-device
        # preparation, so these are training seconds, each job's own (a resume restores its own).
        data = prepared_data(cfg.data, setup.device)
        # The run starts here: a command refused before (a value, the data) leaves no summary.json, so no run.
        recorder = start_recorder(cfg, setup.run_dir, setup.config, setup.world, setup.checkpoint, setup.resume_from)
        recorder.summary["data_preparation"] = {"from_cache": data.from_cache,
                                                "seconds": round(data.prepare_seconds, 3)}
        state = RunState(train_seconds=data.prepare_seconds, window_seconds=data.prepare_seconds)
        clock = Clock(setup.device, state, t.budget_min * 60 if t.budget_min else math.inf)
        with clock.training():
            model, first_conv = build_network(cfg, setup, data)
        training, plan = build_training(cfg, setup, model, first_conv, data, clock.budget_s)
        evaluate_and_save = Evaluation(training, recorder, setup, data, t.tta, on_evaluation)
        if setup.checkpoint is not None:
            state = clock.state = resume(training, setup, recorder, plan, t.seed)
        if t.compile:
            with clock.compiling():
                warm_up_compiled(training, setup.autocast, t.tta, t.compile_mode)
        describe(recorder, cfg, setup, data, training, plan, evaluate_and_save.hardware)

        stopped_by = None if state.step < plan.total_steps else "epochs"  # (a resumed run may have no step left)
        predictions, train_loader = None, training.train_loader
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
            # Due at an epoch's end, an interrupted one's too (else its resume never makes it); the final: finish()
            if (stopped_by in (None, "interrupted") and train_loader.epoch_done
                    and train_loader.epoch % t.eval_every == 0):
                predictions = evaluate_and_save(state)
                stopped_by = stopped_by or ("pruned" if evaluate_and_save.pruned else None)
        return finish(training, state, stopped_by, predictions, recorder, evaluate_and_save, setup, data, t.tta,
                      interrupted)


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


def describe(recorder: Recorder, cfg: DictConfig, setup: Setup, data: PreparedData, training: Training, plan: Plan,
             hardware: HardwareMonitor):
    """Record the parameters, device (and `hardware`'s description of it), processes, precision and the
    images an epoch trains (`train_images`: all, or the full batches' with trainer.drop_last) in the summary,
    and log them in one line."""
    params = count_params(training.model)
    recorder.summary.update(params=params, device=describe_device(setup.device), processes=setup.world.size,
                            amp=str(setup.amp_dtype).removeprefix("torch.") if setup.amp_dtype else "off",
                            precision=cfg.trainer.precision, hardware=hardware.describe(),
                            train_images=training.train_loader.bounds[-1][1])  # per epoch
    log.info("%s: %s parameters, %d training images (%d held out for validation), %d steps/epoch, %d steps on %s "
             "× %d process(es) (amp: %s%s)", cfg.model.name, f"{params:,}", len(data.train_images),
             len(data.val_labels), len(training.train_loader), plan.total_steps, recorder.summary["device"],
             setup.world.size, recorder.summary["amp"],
             ", a half-precision network" if cfg.trainer.precision == "half" else "")


def finish(training: Training, state: RunState, stopped_by: str, predictions: torch.Tensor | None,
           recorder: Recorder, evaluate_and_save: Evaluation, setup: Setup, data: PreparedData, tta: str,
           interrupted: StopRequest) -> dict:
    """End the run as `stopped_by` says and return its summary: a diverged run keeps its last good
    checkpoint and records its first bad step; an interrupted one has a checkpoint at this very step
    (resume continues with the next batch; saved here unless the epoch's evaluation just saved it);
    otherwise the final evaluation (always at the last step), the diagnostics figures and the final
    summary, with status "completed", or "pruned" when a search's pruner stopped it at an evaluation. A stop
    signal received (`interrupted`; under several processes the one any rank received when they stopped for
    it) is recorded in the summary's `signal` (its name: SIGINT, SIGTERM, ...), and decides the status of a
    run it stopped (`stop_status`: preempted or interrupted)."""
    world = training.world
    signum = interrupted.signum
    if stopped_by == "interrupted":  # the ranks agreed to stop: every rank takes part, and learns which signal
        signum = next(filter(None, world.gather_objects(interrupted.signum)), signal.SIGINT)
    if signum is not None:
        recorder.summary["signal"] = signal.Signals(signum).name
    epochs = state.step / len(training.train_loader)
    if stopped_by == "diverged":
        reason = next(filter(None, world.gather_objects(training.train_step.diverged(state.step))))
        log.error("diverged: %s; %s", reason, recorder.last_good())
        recorder.summary["error"] = f"{reason}; {recorder.last_good()}"
        return recorder.finish(state, "diverged", "diverged", epochs)
    if stopped_by == "interrupted":
        if not state.rows or state.rows[-1]["step"] != state.step:
            recorder.save(evaluate_and_save.checkpoint(state))
        status = stop_status(signum)
        recorder.summary["resume"] = resume_override(recorder.folder)
        log.warning("%s by %s at step %d (%.2f epochs); checkpoint %s", status, recorder.summary["signal"],
                    state.step, epochs, recorder.folder.last)
        return recorder.finish(state, status, status, epochs)
    if training.lookahead is not None:
        training.lookahead.finish()  # evaluate and keep the slow weights
        if training.master is not None:  # (the one change of the master weights outside a step)
            training.master.weights_to_half()
    if not state.rows or state.rows[-1]["step"] != state.step:
        predictions = evaluate_and_save(state)
    elif predictions is None:  # resumed after its final evaluation (stopped while drawing): predict again
        predictions = evaluate(training.eval_model, training.test_loader, setup.autocast, tta, world)[2]
    if training.graphs_after_warm_up is not None:  # graphs compiled in the loop and its evaluations (0: none)
        recompiles = recorder.summary["recompiles_in_loop"] = compiled_graphs() - training.graphs_after_warm_up
        if recompiles:
            log.warning("torch.compile compiled %d graph(s) after the warm-up, inside the timed loop", recompiles)
    diagnostics = functools.partial(write_diagnostics, setup.run_dir, data.test_images, data.test_labels,
                                    predictions.numpy(), data.classes)
    return recorder.finish(state, "pruned" if stopped_by == "pruned" else "completed", stopped_by, epochs,
                           diagnostics)
