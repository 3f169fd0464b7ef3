"""Shared fixtures (the helpers they use, and the tests' other shared code, are in helpers.py).

- `fake_cifar_root`: a tmp folder holding a synthetic CIFAR-10 (helpers.make_fake_cifar); `shared_fake_root`:
  one for the session; `real_cifar_root`: $CIFAR10_ROOT, or the test is skipped with the reason.
- `compose_with(*overrides)`: the composed Hydra config, as the CLI would build it (for in-process `train`).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import make_fake_cifar

# Under pytest-xdist (`-n auto` in pyproject.toml) each worker gets its share of the cores, at most 2,
# so workers do not oversubscribe the CPU; the subprocesses a test starts (run_cli) use the same count,
# so in-process and subprocess runs of one test compute alike.
THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ["OMP_NUM_THREADS"] = str(THREADS)


def pytest_collection_modifyitems(items):
    """Tests marked `long` run first (the sort is stable), so the pytest-xdist workers end together
    instead of one of them starting a minute-long test when the others are done."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True, scope="session")
def torch_threads():
    import torch

    torch.set_num_threads(THREADS)


@pytest.fixture
def fake_cifar_root(tmp_path) -> Path:
    return make_fake_cifar(tmp_path / "data")


@pytest.fixture(scope="session")
def shared_fake_root(tmp_path_factory) -> Path:
    """One synthetic dataset for many tests, so caches fitted on it (the ZCA statistics) are fitted once."""
    return make_fake_cifar(tmp_path_factory.mktemp("shared") / "data")


@pytest.fixture
def real_cifar_root() -> Path:
    root = os.environ.get("CIFAR10_ROOT")
    if not root or not (Path(root) / "cifar-10-batches-py").is_dir():
        pytest.skip("real CIFAR-10 needed: set CIFAR10_ROOT to a folder holding cifar-10-batches-py/ "
                    "(.ci/run makes one from ../shared/cifar10)")
    return Path(root)


@pytest.fixture(scope="session")
def compose_with():
    from hydra import compose, initialize_config_module

    def compose_config(*overrides):
        with initialize_config_module("cifarbench.conf", version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return compose_config
