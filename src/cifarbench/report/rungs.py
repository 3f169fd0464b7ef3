"""The rungs of a successive-halving sweep (`hydra/sweeper=successive_halving`, search/halving.py), read
back from its folder: which sweep it was and what its budget key and η were (its multirun.yaml), and per
rung — the runs at one budget, found by their budget override — each configuration's objective
(run.metrics.objective, as the sweeper ranked them), its rank in the rung and whether it was trained
again at the next budget. `report` writes them below the leaderboard (leaderboard.md, report.html) and
into rungs.csv."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from cifarbench.core.files import markdown_table
from cifarbench.report.board import distinguishing, setting_overrides
from cifarbench.report.runs import NOT_STARTED, Run
from cifarbench.run.metrics import objective

SWEEPER = "SuccessiveHalvingSweeper"  # the end of the sweeper's _target_ in multirun.yaml
RUNG_COLUMNS = ("rung", "budget", "rank", "configuration", "objective", "status", "promoted", "path")
PROMOTED, DROPPED, WINNER = "yes", "no", "winner"


@dataclass
class Halving:
    """One successive-halving sweep: its folder, budget key (`trainer.epochs`), η, and its rung rows
    (RUNG_COLUMNS; rung 0 first, best first within a rung)."""
    sweep: Path
    budget_key: str
    eta: int
    rows: list[dict]


def halving_of(sweep: Path) -> tuple[str, int] | None:
    """(budget key, η) when the sweep folder's multirun.yaml names the successive-halving sweeper, else None."""
    try:
        sweeper = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["sweeper"]
        if str(sweeper["_target_"]).endswith(SWEEPER):
            return str(sweeper["budget"]), int(sweeper["eta"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        pass
    return None


def job_number(run: Run) -> int:
    """The job's number in its sweep (its folder is `<number>_<overrides>`), for the order of equals."""
    head = run.path.name.partition("_")[0]
    return int(head) if head.isdigit() else math.inf


def rungs(runs: list[Run]) -> list[Halving]:
    """The successive-halving sweeps among the runs' sweeps, each with its rung table. A run's budget is the
    value of its budget override; its configuration is labelled as the leaderboard labels settings
    (board.distinguishing: the setting's overrides whose values vary across the sweep's runs), the budget
    key left out. The last rung's one configuration
    is the `winner`; in a rung followed by another, a configuration is `yes` (promoted) when it trained at
    the next budget, else `no`; a last rung of several (a sweep stopped early) says neither."""
    found = []
    for sweep in sorted({run.sweep for run in runs if run.sweep is not None}):
        halving = halving_of(sweep)
        if halving is None:
            continue
        key, eta = halving
        budget_of = {}
        for run in runs:
            if run.sweep == sweep and run.status != NOT_STARTED:
                budget = [value for k, value in setting_overrides(run).items() if k == key]
                if budget:
                    budget_of[id(run)] = budget[0]
        members = [run for run in runs if id(run) in budget_of]
        configuration_of = {id(run): " ".join(label) or run.path.name
                            for run, label in zip(members, distinguishing(members, without=(key,)))}
        budgets = sorted(set(budget_of.values()))
        rows = []
        for rung, budget in enumerate(budgets):
            ranked = sorted((run for run in members if budget_of[id(run)] == budget),
                            key=lambda run: (-objective(run.summary), job_number(run)))
            later = budgets[rung + 1] if rung + 1 < len(budgets) else None
            promoted = {configuration_of[id(run)] for run in members if budget_of[id(run)] == later}
            for rank, run in enumerate(ranked, start=1):
                verdict = (("" if len(ranked) > 1 else WINNER) if later is None else
                           PROMOTED if configuration_of[id(run)] in promoted else DROPPED)
                rows.append({"rung": rung, "budget": budget, "rank": rank, "configuration": configuration_of[id(run)],
                             "objective": objective(run.summary), "status": run.status, "promoted": verdict,
                             "path": str(run.path)})
        found.append(Halving(sweep, key, eta, rows))
    return found


def rung_cell(row: dict, column: str) -> str:
    """A rung row's cell as the Markdown table shows it: the objective to 4 decimals, a value that is not
    finite (a failed run's -inf) empty."""
    value = row[column]
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return f"{value:.4f}" if column == "objective" else str(value)


def rungs_markdown(halvings: list[Halving]) -> str:
    """Each successive-halving sweep's rung table, as Markdown to follow the leaderboard ("" without any)."""
    parts = []
    for halving in halvings:
        table = markdown_table(halving.rows, [c for c in RUNG_COLUMNS if c != "path"], rung_cell)
        parts.append(f"\n## Successive halving over {halving.budget_key} (η = {halving.eta}): {halving.sweep.name}\n\n"
                     f"Each rung trains its configurations to the end of its budget; the best 1/η (by the objective, "
                     f"best first here) are promoted, trained again at η× the budget.\n\n{table}\n")
    return "".join(parts)
