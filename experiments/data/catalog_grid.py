"""The catalog builder: 2 x 2 grid images whose classes have exactly the requested counts.

A pure function of Fashion-MNIST's items and the parameters (`build_catalog`): the profile
(`experiments.data.catalog_profile`) gives each split's positives per class; `pack_cells`
decides, image by image, which classes each image shows so that every class gets exactly its
count (`assign_classes`, by the Gale-Ryser theorem); items are drawn without replacement per
class (`split_item_pools`, train and val disjoint) and rendered into the grid
(`render_images`). The task loaders and the cache are in `experiments.data.catalog`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from experiments.data.catalog_profile import (
    DEFAULT_HEAD_COUNT,
    STREAM_ITEMS,
    STREAM_PACK,
    requested_counts,
    stream_rng,
)

CELLS = 4  # a 2 x 2 grid
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------
# Packing classes into images


def num_images_for(counts: np.ndarray, *, head_prevalence: float) -> int:
    """Images in a split: the most frequent class shows in about `head_prevalence` of them, and
    images hold at most 3 items on average (so the grid is never nearly full)."""
    if not 0 < head_prevalence <= 1:
        raise ValueError(f"head_prevalence must be in (0, 1]; got {head_prevalence}.")
    return max(math.ceil(int(counts.max()) / head_prevalence), math.ceil(int(counts.sum()) / 3), 1)


def _gale_ryser_feasible(remaining: np.ndarray, min_sums: np.ndarray) -> bool:
    """Whether a 0/1 image x class matrix with column sums `remaining` and the row capacities
    summarised by min_sums[k] = sum_i min(capacity_i, k) exists (Gale 1957, Ryser 1957):
    sum(remaining) = sum(capacity) and, with remaining sorted descending, for all k
    sum_{j<=k} remaining_j <= min_sums[k]."""
    a = np.sort(remaining)[::-1]
    return bool(a.sum() == min_sums[-1] and np.all(np.cumsum(a) <= min_sums[1:]))


def assign_classes(
    capacities: np.ndarray, counts: np.ndarray, rng: np.random.Generator, *, tries: int = 8
) -> list[np.ndarray]:
    """For each image i, capacities[i] distinct classes, so that class c is used counts[c] times.

    Each image draws its classes with probability proportional to the class's remaining count,
    keeping the draw only if the rest can still be completed (Gale-Ryser); after `tries` failed
    draws it takes the classes with the most remaining (ties at random), which always keeps a
    feasible problem feasible (the constructive proof of Gale-Ryser). So the counts are exact.
    """
    counts = np.asarray(counts, np.int64)
    num_classes = len(counts)
    ks = np.arange(num_classes + 1)
    min_sums = np.minimum(capacities[:, None], ks).sum(axis=0)
    if not _gale_ryser_feasible(counts, min_sums):
        raise ValueError(
            f"No image layout has these class counts {counts.tolist()} with these image "
            "capacities; use more images (lower head_prevalence)."
        )
    remaining = counts.copy()
    chosen_per_image = []
    for k in capacities:
        min_sums = min_sums - np.minimum(k, ks)
        if k == 0:
            chosen_per_image.append(np.empty(0, np.int64))
            continue
        for _ in range(tries):
            chosen = rng.choice(num_classes, k, replace=False, p=remaining / remaining.sum())
            after = remaining.copy()
            after[chosen] -= 1
            if _gale_ryser_feasible(after, min_sums):
                break
        else:
            chosen = np.lexsort((rng.random(num_classes), -remaining))[:k]
            rng.shuffle(chosen)
            after = remaining.copy()
            after[chosen] -= 1
        remaining = after
        chosen_per_image.append(chosen)
    assert not remaining.any()  # guaranteed by the feasibility argument above
    return chosen_per_image


def pack_cells(
    counts: np.ndarray, *, head_prevalence: float, rng: np.random.Generator
) -> np.ndarray:
    """Cell classes int64 [N, 4] (-1 = empty cell): class c fills exactly counts[c] cells, at
    most one per image. Occupied cells are a uniform sample of all 4N cells, so images hold 0 to
    4 items (balanced occupancy where a uniform sample cannot take the counts)."""
    counts = np.asarray(counts, np.int64)
    if len(counts) < CELLS:
        raise ValueError(f"The 2 x 2 catalog needs at least {CELLS} classes; got {len(counts)}.")
    if (counts < 0).any():
        raise ValueError(f"Class counts must be >= 0; got {counts.tolist()}.")
    num_images = num_images_for(counts, head_prevalence=head_prevalence)
    total = int(counts.sum())
    ks = np.arange(len(counts) + 1)
    for _ in range(20):
        occupied = np.zeros(num_images * CELLS, bool)
        occupied[rng.choice(num_images * CELLS, total, replace=False)] = True
        occupied = occupied.reshape(num_images, CELLS)
        capacities = occupied.sum(axis=1)
        if _gale_ryser_feasible(counts, np.minimum(capacities[:, None], ks).sum(axis=0)):
            break
    else:
        # A few dominant classes can need more non-empty images than a uniform sample gives.
        # Balanced capacities (each image floor or ceil of total/N items) are majorised by every
        # other choice, so they are feasible whenever anything is: max(counts) <= N, total <= 4N.
        capacities = np.full(num_images, total // num_images)
        capacities[rng.permutation(num_images)[: total % num_images]] += 1
        occupied = np.zeros((num_images, CELLS), bool)
        for i, k in enumerate(capacities):
            occupied[i, rng.choice(CELLS, k, replace=False)] = True
    cell_classes = np.full((num_images, CELLS), -1, np.int64)
    for i, chosen in enumerate(assign_classes(capacities, counts, rng)):
        cell_classes[i, occupied[i]] = chosen
    return cell_classes


def split_item_pools(
    item_classes: np.ndarray, sizes: list[np.ndarray], rng: np.random.Generator
) -> list[list[np.ndarray]]:
    """Disjoint random item indices per class: pools[s][c] holds sizes[s][c] items of class c."""
    num_classes = len(sizes[0])
    pools: list[list[np.ndarray]] = [[] for _ in sizes]
    for c in range(num_classes):
        available = rng.permutation(np.flatnonzero(item_classes == c))
        need = sum(int(s[c]) for s in sizes)
        if need > len(available):
            raise ValueError(
                f"Class {c} needs {need} distinct items but the source has {len(available)}; "
                "lower head_count, val_fraction or test_positives."
            )
        start = 0
        for s, size in enumerate(sizes):
            pools[s].append(available[start : start + int(size[c])])
            start += int(size[c])
    return pools


def fill_items(cell_classes: np.ndarray, pools: list[np.ndarray]) -> np.ndarray:
    """Cell item indices int64 [N, 4] (-1 = empty): the cells of class c, in row-major order,
    take the items of pools[c] in turn."""
    cell_items = np.full(cell_classes.shape, -1, np.int64)
    for c, pool in enumerate(pools):
        where = cell_classes == c
        if where.sum() != len(pool):
            raise ValueError(f"Class {c}: {where.sum()} cells but {len(pool)} items.")
        cell_items[where] = pool
    return cell_items


def downscale_items(items: np.ndarray) -> np.ndarray:
    """2 x 2 mean pooling with rounding half up: uint8 [M, H, W] -> [M, H/2, W/2]."""
    x = items.astype(np.uint16)
    pooled = x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]
    return ((pooled + 2) // 4).astype(np.uint8)


def render_images(cell_items: np.ndarray, items: np.ndarray, image_size: int) -> np.ndarray:
    """Images uint8 [N, S, S, 1]: cell j of image i is items[cell_items[i, j]] (downscaled to
    S/2), cells laid out 0 1 / 2 3; empty cells are black."""
    item_size = items.shape[1]
    if image_size == item_size:
        tile = item_size // 2
        transform = downscale_items
    elif image_size == 2 * item_size:
        tile = item_size
        transform = np.asarray
    else:
        raise ValueError(
            f"image_size must be {item_size} (items downscaled) or {2 * item_size} (full size); "
            f"got {image_size}."
        )
    num_images = cell_items.shape[0]
    tiles = np.zeros((num_images, CELLS, tile, tile), np.uint8)
    occupied = cell_items >= 0
    tiles[occupied] = transform(items[cell_items[occupied]])
    grid = tiles.reshape(num_images, 2, 2, tile, tile).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(grid.reshape(num_images, image_size, image_size, 1))


def multi_hot(cell_classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels uint8 [N, C]: 1 where the class shows in any cell."""
    labels = np.zeros((cell_classes.shape[0], num_classes), np.uint8)
    rows, cells = np.nonzero(cell_classes >= 0)
    labels[rows, cell_classes[rows, cells]] = 1
    return labels


