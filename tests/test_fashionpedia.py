"""Fashionpedia tasks on a generated fixture in the real schema (real ids and names)."""

from __future__ import annotations

import copy
import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from experiments.data import fashionpedia as fp
from experiments.data import fashionpedia_crops, load_task
from experiments.data import images as im
from experiments.data.images import DataError, DataNotFoundError, DataSkipWarning

ONTOLOGY = json.loads(
    (Path(__file__).parent / "fixtures" / "fashionpedia_ontology.json").read_text()
)
SLEEVE, SHIRT, DRESS, COAT = 31, 0, 10, 9  # category ids
SET_IN, PUFF, BELL, DOLMAN, KIMONO_SLEEVE = 204, 209, 210, 213, 216  # sleeve-style attribute ids
SHORT, WRIST = 157, 160  # sleeve lengths
POLO, TRENCH, PEA_COAT = 1, 81, 82  # garment nicknames
PETER_PAN_COLLAR, PLAIN = 168, 317  # a part nickname, a pattern (high, non-contiguous id)

# Written out by hand from the published ontology, in the task's column order.
STYLE_NAMES = [
    "set-in sleeve",
    "dropped-shoulder sleeve",
    "raglan (sleeve)",
    "cap (sleeve)",
    "tulip (sleeve)",
    "puff (sleeve)",
    "bell (sleeve)",
    "circular flounce (sleeve)",
    "poet (sleeve)",
    "dolman (sleeve), batwing (sleeve)",
    "bishop (sleeve)",
    "leg of mutton (sleeve)",
    "kimono (sleeve)",
]
LENGTH_NAMES = [
    "sleeveless",
    "short (length)",
    "elbow-length",
    "three quarter (length)",
    "wrist-length",
]

W, H = 64, 32  # fixture image size


def colour(image_id: int, k: int) -> tuple[int, int, int]:
    """A colour that encodes (image, annotation) so crops can be traced back."""
    return (image_id * 10 % 250, 40 + 60 * k, 200)


def make_split(folder: Path, image_ids, anns_per_image, *, fmt="PNG") -> dict:
    """Writes images and returns an annotation table in the Fashionpedia schema.

    anns_per_image(image_id) -> list of (category_id, attribute_ids); annotation k of an image
    gets box [4 + 14k, 6, 10, 20] filled with colour(image_id, k) on a white image.
    """
    folder.mkdir(parents=True, exist_ok=True)
    table = {
        "info": {},
        "licenses": [],
        "categories": copy.deepcopy(ONTOLOGY["categories"]),
        "attributes": copy.deepcopy(ONTOLOGY["attributes"]),
        "images": [],
        "annotations": [],
    }
    next_ann = 1000 + 100 * min(image_ids, default=0)
    for image_id in image_ids:
        name = f"{image_id:06d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        image = Image.new("RGB", (W, H), "white")
        draw = ImageDraw.Draw(image)
        for k, (category_id, attribute_ids) in enumerate(anns_per_image(image_id)):
            bbox = [4 + 14 * k, 6, 10, 20]
            draw.rectangle([bbox[0], bbox[1], bbox[0] + 9, bbox[1] + 19], fill=colour(image_id, k))
            table["annotations"].append(
                {
                    "id": next_ann,
                    "image_id": image_id,
                    "category_id": category_id,
                    "attribute_ids": list(attribute_ids),
                    "bbox": bbox,
                    "area": 200,
                    "iscrowd": 0,
                }
            )
            next_ann += 1
        image.save(folder / name, fmt)
        table["images"].append({"id": image_id, "file_name": name, "width": W, "height": H})
    return table


def default_train(image_id):
    # Two sleeves (style + length) and one shirt per image; puff is the rare style.
    style = PUFF if image_id % 5 == 0 else SET_IN
    return [
        (SLEEVE, [style, SHORT, PLAIN]),
        (SLEEVE, [BELL if image_id % 2 else SET_IN, WRIST]),
        (SHIRT, [POLO if image_id % 3 else TRENCH, PLAIN]),
    ]


