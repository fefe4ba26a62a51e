"""Elementwise multi-label losses for long-tailed labels, as pure JAX functions.

(All the losses in one module, as `optax.losses` keeps them; its length is mostly their
formulas, references and runnable examples.)

Every loss takes ``logits`` and ``labels`` of the same shape ``[..., C]`` (labels in [0, 1],
usually multi-hot; bool or integer labels are cast) and returns the elementwise loss with the
logits' shape and dtype; reduction is the caller's (see :func:`per_example_sum` and
:func:`mean_loss`). All of them work under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

Numerics. Losses are written in log space with ``softplus`` / ``log_sigmoid`` (never
``log(sigmoid(x))``), so values and gradients stay finite for float32 logits of +/-1e4 and for
bfloat16 logits. Where a loss needs both ``softplus(-z)`` (= ``-log p``) and ``softplus(z)``
(= ``-log(1 - p)``), both come from one ``log1p(exp(-|z|))`` plus ``max(+-z, 0)``: half the
transcendentals, and no cancellation, so tiny losses keep their relative precision.
Low-precision inputs are computed in float32 and the result cast back.

Scheme weights. ``pos_weight`` and ``neg_weight`` (from :mod:`ltweights.weights`, shape ``[C]``,
a scalar, or anything that broadcasts to the logits' shape without changing it) multiply the
positive term (``y * ...``) and the negative term (``(1 - y) * ...``). They are accepted by
:func:`weighted_sigmoid_bce`, :func:`sigmoid_focal`, :func:`asymmetric` and
:func:`logit_adjusted_bce`. :func:`distribution_balanced` carries its own re-balancing weights
(computed from the label counts) and takes no scheme weights: stacking a scheme on top would
count the imbalance twice.

Checks. Shape and dtype problems raise at trace time with messages naming the shapes involved.
Hyperparameters, weights, priors and counts given as Python or NumPy values (as configs give
them) are range-checked at trace time too: NaN, inf or a value outside the documented range
raises a ValueError naming the parameter, its value and the valid range. ``jax.Array`` values
(traced under ``jit``/``vmap``, e.g. to sweep a hyperparameter) pass through unchecked, as do
labels and logits: those values cannot be seen under ``jit``; call :func:`validate_inputs` once
on the host, outside ``jit``, before training.

Where things are. This module holds the losses and their reductions; the checks above live in
``ltweights._checks`` (which also defines :func:`validate_inputs`, importable from here) and the
shared numerics (the softplus pair, the focusing factors) in ``ltweights._numerics``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ltweights._checks import hyperparameter, per_label, prepare, validate_inputs
from ltweights._numerics import finish, focusing, scaled, softplus_pair

__all__ = [
    "asymmetric",
    "distribution_balanced",
    "logit_adjusted_bce",
    "mean_loss",
    "per_example_sum",
    "sigmoid_focal",
    "validate_inputs",
    "weighted_sigmoid_bce",
]

# Priors are clipped to [_PRIOR_EPS, 1 - _PRIOR_EPS] so that log-odds stay finite (|.| <= 16.1).
_PRIOR_EPS = 1e-7


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def weighted_sigmoid_bce(
    logits: ArrayLike,
    labels: ArrayLike,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
) -> jax.Array:
    """Weighted sigmoid binary cross-entropy, elementwise.

    With ``p = sigmoid(z)``::

        loss = -(w+ * y * log p + w- * (1 - y) * log(1 - p))
             = w+ * y * softplus(-z) + w- * (1 - y) * softplus(z)

    Both softplus terms are built from one ``log1p(exp(-|z|))``, as
    ``softplus(+-z) = max(+-z, 0) + log1p(exp(-|z|))``: one exp and one log1p per element
    instead of two of each, with every part non-negative, so tiny losses keep full relative
    precision (the shorter ``softplus(z) - y * z`` would lose them to cancellation). The
    gradient ``w+ * y * (p - 1) + w- * (1 - y) * p`` uses ``p - 1 = -sigmoid(-z)``, so tiny
    gradients keep their precision too.

    Without weights it equals ``optax.sigmoid_binary_cross_entropy``. ``w+ = pos_weight`` with
    ``w- = 1`` is PyTorch's ``BCEWithLogitsLoss(pos_weight=...)``.

    Accepts scheme weights: yes (``pos_weight``, ``neg_weight``).

    Args:
      logits: [..., C] floating.
      labels: [..., C] in [0, 1].
      pos_weight: weight of the positive term; scalar, [C] or the logits' shape. None means 1.
      neg_weight: weight of the negative term; same shapes. None means 1.

    Returns:
      [..., C] elementwise loss in the logits' dtype.

    Raises:
      ValueError: a NumPy/Python weight that is negative, NaN or inf.

    Examples:
      >>> import numpy as np
      >>> from ltweights import losses
      >>> logits = np.array([[0.0, 2.0], [-1.0, 0.0]], np.float32)
      >>> labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
      >>> np.asarray(losses.weighted_sigmoid_bce(logits, labels), float).round(4)
      array([[0.6931, 2.1269],
             [0.3133, 0.6931]])
      >>> pos_weight = np.array([2.0, 1.0])  # label 0's positive term counts twice
      >>> np.asarray(losses.weighted_sigmoid_bce(logits, labels, pos_weight), float).round(4)
      array([[1.3863, 2.1269],
             [0.3133, 0.6931]])
    """
    name = "weighted_sigmoid_bce"
    z, y, dtype = prepare(name, logits, labels)
    hyperparameter(name, "pos_weight", pos_weight, low=0.0)
    hyperparameter(name, "neg_weight", neg_weight, low=0.0)
    w_pos = per_label(name, "pos_weight", pos_weight, z.shape, z.dtype)
    w_neg = per_label(name, "neg_weight", neg_weight, z.shape, z.dtype)
    softplus_neg, softplus_pos = softplus_pair(z)
    pos_term = scaled(y * softplus_neg, w_pos)
    neg_term = scaled((1.0 - y) * softplus_pos, w_neg)
    return finish(pos_term + neg_term, dtype)


def sigmoid_focal(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 2.0,
    alpha: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
) -> jax.Array:
    """Sigmoid focal loss (Lin et al., ICCV 2017), elementwise, with optional scheme weights.

    With ``p = sigmoid(z)``::

        loss = a+ * w+ * y * (1 - p)**gamma * (-log p)
             + a- * w- * (1 - y) * p**gamma * (-log(1 - p))

    where ``a+ = alpha, a- = 1 - alpha`` (both 1 when ``alpha`` is None). ``-log p =
    softplus(-z)`` and ``-log(1 - p) = softplus(z)`` come from one ``log1p(exp(-|z|))`` (see
    :func:`weighted_sigmoid_bce`); the focusing factors are ``exp(-gamma * softplus(+-z))``,
    finite for any logit, and dropped when ``gamma`` is a static 0. For 0/1 labels this
    equals ``optax.sigmoid_focal_loss``; for soft labels it is the label-linear mix of the two
    terms (optax mixes the probabilities instead). ``gamma = 0`` with ``alpha = None`` gives
    :func:`weighted_sigmoid_bce`.

    Accepts scheme weights: yes (``pos_weight``, ``neg_weight``, multiplied with ``alpha``).

    Args:
      logits: [..., C] floating.
      labels: [..., C] in [0, 1].
      gamma: focusing parameter, finite and >= 0.
      alpha: weight of the positive term in [0, 1], scalar or per-label [C]; the negative term
        gets ``1 - alpha``. None disables it.
      pos_weight, neg_weight: scheme weights, as in :func:`weighted_sigmoid_bce`.

    Returns:
      [..., C] elementwise loss in the logits' dtype.

    Raises:
      ValueError: a static ``gamma`` below 0, NaN or inf; a static ``alpha`` outside [0, 1]
        (which would make a term's weight negative); a negative or non-finite static weight.
        Traced (``jax.Array``) values are not checked.

    Examples:
      >>> import numpy as np
      >>> from ltweights import losses
      >>> logits = np.array([[0.0, 2.0], [-1.0, 0.0]], np.float32)
      >>> labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
      >>> np.asarray(losses.sigmoid_focal(logits, labels, gamma=2.0), float).round(4)
      array([[0.1733, 1.6501],
             [0.0227, 0.1733]])
      >>> np.asarray(losses.sigmoid_focal(logits, labels, gamma=0.0), float).round(4)  # BCE
      array([[0.6931, 2.1269],
             [0.3133, 0.6931]])
    """
    name = "sigmoid_focal"
    z, y, dtype = prepare(name, logits, labels)
    static_gamma = hyperparameter(name, "gamma", gamma, low=0.0)
    hyperparameter(name, "alpha", alpha, low=0.0, high=1.0)
    hyperparameter(name, "pos_weight", pos_weight, low=0.0)
    hyperparameter(name, "neg_weight", neg_weight, low=0.0)
    w_pos = per_label(name, "pos_weight", pos_weight, z.shape, z.dtype)
    w_neg = per_label(name, "neg_weight", neg_weight, z.shape, z.dtype)
    a = per_label(name, "alpha", alpha, z.shape, z.dtype)
    neg_log_p, neg_log_not_p = softplus_pair(z)  # -log p, -log(1 - p)
    pos_term = y * neg_log_p
    neg_term = (1.0 - y) * neg_log_not_p
    if static_gamma != 0.0:
        gamma = jnp.asarray(gamma, z.dtype)
        pos_term = pos_term * jnp.exp(-gamma * neg_log_not_p)  # (1 - p)**gamma
        neg_term = neg_term * jnp.exp(-gamma * neg_log_p)  # p**gamma
    if a is not None:
        pos_term, neg_term = pos_term * a, neg_term * (1.0 - a)
    return finish(scaled(pos_term, w_pos) + scaled(neg_term, w_neg), dtype)


# Over 80 lines for its docstring (formula, reference, ranges); its code is under 40 lines.
def asymmetric(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
) -> jax.Array:
    """Asymmetric loss, ASL (Ridnik et al., ICCV 2021), elementwise.

    With ``p = sigmoid(z)`` and the shifted probability ``p_m = max(p - m, 0)`` (``m = clip``,
    the probability margin, applied to negatives only)::

        L+ = (1 - p)**gamma_pos * log p
        L- = p_m**gamma_neg * log(1 - p_m)
        loss = -(w+ * y * L+ + w- * (1 - y) * L-)

    Easy negatives (``p <= m``) are discarded entirely. ``1 - p_m = min(1, sigmoid(-z) + m)``,
    so ``log(1 - p_m)`` is finite for any logit when ``m > 0`` (it is at least ``log m``); at
    ``m = 0`` it is ``log_sigmoid(-z)``. With ``gamma_pos = gamma_neg = 0`` and ``clip = 0`` this
    is :func:`weighted_sigmoid_bce`. Defaults are the paper's (gamma+ = 0, gamma- = 4, m = 0.05).

    Hyperparameters given as Python (or NumPy) numbers are specialised at trace time, which
    keeps the defaults near the cost of BCE: a zero gamma drops its factor, a whole
    ``gamma_neg`` is an integer power of ``p_m``, and ``m > 0`` evaluates
    ``log(min(1, sigmoid(-z) + m))`` directly. Arrays (e.g. traced values, to sweep under
    ``vmap``) take the general log-space path: ``(1 - p)**g = exp(g * log_sigmoid(-z))``,
    ``p_m**g = exp(g * log p_m)`` and ``log(1 - p_m) = min(0, logaddexp(log_sigmoid(-z),
    log m))``. Both paths agree to float rounding. ``-log p = softplus(-z)`` and
    ``log_sigmoid(-z) = -softplus(z)`` come from one ``log1p(exp(-|z|))`` (see
    :func:`weighted_sigmoid_bce`).

    Accepts scheme weights: yes (``pos_weight``, ``neg_weight``).

    Args:
      logits: [..., C] floating.
      labels: [..., C] in [0, 1].
      gamma_pos, gamma_neg: focusing parameters of the positive / negative term, finite, >= 0.
      clip: probability margin m in [0, 1).
      pos_weight, neg_weight: scheme weights, as in :func:`weighted_sigmoid_bce`.

    Returns:
      [..., C] elementwise loss in the logits' dtype.

    Raises:
      ValueError: a static gamma below 0, NaN or inf, a static clip outside [0, 1), or a
        negative or non-finite static weight. Traced (``jax.Array``) values are not checked.

    Examples:
      >>> import numpy as np
      >>> from ltweights import losses
      >>> logits = np.array([[0.0, 2.0], [-1.0, 0.0]], np.float32)
      >>> labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
      >>> np.asarray(losses.asymmetric(logits, labels), float).round(4)
      array([[6.931e-01, 8.464e-01],
             [6.000e-04, 6.931e-01]])
    """
    name = "asymmetric"
    z, y, dtype = prepare(name, logits, labels)
    static_gamma_pos = hyperparameter(name, "gamma_pos", gamma_pos, low=0.0)
    static_gamma_neg = hyperparameter(name, "gamma_neg", gamma_neg, low=0.0)
    static_clip = hyperparameter(name, "clip", clip, low=0.0, high=1.0, high_open=True)
    hyperparameter(name, "pos_weight", pos_weight, low=0.0)
    hyperparameter(name, "neg_weight", neg_weight, low=0.0)
    w_pos = per_label(name, "pos_weight", pos_weight, z.shape, z.dtype)
    w_neg = per_label(name, "neg_weight", neg_weight, z.shape, z.dtype)
    gamma_pos = jnp.asarray(gamma_pos, z.dtype)
    gamma_neg = jnp.asarray(gamma_neg, z.dtype)
    margin = jnp.asarray(clip, z.dtype)

    # Positive term: (1 - p)**gamma_pos * -log p, with -log p = softplus(-z). The factor stays in
    # log space even for whole gammas: sigmoid(-z)**k would lose its gradient's small p * k
    # part once sigmoid(-z) rounds to 1 (z below about -17 in float32).
    softplus_neg, softplus_pos = softplus_pair(z)  # -log p, -log(1 - p)
    pos_term = softplus_neg
    if static_gamma_pos != 0.0:
        pos_term = jnp.exp(-gamma_pos * softplus_pos) * pos_term

    # Negative term: p_m**gamma_neg * -log(1 - p_m).
    p_m = jnp.maximum(jax.nn.sigmoid(z) - margin, 0.0)
    if static_clip == 0.0:
        log_not_p_m = -softplus_pos
    elif static_clip is not None:
        # 1 - p_m = min(1, (1 - p) + m) >= m > 0, so a plain log is finite; forming 1 - p as
        # sigmoid(-z) (not 1 - sigmoid(z)) keeps its small values for large z.
        log_not_p_m = jnp.log(jnp.minimum(jax.nn.sigmoid(-z) + margin, 1.0))
    else:
        log_not_p_m = jnp.minimum(0.0, jnp.logaddexp(-softplus_pos, jnp.log(margin)))
    focus_neg = focusing(p_m, static_gamma_neg, gamma_neg)
    neg_term = -log_not_p_m if focus_neg is None else focus_neg * -log_not_p_m

    pos_term = scaled(y * pos_term, w_pos)
    neg_term = scaled((1.0 - y) * neg_term, w_neg)
    return finish(pos_term + neg_term, dtype)


# Over 80 lines for its docstring (formula, reference, ranges); its code is under 40 lines.
def distribution_balanced(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    positives: ArrayLike,
    num_examples: ArrayLike,
    alpha: float = 0.1,
    beta: float = 10.0,
    mu: float = 0.3,
    kappa: float = 0.05,
    lam: float = 2.0,
) -> jax.Array:
    """Distribution-balanced loss (Wu et al., ECCV 2020), elementwise.

    Written from the paper's formulas. For example ``i`` with positive labels ``S_i`` and
    training positives ``n_k`` per label:

    1. Re-balanced weighting. Under class-aware re-sampling label k draws each of its examples
       with ``P^C_k = 1/C * 1/n_k``; an example is drawn with ``P^I_i = 1/C * sum_{j in S_i} 1/n_j``
       (label co-occurrence). The weight of every instance-label pair is their ratio::

           r_ik = P^C_k / P^I_i = (1/n_k) / (sum_{j in S_i} 1/n_j)

       defined for positive and negative entries alike (the paper defines it per pair), and
       smoothed: ``r_hat_ik = alpha + sigmoid(beta * (r_ik - mu))``.

    2. Negative-tolerant regularisation. A class-specific bias from the prior
       ``p_k = n_k / N``: ``b_hat_k = -log(1/p_k - 1)``, ``nu_k = kappa * b_hat_k``, and a scale
       ``lam`` on the negative logits whose term is divided by ``lam``::

           loss_ik = r_hat_ik * [ y_ik * log(1 + exp(-(z_ik - nu_k)))
                                  + (1 - y_ik) / lam * log(1 + exp(lam * (z_ik - nu_k))) ]

    Edge cases (documented choices, the paper does not cover them):
      * An example with no positive labels is never drawn by class-aware re-sampling
        (``P^I_i = 0``), so ``r_ik = 0`` and ``r_hat_ik = alpha + sigmoid(-beta * mu)``.
      * A label with no training positives uses ``n_k = 1`` in ``1/n_k``; the prior is computed
        from the count clipped to ``[1, N - 1]`` so that ``b_hat_k`` stays finite.

    Defaults: alpha = 0.1, beta = 10, mu = 0.3, kappa = 0.05, lam = 2, the values commonly
    reported for the paper's multi-label benchmarks; mu in particular is reported differently
    for its two datasets (0.2-0.3 is the range to check), so it is the one most worth tuning
    (it sets where the smoothing's sigmoid is centred).

    The two softplus terms take different arguments (``-(z - nu)`` and ``lam * (z - nu)``), so
    they share one ``log1p(exp(-|.|))`` only when ``lam`` is a static 1.

    Accepts scheme weights: no; the re-balancing weights above take their place.

    Args:
      logits: [..., C] floating.
      labels: [..., C] multi-hot (soft labels enter ``sum_{j in S_i}`` with their value).
      positives: [C] training positive counts ``n_k`` (finite, >= 0).
      num_examples: N, the number of training examples (N >= 2, so that a prior strictly
        between 0 and 1 exists).
      alpha: lift of the smoothed weight, >= 0 (a negative lift could make weights negative).
      beta: steepness of the smoothing sigmoid, >= 0.
      mu: centre of the smoothing sigmoid, any finite value.
      kappa: scale of the class-prior bias ``nu``, >= 0.
      lam: scale of the negative logits (lambda in the paper), > 0 (the term is divided by it).

    All of them must be finite.

    Returns:
      [..., C] elementwise loss in the logits' dtype.

    Raises:
      ValueError: a static (Python/NumPy) hyperparameter, count or ``num_examples`` out of the
        ranges above. Traced (``jax.Array``) values are not checked.

    Examples:
      >>> import numpy as np
      >>> from ltweights import losses
      >>> logits = np.array([[0.0, 2.0], [-1.0, 0.0]], np.float32)
      >>> labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
      >>> loss = losses.distribution_balanced(
      ...     logits, labels, positives=np.array([3, 1]), num_examples=8
      ... )
      >>> np.asarray(loss, float).round(4)
      array([[0.7479, 2.3153],
             [0.0454, 0.7097]])
    """
    name = "distribution_balanced"
    z, y, dtype = prepare(name, logits, labels)
    hyperparameter(name, "positives", positives, low=0.0)
    hyperparameter(name, "num_examples", num_examples, low=2.0)
    hyperparameter(name, "alpha", alpha, low=0.0)
    hyperparameter(name, "beta", beta, low=0.0)
    hyperparameter(name, "mu", mu)
    hyperparameter(name, "kappa", kappa, low=0.0)
    static_lam = hyperparameter(name, "lam", lam, low=0.0, low_open=True)
    positives = jnp.asarray(positives)
    if positives.shape != (z.shape[-1],):
        raise ValueError(
            f"{name}: positives shape {positives.shape} does not match the logits shape "
            f"{z.shape}; pass per-label training counts of shape ({z.shape[-1]},)."
        )
    n = positives.astype(z.dtype)
    big_n = jnp.asarray(num_examples, z.dtype)
    # 1. Re-balanced weights; labels carry no gradient, so neither do the weights.
    inv_freq = 1.0 / jnp.maximum(n, 1.0)
    instance_rate = jnp.sum(y * inv_freq, axis=-1, keepdims=True)  # C * P^I_i
    has_positive = instance_rate > 0
    r = jnp.where(has_positive, inv_freq / jnp.where(has_positive, instance_rate, 1.0), 0.0)
    r_hat = alpha + jax.nn.sigmoid(beta * (r - mu))
    # 2. Negative-tolerant regularisation.
    clipped = jnp.clip(n, 1.0, big_n - 1.0)
    b_hat = jnp.log(clipped) - jnp.log(big_n - clipped)  # = -log(1/p - 1), p = clipped / N
    shifted = z - kappa * b_hat
    if static_lam == 1.0:
        softplus_neg, softplus_pos = softplus_pair(shifted)
        pos_term, neg_term = y * softplus_neg, (1.0 - y) * softplus_pos
    else:
        pos_term = y * jax.nn.softplus(-shifted)
        neg_term = (1.0 - y) / lam * jax.nn.softplus(lam * shifted)
    return finish(r_hat * (pos_term + neg_term), dtype)


def logit_adjusted_bce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    prior: ArrayLike,
    tau: float = 1.0,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
) -> jax.Array:
    """Logit-adjusted binary cross-entropy per label (Menon et al., ICLR 2021), elementwise.

    Menon et al.'s logit-adjusted softmax loss adds ``tau * log(pi_c)`` to the logit of every
    class c. Each label is a two-class problem, "present" with logit ``z`` and prior ``pi``,
    "absent" with logit 0 and prior ``1 - pi``; the adjusted two-class softmax is exactly a
    sigmoid of the difference of the adjusted logits, so the per-label form is::

        z_adj = z + tau * log(pi / (1 - pi))
        loss  = weighted_sigmoid_bce(z_adj, y, pos_weight, neg_weight)

    (rather than ``z + tau * log pi``, which would ignore the prior of the absent class). Train
    on this loss and predict with the raw logits ``z``: they estimate the balanced (prior-free)
    log-odds. The prior is clipped to ``[1e-7, 1 - 1e-7]`` so the adjustment stays finite for a
    label that never (or always) occurs.

    Accepts scheme weights: yes (``pos_weight``, ``neg_weight``), though the adjustment
    already corrects for the prior; the usual setting is none.

    Args:
      logits: [..., C] floating.
      labels: [..., C] in [0, 1].
      prior: training prior ``pi = n+ / N`` in [0, 1], scalar or [C] (e.g.
        ``positives / num_examples``).
      tau: strength of the adjustment, finite and >= 0; 0 gives plain BCE (a negative tau
        would push the logits towards the head labels, the opposite of the method).
      pos_weight, neg_weight: scheme weights, as in :func:`weighted_sigmoid_bce`.

    Returns:
      [..., C] elementwise loss in the logits' dtype (one ``log1p(exp(-|.|))`` per element,
      through :func:`weighted_sigmoid_bce`).

    Raises:
      ValueError: a static ``tau`` below 0, NaN or inf, a static prior outside [0, 1] or NaN,
        or a negative or non-finite static weight. Traced (``jax.Array``) values are not
        checked.

    Examples:
      >>> import numpy as np
      >>> from ltweights import losses
      >>> logits = np.array([[0.0, 2.0], [-1.0, 0.0]], np.float32)
      >>> labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
      >>> prior = np.array([0.5, 0.25])  # label 0: no adjustment; label 1: rarer, pushed up
      >>> np.asarray(losses.logit_adjusted_bce(logits, labels, prior=prior), float).round(4)
      array([[0.6931, 1.2421],
             [0.3133, 1.3863]])
    """
    name = "logit_adjusted_bce"
    z, y, dtype = prepare(name, logits, labels)
    hyperparameter(name, "tau", tau, low=0.0)
    hyperparameter(name, "prior", prior, low=0.0, high=1.0)
    pi = per_label(name, "prior", prior, z.shape, z.dtype)
    pi = jnp.clip(pi, _PRIOR_EPS, 1.0 - _PRIOR_EPS)
    adjusted = z + tau * (jnp.log(pi) - jnp.log1p(-pi))
    return weighted_sigmoid_bce(adjusted, y, pos_weight, neg_weight).astype(dtype)


# --------------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------------


def per_example_sum(loss: ArrayLike) -> jax.Array:
    """Sums an elementwise loss over labels: [..., C] -> [...] (the usual multi-label loss).

    Examples:
      >>> import numpy as np
      >>> from ltweights import losses
      >>> losses.per_example_sum(np.array([[0.5, 0.25], [1.0, 2.0]])).tolist()
      [0.75, 3.0]
    """
    return jnp.sum(jnp.asarray(loss), axis=-1)


def mean_loss(loss: ArrayLike, valid: ArrayLike | None = None) -> jax.Array:
    """Mean of an elementwise loss over every example and label: [..., C] -> scalar.

    ``valid`` ([...], bool) masks padded examples out of the mean (e.g. the zero-padded last
    batch of an evaluation); a batch with no valid example has mean 0, so that it adds nothing
    to a sum of batch means. The mean of :func:`per_example_sum` is ``C * mean_loss``.

    Raises:
      ValueError: ``loss`` has no elements (an empty batch or no labels). Its mean is undefined
        and it is known at trace time, so it is refused rather than returned as NaN (or as a 0
        that would hide an empty split or batch).

    Examples:
      >>> import numpy as np
      >>> from ltweights import losses
      >>> loss = np.array([[0.5, 0.25], [1.0, 2.0]])
      >>> float(losses.mean_loss(loss))
      0.9375
      >>> float(losses.mean_loss(loss, valid=np.array([True, False])))  # row 1 is padding
      0.375
    """
    loss = jnp.asarray(loss)
    if loss.size == 0:
        raise ValueError(
            f"mean_loss: the loss is empty (shape {loss.shape}), so it has no mean; check that "
            "the batch has examples and the label set is not empty."
        )
    if valid is None:
        return jnp.mean(loss)
    valid = jnp.asarray(valid)
    if valid.shape != loss.shape[:-1]:
        raise ValueError(
            f"mean_loss: valid shape {valid.shape} must be the loss shape {loss.shape} "
            "without its label axis."
        )
    weights = valid.astype(loss.dtype)[..., None]
    count = jnp.sum(weights) * loss.shape[-1]
    return jnp.sum(loss * weights) / jnp.maximum(count, 1)
