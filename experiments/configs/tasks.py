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
  python -m experiments.run --config tfds_proposed --set data.dataset=voc/2007 \\
      --set data.train_split=trainval                       # any TFDS image dataset ([tfds])
  python -m experiments.run --config voc_mlt_distribution_balanced   # Wu et al., ECCV 2020
  python -m experiments.run --config coco_mlt_proposed --set data.image_ids=coco_mlt_ids.txt
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

import ml_collections

from experiments.data import TASK_LOADERS  # the data side's task -> loader table
from experiments.data.catalog_profile import DEFAULT_HEAD_COUNT


@dataclasses.dataclass(frozen=True)
class Task:
    """A task's config settings.

    Attributes:
      name: `experiments.data` task name.
      doc: what the data is and what it needs.
      data: the task's own `config.data` fields at the default (cpu) tier.
      optional_paths: `config.data` fields that are an optional string (None until set).
      optional_ints: `config.data` fields that are an optional integer (None until set).
      cutoffs: the task's own cut-offs, where its protocol fixes them (None: the base's).
      fashion_mnist_items: images are composed of 28 x 28 Fashion-MNIST items (sizes follow
        them and the training set has a head count); otherwise photo crops resized freely.
      needs_download: the user downloads the data; without it runs fail before training.
      augment: the task's label-preserving augmentation (`experiments.augment`): the catalog's
        items may move between cells and be mirrored; photo tasks keep "none" unless set.
    """

    name: str
    doc: str
    data: Mapping[str, Any]
    optional_paths: tuple[str, ...] = ()
    optional_ints: tuple[str, ...] = ()
    cutoffs: tuple[int, ...] | None = None
    fashion_mnist_items: bool = False
    needs_download: bool = False
    augment: str = "none"

    def apply(self, config: ml_collections.ConfigDict) -> None:
        config.task = self.name
        config.augment = self.augment
        for key, value in self.data.items():
            config.data[key] = value
        for key in self.optional_paths:
            config.data[key] = ml_collections.FieldReference(None, field_type=str)
        for key in self.optional_ints:
            config.data[key] = ml_collections.FieldReference(None, field_type=int)
        if self.cutoffs is not None:
            config.cutoffs = list(self.cutoffs)


# classes None: all ten Fashion-MNIST classes; a list of class indices draws from those only.
_CATALOG_DATA = types.MappingProxyType(
    {"head_count": DEFAULT_HEAD_COUNT, "image_size": 28, "classes": None}
)
_CROP_DATA = types.MappingProxyType({"image_size": 64})
_TFDS_DATA = types.MappingProxyType(
    {"train_split": "train", "test_split": "test", "val_fraction": 0.1, "image_size": 64}
)
_MLT_DATA = types.MappingProxyType({"image_size": 64, "val_images": 1000})
# The MLT protocols' rarest training class: at this cut-off the sampled set is used as drawn.
MLT_CUTOFFS = types.MappingProxyType({"voc_mlt": 4, "coco_mlt": 6})

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "catalog",
            "Embedded default: 2 x 2 grids of Fashion-MNIST items, labels = garment classes "
            "present; long-tailed training split with exponentially decreasing class "
            "frequencies from data.head_count down to the cut-off, balanced test. Needs only "
            "the Fashion-MNIST files that the repository carries.",
            _CATALOG_DATA,
            fashion_mnist_items=True,
            augment="cells",
        ),
        Task(
            "catalog_step",
            "As catalog, with step imbalance: a block of classes at the cut-off, the rest at "
            "data.head_count (the robustness comparison).",
            _CATALOG_DATA,
            fashion_mnist_items=True,
            augment="cells",
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
        Task(
            "tfds",
            "Any TensorFlow Datasets image dataset with ClassLabel labels (data.dataset, e.g. "
            "voc/2007); train and test are TFDS splits (data.train_split, data.test_split), val "
            "a seeded tenth of train unless data.val_split names one. Needs the [tfds] extra.",
            _TFDS_DATA,
            optional_paths=("dataset", "val_split", "image_key", "label_key"),
            needs_download=True,
        ),
        Task(
            "voc_mlt",
            "VOC-MLT (Wu et al., ECCV 2020): about 1,142 VOC 2012 trainval images sampled to a "
            "Pareto-shaped tail (775 images of the head class down to 4), tested on VOC 2007 "
            "test (4,952); data.image_ids=FILE uses a published list. Needs TFDS voc/2012 and "
            "voc/2007 and the [tfds] extra.",
            _MLT_DATA,
            optional_paths=("image_ids", "label_key"),
            optional_ints=("head_images", "tail_images"),
            cutoffs=(MLT_CUTOFFS["voc_mlt"],),
            needs_download=True,
        ),
        Task(
            "coco_mlt",
            "COCO-MLT (Wu et al., ECCV 2020): about 1,909 COCO 2017 train images sampled to a "
            "Pareto-shaped tail (1,128 down to 6), tested on COCO 2017 val (5,000); "
            "data.image_ids=FILE uses a published list. Needs TFDS coco/2017 and the [tfds] extra.",
            _MLT_DATA,
            optional_paths=("image_ids", "label_key"),
            optional_ints=("head_images", "tail_images"),
            cutoffs=(MLT_CUTOFFS["coco_mlt"],),
            needs_download=True,
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
