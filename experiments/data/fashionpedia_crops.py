"""Cropping one Fashionpedia annotation file: checked annotations -> square crops + labels.

Pass 1 checks every annotation of the task's categories against the file's tables (before any
slow image reading; the parsed table is released after it); pass 2 opens each image once and
crops all its annotations, on every core (`experiments.data.decode_pool`: a process pool, results
in image order, so the arrays do not depend on the number of processes). Bad items
raise or are counted by the `on_bad_image` / `on_bad_annotation` policies (see the
`experiments.data.fashionpedia` module docstring).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data.decode_pool import DecodeTiming, map_in_order
from experiments.data.fashionpedia_labels import TaskSpec
from experiments.data.images import (
    DataError,
    DataNotFoundError,
    SkipLog,
    crop_box,
    read_image,
    square_resize,
)

__all__ = ["SourceFiles", "build_crops", "crop_image", "read_annotation_file"]


@dataclass(frozen=True)
class SourceFiles:
    annotations: Path
    images: Path


def read_annotation_file(path: Path) -> dict:
    """Parses and checks the top-level schema of an instances_attributes file."""
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not a readable JSON file ({e}); download it again.") from e
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations, ...")
    missing = [k for k in ("images", "annotations", "categories", "attributes") if k not in table]
    if missing:
        raise DataError(
            f"{path} lacks the keys {missing}; it is not a Fashionpedia attribute annotation "
            "file (use instances_attributes_{train,val}2020.json)."
        )
    return table


def _image_table(images: list[dict], source: Path) -> dict[int, tuple[str, int, int]]:
    table = {}
    for im in images:
        try:
            image_id, entry = im["id"], (str(im["file_name"]), int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{source}: image entry {im!r} lacks id/file_name/width/height.") from e
        if image_id in table:
            raise DataError(f"{source}: image id {image_id} appears twice in the images table.")
        table[image_id] = entry
    return table


def _annotation_problem(
    ann: dict, images: dict, attribute_ids: set[int], tolerance: float
) -> tuple[str, str] | None:
    """(reason, detail) of what is wrong with an annotation, or None when it is usable."""
    missing = [k for k in ("image_id", "bbox", "attribute_ids") if k not in ann]
    if missing:
        return "annotation lacks fields", f"annotation {ann.get('id')} lacks {missing}"
    if ann["image_id"] not in images:
        return (
            "annotation points at an image not in the image table",
            f"annotation {ann.get('id')} points at image id {ann['image_id']}, absent from images",
        )
    unknown = sorted(set(ann["attribute_ids"]) - attribute_ids)
    if unknown:
        return (
            "attribute id absent from the attribute table",
            f"annotation {ann.get('id')} has attribute ids {unknown} absent from the table",
        )
    _, width, height = images[ann["image_id"]]
    try:
        crop_box(ann["bbox"], width, height, tolerance=tolerance)
    except (DataError, TypeError, ValueError) as e:
        return "bad bbox", f"annotation {ann.get('id')}: {e}"
    return None


def _bad(policy: str, skips: SkipLog, reason: str, detail: str, fix: str, n: int = 1) -> None:
    if policy == "error":
        raise DataError(f"{detail}. {fix}")
    skips.add(reason, detail, n)


# One annotation kept for cropping: (annotation id or None, bbox, label columns).
_Kept = tuple[Any, list, list[int]]
_FIX_ANNOTATION = (
    "Fix the annotation file, or pass on_bad_annotation='skip' to leave it out (counted)."
)
_FIX_IMAGE = "Check the image folder, or pass on_bad_image='skip' to leave it out (counted)."


def _check_annotations(
    table: dict,
    path: Path,
    category_ids: set,
    column: dict[int, int],
    images: dict[int, tuple[str, int, int]],
    *,
    on_bad_annotation: str,
    bbox_tolerance: float,
    skips: SkipLog,
) -> tuple[dict[int, list[_Kept]], int]:
    """Pass 1, before any (slow) image reading: the task's usable, labelled annotations grouped
    by image id, and how many were unlabelled. Bad ones raise or are counted in `skips`."""
    attribute_ids = {a["id"] for a in table["attributes"]}
    unlabelled = 0
    per_image: dict[int, list[_Kept]] = defaultdict(list)
    for ann in table["annotations"]:
        if ann.get("category_id") not in category_ids:
            continue
        problem = _annotation_problem(ann, images, attribute_ids, bbox_tolerance)
        if problem:
            _bad(on_bad_annotation, skips, *problem, f"In {path.name}: {_FIX_ANNOTATION}")
            continue
        cols = sorted({column[a] for a in ann["attribute_ids"] if a in column})
        if not cols:
            unlabelled += 1
            continue
        per_image[ann["image_id"]].append((ann.get("id"), ann["bbox"], cols))
    return per_image, unlabelled


def _image_problem(image, file_path: str, listed_in: str, width: int, height: int):
    """(reason, detail) when the image was not decoded or is not the size the table says."""
    if isinstance(image, DataNotFoundError):
        return "image file missing", f"{file_path} (listed in {listed_in}) does not exist"
    if isinstance(image, DataError):
        return "image file unreadable", str(image).rstrip(".")
    if image.size != (width, height):
        detail = (
            f"{file_path} is {image.size[0]} x {image.size[1]} but {listed_in} says "
            f"{width} x {height}"
        )
        return "image size differs from the table", detail
    return None


# One image's work for a pool worker: (file, listed in, width, height, crop boxes, image size).
_CropTask = tuple[str, str, int, int, list[tuple[int, int, int, int]], int]


def crop_image(task: _CropTask) -> np.ndarray | tuple[str, str]:
    """Opens one image and crops its annotations: uint8 [boxes, size, size, 3], or (reason,
    detail) when the image is missing, undecodable or not the size the table says. A pool
    worker's function: it returns problems rather than raising, so the parent applies the
    `on_bad_image` policy in image order."""
    file_path, listed_in, width, height, boxes, image_size = task
    try:
        image = read_image(file_path, "RGB")
    except (DataError, DataNotFoundError) as e:  # told apart in _image_problem
        image = e
    problem = _image_problem(image, file_path, listed_in, width, height)
    if problem:
        return problem
    return np.stack([square_resize(image.crop(box), image_size) for box in boxes])


def _crop_images(
    source: SourceFiles,
    per_image: dict[int, list[_Kept]],
    images: dict[int, tuple[str, int, int]],
    num_labels: int,
    *,
    image_size: int,
    on_bad_image: str,
    bbox_tolerance: float,
    skips: SkipLog,
    progress: bool,
    workers: int | None,
    timing: DecodeTiming,
) -> dict[str, np.ndarray]:
    """Pass 2: opens each image once and crops all its annotations (image ids in order), on
    `workers` processes (`experiments.data.decode_pool`); arrays {images, labels, image_ids,
    annotation_ids}, preallocated for every annotation and trimmed to those cropped."""
    path = source.annotations
    order = sorted(per_image)
    tasks = []
    for image_id in order:
        file_name, width, height = images[image_id]
        boxes = [
            crop_box(b, width, height, tolerance=bbox_tolerance) for _, b, _ in per_image[image_id]
        ]
        tasks.append((str(source.images / file_name), path.name, width, height, boxes, image_size))
    total = sum(len(per_image[i]) for i in order)
    out = {
        "images": np.empty((total, image_size, image_size, 3), np.uint8),
        "labels": np.zeros((total, num_labels), np.uint8),
        "image_ids": np.empty(total, np.int64),
        "annotation_ids": np.empty(total, np.int64),
    }
    n = 0
    results = map_in_order(
        crop_image,
        tasks,
        costs=[t[2] * t[3] for t in tasks],  # decoding time goes with the pixels
        workers=workers,
        progress=progress,
        desc=f"crop {path.name}",
        timing=timing,
    )
    for image_id, result in zip(order, results, strict=True):
        anns = per_image[image_id]
        if isinstance(result, tuple):
            _bad(on_bad_image, skips, *result, _FIX_IMAGE, len(anns))
            continue
        rows = slice(n, n + len(anns))
        out["images"][rows] = result
        for k, (_, _, cols) in enumerate(anns):
            out["labels"][n + k, cols] = 1
        out["image_ids"][rows] = image_id
        out["annotation_ids"][rows] = [-1 if a is None else int(a) for a, _, _ in anns]
        n += len(anns)
    return {k: v[:n] for k, v in out.items()}


@dataclass
class _Selection:
    """Pass 1's result: what `_crop_images` needs, without the (large) parsed table."""

    categories: list[dict]
    label_rows: list[dict]
    images: dict[int, tuple[str, int, int]]
    per_image: dict[int, list[_Kept]]
    unlabelled: int
    skips: SkipLog


