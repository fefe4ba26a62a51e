"""Small-sample statistics for the report: means with Student-t confidence intervals over seeds.

The Student-t quantile comes from SciPy (`scipy.stats.t`), installed with JAX. Undefined values
(None or NaN: an empty frequency bucket, a label without test positives) are left out of every
statistic, so `n` always counts the values actually used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from scipy import stats as _scipy_stats

__all__ = [
    "MeanCI",
    "defined",
    "mean_ci",
    "paired_difference",
    "student_t_ppf",
]


def student_t_ppf(p: float, df: float) -> float:
    """The quantile t with P(T <= t) = p, for 0 < p < 1 and df > 0 (t_{0.975, 2} = 4.3027)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"Student t quantile needs 0 < p < 1; got p={p}.")
    if not df > 0:
        raise ValueError(f"Student t needs df > 0; got {df}.")
    return float(_scipy_stats.t.ppf(p, df))


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
