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
