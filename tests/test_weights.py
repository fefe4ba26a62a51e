"""Tests for ltweights.weights: counts, schemes (hand values, limits, identities), registry."""

import math
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ltweights import weights as W

FAST = settings(max_examples=30, deadline=None)

# Small training set: 20 examples, 3 labels with 1, 4 and 10 positives.
POSITIVES = [1, 4, 10]
N = 20


def f32(x):
    """The float32 value of a Python float, as the schemes see their beta."""
    return float(np.float32(x))


# ------------------------------------------------------------------------------------ counts


def test_label_counts_by_hand():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0]], np.uint8)
    counts = W.label_counts(labels)
    assert counts.positives.tolist() == [3, 3, 0]
    assert counts.positives.dtype == np.int64
    assert counts.num_examples == 4
    assert counts.negatives.tolist() == [1, 1, 4]


def test_label_counts_accepts_bool_float_and_jax():
    labels = np.array([[True, False], [True, True]])
    for arr in (labels, labels.astype(np.float32), jnp.asarray(labels, jnp.int32)):
        assert W.label_counts(arr).positives.tolist() == [2, 1]


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([1, 0, 1]), "shape"),
        (np.array([[0.5, 1.0]]), "0 and 1"),
        (np.array([[2, 0]]), "0 and 1"),
        (np.array([[-1, 0]]), "0 and 1"),
    ],
)
def test_label_counts_rejects_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        W.label_counts(labels)


def test_accumulator_equals_label_counts():
    rng = np.random.default_rng(0)
    labels = (rng.random((37, 6)) < 0.2).astype(np.uint8)
    acc = W.LabelCountAccumulator()
    for start in range(0, 37, 8):
        acc.update(labels[start : start + 8])
    result = acc.result()
    expected = W.label_counts(labels)
    np.testing.assert_array_equal(result.positives, expected.positives)
    assert result.num_examples == 37


def test_accumulator_errors():
    with pytest.raises(ValueError, match="update"):
        W.LabelCountAccumulator().result()
    acc = W.LabelCountAccumulator().update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="3"):
        acc.update(np.zeros((2, 4)))
    empty = W.LabelCountAccumulator(num_labels=2).result()
    assert empty.positives.tolist() == [0, 0] and empty.num_examples == 0


# -------------------------------------------------------------------------- hand-computed values


