"""Augmentation (the aug package): each augmentation's behaviour, the same pixels as before the package
for the same seed, the alternating flip, the mixes with their criteria, mixup's λ drawn from the
augmentation generator alone, the TTA views, and the aug config checked before any data loads."""
import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from cifarbench.aug import AUGMENTS, MIXES, Augmentation, build_augmentation, cutout, flip_shift, keras
from cifarbench.aug.flip import AlternatingFlip
from cifarbench.aug.geometric import cutout_squares, erasing_boxes, keras_affine, random_erasing
from cifarbench.aug.mix import (BetweenClass, CutMix, Mixup, MixupCutMix, NoMix, bc_partners, beta_draws,
                                between_class, cutmix, cutmix_boxes, mixup)
from cifarbench.aug.tta import TTA_MODES, tta_views
from cifarbench.core.distributed import rank_seed
from cifarbench.core.registry import ConfigError
from cifarbench.data import DeviceLoader
from cifarbench.validate import validate_config

CONF = Path(__file__).resolve().parents[2] / "conf"


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def aug_config(name: str, **fields):
    return OmegaConf.create({"name": name, "mix": None, "mix_alpha": 1.0, **fields})


# Each augmentation ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", AUGMENTS.names())
def test_every_entry_turns_a_uint8_batch_into_one_of_the_same_shape(name):
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=generator())
    fields = {"flip": "alternating"} if "flip" in AUGMENTS.annotations(name) else {}
    augmentation = build_augmentation(aug_config(name, **fields), num_classes=10, num_images=8, seed=0)
    out = augmentation(images, torch.arange(8), generator(1), 1)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, images) == (name == "none")


def test_keras_with_all_ranges_zero_is_the_identity():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(keras_affine(images, generator()), images)


def test_keras_transforms_each_image_differently_and_plausibly():
    images = torch.zeros(8, 1, 32, 32, dtype=torch.uint8)
    images[:, :, 12:20, 12:20] = 200  # a centred square
    out = keras_affine(images.repeat(1, 1, 1, 1), generator(), rotation=20, width_shift=0.2, height_shift=0.2,
                       zoom=0.1)
    assert len({o.numpy().tobytes() for o in out}) == 8, "every image draws its own transform"
    mass = out.float().sum((1, 2, 3)) / images.float().sum((1, 2, 3))
    assert ((mass > 0.7) & (mass < 1.4)).all(), "the square moves and turns but keeps about its area"
    shifted = keras_affine(images, generator(), width_shift=0.25, horizontal_flip=False)
    rows = (shifted[:, 0].amax(2) > 100).float().argmax(1)  # first bright row anywhere...
    columns = (shifted[:, 0, 16] > 100).float().argmax(1)  # ...and first bright column of the middle row
    assert (rows == 12).all(), "a width shift moves nothing vertically"
    assert ((columns - 12).abs() <= 8).all() and (columns - 12).abs().max() >= 3


def test_keras_flip_mirrors_exactly():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = keras_affine(images, generator(), horizontal_flip=True)
    mirrored = (out == images.flip(3)).flatten(1).all(1)
    unchanged = (out == images).flatten(1).all(1)
    assert (mirrored ^ unchanged).all() and 15 < mirrored.sum() < 49


def test_keras_channel_shift_moves_all_channels_together():
    images = torch.full((4, 3, 8, 8), 100, dtype=torch.uint8)
    out = keras_affine(images, generator(), channel_shift=50).int()
    assert (out.flatten(1) == out[:, :1, :1, :1].flatten(1)).all()  # one intensity per image
    assert (out[:, 0, 0, 0] != 100).all() and ((out - 100).abs() <= 50).all()


def test_cutout_zeroes_one_square_per_image():
    images = torch.full((32, 3, 32, 32), 9, dtype=torch.uint8)
    out = cutout_squares(images, generator(), size=8)
    zeroed = (out[:, 0] == 0).sum((1, 2))
    assert (zeroed <= 64).all() and (zeroed >= 16).all()  # 8×8, clipped at most to a quarter at a corner
    assert (out[:, 0] == out[:, 2]).all(), "the same square in every channel"


