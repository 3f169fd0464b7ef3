"""What the tests share besides fixtures (those are in conftest.py): writers of datasets in the official
formats and of damaged files, and ways to run the CLI and the benchmark script.

- `make_fake_cifar(root, n_train=200, n_test=100, seed=0)`: writes `root/cifar-10-batches-py/` in the
  official python layout (5 train batches, test batch, batches.meta; pickles with byte-string keys)
  holding learnable synthetic images (each class has its own colour and stripe pattern, plus noise).
- `make_fake_mnist(folder, n_train, n_test)`: MNIST's four gzipped IDX files (also Fashion-MNIST's);
  `with_md5s_of(entry, folder)`: that registry entry with the MD5s of those files patched in.
- `damage(path, how)`: spoils a file as disks, crashes and people do, `how` one of `DAMAGES`.
- `fake_run(folder, overrides, final_acc, ...)`: a run folder as a completed job leaves it, without training.
- `run_cli(*overrides, cwd=None)`: runs `python -m cifarbench` in a subprocess, returns CompletedProcess.
- `cli_in_process(monkeypatch, *args)`: `cifarbench ARGS` run in this process under Hydra (the CLI's own
  entry point; no interpreter start); returns its exit status.
- `bench(*args)`: `scripts/bench.py ARGS` run in this process, from the current folder (what it prints: capsys).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def fake_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 images a small network can tell apart: class colour + class stripes + noise."""
    n = len(labels)
    colour = (labels[:, None] * np.array([25, 70, 115]) % 256)[:, :, None, None]
    stripes = ((np.arange(32)[None, :] // (1 + labels[:, None] % 4)) % 2)[:, None, :, None] * 60
    images = colour * 0.6 + stripes + rng.normal(0, 25, (n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072)


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray):
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": path.name.encode(), b"labels": [int(v) for v in labels], b"data": images}, f,
                    protocol=2)


def make_fake_cifar(root: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write a synthetic CIFAR-10 in the official layout under `root`; returns `root`."""
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_labels = rng.integers(0, 10, n_train)
    train_images = fake_images(train_labels, rng)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _write_batch(folder / f"data_batch_{i}", train_images[part], train_labels[part])
    test_labels = rng.integers(0, 10, n_test)
    _write_batch(folder / "test_batch", fake_images(test_labels, rng), test_labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": CLASSES, b"num_vis": 3072, b"num_cases_per_batch": n_train // 5}, f, protocol=2)
    return root


def images_for(labels: np.ndarray, shape, seed: int = 0) -> np.ndarray:
    """(N, C, H, W) uint8: a bright bar whose row is the label, over noise (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (len(labels), *shape)).astype(np.uint8)
    images[np.arange(len(labels)), :, (labels % shape[1]).astype(int), :] = 250
    return images


def write_idx(path: Path, array: np.ndarray):
    """The IDX byte format, gzipped: zero, zero, type 0x08 (uint8), ndim, big-endian dims, data."""
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def make_fake_mnist(folder: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The four gzipped IDX files of MNIST / Fashion-MNIST (1×28×28, 10 classes) in `folder`; returns
    what they hold (train_images (N, 28, 28), train_labels, test_images, test_labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = images_for(labels, (1, 28, 28), seed)[:, 0]
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def with_md5s_of(source, folder: Path):
    """An IDX registry entry (cifarbench.data.idx) whose MD5s are those of the files in `folder`."""
    from cifarbench.data.fetch import OfficialFile

    files = tuple(OfficialFile(f.name, hashlib.md5((folder / f.name).read_bytes()).hexdigest()) for f in source.files)
    return dataclasses.replace(source, files=files)


def make_archive(root: Path, dest: Path) -> str:
    """Pack `root/cifar-10-batches-py` as `dest` (a .tar.gz like the official one); returns its MD5."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return hashlib.md5(dest.read_bytes()).hexdigest()


DAMAGES = ("truncated", "garbage", "bit-rot", "empty", "foreign")


def damage(path: Path, how: str):
    """truncated: cut in half (`truncate -s`); garbage: random bytes; bit-rot: zeros over the middle
    (the zip index still reads); empty: 0 bytes; foreign: a well-formed .npz holding something else."""
    data = path.read_bytes()
    n = len(data)
    if how == "foreign":
        with open(path, "wb") as f:
            np.savez(f, something_else=np.arange(3))
        return
    spoilt = {"truncated": data[:n // 2], "garbage": np.random.default_rng(0).bytes(n), "empty": b"",
              "bit-rot": data[:n // 3] + bytes(n // 3) + data[2 * (n // 3):]}[how]
    path.write_bytes(spoilt)


def fake_run(folder: Path, overrides: list[str], final_acc: float, test_subset: int | None = None,
             root: str = "/data", trainer: dict | None = None) -> Path:
    """A run folder as a completed job leaves it (summary.json, metrics.csv, .hydra/overrides.yaml),
    without training: three evaluations reaching `final_acc`; `trainer`: more of its trainer config."""
    from cifarbench.run.metrics import write_metrics

    seed = next((int(o.split("=")[1]) for o in overrides if o.startswith("trainer.seed=")), 0)
    rows = [{"epoch": e, "step": 10 * e, "train_seconds": 2.0 * e, "lr": 0.01, "train_loss": 1.0, "train_acc": 0.5,
             "test_loss": 1.0, "test_acc": final_acc * e / 3, "images_per_s": 100.0, "val_loss": None, "val_acc": None}
            for e in (1, 2, 3)]
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    write_metrics(folder / "metrics.csv", rows)
    config = {"data": {"root": root, "test_subset": test_subset}, "trainer": {"seed": seed, **(trainer or {})},
              "model": {"name": overrides[0]}}
    (folder / "summary.json").write_text(json.dumps({
        "status": "completed", "final_test_acc": final_acc, "best_test_acc": final_acc, "epochs": 3.0,
        "train_seconds": 6.0, "model": overrides[0], "optim": "sgd", "config": config}))
    return folder


def run_cli(*overrides: str, module: str = "cifarbench", cwd: str | Path | None = None, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m <module> overrides...` with progress bars off; output captured as text."""
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def bench_module():
    """scripts/bench.py loaded as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(*args: str):
    """`python scripts/bench.py ARGS`, in this process: the script loaded as a module, its main() called."""
    bench_module().main(list(args))


def cli_in_process(monkeypatch, *args: str) -> int:
    """`cifarbench ARGS` in this process (the tests' output capture sees what it prints); its exit status."""
    from cifarbench.commands import cli

    monkeypatch.setattr(sys, "argv", ["cifarbench", *args])
    try:
        cli.main()
    except SystemExit as e:  # sys.exit(None) is 0; sys.exit("message") is 1
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    return 0
