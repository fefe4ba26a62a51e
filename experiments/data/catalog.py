"""The catalog task: "which garment types does this catalog image show", built from Fashion-MNIST.

Each image is a 2 x 2 grid of cells; a cell is empty (black) or holds one Fashion-MNIST item, and
the image's labels are the set of classes present (10 labels, Fashion-MNIST's class names; no class
appears twice in one image). `image_size=28` downscales items to 14 x 14 by 2 x 2 mean pooling
(the CPU tier); `image_size=56` keeps them at 28 x 28.

Label profiles of the training split (classes ranked by a seeded permutation, rank r = 0..C-1):
  long tail  n_r = round(head_count * (cutoff / head_count) ** (r / (C - 1)))
             so the head class has head_count positives and the rarest exactly `cutoff`;
  step       the last `num_tail_classes` ranks have `cutoff`, the others head_count
             (Buda et al. 2018, "A systematic study of the class imbalance problem in CNNs").
The achieved training positives EQUAL the profile: the builder decides, image by image, which
classes each image shows so that every class gets exactly its count (see
`catalog_grid.assign_classes`).
Validation follows the same profile scaled by `val_fraction`, with at least `val_min_positives`
of every class so per-label thresholds can be chosen; test is balanced, `test_positives` per class.
Train and validation draw disjoint items from Fashion-MNIST's training images, test from t10k.

Classes: `classes=None` (the default) uses all ten Fashion-MNIST classes. A list of Fashion-MNIST
class indices (e.g. [1, 3, 5, 7, 9]; at least 4 for the 2 x 2 grid) draws items from those
classes only, and the label space is those classes, label j being Fashion-MNIST class
classes[j] (its name, its items); profiles, ranks and counts are then over len(classes) labels.
Two catalogs on disjoint class lists share no label and no item (a pretraining/fine-tuning split).

Defaults (CPU tier): head_count 1000 gives about 2,000 training images of 28 x 28, an epoch of a
small ResNet in seconds on two cores; head_prevalence 0.5 sizes a split so that its most frequent
class shows in about half its images. Builds take well under a second after Fashion-MNIST is
decoded, and are cached on disk keyed by their parameters.

Three modules, one job each: `catalog_profile` (the counts per class and split),
`catalog_grid` (the images that have them, a pure function) and this one (the task loaders:
parameter checks, Fashion-MNIST, the on-disk cache, provenance).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data.cache import atomic_save_npz, cache_root, load_npz, params_key
from experiments.data.catalog_grid import CELLS, SPLITS, build_catalog
from experiments.data.catalog_profile import DEFAULT_HEAD_COUNT, class_order
from experiments.data.dataset import Dataset, Splits
from experiments.data.fashion_mnist import CLASS_NAMES, SHA256, load_fashion_mnist

# Part of every cache key: bump it whenever a change to the catalog modules changes the built
# arrays.
BUILDER_VERSION = 1


def check_classes(classes: Any) -> tuple[int, ...] | None:
    """`classes` as a tuple of Fashion-MNIST class indices (None stays None, all ten classes);
    ValueError naming the problem and the fix otherwise."""
    if classes is None:
        return None
    num = len(CLASS_NAMES)
    example = "e.g. --set data.classes=[1,3,5,7,9]"
    if isinstance(classes, str | bytes) or not isinstance(classes, list | tuple):
        raise ValueError(
            f"data.classes must be a list of Fashion-MNIST class indices 0..{num - 1} ({example}) "
            f"or None for all {num}; got {classes!r}."
        )
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num]
    if bad:
        raise ValueError(
            f"data.classes holds {bad!r}, not Fashion-MNIST class indices 0..{num - 1} "
            f"({', '.join(f'{i} {n}' for i, n in enumerate(CLASS_NAMES))}); {example}."
        )
    if len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if list(classes).count(c) > 1})
        raise ValueError(f"data.classes repeats {repeated}; list each class once ({example}).")
    if len(classes) < CELLS:
        raise ValueError(
            f"data.classes has {len(classes)} classes but the 2 x 2 catalog needs at least "
            f"{CELLS} (no class shows twice in an image); {example}."
        )
    return tuple(int(c) for c in classes)


def class_subset_labels(item_labels: np.ndarray, classes: tuple[int, ...] | None) -> np.ndarray:
    """Item labels in the catalog's label space: class classes[j] -> j, other classes -> -1
    (never drawn); unchanged when `classes` is None."""
    if classes is None:
        return item_labels
    mapped = np.full(item_labels.shape, -1, np.int64)
    for j, c in enumerate(classes):
        mapped[item_labels == c] = j
    return mapped


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def label_names(classes: tuple[int, ...] | None) -> tuple[str, ...]:
    """The catalog's label names: Fashion-MNIST's, or those of `classes` in their order."""
    return CLASS_NAMES if classes is None else tuple(CLASS_NAMES[c] for c in classes)


def _cache_path(task: str, params: dict[str, Any], cache_dir, key: str) -> Path:
    return (
        cache_root(cache_dir)
        / "catalog"
        / f"{task}-cutoff{params['cutoff']}-seed{params['seed']}-{key}.npz"
    )


def _build(
    task: str, params: dict[str, Any], key: str, *, data_dir, cache_dir, download: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Builds the task from Fashion-MNIST: the cached arrays and the provenance."""
    source = load_fashion_mnist(data_dir=data_dir, cache_dir=cache_dir, download=download)
    params = dict(params)
    classes = params.pop("classes", None)
    names = label_names(classes)
    built, wanted = build_catalog(
        source.train_images,
        class_subset_labels(source.train_labels, classes),
        source.test_images,
        class_subset_labels(source.test_labels, classes),
        num_classes=len(names),
        **params,
    )
    if classes is not None:
        params["classes"] = list(classes)
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_images"] = built[split].images
        arrays[f"{split}_labels"] = built[split].labels
        arrays[f"{split}_cell_items"] = built[split].cell_items
    provenance = {
        "task": task,
        "builder": "experiments.data.catalog",
        "builder_version": BUILDER_VERSION,
        "cache_key": key,
        "params": params,
        "source": source.provenance,
        "label_names": list(names),
        "class_order": class_order(len(names), params["seed"]).tolist(),
        "requested_counts": {s: wanted[s].tolist() for s in SPLITS},
        "achieved_counts": {
            s: built[s].labels.sum(axis=0, dtype=np.int64).tolist() for s in SPLITS
        },
        "num_examples": {s: len(built[s].labels) for s in SPLITS},
    }
    if provenance["achieved_counts"]["train"] != provenance["requested_counts"]["train"]:
        raise AssertionError("catalog builder bug: training counts differ from the profile")
    return arrays, provenance


