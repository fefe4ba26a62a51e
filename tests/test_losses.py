"""Tests for ltweights.losses.

References are written independently of the code under test: plain-Python float64 formulas
straight from the papers (``*_ref`` below), hand-computed constants, and optax.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from ltweights import losses as L
from ltweights import weights as W

FAST = settings(max_examples=30, deadline=None)

# ------------------------------------------------------------------ plain-Python references


def sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def bce_ref(z, y, wp=1.0, wn=1.0):
    p = sig(z)
    return -(wp * y * math.log(p) + wn * (1 - y) * math.log(1 - p))


def focal_ref(z, y, gamma, alpha=None, wp=1.0, wn=1.0):
    p = sig(z)
    ap, an = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    return -(
        ap * wp * y * (1 - p) ** gamma * math.log(p)
        + an * wn * (1 - y) * p**gamma * math.log(1 - p)
    )


def asl_ref(z, y, gamma_pos, gamma_neg, clip, wp=1.0, wn=1.0):
    p = sig(z)
    p_m = max(p - clip, 0.0)
    return -(
        wp * y * (1 - p) ** gamma_pos * math.log(p)
        + wn * (1 - y) * p_m**gamma_neg * math.log(1 - p_m)
    )


def db_ref(logits, labels, positives, num_examples, alpha, beta, mu, kappa, lam):
    """Distribution-balanced loss by loops, from the paper's formulas."""
    out = np.zeros(np.shape(logits))
    num_labels = len(positives)
    n = [max(k, 1) for k in positives]
    for i in range(len(logits)):
        instance = sum(1 / n[j] for j in range(num_labels) if labels[i][j] == 1)
        for k in range(num_labels):
            r = (1 / n[k]) / instance if instance > 0 else 0.0
            r_hat = alpha + sig(beta * (r - mu))
            prior = min(max(positives[k], 1), num_examples - 1) / num_examples
            nu = kappa * -math.log(1 / prior - 1)
            z, y = logits[i][k] - nu, labels[i][k]
            out[i, k] = r_hat * (
                y * math.log(1 + math.exp(-z)) + (1 - y) / lam * math.log(1 + math.exp(lam * z))
            )
    return out


