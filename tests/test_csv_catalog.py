"""The bring-your-own catalog task on generated CSV/JSONL files and images."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.data import csv_catalog as cc
from experiments.data import load_task
from experiments.data.images import DataError, DataNotFoundError, DataSkipWarning


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LTWEIGHTS_CACHE", str(tmp_path / "cache"))


def write_images(root: Path, n: int) -> list[str]:
    """n solid 30 x 20 images; image i has red channel 5 * i so crops can be traced."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img/p{i:03d}.{'jpg' if i % 7 == 3 else 'png'}"
        Image.new("RGB", (30, 20), (5 * i, 100, 50)).save(root / name)
        names.append(name)
    return names


def labels_of(i: int) -> list[str]:
    """Row i's labels: 'common' on most, 'rare' on every 6th, none on every 10th."""
    if i % 10 == 9:
        return []
    return ["common"] + (["rare"] if i % 6 == 0 else []) + (["mid"] if i % 3 == 1 else [])


def write_csv(root: Path, n: int = 40, *, split=None, name="catalog.csv") -> Path:
    images = write_images(root, n)
    lines = ["image,labels,note" + (",split" if split else "")]
    for i, image in enumerate(images):
        line = f'{image},{"|".join(labels_of(i))},"free, text"'
        lines.append(line + (f",{split(i)}" if split else ""))
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def trace(ds) -> list[int]:
    """Row index of each example, from the centre pixel's red channel."""
    return [round(int(x[8, 8, 0]) / 5) for x in ds.images]


def load(path, **kw):
    return cc.load_csv_catalog(path=path, **{"image_size": 16, "progress": False, **kw})


# --------------------------------------------------------------------------------------------
# Parsing


def test_csv_parsing_with_bom_quotes_extra_columns_and_blank_lines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(
        '\ufeffimage, labels ,split,extra\na.png,"x|y",train,1\n\nb.png,,TEST ,2\n'
        'c.png," z ",val,"q, r"\n',
        encoding="utf-8",
    )
    rows = cc.read_catalog(path)
    assert [(r.image, r.labels, r.split) for r in rows] == [
        ("a.png", ("x", "y"), "train"),
        ("b.png", (), "test"),
        ("c.png", ("z",), "val"),
    ]
    assert [r.line for r in rows] == [2, 4, 5]


def test_jsonl_parsing_with_list_and_string_labels(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"image": "a.png", "labels": ["x", "y"]}\n\n{"image": "b.png", "labels": "y|z"}\n'
        '{"image": "c.png", "labels": []}\n'
    )
    rows = cc.read_catalog(path)
    assert [(r.image, r.labels, r.split) for r in rows] == [
        ("a.png", ("x", "y"), None),
        ("b.png", ("y", "z"), None),
        ("c.png", (), None),
    ]


@pytest.mark.parametrize(
    ("text", "suffix", "match"),
    [
        ("image,labels\na.png,x||y\n", ".csv", "line 2: empty label name"),
        ("image,labels\na.png,x|\n", ".csv", "empty label name"),
        ("image,labels\na.png,x|x\n", ".csv", r"\['x'\] repeated"),
        ("image,labels,split\na.png,x,training\n", ".csv", "split 'training' is not one of"),
        ("image,labels,split\na.png,x,\n", ".csv", "split '' is not one of"),
        ("img,labels\na.png,x\n", ".csv", r"lacks the column\(s\) \['image'\]"),
        ("image,labels\na.png,x,extra\n", ".csv", "3 fields for 2 columns"),
        ("image,labels\n ,x\n", ".csv", "image path is missing"),
        ("image,labels\n", ".csv", "holds no rows"),
        ('{"image": "a.png", "labels": "x"}\n{oops\n', ".jsonl", "line 2: not valid JSON"),
        ('{"image": "a.png"}\n', ".jsonl", "keys image and labels"),
        ('{"image": "a.png", "labels": [1]}\n', ".jsonl", "must be strings"),
        ('{"image": "a.png", "labels": "x", "split": "dev"}\n', ".jsonl", "'dev' is not one"),
        ("a.png\tx\n", ".tsv", "use .csv or .jsonl"),
    ],
)
def test_malformed_catalogs_fail_naming_the_problem(tmp_path, text, suffix, match):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        cc.read_catalog(path)


