"""Where a run's figures are drawn: here, or, for the jobs of a sweep run in this process, in one
background process, so the next job starts while the previous job's figures render.

`draw(plot, path, *args)` calls `plot(path, *args)` (a module-level function that writes the PNG at
`path`) at once, or, inside `in_background()`, hands it to a worker process (started on first use,
with "spawn": no fork of a process holding torch's threads). The CLI draws in the background for the
jobs of a multirun under Hydra's basic launcher; the WaitForFigures callback (registered in the root
config) waits for every pending figure when the multirun ends, and the interpreter's exit waits too.
The worker ignores Ctrl-C, so figures handed over before an interrupt are still written. A figure that
fails in the background is a warning, not a failed job.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)
_background = False
_worker: ProcessPoolExecutor | None = None
_pending: list[tuple[Path, Future]] = []


@contextlib.contextmanager
def in_background(enabled: bool = True):
    """Within the block, `draw` hands figures to the background worker (when `enabled`)."""
    global _background
    previous, _background = _background, enabled
    try:
        yield
    finally:
        _background = previous


def _ignore_interrupts():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def draw(plot, path: Path, *args, **kwargs):
    """`plot(path, *args, **kwargs)` now, or in the background worker inside `in_background()` (the
    arguments are pickled for it: pass data that is not changed afterwards)."""
    global _worker
    if not _background:
        plot(path, *args, **kwargs)
        return
    if _worker is None:
        _worker = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_ignore_interrupts)
    _pending.append((path, _worker.submit(plot, path, *args, **kwargs)))


def wait():
    """Block until every figure handed to the worker is written; log a warning for each that failed."""
    while _pending:
        path, future = _pending.pop(0)
        try:
            future.result()
        except Exception as e:  # the figure is lost, the run's results are not
            log.warning("could not draw %s (%s: %s)", path, type(e).__name__, e)


class WaitForFigures(Callback):
    """When a multirun ends, wait until the figures its jobs handed to the background are written."""

    def on_multirun_end(self, config, **kwargs):
        wait()
