"""The model zoo: every registered network builds, trains, and matches the studies' architectures (docs/studies.md)."""
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from cifarbench.models import MODELS, build_model, count_params, list_models
from cifarbench.models.layers import Residual, count_macs
from cifarbench.optim import param_groups
from cifarbench.core.registry import ConfigError

# The costly ones get fewer images and fewer steps to halve their loss (each stops once it has).
BIG = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet74", "resnet74_sd", "lenet_wide",
       "fashion_cnn", "vgg", "deep_cnn"}
# The deepest ones (global average pooling, any input size) learn on 16×16 images: a quarter of the work.
DEEPEST = {"resnet50", "resnet101", "resnet152"}


@pytest.mark.parametrize("name", list_models())
def test_every_model_forwards_backwards_and_learns(name):
    torch.manual_seed(0)
    model = MODELS.build(name)
    for block in model.modules():  # a dropped residual branch gets no gradient: tested on its own below
        if isinstance(block, Residual):
            block.drop_prob = 0.0
    n, steps = (4, 12) if name in BIG else (8, 40)
    side = 16 if name in DEEPEST else 32
    images, labels = torch.randn(n, 3, side, side), torch.arange(n) % 10
    model.eval()
    assert model(images[:2]).shape == (2, 10)
    model.train()
    F.cross_entropy(model(images), labels).backward()
    missing = [p for p, t in model.named_parameters() if t.requires_grad and t.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    for module in model.modules():  # dropout makes single losses too noisy to compare
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    while len(losses) < steps and not (losses and losses[-1] < 0.5 * losses[0]):  # at most `steps`, until halved
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], \
        f"{name} did not fit {n} images in {steps} steps: {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("name, params", [
    ("lenet", 1_632_080), ("lenet5", 62_006), ("cnn10", 2_972_298), ("resnet18", 11_173_962),
    ("resnet34", 21_282_122), ("lenet_wide", 26_028_290),
    # 2x2 whitening conv 24·12+24, convs 24·64·9 + 64·64·9 + 64·256·9 + 3·256·256·9, BN scales and
    # shifts 2·(2·64 + 4·256), head 256·10.
    ("speednet", 312 + 13_824 + 36_864 + 147_456 + 3 * 589_824 + 2 * 1_152 + 2_560),
])
def test_exact_parameter_counts(name, params):
    assert count_params(MODELS.build(name)) == params


def test_speedrun94_model_fields_give_airbench94s_network(compose_with):
    """norm_weight=false leaves BN shifts only (as airbench94); momentum, eps and Dirac init land in every layer."""
    cfg = compose_with("experiment=speedrun94").model
    model = build_model(cfg)
    assert count_params(model) == 312 + 13_824 + 36_864 + 147_456 + 3 * 589_824 + 1_152 + 2_560
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6 and all(m.momentum == 0.4 and m.eps == 1e-12 for m in norms)
    conv = model.blocks[1][0]  # the first block's first conv, 24 → 64
    identity = torch.zeros(24, 24, 3, 3)
    identity[range(24), range(24), 1, 1] = 1
    assert torch.equal(conv.weight[:24].detach(), identity) and conv.weight[24:].abs().sum() > 0


def test_cnn10_counts_like_keras_and_has_spec_shapes():
    model = MODELS.build("cnn10").eval()
    running = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert running == 2_688
    assert count_params(model) + running == 2_974_986
    sides, x = [], torch.zeros(1, 3, 32, 32)
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, (torch.nn.Sequential, torch.nn.MaxPool2d)):
            sides.append(x.shape[-1])
    assert sides == [32, 30, 26, 13, 13, 11, 7, 7, 5, 1]


@pytest.mark.parametrize("depth, millions", [(20, 0.27), (56, 0.85), (110, 1.7)])
def test_cifar_resnets_match_he_et_al(depth, millions):
    """He et al. 2016, Table 6, rounds to two significant digits: allow 3%."""
    assert count_params(MODELS.build("resnet_cifar", depth=depth)) == pytest.approx(millions * 1e6, rel=0.03)


