"""Batched augmentation and mixing: Keras affine, cutout, mixup, BC-learning."""
import pytest
import torch
import torch.nn.functional as F

from cifarbench.aug import bc_partners, between_class, cutout_squares, keras_affine, mixup
from cifarbench.engine.step import build_criterion


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


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


def test_mixup_targets_sum_to_one_and_match_the_images():
    torch.manual_seed(0)
    images, labels = torch.randn(64, 3, 4, 4), torch.randint(0, 10, (64,))
    mixed, targets, dominant = mixup(images, labels, alpha=1.0, num_classes=10, generator=generator())
    assert torch.allclose(targets.sum(1), torch.ones(64))
    assert ((targets > 0).sum(1) <= 2).all()
    assert (dominant == labels).float().mean() > 0.3 and (dominant != labels).any()
    assert (targets.gather(1, dominant[:, None]) >= 0.5 - 1e-6).all(), "the dominant label has the larger weight"
    assert not torch.equal(mixed, images)


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
    criterion, g = build_criterion("bc", 0.0), generator()
    losses = []
    for _ in range(60):
        mixed, targets, _ = between_class(x, labels, 10, g)
        loss = criterion(model(mixed), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.85 * first, (first, last)


def test_soft_cross_entropy_equals_kl_plus_target_entropy():
    logits, targets = torch.randn(8, 10), torch.softmax(torch.randn(8, 10), 1)
    ce, kl = build_criterion(None, 0.0)(logits, targets), build_criterion("bc", 0.0)(logits, targets)
    entropy = -(targets * targets.log()).sum(1).mean()
    assert ce.item() == pytest.approx((kl + entropy).item(), rel=1e-5)
    smoothed = build_criterion(None, 0.1)(logits, targets.argmax(1))
    assert smoothed.item() == pytest.approx(F.cross_entropy(logits, targets.argmax(1), label_smoothing=0.1).item())
