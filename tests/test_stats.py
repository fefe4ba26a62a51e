"""Tests of experiments.stats against printed t tables, closed forms and hand-computed intervals.

The quantile comes from SciPy; the references here are independent of it: values copied from
printed t tables and the closed forms of the t distribution with 1 and 2 degrees of freedom."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.stats import (
    MeanCI,
    friedman,
    holm,
    mean_ci,
    nemenyi_critical_difference,
    paired_difference,
    paired_test,
    student_t_ppf,
)

# Two-sided 95% (p = 0.975) and other quantiles as printed in standard t tables (3 decimals).
T_TABLE = [
    (0.975, 1, 12.706),
    (0.975, 2, 4.303),
    (0.975, 3, 3.182),
    (0.975, 4, 2.776),
    (0.975, 5, 2.571),
    (0.975, 9, 2.262),
    (0.975, 29, 2.045),
    (0.975, 120, 1.980),
    (0.95, 10, 1.812),
    (0.995, 5, 4.032),
    (0.9, 3, 1.638),
]


@pytest.mark.parametrize(("p", "df", "expected"), T_TABLE)
def test_t_quantile_matches_printed_table(p, df, expected):
    assert student_t_ppf(p, df) == pytest.approx(expected, abs=6e-4)


@given(st.floats(0.001, 0.999))
def test_t_quantile_df1_is_cauchy(p):
    # df = 1 is the Cauchy distribution: F^{-1}(p) = tan(pi (p - 1/2)).
    assert student_t_ppf(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9, abs=1e-12)


@given(st.floats(0.001, 0.999))
def test_t_quantile_df2_closed_form(p):
    # df = 2: F^{-1}(p) = (2p - 1) / sqrt(2 p (1 - p)).
    expected = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    assert student_t_ppf(p, 2) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("df", [1, 3, 92])
def test_t_quantile_near_one_half_keeps_relative_accuracy(df):
    # Near p = 1/2, t ~ (p - 1/2) / f(0) with the density at 0,
    # f(0) = Gamma((df+1)/2) / (sqrt(df pi) Gamma(df/2)); the next term is O(t^2) ~ 1e-9 relative.
    p = 0.5 + 2.4e-5
    f0 = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    assert student_t_ppf(p, df) == pytest.approx((p - 0.5) / f0, rel=1e-8)


def test_t_quantile_tends_to_normal():
    assert student_t_ppf(0.975, 1e7) == pytest.approx(1.959963984540054, abs=1e-5)


# Two-sided 95% quantiles to 6 decimals (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2).
T_TABLE_6 = [(3, 3.182446), (4, 2.776445), (5, 2.570582), (9, 2.262157), (30, 2.042272)]


@pytest.mark.parametrize(("df", "expected"), T_TABLE_6)
def test_t_quantile_matches_six_decimal_table(df, expected):
    assert student_t_ppf(0.975, df) == pytest.approx(expected, abs=1e-6)


def test_t_quantile_is_antisymmetric():
    for df in (1, 2.5, 7):
        assert student_t_ppf(0.1, df) == pytest.approx(-student_t_ppf(0.9, df), rel=1e-12)
    assert student_t_ppf(0.5, 4) == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: student_t_ppf(1.0, 3), "0 < p < 1"),
        (lambda: student_t_ppf(0.5, 0), "df > 0"),
        (lambda: student_t_ppf(0.5, float("nan")), "df > 0"),
        (lambda: mean_ci([1.0, 2.0], confidence=1.5), "confidence"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_mean_ci_hand_computed():
    # [1, 2, 3]: mean 2, sample sd 1, half-width = t_{0.975,2} / sqrt(3) = 4.302653 / 1.732051.
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.n == 3
    assert ci.mean == pytest.approx(2.0)
    assert ci.half_width == pytest.approx(2.484138, abs=1e-5)
    assert (ci.low, ci.high) == pytest.approx((2.0 - 2.484138, 2.0 + 2.484138), abs=1e-5)
    # [0.50, 0.52, 0.54, 0.56, 0.58]: mean 0.54, squared deviations sum to 0.004,
    # sd = sqrt(0.004 / 4) = 0.0316228, half-width = 2.776445 * 0.0316228 / sqrt(5) = 0.0392649.
    ci = mean_ci([0.50, 0.52, 0.54, 0.56, 0.58])
    assert ci.mean == pytest.approx(0.54)
    assert ci.half_width == pytest.approx(0.0392649, abs=1e-6)


def test_mean_ci_skips_undefined_and_handles_small_n():
    assert mean_ci([]) == MeanCI(None, None, 0)
    assert mean_ci([None, float("nan")]) == MeanCI(None, None, 0)
    single = mean_ci([0.4, None])
    assert single == MeanCI(0.4, None, 1)
    assert not single.excludes_zero
    assert mean_ci([1.0, None, 3.0, float("nan")]).n == 2


def test_paired_difference_constant_shift_has_zero_width():
    control = {0: 0.31, 1: 0.45, 2: 0.27}
    treatment = {s: v + 0.05 for s, v in control.items()}
    ci = paired_difference(treatment, control)
    assert ci.n == 3
    assert ci.mean == pytest.approx(0.05)
    assert ci.half_width == pytest.approx(0.0, abs=1e-12)
    assert ci.excludes_zero


def test_paired_difference_pairs_by_seed_only():
    # Seed 3 has no control run and seed 1's treatment is undefined: one pair is left.
    ci = paired_difference({0: 0.6, 1: None, 3: 0.9}, {0: 0.5, 1: 0.4, 2: 0.1})
    assert ci.n == 1
    assert ci.mean == pytest.approx(0.1)
    assert ci.half_width is None


def test_excludes_zero_both_signs():
    assert mean_ci([-0.3, -0.2, -0.25]).excludes_zero
    assert not mean_ci([-0.3, 0.2, 0.05]).excludes_zero


# ---------------------------------------------------------------------------------------------
# Paired tests, Holm, Friedman and Nemenyi against hand-computed and printed values


def test_paired_t_p_hand_computed():
    # Differences 0.01, -0.01, 0.02: mean 0.0066667, sd 0.0152753, t = 0.755929 on 2 df.
    # With 2 df, P(|T| > t) = 1 - t / sqrt(2 + t^2) (closed form) = 0.528595.
    t = 0.0066667 / (0.0152753 / math.sqrt(3))
    expected = 1 - t / math.sqrt(2 + t * t)
    result = paired_test({0: 0.41, 1: 0.49, 2: 0.47}, {0: 0.40, 1: 0.50, 2: 0.45})
    assert result.p_t == pytest.approx(expected, abs=1e-5)
    assert result.p_t == pytest.approx(0.528595, abs=1e-5)
    assert result.ci == paired_difference({0: 0.41, 1: 0.49, 2: 0.47}, {0: 0.40, 1: 0.50, 2: 0.45})
    assert result.p_wilcoxon is None  # n = 3 < 6


def test_paired_t_p_agrees_with_the_interval():
    # The 95% interval excludes 0 exactly when p < 0.05 (same t distribution, same df).
    control = {s: 0.5 for s in range(5)}
    for shift, spread in ((0.03, 0.02), (0.01, 0.02), (-0.05, 0.03)):
        treatment = {s: 0.5 + shift + spread * (s - 2) / 2 for s in range(5)}
        result = paired_test(treatment, control)
        assert (result.p_t < 0.05) == result.ci.excludes_zero


def test_paired_t_p_degenerate_cases():
    assert paired_test({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6}).p_t == pytest.approx(0.0, abs=1e-9)
    assert paired_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}).p_t == 1.0
    assert paired_test({0: 0.5}, {0: 0.4}).p_t is None


def test_wilcoxon_exact_p_hand_computed():
    # n = 6 differences, all positive: W- = 0; exact two-sided p = 2 / 2^6 = 0.03125.
    control = {s: 0.5 for s in range(6)}
    treatment = {s: 0.5 + 0.01 * (s + 1) for s in range(6)}
    assert paired_test(treatment, control).p_wilcoxon == pytest.approx(2 / 64)
    # One negative difference with the smallest magnitude: W- = 1; P(W <= 1) = 2 / 64 (the
    # subsets {} and {1}), two-sided p = 4 / 64 = 0.0625.
    treatment[0] = 0.49
    assert paired_test(treatment, control).p_wilcoxon == pytest.approx(4 / 64)
    # Five pairs: not reported (its smallest possible p, 2 / 32, is above 0.05).
    assert (
        paired_test({s: 1.0 + s for s in range(5)}, {s: 0.0 for s in range(5)}).p_wilcoxon is None
    )


def test_holm_hand_computed():
    # Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06,
    # adjusted values never decrease along the sorted order).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Capped at 1; a single test is unchanged; the empty family is empty.
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []


def test_holm_rejects_as_the_step_down_procedure():
    # Holm (1979): reject H_(1), H_(2), ... while p_(i) <= alpha / (m - i + 1); stop at the first
    # failure. Here 0.001 <= 0.05/5, 0.012 <= 0.05/4, 0.02 > 0.05/3: two rejections; 0.024
    # would pass its own bound, 0.05/2, but is not rejected after the stop.
    ps = [0.024, 0.012, 0.001, 0.02, 0.3]
    rejected = [p < 0.05 for p in holm(ps)]
    assert rejected == [False, True, True, False, False]


def test_holm_refuses_non_probabilities():
    with pytest.raises(ValueError, match=r"p-values in \[0, 1\]"):
        holm([0.1, 1.5])
    with pytest.raises(ValueError, match=r"p-values in \[0, 1\]"):
        holm([float("nan")])


def test_friedman_hand_computed_without_ties():
    # 4 blocks in which treatment a > b > c: ranks 1, 2, 3 in every block, R = (1, 2, 3).
    # chi2_F = 12 N / (k (k + 1)) [sum R_j^2 - k (k + 1)^2 / 4] = 4 (14 - 12) = 8 (Demšar eq. 3),
    # and with k - 1 = 2 df, p = exp(-chi2 / 2) = exp(-4).
    blocks = [[0.9, 0.5, 0.1], [0.8, 0.7, 0.6], [0.6, 0.4, 0.3], [0.95, 0.9, 0.2]]
    result = friedman(blocks)
    assert result.mean_ranks == pytest.approx([1.0, 2.0, 3.0])
    assert result.statistic == pytest.approx(8.0)
    assert result.p_value == pytest.approx(math.exp(-4.0))
    assert result.n_blocks == 4


def test_friedman_hand_computed_with_ties():
    # Ranks per block (1 = highest): [1, 2.5, 2.5], [2, 1, 3], [1, 2, 3]; R = (4/3, 11/6, 17/6).
    # Rank sums S = (4, 5.5, 8.5); with ties, chi2 = 12 sum (S_j - N (k + 1) / 2)^2
    # / (N k (k + 1) - sum (t^3 - t) / (k - 1)) = 12 (4 + 0.25 + 6.25) / (36 - 6 / 2) = 126 / 33.
    result = friedman([[0.9, 0.5, 0.5], [0.6, 0.7, 0.2], [0.9, 0.8, 0.1]])
    assert result.mean_ranks == pytest.approx([4 / 3, 11 / 6, 17 / 6])
    assert result.statistic == pytest.approx(126 / 33)
    assert result.p_value == pytest.approx(math.exp(-126 / 66))


def test_friedman_all_ties_and_bad_tables():
    assert friedman([[0.5, 0.5, 0.5], [0.2, 0.2, 0.2]])[1:] == (0.0, 1.0, 2)
    with pytest.raises(ValueError, match="at least 2 blocks and 3 treatments"):
        friedman([[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="complete blocks"):
        friedman([[0.1, 0.2, float("nan")], [0.1, 0.2, 0.3]])


# q_0.05 of the Nemenyi test as printed in Demšar (2006), table 5(a), k = 2 .. 10.
NEMENYI_Q = [
    (2, 1.960),
    (3, 2.343),
    (4, 2.569),
    (5, 2.728),
    (6, 2.850),
    (7, 2.949),
    (8, 3.031),
    (9, 3.102),
    (10, 3.164),
]


@pytest.mark.parametrize(("k", "q"), NEMENYI_Q)
def test_nemenyi_critical_difference_matches_printed_table(k, q):
    # With N = k (k + 1) / 6 blocks the square root is 1 and CD = q_0.05. The table truncates
    # some entries (k = 3: 2.3437 is printed 2.343), so agreement is to 1e-3.
    n = k * (k + 1) / 6
    assert nemenyi_critical_difference(k, n) == pytest.approx(q, abs=1e-3)
    # Demšar's worked example: k = 4 classifiers, N = 14 data sets, CD = 2.569 sqrt(20 / 84)
    # = 1.25.
    assert nemenyi_critical_difference(4, 14) == pytest.approx(1.2536, abs=1e-3)


def test_nemenyi_bad_arguments():
    with pytest.raises(ValueError, match="k >= 2"):
        nemenyi_critical_difference(1, 5)
    with pytest.raises(ValueError, match="alpha"):
        nemenyi_critical_difference(3, 5, alpha=0.0)
