"""Config checks that run before any data is loaded: each failure is one line naming the key, the
bad value and what is allowed."""
from __future__ import annotations

import importlib.resources

from omegaconf import DictConfig, OmegaConf

from cifarbench.device import resolve_amp, resolve_device
from cifarbench.evaluate import TTA_MODES
from cifarbench.recorder import PLOTS
from cifarbench.registry import ConfigError

TRAIN_SIZE = 50_000  # CIFAR-10's training set
GROUPS_WITH_ONE_SCHEMA = ("trainer", "data")  # their default YAML lists every key they may have
TOP_LEVEL = {"data", "model", "optim", "sched", "aug", "trainer"}


def _known_keys(group: str) -> set[str]:
    path = importlib.resources.files("cifarbench.conf") / group / ("default.yaml" if group == "trainer" else "cifar10.yaml")
    return set(OmegaConf.load(str(path)).keys())


def _positive(cfg: DictConfig, key: str, optional: bool = False):
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        allowed = "a positive number" + (" or null" if optional else "")
        raise ConfigError(f"{key}={value}; it must be {allowed}")


def validate_config(cfg: DictConfig):
    unknown = sorted(set(cfg.keys()) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; the config has {', '.join(sorted(TOP_LEVEL))}")
    for group in GROUPS_WITH_ONE_SCHEMA:
        extra = sorted(set(cfg[group].keys()) - _known_keys(group))
        if extra:
            raise ConfigError(f"unknown key(s) {', '.join(f'{group}.{k}' for k in extra)}; "
                              f"{group} has {', '.join(sorted(_known_keys(group)))}")
    for key in ("trainer.batch_size", "trainer.epochs", "trainer.eval_every", "trainer.eval_batch_size", "optim.lr"):
        _positive(cfg, key)
    _positive(cfg, "trainer.budget_min", optional=True)
    resolve_amp(cfg.trainer.amp, resolve_device(cfg.trainer.device))
    subset = cfg.data.train_subset
    if subset is not None and (not isinstance(subset, int) or not 0 < subset <= TRAIN_SIZE):
        raise ConfigError(f"data.train_subset={subset}; it must be an integer in 1..{TRAIN_SIZE} or null")
    test_subset = cfg.data.test_subset
    if test_subset is not None and (not isinstance(test_subset, int) or not 0 < test_subset <= 10_000):
        raise ConfigError(f"data.test_subset={test_subset}; it must be an integer in 1..10000 or null")
    if cfg.trainer.tta not in TTA_MODES:
        raise ConfigError(f"trainer.tta={cfg.trainer.tta!r}; choose one of {', '.join(TTA_MODES)}")
    if cfg.trainer.plots not in PLOTS:
        raise ConfigError(f"trainer.plots={cfg.trainer.plots!r}; choose one of {', '.join(PLOTS)}")
    _positive(cfg, "trainer.lookahead.every", optional=True)
    _positive(cfg, "trainer.whiten_bias_epochs", optional=True)
    if not 0 <= cfg.trainer.label_smoothing < 1:
        raise ConfigError(f"trainer.label_smoothing={cfg.trainer.label_smoothing}; it must be in [0, 1)")