# The same pixels as before the aug package -------------------------------------------------------------------------
# Computed with the code of commit 1563bcb (aug.py, the loader's alternating_flip) on these inputs and seeds.
BEFORE = {"flip_shift zeros": "632897924f35dc2f", "flip_shift reflect": "c39ba880c1c34c97",
          "flip_shift edge": "f42ed5d867366528", "flip_shift noflip": "cd500ea716a0c506", "cutout": "d51ec5e17bac3e29",
          "bc": "92f5c73a6f0c447f", "alternating": ("12942dc2e4763cf7", "956f3502a4aeb03d"),
          "alternating only": "7b34fb52d5473432"}
# keras: out[:, :, 16, ::8] of a smooth image (bilinear interpolation: compared to ±1 for other CPUs' rounding)
KERAS_BEFORE = [
    [[187, 130, 74, 18], [86, 106, 126, 147], [136, 118, 100, 82]],
    [[25, 42, 109, 176], [182, 163, 144, 125], [103, 102, 126, 150]],
    [[13, 30, 97, 165], [155, 144, 134, 124], [84, 87, 116, 144]],
    [[213, 148, 83, 18], [38, 60, 82, 105], [126, 104, 83, 61]],
    [[255, 193, 127, 61], [173, 174, 175, 177], [216, 184, 151, 119]],
    [[2, 22, 80, 137], [153, 134, 116, 98], [77, 78, 98, 118]],
    [[0, 12, 81, 149], [45, 58, 71, 84], [11, 35, 76, 117]],
    [[1, 58, 114, 171], [84, 93, 103, 113], [42, 75, 109, 142]],
]


def test_the_same_seed_gives_the_same_pixels_as_before_the_aug_package():
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=generator(0), dtype=torch.uint8)
    index = torch.arange(16)
    for pad_mode in ("zeros", "reflect", "edge"):
        out = flip_shift(4, True, pad_mode)(images, index, generator(1), 1)
        assert digest(out) == BEFORE[f"flip_shift {pad_mode}"], pad_mode
    assert digest(flip_shift(2, False)(images, index, generator(1), 1)) == BEFORE["flip_shift noflip"]
    assert digest(cutout(size=8)(images, index, generator(2), 1)) == BEFORE["cutout"]

    y, x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    smooth = torch.stack([x * 8, y * 8, (x + y) * 4]).clamp(0, 255).to(torch.uint8).expand(8, 3, 32, 32).contiguous()
    out = keras(rotation=20, width_shift=0.2, height_shift=0.2, shear=10, zoom=0.1, channel_shift=30,
                horizontal_flip=True)(smooth, torch.arange(8), generator(3), 1)
    assert (out[:, :, 16, ::8].int() - torch.tensor(KERAS_BEFORE)).abs().max() <= 1

    labels = torch.randint(0, 10, (16,), generator=generator(4))
    assert digest(*between_class(images.float() / 255, labels, 10, generator(5))) == BEFORE["bc"]
    assert digest(*BetweenClass(10, 0.0)(images.float() / 255, labels, generator(5))) == BEFORE["bc"]


def test_the_alternating_flip_mirrors_the_same_images_as_before_the_aug_package():
    """The loader drew the phase from its order generator, before the epochs' permutations; the phase is
    the same now, and the same batches (then's orders, rebuilt here) get the same pixels."""
    n = 40
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=generator(6), dtype=torch.uint8)
    then = generator(3)
    torch.rand(n, generator=then)  # the phase, as the loader drew it
    orders = [torch.randperm(n, generator=then) for _ in range(3)]
    batches = [(epoch, order[start:end]) for epoch, order in enumerate(orders, 1) for start, end in
               [(0, 16), (16, 32), (32, 40)]]
    augment, draws = flip_shift(2, "alternating", num_images=n, seed=3), generator(rank_seed(3, 0))
    out = [augment(images[index], index, draws, epoch) for epoch, index in batches]
    assert (digest(*out), digest(*[index for _, index in batches])) == BEFORE["alternating"]
    alone = AlternatingFlip(n, seed=3)
    assert digest(*[alone(images[index], index, epoch) for epoch, index in batches[:6]]) == BEFORE["alternating only"]


