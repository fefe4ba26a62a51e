"""Label statistics and per-label weighting schemes for long-tailed multi-label data.

Setting: C labels, each an independent sigmoid problem, N training examples. Label ``j`` has
``n+_j`` positives and ``n-_j = N - n+_j`` negatives. A *scheme* maps these counts to two
per-label vectors, the weight of the positive term and the weight of the negative term of the
binary cross-entropy::

    loss_ij = -(pos_j * y_ij * log p_ij + neg_j * (1 - y_ij) * log(1 - p_ij))

Every scheme is a pure function ``(positives [C], num_examples, **params) -> (pos [C], neg [C])``
returning float32 arrays; it works under ``jax.jit``, ``jax.vmap`` (for example over a stack of
betas) and ``jax.grad``. The host-side entry point :func:`scheme_weights` validates the counts,
warns about degenerate labels and looks schemes up by name in :data:`SCHEMES`.

Degenerate labels. A label with no positives (or no negatives) in the training data would give
an infinite or NaN weight in the ratio formulas below. Every scheme therefore counts an absent
side as one example, ``n+_j <- max(n+_j, 1)`` and ``n-_j <- max(n-_j, 1)``, so such a label gets
the weight a label with a single positive (or negative) would get: finite and the extreme value
of that scheme. A label with no positives contributes no positive terms to the loss anyway; the
rule only keeps the numbers finite. :func:`scheme_weights` warns when this happens.

References:
  Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie. Class-Balanced Loss Based on Effective Number
  of Samples. CVPR 2019.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = [
    "SCHEMES",
    "LabelCountAccumulator",
    "LabelCounts",
    "class_balanced",
    "effective_number",
    "inverse",
    "inverse_sqrt",
    "label_counts",
    "none",
    "proposed",
    "scheme_weights",
    "validate_counts",
]


# --------------------------------------------------------------------------------------------
# Label statistics (host side, NumPy)
# --------------------------------------------------------------------------------------------


class LabelCounts(NamedTuple):
    """Per-label positive counts of a multi-hot training set.

    Attributes:
      positives: np.int64 [C], ``n+_j``, the number of examples with label j.
      num_examples: int, ``N``, the number of examples.

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> counts = weights.LabelCounts(positives=np.array([3, 1]), num_examples=8)
      >>> counts.negatives.tolist()
      [5, 7]
    """

    positives: np.ndarray
    num_examples: int

    @property
    def negatives(self) -> np.ndarray:
        """np.int64 [C], ``n-_j = N - n+_j``."""
        return self.num_examples - self.positives


def _as_multi_hot(labels: Any, what: str = "labels") -> np.ndarray:
    """Checks that ``labels`` is a 2-D array of 0/1 values and returns it as a NumPy array."""
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(
            f"{what} must be a multi-hot array of shape [num_examples, num_labels], got shape "
            f"{array.shape}; reshape it (one row per example, one column per label)."
        )
    if not (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number)):
        raise TypeError(f"{what} must be numeric or bool, got dtype {array.dtype}.")
    if array.dtype != np.bool_ and array.size:
        is_binary = (array == 0) | (array == 1)
        if not is_binary.all():
            bad = array[~is_binary].ravel()[:5]
            raise ValueError(
                f"{what} must hold only 0 and 1 to be counted, found values such as "
                f"{bad.tolist()}; binarise soft labels (e.g. labels >= 0.5) before counting."
            )
    return array


def label_counts(labels: Any) -> LabelCounts:
    """Counts positives per label in a multi-hot array.

    Args:
      labels: [N, C] array of 0/1 (bool, integer or float; NumPy or JAX).

    Returns:
      ``LabelCounts(positives=np.int64 [C], num_examples=N)``.

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> counts = weights.label_counts(np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]]))
      >>> counts.positives.tolist(), counts.num_examples
      ([3, 1, 1], 4)
    """
    array = _as_multi_hot(labels)
    positives = array.sum(axis=0, dtype=np.int64)
    return LabelCounts(positives=positives, num_examples=int(array.shape[0]))


class LabelCountAccumulator:
    """Accumulates :func:`label_counts` over batches, for data that does not fit in memory.

    Padded examples must be dropped before ``update`` (they would be counted as negatives).

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> acc = weights.LabelCountAccumulator()
      >>> for batch_labels in (np.array([[1, 0], [1, 1]]), np.array([[0, 1]])):
      ...     _ = acc.update(batch_labels)
      >>> counts = acc.result()
      >>> counts.positives.tolist(), counts.num_examples
      ([2, 2], 3)
    """

    def __init__(self, num_labels: int | None = None):
        self._num_labels = num_labels
        self._positives = None if num_labels is None else np.zeros(num_labels, np.int64)
        self._num_examples = 0

    def update(self, batch_labels: Any) -> LabelCountAccumulator:
        """Adds a [B, C] multi-hot batch; returns ``self`` so calls can be chained."""
        batch = label_counts(batch_labels)
        num_labels = batch.positives.shape[0]
        if self._positives is None:
            self._num_labels = num_labels
            self._positives = np.zeros(num_labels, np.int64)
        if num_labels != self._num_labels:
            raise ValueError(
                f"batch has {num_labels} labels but earlier batches had {self._num_labels}; "
                "every batch must use the same label set (same columns)."
            )
        self._positives += batch.positives
        self._num_examples += batch.num_examples
        return self

    def result(self) -> LabelCounts:
        """The counts of every example seen so far."""
        if self._positives is None:
            raise ValueError(
                "no labels seen: call update(batch_labels) at least once, or pass num_labels "
                "to the constructor to allow an empty result."
            )
        return LabelCounts(positives=self._positives.copy(), num_examples=self._num_examples)


def validate_counts(positives: Any, num_examples: Any) -> tuple[np.ndarray, int]:
    """Host-side check of label counts; returns ``(positives np.int64 [C], N int)``.

    Rejects (with a message naming the problem and the fix) a non 1-D or non-integer
    ``positives``, negative counts, ``N < 1`` and counts larger than ``N``.

    Examples:
      >>> from ltweights import weights
      >>> positives, num_examples = weights.validate_counts([3.0, 1.0], 8)
      >>> positives.tolist(), num_examples
      ([3, 1], 8)
      >>> weights.validate_counts([9], 8)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: labels [0] have more positives than num_examples=8; ...
    """
    positives = np.asarray(positives)
    if positives.ndim != 1:
        raise ValueError(
            f"positives must be a 1-D array of per-label counts [C], got shape "
            f"{positives.shape}; use label_counts(labels).positives."
        )
    if positives.dtype.kind == "f":
        if not np.all(np.isfinite(positives)) or np.any(positives != np.round(positives)):
            raise ValueError(
                "positives must be whole numbers (counts of examples), got non-integer values; "
                "use label_counts(labels) on 0/1 labels."
            )
    elif positives.dtype.kind not in "iub":
        raise TypeError(f"positives must be integer counts, got dtype {positives.dtype}.")
    positives = positives.astype(np.int64)
    if np.ndim(num_examples) != 0 or float(num_examples) != int(num_examples):
        raise ValueError(f"num_examples must be a whole number, got {num_examples!r}.")
    num_examples = int(num_examples)
    if num_examples < 1:
        raise ValueError(
            f"num_examples must be >= 1, got {num_examples}; the counts need a training set."
        )
    if np.any(positives < 0):
        bad = np.flatnonzero(positives < 0)[:5].tolist()
        raise ValueError(
            f"label counts must be non-negative; labels {bad} have negative positives. "
            "Recount with label_counts(labels)."
        )
    if np.any(positives > num_examples):
        bad = np.flatnonzero(positives > num_examples)[:5].tolist()
        raise ValueError(
            f"labels {bad} have more positives than num_examples={num_examples}; pass the "
            "number of examples the counts were taken over."
        )
    return positives, num_examples


# --------------------------------------------------------------------------------------------
# Schemes (pure, jit/vmap-safe)
# --------------------------------------------------------------------------------------------


def _counts(positives, num_examples):
    """float32 (n+, n-) with an absent side counted as one example (see module docstring)."""
    pos = jnp.asarray(positives, jnp.float32)
    neg = jnp.asarray(num_examples, jnp.float32) - pos
    return jnp.maximum(pos, 1.0), jnp.maximum(neg, 1.0)


def _check_beta(beta) -> jnp.ndarray:
    return jnp.asarray(beta, jnp.float32)


def _neg_expm1_n_log_beta(n, beta):
    """``1 - beta**n`` computed as ``-expm1(n * log(beta))``, accurate for beta near 1.

    ``beta**n`` rounds to 1 in float32 once ``(1 - beta) * n`` is below ~6e-8, so the direct form
    loses every digit for beta = 0.9999 and small n; expm1/log1p keep them. ``log(beta)`` is
    formed as ``log1p(beta - 1)``, exact for float32 beta near 1 (Sterbenz). Requires n >= 1.
    """
    log_beta = jnp.log1p(beta - 1.0)  # -inf at beta = 0, giving 1 - 0**n = 1 for n >= 1
    return -jnp.expm1(n * log_beta)


def effective_number(n, beta):
    """Effective number of samples ``E(n) = (1 - beta**n) / (1 - beta)`` (Cui et al., 2019).

    ``E(n) -> 1`` as beta -> 0 and ``E(n) -> n`` as beta -> 1; at ``beta == 1`` exactly the limit
    ``n`` is returned. Computed without cancellation for beta near 1 (see
    ``_neg_expm1_n_log_beta``). ``n`` must be >= 1.

    Args:
      n: counts, any shape (broadcast with ``beta``).
      beta: in [0, 1].

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> n = np.array([1, 10, 100, 1000])
      >>> np.asarray(weights.effective_number(n, 0.99), float).round(4)  # saturates at 100
      array([ 1.    ,  9.5618, 63.3968, 99.9958])
    """
    n = jnp.asarray(n, jnp.float32)
    beta = _check_beta(beta)
    at_one = beta >= 1.0
    safe_beta = jnp.where(at_one, 0.5, beta)  # keeps the unused branch (and its grad) finite
    value = _neg_expm1_n_log_beta(n, safe_beta) / (1.0 - safe_beta)
    return jnp.where(at_one, n, value)


def none(positives, num_examples):
    """No weighting: ``pos_j = neg_j = 1``.

    Returns:
      ``(pos [C], neg [C])`` float32.

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> positives = np.array([90, 10, 1])  # of 100 examples
      >>> [w.tolist() for w in weights.none(positives, 100)]
      [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    del num_examples
    ones = jnp.ones(jnp.shape(positives), jnp.float32)
    return ones, ones


def inverse(positives, num_examples):
    """Inverse frequency (the usual ``pos_weight``): ``pos_j = n-_j / n+_j``, ``neg_j = 1``.

    Balances the total weight of positives and negatives of every label:
    ``pos_j * n+_j == neg_j * n-_j``. An absent side counts as one example.

    Returns:
      ``(pos [C], neg [C])`` float32.

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> positives = np.array([90, 10, 1])  # of 100 examples
      >>> pos, neg = weights.inverse(positives, 100)
      >>> np.asarray(pos, float).round(4), neg.tolist()
      (array([ 0.1111,  9.    , 99.    ]), [1.0, 1.0, 1.0])
    """
    pos, neg = _counts(positives, num_examples)
    return neg / pos, jnp.ones_like(pos)


def inverse_sqrt(positives, num_examples):
    """Square-root inverse frequency: ``pos_j = sqrt(n-_j / n+_j)``, ``neg_j = 1``.

    A milder boost of rare labels than :func:`inverse`. An absent side counts as one example.

    Returns:
      ``(pos [C], neg [C])`` float32.

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> positives = np.array([90, 10, 1])  # of 100 examples
      >>> pos, neg = weights.inverse_sqrt(positives, 100)
      >>> np.asarray(pos, float).round(4), neg.tolist()
      (array([0.3333, 3.    , 9.9499]), [1.0, 1.0, 1.0])
    """
    pos, neg = _counts(positives, num_examples)
    return jnp.sqrt(neg / pos), jnp.ones_like(pos)


def class_balanced(positives, num_examples, *, beta=0.999):
    """Class-balanced weights (Cui et al., CVPR 2019), applied to both terms.

    With the effective number ``E(n) = (1 - beta**n) / (1 - beta)``::

        c_j = (1 - beta) / (1 - beta**n+_j) = 1 / E(n+_j)
        w_j = C * c_j / sum_k c_k               (so that sum_j w_j == C)
        pos_j = neg_j = w_j

    ``beta = 0`` gives ``w_j = 1`` (no weighting); ``beta -> 1`` gives ``w_j`` proportional to
    ``1 / n+_j``. A label with no positives counts as having one.

    Args:
      positives: [C] positive counts.
      num_examples: N (unused: the weight depends on the positives only).
      beta: in [0, 1]; Cui et al. use 0.9 ... 0.9999.

    Returns:
      ``(pos [C], neg [C])`` float32, equal.

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> positives = np.array([90, 10, 1])  # of 100 examples
      >>> pos, neg = weights.class_balanced(positives, 100, beta=0.99)
      >>> np.asarray(pos, float).round(4)  # sums to C = 3
      array([0.0449, 0.2798, 2.6753])
      >>> bool((pos == neg).all())
      True
    """
    pos, _ = _counts(positives, num_examples)
    c = 1.0 / effective_number(pos, beta)
    w = c * (c.shape[-1] / jnp.sum(c, axis=-1, keepdims=True))
    return w, w


def proposed(positives, num_examples, *, beta=0.999):
    """Effective-number positive weighting, the suite's "proposed" scheme.

    ::

        E(n)  = (1 - beta**n) / (1 - beta)
        pos_j = E(n-_j) / E(n+_j) = (1 - beta**n-_j) / (1 - beta**n+_j)
        neg_j = 1

    As beta -> 0 every ``E(n) -> 1`` and the scheme tends to :func:`none`; as beta -> 1,
    ``E(n) -> n`` and it tends to :func:`inverse` (``n-_j / n+_j``). In between, beta sets how
    strongly the tail is boosted: counts much larger than ``1 / (1 - beta)`` saturate at
    ``E = 1 / (1 - beta)``, so the head's many negatives stop outweighing a rare label's
    positives without the extreme ratios of plain inverse frequency. At ``beta == 1`` exactly the
    inverse-frequency limit is returned.

    Provenance: the paper this suite reproduces names the comparison (no weighting, inverse
    frequency, a new weighting) in its abstract but does not give the new weighting's formula.
    This is the suite's definition, built on the effective-number idea (Cui et al., CVPR 2019)
    that the paper extends; it is not claimed to be the paper's exact formula.

    An absent side counts as one example (``E(1) = 1``).

    Args:
      positives: [C] positive counts.
      num_examples: N.
      beta: in [0, 1].

    Returns:
      ``(pos [C], neg [C])`` float32.

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> positives = np.array([90, 10, 1])  # of 100 examples
      >>> pos, neg = weights.proposed(positives, 100, beta=0.99)
      >>> np.asarray(pos, float).round(4)  # milder than inverse's [0.1111, 9, 99]
      array([ 0.1606,  6.2255, 63.0271])
      >>> neg.tolist()
      [1.0, 1.0, 1.0]
    """
    pos, neg = _counts(positives, num_examples)
    beta = _check_beta(beta)
    at_one = beta >= 1.0
    safe_beta = jnp.where(at_one, 0.5, beta)
    # The 1 / (1 - beta) factors cancel; the ratio of the two expm1 terms stays accurate.
    ratio = _neg_expm1_n_log_beta(neg, safe_beta) / _neg_expm1_n_log_beta(pos, safe_beta)
    return jnp.where(at_one, neg / pos, ratio), jnp.ones_like(pos)


SCHEMES: dict[str, Callable[..., tuple[jnp.ndarray, jnp.ndarray]]] = {
    "none": none,
    "inverse": inverse,
    "inverse_sqrt": inverse_sqrt,
    "class_balanced": class_balanced,
    "proposed": proposed,
}
"""Scheme name -> pure function ``(positives, num_examples, **params) -> (pos, neg)``."""


def _scheme_params(fn) -> dict[str, Any]:
    """Keyword parameters of a scheme and their defaults."""
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def scheme_weights(name: str, counts: LabelCounts, **params) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Host-side entry point: validated ``(pos [C], neg [C])`` float32 weights of a named scheme.

    Raises:
      KeyError: unknown scheme (the message lists the valid names).
      TypeError: a parameter the scheme does not take (the message lists the valid ones).
      ValueError: invalid counts (see :func:`validate_counts`) or beta outside [0, 1].

    Warns:
      UserWarning when labels have no positives or no negatives; those labels get the finite
      weights described in the module docstring.

    Examples:
      >>> import numpy as np
      >>> from ltweights import weights
      >>> counts = weights.LabelCounts(positives=np.array([3, 1]), num_examples=8)
      >>> pos, neg = weights.scheme_weights("inverse", counts)
      >>> np.asarray(pos, float).round(4), neg.tolist()
      (array([1.6667, 7.    ]), [1.0, 1.0])
    """
    if name not in SCHEMES:
        raise KeyError(f"unknown weighting scheme {name!r}; valid schemes: {sorted(SCHEMES)}.")
    fn = SCHEMES[name]
    valid = _scheme_params(fn)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"scheme {name!r} got unknown parameter(s) {unknown}; valid parameters: "
            f"{sorted(valid) or 'none'}."
        )
    if "beta" in params:
        beta = params["beta"]
        if np.ndim(beta) != 0:
            raise ValueError(
                f"beta must be a scalar, got shape {np.shape(beta)}; for a sweep, jax.vmap the "
                f"scheme function SCHEMES[{name!r}] over a stack of betas."
            )
        if not (math.isfinite(float(beta)) and 0.0 <= float(beta) <= 1.0):
            raise ValueError(f"beta must be in [0, 1], got {beta!r}; Cui et al. use 0.9-0.9999.")
    positives, num_examples = validate_counts(counts.positives, counts.num_examples)
    no_pos = np.flatnonzero(positives == 0)
    no_neg = np.flatnonzero(positives == num_examples)
    for labels, what in ((no_pos, "no positives"), (no_neg, "no negatives")):
        if labels.size:
            shown = labels[:10].tolist()
            more = f" (and {labels.size - 10} more)" if labels.size > 10 else ""
            warnings.warn(
                f"{labels.size} label(s) have {what} in the training counts: {shown}{more}. "
                f"Scheme {name!r} counts the absent side as one example so the weights stay "
                "finite; consider dropping these labels or lowering the cut-off.",
                UserWarning,
                stacklevel=2,
            )
    return fn(positives, num_examples, **params)
