"""The training clock: owns the seconds a run reports, the wall-clock budget and the CUDA
synchronisation points. Training time covers what a speed run counts (data preparation on the
device, the whitening init, every training step); compilation is timed apart; evaluation is not timed.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch


@dataclass
class RunState:
    """Where a run stands; with the model, optimizer and loader states, all a checkpoint restores.

    step: optimizer steps done; train_seconds / compile_seconds: seconds of training / compilation so
    far; window_seconds: training seconds since the last evaluation (for images/s); rows: the
    metrics rows written so far; best_acc: the best selection accuracy so far (validation accuracy with
    a validation split, else test accuracy; a fraction; -1 before any).
    """
    step: int = 0
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    window_seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)
    best_acc: float = -1.0


class Clock:
    """Adds timed intervals to a RunState. `training()` and `compiling()` synchronise the device at
    both ends (the clock stops when the GPU has finished, not when the host has queued); `elapsed()`
    and `over_budget()` read the host clock only, so the step never waits for them."""

    def __init__(self, device: torch.device, state: RunState, budget_s: float = math.inf):
        self.device, self.state, self.budget_s = device, state, budget_s
        self._started: float | None = None

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def training(self):
        self.synchronize()
        self._started = time.perf_counter()
        try:
            yield
        finally:
            self.synchronize()
            seconds = time.perf_counter() - self._started
            self._started = None
            self.state.train_seconds += seconds
            self.state.window_seconds += seconds

    @contextlib.contextmanager
    def compiling(self):
        self.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.synchronize()
            self.state.compile_seconds += time.perf_counter() - start

    def elapsed(self) -> float:
        """Training seconds so far, the running interval included (host time)."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.state.train_seconds + running

    def over_budget(self) -> bool:
        return self.elapsed() >= self.budget_s
