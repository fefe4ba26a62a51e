"""VOC-MLT and COCO-MLT: the long-tailed multi-label benchmarks of Wu et al. (ECCV 2020).

Wu, Huang, Liu, Wang and Lin, "Distribution-Balanced Loss for Multi-Label Classification in
Long-Tailed Datasets", ECCV 2020, defined two training sets sampled from real multi-label data so
that their class frequencies follow a Pareto-shaped long tail:

  VOC-MLT   from VOC 2012 trainval: 1,142 images, 20 classes, 775 images of the most frequent
            class down to 4 of the rarest; tested on VOC 2007 test (4,952 images).
  COCO-MLT  from COCO 2017 train: 1,909 images, 80 classes, 1,128 down to 6; tested on COCO 2017
            val (5,000 images).

Published ResNet-50 results (ImageNet-pretrained backbone) with the distribution-balanced focal
loss: total mAP 78.94 on VOC-MLT and 53.55 on COCO-MLT (Wu et al. 2020).

The sampler (`sample_long_tail`, pure NumPy) follows that description; it does not reproduce the
published image lists, which `image_ids=FILE` loads instead (one image id per line):
  1. Class order: classes ranked by their number of images in the source pool, most frequent
     first (ties: lower class index first); rank r = 0 .. C-1.
  2. Targets: a Pareto (power-law) rank-frequency profile from `head_images` down to
     `tail_images`, t_r = round(head * (r + 1) ** -p) with p = ln(head / tail) / ln(C), so
     t_0 = head and t_{C-1} = tail exactly.
  3. Selection, from the rarest class to the most frequent: a class is topped up to its target
     with images drawn in a seeded random order from the unselected images that show it and show
     no rarer class (rarer classes are closed: their counts never grow again). Frequent classes
     also gain images through co-occurrence, so their achieved counts can exceed the targets;
     a class whose pool runs out stays below its target. Both are recorded: the achieved counts
     are part of every build's provenance, never assumed.
The draw depends only on (label matrix, head_images, tail_images, seed).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data import tfds_source as ts
from experiments.data.images import DataError, sha256_file
from experiments.data.tfds_features import canonical_id

__all__ = [
    "PROTOCOLS",
    "MLTProtocol",
    "MLTSample",
    "class_ranking",
    "pareto_targets",
    "read_image_ids",
    "sample_long_tail",
]


@dataclasses.dataclass(frozen=True)
class MLTProtocol:
    """One published protocol: where train and test come from and the published profile."""

    task: str
    dataset: str  # TFDS name of the training source
    train_split: str  # TFDS split expression of the pool the training images are drawn from
    test_dataset: str
    test_split: str
    num_classes: int
    num_train_images: int  # as published
    head_images: int
    tail_images: int
    num_test_images: int
    published_map: float  # DB-focal, ResNet-50, ImageNet-pretrained


PROTOCOLS: dict[str, MLTProtocol] = {
    "voc_mlt": MLTProtocol(
        task="voc_mlt",
        dataset="voc/2012",
        train_split="train+validation",
        test_dataset="voc/2007",
        test_split="test",
        num_classes=20,
        num_train_images=1142,
        head_images=775,
        tail_images=4,
        num_test_images=4952,
        published_map=78.94,
    ),
    "coco_mlt": MLTProtocol(
        task="coco_mlt",
        dataset="coco/2017",
        train_split="train",
        test_dataset="coco/2017",
        test_split="validation",
        num_classes=80,
        num_train_images=1909,
        head_images=1128,
        tail_images=6,
        num_test_images=5000,
        published_map=53.55,
    ),
}


def class_ranking(labels: np.ndarray) -> np.ndarray:
    """Classes from the most to the least frequent in `labels` (uint8 [N, C]); ties by index."""
    counts = np.asarray(labels).sum(axis=0, dtype=np.int64)
    return np.lexsort((np.arange(len(counts)), -counts))


def pareto_targets(num_classes: int, *, head_images: int, tail_images: int) -> np.ndarray:
    """Target images per rank, int64 [C]: round(head * (r + 1) ** -p), p = ln(head/tail)/ln(C)."""
    if num_classes < 2:
        raise ValueError(f"A long-tailed profile needs at least 2 classes; got {num_classes}.")
    if not 1 <= tail_images <= head_images:
        raise ValueError(
            f"Need 1 <= tail_images <= head_images; got head_images={head_images}, "
            f"tail_images={tail_images}."
        )
    exponent = math.log(head_images / tail_images) / math.log(num_classes)
    ranks = np.arange(1, num_classes + 1, dtype=np.float64)
    targets = np.rint(head_images * ranks**-exponent).astype(np.int64)
    targets[0], targets[-1] = head_images, tail_images  # exact ends whatever the rounding
    return targets


@dataclasses.dataclass(frozen=True)
class MLTSample:
    """The sampled training images and how close they came to the targets."""

    indices: np.ndarray  # int64 [M], sorted row indices into the source label matrix
    class_order: np.ndarray  # int64 [C], head to tail
    targets: np.ndarray  # int64 [C], per class (not per rank)
    achieved: np.ndarray  # int64 [C], per class

    def provenance(self, label_names: Sequence[str]) -> dict[str, Any]:
        names = list(label_names)
        return {
            "num_images": len(self.indices),
            "class_order": [names[c] for c in self.class_order],
            "target_images": {names[c]: int(self.targets[c]) for c in self.class_order},
            "achieved_images": {names[c]: int(self.achieved[c]) for c in self.class_order},
        }


def sample_long_tail(
    labels: np.ndarray, *, head_images: int, tail_images: int, seed: int
) -> MLTSample:
    """Draws a long-tailed subset of the rows of `labels` (see the module docstring).

    Args:
      labels: uint8 or bool multi-hot [N, C] of the source pool.
      head_images, tail_images: target images of the most and least frequent class.
      seed: seeds the order in which each class's candidate images are drawn.
    """
    labels = np.asarray(labels).astype(bool)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [N, C]; got shape {labels.shape}.")
    num_classes = labels.shape[1]
    order = class_ranking(labels)
    targets = np.empty(num_classes, np.int64)
    targets[order] = pareto_targets(num_classes, head_images=head_images, tail_images=tail_images)
    rng = np.random.default_rng([seed, 0x4D4C54])  # "MLT"
    selected = np.zeros(len(labels), bool)
    closed = np.zeros(num_classes, bool)
    for c in order[::-1]:  # tail to head
        need = int(targets[c] - labels[selected, c].sum())
        if need > 0:
            pool = np.flatnonzero(labels[:, c] & ~selected & ~labels[:, closed].any(axis=1))
            selected[rng.permutation(pool)[:need]] = True
        closed[c] = True
    indices = np.flatnonzero(selected)
    achieved = labels[indices].sum(axis=0, dtype=np.int64)
    return MLTSample(indices, order, targets, achieved)


def read_image_ids(path: str | os.PathLike) -> list[str]:
    """Canonical ids from a file of one id per line (blank lines and `#` comments ignored)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"image_ids file {path} does not exist; give a text file with one image id per line "
            "(e.g. 2008_000008 for VOC, 391895 for COCO)."
        )
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(canonical_id(line))
    if not ids:
        raise ValueError(f"image_ids file {path} holds no ids.")
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if repeated:
        raise ValueError(f"image_ids file {path} repeats ids {repeated[:5]}; list each once.")
    return ids


