"""A run's data made ready on its device; the decoding reused by the next job of the same process with the same data.

`prepared_data(data_cfg, device)` loads the dataset (decoded uint8 arrays) and draws the validation split
(`HostData`, on the host), then moves the training images to the device and fits the preprocessing
statistics there (`prepare_data`). A sweep's jobs run one after another in one process (Hydra's basic
launcher), and jobs whose `data` config is equal get the same HostData back instead of decoding and
splitting again: the cache is keyed by the data config and holds one entry, so a new key releases the
previous data before the new one is loaded.

A speed run's clock counts moving the data to the device and fitting the preprocessing ("What the
clock counts" in the README): every job does that part itself, timed as its own (`prepare_seconds`),
whether its decoded data came from the cache or not; `from_cache` says which (recorded in summary.json).
When the training part is the whole training set (no subset, no validation split) the decoded array
goes to the device as it is, without a host copy of it first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cifarbench.core.clock import Clock, RunState
from cifarbench.data.datasets import load_dataset
from cifarbench.data.preprocess import build_preprocess
from cifarbench.data.split import training_subset, validation_split


@dataclass(frozen=True)
class HostData:
    """A data config's images decoded and split, on the host: train_* the training part (N, C, H, W)
    uint8 and (N,) int64 (the dataset's own arrays when the part is the whole set), test_* and val_*
    (the held-out split, empty without one) likewise."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    classes: tuple[str, ...]


@dataclass(frozen=True)
class PreparedData:
    """train_images (N, C, H, W) uint8 and train_labels (N,) int64 on the device; test_* and val_*
    (the held-out split, empty without one) as host uint8 images (M, C, H, W) and int64 labels (M,);
    `preprocess` fitted on the training images, on the device; `prepare_seconds`: wall seconds this job's
    timed part (to the device, fitting) took; `from_cache`: this job reused an earlier job's decoded data."""
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


def part(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """array[indices], or `array` itself (no copy) when `indices` are all of its rows in order."""
    whole = len(indices) == len(array) and bool((indices == np.arange(len(array))).all())
    return array if whole else array[indices]


def load_host_data(data_cfg: DictConfig) -> HostData:
    """The data of `data_cfg` (`data.*`, its `name` one of DATASETS) decoded and split on the host. Raises
    ConfigError for a subset or split larger than the dataset, DatasetError when it cannot be loaded."""
    data = load_dataset(data_cfg)
    subset = training_subset(data.train_labels, data_cfg.train_subset, data_cfg.subset_seed)
    train_part, val_part = (subset[p] for p in validation_split(data.train_labels[subset], data_cfg.val_split,
                                                                data_cfg.val_seed))
    return HostData(part(data.train_images, train_part), part(data.train_labels, train_part),
                    data.test_images[:data_cfg.test_subset], data.test_labels[:data_cfg.test_subset],
                    data.train_images[val_part], data.train_labels[val_part], tuple(data.classes))


def prepare_data(data_cfg: DictConfig, device: torch.device, host: HostData, from_cache: bool = False) -> PreparedData:
    """`host`'s training images and labels on `device` and the preprocessing `data_cfg.preprocess` fitted
    there, timed (the device synchronised at both ends)."""
    timer = Clock(device, RunState())
    with timer.training():
        train_images = torch.from_numpy(host.train_images).to(device)
        train_labels = torch.from_numpy(host.train_labels).to(device)
        preprocess = build_preprocess(data_cfg.preprocess, train_images, cache_dir=data_cfg.root).to(device)
    return PreparedData(train_images, train_labels, host.test_images, host.test_labels, host.val_images,
                        host.val_labels, preprocess, host.classes, timer.state.train_seconds, from_cache)


_cached: tuple[str, HostData] | None = None  # (key, decoded data) of the last job in this process


def prepared_data(data_cfg: DictConfig, device: torch.device) -> PreparedData:
    """`prepare_data` on the HostData of `data_cfg`, decoded once while the data config stays the same
    (see the module's docstring)."""
    global _cached
    key = json.dumps(OmegaConf.to_container(data_cfg, resolve=True), sort_keys=True)
    from_cache = _cached is not None and _cached[0] == key
    if not from_cache:
        _cached = None  # release the previous data before loading the next
        _cached = key, load_host_data(data_cfg)
    return prepare_data(data_cfg, device, _cached[1], from_cache)
