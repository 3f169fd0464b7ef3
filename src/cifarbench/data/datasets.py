"""The dataset registry behind the `data` config group: `data.name` picks an entry (cifar10, cifar100,
mnist, fashion_mnist, svhn); its builder takes the entry's own fields (`data.labels` for CIFAR-100,
`data.extra` for SVHN) and returns a `Source`: the official files, mirrors and MD5s, the classes, the
image shape and the split sizes, and `load()`, which fetches, verifies, decodes and caches them.

Each format family is one file: `cifar.py` (CIFAR-10/100 python pickles), `idx.py` (the gzipped IDX
files of MNIST and Fashion-MNIST), `svhn.py` (SVHN's MATLAB files).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarbench.core.registry import Registry

DATASETS = Registry("dataset")


@dataclass
class ImageDataset:
    """A dataset as uint8 arrays: images (N, C, H, W) with channel planes (RGB or grey), labels (N,)
    int64 in [0, len(classes))."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Source(ABC):
    """A registry entry: what a dataset is and where its official files come from.

    `shape` is (channels, height, width); `sizes` the number of (training, test) images; `folder` the
    subfolder of data.root its files go into ("" for the CIFAR archives, which unpack into their own
    folder); `mirrors` the base URLs its files are served from, tried in order. (Whether a mirrored
    image keeps its label is the config's `data.flip`, the default of the aug group's horizontal flips:
    true in conf/_data.yaml, false in the digit datasets' conf/data/<name>.yaml.)
    """
    title: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    sizes: tuple[int, int]
    folder: str
    mirrors: tuple[str, ...]

    @abstractmethod
    def load(self, root: str | Path, download: bool = True, mirrors=None) -> ImageDataset:
        """The dataset from `root` (fetched there first if needed; `mirrors` replaces the official
        ones). Raises DatasetError with one line saying what to do."""

    @abstractmethod
    def needed_files(self) -> tuple[str, ...]:
        """The names of the official files this entry, as configured, reads from its folder (`root/folder`)."""

    def extracted(self) -> str:
        """What may stand in for the needed files when they are missing ("" when nothing may)."""
        return ""

    def missing_files(self, folder: Path) -> list[str]:
        """The needed files (needed_files) that are not in `folder`, in their order."""
        return [name for name in self.needed_files() if not (folder / name).is_file()]

    def where_to_put_it(self, folder: Path, mirror: str) -> str:
        """The end of every message that leaves the user to fetch files by hand: every needed file missing from
        `folder` (all of them when none is missing: one was corrupt), where from (`mirror`) and where to."""
        names = self.missing_files(folder) or list(self.needed_files())
        holds = f"{self.folder}/" if self.folder else "them"
        return (f"Put {', '.join(names)} (from {mirror}){self.extracted()} into {folder}, or point data.root (or the "
                f"CIFAR10_ROOT environment variable) at the folder that holds {holds}.")

    def not_found(self, folder: Path, mirror: str) -> str:
        """The message for needed files missing from `folder` with data.download=false: it names every one."""
        missing = self.missing_files(folder)
        verb = "is" if len(missing) == 1 else "are"
        return (f"{self.title} not found in {folder} ({', '.join(missing)} {verb} missing) and data.download=false. "
                f"{self.where_to_put_it(folder, mirror)}")


def dataset_source(data_cfg) -> Source:
    """The Source that a `data` config names, built with the entry's own fields (labels, extra).
    Raises ConfigError for an unknown name; a config without `name` (a checkpoint from before the
    registry) means cifar10."""
    name = data_cfg.get("name", "cifar10")
    fields = DATASETS.fields(name)
    return DATASETS.build(name, **{k: data_cfg[k] for k in fields if k in data_cfg})


def load_dataset(data_cfg, download: bool | None = None) -> ImageDataset:
    """The dataset a `data` config names, from `data.root` (`download` overrides `data.download`)."""
    download = data_cfg.get("download", True) if download is None else download
    return dataset_source(data_cfg).load(data_cfg["root"], download, data_cfg.get("mirrors"))