def test_none_by_hand():
    pos, neg = W.none(jnp.array(POSITIVES), N)
    np.testing.assert_array_equal(pos, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(neg, [1.0, 1.0, 1.0])


def test_inverse_by_hand():
    pos, neg = W.inverse(jnp.array(POSITIVES), N)
    np.testing.assert_allclose(pos, [19 / 1, 16 / 4, 10 / 10], rtol=1e-6)
    np.testing.assert_array_equal(neg, [1.0, 1.0, 1.0])


def test_inverse_sqrt_by_hand():
    pos, neg = W.inverse_sqrt(jnp.array(POSITIVES), N)
    np.testing.assert_allclose(pos, [math.sqrt(19), 2.0, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(neg, [1.0, 1.0, 1.0])


def test_class_balanced_by_hand():
    b = 0.9
    # c_j = (1 - b) / (1 - b**n): n = 1 -> 1; n = 4 -> 0.1 / 0.3439; n = 10 -> 0.1 / 0.6513215599
    c = [1.0, 0.1 / (1 - 0.9**4), 0.1 / (1 - 0.9**10)]
    expected = [3 * x / sum(c) for x in c]
    pos, neg = W.class_balanced(jnp.array(POSITIVES), N, beta=b)
    np.testing.assert_allclose(pos, expected, rtol=1e-5)
    np.testing.assert_allclose(neg, expected, rtol=1e-5)
    # Rounded by hand: c = [1, 0.290782, 0.153534], sum 1.444316.
    np.testing.assert_allclose(pos, [2.077107, 0.603985, 0.318907], rtol=1e-5)


def test_proposed_by_hand():
    b = 0.9
    # pos_j = (1 - b**n-) / (1 - b**n+) with (n+, n-) = (1, 19), (4, 16), (10, 10)
    expected = [(1 - b**19) / (1 - b), (1 - b**16) / (1 - b**4), 1.0]
    pos, neg = W.proposed(jnp.array(POSITIVES), N, beta=b)
    np.testing.assert_allclose(pos, expected, rtol=1e-5)
    np.testing.assert_allclose(pos[:2], [8.649148, 2.368997], rtol=1e-5)  # rounded by hand
    np.testing.assert_array_equal(neg, [1.0, 1.0, 1.0])


def test_effective_number_limits_and_value():
    np.testing.assert_allclose(W.effective_number(5.0, 0.5), (1 - 0.5**5) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(W.effective_number(7.0, 0.0), 1.0)
    np.testing.assert_allclose(W.effective_number(7.0, 1.0), 7.0)


def test_beta_near_one_keeps_its_digits():
    # Reference in float64 with the plain formula: at beta = 0.9999 float64 keeps ~12 digits,
    # while the plain formula in float32 would have lost most of them.
    b = f32(0.9999)
    positives = np.array([1, 3, 50, 2000])
    n = 100_000
    pos, _ = W.proposed(jnp.array(positives), n, beta=b)
    expected = [(1 - b ** (n - k)) / (1 - b**k) for k in positives]
    np.testing.assert_allclose(pos, expected, rtol=2e-5)
    cb, _ = W.class_balanced(jnp.array(positives), n, beta=b)
    c = np.array([(1 - b) / (1 - b**k) for k in positives])
    np.testing.assert_allclose(cb, 4 * c / c.sum(), rtol=2e-5)


# ------------------------------------------------------------------------------------ identities


def test_proposed_tends_to_none_as_beta_to_zero():
    counts = jnp.array([1, 7, 300, 999])
    pos, neg = W.proposed(counts, 1000, beta=0.0)
    np.testing.assert_array_equal(pos, np.ones(4))
    pos_small, _ = W.proposed(counts, 1000, beta=1e-4)
    np.testing.assert_allclose(pos_small, np.ones(4), atol=2e-4)
    np.testing.assert_array_equal(neg, np.ones(4))


def test_proposed_tends_to_inverse_as_beta_to_one():
    counts = jnp.array([1, 7, 300, 999])
    inverse, _ = W.inverse(counts, 1000)
    exact, _ = W.proposed(counts, 1000, beta=1.0)
    np.testing.assert_allclose(exact, inverse, rtol=1e-6)
    for b, tol in ((1 - 1e-4, 0.06), (1 - 1e-6, 6e-4), (1 - 2**-23, 1e-4)):
        near, _ = W.proposed(counts, 1000, beta=b)
        np.testing.assert_allclose(near, inverse, rtol=tol)


def test_class_balanced_limits():
    counts = jnp.array([1, 4, 10])
    pos, _ = W.class_balanced(counts, N, beta=0.0)
    np.testing.assert_allclose(pos, [1.0, 1.0, 1.0], rtol=1e-6)
    pos, _ = W.class_balanced(counts, N, beta=1.0)  # proportional to 1 / n
    inv = np.array([1.0, 1 / 4, 1 / 10])
    np.testing.assert_allclose(pos, 3 * inv / inv.sum(), rtol=1e-6)


@FAST
@given(
    positives=st.lists(st.integers(0, 10**6), min_size=1, max_size=20),
    beta=st.floats(0.0, 1.0),
)
def test_class_balanced_sums_to_num_labels(positives, beta):
    pos, neg = W.class_balanced(jnp.array(positives), 10**6, beta=beta)
    assert np.all(np.isfinite(pos)) and np.all(pos > 0)
    np.testing.assert_allclose(float(jnp.sum(pos)), len(positives), rtol=1e-5)
    np.testing.assert_array_equal(pos, neg)


@FAST
@given(
    data=st.data(),
    num_examples=st.integers(1, 10**6),
    beta=st.floats(0.0, 1.0),
)
def test_proposed_lies_between_none_and_inverse(data, num_examples, beta):
    positives = data.draw(st.lists(st.integers(0, num_examples), min_size=1, max_size=10))
    counts = jnp.array(positives)
    pos, neg = W.proposed(counts, num_examples, beta=beta)
    inverse, _ = W.inverse(counts, num_examples)
    pos, inverse = np.asarray(pos), np.asarray(inverse)
    assert np.all(np.isfinite(pos)) and np.all(pos > 0)
    lower, upper = np.minimum(1.0, inverse), np.maximum(1.0, inverse)
    assert np.all(pos >= lower * (1 - 1e-5)) and np.all(pos <= upper * (1 + 1e-5))
    np.testing.assert_array_equal(neg, np.ones(len(positives)))


@FAST
@given(data=st.data(), num_examples=st.integers(1, 10**6))
@pytest.mark.parametrize("name", sorted(W.SCHEMES))
def test_every_scheme_is_finite_positive_float32(name, data, num_examples):
    positives = data.draw(st.lists(st.integers(0, num_examples), min_size=1, max_size=10))
    pos, neg = W.SCHEMES[name](jnp.array(positives), num_examples)
    for w in (pos, neg):
        assert w.dtype == jnp.float32 and w.shape == (len(positives),)
        assert np.all(np.isfinite(w)) and np.all(w > 0)


# ----------------------------------------------------------------------------- degenerate labels


def test_labels_without_positives_or_negatives_are_finite():
    # Label 0 has no positives, label 2 no negatives: an absent side counts as one example.
    counts = jnp.array([0, 5, 10])
    inverse, _ = W.inverse(counts, 10)
    np.testing.assert_allclose(inverse, [10 / 1, 5 / 5, 1 / 10], rtol=1e-6)
    for name, fn in W.SCHEMES.items():
        pos, neg = fn(counts, 10)
        assert np.all(np.isfinite(pos)) and np.all(np.isfinite(neg)), name
    proposed, _ = W.proposed(counts, 10, beta=0.5)
    np.testing.assert_allclose(proposed, [(1 - 0.5**10) / 0.5, 1.0, 0.5 / (1 - 0.5**10)], 1e-6)


def test_scheme_weights_warns_on_degenerate_labels():
    counts = W.LabelCounts(positives=np.array([0, 5, 10]), num_examples=10)
    with pytest.warns(UserWarning) as record:
        pos, _ = W.scheme_weights("inverse", counts)
    messages = " | ".join(str(w.message) for w in record)
    assert re.search(r"no positives.*: \[0\]", messages)
    assert re.search(r"no negatives.*: \[2\]", messages)
    assert np.all(np.isfinite(pos))


def test_scheme_weights_silent_on_healthy_counts():
    counts = W.LabelCounts(positives=np.array(POSITIVES), num_examples=N)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pos, _ = W.scheme_weights("proposed", counts, beta=0.9)
    np.testing.assert_allclose(pos, W.proposed(jnp.array(POSITIVES), N, beta=0.9)[0])


# -------------------------------------------------------------------------------------- registry


def test_registry_names():
    assert set(W.SCHEMES) == {"none", "inverse", "inverse_sqrt", "class_balanced", "proposed"}


def test_unknown_scheme_lists_valid_ones():
    counts = W.LabelCounts(np.array(POSITIVES), N)
    with pytest.raises(KeyError, match=r"class_balanced.*inverse.*proposed"):
        W.scheme_weights("effective", counts)


def test_unknown_parameter_lists_valid_ones():
    counts = W.LabelCounts(np.array(POSITIVES), N)
    with pytest.raises(TypeError, match=r"\['gamma'\].*\['beta'\]"):
        W.scheme_weights("proposed", counts, gamma=2.0)
    with pytest.raises(TypeError, match="beta"):
        W.scheme_weights("inverse", counts, beta=0.9)


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan")])
def test_beta_out_of_range(beta):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        W.scheme_weights("class_balanced", W.LabelCounts(np.array(POSITIVES), N), beta=beta)


def test_beta_must_be_scalar_in_registry():
    with pytest.raises(ValueError, match="vmap"):
        W.scheme_weights("proposed", W.LabelCounts(np.array(POSITIVES), N), beta=[0.9, 0.99])


@pytest.mark.parametrize(
    "positives, num_examples, match",
    [
        ([1, -2, 3], 10, "non-negative"),
        ([1, 11], 10, "more positives"),
        ([1, 2], 0, ">= 1"),
        ([[1, 2]], 5, "1-D"),
        ([1.5, 2.0], 5, "whole numbers"),
    ],
)
def test_scheme_weights_rejects_bad_counts(positives, num_examples, match):
    with pytest.raises(ValueError, match=match):
        W.scheme_weights("none", W.LabelCounts(np.array(positives), num_examples))


# ------------------------------------------------------------------------ jit, vmap, gradients


@pytest.mark.parametrize("name", sorted(W.SCHEMES))
def test_jit_equals_eager(name):
    counts = jnp.array([0, 3, 40, 997, 1000])
    eager = W.SCHEMES[name](counts, 1000)
    jitted = jax.jit(W.SCHEMES[name])(counts, 1000)
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_vmap_over_betas_equals_loop():
    counts = jnp.array([1, 3, 40, 900])
    betas = jnp.array([0.0, 0.5, 0.9, 0.999, 0.99999, 1.0])
    for fn in (W.proposed, W.class_balanced):
        stacked, _ = jax.vmap(lambda b, fn=fn: fn(counts, 1000, beta=b))(betas)
        assert stacked.shape == (6, 4)
        for i, b in enumerate(betas):
            np.testing.assert_allclose(stacked[i], fn(counts, 1000, beta=float(b))[0], rtol=1e-6)


def test_vmap_over_count_vectors():
    counts = jnp.array([[1, 9], [5, 5], [2, 8]])
    pos, _ = jax.vmap(lambda c: W.inverse(c, 10))(counts)
    np.testing.assert_allclose(pos, [[9, 1 / 9], [1, 1], [4, 0.25]], rtol=1e-6)


def test_grad_wrt_beta_matches_finite_differences():
    # d pos / d beta of the float64 reference formula, by central differences.
    positives = [2, 30]

    def reference(b):
        return sum((1 - b ** (100 - k)) / (1 - b**k) for k in positives)

    b, h = 0.9, 1e-6
    numeric = (reference(b + h) - reference(b - h)) / (2 * h)
    grad = jax.grad(lambda beta: jnp.sum(W.proposed(jnp.array(positives), 100, beta=beta)[0]))(b)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3)