@pytest.mark.parametrize(
    ("lines", "suffix", "where"),
    [
        # "café" in Latin-1 on line 3: the é is byte 0xe9 (byte 10 of the CSV line, 34 of the JSON).
        (
            ["image,labels", "a.png,shirt", "b.png,caf\xe9 au lait"],
            ".csv",
            "line 3: byte 0xe9 at column 10",
        ),
        (
            ['{"image": "a.png", "labels": "x"}', "", '{"image": "b.png", "labels": "caf\xe9"}'],
            ".jsonl",
            "line 3: byte 0xe9 at column 34",
        ),
    ],
)
def test_non_utf8_catalog_names_the_file_and_line(tmp_path, lines, suffix, where):
    path = tmp_path / f"shop{suffix}"
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=rf"shop{suffix} {where} is not UTF-8") as e:
        cc.read_catalog(path)
    assert "save the file as UTF-8" in str(e.value)


# --------------------------------------------------------------------------------------------
# Loading


def test_seeded_split_sizes_labels_and_determinism(tmp_path):
    path = write_csv(tmp_path)
    train, val, test = load(path)
    assert (train.num_examples, val.num_examples, test.num_examples) == (28, 4, 8)
    assert train.label_names == ("common", "mid", "rare")  # sorted
    assert train.images.shape == (28, 16, 16, 3)
    rows = [trace(ds) for ds in (train, val, test)]
    assert sorted(i for r in rows for i in r) == list(range(40))
    for ds, idx in zip((train, val, test), rows, strict=True):
        for i, row in zip(idx, ds.labels, strict=True):
            assert [ds.label_names[j] for j in np.flatnonzero(row)] == sorted(labels_of(i))
    again = load(path)
    np.testing.assert_array_equal(again.val.images, val.images)
    other = load(path, seed=1)
    assert trace(other.test) != rows[2]
    prov = train.provenance
    assert prov["num_examples"] == {"train": 28, "val": 4, "test": 8}
    assert prov["files"]["catalog.csv"]["sha256"]
    json.dumps(prov)


def test_split_column_is_followed_and_grey_images(tmp_path):
    path = write_csv(tmp_path, split=lambda i: ("train", "val", "test", "train")[i % 4])
    train, val, test = load(path, seed=5)
    assert trace(val) == list(range(1, 40, 4)) and trace(test) == list(range(2, 40, 4))
    assert sorted(trace(train)) == sorted([*range(0, 40, 4), *range(3, 40, 4)])
    grey = load(path, channels=1)
    assert grey.train.images.shape == (20, 16, 16, 1)
    # Pillow's ITU-R 601-2 luma: L = 0.299 R + 0.587 G + 0.114 B; val row 1 is (5, 100, 50).
    centre = grey.val.images[0, 8, 8, 0]
    assert abs(int(centre) - (0.299 * 5 + 0.587 * 100 + 0.114 * 50)) <= 1


def test_image_is_padded_to_square(tmp_path):
    path = write_csv(tmp_path, n=1, split=lambda i: "train")
    # 30 x 20 -> 16 x 11 (20 * 16 / 30 = 10.67), rows 2..12 coloured, the rest black.
    arrays, _ = cc._build(
        path,
        tmp_path,
        cc.read_catalog(path),
        image_size=16,
        channels=3,
        on_bad_image="error",
        on_duplicate="error",
        progress=False,
        workers=1,
    )
    x = arrays["images"][0]
    np.testing.assert_array_equal(x[2:13], np.broadcast_to([0, 100, 50], (11, 16, 3)))
    assert (x[:2] == 0).all() and (x[13:] == 0).all()


def test_empty_split_fails(tmp_path):
    path = write_csv(tmp_path, n=4, split=lambda i: "train" if i else "test")
    with pytest.raises(DataError, match=r"\['val'\] split\(s\) would be empty"):
        load(path)


