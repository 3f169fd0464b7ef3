"""What makes two runs the same, defined once, side by side: what a resume may change, what a report
groups into one row, what a job folder's name leaves out.

- `NOT_THE_SETTING`: keys that say where things are or how a run is watched, never what it trains:
  the paths, where the data lives and how it is fetched, the trackers, a study's reported figures, the
  resume switch and how often a preempted job is requeued, progress bars and figures, how the processes talk. Two configs that differ only in
  them are the same run: `trainer.resume=auto` continues it, a sweep started again skips it when it
  completed, the report puts both in one row, and Hydra leaves these overrides out of job folder
  names (conf/config.yaml's `override_dirname.exclude_keys`, held to this list by a test).
- `SEED`: the runs of one setting differ in it; a leaderboard row is a setting, n its seeds.
- `RESUMABLE_CHANGES`: what a resume may change beside those: how long the run trains (the schedule is
  re-planned), how often and at what batch size it evaluates, its device and compilation. Any other
  key changes what a step means.
- `TEST_SET`: the data fields that decide which test images (and labels) a run is scored on: the
  dataset, `test_subset` and CIFAR-100's `labels`; no other field (seeds, flips, mirrors, subsets of
  the training set, preprocessing) changes them.
"""
from __future__ import annotations

import json

from cifarbench.core.config_diff import config_changes, flatten, within

NOT_THE_SETTING = frozenset({
    "paths", "data.root", "data.download", "data.mirrors", "logger", "reported", "trainer.resume",
    "trainer.max_requeues", "trainer.progress", "trainer.plots", "trainer.dist_backend", "trainer.dist_timeout_s",
})
SEED = "trainer.seed"
RESUMABLE_CHANGES = NOT_THE_SETTING | {"trainer.epochs", "trainer.budget_min", "trainer.eval_every",
                                       "trainer.eval_batch_size", "trainer.device", "trainer.compile"}
TEST_SET = frozenset({"name", "test_subset", "labels"})


def same_run(recorded: dict, config: dict) -> bool:
    """Whether a run folder's recorded config is a run of `config` (they differ in NOT_THE_SETTING only)."""
    return not config_changes(recorded, config, NOT_THE_SETTING)


def resume_conflicts(saved: dict, config: dict) -> list[str]:
    """'key: saved → current' for each change a resume may not make (see RESUMABLE_CHANGES)."""
    return config_changes(saved, config, RESUMABLE_CHANGES)


def setting_key(config: dict) -> str:
    """The setting a run's config is, as text: its dotted keys but NOT_THE_SETTING and SEED."""
    return json.dumps({k: v for k, v in flatten(config).items() if not within(k, NOT_THE_SETTING | {SEED})},
                      sort_keys=True)


def is_setting_override(override: str) -> bool:
    """Whether a Hydra override (`optim.lr=0.1`, `debug=quick`, `hydra.job.num=3`) changes the setting
    (the seed does: it tells the jobs of a sweep apart)."""
    key = override.lstrip("+~").partition("=")[0]
    return not key.startswith("hydra.") and not within(key, NOT_THE_SETTING)
