"""The Optuna search (hydra/sweeper=optuna, cifarbench.search), in one search to keep it cheap: today's
hparams_search=lenet_optuna config, its space holding a learning rate too small to learn anything, killed
in its fourth trial and run again, continues the same SQLite study (trials numbered on, the killed trial's
parameters asked again first) to 8 finished trials; the median pruner stops bad trials at their first
evaluation (the loop's on_evaluation hook), which end with status `pruned`, keep their files, and are
listed apart from the leaderboard."""
import json

import pytest
import yaml
from helpers import cli_in_process, make_fake_cifar

from cifarbench.engine import loop

optuna = pytest.importorskip("optuna", reason="pip install 'cifarbench[search]'")

TINY = ("model=lenet5", "data.train_subset=96", "data.val_split=32", "data.test_subset=20", "trainer.batch_size=16",
        "trainer.progress=false", "trainer.plots=none")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_cifar(tmp_path_factory.mktemp("data"), n_train=128, n_test=40)


def study_of(sweep):
    return optuna.load_study(study_name="lr_and_weight_decay", storage=f"sqlite:///{sweep / 'optuna.db'}")


def test_a_killed_search_run_again_continues_its_study_and_prunes_bad_trials(tmp_path, data, monkeypatch):
    sweep = tmp_path / "search"
    # Today's config, its lr narrowed to a rate that learns (Adam 0.01) and one that cannot (1e-7): the median
    # pruner (after one completed trial) stops a trial whose validation accuracy after epoch 1 is below the median.
    command = ("hparams_search=lenet_optuna", *TINY, "optim=adam", "trainer.epochs=2", f"data.root={data}",
               "optim.lr=choice(0.01,1e-7)", "hydra.sweeper.n_trials=8", "hydra.sweeper.sampler.name=random",
               "hydra.sweeper.pruner.name=median", "hydra.sweeper.pruner.n_startup_trials=1",
               f"hydra.sweep.dir={sweep}")
    train, calls = loop.train, []

    def killed_in_the_fourth_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a second Ctrl-C: the job, and with it the search, ends at once
        return train(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "train", killed_in_the_fourth_trial)
        assert cli_in_process(patch, "-m", *command) == 130
    before = study_of(sweep).get_trials()
    assert [t.number for t in before] == [0, 1, 2, 3] and before[3].state == optuna.trial.TrialState.RUNNING

    assert cli_in_process(monkeypatch, "-m", *command) == 0  # the same command: the same study, continued
    trials = study_of(sweep).get_trials()
    assert [t.number for t in trials] == list(range(9))  # 8 finished besides the killed one, numbered on
    assert [t.params for t in before[:3]] == [t.params for t in trials[:3]]  # the first three kept as they were
    assert trials[3].state == optuna.trial.TrialState.FAIL
    assert trials[4].user_attrs["retry_of"] == 3 and trials[4].params == before[3].params  # asked again first
    folders = {int(p.name.split("_")[0]): p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()}
    assert sorted(folders) == list(range(9))  # job k is trial k
    pruned = [t.number for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median pruner stopped no trial"
    for number in pruned:
        summary = json.loads((folders[number] / "summary.json").read_text())
        assert summary["status"] == "pruned" and summary["epochs"] == 1.0 and summary["config"]["optim"]["lr"] == 1e-7
        assert (folders[number] / "checkpoints" / "last.pt").is_file()
        assert len((folders[number] / "metrics.csv").read_text().splitlines()) == 2  # its header and one evaluation
        assert trials[number].intermediate_values == {1: summary["final_val_acc"]}
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    for trial in completed:  # told what the job returned: its final validation accuracy
        assert trial.value == json.loads((folders[trial.number] / "summary.json").read_text())["final_val_acc"]
    assert {o.split("=")[0] for o in yaml.safe_load((folders[0] / ".hydra" / "overrides.yaml").read_text())} >= {
        "optim.lr", "optim.weight_decay"}  # the config's own space, with the command line's lr

    board = (sweep / "leaderboard.md").read_text()
    main_table, _, pruned_table = board.partition("Pruned:")
    assert f"Pruned: {len(pruned)} run(s)" in board
    for number in pruned:
        assert folders[number].name not in main_table and str(folders[number]) in pruned_table
    assert sum(line.startswith("| optim.lr=") for line in main_table.splitlines()) == 9 - len(pruned) - 1


def test_each_pruner_is_built_from_its_fields_and_a_field_it_lacks_is_refused():
    from hydra.errors import HydraException

    from cifarbench.search.trial import epoch_step, make_pruner, make_sampler

    unset = {"n_startup_trials": None, "n_warmup_steps": None, "interval_steps": None, "min_resource": None,
             "max_resource": None, "reduction_factor": None}  # as the sweeper's config holds them
    median = make_pruner({**unset, "name": "median", "n_startup_trials": 1, "n_warmup_steps": 2})
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_startup_trials, median._n_warmup_steps) == (1, 2)
    halving = make_pruner({**unset, "name": "successive_halving", "min_resource": 1, "reduction_factor": 3})
    assert isinstance(halving, optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner({**unset, "name": "hyperband", "min_resource": 1, "max_resource": 9}),
                      optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner({**unset, "name": "none"}), optuna.pruners.NopPruner)
    with pytest.raises(HydraException, match="pruner.max_resource does not apply to the median pruner"):
        make_pruner({**unset, "name": "median", "max_resource": 9})
    with pytest.raises(HydraException, match="pruner.name='mean'; choose one of none, median"):
        make_pruner({**unset, "name": "mean"})
    assert isinstance(make_sampler({"name": "random", "seed": 3}), optuna.samplers.RandomSampler)
    # The step an evaluation reports at: whole epochs trained (a budget's stop inside epoch 3 counts as 2).
    assert [epoch_step({"epoch": e}) for e in (1.0, 2.0, 2.9999, 3.0)] == [1, 2, 2, 3]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_failed_trial_is_never_the_best_whichever_the_direction(direction):
    """A job that failed returns -inf (commands/train.py): told as the worst value for the direction, so that
    under minimize it is not the best trial (-inf would be); a direction Optuna does not know is refused."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.errors import HydraException

    from cifarbench.search.optuna_search import OptunaSearch, outcome

    def job(value):
        ret = JobReturn(hydra_cfg=None, status=JobStatus.COMPLETED)
        ret.return_value = value
        return ret

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    for value in (0.25, float("-inf"), 0.5):
        trial = study.ask()
        state, told = outcome(job(value), direction)
        study.tell(trial, told, state=optuna.trial.TrialState[state.upper()])
    assert outcome(job(float("-inf")), direction) == ("complete", float("inf") if direction == "minimize"
                                                      else float("-inf"))
    # the best of 0.25, (failed), 0.5: trial 2 when maximising, trial 0 when minimising; never trial 1
    assert study.best_trial.number == (2 if direction == "maximize" else 0)
    with pytest.raises(HydraException, match="hydra.sweeper.direction='max'; choose maximize"):
        OptunaSearch(direction="max").check()  # (at setup, before any job)


def test_a_trials_other_ddp_ranks_never_prune_and_open_no_storage(tmp_path, monkeypatch):
    """Rank 0 alone reports to the study; the other ranks get a hook (to take part in the verdict) that
    opens no SQLite file and never stops the run on its own."""
    from omegaconf import OmegaConf

    from cifarbench.search.trial import TRIAL_ENV, trial_reporter

    monkeypatch.setenv(TRIAL_ENV, "0")
    hydra_cfg = OmegaConf.create({"sweeper": {"storage": None, "study_name": "search", "pruner": {"name": "median"}},
                                  "sweep": {"dir": str(tmp_path)}})
    report = trial_reporter(hydra_cfg, main_rank=False)
    assert report({"epoch": 1.0, "val_acc": 0.0, "test_acc": 0.0}) is False
    assert list(tmp_path.iterdir()) == []  # no optuna.db


def test_a_search_whose_every_trial_is_refused_says_why_in_one_line(tmp_path, data, monkeypatch, capsys):
    """Seen: `hparams_search=lenet_optuna debug=quick` (its 5,000 validation images out of quick's 256) printed
    `trial N: fail` or `complete -inf` for every trial and exited 0. What every trial shares is checked before
    the first: one line, exit 2, no sweep folder, no trial."""
    code = cli_in_process(monkeypatch, "hparams_search=lenet_optuna", "debug=quick", "hydra.sweeper.n_trials=2",
                          f"data.root={data}", f"hydra.sweep.dir={tmp_path / 'search'}")
    output = "".join(capsys.readouterr())
    assert code == 2, output[-2000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines == ["error: data.val_split=5000; it must be an integer in 0..255 (the held-out part of the 256 "
                     "training images, data.train_subset included)"], lines
    assert not (tmp_path / "search").exists()


def test_a_search_of_which_no_trial_trained_stops_with_the_first_error(monkeypatch):
    """A failure no check could see before (here every job raises): each trial's line says why, and the
    search stops with the first error rather than ending 0."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.errors import HydraException

    from cifarbench.search.sweeper import job_error, require_some_result

    def failed(message):
        ret = JobReturn(hydra_cfg=None, status=JobStatus.FAILED)
        ret.return_value = RuntimeError(message + "\nmore")
        return ret

    ok = JobReturn(hydra_cfg=None, status=JobStatus.COMPLETED)
    ok.return_value = 0.5
    assert job_error(failed("disk full")) == "RuntimeError: disk full" and job_error(ok) is None
    require_some_result([failed("a"), ok], "this search")  # one trained: the search goes on
    with pytest.raises(HydraException, match="^every job of this search failed; the first: RuntimeError: a$"):
        require_some_result([failed("a"), failed("b")], "this search")
