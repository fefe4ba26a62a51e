"""Tests of experiments.stats against printed t tables, closed forms and hand-computed intervals.

The quantile comes from SciPy; the references here are independent of it: values copied from
printed t tables and the closed forms of the t distribution with 1 and 2 degrees of freedom."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.stats import MeanCI, mean_ci, paired_difference, student_t_ppf

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
