"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017) from their gzipped IDX files.

IDX: a big-endian header (two zero bytes, the element type 0x08 = uint8, the number of dimensions,
then each dimension as a uint32), then the elements in C order: `*-images-idx3-ubyte.gz` hold
(N, 28, 28) grey pixels, `*-labels-idx1-ubyte.gz` (N,) class ids. Both datasets use the same four
file names, so each lives in its own subfolder of data.root (`mnist/`, `fashion_mnist/`), beside our
decoded cache. The gzip files are read as they are: nothing to extract.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarbench.data.datasets import DATASETS, ImageDataset, Source
from cifarbench.data.fetch import DatasetError, OfficialFile, cached, fetch

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")  # what each file of NAMES holds
UINT8 = 0x08


@dataclass(frozen=True, kw_only=True)
class IdxSource(Source):
    """Four IDX files, in the order of NAMES (training images and labels, test images and labels)."""
    files: tuple[OfficialFile, ...]
    cache: str

    def load(self, root: str | Path, download: bool = True, mirrors=None) -> ImageDataset:
        """The dataset as uint8 arrays ((N, 1, 28, 28) images), fetched into `root/folder` first if
        needed. The files are MD5-verified whenever they are decoded (a stale or unreadable cache)."""
        folder = Path(root).expanduser() / self.folder
        mirrors = tuple(mirrors or self.mirrors)

        def decode() -> dict[str, np.ndarray]:
            paths = [fetch(folder, file, mirrors, download, self) for file in self.files]
            arrays = {name: read_idx(path, 1 if "labels" in name else 3) for name, path in zip(ARRAYS, paths)}
            for split in ("train", "test"):
                images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
                if images.shape[1:] != self.shape[1:]:
                    raise DatasetError(f"{folder}: {split} images are {images.shape[1]}×{images.shape[2]}, "
                                       f"expected {self.shape[1]}×{self.shape[2]}")
                if len(labels) != len(images) or (labels.size and labels.max() >= len(self.classes)):
                    raise DatasetError(f"{folder}: {len(labels)} {split} labels (max {labels.max(initial=0)}) for "
                                       f"{len(images)} images; expected one per image in [0, {len(self.classes) - 1}]")
                arrays[f"{split}_images"] = images[:, None]
                arrays[f"{split}_labels"] = labels.astype(np.int64)
            return arrays

        arrays = cached(folder / self.cache, [folder / name for name in NAMES], ARRAYS, decode)
        return ImageDataset(*(arrays[name] for name in ARRAYS), self.classes)

    def needed_files(self) -> tuple[str, ...]:
        """The four IDX files (NAMES)."""
        return tuple(file.name for file in self.files)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A gzipped IDX file of uint8 elements with `ndim` dimensions, as an array of that shape.
    Raises DatasetError naming the file when it is not one."""
    try:
        with gzip.open(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path} is not a readable gzip file ({type(e).__name__}: {e})") from e
    header = 4 + 4 * ndim
    if len(data) < header or data[:2] != b"\0\0" or data[2] != UINT8 or data[3] != ndim:
        raise DatasetError(f"{path}: not an IDX file of uint8 with {ndim} dimension(s) (header {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(dims):
        raise DatasetError(f"{path}: {len(data) - header} bytes of data for a {'×'.join(map(str, dims))} array")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()  # writable, as torch wants


MNIST = IdxSource(
    title="MNIST", classes=tuple("0123456789"), shape=(1, 28, 28), sizes=(60_000, 10_000), folder="mnist",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    files=tuple(OfficialFile(name, md5) for name, md5 in zip(NAMES, (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432", "9fb629c4189551a2d022fa330f9573f3",
        "ec29112dd5afa0611ce80d1b7f02629c"))),
    cache="mnist-uint8.npz",
)
FASHION_MNIST = IdxSource(
    title="Fashion-MNIST", classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                    "Sneaker", "Bag", "Ankle boot"),
    shape=(1, 28, 28), sizes=(60_000, 10_000), folder="fashion_mnist",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    files=tuple(OfficialFile(name, md5) for name, md5 in zip(NAMES, (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe", "bef4ecab320f06d8554ea6380940ec79",
        "bb300cfdad3c16e7a12a480ee83cd310"))),
    cache="fashion-mnist-uint8.npz",
)


@DATASETS.register(info="MNIST: 60,000 + 10,000 grey handwritten digits, 28×28, 10 classes")
def mnist() -> IdxSource:
    return MNIST


@DATASETS.register(info="Fashion-MNIST: 60,000 + 10,000 grey clothing images, 28×28, 10 classes")
def fashion_mnist() -> IdxSource:
    return FASHION_MNIST
