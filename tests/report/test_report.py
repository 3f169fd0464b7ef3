"""Leaderboards over seeds and the value sweeps maximise."""
import csv
import json
import math
import os
import statistics
from pathlib import Path

import pytest
import yaml
from helpers import fake_run
from PIL import Image
from scipy import stats as scipy_stats

from cifarbench.report import write_report
from cifarbench.report.board import settings_of
from cifarbench.report.figures import mean_band
from cifarbench.report.runs import find_runs
from cifarbench.run.metrics import objective

# The module-scoped runs below are shared by its tests: one pytest-xdist worker runs them all.
pytestmark = pytest.mark.xdist_group("test_report")

SETTINGS = {"optim.lr=0.001": ("optim.lr=0.001",), "optim.lr=0.003": ("optim.lr=0.003",)}
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("summary, value", [
    ({"status": "completed", "final_test_acc": 0.5, "best_test_acc": 0.6}, 0.5),  # final, never best-on-test
    ({"status": "completed", "final_test_acc": 0.5, "final_val_acc": 0.4,
      "selection": {"best_checkpoint": "val_acc", "objective": "final_val_acc"}}, 0.4),
    ({"status": "diverged", "final_test_acc": 0.5}, -math.inf),
    ({"status": "failed", "error": "ConfigError: ..."}, -math.inf),
    ({"status": "running", "final_test_acc": 0.5}, -math.inf),
    ({"status": "completed", "final_test_acc": math.nan}, -math.inf),
])
def test_the_objective_is_the_final_selection_accuracy_and_minus_inf_for_what_did_not_complete(summary, value):
    assert objective(summary) == value


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory, compose_with):
    """2 settings × 3 seeds of LeNet-5 with a validation split, laid out as a Hydra sweep (job folders
    with .hydra/overrides.yaml), trained in-process: on real CIFAR-10 images (the first 1,000 training
    and 500 test images) where $CIFAR10_ROOT holds them, as in CI, else on the fake dataset."""
    from helpers import make_fake_cifar

    from cifarbench.engine.loop import train

    base = tmp_path_factory.mktemp("seeds")
    real = Path(os.environ.get("CIFAR10_ROOT", "/nonexistent"))
    root, subsets = ((real, ("data.train_subset=1000", "data.test_subset=500"))
                     if (real / "cifar-10-batches-py").is_dir() else (make_fake_cifar(base / "data"), ()))
    sweep = base / "sweep"
    job = 0
    for overrides in SETTINGS.values():
        for seed in SEEDS:
            folder = sweep / str(job)
            job_overrides = [*overrides, f"trainer.seed={seed}"]
            train(compose_with(*job_overrides, "model=lenet5", "optim=adam", "trainer.epochs=2", "trainer.batch_size=64",
                               "trainer.progress=false", "trainer.plots=none", "data.val_split=40", *subsets,
                               f"data.root={root}"), folder)
            (folder / ".hydra").mkdir()
            (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(job_overrides))
            job += 1
    return sweep


