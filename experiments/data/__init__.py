"""Data layer of the benchmark suite: one small module per source, one `Dataset` type.

`load_task(name, **params)` is the single entry point the trainer uses. Each task loader takes
keyword arguments only (at least `cutoff`, `seed`, `data_dir`, `cache_dir`; the rest are the
task's own, from the config's `data` block) and returns `Splits(train, val, test)`.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from experiments.data.dataset import Dataset, Splits

__all__ = ["TASKS", "Dataset", "Splits", "load_task"]

# name -> "module:function"; modules are imported lazily so that a task's optional needs
# (image decoding for Fashionpedia, say) cost nothing to the others.
TASKS: dict[str, str] = {
    "catalog": "experiments.data.catalog:load_catalog",
    "catalog_step": "experiments.data.catalog:load_catalog_step",
    "sleevetype": "experiments.data.fashionpedia:load_sleevetype",
    "archetype": "experiments.data.fashionpedia:load_archetype",
    "csv": "experiments.data.csv_catalog:load_csv_catalog",
    "tfds": "experiments.data.tfds_source:load_tfds",  # the [tfds] extra
    "voc_mlt": "experiments.data.mlt:load_voc_mlt",
    "coco_mlt": "experiments.data.mlt:load_coco_mlt",
}


def get_task_loader(name: str):
    """The loader function of task `name`; an unknown name lists the valid ones."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown task {name!r}.{hint} Valid tasks: {', '.join(sorted(TASKS))}.")
    module_name, function_name = TASKS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def load_task(name: str, **params: Any) -> Splits:
    """Builds (or reads from cache) the train/val/test splits of task `name`."""
    return get_task_loader(name)(**params)
