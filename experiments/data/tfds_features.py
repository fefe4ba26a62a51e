"""TFDS features of a task: the image feature, the label feature and an example's id.

The image is the dataset's top-level `Image` feature (`image_key` picks one when there are
several). The labels are, in this order of preference unless `label_key` names one:
  `labels`        a Sequence(ClassLabel): the image-level label set (VOC);
  `label`         a ClassLabel: one class per image, a one-hot row (Fashion-MNIST, CIFAR);
  `objects/label` a ClassLabel inside a sequence of objects: every object's class (COCO);
or the only ClassLabel-valued feature there is. Label columns are the ClassLabel's own names, in
its order. A dataset without an image or a ClassLabel feature stops with the features it has.
An example's id is `canonical_id` of its image/id or file name, the form that the MLT image-id
files (`experiments.data.mlt.read_image_ids`) are written in; this module is its one home.

TensorFlow Datasets is an optional extra (`INSTALL_COMMAND`); `import_tfds` imports it inside
the functions that need it, so importing this module never does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from experiments.data.images import DataError

INSTALL_COMMAND = 'pip install -e ".[tfds]"'
ID_FEATURES = ("image/id", "image/filename")  # the first present names an example
LABEL_PREFERENCE = ("labels", "label", "objects/label")


class TfdsNotInstalledError(ImportError):
    """TensorFlow Datasets is not installed; the message gives the install command."""


def import_tfds():
    """`tensorflow_datasets`, or TfdsNotInstalledError with the install command."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise TfdsNotInstalledError(
            f"This task reads TensorFlow Datasets, which is not installed ({e}). Install the "
            f"optional extra from the repository root: {INSTALL_COMMAND}"
        ) from e
    return tfds


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """Where an example's labels are and what they mean.

    key: path of the ClassLabel ("label", "labels", ("objects", "label"));
    kind: "class_label" (one int), "sequence" (ints) or "objects" (ints inside a sequence of
    objects); names: the ClassLabel's names, the label columns.
    """

    key: tuple[str, ...]
    kind: str
    names: tuple[str, ...]

    @property
    def path(self) -> str:
        return "/".join(self.key)

    def indices(self, example: dict[str, Any]) -> np.ndarray:
        value: Any = example
        for part in self.key:
            value = value[part]
        return np.atleast_1d(np.asarray(value, np.int64))

    def multi_hot(self, example: dict[str, Any]) -> np.ndarray:
        """uint8 [C]: 1 for every class the example carries (repeats count once)."""
        indices = self.indices(example)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self.names)):
            raise DataError(
                f"Label feature {self.path!r} holds class {indices.max()} outside 0..."
                f"{len(self.names) - 1}; the prepared data does not match its feature spec."
            )
        row = np.zeros(len(self.names), np.uint8)
        row[indices] = 1
        return row


def _feature_items(features) -> list[tuple[str, Any]]:
    return list(features.items()) if hasattr(features, "items") else []


def _listing(features) -> str:
    """The features as "key (Type), ...", for error messages."""
    return ", ".join(f"{k} ({type(f).__name__})" for k, f in _feature_items(features))


def find_image_key(features, image_key: str | None = None) -> str:
    """The top-level Image feature's key; `image_key` chooses among several."""
    tfds = import_tfds()
    images = [k for k, f in _feature_items(features) if isinstance(f, tfds.features.Image)]
    listing = _listing(features)
    if not images:
        raise DataError(
            f"The dataset has no image feature (its features: {listing}); task tfds needs a "
            "top-level tfds.features.Image. Choose an image dataset."
        )
    if image_key is not None:
        if image_key not in images:
            raise DataError(
                f"image_key {image_key!r} is not an image feature; choose from {images}."
            )
        return image_key
    if len(images) == 1:
        return images[0]
    if "image" in images:
        return "image"
    raise DataError(f"The dataset has several image features {images}; set data.image_key.")


def _label_candidates(features) -> dict[str, LabelSpec]:
    tfds = import_tfds()
    class_label, sequence = tfds.features.ClassLabel, tfds.features.Sequence
    found: dict[str, LabelSpec] = {}
    for key, feature in _feature_items(features):
        if isinstance(feature, class_label):
            found[key] = LabelSpec((key,), "class_label", tuple(feature.names))
        elif isinstance(feature, sequence):
            inner = feature.feature
            if isinstance(inner, class_label):
                found[key] = LabelSpec((key,), "sequence", tuple(inner.names))
            else:
                for sub, sub_feature in _feature_items(inner):
                    if isinstance(sub_feature, class_label):
                        spec = LabelSpec((key, sub), "objects", tuple(sub_feature.names))
                        found[spec.path] = spec
    return found


def find_label(features, label_key: str | None = None) -> LabelSpec:
    """The label feature: `label_key` ("a" or "a/b"), else by LABEL_PREFERENCE (module doc)."""
    candidates = _label_candidates(features)
    listing = _listing(features)
    if not candidates:
        raise DataError(
            f"The dataset has no label feature (its features: {listing}); task tfds needs a "
            "ClassLabel, a Sequence(ClassLabel) or objects with a ClassLabel 'label'."
        )
    if label_key is not None:
        if label_key not in candidates:
            raise DataError(
                f"label_key {label_key!r} is not a ClassLabel feature; choose from "
                f"{sorted(candidates)}."
            )
        return candidates[label_key]
    for key in LABEL_PREFERENCE:
        if key in candidates:
            return candidates[key]
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    raise DataError(f"Several label features {sorted(candidates)}; set data.label_key.")


def canonical_id(value: Any) -> str:
    """An image id as the id files write it: no folder, no extension, no leading zeros.

    "2008_000008.jpg" -> "2008_000008"; "000000391895.jpg", b"391895", 391895 -> "391895".
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    text = str(value).strip().replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = text.rpartition(".")
    if dot and ext.lower() in ("jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"):
        text = stem
    return str(int(text)) if text.isdigit() else text


def example_id(example: dict[str, Any]) -> str:
    """The canonical id of an example (image/id, else image/filename's stem), or ""."""
    for key in ID_FEATURES:
        if key in example:
            return canonical_id(example[key])
    return ""