def _load(
    task: str,
    params: dict[str, Any],
    *,
    data_dir: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    download: bool,
    use_cache: bool,
) -> Splits:
    """Checks `params` (the keyword arguments of `build_catalog`), then reads the build from the
    cache or builds it (and caches it)."""
    params = dict(params)
    for name, minimum in (("cutoff", 1), ("seed", 0), ("head_count", 1), ("image_size", 1)):
        params[name] = _as_int(name, params[name], minimum)
    classes = check_classes(params.pop("classes", None))
    if classes is not None:  # all ten classes keep the key (and the build) they always had
        params["classes"] = list(classes)
    key = params_key(
        {"builder_version": BUILDER_VERSION, "source_sha256": SHA256, "params": params}
    )
    path = _cache_path(task, params, cache_dir, key)
    cached = load_npz(path) if use_cache else None
    if cached is None:
        arrays, provenance = _build(
            task, params, key, data_dir=data_dir, cache_dir=cache_dir, download=download
        )
        if use_cache:
            atomic_save_npz(path, arrays, provenance)
    else:
        arrays, provenance = cached
    return Splits(
        *(
            Dataset(
                images=arrays[f"{s}_images"],
                labels=arrays[f"{s}_labels"],
                label_names=label_names(classes),
                split=s,
                provenance=provenance,
            )
            for s in SPLITS
        )
    )


def load_catalog(
    *,
    cutoff: int = 6,
    seed: int = 0,
    head_count: int = DEFAULT_HEAD_COUNT,
    image_size: int = 28,
    val_fraction: float = 0.25,
    val_min_positives: int = 5,
    test_positives: int = 200,
    head_prevalence: float = 0.5,
    classes: list[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    use_cache: bool = True,
) -> Splits:
    """The catalog task with the long-tail profile (see the module docstring).

    cutoff: training positives of the rarest class; head_count: of the most frequent class;
    image_size: 28 (items at 14 x 14) or 56 (items at 28 x 28); classes: Fashion-MNIST class
    indices to draw from (None: all ten; see the module docstring). Reads the build from
    `<cache>/catalog/` when present, else builds and caches it (npz + JSON provenance).
    """
    params = {
        "profile": "long_tail",
        "cutoff": cutoff,
        "seed": seed,
        "head_count": head_count,
        "image_size": image_size,
        "val_fraction": val_fraction,
        "val_min_positives": val_min_positives,
        "test_positives": test_positives,
        "head_prevalence": head_prevalence,
        "classes": classes,
    }
    return _load(
        "catalog",
        params,
        data_dir=data_dir,
        cache_dir=cache_dir,
        download=download,
        use_cache=use_cache,
    )


def load_catalog_step(
    *,
    cutoff: int = 6,
    seed: int = 0,
    head_count: int = DEFAULT_HEAD_COUNT,
    num_tail_classes: int = 5,
    image_size: int = 28,
    val_fraction: float = 0.25,
    val_min_positives: int = 5,
    test_positives: int = 200,
    head_prevalence: float = 0.5,
    classes: list[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    use_cache: bool = True,
) -> Splits:
    """The catalog task with the step profile: `num_tail_classes` classes (the last ranks of the
    seeded class order) at `cutoff` training positives, the others at `head_count`; `classes`
    as for `load_catalog`."""
    params = {
        "profile": "step",
        "cutoff": cutoff,
        "seed": seed,
        "head_count": head_count,
        "num_tail_classes": num_tail_classes,
        "image_size": image_size,
        "val_fraction": val_fraction,
        "val_min_positives": val_min_positives,
        "test_positives": test_positives,
        "head_prevalence": head_prevalence,
        "classes": classes,
    }
    return _load(
        "catalog_step",
        params,
        data_dir=data_dir,
        cache_dir=cache_dir,
        download=download,
        use_cache=use_cache,
    )
