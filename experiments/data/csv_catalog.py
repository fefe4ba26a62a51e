"""Bring-your-own catalog task `csv`: a CSV or JSONL export of image paths and their labels.

Format. A catalog file lists one product image per row:
  CSV (header required, UTF-8, extra columns ignored):
      image,labels,split
      shirts/0001.jpg,puff sleeve|v-neck,train
      shirts/0002.jpg,set-in sleeve,test
  JSONL (one object per line; `labels` a "|"-separated string or a list of strings):
      {"image": "shirts/0001.jpg", "labels": ["puff sleeve", "v-neck"], "split": "train"}
`image` is relative to `image_root` (default: `data_dir`, else the catalog file's folder) or
absolute. `labels` may be empty (a product with none of the labels: a negative for all). The
optional `split` column holds train, val or test for every row; without it, rows are split by
a seeded permutation: round(val_fraction * n) rows to val, round(test_fraction * n) to test,
the rest to train (`experiments.data.images.seeded_partition`).
The file is parsed and its rows checked in `experiments.data.csv_rows`; this module decodes,
caches and splits them.

Validation (a clear error naming the row and the fix, or, under a skip policy, a counted and
reported skip; never silent): missing or empty image path, empty label names ("a||b", a
trailing "|"), a label repeated in a row, unknown split values, an empty split, a duplicated
image path (`on_duplicate`: "error", or "skip" keeping the first row), missing or undecodable
image files (`on_bad_image`: "error" or "skip"), a label that val or test rows carry but no
training row does (`on_unseen_label`: "error", or "drop" with a warning naming the labels).

Images are whole product photos: padded to square (black) and resized to `image_size`, RGB
(`channels=3`) or grey (`channels=1`); decoded once, on every core (`decode_pool`; the arrays do not
depend on the number of processes), and cached as arrays. The cache key covers the catalog file's
SHA-256, the image root, the build parameters (image_size, channels, label_separator, on_bad_image,
on_duplicate) and every listed image file: its path, size, modification time and status-change time
(`image_fingerprint`; ctime changes on any rewrite, even one that restores the size and mtime). The
first three name the cache file; the image fingerprint is stored in it and compared on every load,
so a replaced, edited, added or removed image rebuilds the cache in place. Image contents are not
hashed: that would read every image
on every load. Labels are sorted by name. The
label-frequency `cutoff` has the same meaning as for the other tasks (training positives of the
rarest label; `experiments.data.images.apply_cutoff`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data.csv_rows import SPLITS, CatalogRow, deduplicate, read_catalog
from experiments.data.dataset import Dataset, Splits
from experiments.data.decode_pool import DecodeTiming, map_in_order
from experiments.data.images import (
    DataError,
    DataNotFoundError,
    DataSkipWarning,
    SkipLog,
    apply_cutoff,
    cache_key,
    cache_root,
    check_policy,
    load_arrays,
    read_image,
    save_arrays,
    seeded_partition,
    sha256_file,
    square_resize,
)

__all__ = ["SPLITS", "CatalogRow", "image_fingerprint", "load_csv_catalog", "read_catalog"]


def decode_row(task: tuple[str, str, int]) -> np.ndarray | DataError | DataNotFoundError:
    """One catalog image (file, Pillow mode, size) -> uint8 [size, size, ch], or the error when
    it is missing or undecodable. A pool worker's function: it returns errors rather than
    raising, so the parent applies the `on_bad_image` policy in row order."""
    file_path, mode, image_size = task
    try:
        return square_resize(read_image(file_path, mode), image_size)
    except (DataNotFoundError, DataError) as e:
        return e


def _decode_rows(
    path: Path,
    image_root: Path,
    rows: list[CatalogRow],
    *,
    image_size: int,
    channels: int,
    on_bad_image: str,
    skips: SkipLog,
    progress: bool,
    workers: int | None,
    timing: DecodeTiming,
) -> tuple[np.ndarray, list[int]]:
    """(images uint8 [M, size, size, ch], the rows' positions) of the rows whose image decodes,
    in row order, on `workers` processes (`experiments.data.decode_pool`)."""
    mode = {3: "RGB", 1: "L"}[channels]
    tasks = [(str(_image_path(row, image_root)), mode, image_size) for row in rows]
    images = np.empty((len(rows), image_size, image_size, channels), np.uint8)
    kept: list[int] = []
    results = map_in_order(
        decode_row,
        tasks,
        costs=[_file_size(t[0]) for t in tasks],  # decoding time goes with the file's bytes
        workers=workers,
        progress=progress,
        desc=f"decode {path.name}",
        timing=timing,
    )
    for i, (row, result) in enumerate(zip(rows, results, strict=True)):
        if isinstance(result, Exception):
            missing = isinstance(result, DataNotFoundError)
            detail = f"{path.name} line {row.line}: {result}".rstrip(".")
            if on_bad_image == "error":
                raise DataError(
                    f"{detail}. Check image_root ({image_root}) and the path, or pass "
                    "on_bad_image='skip' to leave the row out (counted)."
                ) from result
            skips.add("image file missing" if missing else "image file unreadable", detail)
            continue
        images[len(kept)] = result
        kept.append(i)
    return images[: len(kept)], kept


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _build(
    path: Path,
    image_root: Path,
    rows: list[CatalogRow],
    *,
    image_size: int,
    channels: int,
    on_bad_image: str,
    on_duplicate: str,
    progress: bool,
    workers: int | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decodes every catalog row's image once: arrays {images, labels, split_codes} + meta."""
    skips = SkipLog()
    rows = deduplicate(rows, on_duplicate, skips, path.name)
    label_names = sorted({n for r in rows for n in r.labels})
    column = {n: j for j, n in enumerate(label_names)}
    timing = DecodeTiming()
    images, kept = _decode_rows(
        path,
        image_root,
        rows,
        image_size=image_size,
        channels=channels,
        on_bad_image=on_bad_image,
        skips=skips,
        progress=progress,
        workers=workers,
        timing=timing,
    )
    if not kept:
        raise DataError(f"{path}: no image could be read ({skips.summary('rows')}).")
    labels = np.zeros((len(kept), len(label_names)), np.uint8)
    for k, i in enumerate(kept):
        labels[k, [column[n] for n in rows[i].labels]] = 1
    split_codes = [-1 if rows[i].split is None else SPLITS.index(rows[i].split) for i in kept]
    arrays = {
        "images": images,
        "labels": labels,
        "split_codes": np.asarray(split_codes, np.int64),
    }
    meta = {
        "label_names": label_names,
        "num_rows": len(rows) + skips.counts.get("duplicate image row", 0),
        "has_split_column": rows[0].split is not None,
        "skipped_rows": skips.as_dict(),
        "timing": {
            "decode_s": timing.seconds,
            "decode_estimate_s": timing.estimate_s,
            "workers": timing.workers,
            "images": timing.tasks,
        },
    }
    return arrays, meta


def _image_path(row: CatalogRow, image_root: Path) -> Path:
    return Path(row.image) if os.path.isabs(row.image) else image_root / row.image


def image_fingerprint(rows: list[CatalogRow], image_root: Path) -> str:
    """SHA-256 over every row's image path and its file's size, mtime and ctime (ns; "missing"
    when the file cannot be stat'ed): changes when any image is replaced, edited, touched,
    added or removed, without reading the images."""
    digest = hashlib.sha256()
    for row in rows:
        try:
            st = os.stat(_image_path(row, image_root))
            entry = [row.image, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        except OSError:
            entry = [row.image, "missing"]
        digest.update(json.dumps(entry).encode("utf-8") + b"\n")
    return digest.hexdigest()


def _resolve_files(
    path: str | os.PathLike | None,
    data_dir: str | os.PathLike | None,
    image_root: str | os.PathLike | None,
) -> tuple[Path, Path]:
    """(catalog file, image root), checked to exist."""
    if path is None:
        raise DataNotFoundError(
            "The csv task needs path=<catalog .csv or .jsonl> (columns image, labels[, split]; "
            "labels separated by '|') and image_root=<folder of the images>; set them in the "
            "config's data block."
        )
    path = Path(path).expanduser()
    if not path.is_absolute() and data_dir is not None:
        path = Path(data_dir).expanduser() / path
    if not path.is_file():
        raise DataNotFoundError(f"Catalog file {path} does not exist; check path (and data_dir).")
    root = Path(image_root or data_dir or path.parent).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"Image root {root} is not a folder; check image_root.")
    return path, root


def _cached_build(
    path: Path,
    root: Path,
    params: dict[str, Any],
    cache_file: Path,
    *,
    progress: bool,
    workers: int | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The decoded catalog from `cache_file` if its image fingerprint still matches the image
    files, else built (and cached, atomically) anew: (arrays, meta)."""
    rows = read_catalog(path, label_separator=params["label_separator"])
    fingerprint = image_fingerprint(rows, root)
    cached = load_arrays(cache_file)
    if cached is not None and cached[1].get("image_fingerprint") == fingerprint:
        return cached
    arrays, meta = _build(
        path,
        root,
        rows,
        image_size=params["image_size"],
        channels=params["channels"],
        on_bad_image=params["on_bad_image"],
        on_duplicate=params["on_duplicate"],
        progress=progress,
        workers=workers,
    )
    meta["image_fingerprint"] = fingerprint  # taken before decoding: a later change rebuilds
    save_arrays(cache_file, arrays, meta)
    print(f"csv catalog: cached {len(arrays['images'])} images in {cache_file}", file=sys.stderr)
    return arrays, meta


def _split_rows(
    path: Path,
    arrays: dict[str, np.ndarray],
    has_split_column: bool,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[dict[str, np.ndarray], str]:
    """Row indices of each split (the split column's, else seeded) and the rule, in words."""
    n = len(arrays["images"])
    if has_split_column:
        parts = arrays["split_codes"]
        split_rule = "the file's split column"
    else:
        seeded = seeded_partition(n, [val_fraction, test_fraction], seed, salt=0)
        parts = np.array([0, 1, 2])[seeded]  # part 1 -> val, part 2 -> test
        split_rule = (
            f"seeded permutation: round({val_fraction} * n) val, round({test_fraction} * n) test"
        )
    empty = [s for code, s in enumerate(SPLITS) if not np.any(parts == code)]
    if empty:
        raise DataError(
            f"{path.name}: the {empty} split(s) would be empty ({n} usable rows, split by "
            f"{split_rule}); add rows, or change the split column or fractions."
        )
    return {s: np.flatnonzero(parts == code) for code, s in enumerate(SPLITS)}, split_rule


def _split_provenance(
    meta: dict[str, Any], split_rule: str, val_fraction: float, test_fraction: float
) -> dict[str, Any]:
    by_column = meta["has_split_column"]
    return {
        "split": split_rule,
        "val_fraction": None if by_column else val_fraction,
        "test_fraction": None if by_column else test_fraction,
    }


UNSEEN_LABEL_POLICIES = ("error", "drop")


def _unseen_labels(
    path: Path, labels: np.ndarray, idx: dict[str, np.ndarray], names: list[str], policy: str
) -> list[str]:
    """Labels that no training row carries but some val or test row does: an error naming them
    (policy "error"), or dropped with a warning naming them ("drop"). Returns their names."""
    in_train = labels[idx["train"]].any(axis=0)
    elsewhere = {s: labels[idx[s]].sum(axis=0, dtype=np.int64) for s in ("val", "test")}
    unseen = [j for j in np.flatnonzero(~in_train) if any(c[j] for c in elsewhere.values())]
    if not unseen:
        return []
    listed = ", ".join(
        f"{names[j]!r} ({elsewhere['val'][j]} val, {elsewhere['test'][j]} test rows)"
        for j in unseen
    )
    message = (
        f"Catalog {path.name}: {len(unseen)} label(s) appear in val/test rows but in no "
        f"training row, so no model can learn them: {listed}."
    )
    if policy == "error":
        raise DataError(
            f"{message} Move some of their rows to the train split, or pass "
            "on_unseen_label='drop' (--set data.on_unseen_label=drop) to drop these labels."
        )
    warnings.warn(f"{message} Dropped (on_unseen_label='drop').", DataSkipWarning, stacklevel=3)
    return [names[j] for j in unseen]


def _warn_skips(path: Path, meta: dict[str, Any]) -> None:
    skipped = SkipLog(**meta["skipped_rows"])
    if skipped.total:
        warnings.warn(
            f"Catalog {path.name} {skipped.summary('rows')} See provenance ['skipped_rows'].",
            DataSkipWarning,
            stacklevel=3,  # the caller of load_csv_catalog
        )


def _splits(
    arrays: dict[str, np.ndarray],
    idx: dict[str, np.ndarray],
    label_names: list[str],
    kept: np.ndarray,
    provenance: dict[str, Any],
) -> Splits:
    """The three datasets: rows `idx[split]`, label columns `kept`."""
    return Splits(
        *(
            Dataset(
                images=arrays["images"][idx[s]],
                labels=arrays["labels"][idx[s]][:, kept],
                label_names=tuple(label_names),
                split=s,
                provenance=provenance,
            )
            for s in SPLITS
        )
    )


def load_csv_catalog(
    *,
    cutoff: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    image_size: int = 64,
    channels: int = 3,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    label_separator: str = "|",
    on_bad_image: str = "error",
    on_duplicate: str = "error",
    on_unseen_label: str = "error",
    progress: bool = True,
    workers: int | None = None,
) -> Splits:
    """Splits of a bring-your-own catalog (see the module docstring for the file format).

    Args:
      cutoff: training positives of the rarest label (labels below it are dropped, the rarest
        kept one subsampled to it); None keeps every label with a training positive.
      seed: seeds the row split (when the file has no split column) and the cut-off.
      data_dir: folder that a relative `path` and the default `image_root` are taken from.
      path: the catalog file (.csv or .jsonl).
      image_root: folder the image paths are relative to.
      on_unseen_label: a label carried by val/test rows but by no training row is an error
        naming it ("error"), or is dropped with a warning naming it ("drop").
      workers: processes that decode on the first build (None: every core); the cache does not
        depend on it.
    """
    check_policy("on_bad_image", on_bad_image)
    check_policy("on_duplicate", on_duplicate)
    if on_unseen_label not in UNSEEN_LABEL_POLICIES:
        raise ValueError(
            f"on_unseen_label must be one of {UNSEEN_LABEL_POLICIES}; got {on_unseen_label!r}."
        )
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB); got {channels}.")
    path, root = _resolve_files(path, data_dir, image_root)
    params = {
        "catalog_sha256": sha256_file(path),
        "image_root": str(root.resolve()),
        "image_size": int(image_size),
        "channels": channels,
        "label_separator": label_separator,
        "on_bad_image": on_bad_image,
        "on_duplicate": on_duplicate,
    }
    cache_file = (
        cache_root(cache_dir) / "csv" / f"{path.stem}-{image_size}px-{cache_key(params)}.npz"
    )
    arrays, meta = _cached_build(path, root, params, cache_file, progress=progress, workers=workers)
    _warn_skips(path, meta)
    idx, split_rule = _split_rows(
        path,
        arrays,
        meta["has_split_column"],
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    names = meta["label_names"]
    unseen = _unseen_labels(path, arrays["labels"], idx, names, on_unseen_label)
    result = apply_cutoff(arrays["labels"][idx["train"]], cutoff, seed)
    idx["train"] = idx["train"][result.train_keep]
    kept = result.kept_labels
    provenance = {
        "source": "csv",
        "files": {path.name: {"sha256": params["catalog_sha256"]}},
        "image_root": str(root),
        "cache_file": cache_file.name,
        "label_separator": label_separator,
        "num_rows": meta["num_rows"],
        "skipped_rows": meta["skipped_rows"],
        **_split_provenance(meta, split_rule, val_fraction, test_fraction),
        "cutoff": cutoff,
        "seed": seed,
        **result.provenance(names),
        "unseen_labels": unseen,
        "num_examples": {s: len(i) for s, i in idx.items()},
        "image_size": image_size,
        "channels": channels,
        "crop": "whole image, padded to square (black), bicubic resize",
    }
    return _splits(arrays, idx, [names[j] for j in kept], kept, provenance)
