"""The catalog task: "which garment types does this catalog image show", built from Fashion-MNIST.

Each image is a 2 x 2 grid of cells; a cell is empty (black) or holds one Fashion-MNIST item, and
the image's labels are the set of classes present (10 labels, Fashion-MNIST's class names; no class
appears twice in one image). `image_size=28` downscales items to 14 x 14 by 2 x 2 mean pooling
(the CPU tier); `image_size=56` keeps them at 28 x 28.

Label profiles of the training split (classes ranked by a seeded permutation, rank r = 0..C-1):
  long tail  n_r = round(head_count * (cutoff / head_count) ** (r / (C - 1)))
             so the head class has head_count positives and the rarest exactly `cutoff`;
  step       the last `num_tail_classes` ranks have `cutoff`, the others head_count
             (Buda et al. 2018, "A systematic study of the class imbalance problem in CNNs").
The achieved training positives EQUAL the profile: the builder decides, image by image, which
classes each image shows so that every class gets exactly its count (see `assign_classes`).
Validation follows the same profile scaled by `val_fraction`, with at least `val_min_positives`
of every class so per-label thresholds can be chosen; test is balanced, `test_positives` per class.
Train and validation draw disjoint items from Fashion-MNIST's training images, test from t10k.

Classes: `classes=None` (the default) uses all ten Fashion-MNIST classes. A list of Fashion-MNIST
class indices (e.g. [1, 3, 5, 7, 9]; at least 4 for the 2 x 2 grid) draws items from those
classes only, and the label space is those classes, label j being Fashion-MNIST class
classes[j] (its name, its items); profiles, ranks and counts are then over len(classes) labels.
Two catalogs on disjoint class lists share no label and no item (a pretraining/fine-tuning split).

Defaults (CPU tier): head_count 1000 gives about 2,000 training images of 28 x 28, an epoch of a
small ResNet in seconds on two cores; head_prevalence 0.5 sizes a split so that its most frequent
class shows in about half its images. Builds take well under a second after Fashion-MNIST is
decoded, and are cached on disk keyed by their parameters.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from experiments.data.cache import atomic_save_npz, cache_root, load_npz, params_key
from experiments.data.dataset import Dataset, Splits
from experiments.data.fashion_mnist import CLASS_NAMES, SHA256, load_fashion_mnist

# Part of every cache key: bump it whenever a change to this module changes the built arrays.
BUILDER_VERSION = 1
# Training positives of the most frequent class unless a config says otherwise: the one default
# of the data side (about 2,000 training images at the CPU tier, see above).
DEFAULT_HEAD_COUNT = 1000
CELLS = 4  # a 2 x 2 grid
SPLITS = ("train", "val", "test")

# RNG streams, one per independent random choice, so that changing one choice (say the test
# size) leaves the others (the training images) unchanged.
_STREAM_CLASS_ORDER, _STREAM_ITEMS = 0, 1
_STREAM_PACK = {"train": 2, "val": 3, "test": 4}


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


# ---------------------------------------------------------------------------------------------
# Label profiles


def class_order(num_classes: int, seed: int) -> np.ndarray:
    """The seeded permutation of classes from head (rank 0) to tail (rank C-1), int64 [C]."""
    return _rng(seed, _STREAM_CLASS_ORDER).permutation(num_classes)


def _check_profile_args(num_classes: int, head_count: int, cutoff: int) -> None:
    if num_classes < 2:
        raise ValueError(f"A label profile needs at least 2 classes; got {num_classes}.")
    if not 1 <= cutoff <= head_count:
        raise ValueError(
            f"Need 1 <= cutoff <= head_count; got cutoff={cutoff}, head_count={head_count}. "
            "Raise head_count or lower the cut-off."
        )


def long_tail_profile(num_classes: int, *, head_count: int, cutoff: int, seed: int) -> np.ndarray:
    """Training positives per class, int64 [C]: exponential from head_count down to cutoff.

    Rank r (in `class_order(C, seed)`) gets round(head_count * (cutoff/head_count)**(r/(C-1))).
    """
    _check_profile_args(num_classes, head_count, cutoff)
    ranks = np.arange(num_classes)
    by_rank = np.rint(head_count * (cutoff / head_count) ** (ranks / (num_classes - 1)))
    by_rank[0], by_rank[-1] = head_count, cutoff  # exact ends, whatever the rounding
    counts = np.empty(num_classes, np.int64)
    counts[class_order(num_classes, seed)] = by_rank.astype(np.int64)
    return counts


def step_profile(
    num_classes: int, *, head_count: int, cutoff: int, seed: int, num_tail_classes: int
) -> np.ndarray:
    """Training positives per class, int64 [C]: the last `num_tail_classes` ranks at cutoff."""
    _check_profile_args(num_classes, head_count, cutoff)
    if not 1 <= num_tail_classes < num_classes:
        raise ValueError(
            f"num_tail_classes must be in 1..{num_classes - 1}; got {num_tail_classes}."
        )
    counts = np.full(num_classes, head_count, np.int64)
    counts[class_order(num_classes, seed)[num_classes - num_tail_classes :]] = cutoff
    return counts


def val_profile(train_counts: np.ndarray, *, fraction: float, min_positives: int) -> np.ndarray:
    """Validation positives: max(round(fraction * train), min_positives) per class."""
    if not 0 <= fraction:
        raise ValueError(f"val_fraction must be >= 0; got {fraction}.")
    return np.maximum(np.rint(fraction * train_counts).astype(np.int64), min_positives)


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


# ---------------------------------------------------------------------------------------------
# Items and pixels


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
# The whole build, a pure function of the items and the parameters


class CatalogSplit(NamedTuple):
    """One built split: images uint8 [N, S, S, 1], labels uint8 [N, C], and the layout
    behind them, cell_classes and cell_items int64 [N, 4] (-1 = empty; items index the split's
    source array: Fashion-MNIST train for train/val, t10k for test)."""

    images: np.ndarray
    labels: np.ndarray
    cell_classes: np.ndarray
    cell_items: np.ndarray


def requested_counts(
    num_classes: int,
    *,
    profile: str,
    cutoff: int,
    seed: int,
    head_count: int,
    num_tail_classes: int,
    val_fraction: float,
    val_min_positives: int,
    test_positives: int,
) -> dict[str, np.ndarray]:
    """Positives per class that each split is built to have, {split: int64 [C]}."""
    if profile == "long_tail":
        train = long_tail_profile(num_classes, head_count=head_count, cutoff=cutoff, seed=seed)
    elif profile == "step":
        train = step_profile(
            num_classes,
            head_count=head_count,
            cutoff=cutoff,
            seed=seed,
            num_tail_classes=num_tail_classes,
        )
    else:
        raise ValueError(f"Unknown profile {profile!r}; use 'long_tail' or 'step'.")
    if test_positives < 1:
        raise ValueError(f"test_positives must be >= 1; got {test_positives}.")
    val = val_profile(train, fraction=val_fraction, min_positives=val_min_positives)
    return {"train": train, "val": val, "test": np.full(num_classes, test_positives, np.int64)}


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
    items_rng = _rng(seed, _STREAM_ITEMS)
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
            wanted[split], head_prevalence=head_prevalence, rng=_rng(seed, _STREAM_PACK[split])
        )
        cell_items = fill_items(cell_classes, pools)
        splits[split] = CatalogSplit(
            images=render_images(cell_items, items, image_size),
            labels=multi_hot(cell_classes, num_classes),
            cell_classes=cell_classes,
            cell_items=cell_items,
        )
    return splits, wanted


# ---------------------------------------------------------------------------------------------
# The task loaders: Fashion-MNIST + build + on-disk cache


def check_classes(classes: Any) -> tuple[int, ...] | None:
    """`classes` as a tuple of Fashion-MNIST class indices (None stays None, all ten classes);
    ValueError naming the problem and the fix otherwise."""
    if classes is None:
        return None
    num = len(CLASS_NAMES)
    example = "e.g. --set data.classes=[1,3,5,7,9]"
    if isinstance(classes, str | bytes) or not isinstance(classes, list | tuple):
        raise ValueError(
            f"data.classes must be a list of Fashion-MNIST class indices 0..{num - 1} ({example}) "
            f"or None for all {num}; got {classes!r}."
        )
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num]
    if bad:
        raise ValueError(
            f"data.classes holds {bad!r}, not Fashion-MNIST class indices 0..{num - 1} "
            f"({', '.join(f'{i} {n}' for i, n in enumerate(CLASS_NAMES))}); {example}."
        )
    if len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if list(classes).count(c) > 1})
        raise ValueError(f"data.classes repeats {repeated}; list each class once ({example}).")
    if len(classes) < CELLS:
        raise ValueError(
            f"data.classes has {len(classes)} classes but the 2 x 2 catalog needs at least "
            f"{CELLS} (no class shows twice in an image); {example}."
        )
    return tuple(int(c) for c in classes)


def class_subset_labels(item_labels: np.ndarray, classes: tuple[int, ...] | None) -> np.ndarray:
    """Item labels in the catalog's label space: class classes[j] -> j, other classes -> -1
    (never drawn); unchanged when `classes` is None."""
    if classes is None:
        return item_labels
    mapped = np.full(item_labels.shape, -1, np.int64)
    for j, c in enumerate(classes):
        mapped[item_labels == c] = j
    return mapped


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def label_names(classes: tuple[int, ...] | None) -> tuple[str, ...]:
    """The catalog's label names: Fashion-MNIST's, or those of `classes` in their order."""
    return CLASS_NAMES if classes is None else tuple(CLASS_NAMES[c] for c in classes)


def _cache_path(task: str, params: dict[str, Any], cache_dir, key: str) -> Path:
    return (
        cache_root(cache_dir)
        / "catalog"
        / f"{task}-cutoff{params['cutoff']}-seed{params['seed']}-{key}.npz"
    )


def _build(
    task: str, params: dict[str, Any], key: str, *, data_dir, cache_dir, download: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Builds the task from Fashion-MNIST: the cached arrays and the provenance."""
    source = load_fashion_mnist(data_dir=data_dir, cache_dir=cache_dir, download=download)
    params = dict(params)
    classes = params.pop("classes", None)
    names = label_names(classes)
    built, wanted = build_catalog(
        source.train_images,
        class_subset_labels(source.train_labels, classes),
        source.test_images,
        class_subset_labels(source.test_labels, classes),
        num_classes=len(names),
        **params,
    )
    if classes is not None:
        params["classes"] = list(classes)
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_images"] = built[split].images
        arrays[f"{split}_labels"] = built[split].labels
        arrays[f"{split}_cell_items"] = built[split].cell_items
    provenance = {
        "task": task,
        "builder": "experiments.data.catalog",
        "builder_version": BUILDER_VERSION,
        "cache_key": key,
        "params": params,
        "source": source.provenance,
        "label_names": list(names),
        "class_order": class_order(len(names), params["seed"]).tolist(),
        "requested_counts": {s: wanted[s].tolist() for s in SPLITS},
        "achieved_counts": {
            s: built[s].labels.sum(axis=0, dtype=np.int64).tolist() for s in SPLITS
        },
        "num_examples": {s: len(built[s].labels) for s in SPLITS},
    }
    if provenance["achieved_counts"]["train"] != provenance["requested_counts"]["train"]:
        raise AssertionError("catalog builder bug: training counts differ from the profile")
    return arrays, provenance


