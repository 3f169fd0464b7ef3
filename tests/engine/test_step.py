"""The training step (engine/step.py): gradient clipping by norm and by value, its unscaling under a
GradScaler, and the norm it logs per evaluation window (metrics.csv's grad_norm); gradient accumulation,
against the large batch's update."""
import contextlib
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cifarbench.aug.mix import NoMix
from cifarbench.engine import loop as trainer
from cifarbench.engine.step import GradientClipping, Plan, TrainStep, micro_batches
from cifarbench.models import build_model
from cifarbench.run.metrics import read_metrics

# One image x = (3, 4) of class 0 through a 2-class linear layer at zero weights: softmax (½, ½), so
# dL/dlogits = p − onehot = (−½, ½) and dL/dW = outer((−½, ½), x) = [[−1.5, −2], [1.5, 2]],
# whose L2 norm is √(2·(1.5² + 2²)) = √12.5.
X, LABEL = torch.tensor([[3.0, 4.0]]), torch.tensor([0])
GRAD = torch.tensor([[-1.5, -2.0], [1.5, 2.0]])
NORM = math.sqrt(12.5)


def one_step(clipping, scaler=None) -> TrainStep:
    """One SGD step (lr 1, so the new weights are −the clipped gradient) from zero weights."""
    model = nn.Linear(2, 2, bias=False)
    nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(model, model, optimizer, scaler, NoMix(), contextlib.nullcontext(), lambda *_: 1.0,
                     Plan(1, 1), clipping=clipping)
    step(X, LABEL, 0, 0.0)
    return step


@pytest.mark.parametrize("scaled", [False, True])
def test_clipping_by_norm_rescales_the_gradient_to_the_bound(scaled):
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if scaled else None  # unscaled before clipping
    step = one_step(GradientClipping(1.0, "norm"), scaler)
    assert torch.allclose(step.model.weight, -GRAD / NORM, atol=1e-6)
    assert step.window()["grad_norm"] == pytest.approx(NORM, rel=1e-6), "the norm before clipping"


def test_clipping_by_value_clamps_each_element_and_a_loose_bound_changes_nothing():
    assert torch.allclose(one_step(GradientClipping(1.0, "value")).model.weight,
                          torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))
    assert torch.allclose(one_step(GradientClipping(10.0, "norm")).model.weight, -GRAD)
    unclipped = one_step(None)
    assert torch.allclose(unclipped.model.weight, -GRAD) and unclipped.window()["grad_norm"] is None


def test_the_clipped_runs_metrics_log_the_gradient_norm(tmp_path, fake_cifar_root, compose_with):
    trainer.train(compose_with("model=lenet5", "trainer.clip_grad=0.5", "trainer.batch_size=100", "trainer.epochs=2",
                               "trainer.progress=false", "trainer.plots=none", f"data.root={fake_cifar_root}"), tmp_path)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert len(rows) == 2 and all(row["grad_norm"] > 0 and math.isfinite(row["grad_norm"]) for row in rows)


# Gradient accumulation -----------------------------------------------------------------------------------------------
def lenet5_step(accumulate: int, images, labels, scaler=None) -> nn.Module:
    """One SGD step (momentum, weight decay) of LeNet-5 (no BatchNorm) from the same initial weights."""
    torch.manual_seed(0)
    model = build_model(OmegaConf.create({"name": "lenet5"}), 10, (3, 32, 32))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(model, model, optimizer, scaler, NoMix(), contextlib.nullcontext(), lambda *_: 1.0, Plan(2, 2),
                     clipping=GradientClipping(1.0), accumulate=accumulate)
    step(images, labels, 0, 0.0)
    step(images.flip(0), labels.flip(0), 1, 0.0)  # a second step: momentum carries the first
    return step


