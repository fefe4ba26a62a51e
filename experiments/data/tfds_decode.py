"""Reading and decoding TFDS splits, and the per-split cache of decoded arrays.

Images are decoded with Pillow from the stored bytes, converted to grey ("L", a 1-channel
feature) or RGB, padded to square (black) and resized bicubically to `image_size`
(`experiments.data.images.square_resize`; a 28 x 28 image at image_size 28 is kept as is).

Memory and cache. A split is decoded into one preallocated uint8 array and written to its own
cache file (`<cache>/tfds/<name>-<version>/`, atomic, keyed by dataset, version, TFDS data
folder, split, features, image size and the selected rows) before the next split is read, so a
build never holds more than one split's decoded images. Labels of a whole source split (for the
MLT sampler) are read once without decoding any image, and cached the same way.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data.decode_pool import map_in_order
from experiments.data.images import (
    DataError,
    DataNotFoundError,
    cache_key,
    cache_root,
    load_arrays,
    save_arrays,
    square_resize,
)
from experiments.data.tfds_features import LabelSpec, example_id, import_tfds

BUILDER_VERSION = 1  # part of every cache key: bump when a change alters the built arrays


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


def read_examples(builder, split: str, image_key: str, *, keep_image: bool):
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
    for example in read_examples(builder, split, image_key, keep_image=False):
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


def decode_task(task: tuple[bytes, int, str]) -> np.ndarray:
    """A pool worker's function: (encoded image, image_size, mode) -> `decode_image`."""
    encoded, image_size, mode = task
    return decode_image(encoded, image_size=image_size, mode=mode)