def _load(
    task: str,
    params: dict[str, Any],
    *,
    data_dir: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    download: bool,
    use_cache: bool,
) -> Splits:
    """Checks `params` (the keyword arguments of `build_catalog`), then reads the build from the
    cache or builds it (and caches it)."""
    params = dict(params)
    for name, minimum in (("cutoff", 1), ("seed", 0), ("head_count", 1), ("image_size", 1)):
        params[name] = _as_int(name, params[name], minimum)
    classes = check_classes(params.pop("classes", None))
    if classes is not None:  # all ten classes keep the key (and the build) they always had
        params["classes"] = list(classes)
    key = params_key(
        {"builder_version": BUILDER_VERSION, "source_sha256": SHA256, "params": params}
    )
    path = _cache_path(task, params, cache_dir, key)
    cached = load_npz(path) if use_cache else None
    if cached is None:
        arrays, provenance = _build(
            task, params, key, data_dir=data_dir, cache_dir=cache_dir, download=download
        )
        if use_cache:
            atomic_save_npz(path, arrays, provenance)
    else:
        arrays, provenance = cached
    return Splits(
        *(
            Dataset(
                images=arrays[f"{s}_images"],
                labels=arrays[f"{s}_labels"],
                label_names=label_names(classes),
                split=s,
                provenance=provenance,
            )
            for s in SPLITS
        )
    )


