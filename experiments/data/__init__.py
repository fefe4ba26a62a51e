"""Data layer of the benchmark suite: one small module per source, one `Dataset` type.

`load_task(name, **params)` is the single entry point the trainer uses. `TASK_LOADERS` maps each
task name to its loader: a function of keyword arguments only (at least `cutoff`, `seed`,
`data_dir`, `cache_dir`; the rest are the task's own, from the config's `data` block) that
returns `Splits(train, val, test)`. It is the one definition of the task names; a new task is a
loader function plus one entry here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from experiments.data import catalog, csv_catalog, fashionpedia, mlt, tfds_source
from experiments.data.dataset import Dataset, Splits

__all__ = ["TASK_LOADERS", "Dataset", "Splits", "get_task_loader", "load_task"]

TASK_LOADERS: dict[str, Callable[..., Splits]] = {
    "catalog": catalog.load_catalog,
    "catalog_step": catalog.load_catalog_step,
    "sleevetype": fashionpedia.load_sleevetype,
    "archetype": fashionpedia.load_archetype,
    "csv": csv_catalog.load_csv_catalog,
    # TensorFlow Datasets (the [tfds] extra; tensorflow_datasets is imported only when they load)
    "tfds": tfds_source.load_tfds,
    "voc_mlt": mlt.load_voc_mlt,
    "coco_mlt": mlt.load_coco_mlt,
}


def get_task_loader(name: str) -> Callable[..., Splits]:
    """The loader function of task `name`; an unknown name lists the valid ones."""
    if name not in TASK_LOADERS:
        close = difflib.get_close_matches(name, TASK_LOADERS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown task {name!r}.{hint} Valid tasks: {', '.join(sorted(TASK_LOADERS))}."
        )
    return TASK_LOADERS[name]


def load_task(name: str, **params: Any) -> Splits:
    """Builds (or reads from cache) the train/val/test splits of task `name`."""
    return get_task_loader(name)(**params)
