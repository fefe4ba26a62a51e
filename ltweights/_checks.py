"""Input checks of the losses: shapes and dtypes and static hyperparameters at trace time,
and :func:`validate_inputs`, the values a jitted loss cannot see, on the host.

Private to :mod:`ltweights` (the losses and their callers use :mod:`ltweights.losses`, which
re-exports :func:`validate_inputs`). JAX and NumPy only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ltweights.weights import LabelCounts, validate_counts

# --------------------------------------------------------------------------------------------
# Trace-time checks
# --------------------------------------------------------------------------------------------


def compute_dtype(dtype) -> jnp.dtype:
    """float32 for bfloat16/float16 inputs, the input dtype for float32/float64."""
    return jnp.promote_types(dtype, jnp.float32)


def prepare(name: str, logits: ArrayLike, labels: ArrayLike):
    """Checks shapes and dtypes (at trace time); returns (z, y, out_dtype) in compute dtype."""
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(
            f"{name}: logits must have a floating dtype, got {logits.dtype} with shape "
            f"{logits.shape}; cast them, e.g. logits.astype(jnp.float32)."
        )
    if not (
        labels.dtype == jnp.bool_
        or jnp.issubdtype(labels.dtype, jnp.integer)
        or jnp.issubdtype(labels.dtype, jnp.floating)
    ):
        raise TypeError(
            f"{name}: labels must be bool, integer or floating, got {labels.dtype} with shape "
            f"{labels.shape}."
        )
    if logits.shape != labels.shape:
        raise ValueError(
            f"{name}: logits shape {logits.shape} and labels shape {labels.shape} differ; "
            "both must be [..., num_labels] with the same shape."
        )
    if logits.ndim == 0:
        raise ValueError(f"{name}: logits must have a label axis, got a scalar of shape ().")
    dtype = compute_dtype(logits.dtype)
    return logits.astype(dtype), labels.astype(dtype), logits.dtype


def per_label(name: str, what: str, value: ArrayLike | None, shape, dtype):
    """A weight-like argument cast to ``dtype``; it must broadcast to ``shape`` unchanged."""
    if value is None:
        return None
    value = jnp.asarray(value)
    if not (
        value.dtype == jnp.bool_
        or jnp.issubdtype(value.dtype, jnp.integer)
        or jnp.issubdtype(value.dtype, jnp.floating)
    ):
        raise TypeError(f"{name}: {what} must be numeric, got dtype {value.dtype}.")
    try:
        broadcast = np.broadcast_shapes(value.shape, tuple(shape))
    except ValueError:
        broadcast = None
    if broadcast != tuple(shape):
        raise ValueError(
            f"{name}: {what} shape {value.shape} does not broadcast to the logits shape "
            f"{tuple(shape)}; pass a scalar, a per-label vector of shape ({shape[-1]},) or an "
            "array of the logits' shape."
        )
    return value.astype(dtype)


def hyperparameter(
    name: str,
    what: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float | None:
    """Range-checks a hyperparameter whose value is known at trace time.

    Python and NumPy numbers (and NumPy arrays, lists or tuples of them) are checked here: they
    must be finite and within ``low``/``high`` (closed ends unless ``*_open``). A scalar is
    returned as a Python float, so callers can specialise on it; a NumPy array returns None.
    ``jax.Array`` values (traced under ``jit``/``vmap``, or on a device) pass through unchecked
    (None): their values cannot be read at trace time; :func:`validate_inputs` checks weights
    and priors on the host.
    """
    if value is None or isinstance(value, jax.Array):
        return None
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(
            f"{name}: {what} must be a real number (or an array of them), got "
            f"{type(value).__name__} {value!r}."
        )
    array = array.astype(np.float64)
    finite = bool(np.isfinite(array).all())
    in_range = finite
    if finite and array.size:
        lo, hi = array.min(), array.max()
        if low is not None:
            in_range &= bool(lo > low if low_open else lo >= low)
        if high is not None:
            in_range &= bool(hi < high if high_open else hi <= high)
    if not in_range:
        if low is not None and high is not None:
            bound = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            bound = f"{'>' if low_open else '>='} {low:g}"
        elif high is not None:
            bound = f"{'<' if high_open else '<='} {high:g}"
        else:
            bound = "(any real value)"
        if array.ndim == 0:
            got = f"got {float(array)}"
        elif not finite:
            got = "got an array containing NaN or inf"
        else:
            got = f"got an array with values in [{array.min():g}, {array.max():g}]"
        raise ValueError(
            f"{name}: {what} must be a finite number {bound}, {got}; pass a value in range."
        )
    return float(array) if array.ndim == 0 else None


# --------------------------------------------------------------------------------------------
# Host-side validation
# --------------------------------------------------------------------------------------------


def host_array(name: str, value: ArrayLike) -> np.ndarray:
    try:
        return np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        raise TypeError(
            f"validate_inputs: {name} is a traced value; call validate_inputs on the host, "
            "outside jax.jit / jax.grad, on concrete arrays."
        ) from None


def validate_inputs(
    labels: ArrayLike,
    *,
    logits: ArrayLike | None = None,
    counts: LabelCounts | None = None,
    pos_weight: ArrayLike | None = None,
    neg_weight: ArrayLike | None = None,
    prior: ArrayLike | None = None,
) -> None:
    """Checks the values that the jitted losses cannot check; call on the host, outside jit.

    Raises ValueError (naming the problem and the fix) when labels are outside [0, 1] or NaN,
    logits are not finite or differ in shape from the labels, counts are negative or exceed
    ``num_examples`` or do not match the number of labels, weights are negative, NaN or do not
    broadcast to the labels, or a prior is outside [0, 1].

    Examples:
      >>> import numpy as np
      >>> from ltweights import losses
      >>> losses.validate_inputs(np.array([[1.0, 0.0]]), logits=np.zeros((1, 2)))  # None: valid
      >>> losses.validate_inputs(np.array([[2.0, 0.0]]))  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: labels must lie in [0, 1], found values in [0.0, 2.0]; ...
    """
    y = host_array("labels", labels)
    if y.ndim == 0:
        raise ValueError("labels must have a label axis [..., C], got a scalar.")
    if y.dtype != np.bool_:
        y = y.astype(np.float64)
        if np.isnan(y).any():
            raise ValueError("labels contain NaN; fix the data pipeline (labels are 0/1).")
        if (y < 0).any() or (y > 1).any():
            raise ValueError(
                f"labels must lie in [0, 1], found values in [{y.min()}, {y.max()}]; pass "
                "multi-hot 0/1 labels (or probabilities), not class indices or counts."
            )
    shape = y.shape
    num_labels = shape[-1]
    if logits is not None:
        z = host_array("logits", logits)
        if z.shape != shape:
            raise ValueError(f"logits shape {z.shape} and labels shape {shape} differ.")
        if not np.isfinite(z.astype(np.float64)).all():
            raise ValueError("logits contain NaN or inf; check the model's outputs.")
    if counts is not None:
        positives, _ = validate_counts(counts.positives, counts.num_examples)
        if positives.shape != (num_labels,):
            raise ValueError(
                f"counts have {positives.shape[0]} labels but labels shape {shape} has "
                f"{num_labels}; count the same label set."
            )
    for what, value in (("pos_weight", pos_weight), ("neg_weight", neg_weight)):
        if value is None:
            continue
        w = host_array(what, value).astype(np.float64)
        try:
            ok = np.broadcast_shapes(w.shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{what} shape {w.shape} does not broadcast to labels shape {shape}.")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(
                f"{what} must be finite and non-negative; build it with "
                "ltweights.weights.scheme_weights."
            )
    if prior is not None:
        pi = host_array("prior", prior).astype(np.float64)
        if np.isnan(pi).any() or (pi < 0).any() or (pi > 1).any():
            raise ValueError("prior must lie in [0, 1]; use positives / num_examples.")
