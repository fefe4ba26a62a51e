"""Small-sample statistics for the report: means with Student-t confidence intervals over seeds,
paired tests with a Holm correction, and Friedman ranks with the Nemenyi critical difference.

The distributions come from SciPy (`scipy.stats`), installed with JAX: the Student t, the exact
Wilcoxon signed-rank test, the Friedman chi-square and the studentized range. Undefined values
(None or NaN: an empty frequency bucket, a label without test positives) are left out of every
statistic, so `n` always counts the values actually used.

References: S. Holm, "A simple sequentially rejective multiple test procedure", Scand. J.
Statist. 6 (1979); J. Demšar, "Statistical comparisons of classifiers over multiple data sets",
JMLR 7 (2006), sections 3.1.3 and 3.2.2 (Wilcoxon, Friedman, Nemenyi).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as _scipy_stats

__all__ = [
    "WILCOXON_MIN_N",
    "Friedman",
    "MeanCI",
    "PairedTest",
    "defined",
    "friedman",
    "holm",
    "mean_ci",
    "nemenyi_critical_difference",
    "paired_difference",
    "paired_test",
    "student_t_ppf",
]

# The exact two-sided Wilcoxon signed-rank p is at least 2 / 2^n: below n = 6 it cannot fall
# under 0.05, so the test is not reported there.
WILCOXON_MIN_N = 6


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
    return mean_ci(_differences(treatment, control), confidence)


def _differences(
    treatment: Mapping[object, float | None], control: Mapping[object, float | None]
) -> list[float]:
    """treatment[k] - control[k] for every key where both are defined, in key order."""
    return [
        float(treatment[k]) - float(control[k])
        for k in sorted(set(treatment) & set(control))
        if defined(treatment[k]) and defined(control[k])
    ]


class PairedTest(NamedTuple):
    """A paired comparison: the interval of the mean difference and two-sided p-values.

    `p_t` is the paired t-test's (None when n < 2); `p_wilcoxon` the exact signed-rank test's,
    None when n < WILCOXON_MIN_N (it could not reach 0.05) or a zero or tied difference makes
    the exact distribution unavailable.
    """

    ci: MeanCI
    p_t: float | None
    p_wilcoxon: float | None


def paired_t_p(diffs: Sequence[float]) -> float | None:
    """Two-sided p of the paired t-test of mean(diffs) = 0 on n - 1 degrees of freedom.

    Differences with no spread give p = 0 (a constant non-zero shift) or 1 (all zero).
    """
    n = len(diffs)
    if n < 2:
        return None
    mean = math.fsum(diffs) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (sd / math.sqrt(n))
    return float(2.0 * _scipy_stats.t.sf(abs(t), n - 1))


def wilcoxon_p(diffs: Sequence[float]) -> float | None:
    """Two-sided p of the exact Wilcoxon signed-rank test; None where it is not reported."""
    magnitudes = [abs(d) for d in diffs]
    if len(diffs) < WILCOXON_MIN_N or 0.0 in magnitudes or len(set(magnitudes)) < len(diffs):
        return None
    return float(_scipy_stats.wilcoxon(diffs, method="exact").pvalue)


def paired_test(
    treatment: Mapping[object, float | None],
    control: Mapping[object, float | None],
    confidence: float = 0.95,
) -> PairedTest:
    """`paired_difference` with the paired t and Wilcoxon p-values of the same differences."""
    diffs = _differences(treatment, control)
    return PairedTest(mean_ci(diffs, confidence), paired_t_p(diffs), wilcoxon_p(diffs))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    With the m p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    max_{j <= i} min(1, (m - j + 1) p_(j)); rejecting where it is below alpha controls the
    family-wise error rate at alpha under any dependence between the tests.
    """
    for p in p_values:
        if not (defined(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"Holm's correction needs p-values in [0, 1]; got {p!r}.")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * p_values[i]))
        adjusted[i] = running
    return adjusted


class Friedman(NamedTuple):
    """Friedman's test over N complete blocks of k treatments (rank 1 = the highest value)."""

    mean_ranks: list[float]  # per treatment, in the columns' order
    statistic: float  # chi-square with k - 1 degrees of freedom, corrected for ties
    p_value: float
    n_blocks: int


def friedman(blocks: Sequence[Sequence[float]]) -> Friedman:
    """Mean ranks and Friedman's chi-square of a [N blocks, k treatments] table.

    Higher is better: in each block the highest value gets rank 1, ties share the mean rank.
    Needs N >= 2 complete blocks (no undefined value) and k >= 3 treatments.
    """
    table = np.asarray(blocks, dtype=float)
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 3:
        raise ValueError(
            f"Friedman's test needs a [blocks, treatments] table with at least 2 blocks and 3 "
            f"treatments; got shape {table.shape}."
        )
    if not np.isfinite(table).all():
        raise ValueError("Friedman's test needs complete blocks: leave out blocks with gaps.")
    ranks = _scipy_stats.rankdata(-table, axis=1)
    if (ranks == ranks[:, :1]).all():  # Every block a complete tie: no evidence of a difference.
        statistic, p_value = 0.0, 1.0
    else:
        result = _scipy_stats.friedmanchisquare(*table.T)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return Friedman([float(r) for r in ranks.mean(axis=0)], statistic, p_value, table.shape[0])


def nemenyi_critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """The Nemenyi test's critical difference of mean ranks (Demšar 2006, section 3.2.2):

        CD = q_alpha sqrt(k (k + 1) / (6 N)),   q_alpha = Q_{1-alpha}(k, inf) / sqrt(2)

    with Q the studentized range quantile of k means and infinite degrees of freedom. Two mean
    ranks further apart than CD differ at level alpha, corrected for all k (k - 1) / 2 pairs.
    """
    if k < 2 or n_blocks < 1:
        raise ValueError(f"The critical difference needs k >= 2 and N >= 1; got {k}, {n_blocks}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}.")
    q = _scipy_stats.studentized_range.ppf(1.0 - alpha, k, np.inf) / math.sqrt(2.0)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n_blocks)))