@pytest.mark.parametrize("size, accumulate", [(32, 4), (30, 4), (3, 4)])  # 8 each; 8, 8, 7, 7; 1, 1, 1
def test_accumulation_gives_the_update_of_the_large_batch(size, accumulate):
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g)
    large, accumulated = lenet5_step(1, images, labels), lenet5_step(accumulate, images, labels)
    for (name, a), b in zip(large.model.state_dict().items(), accumulated.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), name
    for a, b in zip(large.window().values(), accumulated.window().values()):  # images, loss, accuracy, norm
        assert a == pytest.approx(b, rel=1e-5)
    assert micro_batches(size, accumulate) == min(size, accumulate)


def test_accumulated_runs_count_optimizer_steps(tmp_path, fake_cifar_root, compose_with):
    """200 images in batches of 25 accumulated 4 at a time: 2 optimizer steps an epoch, as batches of 100."""
    common = ("model=lenet5", "aug=none", "trainer.epochs=2", "trainer.progress=false", "trainer.plots=none",
              f"data.root={fake_cifar_root}")
    accumulated = trainer.train(compose_with(*common, "trainer.batch_size=25", "trainer.accumulate=4"), tmp_path / "a")
    large = trainer.train(compose_with(*common, "trainer.batch_size=100"), tmp_path / "b")
    assert accumulated["steps"] == large["steps"] == 4
    rows = read_metrics(tmp_path / "a" / "metrics.csv"), read_metrics(tmp_path / "b" / "metrics.csv")
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]] == [2, 4]
    for a, b in zip(*rows):
        for key in ("lr", "train_loss", "train_acc", "test_loss", "test_acc"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


# The lean step (issue 25) --------------------------------------------------------------------------------------------
def test_training_metrics_read_at_evaluation_equal_per_step_reads():
    """The window's loss and accuracy, accumulated on the device and read once, against reading each
    step's loss and correct count on the host (lr 0: the model stays the same, so each batch's loss can be
    computed again afterwards); batches of unequal sizes, 60 steps (past a divergence window of 50), and
    a reset (an evaluation) after step 25."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    step = TrainStep(model, model, torch.optim.SGD(model.parameters(), lr=0.0), torch.amp.GradScaler("cpu", enabled=False),
                     NoMix(), contextlib.nullcontext(), lambda *_: 1.0, Plan(60, 60))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g))
               for n in [5, 7, 3, 8] * 15]
    windows = []
    for part in (range(25), range(25, 60)):
        for i in part:
            step(*batches[i], i, 0.0)
        windows.append(step.window())
        step.reset()
    for window, part in zip(windows, (batches[:25], batches[25:])):
        with torch.no_grad():
            seen = sum(len(y) for _, y in part)
            loss = sum(F.cross_entropy(model(x), y).item() * len(y) for x, y in part) / seen
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in part)
        assert window["seen"] == seen and window["train_acc"] == correct / seen
        assert window["train_loss"] == pytest.approx(loss, rel=1e-6) and window["grad_norm"] is None


def test_a_group_past_its_epochs_is_frozen_by_requires_grad_and_left_untouched():
    """The whitening bias's rule (train_epochs 1 of 2 steps an epoch): from the first step of epoch 2 on
    it has no gradient, no update and its momentum is not advanced; the other group trains on."""
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "train_epochs": 1}], lr=0.1,
                                momentum=0.9)
    step = TrainStep(model, model, optimizer, torch.amp.GradScaler("cpu", enabled=False), NoMix(),
                     contextlib.nullcontext(), lambda *_: 1.0, Plan(4, 2))
    for i in range(2):
        step(X, LABEL, i, 0.0)
    bias, momentum, weight = (model.bias.clone(), optimizer.state[model.bias]["momentum_buffer"].clone(),
                              model.weight.clone())
    for i in range(2, 4):
        step(X, LABEL, i, 0.0)
    assert not model.bias.requires_grad and model.bias.grad is None and model.weight.requires_grad
    assert torch.equal(model.bias, bias) and torch.equal(optimizer.state[model.bias]["momentum_buffer"], momentum)
    assert not torch.equal(model.weight, weight)