def elementwise(ref, logits, labels, **kw):
    """Applies a scalar reference over arrays; per-label kwargs ([C] lists) are indexed."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    out = np.zeros_like(logits)
    for idx in np.ndindex(logits.shape):
        args = {k: (v[idx[-1]] if isinstance(v, list | np.ndarray) else v) for k, v in kw.items()}
        out[idx] = ref(float(logits[idx]), float(labels[idx]), **args)
    return out


RNG = np.random.default_rng(0)
Z = (RNG.standard_normal((4, 5)) * 3).astype(np.float32)
Y = (RNG.random((4, 5)) < 0.4).astype(np.float32)
Y[0] = 0.0  # an example with no positive labels
Y_SOFT = RNG.random((4, 5)).astype(np.float32)
POS_W = np.array([5.0, 0.5, 1.0, 2.0, 9.0], np.float32)
NEG_W = np.array([1.0, 0.8, 1.5, 1.0, 0.3], np.float32)
COUNTS = np.array([3, 40, 0, 7, 100])  # label 2 has no training positives
N_TRAIN = 100  # label 4 has no training negatives
EXTREMES = np.array([-1e4, -1e3, -100.0, -20.0, -3.0, 0.0, 3.0, 20.0, 100.0, 1e3, 1e4], np.float32)

# Every loss as f(logits, labels), with non-trivial parameters and weights.
LOSSES = {
    "bce": lambda z, y: L.weighted_sigmoid_bce(z, y, POS_W[: z.shape[-1]], NEG_W[: z.shape[-1]]),
    "focal": lambda z, y: L.sigmoid_focal(
        z, y, gamma=2.0, alpha=0.25, pos_weight=POS_W[: z.shape[-1]]
    ),
    "asymmetric": lambda z, y: L.asymmetric(z, y, gamma_pos=1.0, gamma_neg=4.0, clip=0.05),
    "asymmetric_no_clip": lambda z, y: L.asymmetric(z, y, gamma_pos=0.0, gamma_neg=2.0, clip=0.0),
    # The defaults (gamma_pos = 0 drops the positive factor, integer gamma_neg, clip > 0).
    "asymmetric_default": lambda z, y: L.asymmetric(
        z, y, pos_weight=POS_W[: z.shape[-1]], neg_weight=NEG_W[: z.shape[-1]]
    ),
    # Non-integer gammas: exp/log powers on the specialised (static) path.
    "asymmetric_fractional": lambda z, y: L.asymmetric(
        z, y, gamma_pos=0.5, gamma_neg=2.5, clip=0.1
    ),
    # Array hyperparameters take the general log-space path.
    "asymmetric_general": lambda z, y: L.asymmetric(
        z, y, gamma_pos=jnp.asarray(1.0), gamma_neg=jnp.asarray(4.0), clip=jnp.asarray(0.05)
    ),
    "distribution_balanced": lambda z, y: L.distribution_balanced(
        z, y, positives=COUNTS[: z.shape[-1]], num_examples=N_TRAIN
    ),
    "logit_adjusted": lambda z, y: L.logit_adjusted_bce(
        z, y, prior=COUNTS[: z.shape[-1]] / N_TRAIN, tau=1.0, neg_weight=NEG_W[: z.shape[-1]]
    ),
}


# ------------------------------------------------------------------------- hand-computed values


def test_hand_values():
    log2 = math.log(2.0)
    z0 = jnp.zeros(1)
    one, zero = jnp.ones(1), jnp.zeros(1)
    np.testing.assert_allclose(L.weighted_sigmoid_bce(z0, one), [log2], rtol=1e-6)
    np.testing.assert_allclose(L.weighted_sigmoid_bce(z0, one, 3.0), [3 * log2], rtol=1e-6)
    np.testing.assert_allclose(L.weighted_sigmoid_bce(z0, zero, 3.0, 0.5), [0.5 * log2], 1e-6)
    # Focal at p = 1/2: (1/2)^2 * log 2, times alpha = 0.25 for a positive.
    np.testing.assert_allclose(L.sigmoid_focal(z0, one), [0.25 * log2], rtol=1e-6)
    np.testing.assert_allclose(L.sigmoid_focal(z0, one, alpha=0.25), [0.0625 * log2], 1e-6)
    np.testing.assert_allclose(L.sigmoid_focal(z0, zero, alpha=0.25), [0.1875 * log2], 1e-6)
    # ASL negative at p = 1/2, m = 0.05: p_m = 0.45, 0.45^4 * -log(0.55) = 0.0245151.
    np.testing.assert_allclose(L.asymmetric(z0, zero), [0.04100625 * 0.5978370], rtol=1e-6)
    # ASL positive with gamma_pos = 0 is -log p.
    np.testing.assert_allclose(L.asymmetric(z0, one), [log2], rtol=1e-6)
    # An easy negative (p = sigmoid(-3) = 0.0474 <= 0.05) is discarded.
    np.testing.assert_array_equal(L.asymmetric(jnp.array([-3.0]), zero), [0.0])
    # Logit adjustment with prior 0.2: z_adj = 0 + log(0.25) = -log 4, loss(y=1) = log(1 + 4).
    la = L.logit_adjusted_bce(z0, one, prior=0.2)
    np.testing.assert_allclose(la, [math.log(5.0)], rtol=1e-6)
    # Extreme logits: the loss of a confident mistake is the logit's size.
    z = jnp.array([1e4, -1e4])
    np.testing.assert_allclose(L.weighted_sigmoid_bce(z, jnp.array([0.0, 1.0])), [1e4, 1e4])
    np.testing.assert_array_equal(L.weighted_sigmoid_bce(z, jnp.array([1.0, 0.0])), [0.0, 0.0])


def test_distribution_balanced_by_hand():
    # Two labels with 1 and 4 training positives, N = 5; one example with both labels.
    # 1/n = (1, 1/4), instance rate = 5/4, r = (4/5, 1/5).
    # r_hat = 0.1 + sigmoid(10 * (r - 0.3)) = (0.1 + sigmoid(5), 0.1 + sigmoid(-1)).
    # priors (1/5, 4/5): b_hat = (-log 4, log 4), nu = 0.05 * b_hat.
    # Logits 0, labels 1: loss_k = r_hat_k * log(1 + exp(nu_k)).
    loss = L.distribution_balanced(
        jnp.zeros((1, 2)), jnp.ones((1, 2)), positives=jnp.array([1, 4]), num_examples=5
    )
    nu = 0.05 * math.log(4.0)
    expected = [
        (0.1 + sig(5.0)) * math.log(1 + math.exp(-nu)),
        (0.1 + sig(-1.0)) * math.log(1 + math.exp(nu)),
    ]
    np.testing.assert_allclose(loss[0], expected, rtol=1e-6)


# ------------------------------------------------------------------- against the references


@pytest.mark.parametrize("labels", [Y, Y_SOFT], ids=["hard", "soft"])
def test_bce_matches_reference(labels):
    got = L.weighted_sigmoid_bce(Z, labels, POS_W, NEG_W)
    np.testing.assert_allclose(got, elementwise(bce_ref, Z, labels, wp=POS_W, wn=NEG_W), 1e-5)


@pytest.mark.parametrize("labels", [Y, Y_SOFT], ids=["hard", "soft"])
def test_bce_equals_optax_without_weights(labels):
    z = np.concatenate([Z.ravel(), EXTREMES])
    y = np.resize(labels.ravel(), z.shape)
    np.testing.assert_allclose(
        L.weighted_sigmoid_bce(z, y), optax.sigmoid_binary_cross_entropy(z, y), rtol=1e-6
    )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25, [0.1, 0.5, 0.9, 0.25, 0.75]])
def test_focal_matches_reference(gamma, alpha):
    got = L.sigmoid_focal(Z, Y_SOFT, gamma=gamma, alpha=alpha, pos_weight=POS_W, neg_weight=NEG_W)
    expected = elementwise(focal_ref, Z, Y_SOFT, gamma=gamma, alpha=alpha, wp=POS_W, wn=NEG_W)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_equals_optax_on_hard_labels(gamma, alpha):
    z = np.concatenate([Z.ravel(), EXTREMES[2:-2]])
    y = np.resize(Y.ravel(), z.shape)
    expected = optax.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma)
    np.testing.assert_allclose(L.sigmoid_focal(z, y, gamma=gamma, alpha=alpha), expected, 1e-5)


@pytest.mark.parametrize(
    "gamma_pos, gamma_neg, clip", [(0.0, 4.0, 0.05), (1.0, 2.0, 0.2), (0.5, 0.0, 0.0)]
)
def test_asymmetric_matches_reference(gamma_pos, gamma_neg, clip):
    kw = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip)
    got = L.asymmetric(Z, Y_SOFT, **kw, pos_weight=POS_W, neg_weight=NEG_W)
    expected = elementwise(asl_ref, Z, Y_SOFT, **kw, wp=POS_W, wn=NEG_W)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "params",
    [
        dict(alpha=0.1, beta=10.0, mu=0.3, kappa=0.05, lam=2.0),
        dict(alpha=0.5, beta=5.0, mu=0.2, kappa=0.3, lam=5.0),
    ],
)
def test_distribution_balanced_matches_reference(params):
    got = L.distribution_balanced(Z, Y, positives=COUNTS, num_examples=N_TRAIN, **params)
    expected = db_ref(Z, Y, COUNTS.tolist(), N_TRAIN, **params)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_logit_adjusted_matches_reference():
    prior = np.array([0.03, 0.4, 0.5, 0.07, 0.9])
    got = L.logit_adjusted_bce(Z, Y_SOFT, prior=prior, tau=1.5, pos_weight=POS_W)
    shift = 1.5 * np.log(prior / (1 - prior))
    expected = elementwise(bce_ref, Z + shift, Y_SOFT, wp=POS_W)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_logit_adjusted_is_the_two_class_adjusted_softmax():
    # Menon et al.: softmax cross-entropy on logits + tau * log(class prior), with the label's
    # two classes (present: z, prior pi; absent: 0, prior 1 - pi).
    prior = np.array([0.03, 0.4, 0.5, 0.07, 0.9])
    tau = 0.7
    two_class = jnp.stack(
        [Z + tau * np.log(prior), np.broadcast_to(tau * np.log(1 - prior), Z.shape)], axis=-1
    )
    targets = jnp.stack([Y, 1 - Y], axis=-1)
    expected = optax.softmax_cross_entropy(two_class, targets)
    got = L.logit_adjusted_bce(Z, Y, prior=prior, tau=tau)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# Logits whose losses are tiny: softplus(-z) ~ exp(-z) for y = 1 (and mirrored for y = 0), down
# to ~1e-37, still a normal float32. A form with cancellation (softplus(z) - y * z) gives 0 here.
TINY_Z = np.linspace(5.0, 85.0, 33).astype(np.float32)


def _softplus64(x):
    """log(1 + exp(x)) in float64, accurate for either sign."""
    x = np.asarray(x, np.float64)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _sigmoid64(x):
    return np.exp(-_softplus64(-np.asarray(x, np.float64)))


def test_bce_keeps_relative_precision_for_tiny_losses_and_gradients():
    z = np.concatenate([TINY_Z, -TINY_Z])
    y = np.concatenate([np.ones_like(TINY_Z), np.zeros_like(TINY_Z)])
    w_pos, w_neg = np.float32(3.0), np.float32(0.5)
    expected = np.where(y == 1, w_pos * _softplus64(-z), w_neg * _softplus64(z))
    got = L.weighted_sigmoid_bce(z, y, w_pos, w_neg)
    assert np.all(expected < 0.1) and np.all(expected > 1.2e-38)  # normal float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
    # d/dz = w+ * y * (p - 1) + w- * (1 - y) * p, tiny here too.
    grad = jax.grad(lambda z: jnp.sum(L.weighted_sigmoid_bce(z, y, w_pos, w_neg)))(jnp.asarray(z))
    expected_grad = np.where(y == 1, -w_pos * _sigmoid64(-z), w_neg * _sigmoid64(z))
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=0)


def test_focal_and_asymmetric_keep_relative_precision_for_tiny_losses():
    z = np.concatenate([TINY_Z[:7], -TINY_Z[:7]])  # |z| <= 20: every value stays normal
    y = np.concatenate([np.ones(7), np.zeros(7)]).astype(np.float32)
    not_p, p = _sigmoid64(-z), _sigmoid64(z)
    pos_loss, neg_loss = _softplus64(-z), _softplus64(z)
    focal = np.where(y == 1, not_p**2 * pos_loss, p**2 * neg_loss)
    np.testing.assert_allclose(L.sigmoid_focal(z, y, gamma=2.0), focal, rtol=1e-5, atol=0)
    asl = np.where(y == 1, not_p * pos_loss, p**3 * neg_loss)
    got = L.asymmetric(z, y, gamma_pos=1.0, gamma_neg=3.0, clip=0.0)
    np.testing.assert_allclose(got, asl, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_at_zero_logits_match_finite_differences(name):
    # |z| has a kink at 0; the softplus pair's derivative must not see it.
    with jax.enable_x64(True):
        z = jnp.asarray([[0.0, 0.0, 0.0, 1.5, -0.5], [0.0, 2.0, 0.0, 0.0, 0.0]], jnp.float64)
        y = jnp.asarray(GRAD_Y, jnp.float64)
        if name == "distribution_balanced":
            y = jnp.round(y)
        check_grads(
            lambda z: jnp.sum(LOSSES[name](z, y)), (z,), order=1, modes=("rev", "fwd"), eps=1e-5
        )


def test_bce_gradient_is_sigmoid_minus_label_form():
    z = np.concatenate([Z.ravel(), EXTREMES, np.zeros(3, np.float32)])
    y = np.resize(Y_SOFT.ravel(), z.shape)
    w_pos, w_neg = np.resize(POS_W, z.shape), np.resize(NEG_W, z.shape)
    grad = jax.grad(lambda z: jnp.sum(L.weighted_sigmoid_bce(z, y, w_pos, w_neg)))(jnp.asarray(z))
    p = _sigmoid64(z)
    expected = w_pos * y * (p - 1.0) + w_neg * (1.0 - y) * p
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------ identities


def test_focal_gamma_zero_is_bce():
    got = L.sigmoid_focal(Z, Y_SOFT, gamma=0.0, pos_weight=POS_W, neg_weight=NEG_W)
    np.testing.assert_allclose(got, L.weighted_sigmoid_bce(Z, Y_SOFT, POS_W, NEG_W), rtol=1e-6)


def test_asymmetric_gamma_zero_clip_zero_is_bce():
    z = np.concatenate([Z.ravel(), EXTREMES])
    y = np.resize(Y.ravel(), z.shape)
    got = L.asymmetric(z, y, gamma_pos=0.0, gamma_neg=0.0, clip=0.0, pos_weight=2.0)
    np.testing.assert_allclose(got, L.weighted_sigmoid_bce(z, y, 2.0), rtol=1e-6)
    grads = jax.grad(lambda z: L.asymmetric(z, y, gamma_neg=0.0, clip=0.0).sum())(z)
    np.testing.assert_allclose(grads, jax.grad(lambda z: L.weighted_sigmoid_bce(z, y).sum())(z))


# (gamma_pos, gamma_neg, clip) covering every specialised branch: zero / whole / fractional gammas,
# clip = 0 and clip > 0.
ASL_PARAMS = [
    (0.0, 4.0, 0.05),
    (1.0, 2.0, 0.2),
    (2.0, 1.0, 0.0),
    (0.0, 0.0, 0.05),
    (0.5, 2.5, 0.1),
    (3.0, 0.5, 0.0),
]
# Logits across the whole range, none exactly at a kink sigmoid(z) = clip.
ASL_Z = np.concatenate([np.linspace(-30.0, 30.0, 37), EXTREMES[[0, 1, 2, 3, 7, 8, 9, 10]]])
ASL_Y = np.resize(np.array([0.0, 1.0, 0.3, 0.0, 1.0, 0.8]), ASL_Z.shape)


def _asl_value_and_grad(z, y, *hyper):
    def total(z):
        gp, gn, m = hyper
        loss = L.asymmetric(z, y, gamma_pos=gp, gamma_neg=gn, clip=m, pos_weight=2.0)
        return jnp.sum(loss), loss

    (_, loss), grad = jax.value_and_grad(total, has_aux=True)(z)
    return loss, grad


@pytest.mark.parametrize("x64", [True, False], ids=["float64", "float32"])
@pytest.mark.parametrize("gamma_pos, gamma_neg, clip", ASL_PARAMS)
def test_asymmetric_specialised_path_equals_general_path(gamma_pos, gamma_neg, clip, x64):
    # Python-number hyperparameters are specialised at trace time; the same values passed as
    # traced arrays through jit force the general log-space path. Values and gradients agree.
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        z, y = jnp.asarray(ASL_Z, dtype), jnp.asarray(ASL_Y, dtype)
        fast = jax.jit(lambda z, y: _asl_value_and_grad(z, y, gamma_pos, gamma_neg, clip))(z, y)
        hyper = [jnp.asarray(v, dtype) for v in (gamma_pos, gamma_neg, clip)]
        general = jax.jit(_asl_value_and_grad)(z, y, *hyper)
        rtol, atol = (1e-12, 1e-15) if x64 else (2e-6, 1e-7)
        for got, want, what in zip(fast, general, ["loss", "grad"], strict=True):
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)
        # Both are the paper's formula (float64 plain-Python reference, where its log(1 - p)
        # does not yet lose digits to cancellation).
        if x64:
            inside = np.abs(ASL_Z) <= 8
            expected = elementwise(
                asl_ref,
                ASL_Z[inside],
                ASL_Y[inside],
                gamma_pos=gamma_pos,
                gamma_neg=gamma_neg,
                clip=clip,
                wp=2.0,
            )
            np.testing.assert_allclose(fast[0][inside], expected, rtol=1e-10, atol=1e-15)


def test_asymmetric_vmaps_over_traced_hyperparameters():
    clips = jnp.array([0.0, 0.05, 0.2])
    gammas = jnp.array([0.0, 2.0, 4.0])
    fn = lambda g, m: L.asymmetric(Z, Y_SOFT, gamma_pos=1.0, gamma_neg=g, clip=m)  # noqa: E731
    batched = jax.vmap(fn)(gammas, clips)
    for i in range(3):
        static = fn(float(gammas[i]), float(clips[i]))
        np.testing.assert_allclose(batched[i], static, rtol=2e-6, atol=1e-7)


NAN, INF = float("nan"), float("inf")
PRIOR = COUNTS / N_TRAIN


def _call(loss, **kwargs):
    """Calls a loss on (Z, Y) with the arguments it requires plus ``kwargs``."""
    required = {
        "distribution_balanced": dict(positives=COUNTS, num_examples=N_TRAIN),
        "logit_adjusted_bce": dict(prior=PRIOR),
    }.get(loss, {})
    return getattr(L, loss)(Z, Y, **(required | kwargs))


# Every static hyperparameter out of its range (and NaN / inf), with the message's parameter,
# value and range. Each of these was accepted before the checks existed.
BAD_HYPERPARAMETERS = [
    ("sigmoid_focal", dict(gamma=-1.0), r"gamma must be a finite number >= 0, got -1\.0"),
    ("sigmoid_focal", dict(gamma=NAN), r"gamma must be a finite number >= 0, got nan"),
    ("sigmoid_focal", dict(gamma=INF), r"gamma must be a finite number >= 0, got inf"),
    ("sigmoid_focal", dict(alpha=2.0), r"alpha must be a finite number in \[0, 1\], got 2\.0"),
    ("sigmoid_focal", dict(alpha=-0.1), r"alpha must be a finite number in \[0, 1\], got -0\.1"),
    ("sigmoid_focal", dict(alpha=NAN), r"alpha must be a finite number in \[0, 1\], got nan"),
    (
        "sigmoid_focal",
        dict(alpha=[0.1, 0.5, 1.5, 0.2, 0.3]),
        r"alpha must be a finite number in \[0, 1\], got an array with values in \[0\.1, 1\.5\]",
    ),
    ("sigmoid_focal", dict(pos_weight=-1.0), r"pos_weight must be a finite number >= 0, got -1"),
    ("asymmetric", dict(gamma_pos=-1.0), r"gamma_pos must be a finite number >= 0, got -1\.0"),
    ("asymmetric", dict(gamma_neg=-0.5), r"gamma_neg must be a finite number >= 0, got -0\.5"),
    ("asymmetric", dict(gamma_neg=NAN), r"gamma_neg must be a finite number >= 0, got nan"),
    ("asymmetric", dict(gamma_neg=INF), r"gamma_neg must be a finite number >= 0, got inf"),
    ("asymmetric", dict(clip=1.0), r"clip must be a finite number in \[0, 1\), got 1\.0"),
    ("asymmetric", dict(clip=-0.1), r"clip must be a finite number in \[0, 1\), got -0\.1"),
    ("asymmetric", dict(clip=NAN), r"clip must be a finite number in \[0, 1\), got nan"),
    ("asymmetric", dict(neg_weight=np.array([1.0, NAN])[[0, 0, 0, 0, 1]]), "neg_weight.*NaN"),
    ("distribution_balanced", dict(lam=0.0), r"lam must be a finite number > 0, got 0\.0"),
    ("distribution_balanced", dict(lam=-1.0), r"lam must be a finite number > 0, got -1\.0"),
    ("distribution_balanced", dict(lam=NAN), r"lam must be a finite number > 0, got nan"),
    ("distribution_balanced", dict(num_examples=0), r"num_examples .* >= 2, got 0\.0"),
    ("distribution_balanced", dict(num_examples=1), r"num_examples .* >= 2, got 1\.0"),
    ("distribution_balanced", dict(num_examples=INF), r"num_examples .* >= 2, got inf"),
    ("distribution_balanced", dict(alpha=-0.5), r"alpha must be a finite number >= 0, got -0\.5"),
    ("distribution_balanced", dict(beta=-1.0), r"beta must be a finite number >= 0, got -1\.0"),
    ("distribution_balanced", dict(mu=NAN), r"mu must be a finite number \(any real value\)"),
    ("distribution_balanced", dict(kappa=INF), r"kappa must be a finite number >= 0, got inf"),
    ("distribution_balanced", dict(positives=COUNTS - 5), r"positives .* >= 0, got an array"),
    ("logit_adjusted_bce", dict(tau=NAN), r"tau must be a finite number >= 0, got nan"),
    ("logit_adjusted_bce", dict(tau=-1.0), r"tau must be a finite number >= 0, got -1\.0"),
    ("logit_adjusted_bce", dict(prior=PRIOR + 0.5), r"prior must be a finite number in \[0, 1\]"),
    ("logit_adjusted_bce", dict(prior=NAN), r"prior must be a finite number in \[0, 1\], got nan"),
    ("weighted_sigmoid_bce", dict(pos_weight=-2.0), r"pos_weight .* >= 0, got -2\.0"),
    ("weighted_sigmoid_bce", dict(neg_weight=INF), r"neg_weight .* >= 0, got inf"),
    ("weighted_sigmoid_bce", dict(pos_weight=-POS_W), r"pos_weight .* values in \[-9, -0\.5\]"),
]


@pytest.mark.parametrize("loss, kwargs, match", BAD_HYPERPARAMETERS)
def test_static_hyperparameters_are_range_checked(loss, kwargs, match):
    with pytest.raises(ValueError, match=f"^{loss}: {match}"):
        _call(loss, **kwargs)
    with pytest.raises(ValueError, match=match):  # at trace time, under jit too
        jax.jit(lambda z, y: _call(loss, **kwargs))(Z, Y)


def test_non_numeric_hyperparameter_is_a_type_error():
    with pytest.raises(TypeError, match="gamma must be a real number"):
        L.sigmoid_focal(Z, Y, gamma="2")
    with pytest.raises(TypeError, match="clip must be a real number"):
        L.asymmetric(Z, Y, clip=True)


@pytest.mark.parametrize(
    "loss, kwargs",
    [
        ("sigmoid_focal", dict(gamma=0, alpha=0.0)),
        ("sigmoid_focal", dict(gamma=np.float32(2.0), alpha=1.0)),
        ("sigmoid_focal", dict(alpha=np.array([0.0, 1.0, 0.5, 0.25, 1.0]))),
        ("asymmetric", dict(gamma_pos=np.int64(1), gamma_neg=0.0, clip=0.0)),
        ("distribution_balanced", dict(num_examples=2, positives=COUNTS.clip(0, 2), lam=1e-3)),
        ("distribution_balanced", dict(alpha=0.0, beta=0.0, mu=-3.0, kappa=0.0, lam=1.0)),
        ("logit_adjusted_bce", dict(tau=0, prior=np.array([0.0, 1.0, 0.5, 0.0, 1.0]))),
        ("weighted_sigmoid_bce", dict(pos_weight=0.0, neg_weight=np.zeros(5))),
    ],
)
def test_boundary_hyperparameters_are_accepted(loss, kwargs):
    value = np.asarray(_call(loss, **kwargs))
    assert np.isfinite(value).all() and (value >= 0).all()


def test_traced_hyperparameters_pass_through_jit_and_vmap():
    # Traced values cannot be range-checked; they must keep working (e.g. to sweep a
    # hyperparameter under vmap) and agree with the same static values.
    cases = {
        "sigmoid_focal": (
            lambda g, a: L.sigmoid_focal(Z, Y_SOFT, gamma=g, alpha=a, pos_weight=POS_W),
            (jnp.array([0.0, 0.5, 2.0]), jnp.array([0.25, 0.5, 1.0])),
        ),
        "distribution_balanced": (
            lambda lam, kappa, n: L.distribution_balanced(
                Z, Y, positives=COUNTS, num_examples=n, lam=lam, kappa=kappa, alpha=kappa
            ),
            (jnp.array([1.0, 2.0, 5.0]), jnp.array([0.0, 0.05, 0.3]), jnp.array([100, 150, 400])),
        ),
        "logit_adjusted_bce": (
            lambda tau, prior: L.logit_adjusted_bce(Z, Y_SOFT, prior=prior, tau=tau),
            (jnp.array([0.0, 1.0, 2.5]), jnp.stack([PRIOR, PRIOR / 2, PRIOR**2])),
        ),
        "weighted_sigmoid_bce": (
            lambda w: L.weighted_sigmoid_bce(Z, Y_SOFT, w, 2.0 * w),
            (jnp.stack([POS_W, NEG_W, jnp.ones(5)]),),
        ),
    }
    for name, (fn, batches) in cases.items():
        batched = jax.jit(jax.vmap(fn))(*batches)
        for i in range(3):
            static = [np.asarray(b[i]) for b in batches]  # NumPy values: checked at trace time
            np.testing.assert_allclose(batched[i], fn(*static), rtol=2e-6, atol=1e-7, err_msg=name)
    # A traced out-of-range value is not checked (it cannot be); it runs without an error.
    jax.jit(lambda g: L.sigmoid_focal(Z, Y, gamma=g))(jnp.asarray(-1.0))


def test_distribution_balanced_reduces_to_scaled_bce():
    # beta = 0 makes r_hat = alpha + 1/2 everywhere; kappa = 0 drops the bias; lam = 1 the scale.
    got = L.distribution_balanced(
        Z, Y, positives=COUNTS, num_examples=N_TRAIN, alpha=0.1, beta=0.0, kappa=0.0, lam=1.0
    )
    np.testing.assert_allclose(got, 0.6 * L.weighted_sigmoid_bce(Z, Y), rtol=1e-6)


def test_distribution_balanced_single_positive_has_unit_ratio():
    # With one positive label j, r_ij = 1 for that label whatever its count.
    y = jnp.array([[0.0, 1.0, 0.0]])
    loss = L.distribution_balanced(
        jnp.zeros((1, 3)), y, positives=jnp.array([10, 2, 10]), num_examples=20, kappa=0.0
    )
    r_hat = 0.1 + sig(10 * (1 - 0.3))
    np.testing.assert_allclose(loss[0, 1], r_hat * math.log(2.0), rtol=1e-6)


def test_logit_adjusted_tau_zero_is_bce():
    got = L.logit_adjusted_bce(Z, Y, prior=COUNTS / N_TRAIN, tau=0.0, pos_weight=POS_W)
    np.testing.assert_allclose(got, L.weighted_sigmoid_bce(Z, Y, POS_W), rtol=1e-6)


def test_logit_adjusted_prior_zero_and_one_stay_finite():
    loss = L.logit_adjusted_bce(Z, Y, prior=np.array([0.0, 1.0, 0.5, 0.0, 1.0]))
    assert np.all(np.isfinite(loss))


# -------------------------------------------------------------------------------- errors (trace)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_shape_mismatch_names_both_shapes_under_jit(name):
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 3\)"):
        jax.jit(LOSSES[name])(jnp.zeros((4, 5)), jnp.zeros((4, 3)))


def test_integer_logits_rejected():
    with pytest.raises(TypeError, match="floating"):
        L.weighted_sigmoid_bce(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3)))


def test_bad_weight_shape_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4,\).*\(2, 3\)"):
        L.weighted_sigmoid_bce(jnp.zeros((2, 3)), jnp.zeros((2, 3)), pos_weight=jnp.ones(4))
    with pytest.raises(ValueError, match=r"\(3, 1\).*\(2, 3\)"):
        L.sigmoid_focal(jnp.zeros((2, 3)), jnp.zeros((2, 3)), alpha=jnp.ones((3, 1)) * 0.5)


def test_distribution_balanced_counts_shape_checked():
    with pytest.raises(ValueError, match=r"\(4,\).*\(2, 3\)"):
        L.distribution_balanced(
            jnp.zeros((2, 3)), jnp.zeros((2, 3)), positives=jnp.ones(4), num_examples=10
        )


def test_accepted_label_dtypes():
    z = jnp.asarray(Z)
    expected = L.weighted_sigmoid_bce(z, Y)
    for labels in (Y.astype(bool), Y.astype(np.uint8), Y.astype(jnp.bfloat16)):
        np.testing.assert_allclose(L.weighted_sigmoid_bce(z, labels), expected, rtol=1e-6)


# ------------------------------------------------------------------------- host-side validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(labels=np.array([[0.0, 2.0]])), r"\[0, 1\]"),
        (dict(labels=np.array([[0.0, -1.0]])), r"\[0, 1\]"),
        (dict(labels=np.array([[0.0, np.nan]])), "NaN"),
        (dict(labels=np.zeros((2, 2)), logits=np.zeros((2, 3))), r"\(2, 3\).*\(2, 2\)"),
        (dict(labels=np.zeros((1, 2)), logits=np.array([[0.0, np.inf]])), "inf"),
        (dict(labels=np.zeros((1, 2)), counts=W.LabelCounts(np.array([1, -1]), 5)), "negative"),
        (dict(labels=np.zeros((1, 2)), counts=W.LabelCounts(np.array([1, 1, 1]), 5)), "labels"),
        (dict(labels=np.zeros((1, 2)), pos_weight=np.array([1.0, -1.0])), "non-negative"),
        (dict(labels=np.zeros((1, 2)), neg_weight=np.ones(3)), "broadcast"),
        (dict(labels=np.zeros((1, 2)), prior=np.array([0.5, 1.5])), r"\[0, 1\]"),
    ],
)
def test_validate_inputs_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.validate_inputs(**kwargs)


def test_validate_inputs_accepts_good_inputs():
    L.validate_inputs(
        Y,
        logits=Z,
        counts=W.LabelCounts(COUNTS, N_TRAIN),
        pos_weight=POS_W,
        neg_weight=1.0,
        prior=COUNTS / N_TRAIN,
    )
    L.validate_inputs(Y.astype(bool))


def test_validate_inputs_refuses_traced_values():
    with pytest.raises(TypeError, match=r"outside jax\.jit"):
        jax.jit(lambda y: L.validate_inputs(y))(jnp.asarray(Y))


# -------------------------------------------------------------------- gradients, jit, vmap


# Points away from the asymmetric loss's kink at sigmoid(z) = clip (z = -2.94 for clip 0.05).
GRAD_Z = np.array([[-2.0, -0.7, 0.3, 1.9, 4.0], [3.1, -1.2, 0.05, -4.5, 0.8]])
GRAD_Y = np.array([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.25, 1.0, 0.0]])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_match_finite_differences(name):
    with jax.enable_x64(True):
        z, y = jnp.asarray(GRAD_Z, jnp.float64), jnp.asarray(GRAD_Y, jnp.float64)
        if name == "distribution_balanced":
            y = jnp.round(y)

        def total(logits, fn=LOSSES[name]):
            return jnp.sum(fn(logits, y))

        assert total(z).dtype == jnp.float64  # the check really runs in float64
        check_grads(jax.jit(total), (z,), order=1, modes=("rev",), eps=1e-4, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_jit_equals_eager(name):
    eager = LOSSES[name](Z, Y)
    jitted = jax.jit(LOSSES[name])(Z, Y)
    assert eager.shape == Z.shape and eager.dtype == jnp.float32
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)


def test_vmap_over_stack_of_weight_vectors():
    stack = jnp.stack([POS_W, NEG_W, jnp.ones(5), 2 * POS_W])
    losses = {
        "bce": lambda w: L.weighted_sigmoid_bce(Z, Y, w, w[::-1]),
        "focal": lambda w: L.sigmoid_focal(Z, Y, pos_weight=w, neg_weight=w[::-1]),
        "asymmetric": lambda w: L.asymmetric(Z, Y, pos_weight=w, neg_weight=w[::-1]),
        "logit_adjusted": lambda w: L.logit_adjusted_bce(Z, Y, prior=0.3, pos_weight=w),
    }
    for name, fn in losses.items():
        batched = jax.vmap(fn)(stack)
        assert batched.shape == (4, *Z.shape), name
        for i in range(4):
            np.testing.assert_allclose(batched[i], fn(stack[i]), rtol=1e-6, err_msg=name)


def test_vmap_over_betas_through_scheme_and_loss():
    betas = jnp.array([0.0, 0.9, 0.999, 1.0])

    def mean_bce(beta):
        pos, neg = W.proposed(COUNTS, N_TRAIN, beta=beta)
        return L.mean_loss(L.weighted_sigmoid_bce(Z, Y, pos, neg))

    batched = jax.vmap(mean_bce)(betas)
    single = jax.jit(mean_bce)
    np.testing.assert_allclose(batched, [single(b) for b in betas], rtol=1e-6)
    # beta = 0 is the unweighted loss, beta = 1 the inverse-frequency one.
    np.testing.assert_allclose(batched[0], jnp.mean(L.weighted_sigmoid_bce(Z, Y)), rtol=1e-6)
    inv, _ = W.inverse(COUNTS, N_TRAIN)
    np.testing.assert_allclose(batched[-1], jnp.mean(L.weighted_sigmoid_bce(Z, Y, inv)), 1e-6)
    assert np.all(np.isfinite(jax.jit(jax.vmap(jax.grad(mean_bce)))(betas[1:3])))


def test_distribution_balanced_vmaps_over_counts():
    counts = jnp.stack([COUNTS, COUNTS[::-1], jnp.full(5, 50)])
    fn = lambda c: L.distribution_balanced(Z, Y, positives=c, num_examples=N_TRAIN)  # noqa: E731
    batched = jax.vmap(fn)(counts)
    for i in range(3):
        np.testing.assert_allclose(batched[i], fn(counts[i]), rtol=1e-6)


# --------------------------------------------------------------------- extreme logits, dtypes


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_extreme_logits_finite_values_and_grads(name, dtype):
    z = jnp.asarray(np.tile(EXTREMES, (2, 1))[:, :10].reshape(4, 5), dtype)
    y = jnp.asarray(np.array([[0, 1, 0, 1, 1], [1, 0, 1, 0, 0]] * 2, np.float32))
    fn = LOSSES[name]
    value = fn(z, y)
    grad = jax.grad(lambda z: jnp.sum(fn(z, y).astype(jnp.float32)))(z)
    assert value.dtype == dtype and grad.dtype == dtype
    assert np.all(np.isfinite(np.asarray(value, np.float32)))
    assert np.all(np.isfinite(np.asarray(grad, np.float32)))
    # Every per-element gradient of these losses is bounded by its weight (|dL/dz| <= max w).
    assert np.all(np.abs(np.asarray(grad, np.float32)) <= 20.0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bfloat16_matches_float32(name):
    z16 = jnp.asarray(Z, jnp.bfloat16)
    z32 = z16.astype(jnp.float32)  # same values: only the output rounding differs
    got = LOSSES[name](z16, Y).astype(jnp.float32)
    np.testing.assert_allclose(got, LOSSES[name](z32, Y), rtol=1e-2, atol=1e-3)


LOGIT = st.one_of(st.sampled_from([float(x) for x in EXTREMES]), st.floats(-60.0, 60.0))


@FAST
@given(
    shape=st.sampled_from([(1,), (2, 1, 4)]),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
    soft=st.booleans(),
    data=st.data(),
)
def test_property_finite_nonnegative(shape, dtype, soft, data):
    size = int(np.prod(shape))
    z = np.array(data.draw(st.lists(LOGIT, min_size=size, max_size=size)), np.float32)
    label = st.floats(0.0, 1.0) if soft else st.sampled_from([0.0, 1.0])
    y = np.array(data.draw(st.lists(label, min_size=size, max_size=size)), np.float32)
    z, y = jnp.asarray(z.reshape(shape), dtype), jnp.asarray(y.reshape(shape))
    for name, fn in LOSSES.items():
        if name == "distribution_balanced":
            y_used = jnp.round(y)
        else:
            y_used = y
        value, grad = _value_and_grad(fn)(z, y_used)
        assert value.shape == shape and value.dtype == dtype, name
        value, grad = np.asarray(value, np.float32), np.asarray(grad, np.float32)
        assert np.all(np.isfinite(value)) and np.all(value >= 0), name
        assert np.all(np.isfinite(grad)), name


_VG_CACHE = {}


def _value_and_grad(fn):
    """jit(value, grad) of an elementwise loss, cached per loss to keep the property test fast."""
    if fn not in _VG_CACHE:

        def value_and_grad(z, y):
            value = fn(z, y)
            grad = jax.grad(lambda z: jnp.sum(fn(z, y).astype(jnp.float32)))(z)
            return value, grad

        _VG_CACHE[fn] = jax.jit(value_and_grad)
    return _VG_CACHE[fn]


# ----------------------------------------------------------------------------------- reductions


def test_reductions_by_hand():
    loss = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(L.per_example_sum(loss), [6.0, 15.0])
    np.testing.assert_allclose(L.mean_loss(loss), 21.0 / 6)
    np.testing.assert_allclose(L.mean_loss(loss, valid=jnp.array([True, False])), 2.0)
    np.testing.assert_allclose(L.mean_loss(loss, valid=jnp.array([False, False])), 0.0)
    with pytest.raises(ValueError, match="valid"):
        L.mean_loss(loss, valid=jnp.ones(3, bool))


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0,)])
def test_mean_loss_of_an_empty_loss_is_an_error(shape):
    with pytest.raises(
        ValueError, match=r"mean_loss: the loss is empty \(shape " + re.escape(str(shape))
    ):
        L.mean_loss(jnp.zeros(shape))
    with pytest.raises(ValueError, match="empty"):  # at trace time
        jax.jit(L.mean_loss)(jnp.zeros(shape))
    if len(shape) == 2:
        with pytest.raises(ValueError, match="empty"):
            L.mean_loss(jnp.zeros(shape), valid=jnp.ones(shape[0], bool))
