"""Numerics shared by the losses: the log-space softplus pair and the focusing factors.

Private to :mod:`ltweights`; see the "Numerics" paragraph of :mod:`ltweights.losses` for why
the losses are written this way. JAX only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def scaled(term, weight):
    """``term * weight``, or ``term`` when there is no weight (None)."""
    return term if weight is None else term * weight


def finish(loss, dtype):
    """The loss, computed in float32 or wider, cast back to the logits' dtype."""
    return loss.astype(dtype)


@jax.custom_jvp
def softplus_pair(z):
    """``(softplus(-z), softplus(z))``, i.e. ``(-log p, -log(1 - p))``, from one softplus.

    ``softplus(+-z) = max(+-z, 0) + log1p(exp(-|z|))``: one exp and one log1p serve both terms
    (computing each softplus costs two of each), and no part is ever subtracted, so tiny values
    (``softplus(-z) ~ exp(-z)`` for large z) keep full relative precision, unlike the shorter
    ``softplus(z) - z``. The derivatives are ``-sigmoid(-z)`` and ``sigmoid(z)`` (see the
    custom JVP below): exact at the kink ``z = 0`` of ``|z|``, with full relative precision in
    their tails, and cheaper on CPU than differentiating through log1p/exp.
    """
    shared = jnp.log1p(jnp.exp(-jnp.abs(z)))
    return jnp.maximum(-z, 0.0) + shared, jnp.maximum(z, 0.0) + shared


@softplus_pair.defjvp
def _softplus_pair_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    return softplus_pair(z), (-jax.nn.sigmoid(-z) * dz, jax.nn.sigmoid(z) * dz)


def power(x, exponent):
    """``x ** exponent`` for x >= 0 with ``0 ** 0 = 1`` and finite gradients at x = 0."""
    positive = x > 0
    safe_x = jnp.where(positive, x, 1.0)
    zero_value = jnp.where(exponent == 0, 1.0, 0.0).astype(x.dtype)
    return jnp.where(positive, jnp.exp(exponent * jnp.log(safe_x)), zero_value)


def focusing(x, static_exponent: float | None, exponent):
    """The focusing factor ``x ** exponent`` for x in [0, 1], or None when it is 1.

    A static exponent of 0 drops the factor; a static whole exponent is ``lax.integer_pow`` (a
    few multiplies, exact gradient ``k * x**(k-1)``, finite at x = 0); anything else goes
    through :func:`power`'s guarded ``exp(exponent * log x)``.
    """
    if static_exponent == 0.0:
        return None
    if static_exponent is not None and static_exponent.is_integer():
        return jax.lax.integer_pow(x, int(static_exponent))
    return power(x, exponent)