def default_val(image_id):
    # A styled sleeve, a sleeve with a length only, a dress with only a part's nickname, a coat.
    return [
        (SLEEVE, [PUFF, WRIST]),
        (SLEEVE, [SHORT]),
        (DRESS, [PETER_PAN_COLLAR]),
        (COAT, [PEA_COAT]),
    ]


def write_dataset(
    root: Path, train=default_train, val=default_val, n_train=20, n_val=4, *, edit=None
):
    """A Fashionpedia-like folder: two annotation files, train/ and test/ image folders."""
    tables = {
        "train2020": make_split(root / "train", range(1, n_train + 1), train),
        "val2020": make_split(root / "test", range(500, 500 + n_val), val, fmt="JPEG"),
    }
    if edit:
        edit(tables)
    for split, table in tables.items():
        (root / fp.ANNOTATION_FILES[split]).write_text(json.dumps(table))
    return root


@pytest.fixture
def dataset_dir(tmp_path):
    return write_dataset(tmp_path / "fashionpedia")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.delenv(fp.ENV_VAR, raising=False)
    monkeypatch.setenv("LTWEIGHTS_CACHE", str(tmp_path / "cache"))


def load(task="sleevetype", data_dir=None, **kw):
    kw = {"cutoff": None, "seed": 0, "image_size": 16, "progress": False, **kw}
    loader = fp.load_sleevetype if task == "sleevetype" else fp.load_archetype
    return loader(data_dir=data_dir, **kw)


# --------------------------------------------------------------------------------------------
# Label selection by name


def test_sleeve_styles_and_lengths_are_selected_by_name_from_the_real_table():
    _, styles = fp.TaskSpec("sleevetype", "style").select(ONTOLOGY, "fixture")
    assert [a["name"] for a in styles] == STYLE_NAMES
    assert [a["id"] for a in styles] == list(range(204, 217))
    _, lengths = fp.TaskSpec("sleevetype", "length").select(ONTOLOGY, "fixture")
    assert [a["name"] for a in lengths] == LENGTH_NAMES
    assert [a["id"] for a in lengths] == [156, 157, 158, 159, 160]


def test_archetype_uses_13_garment_categories_and_whole_garment_nicknames_only():
    cats, nicknames = fp.TaskSpec("archetype", "nickname").select(ONTOLOGY, "fixture")
    assert [c["id"] for c in cats] == list(range(13))
    ids = [a["id"] for a in nicknames]
    # Garment nicknames are ids 0-113; collar/lapel 161-178, sleeve 204-216, pocket 217-224
    # are nicknames of parts (checked against the published table by hand).
    assert ids == list(range(114))
    names = {a["name"] for a in nicknames}
    assert {"polo (shirt)", "trench (coat)", "pea (coat)", "hoodie", "kimono"} <= names
    assert not names & {"peter pan (collar)", "notched (lapel)", "puff (sleeve)", "patch (pocket)"}


def test_selection_follows_names_not_ids_or_order_and_tolerates_spelling():
    table = copy.deepcopy(ONTOLOGY)
    rng = np.random.default_rng(0)
    for a in table["attributes"]:
        a["id"] += 1000 + 7 * a["id"]  # other non-contiguous ids
    rng.shuffle(table["attributes"])
    for a in table["attributes"]:
        if a["name"] == "raglan (sleeve)":
            a["name"] = "Raglan  Sleeve"
    _, styles = fp.TaskSpec("sleevetype", "style").select(table, "fixture")
    assert [fp.name_key(a["name"]) for a in styles] == [fp.name_key(n) for n in STYLE_NAMES]
    assert styles[5]["id"] == 1000 + 8 * PUFF


def test_missing_label_names_fail_listing_them():
    table = copy.deepcopy(ONTOLOGY)
    table["attributes"] = [
        a for a in table["attributes"] if a["name"] not in ("poet (sleeve)", "kimono (sleeve)")
    ]
    with pytest.raises(DataError, match=r"poet \(sleeve\).*kimono \(sleeve\)"):
        fp.TaskSpec("sleevetype", "style").select(table, "fixture")


