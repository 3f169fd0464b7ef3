"""Reported vs measured: what a reproduced study published for each variant, beside what this runner
measured for it.

A variant's published figures are data in its config, under the top-level `reported` key (e.g.
conf/study/tenminute/lenet.yaml: `reported: {study: tenminute, variant: LeNet (baseline), test_acc: 0.68,
seconds_per_epoch: 4.1, epochs: 150, hardware: …}`); `cifarbench report` and a multirun's end write
reported_vs_measured.md/.csv for every setting that carries them, and a single run that carries them
writes the same table (one row) into its own folder. Accuracies are fractions, seconds are training
seconds (`train_seconds`), budgets are minutes.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from cifarbench.core.files import atomic_write_text, csv_text, markdown_table

COLUMNS = ("study", "variant", "setting", "reported_test_acc", "measured_test_acc_mean", "measured_test_acc_std",
           "n", "delta_test_acc", "reported_seconds_per_epoch", "measured_seconds_per_epoch", "reported_epochs",
           "measured_epochs", "reported_train_seconds", "measured_train_seconds", "budget_min", "reported_hardware",
           "measured_on", "status", "note")
MARKDOWN = {  # column → header of the Markdown table (the CSV keeps every column under its own name)
    "study": "study", "variant": "variant", "reported_test_acc": "reported acc",
    "measured_test_acc_mean": "measured acc (mean ± std, n)", "delta_test_acc": "Δ acc",
    "reported_seconds_per_epoch": "reported s/epoch", "measured_seconds_per_epoch": "measured s/epoch",
    "reported_epochs": "reported epochs", "measured_epochs": "epochs reached", "budget_min": "budget (min)",
    "reported_hardware": "reported on", "measured_on": "measured on", "status": "status",
}


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def reported_row(setting: str, summaries: list[dict]) -> dict | None:
    """The table's row of one setting: `summaries` are the summary.json dicts of its runs (its seeds,
    at least one). None when the setting's config reports nothing. Measured accuracy is the mean (and
    sample std) of the completed runs' final test accuracy; seconds, seconds per epoch and epochs are
    medians over them; `delta_test_acc` = measured mean − reported."""
    config = next((s["config"] for s in summaries if s.get("config")), {})  # (a job never started has none)
    reported = config.get("reported") or {}
    if not reported:
        return None
    done = [s for s in summaries if s.get("status") == "completed" and s.get("final_test_acc") is not None]
    accuracies = [s["final_test_acc"] for s in done]
    mean = statistics.fmean(accuracies) if accuracies else None
    per_epoch = [s["train_seconds"] / s["epochs"] for s in done if s.get("epochs") and s.get("train_seconds")]
    statuses = sorted({s.get("status") or "incomplete" for s in summaries})
    return {
        "study": reported.get("study"), "variant": reported.get("variant"), "setting": setting,
        "reported_test_acc": reported.get("test_acc"), "measured_test_acc_mean": mean,
        "measured_test_acc_std": statistics.stdev(accuracies) if len(accuracies) > 1 else None, "n": len(done),
        "delta_test_acc": None if mean is None or reported.get("test_acc") is None else mean - reported["test_acc"],
        "reported_seconds_per_epoch": reported.get("seconds_per_epoch"),
        "measured_seconds_per_epoch": _median(per_epoch),
        "reported_epochs": reported.get("epochs"), "measured_epochs": _median([s.get("epochs") for s in done]),
        "reported_train_seconds": reported.get("train_seconds"),
        "measured_train_seconds": _median([s.get("train_seconds") for s in done]),
        "budget_min": (config.get("trainer") or {}).get("budget_min"), "reported_hardware": reported.get("hardware"),
        "measured_on": next((s["device"] for s in summaries if s.get("device")), None), "status": ", ".join(statuses),
        "note": reported.get("note"),
    }


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if column.endswith(("_acc", "_acc_mean", "_acc_std")):
        return f"{100 * value:+.2f}" if column.startswith("delta") else f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:g}" if column.endswith("epochs") or column == "budget_min" else f"{value:.1f}"
    return str(value)


def to_markdown(rows: list[dict], extra: dict[str, str] | None = None, header: str = "") -> str:
    """The rows as a Markdown table in percent (Δ in percentage points), each variant's note below.
    `extra`: more columns (row key → column header) placed after Δ acc, their cells the rows' text as
    it is; `header`: text written above the table (e.g. what was measured, where, and on which data)."""
    extra = extra or {}

    def cell(row: dict, column: str) -> str:
        if column in extra:
            return str(row.get(column) or "")
        text = _cell(column, row[column])
        if column == "measured_test_acc_mean" and text:
            spread = _cell(column, row["measured_test_acc_std"])
            text = f"{text[:-1]} ± {spread} (n={row['n']})" if spread else f"{text} (n={row['n']})"
        return text

    columns = list(MARKDOWN)
    after_delta = columns.index("delta_test_acc") + 1
    columns[after_delta:after_delta] = list(extra)
    lines = ([header.rstrip("\n"), ""] if header else []) + [markdown_table(rows, columns, cell, {**MARKDOWN, **extra})]
    notes = [f"- {row['variant']}: {row['note']}" for row in rows if row["note"]]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_reported(folder: str | Path, settings: list[tuple[str, list[dict]]]) -> list[dict]:
    """Write reported_vs_measured.md and .csv into `folder` for the settings (label, run summaries)
    whose config reports figures, in the settings' order; writes nothing and returns [] when none do."""
    rows = [row for label, summaries in settings if (row := reported_row(label, summaries)) is not None]
    if rows:
        atomic_write_text(Path(folder) / "reported_vs_measured.md", to_markdown(rows))
        atomic_write_text(Path(folder) / "reported_vs_measured.csv", csv_text(rows, COLUMNS))
    return rows
