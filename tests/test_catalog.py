"""The catalog task: exact label profiles, split rules, pixels, determinism and the cache.

Most tests build from small synthetic items whose pixel value encodes their class, so labels can
be checked against what the cells actually show; a few use the real Fashion-MNIST when installed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import data
from experiments.data import (
    catalog,
    catalog_grid,
    catalog_profile,
    csv_catalog,
    fashionpedia,
    load_task,
    mlt,
    tfds_source,
)
from experiments.data import fashion_mnist as fm

C = 10


def synthetic_items(per_class: int, seed: int = 0):
    """Constant 28 x 28 items: item i of class c has value 10 + 20 c + (i mod 7), so a cell's
    class is (value - 10) // 20 and an empty (black) cell is 0."""
    classes = np.repeat(np.arange(C), per_class)
    classes = np.random.default_rng(seed).permutation(classes)
    values = 10 + 20 * classes + np.arange(len(classes)) % 7
    items = np.broadcast_to(values[:, None, None], (len(classes), 28, 28)).astype(np.uint8)
    return items, classes.astype(np.uint8)


TRAIN_ITEMS, TRAIN_CLASSES = synthetic_items(400, seed=1)
TEST_ITEMS, TEST_CLASSES = synthetic_items(100, seed=2)
SMALL = dict(head_count=200, test_positives=50)


def build(**params):
    params = {**SMALL, **params}
    return catalog_grid.build_catalog(
        TRAIN_ITEMS, TRAIN_CLASSES, TEST_ITEMS, TEST_CLASSES, num_classes=C, **params
    )


def digest(splits) -> str:
    h = hashlib.sha256()
    for split in catalog_grid.SPLITS:
        for array in (splits[split].images, splits[split].labels):
            h.update(str(array.shape).encode())
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def cells_of(images: np.ndarray) -> np.ndarray:
    """The 4 quadrants of each image, [N, 4, s, s], in the order 0 1 / 2 3."""
    n, size = images.shape[0], images.shape[1]
    s = size // 2
    return images[..., 0].reshape(n, 2, s, 2, s).transpose(0, 1, 3, 2, 4).reshape(n, 4, s, s)


# ---------------------------------------------------------------------------------------------
# Profiles


def test_long_tail_profile_matches_the_formula():
    head, cutoff = 1000, 6
    counts = catalog_profile.long_tail_profile(C, head_count=head, cutoff=cutoff, seed=3)
    order = catalog_profile.class_order(C, 3)
    assert sorted(order.tolist()) == list(range(C))
    expected = [round(head * math.pow(cutoff / head, r / (C - 1))) for r in range(C)]
    assert counts[order].tolist() == expected
    assert expected[0] == 1000 and expected[-1] == 6 and expected[4] == 103  # 1000 * 0.006**(4/9)
    assert counts.dtype == np.int64


def test_class_order_depends_on_the_seed_and_is_shared_by_the_profiles():
    orders = {tuple(catalog_profile.class_order(C, s)) for s in range(5)}
    assert len(orders) > 1
    step = catalog_profile.step_profile(C, head_count=100, cutoff=7, seed=4, num_tail_classes=3)
    tail = catalog_profile.class_order(C, 4)[-3:]
    assert sorted(np.flatnonzero(step == 7).tolist()) == sorted(tail.tolist())
    assert (step[np.setdiff1d(np.arange(C), tail)] == 100).all()
    long = catalog_profile.long_tail_profile(C, head_count=100, cutoff=7, seed=4)
    assert long[tail[-1]] == 7 and long[catalog_profile.class_order(C, 4)[0]] == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(head_count=10, cutoff=11), "cutoff <= head_count"),
        (dict(head_count=10, cutoff=0), "cutoff <= head_count"),
    ],
)
def test_profile_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        catalog_profile.long_tail_profile(C, seed=0, **kwargs)


def test_step_profile_rejects_bad_tail_size():
    with pytest.raises(ValueError, match="num_tail_classes"):
        catalog_profile.step_profile(C, head_count=10, cutoff=2, seed=0, num_tail_classes=C)