# The alternating flip --------------------------------------------------------------------------------------------
def test_alternating_flip_shows_each_image_both_ways_in_two_epochs_and_survives_resume():
    n = 40
    images = torch.arange(n * 3 * 8 * 8).reshape(n, 3, 8, 8).to(torch.uint8)  # each image asymmetric
    augment = AlternatingFlip(n, seed=0)

    def loader():
        return DeviceLoader(images, torch.arange(n), 16, nn.Identity(),
                            lambda batch, index, draws, epoch: augment(batch, index, epoch))

    def flipped_in_next_epoch(source) -> torch.Tensor:
        flipped = torch.zeros(n, dtype=torch.bool)
        for batch, labels in source:
            flipped[labels] = (batch != images[labels]).flatten(1).any(1)
            assert torch.equal(batch, torch.where(flipped[labels].view(-1, 1, 1, 1), images[labels].flip(3),
                                                  images[labels]))
        return flipped

    whole = loader()
    epochs = [flipped_in_next_epoch(whole) for _ in range(3)]
    assert 0 < epochs[0].sum() < n
    assert torch.equal(epochs[1], ~epochs[0]) and torch.equal(epochs[2], epochs[0])
    resumed = loader()
    resumed.load_state_dict(whole.state_dict())  # after epoch 3: the phase is drawn from the seed again
    assert torch.equal(flipped_in_next_epoch(resumed), ~epochs[2])
    alternating, plain = loader(), DeviceLoader(images, torch.arange(n), 16, nn.Identity())
    assert torch.equal(torch.cat([y for _ in range(2) for _, y in alternating]),
                       torch.cat([y for _ in range(2) for _, y in plain])), "the same orders as without a flip"


def test_the_loader_calls_augment_with_the_batch_its_indices_generator_and_epoch():
    images = torch.arange(10).repeat_interleave(3 * 4 * 4).view(10, 3, 4, 4).to(torch.uint8)
    calls = []

    def augment(batch, index, draws, epoch):
        calls.append((index.clone(), epoch))
        assert torch.equal(batch, images[index]) and draws is loader.generator
        return batch

    loader = DeviceLoader(images, torch.arange(10), 4, nn.Identity(), augment)
    labels = [y for _ in range(2) for _, y in loader]
    assert [epoch for _, epoch in calls] == [1, 1, 1, 2, 2, 2]
    assert all(torch.equal(index, y) for (index, _), y in zip(calls, labels, strict=True))


# Mixes and their criteria ----------------------------------------------------------------------------------------
def test_mixup_targets_sum_to_one_and_match_the_images():
    images, labels = torch.randn(64, 3, 4, 4), torch.randint(0, 10, (64,))
    mixed, targets, dominant = mixup(images, labels, alpha=1.0, num_classes=10, generator=generator())
    assert torch.allclose(targets.sum(1), torch.ones(64))
    assert ((targets > 0).sum(1) <= 2).all()
    assert (dominant == labels).float().mean() > 0.3 and (dominant != labels).any()
    assert (targets.gather(1, dominant[:, None]) >= 0.5 - 1e-6).all(), "the dominant label has the larger weight"
    weight = targets[torch.arange(64), labels]
    partner = torch.randperm(64, generator=generator())  # the first draw
    same = labels == labels[partner]
    expected = images * weight.view(-1, 1, 1, 1) + images[partner] * (1 - weight).view(-1, 1, 1, 1)
    assert torch.allclose(mixed[~same], expected[~same], atol=1e-6)


def test_bc_partners_are_of_another_class_and_r_dominates():
    labels = torch.randint(0, 10, (512,), generator=generator(1))
    partners = bc_partners(labels, generator(2))
    assert (labels[partners] != labels).all()
    assert len(set(partners.tolist())) > 200, "partners are spread, not one per class"
    images = torch.randn(512, 3, 4, 4)
    mixed, targets, dominant = between_class(images, labels, 10, generator(3))
    r = targets[torch.arange(512), labels]
    assert (r >= 0.5).all() and torch.allclose(targets.sum(1), torch.ones(512))
    assert torch.equal(dominant, labels)
    assert torch.equal(bc_partners(torch.zeros(4, dtype=torch.long), generator()), torch.arange(4))  # no other class


