"""The statistics of a leaderboard: Student's t confidence interval of a mean over seeds, Welch's t-test
of two settings, the one-sided t-test of a mean against a target, and the seeds a difference needs.

Student's t distribution is computed here (no SciPy in the core install): its tail is the regularized
incomplete beta function, P(T > t) = I_x(ν/2, 1/2) / 2 with x = ν / (ν + t²) (Abramowitz & Stegun
26.7.1 and 26.5.27; DLMF 8.17), evaluated by its continued fraction with the modified Lentz method
(Numerical Recipes, 3rd ed., §6.4, `betacf`); the quantile inverts it by bisection. The tests hold it to
SciPy's `scipy.stats.t` to 1e-10. Accuracies are fractions; p-values and levels are probabilities in [0, 1].
"""
from __future__ import annotations

import math
import statistics

MAX_SEEDS = 10_000_000  # seeds_to_resolve looks no further


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes' betacf, modified Lentz), for x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t)) if math.isfinite(t) else 0.0
    return tail if t >= 0 else 1.0 - tail


def t_ppf(p: float, df: float) -> float:
    """The quantile t with P(T ≤ t) = p, for p in (0, 1) and `df` > 0 degrees of freedom."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile's probability is in (0, 1), not {p}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    tail, high = 1.0 - p, 1.0
    while t_sf(high, df) > tail:
        high *= 2.0
    low = 0.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if middle in (low, high):
            break
        low, high = (middle, high) if t_sf(middle, df) > tail else (low, middle)
    return (low + high) / 2.0


def mean_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """The `level` (e.g. 0.95) confidence interval of the mean of `values` (n ≥ 2 seeds, same units as
    they are): mean ± t_{(1+level)/2, n−1} · s / √n with s the sample standard deviation; None for n < 2."""
    n = len(values)
    if n < 2:
        return None
    mean, half = statistics.fmean(values), t_ppf((1.0 + level) / 2.0, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def welch(a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """Welch's two-sided t-test of the means of `a` and `b` (unequal variances): (t, degrees of freedom
    by Welch–Satterthwaite, p-value); None unless both have n ≥ 2. Both without spread: p is 1 when the
    means are equal, else 0 (df and t then infinite)."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0.0:
        return ((0.0, math.inf, 1.0) if difference == 0.0 else
                (math.copysign(math.inf, difference), math.inf, 0.0))
    t = difference / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, df, min(1.0, 2.0 * t_sf(abs(t), df))


def p_above(values: list[float], target: float) -> float | None:
    """The one-sided t-test that the mean of `values` exceeds `target` (same units): the p-value of
    t = (mean − target) / (s / √n) with n − 1 degrees of freedom, as speed-run records are claimed;
    None for n < 2. Without spread: 0 when the mean exceeds the target, else 1."""
    n = len(values)
    if n < 2:
        return None
    mean, s = statistics.fmean(values), statistics.stdev(values)
    if s == 0.0:
        return 0.0 if mean > target else 1.0
    return t_sf((mean - target) / (s / math.sqrt(n)), n - 1)


def seeds_to_resolve(mean: float, std: float, target: float, alpha: float = 0.05) -> int | None:
    """The fewest seeds (n ≥ 2) whose one-sided t-test would show a mean above `target` at level `alpha`
    if the mean and sample standard deviation stayed at the observed `mean` and `std`:
    (mean − target)·√n / std > t_{1−alpha, n−1}. None when the mean does not exceed the target (no number
    of seeds resolves it) or it needs more than MAX_SEEDS."""
    if not mean > target:
        return None
    if std == 0.0:
        return 2

    def resolved(n: int) -> bool:
        return (mean - target) * math.sqrt(n) / std > t_ppf(1.0 - alpha, n - 1)

    if not resolved(MAX_SEEDS):
        return None
    low, high = 1, 2  # resolved(high), not resolved(low): the left side grows with n, the quantile shrinks
    while not resolved(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if resolved(middle) else (middle, high)
    return max(high, 2)