def test_val_profile_has_a_floor():
    val = catalog_profile.val_profile(np.array([1000, 100, 6]), fraction=0.25, min_positives=5)
    assert val.tolist() == [250, 25, 5]


# ---------------------------------------------------------------------------------------------
# Packing


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 60), min_size=4, max_size=12).filter(lambda c: sum(c) > 0),
    prevalence=st.sampled_from([0.2, 0.5, 0.8]),
    seed=st.integers(0, 2**16),
)
def test_pack_cells_meets_any_counts_exactly(counts, prevalence, seed):
    counts = np.array(counts)
    cells = catalog_grid.pack_cells(
        counts, head_prevalence=prevalence, rng=np.random.default_rng(seed)
    )
    assert cells.shape[1] == 4
    found = np.array([(cells == c).sum() for c in range(len(counts))])
    np.testing.assert_array_equal(found, counts)
    for row in cells:  # no class twice in one image
        shown = row[row >= 0]
        assert len(set(shown.tolist())) == len(shown)
    assert (cells == -1).sum() == cells.size - counts.sum()


def test_one_dominant_class_uses_balanced_occupancy():
    """21 items of one class in 42 images: a uniform sample of cells almost never leaves 21
    non-empty images, so the balanced fallback must take over and still be exact."""
    cells = catalog_grid.pack_cells(
        np.array([0, 0, 0, 21]), head_prevalence=0.5, rng=np.random.default_rng(0)
    )
    assert cells.shape == (42, 4) and (cells == 3).sum() == 21 and (cells >= 0).sum() == 21
    assert ((cells == 3).sum(axis=1) <= 1).all()


def test_assign_classes_uses_the_greedy_fallback_when_needed():
    """Tight layouts (every image full, the largest classes in every image) force the
    Gale-Ryser fallback; counts must still be exact."""
    capacities = np.full(6, 4)
    counts = np.array([6, 6, 6, 3, 2, 1])
    chosen = catalog_grid.assign_classes(capacities, counts, np.random.default_rng(0), tries=1)
    flat = np.concatenate(chosen)
    np.testing.assert_array_equal(np.bincount(flat, minlength=6), counts)
    assert all(len(set(c.tolist())) == len(c) == 4 for c in chosen)


def test_assign_classes_rejects_impossible_counts():
    with pytest.raises(ValueError, match="No image layout"):
        catalog_grid.assign_classes(np.array([2, 2]), np.array([3, 1]), np.random.default_rng(0))


def test_too_few_classes_for_the_grid():
    with pytest.raises(ValueError, match="at least 4 classes"):
        catalog_grid.pack_cells(
            np.array([3, 2, 1]), head_prevalence=0.5, rng=np.random.default_rng(0)
        )


# ---------------------------------------------------------------------------------------------
# The build


@pytest.mark.parametrize("profile", ["long_tail", "step"])
@pytest.mark.parametrize("cutoff", [6, 12, 25, 50])
def test_achieved_counts_equal_the_requested_profile(profile, cutoff):
    splits, wanted = build(profile=profile, cutoff=cutoff, seed=cutoff)
    train = splits["train"].labels.sum(axis=0)
    np.testing.assert_array_equal(train, wanted["train"])
    assert train.min() == cutoff and train.max() == SMALL["head_count"]
    if profile == "step":
        assert (train == cutoff).sum() == 5 and (train == SMALL["head_count"]).sum() == 5
    np.testing.assert_array_equal(splits["val"].labels.sum(axis=0), wanted["val"])
    assert splits["val"].labels.sum(axis=0).min() >= 5
    np.testing.assert_array_equal(splits["test"].labels.sum(axis=0), [50] * C)


def test_val_follows_the_train_distribution():
    _, wanted = build(cutoff=6, val_fraction=0.25)
    train, val = wanted["train"], wanted["val"]
    np.testing.assert_array_equal(val, np.maximum(np.rint(0.25 * train), 5))
    assert np.array_equal(
        np.argsort(-train, kind="stable")[:3], np.argsort(-val, kind="stable")[:3]
    )


