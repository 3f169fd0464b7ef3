"""Where a run's figures are drawn: here, or, for the jobs of a sweep run in this process, in one
background process, so the next job starts while the previous job's figures render.

`draw(plot, path, *args)` calls `plot(path, *args)` (a module-level function that writes the PNG at
`path`) at once, or, inside `in_background()`, hands it to a worker process (started on first use,
with "spawn": no fork of a process holding torch's threads). The CLI draws in the background for the
jobs of a multirun under Hydra's basic launcher; the WaitForFigures callback (registered in the root
config) waits for every pending figure when the multirun ends, and the interpreter's exit waits too.
The worker ignores Ctrl-C, so figures handed over before an interrupt are still written. A figure that
fails in the background is a warning, not a failed job; figures the worker could not draw because it
died (or could not start) are drawn in place. (With "spawn" the worker imports the parent's main
module: a script that runs a sweep in-process must keep its work under `if __name__ == "__main__":`,
as cifarbench's entry points do.)
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)
_background = False
_worker: ProcessPoolExecutor | None = None
_pending: list[tuple[Future, tuple]] = []  # (future, (plot, path, args, kwargs)) handed to the worker


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
    _settle(wait=False)  # what is drawn already lets go of its data
    if _worker is None:
        _worker = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_ignore_interrupts)
    try:
        _pending.append((_worker.submit(plot, path, *args, **kwargs), (plot, path, args, kwargs)))
    except (BrokenProcessPool, OSError) as e:
        _draw_here(e, plot, path, args, kwargs)


def _draw_here(error: BaseException, plot, path: Path, args: tuple, kwargs: dict):
    """The worker died or could not start: draw in this process (a new worker is started for the next figure)."""
    global _worker
    log.warning("the background figure process is gone (%s); drawing %s here", error, path)
    _worker = None
    plot(path, *args, **kwargs)


def _settle(wait: bool):
    """Collect the figures handed to the worker: every one (`wait`) or those finished already. One the
    worker died before drawing is drawn here; one whose drawing failed is a warning."""
    global _pending
    waiting = []
    for future, call in _pending:
        if not wait and not future.done():
            waiting.append((future, call))
            continue
        try:
            future.result()
        except BrokenProcessPool as e:
            _draw_here(e, *call)
        except Exception as e:  # the figure is lost, the run's results are not
            log.warning("could not draw %s (%s: %s)", call[1], type(e).__name__, e)
    _pending = waiting


def wait():
    """Block until every figure handed to the worker is written."""
    _settle(wait=True)


class WaitForFigures(Callback):
    """When a multirun ends, wait until the figures its jobs handed to the background are written."""

    def on_multirun_end(self, config, **kwargs):
        wait()
