"""Tasks: which data a config trains on. Each function sets `config.task` and the task's own
`config.data` fields; the tier (see tiers.py) then sets sizes such as image size and head count.

Runs (any scheme in place of `proposed`, any tier with `--tier`):

  python -m experiments.run --config catalog_proposed         # embedded data, no download
  python -m experiments.run --config catalog_step_proposed
  python -m experiments.run --config sleevetype_proposed --set data.data_dir=/path/to/fashionpedia
  python -m experiments.run --config csv_proposed --set data.path=labels.csv \\
      --set data.data_dir=/path/to/images
"""

from __future__ import annotations

import ml_collections

from experiments.configs import tfds_tasks

# Tasks whose data the user downloads; without it they fail before training (see run.py).
FASHIONPEDIA_TASKS = ("sleevetype", "archetype")
# The embedded task that runs the same scheme comparison without any download.
EMBEDDED_TASK = "catalog"


def catalog(config: ml_collections.ConfigDict) -> None:
    """Embedded default: 2 x 2 grids of Fashion-MNIST items, labels = garment classes present.

    The training split is long-tailed with exponentially decreasing class frequencies from
    `data.head_count` down to the cut-off; validation follows the training profile with at least
    5 positives per class; test is balanced. Needs only Fashion-MNIST
    (`apt-get install dataset-fashion-mnist`, or LTWEIGHTS_DATA / data.data_dir).
    """
    config.task = "catalog"
    config.data.head_count = 1000
    config.data.image_size = 28


def catalog_step(config: ml_collections.ConfigDict) -> None:
    """As `catalog`, with step imbalance: a block of classes at the cut-off, the rest at
    `data.head_count` (the robustness comparison)."""
    catalog(config)
    config.task = "catalog_step"


def sleevetype(config: ml_collections.ConfigDict) -> None:
    """Fashionpedia sleeve crops; labels are the sleeve-style attributes (puff, raglan, ...).

    Needs Fashionpedia's attribute annotations and images (see README); point
    `data.data_dir` or LTWEIGHTS_DATA at them.
    """
    config.task = "sleevetype"
    config.data.image_size = 64


def archetype(config: ml_collections.ConfigDict) -> None:
    """Fashionpedia garment crops; labels are the garment nickname attributes (trench coat,
    pea coat, ...). Needs Fashionpedia like `sleevetype`."""
    config.task = "archetype"
    config.data.image_size = 64


def csv(config: ml_collections.ConfigDict) -> None:
    """Bring-your-own catalog: a CSV or JSONL of image path and `|`-separated labels
    (`data.path`) with images under `data.data_dir`."""
    config.task = "csv"
    config.data.path = ml_collections.FieldReference(None, field_type=str)
    config.data.image_size = 64


TASKS = {
    "catalog": catalog,
    "catalog_step": catalog_step,
    "sleevetype": sleevetype,
    "archetype": archetype,
    "csv": csv,
    **tfds_tasks.TASKS,  # tfds, voc_mlt, coco_mlt: need the [tfds] extra
}
