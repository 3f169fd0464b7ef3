"""Turn folders of runs — finished or half-finished sweeps, or single runs — into a comparison:
leaderboard.csv and leaderboard.md (one row per setting: runs whose configs differ only in
`trainer.seed` share a row), leaderboard_runs.csv (one row per run), compare_time.png,
compare_epoch.png, final_acc.png, and report.html, one page holding all of it; leaderboard.md ends with
the runs' aggregate throughput (images/s over the wall time from the first start to the last end);
reported_vs_measured.md/.csv for studies whose configs carry reported figures (run/studies.py).

    cifarbench report outputs/multirun/2026-11-24/10-00-00
    cifarbench report SWEEP_A SWEEP_B --out DIR                            (several folders, one report)

A multirun writes them into its sweep folder when it ends (LeaderboardCallback, registered in the
root config). Accuracies are fractions; seconds are training seconds. Runs are ranked by the value
the sweeper maximises (`run.metrics.objective`: final validation accuracy with a validation split, else
final test accuracy; -inf for a run that did not complete), settings by the mean of their runs'
values, so a setting with a failed, diverged or unfinished seed ranks below every fully completed one.
Each setting with n ≥ 2 completed seeds gets the 95% confidence interval of its mean (Student's t)
and Welch's t-test against the top setting (`tied with top` where p ≥ 0.05); `report --target 0.94`
adds the one-sided t-test of the mean final test accuracy against 0.94 (report/stats.py).
Runs evaluated on different test sets (another dataset or `data.test_subset`) are never ranked
together: each test set gets its own table and figures. The jobs a sweep's `multirun.yaml` lists
that left no run behind are listed as "not started". Runs a search's pruner stopped (status `pruned`) are
listed apart, below the leaderboard; a successive-halving sweep's rungs get their own table (rungs.csv).
"""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from cifarbench.core.files import atomic_write_text
from cifarbench.report.board import LEVEL, Board, build_boards, throughput
from cifarbench.report.figures import plot_comparisons
from cifarbench.report.page import write_page
from cifarbench.report.rungs import RUNG_COLUMNS, rungs, rungs_markdown
from cifarbench.report.runs import find_runs, unstarted_jobs
from cifarbench.report.tables import RUN_COLUMNS, boards_markdown, throughput_line, to_csv
from cifarbench.run.studies import write_reported

log = logging.getLogger(__name__)


def write_report(folders: str | Path | list, out: str | Path | None = None, level: float = LEVEL,
                 target: float | None = None) -> list[Board]:
    """Write the report of the runs under `folders` (one folder or several) into `out` (default: the
    first folder); returns its Boards, one per test set, the most used first. Intervals are at confidence
    `level` (a probability: 0.95) and differences resolved at 1 − level; `target` (a fraction, 0.94)
    adds the one-sided test of each setting's mean final test accuracy against it."""
    folders = [Path(f) for f in (folders if isinstance(folders, (list, tuple)) else [folders])]
    out = Path(out) if out is not None else folders[0]
    found = {run.path.resolve(): run for folder in folders for run in find_runs(folder)}  # a folder may hold another
    runs = list(found.values())
    runs += unstarted_jobs(folders, runs)
    boards = build_boards(runs, out, level, target)
    halvings = rungs(runs)
    settings = [row for board in boards for row in board.setting_rows]
    atomic_write_text(out / "leaderboard.csv", to_csv(settings))
    atomic_write_text(out / "leaderboard.md",
                      boards_markdown(boards) + throughput_line(throughput(runs)) + rungs_markdown(halvings))
    if halvings:
        rows = [{"sweep": halving.sweep.name, **row} for halving in halvings for row in halving.rows]
        atomic_write_text(out / "rungs.csv", to_csv(rows, ("sweep", *RUNG_COLUMNS)))
    atomic_write_text(out / "leaderboard_runs.csv",
                      to_csv([row for board in boards for row in board.run_rows], RUN_COLUMNS))
    for board in boards:
        plot_comparisons(board, len(boards) > 1)
    write_reported(out, [(setting.label, [run.summary for run in setting.runs])
                         for board in boards for setting in board.settings])
    write_page(out / "report.html", folders, boards, halvings)
    return boards


class LeaderboardCallback(Callback):
    """Writes the report into the sweep folder when a multirun ends."""

    def on_multirun_end(self, config, **kwargs):
        boards = write_report(config.hydra.sweep.dir)
        log.info("leaderboard of %d settings: %s (all of it: report.html)", sum(len(b.settings) for b in boards),
                 Path(config.hydra.sweep.dir) / "leaderboard.md")
