"""Commands refused in one line, exit 2, leaving no run behind (issue 26); the test set a report groups by."""
import csv
from pathlib import Path

from helpers import cli_in_process

QUICK = ("model=lenet5", "trainer.epochs=1", "trainer.batch_size=64", "trainer.eval_batch_size=100",
         "trainer.progress=false", "trainer.plots=none")


def test_an_override_that_cannot_resolve_is_one_line_exit_2_and_no_run(tmp_path, monkeypatch, capsys):
    """Seen: a 111-line traceback, exit 1, no summary.json (recording the failure raised again)."""
    monkeypatch.delenv("NO_SUCH_VAR_26", raising=False)
    assert cli_in_process(monkeypatch, "optim.lr=${oc.env:NO_SUCH_VAR_26}", f"hydra.run.dir={tmp_path}") == 2
    output = "".join(capsys.readouterr())
    errors = [line.split("] - ")[-1] for line in output.splitlines() if "ERROR" in line]
    assert "Traceback" not in output and len(errors) == 1
    assert errors[0].startswith("optim.lr cannot be resolved: Environment variable 'NO_SUCH_VAR_26' not found")
    assert not (tmp_path / "summary.json").exists()


def test_a_sweep_with_one_unresolvable_job_trains_the_others_and_writes_its_leaderboard(tmp_path, fake_cifar_root,
                                                                                      monkeypatch):
    """Seen: the other jobs trained but the sweep exited 1 with no leaderboard. (-m among the overrides, as
    `cifarbench --help` writes it: seen, Hydra's usage and "unrecognized arguments".)"""
    monkeypatch.delenv("NO_SUCH_VAR_26", raising=False)
    assert cli_in_process(monkeypatch, *QUICK, "-m", "optim.lr=0.01,${oc.env:NO_SUCH_VAR_26}",
                          f"data.root={fake_cifar_root}", f"hydra.sweep.dir={tmp_path}") == 0
    with open(tmp_path / "leaderboard_runs.csv") as f:
        jobs = sorted((row["status"], row["error"]) for row in csv.DictReader(f))
    assert jobs[0] == ("completed", "")
    assert jobs[1][0] == "failed" and "optim.lr cannot be resolved: Environment variable 'NO_SUCH_VAR_26'" in jobs[1][1]


def test_runs_that_differ_in_no_test_image_share_one_test_set():
    """Seen: data.subset_seed, data.flip and data.mirrors each split a leaderboard into "Test set" tables.
    Only the dataset, data.test_subset and CIFAR-100's data.labels change the images or labels scored."""
    from cifarbench.report.runs import Run

    base = {"name": "cifar10", "test_subset": 500, "subset_seed": 0, "flip": True, "mirrors": None,
            "train_subset": 0.1, "preprocess": "meanstd", "val_split": 0, "root": "/a"}
    same = [base, {**base, "subset_seed": 3, "flip": False, "mirrors": ["http://m/"], "train_subset": 0.2,
                   "preprocess": "zca", "val_split": 100, "root": "/b", "extra": True}]
    other = [{**base, "test_subset": None}, {**base, "name": "cifar100", "labels": "coarse"}]

    def test_set(data):
        return Run(Path("."), {"config": {"data": data}}, []).test_set

    assert {test_set(data) for data in same} == {"data.name=cifar10, data.test_subset=500"}
    assert [test_set(data) for data in other] == ["data.name=cifar10, data.test_subset=null",
                                                  "data.labels=coarse, data.name=cifar100, data.test_subset=500"]


def test_a_refused_run_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """Seen: `optim.lr=-1` printed its error between two "run folder:" lines and left the folder (.hydra/,
    train.log) in outputs/runs/<date>/. A run refused before it starts is no run: one line, exit 2, no folder."""
    monkeypatch.chdir(tmp_path)
    assert cli_in_process(monkeypatch, "optim.lr=-1") == 2
    lines = [line for line in "".join(capsys.readouterr()).splitlines() if "][" in line]  # the log's lines
    assert len(lines) == 1 and lines[0].endswith("[ERROR] - optim.lr=-1; it must be a positive number")
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")] == ["outputs", "outputs/runs"]


def test_a_refused_run_in_a_folder_of_ones_own_keeps_its_files(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli_in_process(monkeypatch, "optim.lr=-1", f"hydra.run.dir={tmp_path}") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
