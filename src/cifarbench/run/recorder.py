"""What a run leaves in its folder, written by one object: metrics.csv (a row per evaluation),
checkpoints/last.pt and best.pt, curves.png, confusion.png, samples.png and summary.json;
reported_vs_measured.md/.csv when the config carries a study's reported figures; and what it
hands the trackers of the `logger` group (run/trackers.py) at each evaluation and at the end.

Every file is written atomically; accuracies are fractions in [0, 1]; seconds are wall-clock seconds.
"""
from __future__ import annotations

import logging
from pathlib import Path

from cifarbench.run.checkpoint import save_checkpoint
from cifarbench.core.clock import RunState
from cifarbench.run.background import draw
from cifarbench.run.background import wait as wait_for_figures
from cifarbench.core.files import atomic_write, atomic_write_json, link_or_copy
from cifarbench.run.trackers import Loggers
from cifarbench.core.registry import ConfigError
from cifarbench.run.figures import plot_curves
from cifarbench.run.metrics import write_metrics
from cifarbench.run.studies import write_reported

log = logging.getLogger("cifarbench.engine.loop")
PLOTS = ("all", "end", "none")  # curves at every evaluation and figures at the end | figures at the end | none


class Recorder:
    """Writes the run folder `run_dir`. `summary` is the summary.json being built (written at once,
    so a killed run says what it was); `plots` is one of PLOTS. `validation`: the run holds out a
    validation split, and then best.pt and the summary's best_* are chosen on validation accuracy and
    the objective is the final validation accuracy; without one, best_* are chosen on test accuracy
    (optimistic) and the objective is the final test accuracy. summary.json's `selection` says which.
    `loggers`: the trackers fed each metrics row and the final summary; where they write is recorded
    in summary.json's and every checkpoint's `loggers`. `writes`: false on every rank of a DDP run but
    rank 0, whose recorder keeps the same rows and summary and writes no file nor tracks. Raises ConfigError for another `plots` value, OutputError (from the
    first write) if the folder is not writable."""

    def __init__(self, run_dir: Path, summary: dict, plots: str = "end", validation: bool = False,
                 loggers: Loggers | None = None, writes: bool = True):
        if plots not in PLOTS:
            raise ConfigError(f"trainer.plots={plots!r}; choose one of {', '.join(PLOTS)}")
        self.run_dir, self.summary, self.plots, self.writes = run_dir, summary, plots, writes
        self.selected_by = "val_acc" if validation else "test_acc"
        summary["selection"] = {"best_checkpoint": self.selected_by, "objective": f"final_{self.selected_by}"}
        self.last, self.best = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
        self.write_summary()
        self.loggers = loggers if loggers is not None and writes else Loggers()
        if self.loggers.chosen:
            self.loggers.start(run_dir)
            self.write_summary(loggers=self.loggers.record())

    def write_summary(self, **updates):
        self.summary.update(updates)
        if self.writes:
            atomic_write_json(self.run_dir / "summary.json", self.summary)

    def add_row(self, state: RunState, row: dict) -> bool:
        """Append an evaluation's metrics to metrics.csv and the log; returns whether it is the best
        so far by the selection accuracy (and then records it in `state.best_acc`)."""
        state.rows.append(row)
        if not self.writes:
            return self._is_best(state, row)
        write_metrics(self.run_dir / "metrics.csv", state.rows)
        val = (f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:5.2f}%"
               if row["val_acc"] is not None else "")
        log.info("epoch %6.2f  train loss %.4f acc %5.2f%%%s  test loss %.4f acc %5.2f%%  %8.0f img/s  %6.1fs",
                 row["epoch"], row["train_loss"], 100 * row["train_acc"], val, row["test_loss"],
                 100 * row["test_acc"], row["images_per_s"], row["train_seconds"])
        if self.plots == "all":
            self.draw_curves(state)
        self.loggers.log_row(row)
        return self._is_best(state, row)

    def _is_best(self, state: RunState, row: dict) -> bool:
        best = row[self.selected_by] > state.best_acc
        state.best_acc = max(state.best_acc, row[self.selected_by])
        return best

    def save(self, checkpoint: dict, best: bool = False):
        """last.pt always; best.pt too when this evaluation is the best so far."""
        if not self.writes:
            return
        checkpoint = {**checkpoint, "loggers": self.loggers.record()}  # a resume continues the same tracked runs
        save_checkpoint(self.last, checkpoint)
        if best:  # the same bytes: linked, not serialised (or copied) again
            atomic_write(self.best, lambda tmp: link_or_copy(self.last, tmp))

    def adopt_best(self, best: Path):
        """A run resumed from another folder's checkpoint: that folder's best.pt (`best`), the best
        evaluation so far, becomes this folder's (linked) until this run evaluates better. A no-op when
        this folder has its own best.pt or `best` does not exist."""
        if self.writes and best.is_file() and not self.best.exists():
            atomic_write(self.best, lambda tmp: link_or_copy(best, tmp))

    def last_good(self) -> str:
        """For messages: the checkpoint a user can resume from, or that there is none yet."""
        return f"the last good checkpoint is {self.last}" if self.last.is_file() else "no checkpoint was written yet"

    def draw_curves(self, state: RunState):
        draw(plot_curves, self.run_dir / "curves.png", list(state.rows),
             title=f"{self.summary['model']} / {self.summary['optim']} / {self.summary['aug']}")

    def finish(self, state: RunState, status: str, stopped_by: str, diagnostics=None) -> dict:
        """Final figures (unless plots=none), then summary.json with the final and best metrics.
        `diagnostics()` draws confusion.png and samples.png and returns the per-class accuracy."""
        rows = state.rows
        if rows:
            if self.plots != "none" and self.writes:
                self.draw_curves(state)
            best = max(rows, key=lambda r: r[self.selected_by])  # the first of equals, as best.pt
            self.summary.update({
                "final_test_acc": rows[-1]["test_acc"], "final_test_loss": rows[-1]["test_loss"],
                # The evaluation of best.pt; without a validation split chosen on the test set, so optimistic.
                "best_test_acc": best["test_acc"], "best_epoch": best["epoch"], "epochs": rows[-1]["epoch"],
            })
            if self.selected_by == "val_acc":
                self.summary.update(final_val_acc=rows[-1]["val_acc"], final_val_loss=rows[-1]["val_loss"],
                                    best_val_acc=best["val_acc"])
        if diagnostics is not None and self.plots != "none" and self.writes:
            self.summary["per_class_acc"] = diagnostics()
        self.write_summary(status=status, stopped_by=stopped_by, steps=state.step,
                           train_seconds=round(state.train_seconds, 3),
                           compile_seconds=round(state.compile_seconds, 3))
        if self.writes and write_reported(self.run_dir, [(self.run_dir.name, [self.summary])]):
            log.info("the study's reported figures beside this run's: %s", self.run_dir / "reported_vs_measured.md")
        if self.loggers.chosen:
            wait_for_figures()  # the trackers log this run's figures, which a sweep may draw in the background
        self.loggers.finish(self.run_dir, self.summary)
        if rows:
            log.info("%s: final test accuracy %.2f%% (best %.2f%%) after %.2f epochs, %.1f s of training", status,
                     100 * self.summary["final_test_acc"], 100 * self.summary["best_test_acc"],
                     self.summary["epochs"], state.train_seconds)
        return self.summary


def metrics_row(state: RunState, steps_per_epoch: int, lr: float, window: dict, test: tuple[float, float],
                val: tuple[float, float] | tuple[None, None] = (None, None)) -> dict:
    """One metrics.csv row; `window` is TrainStep.window() (training metrics since the last row);
    `test` and `val` are (mean cross-entropy, accuracy as a fraction), `val` (None, None) without a split."""
    return {"epoch": round(state.step / steps_per_epoch, 4), "step": state.step,
            "train_seconds": round(state.train_seconds, 3), "lr": lr, "train_loss": window["train_loss"],
            "train_acc": window["train_acc"], "test_loss": test[0], "test_acc": test[1],
            "images_per_s": round(window["seen"] / state.window_seconds, 1) if state.window_seconds else 0.0,
            "val_loss": val[0], "val_acc": val[1]}