def select_ids(source_ids: Iterable[str], wanted: Sequence[str], *, where: str) -> np.ndarray:
    """Row indices (sorted) of the `wanted` canonical ids among `source_ids`; all must exist."""
    position = {}
    for i, source_id in enumerate(source_ids):
        position.setdefault(source_id, i)
    missing = [w for w in wanted if w not in position]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(wanted)} ids in the image_ids file are not in {where} "
            f"(first: {missing[:5]}); check that the file belongs to this dataset and split."
        )
    return np.sort(np.asarray([position[w] for w in wanted], np.int64))


# ---------------------------------------------------------------------------------------------
# The task loaders (TFDS reading in experiments.data.tfds_source)

_STREAM_VAL = 0x56414C  # "VAL"


def _train_sample(labels, ids, names, *, image_ids, head, tail, seed, where):
    """(training rows, their provenance): the rows listed in an image-ids file, or the seeded
    Pareto-shaped sample."""
    if image_ids is not None:
        train_rows = select_ids(ids.tolist(), read_image_ids(image_ids), where=where)
        achieved = labels[train_rows].sum(axis=0, dtype=np.int64)
        order = class_ranking(labels[train_rows])
        return train_rows, {
            "rule": "image_ids file",
            "image_ids_file": Path(image_ids).name,
            "image_ids_sha256": sha256_file(Path(image_ids).expanduser()),
            "num_images": len(train_rows),
            "achieved_images": {names[c]: int(achieved[c]) for c in order},
        }
    sample = sample_long_tail(labels, head_images=head, tail_images=tail, seed=seed)
    return sample.indices, {
        "rule": "Pareto-shaped class profile (experiments.data.mlt.sample_long_tail)",
        "head_images": head,
        "tail_images": tail,
        **sample.provenance(names),
    }


def _provenance(
    task, protocol, source, test_source, spec, sampling, num_source, labels_file, paths
):
    """What an MLT task's splits were built from, for the run record."""
    return {
        "source": "tfds",
        "task": task,
        "protocol": "Wu et al., ECCV 2020 (distribution-balanced loss)",
        "published": {
            "num_train_images": protocol.num_train_images,
            "head_images": protocol.head_images,
            "tail_images": protocol.tail_images,
            "num_test_images": protocol.num_test_images,
            "db_focal_resnet50_imagenet_map": protocol.published_map,
        },
        "datasets": {
            "train": f"{source.info.full_name} {protocol.train_split}",
            "val": f"{source.info.full_name} {protocol.train_split} (not in train, seeded)",
            "test": f"{test_source.info.full_name} {protocol.test_split}",
        },
        "versions": {
            protocol.dataset: str(source.info.version),
            protocol.test_dataset: str(test_source.info.version),
        },
        "label_feature": spec.path,
        "train_sampling": sampling,
        "source_images": num_source,
        "labels_cache_file": labels_file,
        "cache_files": {role: path.name for role, path in paths.items()},
        "resize": "whole image, padded to square (black), bicubic resize",
    }


