"""The one in-memory dataset type that every data source produces."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One split of a multi-label image task, held in memory.

    Attributes:
      images: uint8 array [N, H, W, channels] (channels is 1 or 3).
      labels: uint8 multi-hot array [N, C].
      label_names: the C label names, in column order.
      split: "train", "val" or "test".
      provenance: JSON-serialisable facts about how the split was built: source files and
        their SHA-256, build parameters, seed. Stored verbatim in every run record.
    """

    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    split: str
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        images, labels = self.images, self.labels
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"Dataset images must be uint8 [N, H, W, 1 or 3]; got {images.dtype} "
                f"{images.shape}. Convert with np.asarray(x, np.uint8) and add a channel axis."
            )
        if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"Dataset labels must be [N, C] with N = {images.shape[0]} (the number of "
                f"images); got {labels.shape}."
            )
        if labels.shape[1] != len(self.label_names):
            raise ValueError(
                f"Dataset has {labels.shape[1]} label columns but {len(self.label_names)} "
                "label names; pass one name per column."
            )
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise ValueError("Dataset labels must be multi-hot (0 or 1).")

    @property
    def num_examples(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_labels(self) -> int:
        return int(self.labels.shape[1])

    def label_counts(self) -> np.ndarray:
        """Positives per label, int64 [C]."""
        return self.labels.sum(axis=0, dtype=np.int64)


class Splits(NamedTuple):
    """A task's three splits. Thresholds are chosen on `val` and applied to `test`."""

    train: Dataset
    val: Dataset
    test: Dataset
