"""Flax ResNets for multi-label image classification.

The blocks and the ResNet-18/34/50 shapes follow the Flax ImageNet example
(`examples/imagenet/models.py`; He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016): convolutions without bias, BatchNorm after every convolution, the last BatchNorm of
each residual branch initialised to zero scale (so every block starts as the identity), a
projection shortcut where the shape changes, global average pooling, one dense head.

Differences from the example, all for this benchmark:
- The head has C independent logits (one sigmoid per label), returned in float32 whatever the
  compute dtype, so the loss is computed in float32.
- `small_input=True` replaces the 7x7/2 stem and the max-pool by one 3x3/1 convolution, as for
  CIFAR-sized inputs: a 28-64 px image would otherwise be 7-16 px before the first block.
- Any input size and 1 or 3 channels (global average pooling makes the head size-independent).
- BatchNorm has no `axis_name`: under `jax.jit` over a device mesh with the batch sharded, the
  batch mean and variance are computed over the global batch by the SPMD partitioner.
- `padding`: "same" (default, as the Flax example) pads stride-2 3x3 convolutions and the stem's
  max-pool the XLA "SAME" way, which on even sizes puts the one padded row/column after the
  image only; "torchvision" pads as torchvision's ResNet does: 1 on every side for 3x3
  convolutions and the 3x3/2 max-pool (padded with -inf), 0 for 1x1 projections. The two differ
  only at stride 2 (at stride 1 "SAME" is already symmetric); weights imported from torchvision
  (`experiments.pretrained`) reproduce its outputs with "torchvision" only. The 7x7/2 stem pads
  3 on every side in both.

Inputs are float [B, H, W, channels], already normalised (the train step converts uint8 images).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

# BatchNorm settings of the Flax ImageNet example.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

PADDINGS = ("same", "torchvision")


def _conv_padding(padding: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments of the 3x3 and the 1x1 convolutions for `padding` ("same": none, so
    the Flax default "SAME" applies exactly as before the option existed)."""
    if padding == "same":
        return {}, {}
    if padding == "torchvision":
        return {"padding": [(1, 1), (1, 1)]}, {"padding": [(0, 0), (0, 0)]}
    raise ValueError(f"Unknown ResNet padding {padding!r}; use one of {list(PADDINGS)}.")


class ResNetBlock(nn.Module):
    """Basic block: two 3x3 convolutions (ResNet-18/34)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)
    padding: str = "same"

    @nn.compact
    def __call__(self, x):
        pad3, pad1 = _conv_padding(self.padding)
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides, **pad3)(x)
        y = self.act(self.norm()(y))
        y = self.conv(self.filters, (3, 3), **pad3)(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj", **pad1)(
                residual
            )
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
    """Bottleneck block: 1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50 and deeper)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)
    padding: str = "same"

    @nn.compact
    def __call__(self, x):
        pad3, pad1 = _conv_padding(self.padding)
        residual = x
        y = self.conv(self.filters, (1, 1), **pad1)(x)
        y = self.act(self.norm()(y))
        y = self.conv(self.filters, (3, 3), self.strides, **pad3)(y)
        y = self.act(self.norm()(y))
        y = self.conv(self.filters * 4, (1, 1), **pad1)(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj", **pad1)(
                residual
            )
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


BLOCKS: dict[str, type[nn.Module]] = {
    "basic": ResNetBlock,
    "bottleneck": BottleneckResNetBlock,
}


class ResNet(nn.Module):
    """ResNet with a multi-label head.

    Attributes:
      stage_sizes: blocks per stage; stage i has `num_filters * 2**i` filters (x4 output
        channels for bottleneck blocks) and halves the resolution (except stage 0).
      block_cls: `ResNetBlock` or `BottleneckResNetBlock`.
      num_labels: C, the number of logits.
      num_filters: width of the stem and of stage 0.
      small_input: 3x3/1 stem without max-pool, for 28-64 px images.
      padding: "same" or "torchvision" (see the module docstring).
      dtype: compute dtype (float32 or bfloat16); parameters stay float32.

    Call: `model.apply(variables, x, train=...)` with x float [B, H, W, ch] -> logits
    float32 [B, C]; with `train=True` pass `mutable=["batch_stats"]`.
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_labels: int
    num_filters: int = 64
    small_input: bool = False
    dtype: Any = jnp.float32
    act: Callable = nn.relu
    padding: str = "same"

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=self.dtype,
        )
        pad3, _ = _conv_padding(self.padding)
        x = jnp.asarray(x, self.dtype)
        if self.small_input:
            x = conv(self.num_filters, (3, 3), name="conv_init", **pad3)(x)
            x = self.act(norm(name="bn_init")(x))
        else:
            x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(
                x
            )
            x = self.act(norm(name="bn_init")(x))
            # Explicit pads are filled with -inf by the pooling window, as torch's max-pool.
            pool_pad = pad3.get("padding", "SAME")
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=pool_pad)
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = self.block_cls(
                    self.num_filters * 2**i,
                    strides=strides,
                    conv=conv,
                    norm=norm,
                    act=self.act,
                    padding=self.padding,
                )(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_labels, dtype=self.dtype, name="head")(x)
        return jnp.asarray(x, jnp.float32)


# The Flax ImageNet example's shapes: (stage_sizes, block).
PRESETS: dict[str, tuple[tuple[int, ...], str]] = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def model_dtype(dtype: str | Any) -> Any:
    """A config's dtype name ("float32", "bfloat16", "float16") as a jnp dtype."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"Unknown model dtype {dtype!r}; use one of {sorted(_DTYPES)}.")
        return _DTYPES[dtype]
    return dtype


def resnet(
    *,
    num_labels: int,
    stage_sizes: Sequence[int],
    block: str = "basic",
    num_filters: int = 64,
    small_input: bool = False,
    dtype: str | Any = "float32",
    padding: str = "same",
) -> ResNet:
    """A ResNet from plain values (what a config holds); bad values raise with the valid ones."""
    if block not in BLOCKS:
        raise ValueError(f"Unknown ResNet block {block!r}; use one of {sorted(BLOCKS)}.")
    stage_sizes = tuple(int(s) for s in stage_sizes)
    if not stage_sizes or min(stage_sizes) < 1:
        raise ValueError(
            f"ResNet stage_sizes must be a non-empty list of positive ints; got {stage_sizes}."
        )
    if num_filters < 1 or num_labels < 1:
        raise ValueError(
            f"ResNet needs num_filters >= 1 and num_labels >= 1; got {num_filters}, {num_labels}."
        )
    if padding not in PADDINGS:
        raise ValueError(f"Unknown ResNet padding {padding!r}; use one of {list(PADDINGS)}.")
    dtype = model_dtype(dtype)
    return ResNet(
        stage_sizes=stage_sizes,
        block_cls=BLOCKS[block],
        num_labels=int(num_labels),
        num_filters=int(num_filters),
        small_input=bool(small_input),
        dtype=dtype,
        padding=padding,
    )


def ResNet18(**kwargs) -> ResNet:
    return resnet(stage_sizes=PRESETS["resnet18"][0], block=PRESETS["resnet18"][1], **kwargs)


def ResNet34(**kwargs) -> ResNet:
    return resnet(stage_sizes=PRESETS["resnet34"][0], block=PRESETS["resnet34"][1], **kwargs)


def ResNet50(**kwargs) -> ResNet:
    return resnet(stage_sizes=PRESETS["resnet50"][0], block=PRESETS["resnet50"][1], **kwargs)