def test_items_are_distinct_disjoint_and_of_the_right_class():
    splits, _ = build(cutoff=12)
    used = {}
    for split in catalog_grid.SPLITS:
        cells, items = splits[split].cell_classes, splits[split].cell_items
        assert ((cells >= 0) == (items >= 0)).all()
        source_classes = TEST_CLASSES if split == "test" else TRAIN_CLASSES
        np.testing.assert_array_equal(source_classes[items[items >= 0]], cells[cells >= 0])
        used[split] = items[items >= 0]
        assert len(np.unique(used[split])) == len(used[split])  # no item twice in a split
    assert not set(used["train"].tolist()) & set(used["val"].tolist())


@pytest.mark.parametrize("image_size", [28, 56])
def test_labels_are_the_classes_the_cells_show(image_size):
    splits, _ = build(cutoff=6, image_size=image_size)
    for split in catalog_grid.SPLITS:
        images, labels = splits[split].images, splits[split].labels
        assert images.shape[1:] == (image_size, image_size, 1) and images.dtype == np.uint8
        assert labels.shape == (len(images), C) and labels.dtype == np.uint8
        quadrants = cells_of(images)
        flat = quadrants.reshape(*quadrants.shape[:2], -1)
        assert (flat.min(axis=2) == flat.max(axis=2)).all()  # each cell one constant item
        value = flat[..., 0].astype(int)
        shown = np.where(value == 0, -1, (value - 10) // 20)
        rebuilt = np.zeros_like(labels)
        for i, row in enumerate(shown):
            rebuilt[i, row[row >= 0]] = 1
        np.testing.assert_array_equal(rebuilt, labels)
        np.testing.assert_array_equal(shown, splits[split].cell_classes)


def test_images_show_every_cell_count():
    splits, _ = build(cutoff=6)
    per_image = (splits["train"].cell_classes >= 0).sum(axis=1)
    assert set(per_image.tolist()) >= {0, 1, 2, 3}


def test_pixels_match_an_independent_downscale():
    rng = np.random.default_rng(0)
    items = rng.integers(0, 256, (40, 28, 28)).astype(np.uint8)
    cell_items = rng.integers(-1, 40, (7, 4))
    # Mean of each 2 x 2 block, rounded half up.
    means = items.reshape(40, 14, 2, 14, 2).astype(float).mean(axis=(2, 4))
    pooled = np.floor(means + 0.5).astype(np.uint8)
    for size, source in [(28, pooled), (56, items)]:
        images = catalog_grid.render_images(cell_items, items, size)
        assert images.flags.c_contiguous and images.shape == (7, size, size, 1)
        quadrants = cells_of(images)
        for i in range(7):
            for j in range(4):
                k = cell_items[i, j]
                expected = source[k] if k >= 0 else np.zeros_like(source[0])
                np.testing.assert_array_equal(quadrants[i, j], expected)
        # Cell 1 is the top-right quadrant.
        s = size // 2
        np.testing.assert_array_equal(images[:, :s, s:, 0], quadrants[:, 1])


def test_bad_image_size():
    with pytest.raises(ValueError, match="image_size must be 28"):
        build(image_size=32)


def test_not_enough_items_is_a_clear_error():
    with pytest.raises(ValueError, match="lower head_count"):
        build(head_count=390)  # 390 train + 98 val > 400 items per class


def test_unknown_profile():
    with pytest.raises(ValueError, match="Unknown profile"):
        build(profile="zipf")


def test_build_is_deterministic_and_seeded():
    first = digest(build(cutoff=12, seed=7)[0])
    assert digest(build(cutoff=12, seed=7)[0]) == first
    assert digest(build(cutoff=12, seed=8)[0]) != first


def test_test_split_does_not_depend_on_the_training_profile():
    """Independent RNG streams: the test split is the same for every cut-off at a seed."""
    a, _ = build(cutoff=6, seed=1)
    b, _ = build(cutoff=50, seed=1)
    np.testing.assert_array_equal(a["test"].images, b["test"].images)


# ---------------------------------------------------------------------------------------------
# The loader: cache and provenance (Fashion-MNIST replaced by synthetic items)


@pytest.fixture
def synthetic_source(monkeypatch, tmp_path):
    calls = []

    def fake_load(**kwargs):
        calls.append(kwargs)
        return fm.FashionMNIST(
            TRAIN_ITEMS, TRAIN_CLASSES, TEST_ITEMS, TEST_CLASSES, {"dataset": "synthetic"}
        )

    monkeypatch.setattr(catalog, "load_fashion_mnist", fake_load)
    monkeypatch.setenv("LTWEIGHTS_CACHE", str(tmp_path / "cache"))
    return calls


def test_loader_builds_once_then_reads_the_cache(synthetic_source, tmp_path):
    splits = catalog.load_catalog(cutoff=6, **SMALL)
    assert len(synthetic_source) == 1
    files = sorted(p.name for p in (tmp_path / "cache" / "catalog").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npz")
    again = catalog.load_catalog(cutoff=6, **SMALL)
    assert len(synthetic_source) == 1  # served from the cache
    for a, b in zip(splits, again, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.provenance == b.provenance and a.split == b.split
    catalog.load_catalog(cutoff=12, **SMALL)
    assert len(synthetic_source) == 2  # other parameters, other file


def test_provenance_reports_counts_and_parameters(synthetic_source, tmp_path):
    splits = catalog.load_catalog(cutoff=6, seed=3, **SMALL)
    prov = splits.train.provenance
    json.dumps(prov)
    assert prov["params"]["cutoff"] == 6 and prov["params"]["seed"] == 3
    assert prov["source"] == {"dataset": "synthetic"}
    for split, dataset in zip(catalog_grid.SPLITS, splits, strict=True):
        assert prov["achieved_counts"][split] == dataset.labels.sum(axis=0).tolist()
        assert prov["num_examples"][split] == dataset.num_examples
    assert prov["achieved_counts"]["train"] == prov["requested_counts"]["train"]
    assert splits.train.label_names == fm.CLASS_NAMES
    sidecar = next((tmp_path / "cache" / "catalog").glob("*.json"))
    assert json.loads(sidecar.read_text()) == prov


def test_corrupt_cache_is_rebuilt(synthetic_source, tmp_path):
    catalog.load_catalog(cutoff=6, **SMALL)
    npz = next((tmp_path / "cache" / "catalog").glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:100])
    splits = catalog.load_catalog(cutoff=6, **SMALL)
    assert len(synthetic_source) == 2
    assert splits.train.labels.sum(axis=0).min() == 6


def test_use_cache_false_writes_nothing(synthetic_source, tmp_path):
    catalog.load_catalog(cutoff=6, use_cache=False, **SMALL)
    assert not (tmp_path / "cache" / "catalog").exists()


def test_registry_and_step_loader(synthetic_source):
    splits = load_task("catalog_step", cutoff=12, num_tail_classes=3, **SMALL)
    counts = splits.train.label_counts()
    assert sorted(counts.tolist()) == [12] * 3 + [200] * 7
    assert splits.train.provenance["task"] == "catalog_step"
    assert load_task("catalog", cutoff=12, **SMALL).train.provenance["task"] == "catalog"


@pytest.mark.parametrize(
    ("loader", "profile", "extra"),
    [
        (catalog.load_catalog, "long_tail", {}),
        (catalog.load_catalog_step, "step", {"num_tail_classes": 3}),
    ],
)
def test_every_loader_argument_reaches_the_build_and_its_provenance(
    synthetic_source, loader, profile, extra
):
    params = {
        "cutoff": 9,
        "seed": 2,
        "head_count": 150,
        "image_size": 28,
        "val_fraction": 0.2,
        "val_min_positives": 4,
        "test_positives": 30,
        "head_prevalence": 0.6,
        **extra,
    }
    splits = loader(**params)
    assert splits.train.provenance["params"] == {"profile": profile, **params}
    assert splits.train.label_counts().max() == 150 and splits.train.label_counts().min() == 9
    assert splits.test.label_counts().tolist() == [30] * 10
    assert splits.val.label_counts().min() >= 4


def test_task_registry_is_one_dict_of_loader_functions():
    assert data.TASK_LOADERS == {
        "catalog": catalog.load_catalog,
        "catalog_step": catalog.load_catalog_step,
        "sleevetype": fashionpedia.load_sleevetype,
        "archetype": fashionpedia.load_archetype,
        "csv": csv_catalog.load_csv_catalog,
        "tfds": tfds_source.load_tfds,
        "voc_mlt": mlt.load_voc_mlt,
        "coco_mlt": mlt.load_coco_mlt,
    }
    for name, loader in data.TASK_LOADERS.items():
        assert data.get_task_loader(name) is loader
        kinds = {p.kind for p in inspect.signature(loader).parameters.values()}
        assert kinds == {inspect.Parameter.KEYWORD_ONLY}, name  # explicit keywords, no **kwargs
    with pytest.raises(ValueError, match="Did you mean catalog") as e:
        data.get_task_loader("catalgo")
    assert "archetype, catalog, catalog_step, coco_mlt, csv, sleevetype, tfds, voc_mlt" in str(
        e.value
    )


def test_head_count_default_is_defined_once():
    assert catalog_profile.DEFAULT_HEAD_COUNT == 1000  # the documented CPU-tier default
    for fn in (catalog_grid.build_catalog, catalog.load_catalog, catalog.load_catalog_step):
        default = inspect.signature(fn).parameters["head_count"].default
        assert default is catalog_profile.DEFAULT_HEAD_COUNT, fn.__name__


@pytest.mark.parametrize(("name", "value"), [("cutoff", 2.5), ("seed", -1), ("cutoff", True)])
def test_loader_validates_integers(synthetic_source, name, value):
    with pytest.raises(ValueError, match=name):
        catalog.load_catalog(**{**SMALL, "cutoff": 6, name: value})


# ---------------------------------------------------------------------------------------------
# With the real Fashion-MNIST, where installed


def test_real_catalog_cells_are_fashion_mnist_items_of_the_labelled_class(
    real_fashion_mnist, tmp_path
):
    splits = catalog.load_catalog(cutoff=6, seed=0, cache_dir=tmp_path, download=False)
    prov = splits.train.provenance
    assert prov["achieved_counts"]["train"] == prov["requested_counts"]["train"]
    assert min(prov["achieved_counts"]["train"]) == 6
    assert max(prov["achieved_counts"]["train"]) == 1000
    assert min(prov["achieved_counts"]["val"]) >= 5
    assert (
        prov["source"]["files"]["train-images-idx3-ubyte"]["sha256"]
        == fm.SHA256["train-images-idx3-ubyte"]
    )
    for dataset, images, classes in [
        (splits.train, real_fashion_mnist.train_images, real_fashion_mnist.train_labels),
        (splits.test, real_fashion_mnist.test_images, real_fashion_mnist.test_labels),
    ]:
        pooled = catalog_grid.downscale_items(images)
        lookup: dict[bytes, set[int]] = {}
        for tile, c in zip(pooled, classes, strict=True):
            lookup.setdefault(tile.tobytes(), set()).add(int(c))
        quadrants = cells_of(dataset.images[:300])
        for i, row in enumerate(quadrants):
            shown = set()
            for tile in row:
                if tile.any():
                    (c,) = lookup[tile.tobytes()] if len(lookup[tile.tobytes()]) == 1 else (-1,)
                    shown.add(c)
            assert shown == set(np.flatnonzero(dataset.labels[i]).tolist())


def test_real_catalog_is_deterministic(fashion_mnist_installed, tmp_path):
    a = catalog.load_catalog(cutoff=25, seed=1, cache_dir=tmp_path / "a", download=False)
    b = catalog.load_catalog(cutoff=25, seed=1, cache_dir=tmp_path / "b", download=False)
    for x, y in zip(a, b, strict=True):
        assert (
            hashlib.sha256(x.images.tobytes()).digest()
            == hashlib.sha256(y.images.tobytes()).digest()
        )
        np.testing.assert_array_equal(x.labels, y.labels)
