"""Which training images a run uses: `data.train_subset` (the first N, or a class-balanced fraction),
and the validation split held out of them for model selection, so no choice reads the test set."""
from __future__ import annotations

import numpy as np

from cifarbench.core.registry import ConfigError


def stratified_sample(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """`size` ascending indices into `labels` ((N,) int class ids), drawn class by class: class c gives
    ⌊size·n_c/N⌋ images, and the images left over go to the classes with the largest remainders (ties
    to the lower class id), so every class keeps its share. Which images of a class are drawn comes
    from `numpy.random.default_rng(seed)`: the same labels, size and seed give the same sample.
    `size` must lie in 0..N."""
    n = len(labels)
    counts = np.bincount(labels)
    quotas, remainders = np.divmod(size * counts, n)
    extra = np.lexsort((np.arange(len(counts)), -remainders))[:size - quotas.sum()]  # largest remainder first
    quotas[extra] += 1
    rng = np.random.default_rng(seed)
    drawn = [rng.permutation(np.flatnonzero(labels == c))[:quota] for c, quota in enumerate(quotas)]
    return np.sort(np.concatenate(drawn)) if drawn else np.zeros(0, np.int64)


def subset_size(subset: int | float | None, n: int) -> int:
    """How many of `n` training images `data.train_subset` keeps: all (None), the first `subset` (an
    integer), or round(subset·n) (a fraction in (0, 1)). Raises ConfigError (one line) for an integer
    above n or a fraction that leaves no image."""
    if subset is None:
        return n
    if isinstance(subset, float) and 0 < subset < 1:
        if round(subset * n) == 0:
            raise ConfigError(f"data.train_subset={subset}; {subset} of the {n} training images is none, "
                              f"raise it to at least {1 / n:.2g}")
        return round(subset * n)
    if subset > n:
        raise ConfigError(f"data.train_subset={subset}; this dataset has {n} training images")
    return subset


def training_subset(labels: np.ndarray, subset: int | float | None, seed: int = 0) -> np.ndarray:
    """Ascending indices of the training images a run uses, out of `labels` ((N,) int class ids):
    all (None), the first `subset` (an integer), or a stratified sample of round(subset·N) images (a
    fraction in (0, 1): 0.02 is 1/50 of each class, drawn with `seed`, see `stratified_sample`).

    Raises ConfigError (one line) for an integer above N or a fraction that leaves no image.
    """
    size = subset_size(subset, len(labels))
    if isinstance(subset, float) and 0 < subset < 1:
        return stratified_sample(labels, size, seed)
    return np.arange(size)


def validation_split(labels: np.ndarray, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) into `labels` ((N,) int class ids), both ascending.

    `size` images are held out, stratified by class (`stratified_sample`, drawn with `seed`), so every
    class is held out in proportion to its count. size=0 holds out nothing (training indices 0..N-1).

    Raises ConfigError (one line) unless `size` is an integer in 0..N-1 and `seed` a non-negative integer.
    """
    n = len(labels)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"data.val_seed={seed}; it must be a non-negative integer")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 <= size < n:
        raise ConfigError(f"data.val_split={size}; it must be an integer in 0..{n - 1} (the held-out part of the "
                          f"{n} training images, data.train_subset included)")
    val = stratified_sample(labels, size, seed)
    return np.setdiff1d(np.arange(n), val), val
