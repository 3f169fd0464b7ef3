"""CIFAR-10 from the official python batches: find, download, verify, extract, decode once, cache.

Layout under `root`: `cifar-10-python.tar.gz` (optional), `cifar-10-batches-py/` (the official
pickles) and `cifar-10-uint8.npz` (our decoded cache, loads in a fraction of a second).
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cifarbench.files import atomic_write, read_cache, write_cache

log = logging.getLogger(__name__)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
CACHE = "cifar-10-uint8.npz"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
CACHED_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")  # the fields of Cifar10
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DatasetError(RuntimeError):
    """The dataset is missing, corrupt or could not be fetched; the message says what to do."""


@dataclass
class Cifar10:
    train_images: np.ndarray  # (50000, 3, 32, 32) uint8, RGB planes
    train_labels: np.ndarray  # (50000,) int64 in [0, 10)
    test_images: np.ndarray  # (10000, 3, 32, 32) uint8
    test_labels: np.ndarray  # (10000,) int64
    classes: tuple[str, ...] = CLASSES


def load_cifar10(root: str | Path, download: bool = True, url: str = URL, md5: str = MD5) -> Cifar10:
    """Return CIFAR-10 as uint8 arrays, fetching and decoding it into `root` first if needed.

    What is derived repairs itself: an unreadable decoded cache is decoded again, and unreadable
    batches are extracted again when the archive is in `root` (a corrupt archive is replaced).
    """
    root = Path(root).expanduser()
    if not all((root / FOLDER / name).is_file() for name in (*TRAIN_FILES, TEST_FILE)):
        _extract(_archive(root, download, url, md5), root)
    try:
        return _decoded(root)
    except DatasetError as e:
        if not (root / ARCHIVE).is_file():  # batches put there by hand: only the user can replace them
            raise DatasetError(f"{e}. Replace {root / FOLDER} with a good copy, or delete it (with "
                               f"data.download=true CIFAR-10 is then downloaded again)") from e
        log.warning("%s; extracting %s again", e, root / ARCHIVE)
        _extract(_archive(root, download, url, md5), root)
        return _decoded(root)


def _decoded(root: Path) -> Cifar10:
    """The batches in `root`, from the decoded cache when it is readable and as new as they are."""
    folder = root / FOLDER
    fingerprint = np.array(_fingerprint(folder))
    cached = read_cache(root / CACHE, ("fingerprint", *CACHED_ARRAYS))
    if cached and str(cached["fingerprint"]) == str(fingerprint):
        return Cifar10(**{name: cached[name] for name in CACHED_ARRAYS})
    train = [_read_batch(folder / name) for name in TRAIN_FILES]
    data = Cifar10(
        np.concatenate([images for images, _ in train]),
        np.concatenate([labels for _, labels in train]),
        *_read_batch(folder / TEST_FILE),
    )
    write_cache(root / CACHE, {"fingerprint": fingerprint, **{name: getattr(data, name) for name in CACHED_ARRAYS}})
    return data


def _fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of the batch files: the cache is stale when any of them changes."""
    stats = ((name, (folder / name).stat()) for name in (*TRAIN_FILES, TEST_FILE))
    return ";".join(f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in stats)


def _where_to_put_it(root: Path) -> str:
    return (f"Put {ARCHIVE} (from {URL}) or its extracted {FOLDER}/ folder into {root}, "
            f"or point data.root (or the CIFAR10_ROOT environment variable) at the folder that holds them.")


def _archive(root: Path, download: bool, url: str, md5: str) -> Path:
    """The verified archive in `root`: the one there, else downloaded. A corrupt one there is moved
    aside to `*.corrupt` and downloaded again (with data.download=false the error names it)."""
    archive = root / ARCHIVE
    if archive.is_file():
        digest = _md5(archive)
        if digest == md5:
            return archive
        problem = f"{archive}: checksum mismatch (MD5 {digest}, expected {md5}), the archive is corrupt or incomplete"
        if not download:
            raise DatasetError(f"{problem}. Delete it and run again with data.download=true, or replace it "
                               f"with a good copy from {url}")
        aside = archive.with_name(f"{ARCHIVE}.corrupt")
        try:
            archive.replace(aside)
        except OSError as e:
            raise DatasetError(f"{problem}, and it could not be moved aside ({e}); delete it") from e
        log.warning("%s; moved it to %s and downloading it again", problem, aside)
    elif not download:
        raise DatasetError(f"CIFAR-10 not found in {root} and data.download=false. {_where_to_put_it(root)}")
    root.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, archive)

    def fetch(tmp: Path):
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out, tqdm(
                total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                desc="CIFAR-10", disable=None,
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (urllib.error.URLError, OSError) as e:
            raise DatasetError(f"could not download CIFAR-10 from {url} ({e}). {_where_to_put_it(root)}") from e
        if (digest := _md5(tmp)) != md5:
            raise DatasetError(f"checksum mismatch for {url}: MD5 {digest}, expected {md5}. "
                               f"The download is corrupt or incomplete; nothing was kept from it.")

    return atomic_write(archive, fetch)  # only a verified archive ever gets the real name


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(archive: Path, root: Path):
    """Unpack a verified archive into a temporary folder, then rename: a half extraction is never trusted."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / FOLDER).is_dir():
            raise DatasetError(f"{archive} holds no {FOLDER}/ folder; it is not the CIFAR-10 python archive")
        shutil.rmtree(root / FOLDER, ignore_errors=True)  # an incomplete or damaged folder
        (tmp / FOLDER).rename(root / FOLDER)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"could not extract {archive} ({e}); delete it and try again") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _BatchUnpickler(pickle.Unpickler):
    """The batches are pickles; allow only what they need (NumPy arrays), never arbitrary code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}  # NumPy's protocol-2 bytes

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One official batch file → (N, 3, 32, 32) uint8 images and (N,) int64 labels, checked."""
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except Exception as e:  # truncated or foreign files raise many different things
        raise DatasetError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{path}: missing 'data' or 'labels' (keys: {sorted(batch)})")
    images, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' is {images.dtype} {images.shape}, expected uint8 (N, 3072)")
    if labels.shape != (len(images),):
        raise DatasetError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for {len(images)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DatasetError(f"{path}: labels outside [0, {len(CLASSES) - 1}] (min {labels.min()}, max {labels.max()})")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)
