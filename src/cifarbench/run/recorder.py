"""What a run leaves in its folder (run/layout.py), written by one object: metrics.csv (a row per
evaluation), checkpoints/last.pt and best.pt, curves.png, confusion.png, samples.png and summary.json;
reported_vs_measured.md/.csv when the config carries a study's reported figures; and what it
hands the trackers of the `logger` group (run/trackers.py) at each evaluation and at the end.

Every file is written atomically; accuracies are fractions in [0, 1]; seconds are wall-clock seconds.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
import time
from pathlib import Path

import torch

from cifarbench import __version__
from cifarbench.core.clock import RunState
from cifarbench.core.distributed import World
from cifarbench.core.files import atomic_write, link_or_copy
from cifarbench.core.registry import ConfigError
from cifarbench.run.background import draw
from cifarbench.run.background import wait as wait_for_figures
from cifarbench.run.checkpoint import Checkpoint, save_checkpoint
from cifarbench.run.figures import plot_curves
from cifarbench.run.layout import RunFolder
from cifarbench.run.metrics import write_metrics
from cifarbench.run.provenance import command_line, running_source_state
from cifarbench.run.studies import write_reported
from cifarbench.run.trackers import Loggers, end_tracked_run

log = logging.getLogger(__name__)
PLOTS = ("all", "end", "none")  # curves at every evaluation and figures at the end | figures at the end | none


class Recorder:
    """Writes the run folder `run_dir`. `summary` is the summary.json being built (written at once,
    so a killed run says what it was); `plots` is one of PLOTS. `validation`: the run holds out a
    validation split, and then best.pt and the summary's best_* are chosen on validation accuracy and
    the objective is the final validation accuracy; without one, best_* are chosen on test accuracy
    (optimistic) and the objective is the final test accuracy. summary.json's `selection` says which.
    `loggers`: the trackers fed each metrics row and the final summary; where they write is recorded
    in summary.json's and every checkpoint's `loggers`. `writes`: false on every rank of a DDP run but
    rank 0, whose recorder keeps the same rows and summary and writes no file nor tracks. Raises
    ConfigError for another `plots` value, OutputError (from the first write) if the folder is not writable."""

    def __init__(self, run_dir: Path, summary: dict, plots: str = "end", validation: bool = False,
                 loggers: Loggers | None = None, writes: bool = True):
        if plots not in PLOTS:
            raise ConfigError(f"trainer.plots={plots!r}; choose one of {', '.join(PLOTS)}")
        self.run_dir, self.summary, self.plots, self.writes = run_dir, summary, plots, writes
        self.folder = RunFolder(run_dir)
        self.selected_by = "val_acc" if validation else "test_acc"
        summary["selection"] = {"best_checkpoint": self.selected_by, "objective": f"final_{self.selected_by}"}
        self.write_summary()
        self.loggers = loggers if loggers is not None and writes else Loggers()
        if self.loggers.chosen:
            self.loggers.start(run_dir)
            self.write_summary(loggers=self.loggers.record())

    def write_summary(self, **updates):
        self.summary.update(updates)
        if self.writes:
            self.folder.write_summary(self.summary)

    def add_row(self, state: RunState, row: dict) -> bool:
        """Append an evaluation's metrics to metrics.csv and the log; returns whether it is the best
        so far by the selection accuracy (and then records it in `state.best_acc`)."""
        state.rows.append(row)
        if not self.writes:
            return self._is_best(state, row)
        write_metrics(self.folder.metrics, state.rows)
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

    def save(self, checkpoint: Checkpoint, best: bool = False):
        """last.pt always; best.pt too when this evaluation is the best so far."""
        if not self.writes:
            return
        # a resume continues the same tracked runs
        save_checkpoint(self.folder.last, dataclasses.replace(checkpoint, loggers=self.loggers.record()))
        if best:  # the same bytes: linked, not serialised (or copied) again
            atomic_write(self.folder.best, lambda tmp: link_or_copy(self.folder.last, tmp))

    def adopt_best(self, best: Path):
        """A run resumed from another folder's checkpoint: that folder's best.pt (`best`), the best
        evaluation so far, becomes this folder's (linked) until this run evaluates better. A no-op when
        this folder has its own best.pt or `best` does not exist."""
        if self.writes and best.is_file() and not self.folder.best.exists():
            atomic_write(self.folder.best, lambda tmp: link_or_copy(best, tmp))

    def last_good(self) -> str:
        """For messages: the checkpoint a user can resume from, or that there is none yet."""
        last = self.folder.last
        return f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"

    @property
    def best_is(self) -> str:
        """What best_test_acc is, for the log: the best test accuracy, or with a validation split the test
        accuracy of the evaluation the validation accuracy chose (best.pt's; it may be below the final)."""
        if self.selected_by == "val_acc" and self.summary.get("best_val_acc") is not None:
            return f"the best checkpoint, chosen by its validation accuracy {100 * self.summary['best_val_acc']:.2f}%, tests at"
        return "best"

    def draw_curves(self, state: RunState):
        draw(plot_curves, self.folder.curves, list(state.rows), title=curves_title(self.summary))

    def finish(self, state: RunState, status: str, stopped_by: str, epochs: float, diagnostics=None) -> dict:
        """Final figures (unless plots=none), then summary.json with the final and best metrics,
        `ended_at` (Unix seconds) and `epochs`, the epochs trained (steps / steps per epoch: an interrupted run's count its steps after
        the last evaluation too). `diagnostics()` draws confusion.png and samples.png and returns the
        per-class accuracy."""
        rows = state.rows
        if rows:
            if self.plots != "none" and self.writes:
                self.draw_curves(state)
            best = max(rows, key=lambda r: r[self.selected_by])  # the first of equals, as best.pt
            self.summary.update({
                "final_test_acc": rows[-1]["test_acc"], "final_test_loss": rows[-1]["test_loss"],
                # The evaluation of best.pt; without a validation split chosen on the test set, so optimistic.
                "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
            })
            if self.selected_by == "val_acc":
                self.summary.update(final_val_acc=rows[-1]["val_acc"], final_val_loss=rows[-1]["val_loss"],
                                    best_val_acc=best["val_acc"])
        if diagnostics is not None and self.plots != "none" and self.writes:
            self.summary["per_class_acc"] = diagnostics()
        self.write_summary(status=status, stopped_by=stopped_by, steps=state.step, epochs=round(epochs, 4),
                           train_seconds=round(state.train_seconds, 3),
                           compile_seconds=round(state.compile_seconds, 3), ended_at=round(time.time(), 3))
        if self.writes and write_reported(self.run_dir, [(self.run_dir.name, [self.summary])]):
            log.info("the study's reported figures beside this run's: %s", self.run_dir / "reported_vs_measured.md")
        if self.loggers.chosen:
            wait_for_figures()  # the trackers log this run's figures, which a sweep may draw in the background
        self.loggers.finish(self.run_dir, self.summary)
        if rows and rows[-1]["step"] == state.step:
            log.info("%s: final test accuracy %.2f%% (%s %.2f%%) after %.2f epochs, %.1f s of training", status,
                     100 * self.summary["final_test_acc"], self.best_is, 100 * self.summary["best_test_acc"],
                     self.summary["epochs"], state.train_seconds)
        elif rows:  # stopped after steps its last evaluation has not seen: say which epoch each number is of
            log.info("%s after %.2f epochs, %.1f s of training; its last evaluation, at epoch %.2f: test accuracy "
                     "%.2f%% (%s %.2f%%)", status, self.summary["epochs"], state.train_seconds, rows[-1]["epoch"],
                     100 * self.summary["final_test_acc"], self.best_is, 100 * self.summary["best_test_acc"])
        return self.summary


def curves_title(summary: dict) -> str:
    """curves.png's title: model / optimizer / augmentation / schedule, then what else decides the curves'
    shape when set: the budget (minutes), the training subset (images, or a share of each class), the test
    subset (images) and the validation split (images held out). `summary`: the run's summary.json."""
    config = summary.get("config", {})
    data, trainer = config.get("data", {}), config.get("trainer", {})
    sched = (config.get("sched") or {}).get("name")
    title = " / ".join(str(part) for part in (summary["model"], summary["optim"], summary["aug"],
                                              sched and f"{sched} schedule") if part)
    subset = data.get("train_subset")
    extras = [trainer.get("budget_min") and f"budget {trainer['budget_min']:g} min",
              subset and (f"{100 * subset:g}% of each class" if subset < 1 else f"{subset:,} training images"),
              data.get("test_subset") and f"{data['test_subset']:,} test images",
              data.get("val_split") and f"{data['val_split']:,} held out for validation"]
    return ", ".join([title, *filter(None, extras)])


def start_recorder(cfg, run_dir: Path, config: dict, world: World = World(),
                   resumed: Checkpoint | None = None, resumed_from: str | None = None) -> Recorder:
    """The Recorder of a run of `cfg` (`config`: it resolved as plain dicts) in `run_dir`: summary.json
    written at once (status running, what the run is, the command, versions and git state, and
    `resumed_from`: the checkpoint it continues, which engine/resume.py reads so that the run that
    checkpoint came from is never resumed again; `resumes`: how many times the run was resumed in its own
    folder, a requeued submitit job's count), the trackers of `cfg.logger` started on rank 0
    (continuing `resumed`'s tracked runs)."""
    summary = {
        "status": "running", "model": cfg.model.name, "optim": cfg.optim.name,
        "aug": "+".join(filter(None, (cfg.aug.name, cfg.aug.get("mix")))), "command": command_line(),
        "versions": {"cifarbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git": running_source_state(), "config": config,
        "started_at": round(time.time(), 3),  # Unix seconds (ended_at: at its end): a sweep's wall time from them
    }
    if resumed_from is not None:
        summary["resumed_from"] = str(Path(resumed_from).resolve())
        if RunFolder.of_checkpoint(resumed_from).path == Path(run_dir).resolve():  # continued in its own folder
            summary["resumes"] = (RunFolder(run_dir).read_summary() or {}).get("resumes", 0) + 1
    if world.main:
        log.info("run folder: %s", run_dir)  # (once the config passed its checks: a refused run has none)
    loggers = (Loggers(cfg.logger, config, resumed=resumed.loggers if resumed else None,
                       earlier_rows=resumed.state["rows"] if resumed else ()) if world.main else None)
    return Recorder(run_dir, summary, cfg.trainer.plots, validation=cfg.data.val_split != 0, writes=world.main,
                    loggers=loggers)


def record_ending(run_dir: Path, status: str, job_config: dict | None = None, **fields):
    """A run that ended outside its Recorder's `finish` (an exception, a second stop signal): when it
    started (its summary.json exists) that summary says `status` ("failed", "interrupted") and `fields`
    (its `error`, the `signal`), and the MLflow run it records ends as that status says (FAILED,
    KILLED). A run refused before it started has no summary: a single run gets none (it is no run);
    a job of a sweep (`job_config`: its resolved config) gets one holding that config, so the sweep's
    leaderboard shows the job and why it failed. When the run has a checkpoint, the summary's `resume`
    says how to continue it (`trainer.resume=<its last.pt>`): a torchrun rank whose peer was killed ends
    here, its folder saying what happened (`error`) and how to resume. A folder that cannot be written is
    passed over (the log still says what happened)."""
    folder = RunFolder(run_dir)
    summary = folder.read_summary() or ({"config": job_config} if job_config is not None else None)
    if summary is None:
        return
    if folder.last.is_file():
        fields = {"resume": resume_override(folder), **fields}
    summary.update(status=status, **fields)
    try:
        folder.write_summary(summary)
    except OSError:
        pass  # the failure may be that the folder is unwritable
    end_tracked_run(summary)  # the MLflow run's status follows summary.json's


def resume_override(folder: RunFolder) -> str:
    """The override that continues the run in `folder` from its last checkpoint."""
    return f"trainer.resume={folder.last}"


def record_failure(run_dir: Path, error: BaseException, job_config: dict | None = None):
    """`record_ending` with status "failed" and the error's type and first line."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    record_ending(run_dir, "failed", job_config, error=f"{type(error).__name__}: {first_line}")
