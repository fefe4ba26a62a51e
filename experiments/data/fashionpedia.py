"""Fashionpedia tasks `sleevetype` and `archetype`: attribute labels of annotated garment crops.

Fashionpedia (Jia et al., "Fashionpedia: Ontology, Segmentation, and an Attribute Localization
Dataset", ECCV 2020) annotates every garment and garment part with a box and fine-grained
attributes, in COCO-style files `instances_attributes_{train,val}2020.json`: tables `images`
(id, file_name, width, height), `annotations` (id, image_id, category_id, attribute_ids,
bbox [x, y, w, h], ...), `categories` and `attributes` (id, name, supercategory). Attribute ids
are not contiguous (0-234 and 281-340 in the 2020 release), so columns are always looked up by
name in the file's own tables, never by position.

Tasks (examples are crops of one annotation each, see `experiments.data.images` for geometry):
  sleevetype, labels="style": crops of category "sleeve"; labels are the 13 sleeve-style
    attributes of supercategory "nickname": set-in sleeve, dropped-shoulder sleeve, raglan,
    cap, tulip, puff, bell, circular flounce, poet, dolman/batwing, bishop, leg of mutton,
    kimono (ids 204-216 in the 2020 release).
  sleevetype, labels="length": same crops; labels are the five sleeve lengths of supercategory
    "length": sleeveless, short, elbow-length, three quarter, wrist-length (ids 156-160).
  archetype: crops of the 13 whole-garment categories (supercategories upperbody, lowerbody,
    wholebody: shirt/blouse, top/t-shirt/sweatshirt, sweater, cardigan, jacket, vest, pants,
    shorts, skirt, coat, dress, jumpsuit, cape; ids 0-12); labels are the garment nicknames:
    attributes of supercategory "nickname" whose name does not mention a garment part (a
    category of supercategory "garment parts": hood, collar, lapel, epaulette, sleeve, pocket,
    neckline) as a whole word. In the 2020 release this keeps ids 0-113 (classic t-shirt ...
    skater dress; "hoodie" and the garment "kimono" stay) and drops the part nicknames: collars
    and lapels 161-178, sleeves 204-216, pockets 217-224. Parts are excluded because they label
    a part's own box, not the garment's.
Only annotations carrying at least one of the task's labels are examples: an annotation without
any is unlabelled for this attribute type, not a negative. Matching names ignores case,
parentheses, hyphens and repeated spaces, so "raglan (sleeve)" and "Raglan sleeve" agree; a
table lacking a wanted name fails with the missing names listed.

Splits: test = Fashionpedia val2020 (its own annotations and images); train and val = a seeded
split of train2020 by image (round(val_fraction * images) images to val, the rest to train; a
seeded permutation of the sorted image ids), so the crops of one photo never straddle splits.

Cut-off: `cutoff` is the training positives of the rarest label, as in the catalog task: labels
with fewer training positives are dropped, and the rarest remaining label is subsampled to
exactly `cutoff` (`experiments.data.images.apply_cutoff`); `cutoff=None` keeps the natural
distribution. Dropped labels and removed examples are recorded in the provenance.

Prepare and cache: `prepare(task, ...)` crops, pads to square, resizes and stores the crops of
each annotation file once in `<cache>/fashionpedia/*.npz` (atomic), keyed by the annotation
file's SHA-256, the image folder, the image size, the label set and the bad-item policies.
Splitting and the cut-off are applied in memory on load, so every seed and cut-off shares it.
The crops are made on every core (`workers`, default all; `experiments.data.decode_pool`), the
estimate of the build printed before the long work; the arrays do not depend on the number of
processes. `python -m benchmarks.fashionpedia_scale` measures a build at the real size.

Code: `fashionpedia_labels` chooses the categories and label attributes by name,
`fashionpedia_crops` crops one annotation file; this module finds the files, caches the crops
and builds the splits.

Bad items: `on_bad_image` (image file missing, undecodable, or not the size the table says) and
`on_bad_annotation` (image id not in the image table, attribute id not in the attribute table,
missing fields, degenerate box or box outside the image) are "error" (default: stop with the
reason and the fix) or "skip" (the annotation is left out, counted per reason in the provenance
and reported with a DataSkipWarning). Never silent.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data.dataset import Dataset, Splits
from experiments.data.fashionpedia_crops import SourceFiles, build_crops, read_annotation_file
from experiments.data.fashionpedia_labels import DEFAULT_LABELS, TaskSpec, name_key, task_spec
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
    save_arrays,
    seeded_partition,
    sha256_file,
)

__all__ = [
    "ANNOTATION_FILES",
    "DEFAULT_LABELS",
    "DataError",
    "DataNotFoundError",
    "SourceFiles",
    "TaskSpec",
    "build_crops",
    "load_archetype",
    "load_fashionpedia",
    "load_sleevetype",
    "locate",
    "name_key",
    "prepare",
    "read_annotation_file",
]

ENV_VAR = "LTWEIGHTS_FASHIONPEDIA"
# Fashionpedia split -> (annotation file, candidate image folders relative to data_dir).
# val_test2020.zip unpacks to test/, which holds the val2020 images.
ANNOTATION_FILES = {
    "train2020": "instances_attributes_train2020.json",
    "val2020": "instances_attributes_val2020.json",
}
IMAGE_DIRS = {
    "train2020": ("train", "train2020", "images/train", "images/train2020"),
    "val2020": ("test", "val", "val2020", "val_test2020", "images/test", "images/val2020"),
}

# ---------------------------------------------------------------------------------------------
# Finding the data


def missing_dataset_message(reason: str) -> str:
    """The error text when Fashionpedia is absent: where to get it and how to point at it."""
    return (
        f"Fashionpedia was not found: {reason}\n"
        "The sleevetype and archetype tasks read Fashionpedia, which you download yourself:\n"
        "  project page: https://fashionpedia.github.io/home/ ; downloads listed at\n"
        "  https://github.com/cvdfoundation/fashionpedia\n"
        "  (API and ontology: https://github.com/KMnP/fashionpedia-api)\n"
        "  - annotations instances_attributes_train2020.json and\n"
        "    instances_attributes_val2020.json\n"
        "  - images train2020.zip (unpacks to train/) and val_test2020.zip (unpacks to test/)\n"
        "Lay them out in one folder:\n"
        "  <folder>/instances_attributes_train2020.json\n"
        "  <folder>/instances_attributes_val2020.json\n"
        "  <folder>/train/<image files>   <folder>/test/<image files>\n"
        "and pass data_dir=<folder> to the task (the config's data block)\n"
        f"or set the environment variable {ENV_VAR}=<folder>.\n"
        "Without Fashionpedia, the embedded catalog configs (catalog_<scheme>, e.g. "
        "catalog_proposed) run the same comparison on the Fashion-MNIST catalog task."
    )


def locate(
    data_dir: str | os.PathLike | None,
    *,
    train_image_dir: str | os.PathLike | None = None,
    test_image_dir: str | os.PathLike | None = None,
) -> dict[str, SourceFiles]:
    """Annotation file and image folder of train2020 and val2020; DataNotFoundError if absent.

    `data_dir` (else $LTWEIGHTS_FASHIONPEDIA) holds the two annotation files (directly or in
    annotations/) and the image folders (train/ and test/, or the names in IMAGE_DIRS, or the
    explicit folders given, relative to data_dir unless absolute).
    """
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or None
    if data_dir is None:
        raise DataNotFoundError(
            missing_dataset_message(f"no data_dir given and {ENV_VAR} is unset.")
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(missing_dataset_message(f"{root} is not a folder."))
    explicit = {"train2020": train_image_dir, "val2020": test_image_dir}
    found = {}
    for split, file_name in ANNOTATION_FILES.items():
        ann = next(
            (p for p in (root / file_name, root / "annotations" / file_name) if p.is_file()), None
        )
        if ann is None:
            raise DataNotFoundError(missing_dataset_message(f"{root} has no {file_name}."))
        if explicit[split] is not None:
            candidates = (root / Path(explicit[split]).expanduser(),)
        else:
            candidates = tuple(root / d for d in IMAGE_DIRS[split])
        images = next((p for p in candidates if p.is_dir()), None)
        if images is None:
            raise DataNotFoundError(
                missing_dataset_message(
                    f"no image folder for {split} in {root} (looked for "
                    f"{', '.join(str(c) for c in candidates)})."
                )
            )
        found[split] = SourceFiles(ann, images)
    return found


# ---------------------------------------------------------------------------------------------
# Prepare: annotation files -> cached crops (`fashionpedia_crops`)


def _cached_crops(path, source, spec, params, *, image_size, progress, workers):
    """(arrays, meta) of one annotation file from its cache file, else built and cached."""
    start = time.perf_counter()
    cached = load_arrays(path)
    if cached is not None:
        arrays, meta = cached
        return arrays, {
            **meta,
            "timing": {**meta.get("timing", {}), "cache_read_s": time.perf_counter() - start},
        }
    arrays, meta = build_crops(
        source,
        spec,
        image_size=image_size,
        on_bad_image=params["on_bad_image"],
        on_bad_annotation=params["on_bad_annotation"],
        progress=progress,
        workers=workers,
    )
    meta = {**meta, "annotation_sha256": params["annotation_sha256"], "build": params}
    start = time.perf_counter()
    save_arrays(path, arrays, meta)  # atomic: an interrupted build leaves no cache file
    meta["timing"] = {**meta["timing"], "cache_write_s": time.perf_counter() - start}
    print(
        f"fashionpedia {spec.task}: cached {len(arrays['images'])} crops of "
        f"{source.annotations.name} in {path}",
        file=sys.stderr,
    )
    return arrays, meta


def prepare(
    task: str,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    labels: str | None = None,
    on_bad_image: str = "error",
    on_bad_annotation: str = "error",
    train_image_dir: str | os.PathLike | None = None,
    test_image_dir: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Builds (once) and returns the cached crops of train2020 and val2020: {split: (arrays, meta)}.

    meta holds the label attributes (id, name), skip counts, the annotation file's SHA-256, the
    cache file name and the build's timing (its stages' seconds; `cache_write_s` and
    `cache_read_s` of this call). Skips are reported with a DataSkipWarning on every call.
    `workers`: processes that crop (None: every core); the cache does not depend on it.
    """
    spec = task_spec(task, labels or DEFAULT_LABELS.get(task, ""))
    check_policy("on_bad_image", on_bad_image)
    check_policy("on_bad_annotation", on_bad_annotation)
    sources = locate(data_dir, train_image_dir=train_image_dir, test_image_dir=test_image_dir)
    folder = cache_root(cache_dir) / "fashionpedia"
    out = {}
    for split, source in sources.items():
        sha = sha256_file(source.annotations)
        params = {
            "task": spec.task,
            "labels": spec.labels,
            "annotation_sha256": sha,
            "image_dir": str(source.images.resolve()),
            "image_size": int(image_size),
            "on_bad_image": on_bad_image,
            "on_bad_annotation": on_bad_annotation,
        }
        path = folder / f"{spec.task}-{spec.labels}-{split}-{image_size}px-{cache_key(params)}.npz"
        arrays, meta = _cached_crops(
            path, source, spec, params, image_size=image_size, progress=progress, workers=workers
        )
        meta = {**meta, "cache_file": path.name}
        skipped = SkipLog(**meta["skipped_annotations"])
        if skipped.total:
            warnings.warn(
                f"Fashionpedia {split} {skipped.summary('annotations')} See provenance "
                "['skipped_annotations'].",
                DataSkipWarning,
                stacklevel=2,
            )
        out[split] = (arrays, meta)
    return out


