"""Speed options, each checked for correctness on CPU: Muon, EMA, test-time augmentation, Lookahead,
whitening initialisation. (The recipes run in tests/report/test_sweeps.py, compile in
tests/engine/test_engine.py.)"""
import contextlib
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import fake_images
from omegaconf import OmegaConf
from torch import nn

from cifarbench.run.checkpoint import load_checkpoint
from cifarbench.data import load_cifar10
from cifarbench.data.loader import DeviceLoader
from cifarbench.models import MODELS
from cifarbench.optim import build_optimizer
from cifarbench.commands.predict import load_trained
from cifarbench.core.registry import ConfigError
from cifarbench.engine.averaging import EMA, Lookahead
from cifarbench.aug.tta import tta_views
from cifarbench.engine.evaluate import evaluate
from cifarbench.models.init import whiten_first_conv
from cifarbench.engine.loop import train

MUON = {"name": "muon", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01,
        "auxiliary": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}}


def small_net() -> nn.Sequential:
    """First conv, one hidden conv (Muon's), classifier."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.mark.parametrize("channels_last", [False, True])
def test_muon_steps_a_conv_filter_bank_as_torch_muon_steps_its_matrix(channels_last):
    torch.manual_seed(0)
    model = small_net()
    reference = copy.deepcopy(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(OmegaConf.create(MUON), model)

    # By hand: torch.optim.Muon on a 2-D copy of the hidden conv, SGD on the rest (decay on weights only).
    hidden = reference[2].weight
    matrix = nn.Parameter(hidden.detach().reshape(16, -1).clone())
    ref_muon = torch.optim.Muon([matrix], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    ref_sgd = torch.optim.SGD([{"params": [reference[0].weight, reference[6].weight], "weight_decay": 0.01},
                               {"params": [reference[0].bias, reference[2].bias, reference[6].bias]}],
                              lr=0.1, momentum=0.9, nesterov=True)
    images, labels = torch.randn(16, 3, 8, 8), torch.arange(16) % 10
    layout = torch.channels_last if channels_last else torch.contiguous_format
    start = hidden.detach().clone()
    for _ in range(3):
        F.cross_entropy(model(images.contiguous(memory_format=layout)), labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        F.cross_entropy(reference(images), labels).backward()
        matrix.grad = hidden.grad.reshape(16, -1)
        ref_muon.step()
        ref_sgd.step()
        with torch.no_grad():
            hidden.copy_(matrix.view_as(hidden))
        reference.zero_grad()
    assert model[2].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert (hidden - start).abs().max() > 1e-2  # the steps moved it
    for (name, got), want in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(got, want, rtol=0, atol=1e-6), name  # (channels_last convs round differently)


def test_muon_reads_the_unscaled_gradient_under_gradscaler():
    torch.manual_seed(0)
    model = small_net()
    optimizer = build_optimizer(OmegaConf.create(MUON), model)
    images, labels = torch.randn(8, 3, 8, 8), torch.arange(8)
    expected = torch.autograd.grad(F.cross_entropy(model(images), labels), model[2].weight)[0]
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(F.cross_entropy(model(images), labels)).backward()
    scaler.unscale_(optimizer)
    hidden = optimizer.muon.param_groups[0]["params"][0]
    assert hidden is model[2].weight  # Muon steps the real parameter
    assert torch.allclose(hidden.grad, expected, rtol=1e-5, atol=1e-8)


def test_muon_state_round_trips_and_model_without_hidden_layers_is_refused():
    model = small_net()
    optimizer = build_optimizer(OmegaConf.create(MUON), model)
    F.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.arange(4)).backward()
    optimizer.step()
    state = copy.deepcopy(optimizer.state_dict())
    again = build_optimizer(OmegaConf.create(MUON), model)
    again.load_state_dict(state)
    assert torch.equal(again.muon.state_dict()["state"][0]["momentum_buffer"],
                       state["muon"]["state"][0]["momentum_buffer"])
    with pytest.raises(ConfigError, match="no hidden weight matrices"):
        build_optimizer(OmegaConf.create(MUON), nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Linear(4, 2)))


def test_ema_weights_differ_and_are_what_evaluation_uses(tmp_path, fake_cifar_root, compose_with):
    cfg = compose_with(f"data.root={fake_cifar_root}", "trainer.epochs=2", "trainer.batch_size=32",
                       "trainer.ema=0.9", "trainer.progress=false", "trainer.eval_batch_size=100",
                       "data.preprocess=meanstd")
    summary = train(cfg, tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    trained = load_trained(tmp_path / "checkpoints" / "last.pt")  # the averaged weights
    averaged = trained.model.state_dict()
    assert any(not torch.equal(averaged[k], v) for k, v in state.model.items())

    data = load_cifar10(fake_cifar_root)
    loader = DeviceLoader(torch.from_numpy(data.test_images), torch.from_numpy(data.test_labels), 100,
                          trained.preprocess, shuffle=False)
    ema_loss, _, _ = evaluate(trained.model, loader, contextlib.nullcontext())
    trained.model.load_state_dict(state.model)
    raw_loss, _, _ = evaluate(trained.model, loader, contextlib.nullcontext())
    assert ema_loss == pytest.approx(summary["final_test_loss"], rel=1e-5)
    assert abs(raw_loss - ema_loss) > 1e-4


def test_tta_weights_the_mirrored_and_shifted_views_as_airbench94_level_2():
    torch.manual_seed(0)
    images, labels = torch.randn(6, 3, 32, 32), torch.arange(6)
    views = tta_views(images, "flip_translate")
    assert [w for w, _ in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    assert torch.equal(views[1][1], images.flip(3))
    down_right, up_left = views[2][1], views[4][1]
    assert torch.equal(down_right[..., 1:, 1:], images[..., :-1, :-1])  # one pixel down and right
    assert torch.equal(down_right[..., 0, 1:], images[..., 1, :-1])  # the new top row is reflected
    assert torch.equal(up_left[..., :-1, :-1], images[..., 1:, 1:])
    assert torch.equal(views[3][1], down_right.flip(3)) and torch.equal(views[5][1], up_left.flip(3))

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 6))
    loader = DeviceLoader(images, labels, 4, nn.Identity(), shuffle=False)
    for mode, count in (("none", 1), ("flip", 2), ("flip_translate", 6)):
        loss, _, predictions = evaluate(model, loader, contextlib.nullcontext(), mode)
        with torch.no_grad():
            chosen = tta_views(images, mode)
            assert len(chosen) == count and sum(w for w, _ in chosen) == 1
            logits = sum(w * model(view) for w, view in chosen)
        assert loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5), mode
        assert torch.equal(predictions, logits.argmax(1))


def test_lookahead_pulls_the_fast_weights_half_way_back_every_k_steps():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    lookahead = Lookahead(model, every=2, decay=0.5)
    trace = []
    for step, value in enumerate([1.0, 3.0, 4.0, 6.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)  # what the optimizer's step left
        lookahead.after_step(step, progress=step / 4)
        trace.append(model.weight.item())
    # step 2: slow 0 → 1.5; step 4: slow 1.5 → (1.5 + 6) / 2 = 3.75
    assert trace == [1.0, 1.5, 4.0, 3.75]


def test_lookahead_decay_follows_progress_as_airbench94_and_finishes_on_the_slow_weights():
    model = nn.BatchNorm1d(1)  # a weight, a bias and running statistics, all averaged
    lookahead = Lookahead(model, every=1, decay=0.95 ** 5, decay_power=3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(4.0)
    lookahead.after_step(1, progress=0.5)  # d = 0.95**5 · 0.125: slow moves 1 − d of the way
    d = 0.95 ** 5 * 0.125
    assert model.weight.item() == pytest.approx(1 + (2 - 1) * (1 - d))
    assert model.running_mean.item() == pytest.approx(4 * (1 - d))
    slow = model.weight.item()
    with torch.no_grad():
        model.weight.fill_(7.0)
    lookahead.finish()
    assert model.weight.item() == pytest.approx(slow)


def test_ema_decay_warms_up_as_timm_and_averages_buffers():
    model = nn.BatchNorm1d(1)
    ema, plain = EMA(model, decay=0.999), EMA(model, decay=0.999, warmup=False)
    assert [ema.decay_at(n) for n in (1, 10, 10_000)] == [2 / 11, 11 / 20, 0.999]
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_var.fill_(5.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(1 + 2 * (1 - 2 / 11))
    assert ema.module.running_var.item() == pytest.approx(1 + 4 * (1 - 2 / 11))
    assert ema.module.num_batches_tracked.item() == model.num_batches_tracked.item()
    plain.update(model)
    assert plain.module.weight.item() == pytest.approx(1 + 2 * 0.001)
    with pytest.raises(ValueError, match=r"trainer.ema=1.5; it must be a decay in \(0, 1\)"):
        EMA(model, 1.5)


def test_whitening_init_decorrelates_the_first_conv_outputs():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(fake_images(rng.integers(0, 10, 400), rng).reshape(-1, 3, 32, 32)).float() / 255
    model = MODELS.build("speednet")
    whiten_first_conv(model, images, eps=1e-12)
    weight = model.whiten.weight
    assert torch.equal(weight[12:], -weight[:12])
    with torch.no_grad():
        out = F.conv2d(images.double(), weight[:12].double()).transpose(0, 1).flatten(1)
    covariance = torch.cov(out)
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=1e-3)


def test_muon_leaves_exactly_the_input_layer_and_the_classifier_to_the_auxiliary_optimizer():
    from cifarbench.models import list_models
    from cifarbench.optim import roles

    for name in list_models():
        model = MODELS.build(name)
        role_of = roles(model)
        rest = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2 and role_of[id(p)] != "hidden"]
        assert len(rest) == 2 and rest[0].shape[1] == 3 and rest[1].shape[0] == 10, (name, [p.shape for p in rest])
