"""A report's tables as text: leaderboard.csv, leaderboard_runs.csv and leaderboard.md (accuracies as
fractions, means with their spread). Every table leaves out the columns empty in all its rows (no
validation split: no final_val_acc_mean; no --target: no target columns), and the CSVs round floats to
six significant digits (core.files.csv_text)."""
from __future__ import annotations

import math
from typing import Callable

from cifarbench.core.files import csv_text, markdown_table
from cifarbench.report.board import SECONDS_TO, Board

RUN_COLUMNS = ("run", "seed", "model", "optim", "aug", "params", "objective", "best_test_acc", "final_test_acc",
               "final_val_acc", "epochs", "train_seconds", *SECONDS_TO, "status", "error", "path", "test_set")
# One row per setting: mean and sample standard deviation over its completed runs (n of them; no std
# for n = 1), the confidence interval of the mean (Student's t, n ≥ 2; 95% unless report --level), Welch's
# p-value against the top setting and the verdict (vs_top: top, tied with top, below top, one seed, ...),
# medians of seconds (a run that never reached an accuracy counts as never reaching it), and with
# report --target the one-sided test of the mean final test accuracy against it (board.setting_row).
TARGET_COLUMNS = ("target", "p_above_target", "above_target", "seeds_for_target")
COLUMNS = ("setting", "model", "optim", "aug", "params", "seeds", "n", "objective", "objective_ci_low",
           "objective_ci_high", "p_vs_top", "vs_top", "final_test_acc_mean", "final_test_acc_std",
           "final_test_acc_ci_low", "final_test_acc_ci_high", "final_val_acc_mean", "final_val_acc_std",
           "train_seconds_median", *(f"{c}_median" for c in SECONDS_TO), "status", "error", "test_set",
           *TARGET_COLUMNS)


def format_cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, str):
        return value
    if column.startswith("p_"):  # a p-value
        return f"{value:.3g}"
    if column.endswith(("_acc", "_acc_mean", "_acc_std", "objective", "_ci_low", "_ci_high")) or column == "target":
        return f"{value:.4f}"
    if column == "epochs":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def filled(columns, table: list[dict], text: Callable[[dict, str], str] = lambda row, c: format_cell(c, row[c])
           ) -> list[str]:
    """The `columns` some row of `table` shows something in (`text(row, column)`, by default `format_cell`):
    a column empty in every row is left out (all of them are kept for a table without rows)."""
    return [c for c in columns if not table or any(text(row, c) for row in table)]


def markdown_columns(table: list[dict]) -> list[str]:
    """The leaderboard.md (and report.html) columns of the setting rows `table`: each mean with its spread
    and interval, no std, interval or test-set column of their own, none empty in every row."""
    return filled([c for c in COLUMNS if not c.endswith(("_std", "_ci_low", "_ci_high")) and c != "test_set"],
                  table, markdown_cell)


def markdown_cell(row: dict, column: str) -> str:
    """A setting row's value as leaderboard.md and report.html show it: a mean as `mean ± std [low, high]`
    (its confidence interval), the objective as `mean [low, high]`, no seeds for the target as `never`."""
    text = format_cell(column, row[column])
    if column == "seeds_for_target" and row.get("target") is not None and row[column] is None \
            and row.get("n", 0) > 1:
        return "never"
    stem = column.removesuffix("_mean")
    spread = format_cell(column, row.get(f"{stem}_std")) if column.endswith("_mean") else ""
    low, high = (format_cell(column, row.get(f"{stem}_ci_{end}")) for end in ("low", "high"))
    if text and spread:
        text = f"{text} ± {spread}"
    return f"{text} [{low}, {high}]" if text and low and high else text


def to_markdown(table: list[dict]) -> str:
    """The setting rows as a Markdown table, each mean with its spread and interval (mean ± std [low, high])."""
    return markdown_table(table, markdown_columns(table), markdown_cell) + "\n"


def to_csv(table: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    """leaderboard.csv (or with RUN_COLUMNS leaderboard_runs.csv): `columns` but those empty in every row,
    floats to six significant digits, accuracies as fractions."""
    return csv_text(table, filled(columns, table, lambda row, c: row[c] not in (None, "")))


PRUNED_COLUMNS = ("run", "epochs", "final_val_acc", "final_test_acc", "path")


def pruned_markdown(board: Board) -> str:
    """The runs a search's pruner stopped, as a Markdown table below the leaderboard (empty without any)."""
    if not board.pruned_rows:
        return ""
    table = markdown_table(board.pruned_rows, PRUNED_COLUMNS, lambda row, c: format_cell(c, row[c]))
    return (f"\nPruned: {len(board.pruned_rows)} run(s) the search's pruner stopped at an evaluation (not ranked "
            f"above; their accuracies are those when stopped):\n\n{table}\n")


def boards_markdown(boards: list[Board]) -> str:
    if len(boards) <= 1:
        return to_markdown(boards[0].setting_rows if boards else []) + (pruned_markdown(boards[0]) if boards else "")
    return "Runs scored on different test sets are ranked apart: one table per test set.\n\n" + "\n".join(
        f"## Test set {k}: {board.test_set}\n\n{to_markdown(board.setting_rows)}{pruned_markdown(board)}"
        for k, board in enumerate(boards, 1))


def throughput_line(aggregate: dict | None) -> str:
    """leaderboard.md's closing line: board.throughput's figures in words ("" for None)."""
    if aggregate is None:
        return ""
    return (f"\nTogether: {aggregate['jobs']} completed run(s) trained {aggregate['images']:,} images in "
            f"{aggregate['wall_seconds']:.1f} s of wall time (first start to last end): "
            f"{aggregate['images_per_s'] or 0:,.1f} images/s.\n")