def load_catalog(
    *,
    cutoff: int = 6,
    seed: int = 0,
    head_count: int = DEFAULT_HEAD_COUNT,
    image_size: int = 28,
    val_fraction: float = 0.25,
    val_min_positives: int = 5,
    test_positives: int = 200,
    head_prevalence: float = 0.5,
    classes: list[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    use_cache: bool = True,
) -> Splits:
    """The catalog task with the long-tail profile (see the module docstring).

    cutoff: training positives of the rarest class; head_count: of the most frequent class;
    image_size: 28 (items at 14 x 14) or 56 (items at 28 x 28); classes: Fashion-MNIST class
    indices to draw from (None: all ten; see the module docstring). Reads the build from
    `<cache>/catalog/` when present, else builds and caches it (npz + JSON provenance).
    """
    params = {
        "profile": "long_tail",
        "cutoff": cutoff,
        "seed": seed,
        "head_count": head_count,
        "image_size": image_size,
        "val_fraction": val_fraction,
        "val_min_positives": val_min_positives,
        "test_positives": test_positives,
        "head_prevalence": head_prevalence,
        "classes": classes,
    }
    return _load(
        "catalog",
        params,
        data_dir=data_dir,
        cache_dir=cache_dir,
        download=download,
        use_cache=use_cache,
    )


def load_catalog_step(
    *,
    cutoff: int = 6,
    seed: int = 0,
    head_count: int = DEFAULT_HEAD_COUNT,
    num_tail_classes: int = 5,
    image_size: int = 28,
    val_fraction: float = 0.25,
    val_min_positives: int = 5,
    test_positives: int = 200,
    head_prevalence: float = 0.5,
    classes: list[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    use_cache: bool = True,
) -> Splits:
    """The catalog task with the step profile: `num_tail_classes` classes (the last ranks of the
    seeded class order) at `cutoff` training positives, the others at `head_count`; `classes`
    as for `load_catalog`."""
    params = {
        "profile": "step",
        "cutoff": cutoff,
        "seed": seed,
        "head_count": head_count,
        "num_tail_classes": num_tail_classes,
        "image_size": image_size,
        "val_fraction": val_fraction,
        "val_min_positives": val_min_positives,
        "test_positives": test_positives,
        "head_prevalence": head_prevalence,
        "classes": classes,
    }
    return _load(
        "catalog_step",
        params,
        data_dir=data_dir,
        cache_dir=cache_dir,
        download=download,
        use_cache=use_cache,
    )