def test_imagenet_stem_decays_conv_weights_only():
    model = MODELS.build("resnet34", stem="imagenet", l2=1e-4)
    assert count_params(model) > 21e6
    groups = param_groups(model, weight_decay=5e-4)
    by_decay = {}
    for group in groups:
        by_decay.setdefault(group["weight_decay"], set()).update(id(p) for p in group["params"])
    convs = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Conv2d)}
    assert by_decay[2e-4] == convs  # Keras L2 1e-4 on kernels = decay 2e-4, never doubled
    assert by_decay[5e-4] == {id(model.head[-1].weight)}
    assert sum(len(ids) for ids in by_decay.values()) == len(list(model.parameters()))


def test_lenet_fields_combine_and_variants_differ():
    cfg = OmegaConf.create({"name": "lenet", "width": 2, "bn": True, "kernel": "3x3"})
    model = build_model(cfg)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 4
    assert model.features[0].out_channels == 40 and model.features[0].kernel_size == (3, 3)
    deep = MODELS.build("lenet_deep")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in deep.modules()) == 6
    assert sum(isinstance(m, torch.nn.Conv2d) for m in MODELS.build("lenet_3x1").modules()) == 8


def test_macs_are_counted_from_the_layers():
    # conv1 20·3·25·32² + conv2 50·20·25·16² + FC 3200·500 + 500·10
    assert count_macs(MODELS.build("lenet")) == 1_536_000 + 6_400_000 + 1_600_000 + 5_000


def test_stochastic_depth_skip_rate_and_deterministic_eval():
    torch.manual_seed(0)
    model = MODELS.build("resnet74_sd")
    blocks = [m for m in model.modules() if isinstance(m, Residual)]
    probs = [b.drop_prob for b in blocks]
    assert probs[0] == 0 and probs[-1] == pytest.approx(0.5)
    assert all(p == 0 for b, p in zip(blocks, probs) if b.transition)
    assert all(b <= a for a, b in zip(probs[::-1], probs[::-1][1:]) if a and b)  # linear, rising
    last, calls, inputs = blocks[-1], [], []
    last.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
    last.branch.register_forward_hook(lambda *_: calls.append(1))
    model.train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        for _ in range(199):  # the last block alone, on what it was given
            last(inputs[0])
    assert 0.4 < 1 - len(calls) / 200 < 0.6  # skipped ~half the time (p_L = 0.5)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_unknown_model_and_field_errors():
    with pytest.raises(ConfigError, match="unknown model 'resnet9' \\(did you mean resnet74\\?\\); available: .*resnet18"):
        MODELS.build("resnet9")
    with pytest.raises(ConfigError, match="model 'resnet18' has no field\\(s\\) width; its fields are: .*stem"):
        build_model(OmegaConf.create({"name": "resnet18", "width": 2}))
    with pytest.raises(ValueError, match="model.depth=21; it must be 6n\\+2"):
        MODELS.build("resnet_cifar", depth=21)
    with pytest.raises(ValueError, match="model.kernel='7x7'"):
        MODELS.build("lenet", kernel="7x7")


def test_batch_norm_with_a_momentum_keeps_no_step_counter_and_loads_checkpoints_with_or_without_it():
    """Issue 25: the counter is read only for momentum=None, and costs a kernel per BN and step. By hand,
    one training batch 0..7 through an identity conv: running mean 0.6·0 + 0.4·3.5 = 1.4, running variance
    0.6·1 + 0.4·6 = 3 (the batch's unbiased variance of 0..7 is 6)."""
    import torch
    from torch import nn

    from cifarbench.models.init import configure_norms

    def net(momentum):
        model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
        nn.init.ones_(model[0].weight), nn.init.zeros_(model[0].bias)
        configure_norms(model, momentum)
        return model

    lean, counting = net(0.4), net(None)
    lean(torch.arange(8.0).view(2, 1, 2, 2))
    assert "1.num_batches_tracked" not in lean.state_dict() and lean[1].track_running_stats
    assert lean[1].running_mean.tolist() == pytest.approx([1.4, 1.4]) and lean[1].running_var.tolist() == pytest.approx([3.0, 3.0])
    counting[1].num_batches_tracked.fill_(7)
    lean.load_state_dict(counting.state_dict())  # a checkpoint from before: its counter is dropped
    counting.load_state_dict(net(0.4).state_dict())  # one without a counter: it reads 0
    assert counting[1].num_batches_tracked.item() == 0 and lean[1].running_mean.tolist() == [0.0, 0.0]