def test_seeds_of_a_setting_form_one_row_with_their_spread(seed_sweep):
    write_report(seed_sweep)
    with open(seed_sweep / "leaderboard.csv") as f:
        board = list(csv.DictReader(f))
    with open(seed_sweep / "leaderboard_runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert sorted(row["setting"] for row in board) == sorted(SETTINGS) and len(runs) == 6
    for row in board:
        summaries = [json.loads((Path(r["path"]) / "summary.json").read_text())
                     for r in runs if r["run"] == row["setting"]]
        assert sorted(s["config"]["trainer"]["seed"] for s in summaries) == list(SEEDS)
        assert (row["n"], sorted(row["seeds"].split(","))) == ("3", ["0", "1", "2"])
        for key in ("final_test_acc", "final_val_acc"):
            values = [s[key] for s in summaries]
            # (written to six significant digits: within 5e-6 of the value, relatively)
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.fmean(values), rel=5e-6)
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values), rel=5e-6, abs=1e-15)
        assert float(row["objective"]) == float(row["final_val_acc_mean"])
        # the 95% interval of the objective (the validation accuracy here), Student's t as SciPy computes it
        values = [s["final_val_acc"] for s in summaries]
        if statistics.stdev(values) > 0:
            expected = scipy_stats.t.interval(0.95, 2, loc=statistics.fmean(values), scale=scipy_stats.sem(values))
            low_high = (float(row["objective_ci_low"]), float(row["objective_ci_high"]))
            assert low_high == pytest.approx(expected, rel=5e-6)
        assert float(row["train_seconds_median"]) == statistics.median(s["train_seconds"] for s in summaries)
        to_50 = [next((r["train_seconds"] for r in run.rows if r["test_acc"] >= 0.5), math.inf)
                 for run in find_runs(seed_sweep) if run.overrides[0] == row["setting"]]
        # (a column empty in every row is left out of the CSV)
        assert row.get("seconds_to_50_median", "") == ("" if math.isinf(statistics.median(to_50))
                                                       else f"{statistics.median(to_50):.6g}")
        assert row["status"] == "completed"
    assert [float(r["objective"]) for r in board] == sorted((float(r["objective"]) for r in board), reverse=True)
    top, other = ([float(r["final_val_acc"]) for r in runs if r["run"] == row["setting"]] for row in board)
    assert board[0]["vs_top"] == "top" and board[1]["vs_top"] in ("tied with top", "below top")
    if statistics.stdev(top) + statistics.stdev(other) > 0:
        assert float(board[1]["p_vs_top"]) == pytest.approx(scipy_stats.ttest_ind(top, other, equal_var=False).pvalue)
    assert "±" in (seed_sweep / "leaderboard.md").read_text()
    for name in ("compare_time.png", "compare_epoch.png"):
        with Image.open(seed_sweep / name) as image:
            assert image.size == (900, 500)
    assert (seed_sweep / "final_acc.png").is_file()


def test_the_band_is_the_mean_min_and_max_over_seeds(seed_sweep):
    setting, _ = settings_of(find_runs(seed_sweep))
    runs = setting.runs
    assert len(runs) == 3
    xs, mean, low, high = mean_band(runs, "epoch")
    accuracies = [[r["test_acc"] for r in run.rows] for run in runs]
    assert xs == [1.0, 2.0]
    assert mean == [statistics.fmean(a) for a in zip(*accuracies)]
    assert (low, high) == ([min(a) for a in zip(*accuracies)], [max(a) for a in zip(*accuracies)])


# Reports of several folders, and figures a person can read ------------------------------------------
def test_several_folders_make_one_report_that_ranks_each_test_set_apart(tmp_path, capsys):
    from cifarbench.commands.report import main

    for name, model, accuracy, subset in (("a/0", "model=lenet", 0.6, 500), ("a/1", "model=lenet_bn", 0.7, 500),
                                          ("b/0", "model=lenet", 0.5, None), ("b/1", "model=resnet18", 0.9, None)):
        fake_run(tmp_path / name, [model, "trainer.epochs=3"], accuracy, subset)
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith("error: several folders: say where their report goes with --out DIR\n")

    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both")]) == 0
    with open(tmp_path / "both" / "leaderboard.csv") as f:
        board = [(row["setting"], row["final_test_acc_mean"], row["test_set"]) for row in csv.DictReader(f)]
    assert board == [("model=lenet_bn", "0.7", "data.test_subset=500"), ("model=lenet", "0.6", "data.test_subset=500"),
                     ("model=resnet18", "0.9", "data.test_subset=null"),
                     ("model=lenet", "0.5", "data.test_subset=null")]
    markdown = (tmp_path / "both" / "leaderboard.md").read_text()
    assert markdown.startswith("Runs scored on different test sets are ranked apart: one table per test set.\n")
    first = markdown.index("## Test set 1: data.test_subset=500")
    second = markdown.index("## Test set 2: data.test_subset=null")
    assert first < markdown.index("| model=lenet_bn |") < markdown.index("| model=lenet |") < second
    assert second < markdown.index("| model=resnet18 |")
    for k in (1, 2):
        for name in ("compare_time", "compare_epoch", "final_acc"):
            assert (tmp_path / "both" / f"{name}_set{k}.png").is_file()
    assert not (tmp_path / "both" / "final_acc.png").exists() and not (tmp_path / "a" / "leaderboard.csv").exists()
    assert "Test set 2: data.test_subset=null" in (tmp_path / "both" / "report.html").read_text()


