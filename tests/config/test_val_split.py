"""Model selection on a held-out validation split, never on the test set."""
import json

import numpy as np
import pytest
import torch

from cifarbench.data import validation_split
from cifarbench.core.registry import ConfigError
from cifarbench.run.metrics import read_metrics

QUICK = ("model=lenet_bn", "trainer.batch_size=32", "trainer.eval_batch_size=64", "trainer.progress=false",
         "trainer.deterministic=true")


def test_the_split_is_stratified_by_largest_remainder_and_deterministic():
    labels = np.random.default_rng(0).integers(0, 10, 200)
    train, val = validation_split(labels, 37, seed=0)
    # 37·n_c/200 per class, floors 32 in all; the 5 largest remainders (classes 6, 3, 1, 4, 5) get one more
    assert np.bincount(labels[val], minlength=10).tolist() == [4, 3, 2, 4, 4, 4, 4, 4, 4, 4]
    assert len(val) == 37 and len(train) == 163 and not set(train) & set(val)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(200))
    assert np.array_equal(validation_split(labels, 37, seed=0)[1], val)  # same seed, same images
    assert not np.array_equal(validation_split(labels, 37, seed=1)[1], val)
    train, val = validation_split(labels, 0)
    assert np.array_equal(train, np.arange(200)) and len(val) == 0


@pytest.mark.parametrize("size", [200, -1, 1.5, True, "10"])
def test_a_split_that_leaves_nothing_to_train_is_one_line(size):
    with pytest.raises(ConfigError) as error:
        validation_split(np.zeros(200, np.int64), size)
    assert str(error.value) == (f"data.val_split={size}; it must be an integer in 0..199 (the held-out part of "
                                f"the 200 training images, data.train_subset included)")


@pytest.mark.parametrize("seed", [-1, 0.5, "a"])
def test_a_bad_seed_is_one_line(seed):
    with pytest.raises(ConfigError, match=f"^data.val_seed={seed}; it must be a non-negative integer$"):
        validation_split(np.zeros(10, np.int64), 2, seed)


def test_the_split_comes_out_of_train_subset(tmp_path, fake_cifar_root, compose_with):
    from cifarbench.engine.loop import train

    cfg = compose_with(*QUICK, "data.train_subset=100", "data.val_split=100", f"data.root={fake_cifar_root}")
    with pytest.raises(ConfigError, match=r"^data.val_split=100; it must be an integer in 0..99 "):
        train(cfg, tmp_path)


def test_validation_chooses_best_pt_and_is_never_trained_on(tmp_path, fake_cifar_root, compose_with):
    from cifarbench.engine.loop import train

    cfg = compose_with(*QUICK, "trainer.epochs=4", "data.val_split=50", "data.val_seed=3", "optim=adam",
                       "optim.lr=0.003", f"data.root={fake_cifar_root}")
    summary = train(cfg, tmp_path)
    rows = read_metrics(tmp_path / "metrics.csv")  # (grad_norm is an empty cell: no clipping)
    assert len(rows) == 4
    best = max(rows, key=lambda r: r["val_acc"])  # the first of equals
    assert summary["selection"] == {"best_checkpoint": "val_acc", "objective": "final_val_acc"}
    assert (summary["best_epoch"], summary["best_val_acc"], summary["best_test_acc"]) == (
        best["epoch"], best["val_acc"], best["test_acc"])
    assert (summary["final_val_acc"], summary["final_val_loss"]) == (rows[-1]["val_acc"], rows[-1]["val_loss"])
    assert summary["final_test_acc"] == rows[-1]["test_acc"]
    assert summary["steps"] == 4 * 5  # 150 training images at batch 32: 4 full batches + the remainder
    assert all(r["val_acc"] in {k / 50 for k in range(51)} for r in rows)  # fractions of the 50 held-out images
    checkpoint = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert checkpoint["state"]["rows"][-1]["epoch"] == best["epoch"]
    # the normalisation is fitted on the 150 training images only
    from cifarbench.data import load_cifar10
    data = load_cifar10(fake_cifar_root, download=False)
    train_part, val_part = validation_split(data.train_labels, 50, seed=3)
    mean = data.train_images[train_part].astype(np.float64).mean(axis=(0, 2, 3))
    buffers = checkpoint["preprocess"]["buffers"]  # x·scale + shift = (x/255 − mean)/std
    saved_mean = (-buffers["shift"] / (255 * buffers["scale"])).flatten().double().numpy()
    assert saved_mean == pytest.approx(mean / 255, rel=1e-5)
    assert json.loads((tmp_path / "summary.json").read_text())["best_val_acc"] == summary["best_val_acc"]
    assert (tmp_path / "curves.png").is_file()  # drawn with the validation curves
