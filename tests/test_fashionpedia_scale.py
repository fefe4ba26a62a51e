"""The full-size Fashionpedia rehearsal at a small fraction: the generator writes the real layout
and schema, and the benchmark builds both tasks from it (seconds; timings are not asserted)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from benchmarks import fashionpedia_scale, fashionpedia_synth
from experiments.data import fashionpedia as fp


def test_generator_writes_the_real_layout_schema_and_tables(tmp_path):
    counts = fashionpedia_synth.write_fashionpedia(tmp_path, fraction=0.002, seed=1)
    assert counts["train_images"] == round(45_623 * 0.002)
    assert counts["val_images"] == max(1, round(1_158 * 0.002))
    sources = fp.locate(tmp_path)  # finds the files where a user's download puts them
    ontology = fashionpedia_synth.load_ontology()
    total = 0
    for source in sources.values():
        table = json.loads(source.annotations.read_text())
        assert table["categories"] == ontology["categories"]
        assert table["attributes"] == ontology["attributes"]
        attribute_ids = {a["id"] for a in table["attributes"]}
        images = {im["id"]: im for im in table["images"]}
        assert len(images) == len(table["images"])
        for ann in table["annotations"]:
            im = images[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= im["width"] and y + h <= im["height"]
            assert set(ann["attribute_ids"]) <= attribute_ids
            assert ann["segmentation"] and ann["iscrowd"] == 0
        for im in table["images"]:
            with Image.open(source.images / im["file_name"]) as opened:
                assert opened.size == (im["width"], im["height"])
        total += len(table["annotations"])
    assert total == counts["annotations"]
    assert 5 < total / (counts["train_images"] + counts["val_images"]) < 10  # ~7.1 per image


def test_small_fraction_rehearsal_builds_both_tasks_and_reads_them_back(tmp_path, capsys):
    out = tmp_path / "scale.json"
    argv = ["--fraction", "0.005", "--csv-images", "120", "--no-progress", "--workers", "2"]
    result = fashionpedia_scale.main([*argv, "--out", str(out)])
    assert json.loads(out.read_text())["fraction"] == 0.005
    printed = capsys.readouterr().out
    assert "| sleevetype |" in printed and "| archetype |" in printed
    for task in ("sleevetype", "archetype"):
        build = result["tasks"][task]["build"]
        for split in ("train2020", "val2020"):
            assert build["splits"][split]["crops"] > 0
            assert build["splits"][split]["cache_mb"] > 0
        num = result["tasks"][task]["cached"]["num_examples"]
        assert sum(num.values()) == sum(s["crops"] for s in build["splits"].values())
    assert build["splits"]["train2020"]["crop_estimate_s"] is not None  # printed before the pool
    assert "| csv catalog images |" in printed
    csv = result["csv"]
    assert csv["build"]["rows"] == 120
    assert sum(csv["build"]["num_examples"].values()) == 120
    assert csv["cached"]["num_examples"] == csv["build"]["num_examples"]


def test_csv_generator_gives_every_label_a_training_row(tmp_path):
    from experiments.data import csv_catalog as cc

    path = fashionpedia_synth.write_csv_catalog(tmp_path, num_images=60, seed=2)
    rows = cc.read_catalog(path)
    assert len(rows) == 60 and all((tmp_path / r.image).is_file() for r in rows)
    in_train = {n for r in rows if r.split == "train" for n in r.labels}
    assert in_train == {n for r in rows for n in r.labels}
    assert len(in_train) == fashionpedia_synth.CSV_LABELS


@pytest.mark.parametrize("fraction", [0, 1.5])
def test_generator_refuses_fractions_outside_0_1(tmp_path, fraction):
    with pytest.raises(ValueError, match="fraction"):
        fashionpedia_synth.write_fashionpedia(tmp_path, fraction=fraction)
