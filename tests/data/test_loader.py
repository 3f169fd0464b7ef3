"""The device loader and the batched flip/translate: real pixel moves, every image once per epoch."""
import numpy as np
import pytest
import torch

from cifarbench.aug.geometric import translate_flip
from cifarbench.data import DeviceLoader, build_preprocess
from cifarbench.data.preprocess import channel_stats

NUMPY_PAD = {"zeros": "constant", "reflect": "reflect", "edge": "edge"}


@pytest.mark.parametrize("pad_mode", sorted(NUMPY_PAD))
def test_translate_flip_is_pad_crop_and_mirror(pad_mode):
    """Against an explicit NumPy pad-then-crop (then mirror) with the same per-image draws."""
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = translate_flip(images, torch.Generator().manual_seed(7), max_shift=4, flip=True, pad_mode=pad_mode)
    draws = torch.Generator().manual_seed(7)  # the same draws, in the same order as translate_flip
    shift = torch.randint(-4, 5, (2, 64), generator=draws) + 4
    mirrored = torch.rand(64, generator=draws) < 0.5
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)), mode=NUMPY_PAD[pad_mode])
    for i in range(64):
        dy, dx = shift[:, i].tolist()
        expected = padded[i, :, dy:dy + 32, dx:dx + 32]
        np.testing.assert_array_equal(out[i].numpy(), expected[:, :, ::-1] if mirrored[i] else expected)
    assert len({tuple(s) for s in shift.T.tolist()}) > 20, "each image draws its own offset"
    assert 10 < mirrored.sum() < 54


def test_known_image_moves_as_expected():
    """A single bright pixel lands exactly where a shift/mirror puts it."""
    image = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    image[0, 0, 10, 5] = 255
    for seed in range(20):
        out = translate_flip(image, torch.Generator().manual_seed(seed), max_shift=4, flip=True)
        draws = torch.Generator().manual_seed(seed)
        dy, dx = torch.randint(-4, 5, (2, 1), generator=draws)[:, 0].tolist()
        mirrored = bool(torch.rand(1, generator=draws)[0] < 0.5)
        row, col = 10 - dy, 5 - dx
        col = 31 - col if mirrored else col
        assert out.sum() == 255 and out[0, 0, row, col] == 255


def test_every_image_exactly_once_per_epoch():
    n = 1001  # 7 full batches of 128 and a remainder of 105
    images = torch.arange(n).repeat_interleave(3 * 32 * 32).view(n, 3, 32, 32).to(torch.uint8)
    labels = torch.arange(n)
    loader = DeviceLoader(images, labels, 128, preprocess=lambda x: x.float(), seed=0)
    assert len(loader) == 8
    orders = []
    for _ in range(2):
        seen = torch.cat([y for _, y in loader])
        assert sorted(seen.tolist()) == list(range(n))
        orders.append(seen)
    assert not torch.equal(*orders), "each epoch is shuffled anew"
    for x, y in loader:  # the images travel with their labels
        assert torch.equal(x[:, 0, 0, 0], (y % 256).float())


def test_a_lone_remainder_joins_the_last_batch():
    """Batch norm cannot train on one image, so 257 images at batch 128 make batches 128 and 129."""
    loader = DeviceLoader(torch.zeros(257, 3, 32, 32, dtype=torch.uint8), torch.arange(257), 128,
                          preprocess=lambda x: x.float())
    assert [len(y) for _, y in loader] == [128, 129]


