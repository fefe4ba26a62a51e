"""The transfer demonstration: the catalog's class subsets, the plan of runs, and its table.

Class subsets are checked on synthetic items whose pixel value encodes their Fashion-MNIST class
(as in test_catalog.py), so labels can be compared with what the cells show.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments import configs
from experiments.configs import validate
from experiments.data import catalog
from experiments.data import fashion_mnist as fm
from experiments.records import ADDED_FIELD_DEFAULTS


def synthetic_items(per_class: int, seed: int):
    """Constant items: item i of class c has value 10 + 20 c + (i mod 7)."""
    classes = np.random.default_rng(seed).permutation(np.repeat(np.arange(10), per_class))
    values = 10 + 20 * classes + np.arange(len(classes)) % 7
    items = np.broadcast_to(values[:, None, None], (len(classes), 28, 28)).astype(np.uint8)
    return items, classes.astype(np.uint8)


TRAIN_ITEMS, TRAIN_CLASSES = synthetic_items(400, seed=1)
TEST_ITEMS, TEST_CLASSES = synthetic_items(100, seed=2)
SMALL = dict(head_count=200, test_positives=50)


@pytest.fixture
def synthetic_source(monkeypatch, tmp_path):
    def fake_load(**kwargs):
        return fm.FashionMNIST(
            TRAIN_ITEMS, TRAIN_CLASSES, TEST_ITEMS, TEST_CLASSES, {"dataset": "synthetic"}
        )

    monkeypatch.setattr(catalog, "load_fashion_mnist", fake_load)
    monkeypatch.setenv("LTWEIGHTS_CACHE", str(tmp_path / "cache"))


def shown_classes(images: np.ndarray) -> list[set[int]]:
    """The Fashion-MNIST classes each image's cells show, read from the pixel values."""
    s = images.shape[1] // 2
    quadrants = images[..., 0].reshape(len(images), 2, s, 2, s).transpose(0, 1, 3, 2, 4)
    values = quadrants.reshape(len(images), 4, -1)[:, :, 0].astype(int)
    return [{(v - 10) // 20 for v in row if v} for row in values]


# --------------------------------------------------------------------------------------------
# data.classes


@pytest.mark.parametrize("loader", [catalog.load_catalog, catalog.load_catalog_step])
def test_classes_draw_only_those_items_and_reduce_the_labels(synthetic_source, loader):
    classes = [7, 1, 9, 3, 5]  # any order: label j is class classes[j]
    extra = {"num_tail_classes": 2} if loader is catalog.load_catalog_step else {}
    splits = loader(cutoff=6, seed=3, classes=classes, **SMALL, **extra)
    for dataset in splits:
        assert dataset.labels.shape[1] == 5
        assert dataset.label_names == tuple(fm.CLASS_NAMES[c] for c in classes)
        shown = shown_classes(dataset.images)
        assert set().union(*shown) == set(classes)  # every chosen class, and no other
        for row, labels in zip(shown, dataset.labels, strict=True):
            assert {classes[j] for j in np.flatnonzero(labels)} == row
    counts = splits.train.label_counts()
    assert counts.max() == 200 and counts.min() == 6 and len(counts) == 5
    assert splits.test.label_counts().tolist() == [50] * 5
    prov = splits.train.provenance
    assert prov["params"]["classes"] == classes
    assert prov["label_names"] == [fm.CLASS_NAMES[c] for c in classes]
    assert len(prov["class_order"]) == 5


def test_all_ten_classes_is_the_default_build_and_none_keeps_its_cache_key(synthetic_source):
    default = catalog.load_catalog(cutoff=6, seed=1, use_cache=False, **SMALL)
    every = catalog.load_catalog(
        cutoff=6, seed=1, classes=list(range(10)), use_cache=False, **SMALL
    )
    for a, b in zip(default, every, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert "classes" not in default.train.provenance["params"]  # the key it always had
    assert default.train.label_names == fm.CLASS_NAMES


def test_disjoint_class_lists_share_no_item(synthetic_source):
    a = catalog.load_catalog(cutoff=1000 // 5, seed=0, classes=[0, 2, 4, 6, 8], **SMALL)
    b = catalog.load_catalog(cutoff=6, seed=0, classes=[1, 3, 5, 7, 9], **SMALL)
    for x, y in zip(a, b, strict=True):
        assert not set(np.unique(x.images)) - {0} & set(np.unique(y.images)) - {0}


@pytest.mark.parametrize(
    "classes, words",
    [
        ([1, 2, 3], "needs at least 4"),
        ([1, 1, 2, 3], "repeats [1]"),
        ([0, 1, 2, 10], "not Fashion-MNIST class indices 0..9"),
        ([-1, 1, 2, 3], "not Fashion-MNIST class indices"),
        ([0, 1, 2, 3.5], "not Fashion-MNIST class indices"),
        ([0, 1, 2, True], "not Fashion-MNIST class indices"),
        ("1,3,5,7", "must be a list"),
        (5, "must be a list"),
    ],
)
def test_bad_classes_are_clear_errors(synthetic_source, classes, words):
    with pytest.raises(ValueError) as e:
        catalog.load_catalog(cutoff=6, classes=classes, **SMALL)
    assert words in str(e.value) and "data.classes" in str(e.value)
    config = configs.get_config("catalog_none")
    config.data.classes = classes
    assert any(words in line for line in validate.problems(config))


def test_classes_is_a_catalog_data_field_recorded_like_the_others():
    for name in ("catalog_none", "catalog_step_proposed", "catalog_balanced_smoke"):
        config = configs.get_config(name)
        assert config.data.classes is None
        assert validate.problems(config) == []
    assert "classes" not in configs.get_config("sleevetype_none").data
    assert ADDED_FIELD_DEFAULTS["data.classes"] is None
    config = configs.get_config("catalog_none")
    config.data.classes = [1, 3, 5, 7, 9]
    assert validate.problems(config) == []
