"""Tasks: which data a config trains on, and the task's own `config.data` fields.

The data side (`experiments.data`) defines which tasks exist and their loaders; this module holds
only each task's config settings, and checks on import that it covers exactly the data side's
tasks. The tier (see tiers.py) then changes sizes where it needs to.

Runs (any method in place of `proposed`, any tier with `--tier`):

  python -m experiments.run --config catalog_proposed         # embedded data, no download
  python -m experiments.run --config catalog_step_proposed
  python -m experiments.run --config sleevetype_proposed --set data.data_dir=/path/to/fashionpedia
  python -m experiments.run --config csv_proposed --set data.path=labels.csv \\
      --set data.data_dir=/path/to/images
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

import ml_collections

from experiments.data import TASK_LOADERS  # the data side's task -> loader table
from experiments.data.catalog import DEFAULT_HEAD_COUNT


@dataclasses.dataclass(frozen=True)
class Task:
    """A task's config settings.

    Attributes:
      name: `experiments.data` task name.
      doc: what the data is and what it needs.
      data: the task's own `config.data` fields at the default (cpu) tier.
      optional_paths: `config.data` fields that are an optional string (None until set).
      fashion_mnist_items: images are composed of 28 x 28 Fashion-MNIST items (sizes follow
        them and the training set has a head count); otherwise photo crops resized freely.
      needs_download: the user downloads the data; without it runs fail before training.
    """

    name: str
    doc: str
    data: Mapping[str, Any]
    optional_paths: tuple[str, ...] = ()
    fashion_mnist_items: bool = False
    needs_download: bool = False

    def apply(self, config: ml_collections.ConfigDict) -> None:
        config.task = self.name
        for key, value in self.data.items():
            config.data[key] = value
        for key in self.optional_paths:
            config.data[key] = ml_collections.FieldReference(None, field_type=str)


_CATALOG_DATA = types.MappingProxyType({"head_count": DEFAULT_HEAD_COUNT, "image_size": 28})
_CROP_DATA = types.MappingProxyType({"image_size": 64})

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "catalog",
            "Embedded default: 2 x 2 grids of Fashion-MNIST items, labels = garment classes "
            "present; long-tailed training split with exponentially decreasing class "
            "frequencies from data.head_count down to the cut-off, balanced test. Needs only "
            "Fashion-MNIST (apt-get install dataset-fashion-mnist, or LTWEIGHTS_DATA).",
            _CATALOG_DATA,
            fashion_mnist_items=True,
        ),
        Task(
            "catalog_step",
            "As catalog, with step imbalance: a block of classes at the cut-off, the rest at "
            "data.head_count (the robustness comparison).",
            _CATALOG_DATA,
            fashion_mnist_items=True,
        ),
        Task(
            "sleevetype",
            "Fashionpedia sleeve crops; labels are the sleeve-style attributes (puff, raglan, "
            "...). Needs Fashionpedia's annotations and images (data.data_dir or LTWEIGHTS_DATA).",
            _CROP_DATA,
            needs_download=True,
        ),
        Task(
            "archetype",
            "Fashionpedia garment crops; labels are the garment nickname attributes (trench "
            "coat, pea coat, ...). Needs Fashionpedia like sleevetype.",
            _CROP_DATA,
            needs_download=True,
        ),
        Task(
            "csv",
            "Bring-your-own catalog: a CSV or JSONL of image path and |-separated labels "
            "(data.path) with images under data.data_dir.",
            _CROP_DATA,
            optional_paths=("path",),
        ),
    )
}

# The embedded task that runs the same comparison without any download.
EMBEDDED_TASK = "catalog"


def check_against_data_tasks(data_tasks: Mapping[str, Any] = TASK_LOADERS) -> None:
    """Raises if the config side's tasks are not exactly the data side's."""
    if set(TASKS) != set(data_tasks):
        raise RuntimeError(
            f"experiments.configs.tasks has settings for {sorted(TASKS)} but experiments.data "
            f"defines {sorted(data_tasks)}; add or remove the Task entries so the two agree."
        )


check_against_data_tasks()
