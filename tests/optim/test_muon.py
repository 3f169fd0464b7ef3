"""Muon as airbench94_muon uses it (Keller Jordan, cifar10-airbench's airbench94_muon.py): the batched
Newton–Schulz, the orthogonalised update's singular values, per-step weight normalisation, and the
speedrun94_muon recipe's parameter groups and training."""
import copy
import csv
import math

import pytest
import torch
from torch.optim._muon import _zeropower_via_newtonschulz

from cifarbench.engine.loop import train
from cifarbench.engine.step import Plan, TrainStep
from cifarbench.models import build_model
from cifarbench.optim import build_optimizer
from cifarbench.optim.muon import NS_COEFFICIENTS, Muon, MuonWithAuxiliary, matrix_view, newton_schulz
from cifarbench.sched import build_schedule


def test_batched_newton_schulz_equals_torch_muons_per_matrix_one():
    """Checked against torch.optim.Muon's own per-matrix iteration (on the CPU bit for bit), wide and tall."""
    torch.manual_seed(0)
    for shape in [(4, 16, 40), (3, 40, 16)]:
        stack = torch.randn(shape)
        batched = newton_schulz(stack, NS_COEFFICIENTS, 5, 1e-7)
        for matrix, got in zip(stack, batched):
            assert torch.equal(got, _zeropower_via_newtonschulz(matrix, NS_COEFFICIENTS, 5, 1e-7))


def test_orthogonalised_singular_values_lie_in_the_published_range():
    """Jordan's coefficients give U S' Vᵀ with S' in about (0.5, 1.5) rather than exactly 1; here a matrix
    whose singular values span 0.02..1 (condition number 50) comes out within (0.6, 1.25), its ratio 50
    down to under 2, with 5 steps; airbench94_muon's 3 steps do as well on Gaussian 64 × 576 filters."""
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(32, 32))
    v, _ = torch.linalg.qr(torch.randn(96, 32))
    matrix = u @ torch.diag(torch.linspace(0.02, 1, 32)) @ v.T
    singular = torch.linalg.svdvals(newton_schulz(matrix, steps=5).float())
    assert 0.6 < singular.min() and singular.max() < 1.25 and singular.max() / singular.min() < 2
    singular = torch.linalg.svdvals(newton_schulz(torch.randn(64, 576), steps=3).float())
    assert 0.6 < singular.min() and singular.max() < 1.25


def test_weight_normalisation_rescales_each_filter_bank_to_norm_sqrt_out():
    """With lr 0 the step leaves only the normalisation: ‖W‖_F = √out (8 and 16 filters)."""
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(3 * torch.randn(8, 4, 3, 3)), torch.nn.Parameter(0.1 * torch.randn(16, 8))]
    optimizer = Muon(weights, lr=0.0, normalize_weights=True)
    for w in weights:
        w.grad = torch.randn_like(w)
    optimizer.step()
    assert [round(w.norm().item(), 5) for w in weights] == [round(math.sqrt(8), 5), 4.0]


def test_a_step_equals_a_per_parameter_reference_with_weight_normalisation():
    """Muon's stacked, foreach step against the update written out parameter by parameter (torch.optim.Muon's
    order: momentum lerp, Nesterov, its own Newton–Schulz on the (out, rest) matrix, decoupled decay, then
    W ← W·√out/‖W‖_F, then W − lr·√max(1, out/in)·O): two filter banks of one shape stacked together, a
    tall (16, 8) matrix (lr ×√2), 3 steps, the third with one bank's gradient None (that bank stays put).
    Equal up to the float32 rounding of √out/‖W‖_F computed another way."""
    torch.manual_seed(0)
    shapes = [(8, 4, 3, 3), (16, 8), (8, 4, 3, 3)]
    weights = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    reference = [w.detach().clone() for w in weights]
    buffers = [torch.zeros_like(w) for w in weights]
    lr, momentum, decay = 0.1, 0.9, 0.01
    optimizer = Muon(weights, lr=lr, momentum=momentum, weight_decay=decay, normalize_weights=True)
    for step in range(3):
        grads = [torch.randn(shape) for shape in shapes]
        if step == 2:
            grads[2], before = None, weights[2].detach().clone()
        for w, g in zip(weights, grads):
            w.grad = g
        optimizer.step()
        for w, buffer, g in zip(reference, buffers, grads):
            if g is None:
                continue
            buffer.lerp_(g, 1 - momentum)
            update = g.lerp(buffer, momentum)
            out, rest = w.shape[0], update[0].numel()
            orthogonal = _zeropower_via_newtonschulz(update.reshape(out, rest), NS_COEFFICIENTS, 5, 1e-7)
            w.mul_(1 - lr * decay)
            w.mul_(math.sqrt(out) / w.norm())
            w.add_(orthogonal.reshape(w.shape).float(), alpha=-lr * math.sqrt(max(1, out / rest)))
        for w, expected in zip(weights, reference):
            torch.testing.assert_close(w.detach(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(weights[2].detach(), before)
    copy.deepcopy(optimizer).step()  # a copy (torch's __getstate__ leaves the shape plans behind) steps too


def test_a_checkpoint_of_the_earlier_muon_with_flattened_buffers_resumes():
    """Before this Muon, torch.optim.Muon kept each conv's momentum as the (out, in·kh·kw) matrix."""
    torch.manual_seed(0)
    conv = torch.nn.Parameter(torch.randn(8, 4, 3, 3).contiguous(memory_format=torch.channels_last))
    optimizer = MuonWithAuxiliary([{"params": [conv]}], torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]))
    conv.grad = torch.randn_like(conv)
    optimizer.step()
    state = optimizer.state_dict()
    buffer = state["muon"]["state"][0]["momentum_buffer"]
    state["muon"]["state"][0]["momentum_buffer"] = matrix_view(buffer).clone()  # as the earlier Muon saved it
    optimizer.load_state_dict(state)
    assert torch.equal(optimizer.muon.state[conv]["momentum_buffer"], buffer)


