"""SVHN, cropped digits (Netzer et al. 2011), from its MATLAB files, read with SciPy's `loadmat`
(`pip install 'cifarbench[svhn]'`).

Each `.mat` holds `X`, (32, 32, 3, N) uint8 (height, width, RGB, image), and `y`, (N, 1) labels 1..10
where 10 is the digit 0. `train_32x32.mat` and `test_32x32.mat` are the standard split;
`data.extra=true` adds the 531,131 easier images of `extra_32x32.mat` to the training set. The files
live in `svhn/` under data.root, beside our decoded caches (one for train and test, one for extra).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarbench.data.datasets import DATASETS, ImageDataset, Source
from cifarbench.data.fetch import DatasetError, OfficialFile, cached, fetch

EXTRA_SIZE = 531_131


@dataclass(frozen=True, kw_only=True)
class SvhnSource(Source):
    """The training, test and extra `.mat` files; `extra` says whether training uses the extra images."""
    train: OfficialFile
    test: OfficialFile
    extra_file: OfficialFile
    extra: bool = False

    def load(self, root: str | Path, download: bool = True, mirrors=None) -> ImageDataset:
        """The dataset as uint8 arrays ((N, 3, 32, 32) images, labels 0..9), fetched into `root/svhn`
        first if needed. Raises DatasetError (a file missing or corrupt; SciPy missing when there is
        something to decode: a cached dataset loads without it)."""
        folder = Path(root).expanduser() / self.folder
        mirrors = tuple(mirrors or self.mirrors)

        def decoder(*splits: tuple[str, OfficialFile]):
            def decode() -> dict[str, np.ndarray]:
                loadmat = _loadmat()  # before any download: no 1.3 GB fetched for nothing
                arrays = {}
                for split, file in splits:
                    images, labels = read_mat(fetch(folder, file, mirrors, download, self), loadmat)
                    arrays.update({f"{split}_images": images, f"{split}_labels": labels})
                return arrays
            return decode

        splits = (("train", self.train), ("test", self.test))
        names = ("train_images", "train_labels", "test_images", "test_labels")
        arrays = cached(folder / "svhn-uint8.npz", [folder / f.name for _, f in splits], names, decoder(*splits))
        if self.extra:
            extra = cached(folder / "svhn-extra-uint8.npz", [folder / self.extra_file.name],
                           ("extra_images", "extra_labels"), decoder(("extra", self.extra_file)))
            arrays["train_images"] = np.concatenate([arrays["train_images"], extra["extra_images"]])
            arrays["train_labels"] = np.concatenate([arrays["train_labels"], extra["extra_labels"]])
        return ImageDataset(*(arrays[name] for name in names), self.classes)

    def needed_files(self) -> tuple[str, ...]:
        """train_32x32.mat, test_32x32.mat, and extra_32x32.mat with data.extra=true."""
        return (self.train.name, self.test.name, *([self.extra_file.name] if self.extra else []))


def _loadmat():
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError("SVHN's .mat files are read with SciPy, which is not installed: "
                           "pip install 'cifarbench[svhn]' (or pip install scipy)") from None
    return loadmat


def read_mat(path: Path, loadmat) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN `.mat` → (N, 3, 32, 32) uint8 images and (N,) int64 labels with 10 mapped to 0.
    Raises DatasetError naming the file and the problem."""
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as e:  # SciPy raises many kinds for a damaged file
        raise DatasetError(f"{path} is not a readable MATLAB file ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        variables = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{path}: missing 'X' or 'y' (variables: {variables})")
    images, labels = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if images.dtype != np.uint8 or images.shape[:3] != (32, 32, 3):
        raise DatasetError(f"{path}: 'X' is {images.dtype} {images.shape}, expected uint8 (32, 32, 3, N)")
    if labels.shape != images.shape[3:] or (labels.size and (labels.min() < 1 or labels.max() > 10)):
        raise DatasetError(f"{path}: 'y' holds {labels.size} labels in [{labels.min(initial=0)}, "
                           f"{labels.max(initial=0)}] for {images.shape[3]} images; expected one per image in [1, 10]")
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), (labels % 10).astype(np.int64)


SVHN = SvhnSource(
    title="SVHN", classes=tuple("0123456789"), shape=(3, 32, 32), sizes=(73_257, 26_032), folder="svhn",
    mirrors=("http://ufldl.stanford.edu/housenumbers/",),
    train=OfficialFile("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    test=OfficialFile("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    extra_file=OfficialFile("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
)


@DATASETS.register(info="SVHN: 73,257 + 26,032 colour house-number digits, 32×32, 10 classes (+531,131 extra)")
def svhn(extra: bool = False) -> SvhnSource:
    """`extra`: add extra_32x32.mat's 531,131 images to the training set."""
    if extra:
        return dataclasses.replace(SVHN, extra=True, sizes=(SVHN.sizes[0] + EXTRA_SIZE, SVHN.sizes[1]))
    return SVHN
