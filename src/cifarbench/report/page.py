"""report.html: a report (report.py) as one self-contained page, to open from a file in any browser or
to mail. Images are embedded (data: URIs), nothing is fetched from the network, and no framework is
used: a few lines of plain JavaScript sort a table by the column whose heading is clicked (again:
the other way), or by the column the address names (`report.html#sort=final_test_acc_mean`
ascending, `#sort=-final_test_acc_mean` descending; the keys are leaderboard.csv's and
leaderboard_runs.csv's column names). Per test set: the leaderboard of settings, the comparison
figures and the runs; then each run's curves.png, status and a link to its folder; then the jobs
that never started. Accuracies are fractions, as in leaderboard.md.
"""
from __future__ import annotations

import base64
import datetime
import html
import math
import os
from collections import Counter
from pathlib import Path
from urllib.parse import quote

from cifarbench.core.files import atomic_write_text
from cifarbench.report.board import Board, not_started
from cifarbench.report.rungs import RUNG_COLUMNS, Halving
from cifarbench.report.runs import NOT_STARTED
from cifarbench.report.tables import PRUNED_COLUMNS, filled, format_cell, markdown_cell, markdown_columns

LONG_WORD = 16  # characters: a cell with a longer word may break inside words (CSS class "long")
PRUNED_NOTE = ('<p class="note">Trials the search\'s pruner stopped at an evaluation: not ranked above, their '
               'accuracies those when stopped.</p>')
RUN_TABLE = ("run", "seed", "status", "objective", "final_test_acc", "best_test_acc", "final_val_acc", "epochs",
             "train_seconds", "seconds_to_50", "error")

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1, p, li, figcaption, td.long { overflow-wrap: anywhere; } td.long { min-width: 10em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; user-select: none; min-width: 4em; }
th[aria-sort=ascending]::after { content: " ▲"; } th[aria-sort=descending]::after { content: " ▼"; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.completed td:first-child { border-left: 4px solid #2a2; } tr.problem td:first-child { border-left: 4px solid #c22; }
img { max-width: 100%; border: 1px solid #eee; }
.runs { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(480px, 100%), 1fr)); gap: 1em; }
figure { margin: 0; min-width: 0; } figcaption { font-size: 13px; margin-bottom: 0.3em; }
.note { color: #666; }
.wide { overflow-x: auto; } .figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
"""

SCRIPT = """
function sortBy(table, index, descending) {
  const body = table.tBodies[0], rows = Array.from(body.rows);
  const value = row => { const v = row.cells[index].dataset.sort;
                         return v === "" ? null : isNaN(Number(v)) ? v : Number(v); };
  rows.sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === null || y === null) return (x === null) - (y === null);  // empty cells last, either way
    const order = typeof x === "number" && typeof y === "number"
      ? (x > y) - (x < y) : String(x).localeCompare(String(y), undefined, {numeric: true});
    return descending ? -order : order;
  });
  rows.forEach(row => body.appendChild(row));
  table.querySelectorAll("th").forEach((th, i) =>
    th.setAttribute("aria-sort", i === index ? (descending ? "descending" : "ascending") : "none"));
}
document.querySelectorAll("table.sortable").forEach(table => table.querySelectorAll("th").forEach((th, i) =>
  th.addEventListener("click", () => sortBy(table, i, th.getAttribute("aria-sort") === "ascending"))));
const wanted = /^#sort=(-?)([A-Za-z0-9_]+)$/.exec(location.hash);
if (wanted) document.querySelectorAll("table.sortable").forEach(table => {
  const index = Array.from(table.querySelectorAll("th")).findIndex(th => th.dataset.key === wanted[2]);
  if (index >= 0) sortBy(table, index, wanted[1] === "-");
});
"""


def png_data(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def sort_value(value) -> str:
    """What a cell sorts by: the number itself (-inf as -Infinity), the text, or "" (sorted last)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "-Infinity" if value == -math.inf else "" if math.isnan(value) else repr(value)
    return str(value)


def long(text: str) -> str:
    """" long" for a cell whose text holds a word of over LONG_WORD characters (a label, a path, an error),
    which the page then breaks anywhere so the table fits the window; "" otherwise (short words stay whole)."""
    return " long" if max(map(len, text.split()), default=0) > LONG_WORD else ""


