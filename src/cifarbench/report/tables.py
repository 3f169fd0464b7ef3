"""A report's tables as text: leaderboard.csv, leaderboard_runs.csv and leaderboard.md (accuracies as
fractions, means with their spread)."""
from __future__ import annotations

import csv
import io
import math

from cifarbench.report.board import SECONDS_TO, Board

RUN_COLUMNS = ("run", "seed", "model", "optim", "aug", "params", "objective", "best_test_acc", "final_test_acc",
               "final_val_acc", "epochs", "train_seconds", *SECONDS_TO, "status", "error", "path", "test_set")
# One row per setting: mean and sample standard deviation over its completed runs (n of them; no std
# for n = 1), medians of seconds (a run that never reached an accuracy counts as never reaching it).
COLUMNS = ("setting", "model", "optim", "aug", "params", "seeds", "n", "objective", "final_test_acc_mean",
           "final_test_acc_std", "final_val_acc_mean", "final_val_acc_std", "train_seconds_median",
           *(f"{c}_median" for c in SECONDS_TO), "status", "error", "test_set")


def format_cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if column.endswith(("_acc", "_acc_mean", "_acc_std", "objective")):
        return f"{value:.4f}"
    if column == "epochs":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_columns() -> list[str]:
    """The leaderboard.md columns: each mean with its spread, no std or test-set column of their own."""
    return [c for c in COLUMNS if not c.endswith("_std") and c != "test_set"]


def markdown_cell(row: dict, column: str) -> str:
    """A setting row's value as leaderboard.md and report.html show it (a mean as mean ± std)."""
    text = format_cell(column, row[column])
    spread = format_cell(column, row.get(column.replace("_mean", "_std")) if column.endswith("_mean") else None)
    return f"{text} ± {spread}" if text and spread else text


def to_markdown(table: list[dict]) -> str:
    """The setting rows as a Markdown table, each mean with its spread (mean ± std)."""
    columns = markdown_columns()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(row, c).replace("|", "\\|") for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


def to_csv(table: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def boards_markdown(boards: list[Board]) -> str:
    if len(boards) <= 1:
        return to_markdown(boards[0].setting_rows if boards else [])
    return "Runs scored on different test sets are ranked apart: one table per test set.\n\n" + "\n".join(
        f"## Test set {k}: {board.test_set}\n\n{to_markdown(board.setting_rows)}" for k, board in enumerate(boards, 1))
