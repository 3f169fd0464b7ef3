"""Successive halving over budgets (hydra/sweeper=successive_halving, cifarbench.search.halving): η = 3
over 9 configurations runs 9 + 3 + 1 jobs at budgets 1, 3 and 9 epochs, each rung promoting the best third
by the objective the jobs recorded, and the report's rung table says so. The jobs' training is replaced by
a stand-in that records an objective (a hash of the configuration and budget, so the rungs reorder), so
the test exercises the sweeper, Hydra's launcher, the job folders and the report, not the loop."""
import csv
import itertools
import json
import zlib

from helpers import cli_in_process
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from cifarbench.commands.plan import halving_plan
from cifarbench.core.config_diff import plain_config
from cifarbench.engine import loop
from cifarbench.run.layout import RunFolder
from cifarbench.search.halving import rung_budget, rung_sizes, survivors


def test_survivors_are_the_best_third_the_earlier_of_equals_first():
    assert survivors([0.1, 0.5, 0.3, 0.5, 0.2, 0.0, 0.9, 0.4, 0.3], 3) == [6, 1, 3]
    assert survivors([0.2, 0.2, 0.1], 3) == [0]  # at least one; of equals the earlier
    assert survivors([0.1, 0.3, 0.2, 0.4], 3) == [3]  # ⌊4/3⌋ = 1
    assert [rung_budget(1, 3, r) for r in range(3)] == [1, 3, 9] and rung_budget(0.5, 2, 1) == 1
    assert rung_budget(0.25, 3, 1) == 0.75
    assert rung_sizes(9, 3) == [9, 3, 1] and rung_sizes(10, 3) == [10, 3, 1] and rung_sizes(8, 2) == [8, 4, 2, 1]


def test_the_plan_lists_every_rung():
    sweeper = OmegaConf.create({"eta": 3, "budget": "trainer.epochs", "min_budget": 2})
    overrides = OverridesParser.create().parse_overrides(["optim.lr=0.1,0.01,0.001", "optim=sgd,adam,adamw"])
    jobs, note = halving_plan(sweeper, overrides)
    assert [job[-1] for job in jobs] == ["trainer.epochs=2"] * 9 + ["trainer.epochs=6"] * 3 + ["trainer.epochs=18"]
    assert jobs[0] == ["optim.lr=0.1", "optim=sgd", "trainer.epochs=2"] and "rungs of 9 + 3 + 1" in note


def recorded_value(cfg) -> float:
    return zlib.crc32(f"{cfg.optim.lr} {cfg.optim.weight_decay} {cfg.trainer.epochs}".encode()) % 1000 / 1000


def stand_in(cfg, run_dir, on_evaluation=None) -> dict:
    """What a completed job with a validation split leaves in summary.json, its objective `recorded_value`."""
    summary = {"status": "completed", "final_val_acc": recorded_value(cfg), "final_test_acc": 0.5,
               "selection": {"best_checkpoint": "val_acc", "objective": "final_val_acc"},
               "epochs": float(cfg.trainer.epochs), "model": cfg.model.name, "optim": cfg.optim.name,
               "config": plain_config(cfg)}
    RunFolder(run_dir).write_summary(summary)
    return summary


def test_eta_3_over_9_configurations_runs_9_3_1_jobs_and_reports_the_rungs(tmp_path, fake_cifar_root, monkeypatch):
    sweep = tmp_path / "halving"
    monkeypatch.setattr(loop, "train", stand_in)
    assert cli_in_process(monkeypatch, "-m", "hydra/sweeper=successive_halving", "hydra.sweeper.eta=3",
                          "model=lenet5", "optim.lr=0.001,0.01,0.1", "optim.weight_decay=0,0.0005,0.005",
                          "data.val_split=20", f"data.root={fake_cifar_root}", f"hydra.sweep.dir={sweep}") == 0
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    summaries = [json.loads((job / "summary.json").read_text()) for job in jobs]
    budgets = [s["config"]["trainer"]["epochs"] for s in summaries]
    assert budgets == [1] * 9 + [3] * 3 + [9]  # 9 + 3 + 1 jobs at budgets 1, 3, 9 epochs, in that order

    def configuration(summary):
        return summary["config"]["optim"]["lr"], summary["config"]["optim"]["weight_decay"]

    rungs = [summaries[:9], summaries[9:12], summaries[12:]]
    assert len({configuration(s) for s in rungs[0]}) == 9
    expected = []
    for rung, later in itertools.pairwise(rungs):  # the best third by the recorded objective, the earlier of equals
        ranked = sorted(range(len(rung)), key=lambda i: (-rung[i]["final_val_acc"], i))
        best = {configuration(rung[i]) for i in ranked[:len(rung) // 3]}
        assert {configuration(s) for s in later} == best
        expected.append(best)

    with open(sweep / "rungs.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(int(r["rung"]), int(r["budget"])) for r in table] == [(0, 1)] * 9 + [(1, 3)] * 3 + [(2, 9)]
    for rung in (0, 1):
        rows = [r for r in table if int(r["rung"]) == rung]
        values = [float(r["objective"]) for r in rows]
        assert values == sorted(values, reverse=True)  # best first
        promoted = {r["path"] for r in rows if r["promoted"] == "yes"}
        assert {(s["config"]["optim"]["lr"], s["config"]["optim"]["weight_decay"])
                for s, job in zip(summaries, jobs) if str(job) in promoted} == expected[rung]
        assert sum(r["promoted"] == "no" for r in rows) == len(rows) - len(rows) // 3
    assert table[-1]["promoted"] == "winner" and table[-1]["path"] == str(jobs[-1])
    board = (sweep / "leaderboard.md").read_text()
    assert "## Successive halving over trainer.epochs (η = 3)" in board
    assert "Successive halving over trainer.epochs" in (sweep / "report.html").read_text()


def test_a_sweep_of_the_budget_itself_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    status = cli_in_process(monkeypatch, "-m", "hydra/sweeper=successive_halving", "trainer.epochs=1,2",
                            f"hydra.sweep.dir={tmp_path / 'refused'}")
    err = capsys.readouterr().err
    assert status == 2 and "successive halving sets trainer.epochs itself" in err and len(err.strip().splitlines()) == 1


def test_sweeper_fields_that_cannot_work_are_one_line_before_any_job(tmp_path, monkeypatch, capsys):
    """Seen: hydra.sweeper.budget=trainer.batch_size trained rungs at batch sizes 1 and 3; eta=1 was refused
    inside Hydra's "Error in call to target ..." text. Each is one line, exit 2, before any job."""
    for field, message in (("hydra.sweeper.budget=trainer.batch_size", "hydra.sweeper.budget=trainer.batch_size; "
                            "choose trainer.epochs or trainer.budget_min"),
                           ("hydra.sweeper.eta=1", "hydra.sweeper.eta=1; successive halving keeps 1/eta of each "
                            "rung: eta >= 2 (3 is usual)"),
                           ("hydra.sweeper.min_budget=0", "hydra.sweeper.min_budget=0; rung 0's budget must be "
                            "positive")):
        assert cli_in_process(monkeypatch, "-m", "hydra/sweeper=successive_halving", field, "optim.lr=0.1,0.01",
                              f"hydra.sweep.dir={tmp_path / 'sweep'}") == 2
        err = [line for line in "".join(capsys.readouterr()).splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
        assert not (tmp_path / "sweep").exists()
