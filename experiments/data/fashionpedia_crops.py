"""Cropping one Fashionpedia annotation file: checked annotations -> square crops + labels.

Pass 1 checks every annotation of the task's categories against the file's tables (before any
slow image reading); pass 2 opens each image once and crops all its annotations. Bad items
raise or are counted by the `on_bad_image` / `on_bad_annotation` policies (see the
`experiments.data.fashionpedia` module docstring).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data.fashionpedia_labels import TaskSpec
from experiments.data.images import (
    DataError,
    DataNotFoundError,
    SkipLog,
    crop_box,
    read_image,
    square_resize,
)

__all__ = ["SourceFiles", "build_crops", "read_annotation_file"]


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


def _open_checked(
    file_path: Path,
    listed_in: str,
    width: int,
    height: int,
    on_bad_image: str,
    skips: SkipLog,
    n: int,
):
    """The decoded image, or None when it is missing, undecodable or not the size the table
    says (raised or counted for its `n` annotations, by `on_bad_image`)."""
    try:
        image = read_image(file_path, "RGB")
    except DataNotFoundError:
        detail = f"{file_path} (listed in {listed_in}) does not exist"
        _bad(on_bad_image, skips, "image file missing", detail, _FIX_IMAGE, n)
        return None
    except DataError as e:
        detail = str(e).rstrip(".")
        _bad(on_bad_image, skips, "image file unreadable", detail, _FIX_IMAGE, n)
        return None
    if image.size != (width, height):
        detail = (
            f"{file_path} is {image.size[0]} x {image.size[1]} but {listed_in} says "
            f"{width} x {height}"
        )
        _bad(on_bad_image, skips, "image size differs from the table", detail, _FIX_IMAGE, n)
        return None
    return image


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
) -> dict[str, list]:
    """Pass 2: opens each image once and crops all its annotations (image ids in order)."""
    from tqdm.auto import tqdm

    path = source.annotations
    out: dict[str, list] = {"images": [], "labels": [], "image_ids": [], "annotation_ids": []}
    for image_id in tqdm(
        sorted(per_image), desc=f"crop {path.name}", unit="img", disable=not progress
    ):
        file_name, width, height = images[image_id]
        anns = per_image[image_id]
        image = _open_checked(
            source.images / file_name, path.name, width, height, on_bad_image, skips, len(anns)
        )
        if image is None:
            continue
        for ann_id, bbox, cols in anns:
            box = crop_box(bbox, width, height, tolerance=bbox_tolerance)
            out["images"].append(square_resize(image.crop(box), image_size))
            row = np.zeros(num_labels, np.uint8)
            row[cols] = 1
            out["labels"].append(row)
            out["image_ids"].append(image_id)
            out["annotation_ids"].append(-1 if ann_id is None else int(ann_id))
    return out


def build_crops(
    source: SourceFiles,
    spec: TaskSpec,
    *,
    image_size: int,
    on_bad_image: str,
    on_bad_annotation: str,
    bbox_tolerance: float = 2.0,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Crops of one annotation file: arrays {images, labels, image_ids, annotation_ids} + meta."""
    path = source.annotations
    table = read_annotation_file(path)
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
    crops = _crop_images(
        source,
        per_image,
        images,
        len(label_rows),
        image_size=image_size,
        on_bad_image=on_bad_image,
        bbox_tolerance=bbox_tolerance,
        skips=skips,
        progress=progress,
    )
    if not crops["images"]:
        raise DataError(
            f"{path}: no usable {spec.task} crops (categories {[c['name'] for c in categories]} "
            f"with any label; {skips.total} skipped, {unlabelled} unlabelled)."
        )
    arrays = {
        "images": np.stack(crops["images"]),
        "labels": np.stack(crops["labels"]),
        "image_ids": np.asarray(crops["image_ids"], np.int64),
        "annotation_ids": np.asarray(crops["annotation_ids"], np.int64),
    }
    meta = {
        "annotation_file": path.name,
        "categories": [{"id": c["id"], "name": c["name"]} for c in categories],
        "label_attributes": [
            {"id": a["id"], "name": a["name"], "supercategory": a.get("supercategory")}
            for a in label_rows
        ],
        "skipped_annotations": skips.as_dict(),
        "unlabelled_annotations": unlabelled,
    }
    return arrays, meta
