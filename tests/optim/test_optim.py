"""Optimizers: AdaBound/AMSBound against hand-computed steps; the registry's optimizers build and step."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from cifarbench.optim import OPTIMIZERS, AdaBound, build_optimizer


def reference_adabound(param, grads, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, ams=False):
    """The rule written out element by element in plain Python (the paper's formula)."""
    values = list(param)
    m = [0.0] * len(values)
    v = [0.0] * len(values)
    v_max = [0.0] * len(values)
    for t, grad in enumerate(grads, start=1):
        lower = final_lr * (1 - 1 / (gamma * t + 1))
        upper = final_lr * (1 + 1 / (gamma * t))
        for i, g in enumerate(grad):
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            v_max[i] = max(v_max[i], v[i])
            second = v_max[i] if ams else v[i]
            step = lr * math.sqrt(1 - betas[1] ** t) / (1 - betas[0] ** t) / (math.sqrt(second) + eps)
            values[i] -= min(max(step, lower), upper) * m[i]
    return values


GRADS = [[0.5, -2.0, 1e-4], [0.1, -1.0, 3.0], [-0.3, 0.2, 0.0]]


@pytest.mark.parametrize("amsbound", [False, True])
def test_adabound_three_steps_by_hand(amsbound):
    start = [1.0, -0.5, 2.0]
    param = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = AdaBound([param], lr=0.01, final_lr=0.1, gamma=0.1, amsbound=amsbound)
    for grad in GRADS:
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
    expected = reference_adabound(start, GRADS, lr=0.01, final_lr=0.1, gamma=0.1, ams=amsbound)
    assert param.tolist() == pytest.approx(expected, rel=1e-12)


def test_amsbound_differs_only_once_the_second_moment_falls():
    """AMSBound keeps the running max of v: identical while v grows, different after a large gradient fades."""
    grads = [[3.0], [3.0], [0.01], [0.01]]
    plain = reference_adabound([0.0], grads)
    ams = reference_adabound([0.0], grads, ams=True)
    results = {}
    for flag in (False, True):
        param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimizer = AdaBound([param], amsbound=flag)
        trace = []
        for grad in grads:
            param.grad = torch.tensor(grad, dtype=torch.float64)
            optimizer.step()
            trace.append(param.item())
        results[flag] = trace
    assert results[False][:2] == pytest.approx(results[True][:2], rel=1e-12)
    assert results[False][3] != pytest.approx(results[True][3], rel=1e-6)
    assert results[False][3] == pytest.approx(plain[0], rel=1e-9) and results[True][3] == pytest.approx(ams[0], rel=1e-9)


@pytest.mark.parametrize("grad, bound", [(1e3, "lower"), (1e-6, "upper")])
def test_adabound_bounds_follow_the_schedule(grad, bound):
    """Halving lr halves the final-lr target too (final_lr · lr / base_lr), as the reference code does.
    A large gradient makes Adam's step tiny (the lower bound decides), a tiny one makes it huge (the upper)."""
    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = AdaBound([param], lr=1e-3, final_lr=0.1, gamma=0.5)  # bounds already tight at t=1
    optimizer.param_groups[0]["lr"] = 5e-4
    param.grad = torch.tensor([grad], dtype=torch.float64)
    optimizer.step()
    final = 0.1 * 5e-4 / 1e-3
    step_size = final * (1 - 1 / 1.5) if bound == "lower" else final * (1 + 1 / 0.5)  # γt = 0.5
    assert param.item() == pytest.approx(-step_size * 0.1 * grad, rel=1e-9)  # m after one step = 0.1 g


def test_adabound_works_under_gradscaler_and_restores_from_state_dict():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = AdaBound(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    restored = AdaBound(model.parameters())
    restored.load_state_dict(optimizer.state_dict())
    assert restored.param_groups[0]["base_lr"] == 1e-3 and restored.state[model.weight]["step"] == 30


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_builds_from_its_config_and_steps(name):
    from pathlib import Path

    conf = Path(__file__).resolve().parents[2] / "conf" / "optim" / f"{name}.yaml"
    if not conf.is_file():
        pytest.skip(f"{name} has no config of its own")
    cfg = OmegaConf.load(conf)
    if "defaults" in cfg:  # amsbound inherits adabound's fields
        base = OmegaConf.load(conf.parent / f"{cfg.defaults[0]}.yaml")
        cfg = OmegaConf.merge(base, {k: v for k, v in cfg.items() if k != "defaults"})
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 2))  # a hidden layer, for Muon
    optimizer = build_optimizer(cfg, model)
    before = [p.detach().clone() for p in model.parameters()]
    torch.nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    decays = {g["weight_decay"] for g in optimizer.param_groups if any(p.ndim < 2 for p in g["params"])}
    assert decays == {0.0}, "biases are never decayed"
