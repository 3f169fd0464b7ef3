"""Preprocessing fitted on the training set: mean image, per-image contrast, ZCA whitening (cached)."""
import numpy as np
import pytest
import torch
from helpers import DAMAGES, damage

from cifarbench.data import build_preprocess, preprocess


def correlated_images(n=2000, seed=0):
    """Small images with strongly correlated pixels, as natural images have."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 4, 4, generator=g) * 120
    noise = torch.rand(n, 3, 4, 4, generator=g) * 60
    return (base + noise + torch.linspace(0, 60, 16).view(1, 1, 4, 4)).round().to(torch.uint8)


def test_zca_whitened_training_data_has_identity_covariance(tmp_path):
    images = correlated_images()
    zca = build_preprocess("zca", images, cache_dir=tmp_path)
    x = zca(images).flatten(1).double()
    covariance = (x - x.mean(0)).T @ (x - x.mean(0)) / len(x)
    d = covariance.shape[0]
    # ε = 1e-2 shrinks each eigenvalue λ to λ/(λ + ε); contrast normalisation removes one direction.
    off_diagonal = covariance - torch.diag(torch.diagonal(covariance))
    assert off_diagonal.abs().max() < 0.05, "decorrelated to within 0.05"
    diagonal = torch.diagonal(covariance)
    assert (diagonal > 0.7).float().mean() > 0.95 and (diagonal < 1.05).all(), "unit variance to within ~0.3"
    raw = images.flatten(1).double()
    raw_corr = torch.corrcoef(raw.T)
    assert (raw_corr - torch.eye(d)).abs().max() > 0.5, "the raw pixels were strongly correlated"
    assert len(list(tmp_path.glob("zca-*.npz"))) == 1
    cached = build_preprocess("zca", images, cache_dir=tmp_path)
    assert torch.equal(cached(images[:5]), zca(images[:5]))


def test_contrast_and_mean_preprocessing():
    images = correlated_images(500)
    x = build_preprocess("contrast", images)(images).flatten(1)
    assert torch.allclose(x.mean(1), torch.zeros(500), atol=1e-5)
    assert torch.allclose(x.std(1), torch.ones(500), atol=1e-4)
    centred = build_preprocess("mean", images)(images)
    assert torch.allclose(centred.mean(0), torch.zeros(3, 4, 4), atol=1e-5)  # the mean image is gone
    assert torch.allclose(centred[0], images[0].double().div(255).float() - images.double().div(255).mean(0).float(),
                          atol=1e-5)


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_zca_cache_is_fitted_again_and_replaced(tmp_path, how, caplog, monkeypatch):
    images = correlated_images(300)
    fitted = build_preprocess("zca", images, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("zca-*.npz")
    damage(cache, how)
    refitted = build_preprocess("zca", images, cache_dir=tmp_path)
    assert torch.equal(refitted(images[:5]), fitted(images[:5]))
    assert f"the cache {cache} is unreadable" in caplog.text

    def no_fit(*args):
        raise AssertionError("fitted again although the cache was rebuilt")

    monkeypatch.setattr(preprocess, "fit_zca", no_fit)  # the rewritten cache is whole again
    assert torch.equal(build_preprocess("zca", images, cache_dir=tmp_path)(images[:5]), fitted(images[:5]))


def test_zca_from_fewer_images_than_pixels_equals_the_covariance_eigendecomposition():
    """The Gram-matrix path (N < D, a subset) gives the matrix the D×D eigen-decomposition gives."""
    images = correlated_images(30)  # 30 images of D = 48 pixels: covariance of rank ≤ 29
    mean, whitening = preprocess.fit_zca(images, epsilon=1e-2)
    x = preprocess.contrast_normalize(images).flatten(1).double()
    covariance = torch.cov(x.T, correction=0)
    values, vectors = torch.linalg.eigh(covariance)
    expected = vectors @ torch.diag(1 / torch.sqrt(values.clamp_min(0) + 1e-2)) @ vectors.T
    assert torch.allclose(mean, x.mean(0), atol=1e-12)
    assert torch.allclose(whitening, expected, atol=1e-8)


def test_channel_statistics_are_fitted_exactly_where_the_images_are():
    """Issue 25: mean/std fitted on the device in one pass. By hand: channel 0 holds as many 0s as 255s
    (mean ½, std ½), channel 1 is 51 everywhere (mean 0.2, std 0), channel 2 holds 0, 85, 170, 255 in equal
    numbers (mean ½, variance (1 + 1/9 + 1/9 + 1)/4 − ¼ = 5/36), over chunks of unequal sizes."""
    images = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, :2] = 255
    images[:, 1] = 51
    images[:, 2] = torch.tensor([0, 85, 170, 255], dtype=torch.uint8).view(1, 4)
    mean, std = preprocess.channel_stats(images, chunk=3)
    assert mean.tolist() == [0.5, 0.2, 0.5] and std[1] == 0
    assert std[0].item() == 0.5 and std[2].item() == pytest.approx((5 / 36) ** 0.5, rel=1e-15)


def test_a_whole_training_set_goes_to_the_device_without_a_host_copy():
    from cifarbench.data.prepared import part

    array = np.arange(24, dtype=np.uint8).reshape(6, 4)
    assert part(array, np.arange(6)) is array
    assert part(array, np.array([0, 2, 5])).tolist() == [[0, 1, 2, 3], [8, 9, 10, 11], [20, 21, 22, 23]]
    assert part(array, np.array([1, 0, 2, 3, 4, 5]))[0].tolist() == [4, 5, 6, 7]  # a reorder is not the whole set