def test_style_names_must_be_nicknames_and_parts_table_must_exist():
    table = copy.deepcopy(ONTOLOGY)
    for a in table["attributes"]:
        if a["name"] == "bell (sleeve)":
            a["supercategory"] = "silhouette"
    with pytest.raises(DataError, match=r"bell \(sleeve\)"):
        fp.TaskSpec("sleevetype", "style").select(table, "fixture")
    table = copy.deepcopy(ONTOLOGY)
    for c in table["categories"]:
        c["supercategory"] = (
            "other" if c["supercategory"] == "garment parts" else c["supercategory"]
        )
    with pytest.raises(DataError, match="garment parts"):
        fp.TaskSpec("archetype", "nickname").select(table, "fixture")


def test_unknown_task_options_are_rejected(dataset_dir):
    with pytest.raises(ValueError, match="style"):
        load(data_dir=dataset_dir, labels="colour")


# --------------------------------------------------------------------------------------------
# Geometry


def test_crop_box_rounds_outwards_clips_small_overshoot_and_rejects_bad_boxes():
    assert im.crop_box([1.5, 2.2, 3.0, 4.1], 10, 10) == (1, 2, 5, 7)
    assert im.crop_box([-1.0, 0, 11.5, 10], 10, 10) == (0, 0, 10, 10)  # within tolerance 2
    for bad in ([0, 0, 0, 5], [0, 0, 5, -1], [0, 0, float("nan"), 5]):
        with pytest.raises(DataError, match="degenerate"):
            im.crop_box(bad, 10, 10)
    for outside in ([20, 0, 5, 5], [0, 0, 15, 5], [-5, 0, 3, 3]):
        with pytest.raises(DataError, match="outside"):
            im.crop_box(outside, 10, 10)


def test_crop_is_the_box_padded_to_square():
    # A red 30 x 20 box on white: the 16 px crop is the box scaled to 16 x 11 (20 * 16/30 =
    # 10.67 -> 11 rows) centred vertically (offset (16 - 11) // 2 = 2), black padding around.
    image = Image.new("RGB", (60, 40), "white")
    ImageDraw.Draw(image).rectangle([10, 5, 39, 24], fill=(255, 0, 0))
    box = im.crop_box([10, 5, 30, 20], 60, 40)
    crop = im.square_resize(image.crop(box), 16)
    assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop[2:13, :], np.broadcast_to([255, 0, 0], (11, 16, 3)))
    assert (crop[:2] == 0).all() and (crop[13:] == 0).all()
    gray = im.square_resize(image.crop(box).convert("L"), 8)
    assert gray.shape == (8, 8, 1)


# --------------------------------------------------------------------------------------------
# End to end on the fixture


def trace(ds: fp.Dataset) -> list[tuple[int, int]]:
    """(image id, annotation index) of each crop, read back from its centre colour."""
    out = []
    for crop in ds.images:
        r, g, _ = (int(v) for v in crop[8, 8])
        out.append((round(r / 10), round((g - 40) / 60)))
    return out


def test_sleevetype_end_to_end(dataset_dir):
    splits = load(data_dir=dataset_dir)
    train, val, test = splits
    # Styles present in train2020: set-in, puff, bell; the others have no training positive.
    assert train.label_names == ("set-in sleeve", "puff (sleeve)", "bell (sleeve)")
    assert test.label_names == train.label_names
    # 20 images x 2 sleeves; val = round(0.1 * 20) = 2 images.
    assert (train.num_examples, val.num_examples) == (36, 4)
    # val2020: 4 images, one styled sleeve each (the second sleeve has no style: unlabelled).
    assert test.num_examples == 4
    assert test.labels.tolist() == [[0, 1, 0]] * 4
    prov = train.provenance
    assert prov["unlabelled_annotations"] == {"train2020": 0, "val2020": 4}
    assert [d["name"] for d in prov["dropped_labels"]] == [
        n for n in STYLE_NAMES if n not in train.label_names
    ]
    assert set(prov["files"]) == set(fp.ANNOTATION_FILES.values())
    json.dumps(prov)  # JSON-serialisable
    # Each crop carries its own annotation's labels (traced by colour).
    for ds in (train, val):
        for (image_id, k), row in zip(trace(ds), ds.labels, strict=True):
            expected = {
                0: "puff (sleeve)" if image_id % 5 == 0 else "set-in sleeve",
                1: "bell (sleeve)" if image_id % 2 else "set-in sleeve",
            }[k]
            assert [ds.label_names[j] for j in np.flatnonzero(row)] == [expected]
    # Train and val hold disjoint images.
    train_images = {i for i, _ in trace(train)}
    val_images = {i for i, _ in trace(val)}
    assert not train_images & val_images and len(val_images) == 2
    assert train_images | val_images == set(range(1, 21))


