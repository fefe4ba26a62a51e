"""Config settings of the TensorFlow Datasets tasks: `tfds` (any TFDS image dataset), `voc_mlt`
and `coco_mlt` (Wu et al., ECCV 2020). They need the optional extra `pip install -e ".[tfds]"`
and a prepared dataset (README, "TensorFlow Datasets and the MLT benchmarks").

  python -m experiments.run --config tfds_proposed --set data.dataset=voc/2007 \\
      --set data.train_split=trainval
  python -m experiments.run --config voc_mlt_distribution_balanced
  python -m experiments.run --config coco_mlt_proposed --set data.image_ids=coco_mlt_ids.txt
"""

from __future__ import annotations

import ml_collections

# The protocols' rarest training class: at this cut-off the sampled set is used as it is.
MLT_CUTOFFS = {"voc_mlt": 4, "coco_mlt": 6}


def _optional_str() -> ml_collections.FieldReference:
    return ml_collections.FieldReference(None, field_type=str)


def tfds(config: ml_collections.ConfigDict) -> None:
    """Any TensorFlow Datasets image dataset with ClassLabel labels (`data.dataset`, e.g.
    voc/2007); train and test are TFDS splits (`data.train_split`, `data.test_split`), val a
    seeded tenth of train unless `data.val_split` names one. Needs `pip install -e ".[tfds]"`."""
    config.task = "tfds"
    config.data.dataset = _optional_str()
    config.data.train_split = "train"
    config.data.val_split = _optional_str()
    config.data.test_split = "test"
    config.data.val_fraction = 0.1
    config.data.image_key = _optional_str()
    config.data.label_key = _optional_str()
    config.data.image_size = 64


def _mlt(config: ml_collections.ConfigDict, task: str) -> None:
    config.task = task
    config.data.image_size = 64
    config.data.head_images = ml_collections.FieldReference(None, field_type=int)
    config.data.tail_images = ml_collections.FieldReference(None, field_type=int)
    config.data.val_images = 1000
    config.data.image_ids = _optional_str()
    config.data.label_key = _optional_str()
    config.cutoffs = [MLT_CUTOFFS[task]]


def voc_mlt(config: ml_collections.ConfigDict) -> None:
    """VOC-MLT (Wu et al., ECCV 2020): about 1,142 VOC 2012 trainval images sampled to a
    Pareto-shaped tail (775 images of the head class down to 4), tested on VOC 2007 test (4,952);
    `data.image_ids=FILE` uses a published list instead. Needs TFDS voc/2012 and voc/2007."""
    _mlt(config, "voc_mlt")


def coco_mlt(config: ml_collections.ConfigDict) -> None:
    """COCO-MLT (Wu et al., ECCV 2020): about 1,909 COCO 2017 train images sampled to a
    Pareto-shaped tail (1,128 down to 6), tested on COCO 2017 val (5,000); `data.image_ids=FILE`
    uses a published list instead. Needs TFDS coco/2017."""
    _mlt(config, "coco_mlt")


TASKS = {"tfds": tfds, "voc_mlt": voc_mlt, "coco_mlt": coco_mlt}
