"""The validation split: training images held out for model selection, so no choice reads the test set."""
from __future__ import annotations

import numpy as np

from cifarbench.registry import ConfigError


def validation_split(labels: np.ndarray, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) into `labels` ((N,) int class ids), both ascending.

    `size` images are held out, stratified: class c gives ⌊size·n_c/N⌋ images, and the images left
    over go to the classes with the largest remainders (ties to the lower class id), so every class
    is held out in proportion to its count. Which images of a class are held out is drawn with
    `numpy.random.default_rng(seed)`: the same labels, size and seed give the same split. size=0
    holds out nothing (training indices 0..N-1).

    Raises ConfigError (one line) unless `size` is an integer in 0..N-1 and `seed` a non-negative integer.
    """
    n = len(labels)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"data.val_seed={seed}; it must be a non-negative integer")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 <= size < n:
        raise ConfigError(f"data.val_split={size}; it must be an integer in 0..{n - 1} (the held-out part of the "
                          f"{n} training images, data.train_subset included)")
    counts = np.bincount(labels)
    quotas, remainders = np.divmod(size * counts, n)
    extra = np.lexsort((np.arange(len(counts)), -remainders))[:size - quotas.sum()]  # largest remainder first
    quotas[extra] += 1
    rng = np.random.default_rng(seed)
    held_out = [rng.permutation(np.flatnonzero(labels == c))[:quota] for c, quota in enumerate(quotas)]
    val = np.sort(np.concatenate(held_out))
    return np.setdiff1d(np.arange(n), val), val
