"""The linear floor: a multi-label linear model on the pixels.

Any network worth benchmarking must beat a linear classifier on the same inputs, loss, data and
schedule; the report prints this model's results as the `linear` reference row.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from experiments.models.resnet import BN_EPSILON, BN_MOMENTUM


class Linear(nn.Module):
    """Per-pixel standardisation, then one dense layer: logits = W standardise(x) + b.

    The standardisation is a BatchNorm without scale or bias (running mean and variance at
    evaluation), so at test time the model is an affine function of the pixels, as logistic
    regression on standardised pixels is; it also gives the trainer the `batch_stats` collection
    every suite model has.

    Call: `model.apply(variables, x, train=...)` with x float [B, H, W, ch] -> logits
    float32 [B, C]; with `train=True` pass `mutable=["batch_stats"]`.
    """

    num_labels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = jnp.asarray(x, self.dtype).reshape((x.shape[0], -1))
        x = nn.BatchNorm(
            use_running_average=not train,
            use_scale=False,
            use_bias=False,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=self.dtype,
            name="standardise",
        )(x)
        x = nn.Dense(self.num_labels, dtype=self.dtype, name="head")(x)
        return jnp.asarray(x, jnp.float32)