def test_speedrun94_muon_groups_are_airbench94_muons(compose_with):
    """airbench94_muon's optimizers, counted parameter by parameter for speednet 64/256/256: Muon (lr 0.24,
    momentum 0.6, 3 Newton–Schulz steps, weights renormalised) on the six block convs, 24·64·9 + 64·64·9 +
    64·256·9 + 3·256·256·9 = 1,967,616 weights (the frozen whitening conv's 288 in no group); Nesterov SGD
    (momentum 0.85) at 0.053 × 2000 on the whitening bias (24, its lr its own linear decay over 3 epochs)
    and the BN biases (2·64 + 4·256 = 1,152), 0.67 × 2000 on the classifier (256·10), each decayed
    0.004 per step (airbench: 2e-6 × batch 2000 = wd × lr)."""
    cfg = compose_with("experiment=speedrun94_muon")
    model = build_model(cfg.model)
    model.whiten.weight.requires_grad_(False)  # trainer.whiten_freeze
    optimizer = build_optimizer(cfg.optim, model, {id(model.whiten.bias): 3}, own_decay=True)
    (muon,) = optimizer.muon.param_groups
    assert sum(p.numel() for p in muon["params"]) == 24 * 64 * 9 + 64 * 64 * 9 + 64 * 256 * 9 + 3 * 256 * 256 * 9
    assert (muon["lr"], muon["momentum"], muon["nesterov"], muon["ns_steps"], muon["normalize_weights"],
            muon["weight_decay"]) == (0.24, 0.6, True, 3, True, 0.0)
    sgd = optimizer.auxiliary.param_groups
    assert all(g["momentum"] == 0.85 and g["nesterov"] for g in sgd)
    by_size = {sum(p.numel() for p in g["params"]): g for g in sgd}
    assert sorted(by_size) == [24, 1_152, 2_560]
    for size, lr in [(24, 0.053), (1_152, 0.053), (2_560, 0.67)]:
        group = by_size[size]
        assert group["lr"] * group["lr_scale"] == pytest.approx(lr * 2000)
        assert group["lr"] * group["lr_scale"] * group["weight_decay"] == pytest.approx(0.004)
    assert (by_size[24]["train_epochs"], by_size[24]["own_decay"]) == (3, True)
    assert not by_size[1_152]["own_decay"] and by_size[1_152]["train_epochs"] is None
    assert model.logit_scale == 1 / 256 and model.head[-1].weight.std().item() == pytest.approx(1.0)

    # Over 4 epochs of 4 steps: the whitening bias's lr falls from 106 to 0 over its 3 epochs (12 steps),
    # the others' as 1 − step/16 (airbench94_muon's two linear decays).
    step = TrainStep(model, model, optimizer, None, None, None, build_schedule(cfg.sched), Plan(16, 4))
    for s, bias_lr, head_lr in [(0, 106, 1340), (6, 53, 1340 * 10 / 16), (11, 106 / 12, 1340 * 5 / 16),
                                (12, 0, 1340 / 4), (15, 0, 1340 / 16)]:
        step.set_lr(s, 0.0)
        assert (by_size[24]["lr"], by_size[2_560]["lr"], muon["lr"]) == pytest.approx(
            (bias_lr, head_lr, 0.24 * (16 - s) / 16)), s


def test_speedrun94_muon_trains_on_tiny_data(tmp_path, fake_cifar_root, compose_with):
    """3 epochs of 2 steps at small widths: the training loss falls."""
    cfg = compose_with("experiment=speedrun94_muon", f"data.root={fake_cifar_root}", "model.widths=[8,16,16]",
                       "data.train_subset=100", "data.test_subset=20", "trainer.batch_size=50", "trainer.epochs=3",
                       "trainer.eval_every=1", "trainer.eval_batch_size=20", "trainer.tta=none",
                       "trainer.progress=false", "trainer.plots=none")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed"
    with open(tmp_path / "metrics.csv") as f:
        losses = [float(row["train_loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 3 and losses[-1] < losses[0]