def test_sleeve_length_option(dataset_dir):
    train, _, test = load(data_dir=dataset_dir, labels="length")
    assert train.label_names == ("short (length)", "wrist-length")
    assert train.num_examples + load(data_dir=dataset_dir, labels="length").val.num_examples == 40
    assert test.num_examples == 8  # both val2020 sleeves carry a length


def test_archetype_end_to_end(dataset_dir):
    train, val, test = load("archetype", data_dir=dataset_dir)
    assert train.label_names == ("polo (shirt)", "trench (coat)")
    assert train.num_examples + val.num_examples == 20  # one shirt per image
    # The val2020 dress only has a collar nickname (a part's): unlabelled, so left out; the
    # pea coats are examples, negative for both training labels (pea coat has no training
    # positive, so it is not a label).
    assert test.num_examples == 4 and test.labels.sum() == 0
    assert train.provenance["unlabelled_annotations"]["val2020"] == 4
    for (image_id, k), row in zip(trace(train), train.labels, strict=True):
        assert k == 2
        assert train.label_names[int(np.argmax(row))] == (
            "polo (shirt)" if image_id % 3 else "trench (coat)"
        )


def test_registry_and_determinism(dataset_dir):
    a = load_task(
        "sleevetype", cutoff=None, seed=3, data_dir=dataset_dir, image_size=16, progress=False
    )
    b = load(data_dir=dataset_dir, seed=3)
    c = load(data_dir=dataset_dir, seed=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert {i for i, _ in trace(a.val)} != {i for i, _ in trace(c.val)}


def test_both_tasks_are_one_loader_with_the_task_fixed(dataset_dir):
    full = inspect.signature(fp.load_fashionpedia).parameters
    for task, loader in (("sleevetype", fp.load_sleevetype), ("archetype", fp.load_archetype)):
        assert list(inspect.signature(loader).parameters.values()) == list(full.values())[1:]
        by_task = fp.load_fashionpedia(
            task, cutoff=None, seed=0, data_dir=dataset_dir, image_size=16, progress=False
        )
        assert by_task.train.provenance == load(task, data_dir=dataset_dir).train.provenance
        assert (
            by_task.train.provenance["labels"]
            == {
                "sleevetype": "style",
                "archetype": "nickname",
            }[task]
        )


# --------------------------------------------------------------------------------------------
# Cut-off


def test_cutoff_makes_the_rarest_label_exactly_cutoff(dataset_dir):
    full = load(data_dir=dataset_dir)
    # Puff sleeves are the first sleeve of images 5, 10, 15, 20; count those left in train.
    n_puff = sum(1 for i, k in trace(full.train) if i % 5 == 0 and k == 0)
    assert n_puff >= 2
    puff = full.train.label_names.index("puff (sleeve)")
    assert full.train.label_counts()[puff] == n_puff
    train, val, test = load(data_dir=dataset_dir, cutoff=n_puff - 1)
    counts = dict(zip(train.label_names, train.label_counts().tolist(), strict=True))
    assert counts["puff (sleeve)"] == n_puff - 1 == min(counts.values())
    assert train.num_examples == full.train.num_examples - 1
    assert train.provenance["removed_train_examples"] == 1
    assert train.provenance["subsampled_label"] == "puff (sleeve)"
    np.testing.assert_array_equal(val.labels, full.val.labels)  # val and test untouched
    np.testing.assert_array_equal(test.images, full.test.images)
    # A cut-off above puff's positives drops puff everywhere.
    train_up, _, test_up = load(data_dir=dataset_dir, cutoff=n_puff + 1)
    assert "puff (sleeve)" not in train_up.label_names
    assert test_up.labels.shape[1] == len(train_up.label_names)
    dropped = {"name": "puff (sleeve)", "train_positives": n_puff}
    assert dropped in train_up.provenance["dropped_labels"]


def test_apply_cutoff_by_hand():
    # Counts [4, 3, 1, 3]; cutoff 2: label 2 dropped; rarest kept label is 1 (3 -> 2).
    labels = np.array(
        [[1, 1, 0, 0], [1, 1, 0, 1], [1, 1, 1, 0], [1, 0, 0, 1], [0, 0, 0, 1]], np.uint8
    )
    r = im.apply_cutoff(labels, 2, seed=0)
    assert r.kept_labels.tolist() == [0, 1, 3] and r.dropped_labels.tolist() == [2]
    assert r.subsampled_label == 1 and r.removed_train_examples == 1
    assert labels[r.train_keep][:, [0, 1, 3]].sum(0).tolist()[1] == 2
    with pytest.raises(ValueError, match="cutoff"):
        im.apply_cutoff(labels, 0, seed=0)
    with pytest.raises(DataError, match="most frequent has 4"):
        im.apply_cutoff(labels, 5, seed=0)
    r = im.apply_cutoff(labels, None, seed=0)
    assert r.kept_labels.tolist() == [0, 1, 2, 3] and r.train_keep.all()


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.lists(st.integers(0, 1), min_size=4, max_size=4), min_size=1, max_size=40),
    cutoff=st.integers(1, 6),
    seed=st.integers(0, 5),
)
def test_apply_cutoff_properties(labels, cutoff, seed):
    y = np.array(labels, np.uint8)
    counts = y.sum(0)
    if counts.max() < cutoff:
        with pytest.raises(DataError):
            im.apply_cutoff(y, cutoff, seed)
        return
    r = im.apply_cutoff(y, cutoff, seed)
    assert r.kept_labels.tolist() == [j for j in range(4) if counts[j] >= cutoff]
    after = y[r.train_keep][:, r.kept_labels].sum(0)
    assert after.min() >= cutoff  # no kept label falls below the cut-off
    removed = y[~r.train_keep]
    assert (removed[:, r.subsampled_label] == 1).all()  # only the rarest label's examples go
    rarest_after = int(y[r.train_keep][:, r.subsampled_label].sum())
    # Exactly `cutoff` unless every remaining example of it is needed by another label.
    blocked = [
        i
        for i in np.flatnonzero(r.train_keep & (y[:, r.subsampled_label] == 1))
        if any(
            y[r.train_keep][:, k].sum() <= cutoff
            for k in r.kept_labels
            if y[i, k] and k != r.subsampled_label
        )
    ]
    assert rarest_after == cutoff or len(blocked) == rarest_after