def _val_rows(task, num_rows, train_rows, val_images, seed, where) -> np.ndarray:
    """`val_images` source rows outside the training sample: a seeded draw, sorted."""
    rest = np.setdiff1d(np.arange(num_rows), train_rows)
    if not 1 <= val_images <= len(rest):
        raise DataError(
            f"{task}: val_images={val_images} but {len(rest)} images of {where} are left after "
            "the training sample; set data.val_images between 1 and that."
        )
    return np.sort(np.random.default_rng([seed, _STREAM_VAL]).permutation(rest)[:val_images])


def _test_source(task, protocol, source, spec, *, data_dir, download, label_key):
    """(builder, image key, label spec) of the test set, checked to have the training labels."""
    test_source = (
        source
        if protocol.test_dataset == protocol.dataset
        else ts.open_builder(protocol.test_dataset, data_dir, download=download)
    )
    test_image = ts.find_image_key(test_source.info.features)
    test_spec = ts.find_label(test_source.info.features, label_key)
    if test_spec.names != spec.names:
        raise DataError(
            f"{task}: the label names of {protocol.test_dataset} differ from those of "
            f"{protocol.dataset}; the TFDS versions do not match."
        )
    return test_source, test_image, test_spec


def load_mlt(
    task: str,
    *,
    cutoff: int | None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    channels: int = 3,
    head_images: int | None = None,
    tail_images: int | None = None,
    val_images: int = 1000,
    image_ids: str | os.PathLike | None = None,
    label_key: str | None = None,
    download: bool = False,
    progress: bool = True,
):
    """The MLT task `task` ("voc_mlt" or "coco_mlt"); see load_voc_mlt / load_coco_mlt."""
    protocol = PROTOCOLS[task]
    head = protocol.head_images if head_images is None else int(head_images)
    tail = protocol.tail_images if tail_images is None else int(tail_images)
    source = ts.open_builder(protocol.dataset, data_dir, download=download)
    image = ts.find_image_key(source.info.features)
    spec = ts.find_label(source.info.features, label_key)
    mode = ts.image_mode(source, image, channels)
    labels, ids, labels_file = ts.cached_labels(
        source, protocol.train_split, image, spec, cache_dir=cache_dir
    )
    where = f"{protocol.dataset} {protocol.train_split}"
    train_rows, sampling = _train_sample(
        labels, ids, spec.names, image_ids=image_ids, head=head, tail=tail, seed=seed, where=where
    )
    val_rows = _val_rows(task, len(labels), train_rows, val_images, seed, where)
    test_source, test_image, test_spec = _test_source(
        task, protocol, source, spec, data_dir=data_dir, download=download, label_key=label_key
    )
    common = {"image_size": image_size, "mode": mode, "cache_dir": cache_dir, "progress": progress}
    # Train and val come from one read of the training source (COCO train: 18 GB of records),
    # then test; each written and released before the next.
    sampled = ts.ensure_selections(
        source,
        protocol.train_split,
        image,
        spec,
        selections={f"{task}-train": train_rows, f"{task}-val": val_rows},
        expected_ids=ids,
        **common,
    )
    paths = {
        "train": sampled[f"{task}-train"],
        "val": sampled[f"{task}-val"],
        "test": ts.ensure_split(test_source, protocol.test_split, test_image, test_spec, **common),
    }
    provenance = _provenance(
        task, protocol, source, test_source, spec, sampling, len(labels), labels_file, paths
    ) | {"image_size": image_size, "channels": 1 if mode == "L" else 3}
    return ts.make_splits(
        ts.load_parts(paths), spec.names, cutoff=cutoff, seed=seed, provenance=provenance
    )


# The two protocols: one loader with the task (and its rarest class as the cut-off) fixed.
load_voc_mlt = functools.partial(load_mlt, "voc_mlt", cutoff=4)
load_voc_mlt.__doc__ = """VOC-MLT: train sampled from TFDS voc/2012 train+validation (the VOC
2012 trainval images), val = `val_images` other trainval images (seeded), test = voc/2007 test.

head_images, tail_images: None takes the published 775 and 4. image_ids: a file of VOC image
ids (2008_000008, one a line) replacing the sampler. The default cutoff 4 is the protocol's
rarest class, so the cut-off removes nothing from the sampled set. Labels: TFDS's `labels`
(every object's class, difficult ones included); label_key="labels_no_difficult" drops them.
"""
load_coco_mlt = functools.partial(load_mlt, "coco_mlt", cutoff=6)
load_coco_mlt.__doc__ = """COCO-MLT: train sampled from TFDS coco/2017 train, val = `val_images`
other train images (seeded), test = coco/2017 validation (val2017, 5,000 images). Labels: the
classes of the image's objects (`objects/label`). head/tail None: the published 1,128 and 6."""