def test_cutoff_makes_the_rarest_label_exactly_cutoff(tmp_path):
    path = write_csv(tmp_path)
    full = load(path)
    counts = dict(zip(full.train.label_names, full.train.label_counts().tolist(), strict=True))
    expected_rare = sum(1 for i in trace(full.train) if "rare" in labels_of(i))
    assert counts["rare"] == expected_rare >= 3
    train, val, _ = load(path, cutoff=2)
    after = dict(zip(train.label_names, train.label_counts().tolist(), strict=True))
    assert after["rare"] == 2 and min(after.values()) == 2
    assert train.num_examples == full.train.num_examples - (expected_rare - 2)
    np.testing.assert_array_equal(val.images, full.val.images)
    dropped = load(path, cutoff=expected_rare + 1)
    assert "rare" not in dropped.train.label_names
    assert {"name": "rare", "train_positives": expected_rare} in dropped.train.provenance[
        "dropped_labels"
    ]


def test_second_load_reads_the_cache(tmp_path, monkeypatch):
    path = write_csv(tmp_path)
    first = load(path)

    def refuse(*a, **k):
        raise AssertionError("an image was decoded although the catalog is cached")

    monkeypatch.setattr(cc, "read_image", refuse)
    monkeypatch.setattr(Image, "open", refuse)
    second = load(path, seed=0, cutoff=2)
    assert second.train.num_examples < first.train.num_examples
    path.write_text(path.read_text() + "img/extra.png,new,\n")  # new checksum: rebuild
    with pytest.raises(AssertionError, match="decoded"):
        load(path)


def test_replaced_unreadable_image_is_read_on_the_next_load(tmp_path):
    path = write_csv(tmp_path)
    target = tmp_path / "img" / "p005.png"
    target.write_bytes(b"not an image")
    with pytest.warns(DataSkipWarning, match="skipped 1"):
        load(path, on_bad_image="skip")
    Image.new("RGB", (30, 20), (25, 100, 50)).save(target)  # the good image, replaced
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataSkipWarning)
        train, val, test = load(path, on_bad_image="skip")
    assert train.provenance["skipped_rows"]["counts"] == {}
    assert sorted(trace(train) + trace(val) + trace(test)) == list(range(40))


def test_removed_image_is_noticed_although_the_catalog_file_is_unchanged(tmp_path):
    path = write_csv(tmp_path)
    load(path)
    (tmp_path / "img" / "p005.png").unlink()
    with pytest.raises(DataError, match=r"line 7: .* does not exist"):
        load(path)


def test_cache_key_covers_each_image_files_size_and_times(tmp_path, monkeypatch):
    path = write_csv(tmp_path)
    target = tmp_path / "img" / "p005.png"
    # An uncompressed BMP (Pillow reads the content, whatever the name): other pixels, same size.
    Image.new("RGB", (30, 20), (25, 100, 50)).save(target, format="BMP")
    load(path)
    decoded = []
    original_read_image = cc.read_image

    def counting_read_image(*args, **kwargs):
        decoded.append(args[0])
        return original_read_image(*args, **kwargs)

    monkeypatch.setattr(cc, "read_image", counting_read_image)
    load(path)
    assert decoded == []  # nothing changed: served from the cache
    before = target.stat()
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # touched only
    load(path)
    assert len(decoded) == 40  # rebuilt, in place: one cache file
    assert len(list((tmp_path / "cache" / "csv").glob("*.npz"))) == 1

    # Same size, same mtime, other pixels (as `cp -p` of another image would leave it):
    # only the status-change time tells; skip where the filesystem's clock cannot.
    decoded.clear()
    before = target.stat()
    Image.new("RGB", (30, 20), (250, 100, 50)).save(target, format="BMP")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    if after.st_ctime_ns == before.st_ctime_ns:
        pytest.skip("ctime did not advance on this filesystem (coarse timestamps)")
    train, val, test = load(path)
    assert len(decoded) == 40
    everything = np.concatenate([train.images, val.images, test.images])
    assert (everything[:, 8, 8, 0] == 250).sum() == 1


def test_registry_relative_path_and_default_image_root(tmp_path):
    write_csv(tmp_path)
    splits = load_task(
        "csv",
        cutoff=None,
        seed=0,
        data_dir=tmp_path,
        path="catalog.csv",
        image_size=16,
        progress=False,
    )
    assert splits.test.num_examples == 8


def test_missing_path_and_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="needs path="):
        cc.load_csv_catalog()
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load(tmp_path / "nope.csv")
    path = write_csv(tmp_path)
    with pytest.raises(DataNotFoundError, match="not a folder"):
        load(path, image_root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="on_duplicate"):
        load(path, on_duplicate="merge")
    with pytest.raises(ValueError, match="channels"):
        load(path, channels=4)