def test_meanstd_uses_the_training_set_statistics():
    images = torch.randint(0, 256, (500, 3, 32, 32), dtype=torch.uint8)
    images[:, 1] //= 2  # give the channels different statistics
    mean, std = channel_stats(images, chunk=128)
    pixels = images.numpy().transpose(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(mean.numpy(), pixels.mean(1), rtol=1e-9)
    np.testing.assert_allclose(std.numpy(), pixels.std(1), rtol=1e-9)
    normalised = build_preprocess("meanstd", images)(images)
    assert normalised.dtype == torch.float32
    np.testing.assert_allclose(normalised.mean((0, 2, 3)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std((0, 2, 3)).numpy(), 1, atol=1e-3)


# aug.per_epoch (issue 25) -------------------------------------------------------------------------------------------
N_VIEWS, SIDE = 2000, 8


def views(per_epoch: bool, flip=True, epochs: int = 2) -> torch.Tensor:
    """(epochs, N_VIEWS, 3) int: each image's (dy, dx, mirrored) in each epoch, read back from the pixels.
    Every image is the same 1×8×8 ramp, pixel (r, c) = 1 + 8r + c, so an output's centre pixel names its
    source pixel (out[r, c] = src[r + dy, c + dx], or src[r + dy, 7 − c + dx] mirrored; the centre is never
    padding at max_shift 2), and the labels (0..N−1) name the image."""
    from cifarbench.aug import flip_shift

    ramp = (1 + torch.arange(SIDE * SIDE)).view(1, 1, SIDE, SIDE).to(torch.uint8)
    loader = DeviceLoader(ramp.expand(N_VIEWS, 1, SIDE, SIDE).contiguous(), torch.arange(N_VIEWS), 500,
                          preprocess=torch.nn.Identity(), seed=3, per_epoch=per_epoch,
                          augment=flip_shift(max_shift=2, flip=flip, num_images=N_VIEWS, seed=3))
    seen = torch.zeros(epochs, N_VIEWS, 3, dtype=torch.long)
    for epoch in range(epochs):
        for images, labels in loader:
            centre, right = images[:, 0, 4, 4].long() - 1, images[:, 0, 4, 5].long() - 1
            mirrored = (right % SIDE < centre % SIDE).long()
            seen[epoch, labels, :2] = torch.stack([centre // SIDE - 4, centre % SIDE - 4 + mirrored], 1)
            seen[epoch, labels, 2] = mirrored
    return seen


@pytest.mark.parametrize("per_epoch", [False, True])
def test_augmenting_per_epoch_draws_shifts_and_flips_as_per_batch(per_epoch):
    """By hand: dy and dx uniform over −2..2 (⅕ each), mirrored with p = ½; 4000 views (2 epochs of 2000),
    so each count is within 4.5 standard deviations (√(4000·⅕·⅘) ≈ 25.3, √(4000·¼) ≈ 31.6) of 800 and 2000.
    And an image's view is drawn anew each epoch: the same view twice with p = 1/50 (about 40 of 2000)."""
    seen = views(per_epoch)
    for axis in (0, 1):
        counts = torch.bincount(seen[..., axis].flatten() + 2, minlength=5)
        assert len(counts) == 5 and ((counts - 800).abs() < 4.5 * 25.3).all(), counts
    assert abs(int(seen[..., 2].sum()) - 2000) < 4.5 * 31.6
    same = (seen[0] == seen[1]).all(1).sum()
    assert 10 < same < 80, same


def test_alternating_flip_per_epoch_mirrors_every_image_the_other_way_each_epoch():
    seen = views(True, flip="alternating")
    assert (seen[0, :, 2] != seen[1, :, 2]).all()
    assert abs(int(seen[0, :, 2].sum()) - N_VIEWS / 2) < 4.5 * (N_VIEWS / 4) ** 0.5


def test_a_loader_augmenting_per_epoch_resumes_inside_an_epoch_with_the_same_views():
    from cifarbench.aug import flip_shift

    def loader():
        images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        return DeviceLoader(images, torch.arange(40), 8, preprocess=torch.nn.Identity(), seed=1, per_epoch=True,
                            augment=flip_shift(max_shift=2, num_images=40, seed=1))

    whole, stopped = loader(), loader()
    expected = [batch for _ in range(2) for batch, _ in whole]
    batches = iter(stopped)
    got = [next(batches)[0] for _ in range(3)]
    state, epoch_start, generator = stopped.state_dict(), stopped.epoch_start, stopped.generator.get_state()
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.generator.set_state(generator)
    resumed.epoch_start = epoch_start  # (what Training.restore puts back, per rank; the generator has moved on)
    got += [batch for _ in range(2) for batch, _ in resumed][:len(expected) - 3]
    assert all(torch.equal(a, b) for a, b in zip(expected, got)) and len(got) == len(expected)
