"""The rung table of a successive-halving sweep (report/rungs.py), from hand-made run folders: each
configuration labelled as the leaderboard labels its setting (the budget key left out), a `|` in a label
escaped so that it cannot split a Markdown cell."""
from pathlib import Path

import yaml

from cifarbench.report.board import settings_of
from cifarbench.report.rungs import rungs, rungs_markdown
from cifarbench.report.runs import Run


def test_rung_labels_are_the_leaderboards_without_the_budget_and_a_pipe_is_escaped(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {
        "_target_": "hydra_plugins.cifarbench_sweepers.SuccessiveHalvingSweeper", "budget": "trainer.epochs",
        "eta": 3}}}))
    # rung 0: three configurations at 1 epoch (objectives 0.3, 0.5, 0.4); rung 1: the best (job 1) at 3 epochs
    jobs = [("optim.lr=0.1", "aug.name=a|b", 1, 0.3), ("optim.lr=0.01", "aug.name=a|b", 1, 0.5),
            ("optim.lr=0.01", "aug.name=none", 1, 0.4), ("optim.lr=0.01", "aug.name=a|b", 3, 0.6)]
    runs = [Run(sweep / f"{k}_job", {"status": "completed", "final_test_acc": acc, "config": {}}, [],
                [lr, aug, "model=lenet5", f"trainer.epochs={epochs}"], sweep)
            for k, (lr, aug, epochs, acc) in enumerate(jobs)]
    [halving] = rungs(runs)
    by_hand = ["optim.lr=0.01 aug.name=a|b", "optim.lr=0.01 aug.name=none", "optim.lr=0.1 aug.name=a|b",
               "optim.lr=0.01 aug.name=a|b"]  # best first in rung 0, then rung 1; model=lenet5 is shared
    assert [row["configuration"] for row in halving.rows] == by_hand
    assert [row["promoted"] for row in halving.rows] == ["yes", "no", "no", "winner"]
    # the leaderboard's label of the same run: the same overrides, then its budget
    leaderboard = {setting.runs[0].path.name: setting.label for setting in settings_of(runs)}
    assert leaderboard["1_job"] == "optim.lr=0.01 aug.name=a|b trainer.epochs=1"
    assert leaderboard["3_job"] == "optim.lr=0.01 aug.name=a|b trainer.epochs=3"
    assert {leaderboard[Path(row["path"]).name].rpartition(" trainer.epochs=")[0] for row in halving.rows} \
        == set(by_hand)
    markdown = rungs_markdown([halving])
    assert "| 0 | 1 | 1 | optim.lr=0.01 aug.name=a\\|b | 0.5000 | completed | yes |" in markdown
    assert "aug.name=a|b" not in markdown