def test_bc_loss_is_finite_and_falls_on_real_images(real_cifar_root):
    from cifarbench.data import build_preprocess, load_cifar10

    data = load_cifar10(real_cifar_root, download=False)
    images = torch.from_numpy(data.train_images[:256])
    labels = torch.from_numpy(data.train_labels[:256])
    x = build_preprocess("meanstd", images)(images)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(256, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    mix, g = BetweenClass(10, 0.0), generator()
    losses = []
    for _ in range(60):
        mixed, targets, _ = mix(x, labels, g)
        loss = mix.criterion(model(mixed), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.85 * first, (first, last)


def test_each_mix_brings_its_criterion():
    logits, targets = torch.randn(8, 10), torch.softmax(torch.randn(8, 10), 1)
    ce, kl = Mixup(10, 0.0).criterion(logits, targets), BetweenClass(10, 0.0).criterion(logits, targets)
    entropy = -(targets * targets.log()).sum(1).mean()
    assert ce.item() == pytest.approx((kl + entropy).item(), rel=1e-5), "BC-learning: KL = cross-entropy − entropy"
    hard = targets.argmax(1)
    assert NoMix(0.1).criterion(logits, hard).item() == pytest.approx(
        F.cross_entropy(logits, hard, label_smoothing=0.1).item())
    assert Mixup(10, 0.1).criterion(logits, targets).item() == pytest.approx(
        F.cross_entropy(logits, targets, label_smoothing=0.1).item())
    images, labels = torch.randn(4, 3, 2, 2), torch.arange(4)
    assert all(a is b for a, b in zip(NoMix()(images, labels, generator()), (images, labels, labels)))


def test_the_config_chooses_the_mix_and_its_arguments():
    def built(**fields) -> Augmentation:
        return build_augmentation(aug_config("flip_shift", **fields), num_classes=7, num_images=4, seed=0,
                                  label_smoothing=0.2)

    assert built().mix == NoMix(0.2)
    assert built(mix="mixup", mix_alpha=0.4).mix == Mixup(7, 0.2, alpha=0.4)
    assert built(mix="mixup", mix_alpha=None).mix == Mixup(7, 0.2, alpha=1.0)  # null: the default
    assert built(mix="bc", mix_alpha=0.4).mix == BetweenClass(7, 0.2)  # (mix_alpha is mixup's)
    assert built(mix="cutmix", mix_alpha=0.4).mix == CutMix(7, 0.2, alpha=0.4)
    assert built(mix="mixup_cutmix", mix_alpha=0.4, mix_cutmix_alpha=2.0, mix_switch_prob=0.25).mix == MixupCutMix(
        7, 0.2, alpha=0.4, cutmix_alpha=2.0, switch_prob=0.25)
    assert MIXES.names() == ["bc", "cutmix", "mixup", "mixup_cutmix"] and MIXES.fields("mixup") == ["alpha"]
    assert MIXES.fields("mixup_cutmix") == ["alpha", "cutmix_alpha", "switch_prob"] and MIXES.fields("bc") == []
    entries = {OmegaConf.load(path).get("mix") for path in (CONF / "aug").glob("*.yaml")}
    assert set(MIXES.names()) <= entries, "every mix has a config in conf/aug"


# mixup's λ -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_mixup_lambda_is_beta_distributed(alpha):
    n = 200_000
    draws = beta_draws(alpha, n, generator(int(alpha * 10)), torch.device("cpu"))
    assert draws.dtype == torch.float32 and ((draws >= 0) & (draws <= 1)).all()
    draws = draws.double()
    mean, variance = draws.mean(), draws.var()
    expected = 1 / (4 * (2 * alpha + 1))
    centred = draws - 0.5
    assert abs(mean - 0.5) < 5 * math.sqrt(expected / n)
    variance_error = math.sqrt(((centred ** 4).mean() - expected ** 2) / n)  # the sample variance's standard error
    assert abs(variance - expected) < 5 * variance_error, (variance.item(), expected)
    if alpha == 1.0:  # Beta(1, 1) is uniform: Kolmogorov–Smirnov distance within the 0.1% critical value
        ks = (draws.sort().values - torch.arange(1, n + 1, dtype=torch.float64) / n).abs().max()
        assert ks < 1.95 / math.sqrt(n)


def test_mixup_draws_from_the_augmentation_generator_alone():
    images, labels = torch.randn(32, 3, 4, 4), torch.randint(0, 10, (32,), generator=generator(1))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = Mixup(10, 0.0, alpha=0.5)(images, labels, generator(7))
    assert torch.equal(torch.get_rng_state(), state), "the global RNG is untouched"
    torch.manual_seed(123)
    again = Mixup(10, 0.0, alpha=0.5)(images, labels, generator(7))
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "the same seed draws the same λ"
    other = Mixup(10, 0.0, alpha=0.5)(images, labels, generator(8))
    assert not torch.equal(first[1], other[1])


# TTA views -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", TTA_MODES)
def test_tta_views_weights_sum_to_one(mode):
    images = torch.randn(2, 3, 8, 8)
    views = tta_views(images, mode)
    assert sum(weight for weight, _ in views) == 1
    assert all(view.shape == images.shape for _, view in views) and torch.equal(views[0][1], images)


def test_an_unknown_tta_mode_is_one_line():
    with pytest.raises(ValueError, match=r"^trainer\.tta='all'; choose one of none, flip, flip_translate$"):
        tta_views(torch.zeros(1, 3, 4, 4), "all")


# The aug config, before any data loads -----------------------------------------------------------------------------
def test_choice_arguments_are_their_builders_literals():
    from cifarbench.validate import field_of

    def choices(name: str) -> dict[str, tuple]:
        return {field: declared.choices for field, hint in AUGMENTS.annotations(name).items()
                if (declared := field_of(hint)) is not None and declared.kind == "choice"}

    assert choices("flip_shift") == {"flip": (True, False, "alternating"), "pad_mode": ("zeros", "reflect", "edge")}
    assert choices("cutout") == choices("flip_shift") and choices("keras") == {}


@pytest.mark.parametrize("overrides, message", [
    ("aug.flip=sometimes", "aug.flip='sometimes'; it must be one of true, false, alternating"),
    ("aug=cutout aug.flip=1", "aug.flip=1; it must be one of true, false, alternating"),
    ("aug.pad_mode=wrap", "aug.pad_mode='wrap'; it must be one of zeros, reflect, edge"),
    ("aug=cutout aug.pad_mode=constant", "aug.pad_mode='constant'; it must be one of zeros, reflect, edge"),
    ("aug.mix=cutmixup", "aug.mix='cutmixup'; it must be one of bc, cutmix, mixup, mixup_cutmix or null"),
    ("aug.mix=mixup_cutmix aug.mix_switch_prob=2", "aug.mix_switch_prob=2; it must be a number in [0, 1]"),
    ("aug=cutmix aug.mix_alpha=0", "aug.mix_alpha=0; it must be a positive number"),
    ("aug=random_erasing aug.scale=[0.4,0.02]", "aug.scale=[0.4, 0.02]; it must be a list of 2 values in increasing "
                                                "order, each a number in (0, 1]"),
    ("aug=random_erasing aug.ratio=[0,3]", "aug.ratio=[0, 3]; it must be a list of 2 values in increasing order, "
                                           "each a positive number"),
    ("aug=random_erasing aug.probability=1.5", "aug.probability=1.5; it must be a number in [0, 1]"),
    ("aug=random_erasing aug.fill=zeros", "aug.fill='zeros'; it must be one of random, mean"),
    ("aug=bc +aug.mix_beta=1", "aug 'flip_shift' has no field(s) mix_beta; its fields are: name, mix, per_epoch, mix_alpha,"),
    ("+aug.num_images=3", "aug 'flip_shift' has no field(s) num_images; its fields are: name, mix, per_epoch, mix_alpha, "
                          "mix_cutmix_alpha, mix_switch_prob, max_shift, flip, pad_mode"),
])
def test_bad_aug_values_are_one_line_before_any_data_loads(compose_with, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate_config(compose_with(*overrides.split(), "data.root=/nonexistent"))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_alternating_flip_needs_the_dataset_size():
    with pytest.raises(ValueError, match="the alternating flip needs the dataset's number of images"):
        flip_shift(flip="alternating")


# CutMix and random erasing (Yun et al. 2019; Zhong et al. 2020) --------------------------------------------------
def box_sides(pixel_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows and columns each image's box (the pixels of weight 0) spans, (B,) each."""
    inside = pixel_weight[:, 0] == 0
    return inside.any(2).sum(1), inside.any(1).sum(1)


def test_cutmix_boxes_clip_at_the_border_and_correct_lambda():
    # λ = 0.75 on 8×8: a 4×4 box (⌊8·√0.25⌋ = 4, half-sides 2) centred on a uniform pixel c, rows c−2..c+1
    # clipped to 0..7: 4 rows for c in 2..6 (5/8), 3 for c = 1 or 7 (2/8), 2 for c = 0 (1/8); E = 3.5.
    n = 40_000
    pixel_weight, kept = cutmix_boxes(torch.full((n,), 0.75), 8, 8, generator())
    rows, cols = box_sides(pixel_weight)
    assert torch.equal((pixel_weight[:, 0] == 0).sum((1, 2)), rows * cols), "the box is a rectangle"
    assert torch.allclose(kept, 1 - (rows * cols).float() / 64), "λ is the fraction of the image's own pixels"
    for side in (rows, cols):
        for size, probability in ((4, 5 / 8), (3, 2 / 8), (2, 1 / 8)):
            frequency = (side == size).float().mean().item()
            assert abs(frequency - probability) < 5 * math.sqrt(probability * (1 - probability) / n), (size, frequency)
    assert kept.double().mean().item() == pytest.approx(1 - 3.5 * 3.5 / 64, abs=0.005)
    none, kept_all = cutmix_boxes(torch.ones(4), 8, 8, generator())
    assert (none == 1).all() and (kept_all == 1).all(), "λ = 1: no box"
    _, kept_none = cutmix_boxes(torch.zeros(1000), 8, 8, generator())
    assert kept_none.min() == 0 and kept_none.max() < 1, "λ = 0: the whole image when centred, clipped otherwise"


def constant_images(n: int, size: int = 8) -> torch.Tensor:
    """Image i is the constant i in its 3 channels (so each pixel says whose it is)."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()


def test_cutmix_pastes_the_partner_and_weighs_the_targets_by_area():
    n = 256
    images, labels = constant_images(n), torch.arange(n)  # one class per image
    mixed, targets, dominant = cutmix(images, labels, alpha=1.0, num_classes=n, generator=generator(3))
    partner = targets.clone()
    partner[torch.arange(n), labels] = 0
    partner = partner.argmax(1)
    own_pixels = (mixed == images).all(1).float().mean((1, 2))  # the fraction of each image left as it was
    from_partner = (mixed == images[partner]).all(1) | (partner == labels)[:, None, None]
    assert from_partner[(mixed != images).any(1)].all(), "every changed pixel is the partner's"
    pasted = own_pixels < 1
    assert torch.allclose(targets[torch.arange(n), labels][pasted], own_pixels[pasted])
    assert torch.allclose(targets.sum(1), torch.ones(n)) and ((targets > 0).sum(1) <= 2).all()
    assert torch.equal(dominant, torch.where(own_pixels >= 0.5, labels, partner))
    # E[kept] for λ ~ U(0, 1) on 8×8, by enumeration: 1 − λ = c² ~ U(0, 1), the box's half-side
    # k = ⌊⌊8c⌋/2⌋ (P(k) = ((2k + 2)/8)² − (2k/8)², k < 4), rows [y − k, y + k) ∩ [0, 8) for a uniform centre y.
    spans = [sum(min(y + k, 8) - max(y - k, 0) for y in range(8)) / 8 for k in range(4)]  # E[rows | k]
    expected = 1 - sum((((2 * k + 2) / 8) ** 2 - (2 * k / 8) ** 2) * spans[k] ** 2 for k in range(4)) / 64
    assert abs(own_pixels.mean().item() - expected) < 5 * 0.3 / math.sqrt(n), (own_pixels.mean(), expected)


@pytest.mark.parametrize("switch_prob", [0.0, 0.5, 1.0])
def test_mixup_cutmix_switches_per_batch_with_its_probability(switch_prob):
    images, labels, g = constant_images(16), torch.arange(16), generator(5)
    batches = 300
    cut = 0
    for _ in range(batches):
        mixed, targets, _ = MixupCutMix(16, 0.0, switch_prob=switch_prob)(images, labels, g)
        whole = torch.equal(mixed, mixed.round())  # CutMix copies pixels; mixup blends (λ ∈ {0, 1} never occurs)
        cut += whole
        assert torch.allclose(targets.sum(1), torch.ones(16))
    expected = batches * switch_prob
    assert abs(cut - expected) <= 5 * math.sqrt(batches * switch_prob * (1 - switch_prob)) + 1e-9, cut


def erased_boxes(n, probability=1.0, scale=(0.02, 0.4), ratio=(1.0, 1.0), size=32, seed=0):
    return erasing_boxes(n, size, size, generator(seed), torch.device("cpu"), probability, scale, ratio)[:, 0]


def test_random_erasing_area_is_uniform_in_the_scale_range():
    # Square boxes (ratio 1) on 32×32 with area fraction s ~ U(0.02, 0.4): side = round(32·√s), so
    # P(side <= k) = P(s < ((k + ½)/32)²) = (((k + ½)/32)² − 0.02) / 0.38.
    n = 20_000
    inside = erased_boxes(n)
    rows, cols = inside.any(2).sum(1), inside.any(1).sum(1)
    assert torch.equal(rows, cols) and torch.equal(inside.sum((1, 2)), rows * cols)
    for k in (6, 10, 14, 18):
        cdf = min(max((((k + 0.5) / 32) ** 2 - 0.02) / 0.38, 0), 1)
        frequency = (rows <= k).float().mean().item()
        assert abs(frequency - cdf) < 5 * math.sqrt(cdf * (1 - cdf) / n), (k, frequency, cdf)
    assert rows.min() >= round(32 * math.sqrt(0.02)) and rows.max() <= round(32 * math.sqrt(0.4))


def test_random_erasing_probability_and_aspect():
    n = 20_000
    inside = erased_boxes(n, probability=0.3, scale=(0.25, 0.25), ratio=(1 / 3, 3))
    erased = inside.any(2).any(1)
    assert abs(erased.float().mean().item() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)
    rows, cols = inside.any(2).sum(1)[erased].float(), inside.any(1).sum(1)[erased].float()
    aspect = rows / cols
    assert aspect.min() >= 1 / 3 - 0.1 and aspect.max() <= 3 + 0.4  # (sides rounded to whole pixels)
    tall, wide = (aspect > 1).float().mean().item(), (aspect < 1).float().mean().item()
    assert abs(tall - wide) < 0.03, "log-uniform aspect: as many tall boxes as wide ones"
    assert (rows * cols).mean().item() == pytest.approx(256, rel=0.03), "area 1/4 of 32×32"
    too_big = erased_boxes(100, scale=(0.99, 0.99), ratio=(4, 4))  # never fits (h ≈ 64): nothing erased
    assert not too_big.any()


def test_random_erasing_fills_with_random_values_or_the_channel_mean():
    images = torch.stack([torch.full((8, 8), v, dtype=torch.uint8) for v in (10, 100, 200)]).expand(64, 3, 8, 8)
    images = images.contiguous()
    inside = erasing_boxes(64, 8, 8, generator(1), torch.device("cpu"), 1.0, (0.1, 0.3), (0.5, 2))
    mean = random_erasing(images, generator(1), 1.0, (0.1, 0.3), (0.5, 2), fill="mean")
    assert torch.equal(mean, images), "the per-channel mean of constant channels is the channel itself"
    noisy = random_erasing(images, generator(1), 1.0, (0.1, 0.3), (0.5, 2), fill="random")
    changed = (noisy != images).any(1)
    assert torch.equal(changed | inside[:, 0], inside[:, 0]), "only the rectangles change"
    assert changed.sum() > 0.9 * inside.sum()
    assert noisy.float()[inside.expand_as(noisy)].mean().item() == pytest.approx(127.5, abs=8)
