"""The training step (engine/step.py): gradient clipping by norm and by value, its unscaling under a
GradScaler, and the norm it logs per evaluation window (metrics.csv's grad_norm)."""
import contextlib
import math

import pytest
import torch
from torch import nn

from cifarbench.aug.mix import NoMix
from cifarbench.engine import loop as trainer
from cifarbench.engine.step import GradientClipping, Plan, TrainStep
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