def _split_size(builder, split: str, select: np.ndarray | None) -> int | None:
    if select is not None:
        return len(select)
    try:
        return int(builder.info.splits[split].num_examples)
    except Exception:  # split expressions TFDS cannot size
        return None


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
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Decodes the rows `select` (sorted indices; None: all) of `split` into one array.

    Returns {images uint8 [M, S, S, ch], labels uint8 [M, C], ids [M] str}. `expected_ids`
    (the ids of all rows, from `read_labels`) checks that the order has not changed. The
    records are read in this process; the images decode on `workers` processes (None: every
    core; `experiments.data.decode_pool`), in row order, read only as fast as they decode.
    """
    select = None if select is None else np.asarray(select, np.int64)
    total = _split_size(builder, split, select)
    labels, ids = [], []

    def selected():
        """(encoded image, size, mode) of each selected row; its labels and id noted."""
        wanted = None if select is None else set(select.tolist())
        last = None if select is None else int(select[-1])
        for i, example in enumerate(read_examples(builder, split, image_key, keep_image=True)):
            if wanted is not None and i not in wanted:
                continue
            this_id = example_id(example)
            if expected_ids is not None and expected_ids[i] != this_id:
                raise DataError(
                    f"{builder.info.full_name} {split}: row {i} is {this_id!r} now but was "
                    f"{expected_ids[i]!r} when the labels were read; the prepared data changed. "
                    "Delete the tfds cache folder and rerun."
                )
            labels.append(spec.multi_hot(example))
            ids.append(this_id)
            yield example[image_key], image_size, mode
            if i == last:
                return  # the rows are sorted: nothing after the last one is needed

    channels = 1 if mode == "L" else 3
    images = np.zeros((total or 1024, image_size, image_size, channels), np.uint8)
    n = 0
    decoded = map_in_order(
        decode_task,
        selected(),
        total=total or 0,
        workers=1 if total is None else workers,  # an unsized split: no pool, no estimate
        progress=progress,
        desc=f"decode {builder.name} {split}",
    )
    for image in decoded:
        if n == len(images):
            images = np.concatenate([images, np.zeros_like(images)])
        images[n] = image
        n += 1
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


def _selection_file(builder, split, image_key, spec, *, image_size, mode, cache_dir, select, tag):
    """(cache file, its build parameters) of the rows `select` (None: all) of `split`."""
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
    return _cache_dir(builder, cache_dir) / name, params


def ensure_selections(
    builder,
    split: str,
    image_key: str,
    spec: LabelSpec,
    *,
    selections: dict[str, np.ndarray | None],
    image_size: int,
    mode: str,
    cache_dir,
    expected_ids: np.ndarray | None = None,
    progress: bool = False,
) -> dict[str, Path]:
    """{tag: cache file} of each selection of rows of `split` (sorted indices; None: all rows,
    alone), the missing ones built from ONE read of the split: their union is decoded
    (`decode_split`) and each written to its own file, which holds exactly what a build of that
    selection alone holds. The arrays are released before this returns."""
    files = {
        tag: _selection_file(
            builder,
            split,
            image_key,
            spec,
            image_size=image_size,
            mode=mode,
            cache_dir=cache_dir,
            select=select,
            tag=tag,
        )
        for tag, select in selections.items()
    }
    missing = [tag for tag, (path, _) in files.items() if not path.is_file()]
    if missing:
        rows = [selections[tag] for tag in missing]
        if any(r is None for r in rows) and len(rows) > 1:
            raise ValueError("A selection of all rows (None) is built alone, not with others.")
        union = rows[0] if len(rows) == 1 else functools.reduce(np.union1d, rows)
        start = time.perf_counter()
        arrays = decode_split(
            builder,
            split,
            image_key,
            spec,
            image_size=image_size,
            mode=mode,
            select=union,
            expected_ids=expected_ids,
            progress=progress,
        )
        seconds = time.perf_counter() - start
        for tag in missing:
            path, params = files[tag]
            picked = arrays if len(missing) == 1 else _pick(arrays, union, selections[tag])
            save_arrays(path, picked, {**params, "num_examples": len(picked["labels"])})
            print(
                f"tfds: cached {len(picked['labels'])} {builder.name} {split} images in {path}",
                file=sys.stderr,
            )
        rate = len(arrays["labels"]) / max(seconds, 1e-9)
        print(
            f"tfds: decoded {len(arrays['labels'])} {builder.name} {split} images in one read "
            f"({seconds:.1f} s, {rate:.0f} images/s)",
            file=sys.stderr,
        )
    return {tag: path for tag, (path, _) in files.items()}


def _pick(arrays: dict[str, np.ndarray], union: np.ndarray, rows: np.ndarray) -> dict:
    """The entries of `rows` (a subset of the sorted `union`) from arrays built over `union`."""
    at = np.searchsorted(union, np.asarray(rows, np.int64))
    return {key: value[at] for key, value in arrays.items()}


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
    """The cache file of `decode_split(...)`, built first if absent (`ensure_selections` of one
    selection). The decoded arrays are written and released before this returns, so building
    several splits one after another never holds more than one of them."""
    return ensure_selections(
        builder,
        split,
        image_key,
        spec,
        selections={tag: select},
        image_size=image_size,
        mode=mode,
        cache_dir=cache_dir,
        expected_ids=expected_ids,
        progress=progress,
    )[tag]


def load_split(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a cache file written by `ensure_split`."""
    cached = load_arrays(path)
    if cached is None:
        raise DataError(f"Cache file {path} vanished or is unreadable; rerun to rebuild it.")
    return cached[0]


def load_parts(paths: dict[str, Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{role: (images, labels)} from the cache files of `ensure_split`, by role."""
    parts = {}
    for role, path in paths.items():
        arrays = load_split(path)
        parts[role] = (arrays["images"], arrays["labels"])
    return parts


def image_mode(builder, image_key: str, channels: int | None) -> str:
    """Pillow mode: "L" for channels 1, "RGB" for 3; None follows the image feature's shape."""
    if channels is None:
        shape = builder.info.features[image_key].shape
        channels = 1 if shape and shape[-1] == 1 else 3
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB); got {channels}.")
    return "L" if channels == 1 else "RGB"
