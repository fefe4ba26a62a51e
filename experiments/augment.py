"""Label-preserving augmentation inside the train step, on the uint8 batch.

  "none"   the batch as drawn (the default)
  "flip"   each image mirrored left-right with probability 1/2 (garments keep their class)
  "cells"  for images made of a 2 x 2 grid of items (the catalog tasks): the four cells in a
           random order and each item mirrored with probability 1/2. A catalog image's labels
           are the classes present, whatever the cells' order, so this shows the network each
           rare item in new places, which the long tail's few positives need most.

Randomness comes from `fold_in(state.rng, step)`, so a resumed run draws the same augmentation
as an uninterrupted one, and the draws are over the global batch, so they do not depend on the
number of devices.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AUGMENTATIONS = ("none", "flip", "cells")
Augment = Callable[[jax.Array, jax.Array], jax.Array]


def flip(images: jax.Array, key: jax.Array) -> jax.Array:
    """Each image of [B, H, W, ch] mirrored left-right with probability 1/2."""
    return _per_image(_flip_one, images, key)


def shuffle_cells(images: jax.Array, key: jax.Array) -> jax.Array:
    """The 2 x 2 cells of each image of [B, H, W, ch] in a random order, each cell mirrored
    with probability 1/2."""
    if images.shape[1] % 2 or images.shape[2] % 2:
        raise ValueError(f"'cells' augmentation needs even image sides; got {images.shape[1:3]}.")
    return _per_image(_shuffle_cells_one, images, key)


def _per_image(fn, images: jax.Array, key: jax.Array) -> jax.Array:
    """`fn(image, key)` over the batch, one key per image; the keys take the batch's sharding
    over devices (vmap needs its inputs' mapped axis sharded alike)."""
    keys = jax.random.split(key, images.shape[0])
    sharding = jax.typeof(images).sharding
    if isinstance(sharding, NamedSharding) and sharding.spec and sharding.spec[0] is not None:
        keys = jax.sharding.reshard(keys, NamedSharding(sharding.mesh, P(sharding.spec[0])))
    return jax.vmap(fn)(images, keys)


def _flip_one(image: jax.Array, key: jax.Array) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def to_cells(image: jax.Array) -> jax.Array:
    """[2s, 2t, ch] -> [4, s, t, ch], cells in row-major order (slices, not reshapes: a reshape
    of a batch sharded over devices needs its output sharding spelled out)."""
    s, t = image.shape[0] // 2, image.shape[1] // 2
    return jnp.stack([image[:s, :t], image[:s, t:], image[s:, :t], image[s:, t:]])


def from_cells(cells: jax.Array) -> jax.Array:
    """The inverse of `to_cells`."""
    top = jnp.concatenate([cells[0], cells[1]], axis=1)
    bottom = jnp.concatenate([cells[2], cells[3]], axis=1)
    return jnp.concatenate([top, bottom], axis=0)


def _shuffle_cells_one(image: jax.Array, key: jax.Array) -> jax.Array:
    order_key, flip_key = jax.random.split(key)
    cells = to_cells(image)[jax.random.permutation(order_key, 4)]
    mirrored = jax.random.bernoulli(flip_key, 0.5, (4, 1, 1, 1))
    return from_cells(jnp.where(mirrored, cells[:, :, ::-1], cells))


def get_augment(name: str) -> Augment | None:
    """The augmentation called `name` (None for "none"); an unknown name lists the valid ones."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {name!r}; use one of {', '.join(AUGMENTATIONS)}.")
    return {"none": None, "flip": flip, "cells": shuffle_cells}[name]
