"""TensorFlow Datasets as a data source: task `tfds` (any TFDS image dataset) and the MLT tasks.

Choose it as a task of its own, with the dataset's TFDS name in `data.dataset` (not
`data.name`: `load_task(name, **data)` takes the task's name as `name`):

  python -m experiments.run --config tfds_proposed --set data.dataset=voc/2007 \\
      --set data.train_split=trainval --set data.test_split=test

`data.data_dir` is the TFDS data folder holding the prepared dataset (default: TFDS's own,
$TFDS_DATA_DIR or ~/tensorflow_datasets). Nothing is downloaded unless `download=True`: prepare
datasets with `tfds build NAME` (see README). TensorFlow Datasets is an optional extra,
`pip install -e ".[tfds]"`; it is imported here, inside the functions, and nowhere else, so the
core library and the other tasks never need it.

Features. The image is the dataset's top-level `Image` feature (`image_key` picks one when there
are several). The labels are, in this order of preference unless `label_key` names one:
  `labels`        a Sequence(ClassLabel): the image-level label set (VOC);
  `label`         a ClassLabel: one class per image, a one-hot row (Fashion-MNIST, CIFAR);
  `objects/label` a ClassLabel inside a sequence of objects: every object's class (COCO);
or the only ClassLabel-valued feature there is. Label columns are the ClassLabel's own names, in
its order. A dataset without an image or a ClassLabel feature stops with the features it has.

Images are decoded with Pillow from the stored bytes, converted to grey ("L", a 1-channel
feature) or RGB, padded to square (black) and resized bicubically to `image_size`
(`experiments.data.images.square_resize`; a 28 x 28 image at image_size 28 is kept as is).

Memory and cache. A split is decoded into one preallocated uint8 array and written to its own
cache file (`<cache>/tfds/<name>-<version>/`, atomic, keyed by dataset, version, TFDS data
folder, split, features, image size and the selected rows) before the next split is read, so a
build never holds more than one split's decoded images. Labels of a whole source split (for the
MLT sampler) are read once without decoding any image, and cached the same way.

Splits of task `tfds`: train and test are TFDS split expressions (`train_split`, `test_split`);
validation is `val_split` if given, else round(val_fraction * n) rows of the training split by
seeded permutation (`experiments.data.images.seeded_partition`). The label-frequency cut-off is
`experiments.data.images.apply_cutoff`, as for every image task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data.dataset import Dataset, Splits
from experiments.data.images import (
    DataError,
    DataNotFoundError,
    apply_cutoff,
    cache_key,
    cache_root,
    load_arrays,
    save_arrays,
    seeded_partition,
    square_resize,
)
from experiments.data.mlt import canonical_id

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

INSTALL_COMMAND = 'pip install -e ".[tfds]"'
BUILDER_VERSION = 1  # part of every cache key: bump when a change alters the built arrays
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


# ---------------------------------------------------------------------------------------------
# Features


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


def find_image_key(features, image_key: str | None = None) -> str:
    """The top-level Image feature's key; `image_key` chooses among several."""
    tfds = import_tfds()
    images = [k for k, f in _feature_items(features) if isinstance(f, tfds.features.Image)]
    listing = ", ".join(f"{k} ({type(f).__name__})" for k, f in _feature_items(features))
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
    listing = ", ".join(f"{k} ({type(f).__name__})" for k, f in _feature_items(features))
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


def example_id(example: dict[str, Any]) -> str:
    """The canonical id of an example (image/id, else image/filename's stem), or ""."""
    for key in ID_FEATURES:
        if key in example:
            return canonical_id(example[key])
    return ""


# ---------------------------------------------------------------------------------------------
# Reading


def open_builder(name: str, data_dir: str | os.PathLike | None, *, download: bool = False):
    """The TFDS builder of `name` in `data_dir`; DataNotFoundError with the command if absent."""
    tfds = import_tfds()
    if not name:
        raise ValueError(
            "Task tfds needs data.dataset, a TFDS dataset name: --set data.dataset=voc/2007."
        )
    try:
        builder = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    except Exception as e:  # DatasetNotFoundError and friends differ between versions
        raise DataNotFoundError(
            f"TFDS has no dataset {name!r} ({type(e).__name__}: {e}); check data.dataset "
            "(`tfds.list_builders()` lists them)."
        ) from e
    if download:
        builder.download_and_prepare()
    return builder


