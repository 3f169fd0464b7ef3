"""A run's data made ready on its device, and reused by the next job of the same process with the same data.

`prepared_data(data_cfg, device)` loads the dataset (decoded uint8 arrays), draws the validation split,
moves the training images to the device and fits the preprocessing statistics on them. A sweep's jobs
run one after another in one process (Hydra's basic launcher), and jobs whose `data` config is equal
get the same PreparedData back instead of doing all that again: the cache is keyed by the data config
and the device and holds one entry, so a new key releases the previous data (host and device memory)
before the new one is loaded.

A speed run's clock counts moving the data to the device and fitting the preprocessing ("What the
clock counts" in the README). That part is timed when it is done (`prepare_seconds`), and every job
using the entry is charged those seconds, so a job's train_seconds are the same whether its data came
from the cache or not; `from_cache` says which (recorded in summary.json).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cifarbench.core.clock import Clock, RunState
from cifarbench.data.datasets import load_dataset
from cifarbench.data.preprocess import build_preprocess
from cifarbench.data.split import training_subset, validation_split


@dataclass(frozen=True)
class PreparedData:
    """train_images (N, C, H, W) uint8 and train_labels (N,) int64 on the device; test_* and val_*
    (the held-out split, empty without one) as host uint8 images (M, C, H, W) and int64 labels (M,);
    `preprocess` fitted on the training images, on the device; `prepare_seconds`: wall seconds the timed
    part (to the device, fitting) took; `from_cache`: this job reused an earlier job's data."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: np.ndarray
    test_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    preprocess: nn.Module
    classes: tuple[str, ...]
    prepare_seconds: float
    from_cache: bool = False


def prepare_data(data_cfg: DictConfig, device: torch.device) -> PreparedData:
    """The data of `data_cfg` (`data.*`, its `name` one of DATASETS) on `device`, built afresh. Raises
    ConfigError for a subset or split larger than the dataset, DatasetError when the dataset cannot be
    loaded."""
    data = load_dataset(data_cfg)
    subset = training_subset(data.train_labels, data_cfg.train_subset, data_cfg.subset_seed)
    train_part, val_part = (subset[part] for part in validation_split(data.train_labels[subset], data_cfg.val_split,
                                                                       data_cfg.val_seed))
    timer = Clock(device, RunState())
    with timer.training():
        train_images = torch.from_numpy(data.train_images[train_part]).to(device)
        train_labels = torch.from_numpy(data.train_labels[train_part]).to(device)
        preprocess = build_preprocess(data_cfg.preprocess, train_images, cache_dir=data_cfg.root).to(device)
    return PreparedData(train_images, train_labels, data.test_images[:data_cfg.test_subset],
                        data.test_labels[:data_cfg.test_subset], data.train_images[val_part],
                        data.train_labels[val_part], preprocess, tuple(data.classes), timer.state.train_seconds)


_cached: tuple[tuple[str, str], PreparedData] | None = None  # (key, data) of the last job in this process


def prepared_data(data_cfg: DictConfig, device: torch.device) -> PreparedData:
    """`prepare_data`, reused while the data config and device stay the same (see the module's docstring)."""
    global _cached
    key = (json.dumps(OmegaConf.to_container(data_cfg, resolve=True), sort_keys=True), str(device))
    if _cached is not None and _cached[0] == key:
        return replace(_cached[1], from_cache=True)
    _cached = None  # release the previous data before loading the next
    data = prepare_data(data_cfg, device)
    _cached = key, data
    return data