# ---------------------------------------------------------------------------------------------
# The whole build


class CatalogSplit(NamedTuple):
    """One built split: images uint8 [N, S, S, 1], labels uint8 [N, C], and the layout
    behind them, cell_classes and cell_items int64 [N, 4] (-1 = empty; items index the split's
    source array: Fashion-MNIST train for train/val, t10k for test)."""

    images: np.ndarray
    labels: np.ndarray
    cell_classes: np.ndarray
    cell_items: np.ndarray


def build_catalog(
    train_items: np.ndarray,
    train_classes: np.ndarray,
    test_items: np.ndarray,
    test_classes: np.ndarray,
    *,
    num_classes: int,
    profile: str = "long_tail",
    cutoff: int = 6,
    seed: int = 0,
    head_count: int = DEFAULT_HEAD_COUNT,
    num_tail_classes: int = 5,
    image_size: int = 28,
    val_fraction: float = 0.25,
    val_min_positives: int = 5,
    test_positives: int = 200,
    head_prevalence: float = 0.5,
) -> tuple[dict[str, CatalogSplit], dict[str, np.ndarray]]:
    """Builds the three splits from item images uint8 [M, H, W] and their classes [M].

    Returns ({split: CatalogSplit}, {split: requested positives int64 [C]}). Deterministic in
    its arguments. Train and val items come from train_items (disjoint), test from test_items.
    """
    wanted = requested_counts(
        num_classes,
        profile=profile,
        cutoff=cutoff,
        seed=seed,
        head_count=head_count,
        num_tail_classes=num_tail_classes,
        val_fraction=val_fraction,
        val_min_positives=val_min_positives,
        test_positives=test_positives,
    )
    items_rng = stream_rng(seed, STREAM_ITEMS)
    train_pools, val_pools = split_item_pools(
        train_classes, [wanted["train"], wanted["val"]], items_rng
    )
    (test_pools,) = split_item_pools(test_classes, [wanted["test"]], items_rng)
    sources = {
        "train": (train_items, train_pools),
        "val": (train_items, val_pools),
        "test": (test_items, test_pools),
    }
    splits = {}
    for split in SPLITS:
        items, pools = sources[split]
        cell_classes = pack_cells(
            wanted[split], head_prevalence=head_prevalence, rng=stream_rng(seed, STREAM_PACK[split])
        )
        cell_items = fill_items(cell_classes, pools)
        splits[split] = CatalogSplit(
            images=render_images(cell_items, items, image_size),
            labels=multi_hot(cell_classes, num_classes),
            cell_classes=cell_classes,
            cell_items=cell_items,
        )
    return splits, wanted
