"""Shared helpers of the image-file tasks (Fashionpedia crops, bring-your-own catalogs).

Reading, cropping and square-resizing images with Pillow; the on-disk array cache; the
seeded train/val/test partition; and the label-frequency cut-off. The task modules
(`fashionpedia`, `csv_catalog`) only decide *which* crops and labels they want.

Geometry. A COCO box [x, y, w, h] is in pixel units where pixel i covers [i, i + 1). Its
crop is the smallest integer box holding it, [floor(x), ceil(x + w)) x [floor(y), ceil(y + h)),
clipped to the image. The crop is then resized so that its longer side is `size` pixels,
keeping the aspect ratio (bicubic), and pasted in the centre of a `size` x `size` canvas of
`fill` (black): padding to a square, rather than stretching, keeps sleeve and garment shapes
undistorted.

Cut-off. `apply_cutoff` makes the label-frequency cut-off mean the same thing as in the catalog
task, "training positives of the rarest label":
  1. labels with fewer than `cutoff` training positives are dropped (they cannot reach it);
  2. the rarest remaining label is subsampled to exactly `cutoff` training positives by
     removing training examples positive for it (seeded order; an example is only removed when
     every other kept label it carries keeps more than `cutoff` positives, so no other label
     falls below the cut-off). Removed examples leave the task; val and test are never touched.
  `cutoff=None` keeps the natural distribution (every label with at least one training positive).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# One cache folder rule and one atomic file format for the whole data layer (re-exported).
from experiments.data.cache import atomic_save_npz as save_arrays
from experiments.data.cache import cache_root, params_key
from experiments.data.cache import load_npz as load_arrays

__all__ = [
    "BAD_ITEM_POLICIES",
    "CutoffResult",
    "DataError",
    "DataNotFoundError",
    "DataSkipWarning",
    "SkipLog",
    "apply_cutoff",
    "cache_key",
    "cache_root",
    "check_policy",
    "crop_box",
    "load_arrays",
    "read_image",
    "save_arrays",
    "seeded_partition",
    "sha256_file",
    "square_resize",
]

BAD_ITEM_POLICIES = ("error", "skip")
CACHE_FORMAT_VERSION = 1


class DataNotFoundError(FileNotFoundError):
    """A dataset the task needs is not on this machine; the message says how to get it."""


class DataError(ValueError):
    """The dataset is present but malformed (bad image, box, label, split, ...)."""


# ---------------------------------------------------------------------------------------------
# Files and cache folder


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(params: dict[str, Any]) -> str:
    """A short stable hash of JSON-serialisable build parameters (and the cache format)."""
    return params_key({"format": CACHE_FORMAT_VERSION, **params}, length=20)


# ---------------------------------------------------------------------------------------------
# Images


def read_image(path: str | os.PathLike, mode: str = "RGB"):
    """Opens and fully decodes an image with Pillow, converted to `mode` ("RGB" or "L").

    Raises DataNotFoundError when the file is missing and DataError when it cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Image file {path} does not exist.")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as e:
        raise DataError(f"Image file {path} cannot be decoded ({type(e).__name__}: {e}).") from e


def crop_box(
    bbox: Sequence[float], width: int, height: int, *, tolerance: float = 2.0
) -> tuple[int, int, int, int]:
    """Integer crop (left, top, right, bottom) of a COCO box [x, y, w, h] in a width x height image.

    The box may overshoot the image by `tolerance` pixels (annotation rounding) and is clipped;
    a larger overshoot means the box belongs to another image size, and a box with non-positive
    or non-finite size is degenerate: both raise DataError.
    """
    if len(bbox) != 4:
        raise DataError(f"bbox {list(bbox)} must be [x, y, w, h].")
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise DataError(f"bbox {list(bbox)} is degenerate (needs finite w > 0 and h > 0).")
    if x < -tolerance or y < -tolerance or x + w > width + tolerance or y + h > height + tolerance:
        raise DataError(f"bbox {list(bbox)} lies outside the {width} x {height} image.")
    left, top = max(0, math.floor(x)), max(0, math.floor(y))
    right, bottom = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    if right <= left or bottom <= top:
        raise DataError(f"bbox {list(bbox)} is empty inside the {width} x {height} image.")
    return left, top, right, bottom


