"""The VOC-MLT / COCO-MLT sampler and id files: pure NumPy, no TensorFlow needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.data import mlt
from experiments.data.tfds_features import canonical_id


def synthetic_pool(num_images=6000, num_classes=20, seed=0):
    """A multi-label pool with a frequent class co-occurring with the others (like VOC's
    person): class c shows with probability 0.3 * 0.85**c, class 0 also with 0.4 extra."""
    rng = np.random.default_rng(seed)
    p = 0.3 * 0.85 ** np.arange(num_classes)
    labels = rng.random((num_images, num_classes)) < p
    labels[:, 0] |= rng.random(num_images) < 0.4
    return labels.astype(np.uint8)


def test_pareto_targets_by_hand():
    # p = ln(775/4)/ln(20); the ends are exact and the middle follows (r + 1) ** -p.
    t = mlt.pareto_targets(20, head_images=775, tail_images=4)
    p = math.log(775 / 4) / math.log(20)
    assert t[0] == 775 and t[-1] == 4
    assert t[1] == round(775 * 2**-p) == 229
    assert t[9] == round(775 * 10**-p)
    assert np.all(np.diff(t) <= 0)
    coco = mlt.pareto_targets(80, head_images=1128, tail_images=6)
    assert coco[0] == 1128 and coco[-1] == 6 and len(coco) == 80
    with pytest.raises(ValueError, match="tail_images <= head_images"):
        mlt.pareto_targets(20, head_images=4, tail_images=5)


def test_class_ranking_is_by_frequency_then_index():
    labels = np.array([[1, 1, 0, 1], [0, 1, 0, 1], [0, 1, 1, 0]], np.uint8)
    # counts 1, 3, 1, 2 -> class 1, class 3, then classes 0 and 2 (tie: lower index first)
    assert mlt.class_ranking(labels).tolist() == [1, 3, 0, 2]


def test_sampler_is_deterministic_and_seeded():
    pool = synthetic_pool()
    a = mlt.sample_long_tail(pool, head_images=775, tail_images=4, seed=3)
    b = mlt.sample_long_tail(pool.copy(), head_images=775, tail_images=4, seed=3)
    c = mlt.sample_long_tail(pool, head_images=775, tail_images=4, seed=4)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_sampler_achieves_the_head_to_tail_profile():
    pool = synthetic_pool()
    s = mlt.sample_long_tail(pool, head_images=775, tail_images=4, seed=0)
    # Achieved counts are recomputed here from the returned rows, not read from the sampler.
    achieved = pool[s.indices].sum(axis=0)
    np.testing.assert_array_equal(achieved, s.achieved)
    assert len(np.unique(s.indices)) == len(s.indices)
    order = s.class_order
    by_rank = achieved[order]
    targets = mlt.pareto_targets(20, head_images=775, tail_images=4)
    assert by_rank[-1] == 4  # the rarest class exactly at the tail target
    # A class never falls short (the pool is large enough) and only co-occurrence adds images.
    assert np.all(by_rank >= targets)
    # The tail is exact: the rarest classes are closed before anything else is drawn.
    np.testing.assert_array_equal(by_rank[-5:], targets[-5:])
    assert by_rank[0] == achieved.max() and 775 <= by_rank[0] <= 800
    # The suite's buckets (head > 100, tail < 20) are all populated, as in VOC-MLT.
    assert (achieved > 100).sum() >= 2 and (achieved < 20).sum() >= 5
    assert ((achieved >= 20) & (achieved <= 100)).sum() >= 3


def test_sampler_records_a_shortfall_rather_than_inventing_images():
    pool = synthetic_pool(num_images=300)
    s = mlt.sample_long_tail(pool, head_images=775, tail_images=4, seed=0)
    available = pool.sum(axis=0)
    assert s.achieved[s.class_order[0]] <= available[s.class_order[0]] < 775
    assert s.provenance([f"c{i}" for i in range(20)])["num_images"] == len(s.indices)


def test_canonical_ids_and_id_files(tmp_path):
    assert canonical_id("2008_000008.jpg") == "2008_000008"
    assert canonical_id(b"000000391895.jpg") == "391895"
    assert canonical_id(np.int64(391895)) == "391895"
    assert canonical_id("train2017/000000000009.jpg") == "9"
    f = tmp_path / "ids.txt"
    f.write_text("# VOC-MLT\n2008_000008\n\n2008_000015.jpg  \n")
    assert mlt.read_image_ids(f) == ["2008_000008", "2008_000015"]
    assert mlt.select_ids(
        ["a", "2008_000015", "b", "2008_000008"], ["2008_000008", "2008_000015"], where="x"
    ).tolist() == [1, 3]
    with pytest.raises(ValueError, match="not in voc"):
        mlt.select_ids(["a"], ["b"], where="voc")
    f.write_text("1\n01\n")
    with pytest.raises(ValueError, match="repeats"):
        mlt.read_image_ids(f)
    with pytest.raises(FileNotFoundError, match="one image id per line"):
        mlt.read_image_ids(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------------------------
# Without the [tfds] extra: a clear stop, and nothing else imports TensorFlow Datasets


def test_without_the_extra_a_tfds_task_stops_at_once_with_the_install_command(
    tmp_path, monkeypatch, capsys
):
    import sys

    from experiments import execute
    from experiments import run as run_mod
    from experiments.data import tfds_source

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(tfds_source.TfdsNotInstalledError, match=r'pip install -e "\.\[tfds\]"'):
        tfds_source.load_tfds(dataset="voc/2007")
    for config in ("voc_mlt_proposed", "coco_mlt_none", "tfds_proposed"):
        code = run_mod.main(["--config", config, "--tier", "smoke", "--output-dir", str(tmp_path)])
        assert code == execute.EXIT_USAGE
        assert 'pip install -e ".[tfds]"' in capsys.readouterr().err
    assert not any(tmp_path.rglob("record.json"))


def test_the_core_configs_and_other_tasks_never_import_tensorflow_datasets():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import ltweights, experiments.data, experiments.data.mlt, experiments.data.tfds_source\n"
        "from experiments import configs\n"
        "[configs.get_config(n) for n in configs.list_configs()]\n"
        "import experiments.data.catalog, experiments.data.csv_catalog\n"
        "assert 'tensorflow_datasets' not in sys.modules and 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_mlt_scale_rehearsal_labels_have_cocos_shape():
    from benchmarks.mlt_scale import coco_like_labels

    labels = coco_like_labels(20_000, 80, seed=0)
    per_class = labels.mean(axis=0)
    assert labels.shape == (20_000, 80) and labels.any(axis=1).all()
    assert 2.7 < labels.sum(axis=1).mean() < 3.2  # COCO train: 2.9 classes per image
    assert abs(per_class.max() - 0.54) < 0.02  # person on 54% of the images
    assert per_class.min() < 0.005  # a long tail (COCO's rarest class: ~200 of 118,287)
    np.testing.assert_array_equal(labels, coco_like_labels(20_000, 80, seed=0))