def _build_name(builder) -> str:
    """The name `tfds build` takes: "voc/2007", "fashion_mnist"."""
    config = getattr(builder, "builder_config", None)
    return f"{builder.name}/{config.name}" if config is not None else builder.name


def _as_numpy(builder, split: str, image_key: str, *, keep_image: bool):
    """Examples of `split` as NumPy dicts in the stored order; images left encoded (bytes)."""
    tfds = import_tfds()
    try:
        ds = builder.as_dataset(
            split=split,
            shuffle_files=False,
            decoders={image_key: tfds.decode.SkipDecoding()},
        )
    except (AssertionError, FileNotFoundError, ValueError, KeyError) as e:
        raise DataNotFoundError(
            f"TFDS dataset {builder.info.full_name} split {split!r} cannot be read from "
            f"{builder.data_dir} ({type(e).__name__}: {e}). Prepare it first: "
            f"`tfds build {_build_name(builder)}` (or pass data.data_dir, the folder it was "
            "built in), and check the split name."
        ) from e
    if not keep_image:
        ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k != image_key})
    return tfds.as_numpy(ds)


def read_labels(
    builder, split: str, image_key: str, spec: LabelSpec
) -> tuple[np.ndarray, np.ndarray]:
    """(labels uint8 [N, C], ids [N] str) of every example of `split`; no image is decoded."""
    labels, ids = [], []
    for example in _as_numpy(builder, split, image_key, keep_image=False):
        labels.append(spec.multi_hot(example))
        ids.append(example_id(example))
    if not labels:
        raise DataError(f"Split {split!r} of {builder.info.full_name} holds no examples.")
    return np.stack(labels), np.asarray(ids, dtype=str)


def decode_image(encoded: bytes, *, image_size: int, mode: str) -> np.ndarray:
    """Encoded image bytes -> uint8 [size, size, 1 or 3] (Pillow decode, square_resize)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.load()
            converted = image.convert(mode)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as e:
        raise DataError(f"An image cannot be decoded ({type(e).__name__}: {e}).") from e
    return square_resize(converted, image_size)


def decode_split(
    builder,
    split: str,
    image_key: str,
    spec: LabelSpec,
    *,
    image_size: int,
    mode: str,
    select: np.ndarray | None = None,
    expected_ids: np.ndarray | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Decodes the rows `select` (sorted indices; None: all) of `split` into one array.

    Returns {images uint8 [M, S, S, ch], labels uint8 [M, C], ids [M] str}. `expected_ids`
    (the ids of all rows, from `read_labels`) checks that the order has not changed.
    """
    from tqdm.auto import tqdm

    total = None
    if select is not None:
        select = np.asarray(select, np.int64)
        total = len(select)
    else:
        try:
            total = int(builder.info.splits[split].num_examples)
        except Exception:  # split expressions TFDS cannot size
            total = None
    channels = 1 if mode == "L" else 3
    capacity = total if total is not None else 1024
    images = np.zeros((capacity, image_size, image_size, channels), np.uint8)
    labels, ids = [], []
    wanted = None if select is None else set(select.tolist())
    n = 0
    bar = tqdm(total=total, desc=f"decode {builder.name} {split}", unit="img", disable=not progress)
    for i, example in enumerate(_as_numpy(builder, split, image_key, keep_image=True)):
        if wanted is not None and i not in wanted:
            continue
        this_id = example_id(example)
        if expected_ids is not None and expected_ids[i] != this_id:
            raise DataError(
                f"{builder.info.full_name} {split}: row {i} is {this_id!r} now but was "
                f"{expected_ids[i]!r} when the labels were read; the prepared data changed. "
                "Delete the tfds cache folder and rerun."
            )
        if n == len(images):
            images = np.concatenate([images, np.zeros_like(images)])
        images[n] = decode_image(example[image_key], image_size=image_size, mode=mode)
        labels.append(spec.multi_hot(example))
        ids.append(this_id)
        n += 1
        bar.update()
        if select is not None and n == len(select):
            break  # the rows are sorted: nothing after the last one is needed
    bar.close()
    if select is not None and n != len(select):
        raise DataError(
            f"{builder.info.full_name} {split}: {len(select)} rows selected but {n} read; the "
            "prepared data changed. Delete the tfds cache folder and rerun."
        )
    if n == 0:
        raise DataError(f"Split {split!r} of {builder.info.full_name} holds no examples.")
    return {
        "images": images[:n] if n < len(images) else images,
        "labels": np.stack(labels),
        "ids": np.asarray(ids, dtype=str),
    }


