"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the official python archives: find, download, verify,
extract, decode once, cache.

Layout under data.root: the archive (`cifar-10-python.tar.gz`, optional once extracted), its folder of
pickles (`cifar-10-batches-py/`: data_batch_1..5, test_batch; `cifar-100-python/`: train, test) and our
decoded cache (`cifar-10-uint8.npz`, `cifar-100-uint8.npz`), which loads in a fraction of a second.
CIFAR-100's pickles hold two labellings: `fine_labels` (100 classes, `data.labels=fine`) and
`coarse_labels` (the 20 superclasses, `data.labels=coarse`); the cache keeps both.
"""
from __future__ import annotations

import dataclasses
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarbench.data.datasets import DATASETS, ImageDataset, Source
from cifarbench.data.fetch import DatasetError, OfficialFile, cached, extract_tar, fetch
from cifarbench.core.registry import ConfigError

log = logging.getLogger(__name__)

TORONTO = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The label names of the archive's `meta` file, in label order.
CIFAR100_FINE = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
)
CIFAR100_COARSE = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)
CIFAR100_LABELS = {"fine": CIFAR100_FINE, "coarse": CIFAR100_COARSE}


@dataclass(frozen=True, kw_only=True)
class CifarSource(Source):
    """A CIFAR archive: `archive` unpacks into `batches/` holding `train_files` and `test_files`, pickled
    dicts with `data` (N, 3072) uint8 (R, G, B planes of 32×32) and one list of labels per key of
    `label_sets` (key → number of classes); `label_key` is the labelling a run trains on."""
    archive: OfficialFile
    batches: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_sets: tuple[tuple[str, int], ...]
    label_key: str = "labels"
    cache: str

    def load(self, root: str | Path, download: bool = True, mirrors=None) -> ImageDataset:
        """The dataset as uint8 arrays, fetched and decoded into `root` first if needed.

        What is derived repairs itself: an unreadable decoded cache is decoded again, and unreadable
        batches are extracted again when the archive is in `root` (a corrupt archive is replaced).
        """
        root = Path(root).expanduser()
        mirrors = tuple(mirrors or self.mirrors)
        if not all((root / self.batches / name).is_file() for name in (*self.train_files, *self.test_files)):
            self._extract(root, download, mirrors)
        try:
            arrays = self._decoded(root)
        except DatasetError as e:
            if not (root / self.archive.name).is_file():  # batches put there by hand: only the user can replace them
                raise DatasetError(f"{e}. Replace {root / self.batches} with a good copy, or delete it (with "
                                   f"data.download=true {self.title} is then downloaded again)") from e
            log.warning("%s; extracting %s again", e, root / self.archive.name)
            self._extract(root, download, mirrors)
            arrays = self._decoded(root)
        return ImageDataset(arrays["train_images"], arrays[f"train_{self.label_key}"], arrays["test_images"],
                            arrays[f"test_{self.label_key}"], self.classes)

    def needed_files(self) -> tuple[str, ...]:
        """The archive (or, instead, its extracted folder: `extracted`)."""
        return (self.archive.name,)

    def extracted(self) -> str:
        return f" or its extracted {self.batches}/ folder"

    def _extract(self, root: Path, download: bool, mirrors: tuple[str, ...]):
        extract_tar(fetch(root, self.archive, mirrors, download, self), root, self.batches, self.title)

    def _decoded(self, root: Path) -> dict[str, np.ndarray]:
        folder = root / self.batches
        files = [folder / name for name in (*self.train_files, *self.test_files)]
        keys = [key for key, _ in self.label_sets]
        names = ("train_images", "test_images", *(f"{split}_{key}" for split in ("train", "test") for key in keys))

        def decode() -> dict[str, np.ndarray]:
            arrays = {}
            for split, split_files in (("train", self.train_files), ("test", self.test_files)):
                batches = [read_batch(folder / name, self.title, dict(self.label_sets)) for name in split_files]
                arrays[f"{split}_images"] = np.concatenate([images for images, _ in batches])
                for key in keys:
                    arrays[f"{split}_{key}"] = np.concatenate([labels[key] for _, labels in batches])
            return arrays

        return cached(root / self.cache, files, names, decode)


class _BatchUnpickler(pickle.Unpickler):
    """The batches are pickles; allow only what they need (NumPy arrays), never arbitrary code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}  # NumPy's protocol-2 bytes

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def read_batch(path: Path, title: str, label_sets: dict[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One official batch file → (N, 3, 32, 32) uint8 images and, per key of `label_sets` (key → number
    of classes), (N,) int64 labels, checked. Raises DatasetError naming the file and the problem."""
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except Exception as e:  # truncated or foreign files raise many different things
        raise DatasetError(f"{path} is not a readable {title} batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if missing := [key for key in ("data", *label_sets) if key not in batch]:
        raise DatasetError(f"{path}: missing {', '.join(repr(k) for k in missing)} (keys: {sorted(batch)})")
    images = np.asarray(batch["data"])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' is {images.dtype} {images.shape}, expected uint8 (N, 3072)")
    labelled = {}
    for key, count in label_sets.items():
        labels = np.asarray(batch[key])
        if labels.shape != (len(images),):
            raise DatasetError(f"{path}: {labels.shape[0] if labels.ndim else 0} {key} for {len(images)} images")
        if labels.size and (labels.min() < 0 or labels.max() >= count):
            raise DatasetError(f"{path}: {key} outside [0, {count - 1}] (min {labels.min()}, max {labels.max()})")
        labelled[key] = labels.astype(np.int64)
    return images.reshape(-1, 3, 32, 32), labelled


CIFAR10 = CifarSource(
    title="CIFAR-10", classes=CIFAR10_CLASSES, shape=(3, 32, 32), sizes=(50_000, 10_000), folder="", mirrors=TORONTO,
    archive=OfficialFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    batches="cifar-10-batches-py", train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",), label_sets=(("labels", 10),), cache="cifar-10-uint8.npz",
)
CIFAR100 = CifarSource(
    title="CIFAR-100", classes=CIFAR100_FINE, shape=(3, 32, 32), sizes=(50_000, 10_000), folder="", mirrors=TORONTO,
    archive=OfficialFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
    batches="cifar-100-python", train_files=("train",), test_files=("test",),
    label_sets=(("fine_labels", 100), ("coarse_labels", 20)), label_key="fine_labels", cache="cifar-100-uint8.npz",
)


@DATASETS.register(info="CIFAR-10: 50,000 + 10,000 colour images, 32×32, 10 classes")
def cifar10() -> CifarSource:
    return CIFAR10


@DATASETS.register(info="CIFAR-100: 50,000 + 10,000 colour images, 32×32, 100 classes (or 20 superclasses)")
def cifar100(labels: str = "fine") -> CifarSource:
    """`labels`: fine (100 classes) or coarse (the 20 superclasses). Raises ConfigError otherwise."""
    if labels not in CIFAR100_LABELS:
        raise ConfigError(f"data.labels={labels!r}; CIFAR-100 has one of {', '.join(CIFAR100_LABELS)}")
    return dataclasses.replace(CIFAR100, classes=CIFAR100_LABELS[labels], label_key=f"{labels}_labels")


def load_cifar10(root: str | Path, download: bool = True, mirrors=None) -> ImageDataset:
    """CIFAR-10 from `root` (see CifarSource.load)."""
    return CIFAR10.load(root, download, mirrors)