def square_resize(image, size: int, *, fill: int = 0) -> np.ndarray:
    """Resizes a Pillow image to fit `size` x `size` keeping aspect, centred on a `fill` canvas.

    Returns uint8 [size, size, channels] (channels 3 for RGB, 1 for L).
    """
    from PIL import Image

    if size < 1:
        raise ValueError(f"image_size must be a positive number of pixels; got {size}.")
    w, h = image.size
    scale = size / max(w, h)
    new_w, new_h = max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    canvas = Image.new(image.mode, (size, size), fill if image.mode == "L" else (fill,) * 3)
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    array = np.asarray(canvas, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def check_policy(name: str, value: str) -> None:
    if value not in BAD_ITEM_POLICIES:
        raise ValueError(f"{name} must be one of {BAD_ITEM_POLICIES}; got {value!r}.")


@dataclasses.dataclass
class SkipLog:
    """Counts of skipped items per reason, with a few examples each, for provenance."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def add(self, reason: str, example: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    def summary(self, what: str) -> str:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        return f"{what}: skipped {self.total} ({parts})." if self.total else f"{what}: no skips."


# ---------------------------------------------------------------------------------------------
# Splits and the label-frequency cut-off


def seeded_partition(num_items: int, fractions: Sequence[float], seed: int, salt: int = 0):
    """Assigns items 0..n-1 to parts 1..k by `fractions` (rounded), the rest to part 0.

    A seeded permutation (np.random.default_rng([seed, salt])) is cut into consecutive blocks
    of round(fraction * n) items, so the sizes are exact and the result depends only on
    (n, fractions, seed, salt). Returns int64 [n] part indices.
    """
    for f in fractions:
        if not 0.0 <= f < 1.0:
            raise ValueError(f"Split fractions must lie in [0, 1); got {list(fractions)}.")
    if sum(fractions) >= 1.0:
        raise ValueError(
            f"Split fractions must sum below 1 (train gets the rest); got {fractions}."
        )
    order = np.random.default_rng([seed, salt]).permutation(num_items)
    parts = np.zeros(num_items, np.int64)
    start = 0
    for part, f in enumerate(fractions, start=1):
        size = round(f * num_items)
        parts[order[start : start + size]] = part
        start += size
    return parts


@dataclasses.dataclass(frozen=True)
class CutoffResult:
    """What `apply_cutoff` kept: label columns and training rows, and what it dropped."""

    kept_labels: np.ndarray  # int64 [K] column indices into the full label set
    dropped_labels: np.ndarray  # int64 column indices with fewer than cutoff training positives
    train_keep: np.ndarray  # bool [N_train]
    subsampled_label: int | None  # column index (full label set) subsampled to the cut-off
    removed_train_examples: int
    train_positives: np.ndarray  # int64 [C] training positives per label before the cut-off

    def provenance(self, label_names: Sequence[str]) -> dict[str, Any]:
        """The cut-off's provenance entries, with labels by name (full label set `label_names`)."""
        return {
            "dropped_labels": [
                {"name": label_names[j], "train_positives": int(self.train_positives[j])}
                for j in self.dropped_labels
            ],
            "subsampled_label": None
            if self.subsampled_label is None
            else label_names[self.subsampled_label],
            "removed_train_examples": self.removed_train_examples,
        }


def apply_cutoff(train_labels: np.ndarray, cutoff: int | None, seed: int) -> CutoffResult:
    """The label-frequency cut-off: see the module docstring for the two steps.

    Args:
      train_labels: uint8 multi-hot [N, C] of the training split over the full label set.
      cutoff: training positives of the rarest kept label, an int >= 1, or None (no cut-off).
      seed: seeds the order in which examples of the rarest label are removed.
    """
    counts = train_labels.sum(axis=0, dtype=np.int64)
    n = train_labels.shape[0]
    if cutoff is None:
        kept = np.flatnonzero(counts >= 1)
    else:
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)) or cutoff < 1:
            raise ValueError(f"cutoff must be an integer >= 1 or None; got {cutoff!r}.")
        kept = np.flatnonzero(counts >= cutoff)
    dropped = np.setdiff1d(np.arange(train_labels.shape[1]), kept)
    if kept.size == 0:
        raise DataError(
            f"No label has at least {cutoff or 1} training positives (the most frequent has "
            f"{int(counts.max(initial=0))}); lower the cut-off or use more data."
        )
    keep = np.ones(n, bool)
    if cutoff is None:
        return CutoffResult(kept, dropped, keep, None, 0, counts)
    rarest = int(kept[np.argmin(counts[kept])])  # ties: the first column
    remaining = counts.copy()
    candidates = np.flatnonzero(train_labels[:, rarest])
    for i in np.random.default_rng([seed, 1]).permutation(candidates):
        if remaining[rarest] <= cutoff:
            break
        others = np.setdiff1d(np.intersect1d(np.flatnonzero(train_labels[i]), kept), [rarest])
        if np.all(remaining[others] > cutoff):
            keep[i] = False
            remaining[np.flatnonzero(train_labels[i])] -= 1
    return CutoffResult(kept, dropped, keep, rarest, int(n - keep.sum()), counts)


class DataSkipWarning(UserWarning):
    """Some items were skipped under a `skip` policy; the counts are in the provenance."""
