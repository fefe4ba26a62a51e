"""Small-sample statistics for the report: means with Student-t confidence intervals over seeds.

Pure Python (math only): the report must not need SciPy. The Student-t quantile is computed by
inverting the t distribution function, which is written with the regularized incomplete beta
function evaluated by its continued fraction (Press et al., Numerical Recipes, 3rd ed., 6.4):

    P(|T| > t) = I_x(df/2, 1/2),  x = df / (df + t^2);   P(|T| <= t) = I_y(1/2, df/2),  y = 1 - x.

Undefined values (None or NaN: an empty frequency bucket, a label without test positives) are
left out of every statistic, so `n` always counts the values actually used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

__all__ = [
    "MeanCI",
    "defined",
    "mean_ci",
    "paired_difference",
    "regularized_incomplete_beta",
    "student_t_cdf",
    "student_t_ppf",
]

_EPS = 1e-16
_TINY = 1e-300


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) by the modified Lentz method (Numerical Recipes 6.4)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        # Even step, then odd step of the fraction's recurrence.
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for coefficient in (even, odd):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + coefficient / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}).")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"incomplete beta needs a, b > 0; got a={a}, b={b}.")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete beta needs 0 <= x <= 1; got x={x}.")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast only below (a+1)/(a+b+2); use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a) above it.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def _central_probability(t: float, df: float) -> float:
    """P(|T| <= t) = I_y(1/2, df/2), y = t^2 / (df + t^2); accurate for small t."""
    return regularized_incomplete_beta(0.5, df / 2.0, t * t / (df + t * t))


def _two_tailed_probability(t: float, df: float) -> float:
    """P(|T| > t) = I_x(df/2, 1/2), x = df / (df + t^2); accurate for large t."""
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` > 0 degrees of freedom."""
    if df <= 0:
        raise ValueError(f"Student t needs df > 0; got {df}.")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    # Each form is used where it does not subtract nearly equal numbers.
    if t * t < df:
        return 0.5 + math.copysign(0.5 * _central_probability(abs(t), df), t)
    tail = 0.5 * _two_tailed_probability(t, df)
    return 1.0 - tail if t > 0 else tail


def student_t_ppf(p: float, df: float) -> float:
    """The quantile t with P(T <= t) = p, for 0 < p < 1 and df > 0.

    Bisection on a monotone probability: slower than a series but accurate to ~1e-12 relative
    for any df, which is what an interval over a handful of seeds needs (t_{0.975, 2} = 4.3027).
    Near p = 1/2 it solves P(|T| <= t) = 2p - 1, in the tails P(|T| > t) = 2(1 - p), so that
    no step loses digits to cancellation.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"Student t quantile needs 0 < p < 1; got p={p}.")
    if df <= 0:
        raise ValueError(f"Student t needs df > 0; got {df}.")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    central, tail = 2.0 * p - 1.0, 2.0 * (1.0 - p)  # Both exact in floating point for p >= 1/2.
    if central <= 0.5:

        def below(t: float) -> bool:  # True while t is below the quantile.
            return _central_probability(t, df) < central
    else:

        def below(t: float) -> bool:
            return _two_tailed_probability(t, df) > tail

    lo, hi = 0.0, 1.0
    while below(hi):
        lo, hi = hi, hi * 2.0
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if below(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * hi:
            break
    return 0.5 * (lo + hi)


class MeanCI(NamedTuple):
    """Mean of n values with the half-width of its two-sided confidence interval.

    `mean` is None when n = 0; `half_width` is None when n < 2 (no spread to estimate).
    """

    mean: float | None
    half_width: float | None
    n: int

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (needs n >= 2)."""
        if self.half_width is None:
            return False
        return self.low > 0.0 or self.high < 0.0


def defined(value: object) -> bool:
    """A usable number: not None, not NaN, not infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def mean_ci(values: Iterable[float | None], confidence: float = 0.95) -> MeanCI:
    """Mean and t-interval half-width over the defined values.

        half_width = t_{(1 + confidence)/2, n-1} * s / sqrt(n),
        s^2 = sum (x_i - mean)^2 / (n - 1)                       (sample variance)

    Seeds are few (3-10), so the t quantile, not the normal 1.96, is the honest multiplier.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
    xs = [float(v) for v in values if defined(v)]
    n = len(xs)
    if n == 0:
        return MeanCI(None, None, 0)
    mean = math.fsum(xs) / n
    if n == 1:
        return MeanCI(mean, None, 1)
    variance = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    t = student_t_ppf(0.5 * (1.0 + confidence), n - 1)
    return MeanCI(mean, t * math.sqrt(variance / n), n)


def paired_difference(
    treatment: Mapping[int, float | None],
    control: Mapping[int, float | None],
    confidence: float = 0.95,
) -> MeanCI:
    """Mean and t-interval of the per-seed differences treatment[s] - control[s].

    Only seeds where both values are defined are paired; the pairing removes the seed-to-seed
    variation the two runs share (same data order, same initialisation seed).
    """
    diffs = [
        float(treatment[s]) - float(control[s])
        for s in sorted(set(treatment) & set(control))
        if defined(treatment[s]) and defined(control[s])
    ]
    return mean_ci(diffs, confidence)