def test_seeded_partition_sizes_and_determinism():
    parts = im.seeded_partition(50, [0.1, 0.2], seed=1)
    assert np.bincount(parts).tolist() == [35, 5, 10]
    np.testing.assert_array_equal(parts, im.seeded_partition(50, [0.1, 0.2], seed=1))
    assert not np.array_equal(parts, im.seeded_partition(50, [0.1, 0.2], seed=2))
    with pytest.raises(ValueError, match="sum below 1"):
        im.seeded_partition(10, [0.5, 0.5], seed=0)


# --------------------------------------------------------------------------------------------
# Caching


def test_second_load_reads_the_cache_without_opening_images(dataset_dir, tmp_path, monkeypatch):
    first = load(data_dir=dataset_dir)
    files = sorted((tmp_path / "cache" / "fashionpedia").glob("*.npz"))
    assert len(files) == 2

    def refuse(*a, **k):
        raise AssertionError("an image was opened although the crops are cached")

    monkeypatch.setattr(fashionpedia_crops, "read_image", refuse)
    monkeypatch.setattr(Image, "open", refuse)
    second = load(data_dir=dataset_dir, cutoff=2, seed=1)  # other cut-off and seed: same cache
    again = load(data_dir=dataset_dir)
    np.testing.assert_array_equal(first.test.images, again.test.images)
    np.testing.assert_array_equal(first.train.labels, again.train.labels)
    assert second.train.num_examples < first.train.num_examples + first.val.num_examples