def _select(
    path: Path, spec: TaskSpec, *, on_bad_annotation: str, bbox_tolerance: float, seconds: dict
) -> _Selection:
    """Parses the annotation file and selects the task's labelled annotations; the parsed table
    is released on return, before any image is read. Records the stages' seconds."""
    start = time.perf_counter()
    table = read_annotation_file(path)
    seconds["json_parse_s"] = time.perf_counter() - start
    start = time.perf_counter()
    categories, label_rows = spec.select(table, str(path))
    images = _image_table(table["images"], path)
    skips = SkipLog()
    per_image, unlabelled = _check_annotations(
        table,
        path,
        {c["id"] for c in categories},
        {a["id"]: j for j, a in enumerate(label_rows)},
        images,
        on_bad_annotation=on_bad_annotation,
        bbox_tolerance=bbox_tolerance,
        skips=skips,
    )
    seconds["label_selection_s"] = time.perf_counter() - start
    return _Selection(categories, label_rows, images, per_image, unlabelled, skips)


def build_crops(
    source: SourceFiles,
    spec: TaskSpec,
    *,
    image_size: int,
    on_bad_image: str,
    on_bad_annotation: str,
    bbox_tolerance: float = 2.0,
    progress: bool = True,
    workers: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Crops of one annotation file: arrays {images, labels, image_ids, annotation_ids} + meta.

    `workers`: processes that decode and crop (None: every core; `decode_pool`). meta["timing"]
    holds the seconds of each stage and the crops' printed estimate.
    """
    path = source.annotations
    seconds: dict[str, Any] = {}
    sel = _select(
        path,
        spec,
        on_bad_annotation=on_bad_annotation,
        bbox_tolerance=bbox_tolerance,
        seconds=seconds,
    )
    timing = DecodeTiming()
    arrays = _crop_images(
        source,
        sel.per_image,
        sel.images,
        len(sel.label_rows),
        image_size=image_size,
        on_bad_image=on_bad_image,
        bbox_tolerance=bbox_tolerance,
        skips=sel.skips,
        progress=progress,
        workers=workers,
        timing=timing,
    )
    if not len(arrays["images"]):
        raise DataError(
            f"{path}: no usable {spec.task} crops (categories "
            f"{[c['name'] for c in sel.categories]} with any label; {sel.skips.total} skipped, "
            f"{sel.unlabelled} unlabelled)."
        )
    meta = {
        "annotation_file": path.name,
        "categories": [{"id": c["id"], "name": c["name"]} for c in sel.categories],
        "label_attributes": [
            {"id": a["id"], "name": a["name"], "supercategory": a.get("supercategory")}
            for a in sel.label_rows
        ],
        "skipped_annotations": sel.skips.as_dict(),
        "unlabelled_annotations": sel.unlabelled,
        "timing": {
            **seconds,
            "crop_s": timing.seconds,
            "crop_estimate_s": timing.estimate_s,
            "workers": timing.workers,
            "images": timing.tasks,
        },
    }
    return arrays, meta