def test_one_setting_from_two_data_roots_and_a_resume_is_one_row(tmp_path):
    """Seen: the seeds of one setting, one run from another data.root (or resumed with trainer.resume=auto,
    watched with other progress and figures settings), made two leaderboard rows of n=1. Where the data
    lives and how a run is watched are not the setting (run/setting.py): one row of n=2."""
    from cifarbench.report.board import settings_of

    fake_run(tmp_path / "0", ["model=lenet", "trainer.seed=0"], 0.6, root="/data", trainer={"resume": None})
    fake_run(tmp_path / "1", ["model=lenet", "trainer.seed=1"], 0.7, root="/mnt/elsewhere",
             trainer={"resume": "auto", "progress": False, "plots": "none"})
    fake_run(tmp_path / "2", ["model=lenet", "trainer.seed=0"], 0.5, trainer={"resume": None, "epochs": 5})
    settings = settings_of(find_runs(tmp_path))
    assert [[run.path.name for run in setting.runs] for setting in settings] == [["0", "1"], ["2"]]
    write_report(tmp_path)
    with open(tmp_path / "leaderboard.csv") as f:
        assert sorted((row["n"], row["seeds"]) for row in csv.DictReader(f)) == [("1", "0"), ("2", "0,1")]


def test_a_seed_retried_after_a_kill_counts_once_by_its_completed_run(tmp_path):
    """Seen: an Optuna search killed in trial 3 and rerun asks trial 3's parameters again (trial 4, which
    completes): the leaderboard merged the two into one setting "seeds 0,0, n 1, 1 interrupted, 1 completed"
    with no objective, ranked last though it was the search's best. A completed run of a seed supersedes
    that seed's unfinished attempts; a seed that never completed still weighs on its setting."""
    def status(folder: Path, value: str) -> Path:
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, "status": value}))
        return folder

    status(fake_run(tmp_path / "3", ["optim.lr=0.003", "trainer.seed=0"], 0.2), "interrupted")
    fake_run(tmp_path / "4", ["optim.lr=0.003", "trainer.seed=0"], 0.8)
    fake_run(tmp_path / "5", ["optim.lr=0.01", "trainer.seed=0"], 0.6)
    status(fake_run(tmp_path / "6", ["optim.lr=0.1", "trainer.seed=0"], 0.9), "failed")
    fake_run(tmp_path / "7", ["optim.lr=0.1", "trainer.seed=1"], 0.9)
    write_report(tmp_path)
    with open(tmp_path / "leaderboard.csv") as f:
        board = [(row["setting"], row["n"], row["status"], float(row["objective"])) for row in csv.DictReader(f)]
    assert board == [("optim.lr=0.003", "1", "completed", 0.8), ("optim.lr=0.01", "1", "completed", 0.6),
                     ("optim.lr=0.1", "1", "1 failed, 1 completed", -math.inf)]
    with open(tmp_path / "leaderboard_runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 5  # every attempt is still listed


def test_a_sampled_float_is_labelled_to_four_digits():
    """Seen: an Optuna search's leaderboard labelled a setting `optim.lr=0.0029723442531939316`."""
    from cifarbench.report.board import as_override

    assert [as_override("optim.lr", v) for v in (0.0029723442531939316, 0.01, 1e-05, 3)] == [
        "optim.lr=0.002972", "optim.lr=0.01", "optim.lr=1e-05", "optim.lr=3"]


def with_config(folder: Path, **config) -> Path:
    """A fake_run folder whose recorded config also holds `config` (group → fields)."""
    summary = json.loads((folder / "summary.json").read_text())
    summary["config"].update(config)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_a_setting_is_labelled_by_the_override_keys_that_vary():
    """Seen: the label was the whole job folder name, constant overrides and hash included
    (`1_data.test_subset=200,data.train_subset=400,model=lenet,…-ddb3e953f6`), whenever a test set held one
    setting. Now: the keys whose value varies among the runs compared (one test set's); where none does,
    those that vary across the report; where none does either, the run's own overrides, else its model and
    optimizer. Never the seed, nor what is not the setting (data.root, trainer.resume)."""
    from cifarbench.report.board import build_boards
    from cifarbench.report.runs import Run

    def run(name, overrides, test_subset=None, **config):
        summary = {"status": "completed", "model": "lenet", "optim": "sgd",
                   "config": {"data": {"test_subset": test_subset}, **config}}
        return Run(Path(name), summary, [], overrides)

    constant = ["data.train_subset=400", "model=lenet", "data.root=/data"]
    two_test_sets = [run(f"{k}_data.test_subset={n},data.train_subset=400,model=lenet,trainer.seed={seed}-ddb3e953f6",
                         [f"data.test_subset={n}", *constant, f"trainer.seed={seed}"], n)
                     for k, (n, seed) in enumerate([(200, 0), (200, 1), (100, 0), (100, 1)])]
    boards = build_boards(two_test_sets, Path("out"))
    assert [[s.label for s in board.settings] for board in boards] == [["data.test_subset=200"],
                                                                       ["data.test_subset=100"]]
    # optim.lr set in one run only: the other's value is read from its recorded config; data.root and
    # trainer.resume differ too, but are not the setting
    sgd = {"name": "sgd", "lr": 0.01}
    varied = [run("a", ["model=lenet_bn", "data.root=/a", "trainer.resume=auto"], model={"name": "lenet_bn"}, optim=sgd),
              run("b", ["model=lenet_bn", "data.root=/b", "optim.lr=0.1"], model={"name": "lenet_bn"},
                  optim={**sgd, "lr": 0.1}),
              run("c", ["model=lenet", "optim.lr=0.1"], model={"name": "lenet"}, optim={**sgd, "lr": 0.1})]
    board, = build_boards(varied, Path("out"))
    assert sorted(s.label for s in board.settings) == ["model=lenet optim.lr=0.1", "model=lenet_bn optim.lr=0.01",
                                                       "model=lenet_bn optim.lr=0.1"]
    assert sorted(s.short for s in board.settings) == ["lenet, lr=0.1", "lenet_bn, lr=0.01", "lenet_bn, lr=0.1"]
    alone, = build_boards([run("x", ["model=lenet5", "trainer.seed=3"]), run("y", ["model=lenet5"])], Path("out"))
    assert [s.label for s in alone.settings] == ["model=lenet5"]
    single, = build_boards([run("23-39-35_lenet_sgd_20673-8c86d3", [])], Path("out"))
    assert [s.label for s in single.settings] == ["model=lenet optim=sgd"]


def test_tables_round_floats_and_leave_out_columns_empty_in_every_row(tmp_path):
    """Seen: `0.30400000000000005` in leaderboard.csv, and columns empty in every row (no validation split,
    no error, no target). Floats are written to six significant digits (the CSV still reads back as
    numbers); a column empty in every row is in none of leaderboard.csv, leaderboard_runs.csv,
    leaderboard.md and report.html."""
    for job, (setting, accuracy) in enumerate([("model=a", 0.1 + 0.204), ("model=a", 0.1 + 0.204),
                                               ("model=b", 0.2 + 0.1)]):
        fake_run(tmp_path / str(job), [setting, f"trainer.seed={job}"], accuracy)
    write_report(tmp_path)
    empty = {"final_val_acc_mean", "final_val_acc_std", "error", "target", "p_above_target", "above_target",
             "seeds_for_target", "seconds_to_50_median", "seconds_to_70_median", "seconds_to_90_median"}
    with open(tmp_path / "leaderboard.csv") as f:
        reader = csv.DictReader(f)
        rows = {row["setting"]: row for row in reader}
        assert not empty & set(reader.fieldnames) and "final_test_acc_ci_low" in reader.fieldnames
    assert (rows["model=a"]["final_test_acc_mean"], rows["model=a"]["final_test_acc_std"]) == ("0.304", "0")
    assert rows["model=b"]["objective"] == "0.3"  # 0.30000000000000004
    assert rows["model=a"]["objective_ci_low"] == rows["model=a"]["objective_ci_high"] == "0.304"  # no spread
    with open(tmp_path / "leaderboard_runs.csv") as f:
        reader = csv.DictReader(f)
        runs = list(reader)
        assert not {"final_val_acc", "error", *(f"seconds_to_{a}" for a in (50, 70, 90))} & set(reader.fieldnames)
    assert sorted(row["final_test_acc"] for row in runs) == ["0.3", "0.304", "0.304"]
    header = (tmp_path / "leaderboard.md").read_text().splitlines()[0]
    page = (tmp_path / "report.html").read_text()
    for column in empty:
        assert f"| {column} |" not in header and f'data-key="{column}"' not in page
    assert "| final_test_acc_mean |" in header and 'data-key="final_test_acc_mean"' in page


@pytest.fixture(scope="module")
def many_settings(tmp_path_factory):
    """31 settings × 2 seeds with long names, as a `tenminute`-like sweep leaves them (runs only on file)."""
    from cifarbench.report.board import build_boards
    from cifarbench.report.runs import find_runs

    root = tmp_path_factory.mktemp("many")
    for i in range(31):
        for seed in (0, 1):
            fake_run(root / f"{2 * i + seed}", [f"study/tenminute=variant_{i:02d}_with_a_long_descriptive_name",
                                                f"optim.lr={0.01 * (1 + i % 3):g}", "trainer.epochs=3",
                                                f"trainer.seed={seed}"], 0.3 + 0.02 * i + 0.01 * seed)
    board, = build_boards(find_runs(root), root)
    return board


def test_figure_labels_show_only_what_varies_shortened():
    from cifarbench.report.board import LABEL_CHARS, figure_labels, short_label

    assert short_label(["model=lenet_bn", "optim.lr=0.01", "study/tenminute=lenet_bc", "aug=none"], "x") == (
        "lenet_bn, lr=0.01, lenet_bc, aug=none")
    long = [f"variant_{i:02d}_with_a_long_descriptive_name, lr=0.01" for i in range(3)]
    assert figure_labels(long) == [f"variant_{i:02d}_with_a_long_descriptive_…" for i in range(3)]
    assert all(len(label) == LABEL_CHARS for label in figure_labels(long))
    shared_start = [f"a_very_long_shared_prefix_of_all_the_names_{i}" for i in range(3)]
    assert figure_labels(shared_start) == ["…0", "…1", "…2"]
    same_start = ["x" * 50 + "1", "x" * 50 + "2", "y"]
    assert figure_labels(same_start) == ["x" * 35 + "… #1", "x" * 35 + "… #2", "y"]


def test_a_many_run_report_keeps_legends_outside_labels_inside_and_one_colour_per_setting(many_settings):
    from matplotlib.colors import to_hex

    from cifarbench.report.figures import comparison_figure, final_acc_figure

    settings = many_settings.settings
    assert [s.label for s in settings[:2]] == ["study/tenminute=variant_30_with_a_long_descriptive_name optim.lr=0.01",
                                               "study/tenminute=variant_29_with_a_long_descriptive_name optim.lr=0.03"]
    assert [s.short for s in settings[:2]] == ["variant_30_with_a_long_descriptive_…",
                                               "variant_29_with_a_long_descriptive_…"]
    curves = comparison_figure(settings, "epoch", "Test accuracy against epoch")
    curves.draw_without_rendering()
    axis, = curves.axes
    legend, = curves.legends
    inside, outside = axis.get_window_extent(), legend.get_window_extent()
    assert outside.x0 > inside.x1 and outside.x1 <= curves.bbox.width and outside.y0 >= 0  # beside the axes
    assert (curves.bbox.width, curves.bbox.height) == (900, 500)
    assert axis.get_title() == "Test accuracy against epoch"
    assert [t.get_text() for t in legend.get_texts()] == [f"{s.short} (2)" for s in settings]
    colour_of = {line.get_label(): to_hex(line.get_color()) for line in axis.lines}
    assert len(axis.lines) == len(set(colour_of.values())) == 31  # one line and colour per setting, its seeds' band

    bars = final_acc_figure(settings, many_settings.setting_rows, "Final test accuracy per setting")
    bars.draw_without_rendering()
    axis, = bars.axes
    assert axis.get_title() == "Final test accuracy per setting"
    labels = axis.get_yticklabels()
    assert sorted(t.get_text() for t in labels) == sorted(s.short for s in settings)
    assert all(t.get_window_extent().x0 >= 0 for t in labels)  # no label cut off
    for label, bar in zip(labels, axis.patches):  # bars bottom to top, each in its setting's colour
        assert to_hex(bar.get_facecolor()) == colour_of[f"{label.get_text()} (2)"]


def test_job_folder_names_leave_out_exactly_what_is_not_the_setting(compose_with):
    """conf/config.yaml's `override_dirname.exclude_keys` is run/setting.py's NOT_THE_SETTING, every key of
    it an override can name (the trackers' fields with logger=many), and `experiment`."""
    from omegaconf import OmegaConf

    from cifarbench.core.config_diff import flatten, within
    from cifarbench.run.setting import NOT_THE_SETTING

    cfg = compose_with("logger=many")
    excluded = set(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "config.yaml")
                   .hydra.job.config.override_dirname.exclude_keys)
    keys = NOT_THE_SETTING | {k for k in flatten(OmegaConf.to_container(cfg)) if within(k, NOT_THE_SETTING)}
    assert excluded == keys | {"experiment"}