def test_cache_is_keyed_by_annotation_checksum_and_image_size(dataset_dir, tmp_path):
    load(data_dir=dataset_dir)
    load(data_dir=dataset_dir, image_size=8)
    ann = dataset_dir / fp.ANNOTATION_FILES["val2020"]
    table = json.loads(ann.read_text())
    table["annotations"] = table["annotations"][:3]  # changes the file's SHA-256
    ann.write_text(json.dumps(table))
    assert load(data_dir=dataset_dir).test.num_examples == 1
    assert len(list((tmp_path / "cache" / "fashionpedia").glob("*.npz"))) == 5


def test_explicit_cache_dir_and_corrupt_cache_file_is_rebuilt(dataset_dir, tmp_path):
    cache = tmp_path / "mine"
    a = load(data_dir=dataset_dir, cache_dir=cache)
    for f in (cache / "fashionpedia").glob("*.npz"):
        f.write_bytes(b"truncated")
    b = load(data_dir=dataset_dir, cache_dir=cache)
    np.testing.assert_array_equal(a.train.images, b.train.images)


# --------------------------------------------------------------------------------------------
# Missing data and bad items


def test_missing_dataset_fails_at_once_with_instructions(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load()
    msg = str(e.value)
    for needle in (
        "fashionpedia.github.io",
        "github.com/cvdfoundation/fashionpedia",
        "instances_attributes_train2020.json",
        "instances_attributes_val2020.json",
        "train2020.zip",
        "val_test2020.zip",
        "data_dir",
        "LTWEIGHTS_FASHIONPEDIA",
        "catalog_proposed",
    ):
        assert needle in msg
    assert isinstance(e.value, FileNotFoundError)
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_env_var_and_incomplete_folders(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(fp.ENV_VAR, str(dataset_dir))
    assert load().test.num_examples == 4
    monkeypatch.setenv(fp.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        load()
    (dataset_dir / fp.ANNOTATION_FILES["val2020"]).unlink()
    with pytest.raises(DataNotFoundError, match=r"has no instances_attributes_val2020\.json"):
        load(data_dir=dataset_dir)


def test_missing_image_folder_and_explicit_folders(tmp_path):
    root = write_dataset(tmp_path / "fp")
    (root / "test").rename(root / "val_images")
    with pytest.raises(DataNotFoundError, match="no image folder for val2020"):
        load(data_dir=root)
    assert load(data_dir=root, test_image_dir="val_images").test.num_examples == 4


def edit_first_sleeve(key, value):
    def edit(tables):
        tables["train2020"]["annotations"][0][key] = value

    return edit


BAD_ANNOTATIONS = [
    (edit_first_sleeve("image_id", 999), "not in the image table", "absent from images"),
    (edit_first_sleeve("attribute_ids", [SET_IN, 284]), "attribute id absent", r"\[284\]"),
    (edit_first_sleeve("bbox", [40, 6, 30, 20]), "bad bbox", "outside"),
    (edit_first_sleeve("bbox", [4, 6, 0, 20]), "bad bbox", "degenerate"),
]


@pytest.mark.parametrize(("edit", "reason", "detail"), BAD_ANNOTATIONS)
def test_bad_annotations_error_or_are_counted(tmp_path, edit, reason, detail):
    root = write_dataset(tmp_path / "fp", edit=edit)
    with pytest.raises(DataError, match=detail) as e:
        load(data_dir=root)
    assert "on_bad_annotation='skip'" in str(e.value)
    with pytest.warns(DataSkipWarning, match="skipped 1"):
        splits = load(data_dir=root, on_bad_annotation="skip")
    skipped = splits.train.provenance["skipped_annotations"]["train2020"]
    assert sum(skipped["counts"].values()) == 1
    assert [k for k in skipped["counts"] if reason in k]
    assert splits.train.num_examples + splits.val.num_examples == 39


def test_annotation_lacking_fields_is_reported(tmp_path):
    def edit(tables):
        del tables["train2020"]["annotations"][0]["attribute_ids"]

    root = write_dataset(tmp_path / "fp", edit=edit)
    with pytest.raises(DataError, match="lacks"):
        load(data_dir=root)


def break_image(root: Path, how: str) -> None:
    path = root / "train" / "000003.png"
    if how == "missing":
        path.unlink()
    elif how == "unreadable":
        path.write_bytes(b"\x89PNG not really")
    else:
        Image.new("RGB", (W + 5, H), "white").save(path)


@pytest.mark.parametrize(
    ("how", "reason", "detail"),
    [
        ("missing", "image file missing", "does not exist"),
        ("unreadable", "image file unreadable", "cannot be decoded"),
        ("resized", "image size differs", "69 x 32"),
    ],
)
def test_bad_images_error_or_are_counted(tmp_path, how, reason, detail):
    root = write_dataset(tmp_path / "fp")
    break_image(root, how)
    with pytest.raises(DataError, match=detail) as e:
        load(data_dir=root)
    assert "000003.png" in str(e.value) and "on_bad_image='skip'" in str(e.value)
    with pytest.warns(DataSkipWarning, match="skipped 2"):
        splits = load(data_dir=root, on_bad_image="skip")
    counts = splits.train.provenance["skipped_annotations"]["train2020"]["counts"]
    assert counts == {k: 2 for k in counts} and reason in next(iter(counts))
    assert splits.train.num_examples + splits.val.num_examples == 38
    # The cached skip counts are reported again on a cached load.
    with pytest.warns(DataSkipWarning):
        load(data_dir=root, on_bad_image="skip")


def test_bad_policy_and_bad_annotation_files(tmp_path):
    root = write_dataset(tmp_path / "fp")
    with pytest.raises(ValueError, match="on_bad_image"):
        load(data_dir=root, on_bad_image="ignore")
    ann = root / fp.ANNOTATION_FILES["train2020"]
    ann.write_text("{not json")
    with pytest.raises(DataError, match="not a readable JSON"):
        load(data_dir=root)
    ann.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match=r"lacks the keys \['categories', 'attributes'\]"):
        load(data_dir=root)


def test_no_warning_without_skips(dataset_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataSkipWarning)
        load(data_dir=dataset_dir)


# --------------------------------------------------------------------------------------------
# Cropping on a process pool (experiments.data.decode_pool)


def test_crops_on_a_process_pool_equal_the_one_process_build_byte_for_byte(
    dataset_dir, tmp_path, capsys
):
    built = {}
    for workers in (1, 2):
        prepared = fp.prepare(
            "archetype",
            data_dir=dataset_dir,
            cache_dir=tmp_path / f"cache{workers}",
            image_size=16,
            progress=False,
            workers=workers,
        )
        assert prepared["train2020"][1]["timing"]["workers"] == workers
        built[workers] = prepared
    assert "first build estimated at" in capsys.readouterr().err
    for split in ("train2020", "val2020"):
        one, pool = built[1][split][0], built[2][split][0]
        assert one.keys() == pool.keys()
        for key in one:
            assert one[key].dtype == pool[key].dtype
            assert one[key].tobytes() == pool[key].tobytes(), (split, key)
    # What the cache gives back is what was built.
    again = fp.prepare(
        "archetype", data_dir=dataset_dir, cache_dir=tmp_path / "cache2", image_size=16
    )
    assert again["train2020"][0]["images"].tobytes() == built[1]["train2020"][0]["images"].tobytes()


def test_a_build_stopped_by_a_bad_image_on_the_pool_leaves_no_cache(tmp_path):
    root = write_dataset(tmp_path / "fp", n_train=30)
    (root / "train" / "000025.png").unlink()  # after the in-process calibration images
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"000025\.png"):
        load(data_dir=root, cache_dir=cache, workers=2)
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing a rerun could trust
    with pytest.warns(DataSkipWarning, match="skipped 2"):
        pooled = load(data_dir=root, cache_dir=cache, workers=2, on_bad_image="skip")
    with pytest.warns(DataSkipWarning, match="skipped 2"):
        single = load(data_dir=root, cache_dir=tmp_path / "one", workers=1, on_bad_image="skip")
    assert pooled.train.images.tobytes() == single.train.images.tobytes()


def test_worker_count_rule():
    from experiments.data.decode_pool import available_cores, resolve_workers

    assert resolve_workers(1, 10_000) == 1
    assert resolve_workers(8, 3) == 3  # never more processes than images
    assert resolve_workers(None, 10) == 1  # a fixture of a few images never pays for a pool
    assert resolve_workers(None, 10_000_000) == available_cores()
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="workers must be"):
            resolve_workers(bad, 100)
