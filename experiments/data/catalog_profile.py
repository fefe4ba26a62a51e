"""The catalog's label profiles: how many positives each class gets in each split.

Classes are ranked by a seeded permutation (`class_order`), rank r = 0..C-1 from head to tail:
  long tail  n_r = round(head_count * (cutoff / head_count) ** (r / (C - 1)))
             so the head class has head_count positives and the rarest exactly `cutoff`;
  step       the last `num_tail_classes` ranks have `cutoff`, the others head_count
             (Buda et al. 2018, "A systematic study of the class imbalance problem in CNNs").
Validation follows the training profile scaled by `val_fraction`, with at least
`val_min_positives` of every class; test is balanced, `test_positives` per class
(`requested_counts`). The catalog builder (`experiments.data.catalog_grid`) achieves these counts
exactly; the task loaders are in `experiments.data.catalog`.

The random choices of a build draw from one RNG stream each (`stream_rng`), so that changing one
choice (say the test size) leaves the others (the training images) unchanged.
"""

from __future__ import annotations

import numpy as np

# Training positives of the most frequent class unless a config says otherwise: the one default
# of the data side (about 2,000 training images at the CPU tier, see experiments.data.catalog).
DEFAULT_HEAD_COUNT = 1000

# RNG streams, one per independent random choice, so that changing one choice (say the test
# size) leaves the others (the training images) unchanged.
STREAM_CLASS_ORDER, STREAM_ITEMS = 0, 1
STREAM_PACK = {"train": 2, "val": 3, "test": 4}


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of one random choice (`STREAM_*`) of the build with data seed `seed`."""
    return np.random.default_rng([seed, stream])


def class_order(num_classes: int, seed: int) -> np.ndarray:
    """The seeded permutation of classes from head (rank 0) to tail (rank C-1), int64 [C]."""
    return stream_rng(seed, STREAM_CLASS_ORDER).permutation(num_classes)


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