@pytest.mark.parametrize(
    ("breakage", "reason", "match"),
    [
        ("missing", "image file missing", "does not exist"),
        ("garbage", "image file unreadable", "cannot be decoded"),
    ],
)
def test_bad_images_error_or_are_counted(tmp_path, breakage, reason, match):
    path = write_csv(tmp_path)
    target = tmp_path / "img" / "p005.png"
    if breakage == "missing":
        target.unlink()
    else:
        target.write_bytes(b"not an image")
    with pytest.raises(DataError, match=match) as e:
        load(path)
    assert "line 7" in str(e.value) and "on_bad_image='skip'" in str(e.value)
    with pytest.warns(DataSkipWarning, match="skipped 1"):
        train, val, test = load(path, on_bad_image="skip")
    assert train.provenance["skipped_rows"]["counts"] == {reason: 1}
    assert 5 not in trace(train) + trace(val) + trace(test)
    assert train.num_examples + val.num_examples + test.num_examples == 39


def test_duplicate_rows_error_or_are_counted(tmp_path):
    path = write_csv(tmp_path)
    path.write_text(path.read_text() + "img/./p001.png,rare,\n")
    with pytest.raises(DataError, match=r"line 42 repeats image 'img/\./p001\.png' of line 3"):
        load(path)
    with pytest.warns(DataSkipWarning, match="1 duplicate image row"):
        train, val, test = load(path, on_duplicate="skip")
    assert train.provenance["num_rows"] == 41
    assert train.num_examples + val.num_examples + test.num_examples == 40


def test_no_warning_without_skips(tmp_path):
    path = write_csv(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataSkipWarning)
        load(path)


def write_unseen_catalog(root: Path) -> Path:
    """20 rows split train/val/test/train in turn; 'only-test' is on every test row and
    'only-val' on one val row, never on a training row."""
    images = write_images(root, 20)
    lines = ["image,labels,split"]
    for i, image in enumerate(images):
        split = ("train", "val", "test", "train")[i % 4]
        extra = {"test": ["only-test"], "val": ["only-val"] if i == 1 else []}.get(split, [])
        lines.append(f"{image},{'|'.join(labels_of(i) + extra)},{split}")
    path = root / "catalog.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_label_seen_only_in_val_or_test_is_an_error_naming_it(tmp_path):
    path = write_unseen_catalog(tmp_path)
    with pytest.raises(DataError, match=r"'only-test' \(0 val, 5 test rows\)") as info:
        load(path)
    assert "'only-val' (1 val, 0 test rows)" in str(info.value)
    assert "on_unseen_label='drop'" in str(info.value)


def test_label_seen_only_in_val_or_test_is_dropped_with_a_warning_on_request(tmp_path):
    path = write_unseen_catalog(tmp_path)
    with pytest.warns(DataSkipWarning, match="only-test.*only-val"):
        splits = load(path, on_unseen_label="drop")
    assert "only-test" not in splits.train.label_names
    assert set(splits.train.label_names) == {"common", "mid", "rare"}
    assert splits.train.provenance["unseen_labels"] == ["only-test", "only-val"]
    with pytest.raises(ValueError, match="on_unseen_label must be one of"):
        load(path, on_unseen_label="keep")


def test_decoding_on_a_process_pool_equals_the_one_process_build_byte_for_byte(tmp_path):
    path = write_csv(tmp_path, 40)
    one = load(path, workers=1, cache_dir=tmp_path / "one")
    pool = load(path, workers=2, cache_dir=tmp_path / "pool")
    for a, b in zip(one, pool, strict=True):
        assert a.images.dtype == b.images.dtype and a.images.tobytes() == b.images.tobytes()
        assert a.labels.tobytes() == b.labels.tobytes()
    assert trace(pool.train) == trace(one.train)


def test_a_build_stopped_by_a_bad_image_on_the_pool_leaves_no_cache(tmp_path):
    path = write_csv(tmp_path, 40)
    (tmp_path / "img" / "p030.png").write_bytes(b"not an image")  # after the calibration rows
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"line 32.*p030\.png.*cannot be decoded"):
        load(path, workers=2, cache_dir=cache)
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing a rerun could trust