# ---------------------------------------------------------------------------------------------
# Cache


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _dataset_params(builder, image_key: str, spec: LabelSpec) -> dict[str, Any]:
    return {
        "builder_version": BUILDER_VERSION,
        "dataset": builder.info.full_name,
        "tfds_data_dir": str(builder.data_dir),
        "image_feature": image_key,
        "label_feature": spec.path,
        "label_names": list(spec.names),
    }


def _cache_dir(builder, cache_dir) -> Path:
    return cache_root(cache_dir) / "tfds" / _slug(f"{builder.name}-{builder.info.version}")


def cached_labels(builder, split: str, image_key: str, spec: LabelSpec, *, cache_dir):
    """`read_labels`, cached: (labels, ids, cache file name)."""
    params = {**_dataset_params(builder, image_key, spec), "split": split, "what": "labels"}
    path = _cache_dir(builder, cache_dir) / f"{_slug(split)}-labels-{cache_key(params)}.npz"
    cached = load_arrays(path)
    if cached is None:
        labels, ids = read_labels(builder, split, image_key, spec)
        save_arrays(path, {"labels": labels, "ids": ids}, params)
    else:
        labels, ids = cached[0]["labels"], cached[0]["ids"]
    return labels, ids, path.name


def ensure_split(
    builder,
    split: str,
    image_key: str,
    spec: LabelSpec,
    *,
    image_size: int,
    mode: str,
    cache_dir,
    select: np.ndarray | None = None,
    expected_ids: np.ndarray | None = None,
    tag: str = "all",
    progress: bool = False,
) -> Path:
    """The cache file of `decode_split(...)`, built first if absent. The decoded arrays are
    written and released before this returns, so building several splits one after another
    never holds more than one of them."""
    params = {
        **_dataset_params(builder, image_key, spec),
        "split": split,
        "image_size": int(image_size),
        "mode": mode,
        "rows": None
        if select is None
        else hashlib.sha256(np.asarray(select, "<i8").tobytes()).hexdigest(),
    }
    name = f"{_slug(split)}-{_slug(tag)}-{image_size}px-{cache_key(params)}.npz"
    path = _cache_dir(builder, cache_dir) / name
    if path.is_file():
        return path
    start = time.perf_counter()
    arrays = decode_split(
        builder,
        split,
        image_key,
        spec,
        image_size=image_size,
        mode=mode,
        select=select,
        expected_ids=expected_ids,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    save_arrays(path, arrays, {**params, "num_examples": len(arrays["labels"])})
    rate = len(arrays["labels"]) / max(seconds, 1e-9)
    print(
        f"tfds: cached {len(arrays['labels'])} {builder.name} {split} images in {path} "
        f"({seconds:.1f} s, {rate:.0f} images/s)",
        file=sys.stderr,
    )
    return path


def load_split(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a cache file written by `ensure_split`."""
    cached = load_arrays(path)
    if cached is None:
        raise DataError(f"Cache file {path} vanished or is unreadable; rerun to rebuild it.")
    return cached[0]


def image_mode(builder, image_key: str, channels: int | None) -> str:
    """Pillow mode: "L" for channels 1, "RGB" for 3; None follows the image feature's shape."""
    if channels is None:
        shape = builder.info.features[image_key].shape
        channels = 1 if shape and shape[-1] == 1 else 3
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB); got {channels}.")
    return "L" if channels == 1 else "RGB"


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


# ---------------------------------------------------------------------------------------------
# Task `tfds`


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
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for role, path in paths.items():
        arrays = load_split(path)
        parts[role] = (arrays["images"], arrays["labels"])
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


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from TFDS, for the catalog task


def tfds_storage_order(num_examples: int, split: str) -> np.ndarray:
    """The generator keys 0..n-1 in the order TFDS stores them: sorted by the 128-bit MD5 of
    the split name followed by str(key) (`tensorflow_datasets.core.shuffle`, any number of
    shards). For `fashion_mnist` the key is the example's index in the IDX file."""
    salted = hashlib.md5(split.encode("utf-8"))

    def digest(key: int) -> int:
        md5 = salted.copy()
        md5.update(str(key).encode("utf-8"))
        return int(md5.hexdigest(), 16)

    return np.asarray(sorted(range(num_examples), key=digest), np.int64)


def fashion_mnist_from_tfds(
    *,
    data_dir: str | os.PathLike | None = None,
    name: str = "fashion_mnist",
    restore_order: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images [N, 28, 28], train_labels [N], test_images, test_labels), uint8, from the
    prepared TFDS `fashion_mnist`. TFDS stores the examples shuffled; `restore_order` puts them
    back in the IDX files' order (`tfds_storage_order`), so the arrays equal the release's."""
    from PIL import Image

    builder = open_builder(name, data_dir)
    spec = find_label(builder.info.features, "label")
    out = []
    for split in ("train", "test"):
        images, labels = [], []
        for example in _as_numpy(builder, split, "image", keep_image=True):
            with Image.open(io.BytesIO(example["image"])) as image:
                images.append(np.asarray(image.convert("L"), np.uint8))
            labels.append(int(spec.indices(example)[0]))
        stored = [np.stack(images), np.asarray(labels, np.uint8)]
        if restore_order:
            keys = tfds_storage_order(len(labels), split)
            for array in stored:
                array[keys] = array.copy()  # stored row i holds IDX row keys[i]
        out += stored
    return tuple(out)  # type: ignore[return-value]


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` (uint8) in the IDX format: 00 00 08 ndim, big-endian uint32 sizes, the data."""
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def export_fashion_mnist_idx(
    dest: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    verify: bool = True,
    restore_order: bool = True,
) -> dict[str, Path]:
    """Writes TFDS fashion_mnist as the four gzipped IDX files in `dest` (atomic, each file).

    With `verify` (default) every file's SHA-256 must equal the published release's
    (`experiments.data.fashion_mnist.SHA256`), so the catalog task built from `dest` (pass it
    as data.data_dir, or use <cache>/fashion-mnist, which the catalog searches) sees exactly the
    arrays of the IDX release; nothing is written if any file differs.
    """
    import gzip

    from experiments.data.fashion_mnist import SHA256
    from experiments.records import atomic_open

    train_images, train_labels, test_images, test_labels = fashion_mnist_from_tfds(
        data_dir=data_dir, restore_order=restore_order
    )
    payloads = {
        "train-images-idx3-ubyte": idx_bytes(train_images),
        "train-labels-idx1-ubyte": idx_bytes(train_labels),
        "t10k-images-idx3-ubyte": idx_bytes(test_images),
        "t10k-labels-idx1-ubyte": idx_bytes(test_labels),
    }
    if verify:
        wrong = [
            name
            for name, data in payloads.items()
            if hashlib.sha256(data).hexdigest() != SHA256[name]
        ]
        if wrong:
            raise DataError(
                f"TFDS fashion_mnist does not reproduce the IDX release for {wrong} (SHA-256 "
                "differs); nothing was written. Rebuild it with `tfds build fashion_mnist`."
            )
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in payloads.items():
        paths[name] = dest / f"{name}.gz"
        with atomic_open(paths[name]) as f:
            f.write(gzip.compress(data, mtime=0))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m experiments.data.tfds_source fashion-mnist-idx DEST [--data-dir DIR]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m experiments.data.tfds_source",
        description="Write TFDS fashion_mnist as the IDX files the catalog task reads.",
    )
    parser.add_argument("command", choices=["fashion-mnist-idx"])
    parser.add_argument("dest", help="folder for the four .gz files (e.g. the catalog data_dir)")
    parser.add_argument("--data-dir", default=None, help="TFDS data folder (default: TFDS's)")
    args = parser.parse_args(argv)
    paths = export_fashion_mnist_idx(args.dest, data_dir=args.data_dir)
    print("\n".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