def table(rows: list[dict], columns, text, css_id: str) -> str:
    """A sortable table of `rows`; `text(row, column)` is what a cell shows, the row's value what it sorts by."""
    head = "".join(f'<th data-key="{c}" aria-sort="none">{html.escape(c).replace("_", "_<wbr>")}</th>'
                   for c in columns)
    body = []
    for row in rows:
        kind = "completed" if row["status"] == "completed" else "problem"
        cells = "".join(
            f'<td class="{"number" if isinstance(row[c], (int, float)) else "text"}{long(text(row, c))}" '
            f'data-sort="{html.escape(sort_value(row[c]))}">{html.escape(text(row, c))}</td>' for c in columns)
        body.append(f'<tr class="{kind}">{cells}</tr>')
    return (f'<table class="sortable" id="{css_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def link(path: str, out: Path) -> str:
    return quote(Path(os.path.relpath(path, out)).as_posix()) + "/"


def run_figure(row: dict, out: Path) -> str:
    """A run's caption (label, seed, status, final test accuracy, folder link) over its curves.png."""
    folder = Path(row["path"])
    accuracy = format_cell("final_test_acc", row["final_test_acc"]) or "no accuracy"
    caption = (f'<b>{html.escape(row["run"])}</b> · seed {html.escape(str(row["seed"]))} · '
               f'{html.escape(row["status"])} · final test accuracy {accuracy} · '
               f'<a href="{link(row["path"], out)}">{html.escape(folder.name)}</a>')
    if row["error"]:
        caption += f'<br><span class="note">{html.escape(row["error"])}</span>'
    curves = folder / "curves.png"
    picture = (f'<img src="{png_data(curves)}" alt="curves of {html.escape(row["run"])}">' if curves.is_file()
               else '<p class="note">no curves.png (trainer.plots=none, or the run stopped before its end)</p>')
    return f"<figure><figcaption>{caption}</figcaption>{picture}</figure>"


def confidence(board: Board) -> str:
    """The boards' confidence level as text ("95%")."""
    return f"{board.level:.0%}" if round(100 * board.level) == 100 * board.level else f"{board.level:.1%}"


def cell(row: dict, column: str) -> str:
    """A run row's cell as text."""
    return format_cell(column, row[column])


def board_section(k: int, board: Board, several: bool, out: Path) -> str:
    heading = f"Test set {k}: {board.test_set}" if several else "Leaderboard"
    rows = [row for row in board.run_rows if row["status"] != NOT_STARTED]
    settings = table(board.setting_rows, markdown_columns(board.setting_rows), markdown_cell, f"settings{k}")
    runs = table(rows, filled(RUN_TABLE, rows), cell, f"runs{k}")
    parts = [f"<h2>{html.escape(heading)}</h2>",
             f'<p class="note">Scored on {html.escape(board.test_set)}. One row per setting (its seeds); ranked by the '
             f'objective (final validation accuracy with a split, else final test accuracy; mean over seeds, '
             f'[its {confidence(board)} confidence interval]); p_vs_top: Welch\'s t-test against the top setting, '
             f'"tied with top" where it does not resolve the difference. Click a heading to sort.</p>',
             f'<div class="wide">{settings}</div>',
             *([f"<h3>Pruned ({len(board.pruned_rows)})</h3>", PRUNED_NOTE,
                f'<div class="wide">{table(board.pruned_rows, PRUNED_COLUMNS, cell, f"pruned{k}")}</div>']
               if board.pruned_rows else []),
             '<div class="figures">',
             *(f'<img src="{png_data(f)}" alt="{f.name}">' for f in board.figures if f.is_file()),
             "</div>", f"<h3>Runs ({len(rows)})</h3>",
             f'<div class="wide">{runs}</div>',
             '<div class="runs">', *(run_figure(row, out) for row in rows), "</div>"]
    return "\n".join(parts)


def rungs_section(halving: Halving, k: int) -> str:
    """A successive-halving sweep's rung table."""
    return (f"<h2>Successive halving over {html.escape(halving.budget_key)} (η = {halving.eta}): "
            f"{html.escape(halving.sweep.name)}</h2>"
            '<p class="note">Each rung trains its configurations to the end of its budget; the best 1/η by the '
            'objective are promoted, trained again at η× the budget.</p>'
            f'<div class="wide">{table(halving.rows, RUNG_COLUMNS, cell, f"rungs{k}")}</div>')


def page(out: Path, folders: list[Path], boards: list[Board], halvings: list[Halving] = ()) -> str:
    """The whole page, as text."""
    statuses = Counter(row["status"] for board in boards for row in board.run_rows)
    counts = ", ".join(f"{n} {status}" for status, n in statuses.most_common())
    waiting = not_started(boards)
    sections = [board_section(k, board, len(boards) > 1, out) for k, board in enumerate(boards, start=1)]
    sections += [rungs_section(halving, k) for k, halving in enumerate(halvings, start=1)]
    if len(boards) > 1:
        sections.insert(0, '<p class="note">Runs scored on different test sets are ranked apart: one leaderboard '
                           'per test set.</p>')
    if waiting:
        items = "".join(f"<li>job #{run.summary['job']}: <code>{html.escape(' '.join(run.overrides))}</code> "
                        f"(sweep {html.escape(str(run.sweep))})</li>" for run in waiting)
        sections.append(f"<h2>Jobs never started ({len(waiting)})</h2><ul>{items}</ul>")
    title = "cifarbench report: " + ", ".join(f.name for f in folders)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="note">{html.escape(", ".join(str(f) for f in folders))} · {counts} ·
written {datetime.datetime.now().isoformat(timespec="seconds")}</p>
{"".join(sections)}
<script>{SCRIPT}</script>
</body></html>
"""


def write_page(path: Path, folders: list[Path], boards: list[Board], halvings: list[Halving] = ()):
    """report.html at `path` (written atomically); links to run folders are relative to its folder; the rung
    tables of successive-halving sweeps (`halvings`) after the leaderboards."""
    atomic_write_text(path, page(path.parent, folders, boards, halvings))