# ---------------------------------------------------------------------------------------------
# Loaders


def _same_label_names(train_meta: dict[str, Any], test_meta: dict[str, Any]) -> list[str]:
    names = [a["name"] for a in train_meta["label_attributes"]]
    if names != [a["name"] for a in test_meta["label_attributes"]]:
        raise DataError(
            "The train2020 and val2020 annotation files select different label attributes "
            f"({names} vs {[a['name'] for a in test_meta['label_attributes']]}); use files of "
            "the same Fashionpedia release."
        )
    return names


def _split_by_image(
    image_ids: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """train2020 -> (train rows, val rows, their descriptions), split by image so that the crops
    of one photo stay in one split."""
    unique_images = np.unique(image_ids)
    parts = seeded_partition(len(unique_images), [val_fraction], seed, salt=0)
    val_images = unique_images[parts == 1]
    is_val = np.isin(image_ids, val_images)
    described = {
        "train": f"train2020 images not in val ({len(unique_images) - len(val_images)} images)",
        "val": f"round({val_fraction} * images) of train2020, seeded permutation "
        f"({len(val_images)} images)",
        "test": "val2020",
    }
    return np.flatnonzero(~is_val), np.flatnonzero(is_val), described


def _files_provenance(train_meta: dict[str, Any], test_meta: dict[str, Any]) -> dict[str, Any]:
    """The annotation files' checksums, the cache files and the example categories."""
    return {
        "files": {
            m["annotation_file"]: {"sha256": m["annotation_sha256"]}
            for m in (train_meta, test_meta)
        },
        "cache_files": [train_meta["cache_file"], test_meta["cache_file"]],
        "categories": train_meta["categories"],
    }


def _annotation_counts(train_meta: dict[str, Any], test_meta: dict[str, Any]) -> dict[str, Any]:
    """Skipped and unlabelled annotations of both annotation files."""
    return {
        key: {"train2020": train_meta[key], "val2020": test_meta[key]}
        for key in ("skipped_annotations", "unlabelled_annotations")
    }


def load_fashionpedia(
    task: str,
    *,
    cutoff: int | None,
    seed: int,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    labels: str | None = None,
    val_fraction: float = 0.1,
    on_bad_image: str = "error",
    on_bad_annotation: str = "error",
    train_image_dir: str | os.PathLike | None = None,
    test_image_dir: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Splits:
    """The splits of Fashionpedia task `task` ("sleevetype" or "archetype"; see the module
    docstring). `labels` None means the task's default (DEFAULT_LABELS). `workers`: processes
    that crop on the first build (None: every core)."""
    if labels is None:
        labels = DEFAULT_LABELS.get(task, "")
    prepared = prepare(
        task,
        data_dir=data_dir,
        cache_dir=cache_dir,
        image_size=image_size,
        labels=labels,
        on_bad_image=on_bad_image,
        on_bad_annotation=on_bad_annotation,
        train_image_dir=train_image_dir,
        test_image_dir=test_image_dir,
        progress=progress,
        workers=workers,
    )
    (train_arrays, train_meta), (test_arrays, test_meta) = (
        prepared["train2020"],
        prepared["val2020"],
    )
    names = _same_label_names(train_meta, test_meta)
    train_idx, val_idx, described = _split_by_image(train_arrays["image_ids"], val_fraction, seed)
    result = apply_cutoff(train_arrays["labels"][train_idx], cutoff, seed)
    train_idx = train_idx[result.train_keep]
    kept = result.kept_labels
    label_names = tuple(names[j] for j in kept)
    provenance = {
        "source": "fashionpedia",
        "task": task,
        "labels": labels,
        **_files_provenance(train_meta, test_meta),
        "label_attributes": [train_meta["label_attributes"][j] for j in kept],
        **result.provenance(names),
        **_annotation_counts(train_meta, test_meta),
        "splits": described,
        "cutoff": cutoff,
        "seed": seed,
        "val_fraction": val_fraction,
        "image_size": image_size,
        "crop": "annotation bbox, padded to square (black), bicubic resize, RGB",
        "num_examples": {
            "train": len(train_idx),
            "val": len(val_idx),
            "test": len(test_arrays["images"]),
        },
    }

    def dataset(arrays, idx, split):
        return Dataset(
            images=arrays["images"][idx],
            labels=arrays["labels"][idx][:, kept],
            label_names=label_names,
            split=split,
            provenance=provenance,
        )

    return Splits(
        train=dataset(train_arrays, train_idx, "train"),
        val=dataset(train_arrays, val_idx, "val"),
        test=dataset(test_arrays, np.arange(len(test_arrays["images"])), "test"),
    )


# The two task loaders: `load_fashionpedia` with the task fixed (same keyword arguments).
load_sleevetype = functools.partial(load_fashionpedia, "sleevetype")
load_sleevetype.__doc__ = (
    "Sleeve crops labelled by sleeve style (labels='style', 13, the default) or length "
    "('length', 5). Keyword arguments: those of `load_fashionpedia`."
)
load_archetype = functools.partial(load_fashionpedia, "archetype")
load_archetype.__doc__ = (
    "Whole-garment crops (13 categories) labelled by garment nickname (polo shirt, ...). "
    "Keyword arguments: those of `load_fashionpedia`."
)
