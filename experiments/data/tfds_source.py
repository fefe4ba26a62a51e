"""TensorFlow Datasets as a data source: task `tfds` (any TFDS image dataset) and the MLT tasks.

Choose it as a task of its own, with the dataset's TFDS name in `data.dataset` (not
`data.name`: `load_task(name, **data)` takes the task's name as `name`):

  python -m experiments.run --config tfds_proposed --set data.dataset=voc/2007 \\
      --set data.train_split=trainval --set data.test_split=test

`data.data_dir` is the TFDS data folder holding the prepared dataset (default: TFDS's own,
$TFDS_DATA_DIR or ~/tensorflow_datasets). Nothing is downloaded unless `download=True`: prepare
datasets with `tfds build NAME` (see README). TensorFlow Datasets is an optional extra,
`pip install -e ".[tfds]"`; it is imported inside the functions that read (`import_tfds`) and
nowhere else, so the core library and the other tasks never need it.

Where things are. This module is the task and its splits; the features it reads (image,
labels, example ids) are found in `experiments.data.tfds_features`; TFDS splits are read,
decoded and cached one at a time in `experiments.data.tfds_decode`; Fashion-MNIST exported
from TFDS as IDX files for the catalog task is `experiments.data.tfds_fashion_mnist`, whose
command line is this module's (`python -m experiments.data.tfds_source fashion-mnist-idx
DEST`). Every name of those modules that other code uses can be imported from here.

Splits of task `tfds`: train and test are TFDS split expressions (`train_split`, `test_split`);
validation is `val_split` if given, else round(val_fraction * n) rows of the training split by
seeded permutation (`experiments.data.images.seeded_partition`). The label-frequency cut-off is
`experiments.data.images.apply_cutoff`, as for every image task.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.data.dataset import Dataset, Splits
from experiments.data.images import (  # noqa: F401 (the errors re-exported)
    DataError,
    DataNotFoundError,
    apply_cutoff,
    seeded_partition,
)
from experiments.data.tfds_decode import (  # noqa: F401 (re-exported)
    BUILDER_VERSION,
    cached_labels,
    decode_image,
    decode_split,
    ensure_selections,
    ensure_split,
    image_mode,
    load_parts,
    load_split,
    open_builder,
    read_examples,
    read_labels,
)
from experiments.data.tfds_fashion_mnist import (  # noqa: F401 (re-exported)
    export_fashion_mnist_idx,
    fashion_mnist_from_tfds,
    idx_bytes,
    main,
    tfds_storage_order,
)
from experiments.data.tfds_features import (  # noqa: F401 (re-exported)
    ID_FEATURES,
    INSTALL_COMMAND,
    LABEL_PREFERENCE,
    LabelSpec,
    TfdsNotInstalledError,
    example_id,
    find_image_key,
    find_label,
    import_tfds,
)

__all__ = [
    "INSTALL_COMMAND",
    "LabelSpec",
    "TfdsNotInstalledError",
    "decode_split",
    "ensure_split",
    "find_image_key",
    "find_label",
    "import_tfds",
    "load_split",
    "load_tfds",
    "read_labels",
]


def make_splits(
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    label_names: Sequence[str],
    *,
    cutoff: int | None,
    seed: int,
    provenance: dict[str, Any],
) -> Splits:
    """Splits from {split: (images, labels)} over the full label set, after the cut-off."""
    result = apply_cutoff(parts["train"][1], cutoff, seed)
    kept = result.kept_labels
    names = tuple(label_names[j] for j in kept)
    keep = result.train_keep
    arrays = {
        "train": (parts["train"][0][keep], parts["train"][1][keep][:, kept]),
        "val": (parts["val"][0], parts["val"][1][:, kept]),
        "test": (parts["test"][0], parts["test"][1][:, kept]),
    }
    provenance = {
        **provenance,
        "cutoff": cutoff,
        "seed": seed,
        **result.provenance(list(label_names)),
        "num_examples": {s: len(a[1]) for s, a in arrays.items()},
    }
    return Splits(
        *(
            Dataset(images=a[0], labels=a[1], label_names=names, split=s, provenance=provenance)
            for s, a in arrays.items()
        )
    )


def load_tfds(
    *,
    dataset: str | None = None,
    cutoff: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    channels: int | None = None,
    train_split: str = "train",
    val_split: str | None = None,
    test_split: str = "test",
    val_fraction: float = 0.1,
    image_key: str | None = None,
    label_key: str | None = None,
    download: bool = False,
    progress: bool = True,
) -> Splits:
    """Any TFDS image dataset with ClassLabel labels as a multi-label task (module docstring).

    Args:
      dataset: TFDS name, optionally with config and version ("voc/2007", "mnist:3.0.1").
      data_dir: TFDS data folder of the prepared dataset (None: TFDS's default).
      train_split, val_split, test_split: TFDS split expressions; val_split None carves
        round(val_fraction * n) training rows (seeded).
      image_key, label_key: choose the features when the defaults do not fit.
    """
    builder = open_builder(dataset or "", data_dir, download=download)
    features = builder.info.features
    image = find_image_key(features, image_key)
    spec = find_label(features, label_key)
    mode = image_mode(builder, image, channels)
    common = {"image_size": image_size, "mode": mode, "cache_dir": cache_dir, "progress": progress}
    roles = [("train", train_split), ("val", val_split), ("test", test_split)]
    paths = {
        role: ensure_split(builder, split, image, spec, **common)
        for role, split in roles
        if split is not None
    }  # built one split at a time; only now are they loaded together
    parts = load_parts(paths)
    if val_split is None:
        images, labels = parts["train"]
        is_val = seeded_partition(len(labels), [val_fraction], seed, salt=0) == 1
        parts["val"] = (images[is_val], labels[is_val])
        parts["train"] = (images[~is_val], labels[~is_val])
    provenance = {
        "source": "tfds",
        "dataset": builder.info.full_name,
        "name": builder.name,
        "version": str(builder.info.version),
        "splits": {
            "train": train_split,
            "val": val_split
            or f"round({val_fraction} * n) rows of {train_split}, seeded permutation",
            "test": test_split,
        },
        "image_feature": image,
        "label_feature": spec.path,
        "label_kind": spec.kind,
        "cache_files": {role: path.name for role, path in paths.items()},
        "image_size": image_size,
        "channels": 1 if mode == "L" else 3,
        "resize": "whole image, padded to square (black), bicubic resize",
    }
    return make_splits(parts, spec.names, cutoff=cutoff, seed=seed, provenance=provenance)


if __name__ == "__main__":
    raise SystemExit(main())
