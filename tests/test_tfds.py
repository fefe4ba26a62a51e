"""The TFDS data source and the MLT tasks on TFDS's mock data: no download, no prepared data.

Needs the optional extra (`pip install -e ".[tfds]"`); skipped without it.

Mock data. `tfds.testing.mock_data` generates examples from each builder's feature spec. Its
random generator gives the sub-features of a Sequence of dicts (VOC's and COCO's `objects`)
independent lengths, which TFDS then refuses to encode, so `mock_tfds` below passes it an
`as_dataset_fn` that uses TFDS's own generator with the sequence lengths made consistent
(1 to 3 objects per image) and a different seed per split.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import struct
import time
import zlib

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")

from PIL import Image  # noqa: E402
from tensorflow_datasets.testing import mocking  # noqa: E402

from experiments import configs, train  # noqa: E402
from experiments.data import fashion_mnist, mlt, tfds_decode  # noqa: E402
from experiments.data import tfds_source as ts  # noqa: E402
from experiments.data.images import DataError, square_resize  # noqa: E402


def _consistent(example, features, rng, max_objects):
    """Cuts every top-level Sequence (and each sub-feature of a Sequence of dicts) to one
    random length in 1..max_objects, so the example encodes like a real one."""
    for key, feature in features.items():
        if isinstance(feature, tfds.features.Sequence):
            k = int(rng.integers(1, max_objects + 1))
            value = example[key]
            if isinstance(value, dict):
                example[key] = {sub: v[:k] for sub, v in value.items()}
                for sub, sub_feature in feature.feature.items():
                    if isinstance(sub_feature, tfds.features.BBoxFeature):  # ymin <= ymax ...
                        example[key][sub] = np.sort(example[key][sub].reshape(k, 2, 2), axis=1)
                        example[key][sub] = example[key][sub].reshape(k, 4)
            else:
                example[key] = value[:k]
    return example


@contextlib.contextmanager
def mock_tfds(num_examples: int, max_objects: int = 3):
    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        generator_cls, features, specs, decode_fn = mocking._get_fake_data_components(
            decoders, self.info.features
        )

        class Generator(generator_cls):
            def _generate_example(self, rng):
                example = mocking.RandomFakeGenerator._generate_example(self, rng)
                return _consistent(example, features, rng, max_objects)

        generator = functools.partial(
            Generator,
            features=features,
            num_examples=num_examples,
            constant_dynamic_shape=True,  # images 10 x 10, sequences cut above
            seed=zlib.crc32(str(split).encode()),
        )
        ds = tf.data.Dataset.from_generator(
            generator,
            output_types=tf.nest.map_structure(lambda t: t.dtype, specs),
            output_shapes=tf.nest.map_structure(lambda t: t.shape, specs),
        )
        return ds.map(decode_fn)

    with tfds.testing.mock_data(num_examples=num_examples, as_dataset_fn=as_dataset):
        yield


def tf_decoded(name, split):
    """Examples decoded by TFDS itself (images by TensorFlow): the independent reference."""
    builder = tfds.builder(name)
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


# ---------------------------------------------------------------------------------------------
# Features and labels


@pytest.mark.parametrize(
    ("name", "split", "kind", "path"),
    [
        ("fashion_mnist", "train", "class_label", "label"),
        ("voc/2007", "test", "sequence", "labels"),
        ("coco/2017", "validation", "objects", "objects/label"),
    ],
)
def test_label_mapping_for_the_three_label_shapes(name, split, kind, path):
    with mock_tfds(12):
        builder = ts.open_builder(name, None)
        image = ts.find_image_key(builder.info.features)
        spec = ts.find_label(builder.info.features)
        labels, ids = ts.read_labels(builder, split, image, spec)
        reference = tf_decoded(name, split)
    assert (spec.kind, spec.path, image) == (kind, path, "image")
    # Column names are the ClassLabel's own, in its order.
    feature = builder.info.features
    for part in path.split("/"):
        feature = (
            feature[part]
            if not isinstance(feature, tfds.features.Sequence)
            else (feature.feature[part])
        )
    if isinstance(feature, tfds.features.Sequence):
        feature = feature.feature
    assert spec.names == tuple(feature.names)
    expected = np.zeros((len(reference), len(spec.names)), np.uint8)
    for i, ex in enumerate(reference):
        classes = {
            "class_label": lambda e: [e["label"]],
            "sequence": lambda e: e["labels"],
            "objects": lambda e: e["objects"]["label"],
        }[kind](ex)
        for c in classes:
            expected[i, int(c)] = 1
    np.testing.assert_array_equal(labels, expected)
    if kind == "class_label":
        assert (labels.sum(axis=1) == 1).all()
    else:
        assert labels.sum() > len(labels)  # some images carry several labels
    if name == "coco/2017":
        assert ids.tolist() == [str(int(ex["image/id"])) for ex in reference]


def test_label_spec_counts_a_repeated_class_once_and_rejects_out_of_range():
    spec = ts.LabelSpec(("objects", "label"), "objects", ("cat", "dog", "car"))
    row = spec.multi_hot({"objects": {"label": np.array([2, 0, 2])}})
    assert row.tolist() == [1, 0, 1]
    assert spec.multi_hot({"objects": {"label": np.array([], np.int64)}}).tolist() == [0, 0, 0]
    with pytest.raises(DataError, match=r"outside 0\.\.\.2"):
        spec.multi_hot({"objects": {"label": np.array([3])}})


def test_a_dataset_without_an_image_or_a_label_feature_stops_clearly():
    no_label = tfds.features.FeaturesDict(
        {"image": tfds.features.Image(shape=(None, None, 3)), "caption": tfds.features.Text()}
    )
    assert ts.find_image_key(no_label) == "image"
    with pytest.raises(DataError, match=r"no label feature \(its features: image"):
        ts.find_label(no_label)
    with pytest.raises(DataError, match="label_key 'nope' is not a ClassLabel"):
        ts.find_label(tfds.builder("voc/2007").info.features, "nope")
    two = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "species": tfds.features.ClassLabel(names=["a", "b"]),
            "colour": tfds.features.ClassLabel(names=["red", "blue"]),
        }
    )
    with pytest.raises(DataError, match=r"Several label features.*set data\.label_key"):
        ts.find_label(two)
    assert ts.find_label(two, "colour").names == ("red", "blue")
    with mock_tfds(4), pytest.raises(DataError, match="no image feature"):
        ts.load_tfds(dataset="iris")  # features + ClassLabel, no image


# ---------------------------------------------------------------------------------------------
# Task tfds: decode, resize, cache


def test_tfds_task_decodes_resizes_and_caches(tmp_path, monkeypatch):
    with mock_tfds(20):
        start = time.perf_counter()
        splits = ts.load_tfds(
            dataset="voc/2007", image_size=16, cache_dir=tmp_path, cutoff=None, progress=False
        )
        build_s = time.perf_counter() - start
        reference = {s: tf_decoded("voc/2007", s) for s in ("train", "test")}
    print(f"\nmock voc/2007 tfds task build: {build_s:.2f} s for 40 images")
    train, val, test = splits
    assert len(train.labels) + len(val.labels) == 20 and len(val.labels) == 2
    assert test.images.shape == (20, 16, 16, 3) and test.images.dtype == np.uint8
    # Each test image is TFDS's decoded image, padded to square and resized by square_resize.
    for i in (0, 7):
        expected = square_resize(Image.fromarray(reference["test"][i]["image"]), 16)
        np.testing.assert_array_equal(test.images[i], expected)
    prov = test.provenance
    assert prov["dataset"] == "voc/2007/5.0.0" and prov["version"] == "5.0.0"
    assert prov["splits"]["test"] == "test" and prov["label_feature"] == "labels"
    # The cut-off: every kept label has training positives; none dropped without a record.
    assert set(train.label_names) | {d["name"] for d in prov["dropped_labels"]} == set(
        tfds.builder("voc/2007").info.features["labels"].feature.names
    )
    # A second load reads the cache only: TFDS is never asked for an example.
    monkeypatch.setattr(
        tfds_decode, "read_examples", lambda *a, **k: pytest.fail("TFDS read again")
    )
    with mock_tfds(20):
        again = ts.load_tfds(
            dataset="voc/2007", image_size=16, cache_dir=tmp_path, cutoff=None, progress=False
        )
    np.testing.assert_array_equal(again.test.images, test.images)
    np.testing.assert_array_equal(again.train.labels, train.labels)
    assert sorted(p.suffix for p in (tmp_path / "tfds").rglob("*.npz")) == [".npz", ".npz"]


def test_decode_resize_rate(capsys):
    """Measures the decode + resize path on JPEG bytes of COCO-like size (reported, not
    asserted: tests never assert wall-clock times)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640]  # smooth gradients plus noise: a photo-like JPEG, ~90 kB
    photo = np.stack([(x * 0.4 + 20 * np.sin(y / 17)) % 256, (y * 0.5) % 256, (x + y) * 0.2 % 256])
    photo = (photo.transpose(1, 2, 0) + rng.normal(0, 8, (480, 640, 3))).clip(0, 255)
    buffer = io.BytesIO()
    Image.fromarray(photo.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    encoded = buffer.getvalue()
    n = 40
    start = time.perf_counter()
    for _ in range(n):
        out = ts.decode_image(encoded, image_size=64, mode="RGB")
    rate = n / (time.perf_counter() - start)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    with capsys.disabled():
        print(f"\ndecode + resize, 640 x 480 JPEG -> 64 px: {rate:.0f} images/s (one core)")


# ---------------------------------------------------------------------------------------------
# VOC-MLT end to end


def test_voc_mlt_proposed_smoke_run_end_to_end(tmp_path):
    config = configs.get_config("voc_mlt_proposed", "smoke")
    config.data.cache_dir = str(tmp_path / "cache")
    config.data.head_images, config.data.tail_images, config.data.val_images = 40, 3, 16
    config.data.progress = False
    config.scheme_params.beta = 0.99
    config.checkpoint_every_steps = 0  # epoch ends only: keeps the test short
    with mock_tfds(120):
        start = time.perf_counter()
        splits = train._load_splits(config, 3, 0)
        build_s = time.perf_counter() - start
        source = ts.open_builder("voc/2012", None)
        spec = ts.find_label(source.info.features)
        pool, _ = ts.read_labels(source, "train+validation", "image", spec)
    print(f"\nmock VOC-MLT build: {build_s:.2f} s")
    tr, va, te = splits
    prov = tr.provenance
    sampling = prov["train_sampling"]
    # The training rows are exactly the sampler's draw on the pool's labels (independently
    # recomputed here), and the recorded counts are the achieved ones.
    expected = mlt.sample_long_tail(pool, head_images=40, tail_images=3, seed=0)
    assert sampling["num_images"] == len(expected.indices) == len(tr.labels)
    full = dict(zip(spec.names, pool[expected.indices].sum(axis=0).tolist(), strict=True))
    assert sampling["achieved_images"] == full
    assert dict(zip(tr.label_names, tr.label_counts().tolist(), strict=True)) == {
        n: full[n] for n in tr.label_names
    }
    assert len(va.labels) == 16 and len(te.labels) == 120 and te.images.shape[1:] == (32, 32, 3)
    assert prov["published"]["db_focal_resnet50_imagenet_map"] == 78.94
    assert prov["datasets"]["test"] == "voc/2007/5.0.0 test"

    with mock_tfds(120):
        result = train.train_and_evaluate(
            config, seed=0, cutoff=3, workdir=tmp_path / "run", progress=False
        )
    assert result["status"] == "finished", result["failure"]
    assert 0.0 <= result["test"]["mAP"] <= 1.0
    assert result["data"]["num_train"] == len(tr.labels)


def test_mlt_image_ids_file_reproduces_a_given_split(tmp_path):
    config = configs.get_config("voc_mlt_none", "smoke")
    with mock_tfds(30):
        source = ts.open_builder("voc/2012", None)
        spec = ts.find_label(source.info.features)
        _, ids = ts.read_labels(source, "train+validation", "image", spec)
        chosen = [ids[i] for i in (3, 11, 5, 20, 8, 14)]
        (tmp_path / "ids.txt").write_text("\n".join(f"{c}.jpg" for c in chosen) + "\n")
        splits = mlt.load_voc_mlt(
            cutoff=None,
            cache_dir=tmp_path,
            image_size=config.data.image_size,
            val_images=4,
            image_ids=str(tmp_path / "ids.txt"),
            progress=False,
        )
        reference = tf_decoded("voc/2012", "train+validation")
        (tmp_path / "bad.txt").write_text("not_an_id\n")
        with pytest.raises(ValueError, match="not in voc/2012"):
            mlt.load_voc_mlt(cache_dir=tmp_path, image_ids=str(tmp_path / "bad.txt"))
    rows = sorted((3, 11, 5, 20, 8, 14))
    expected = np.stack([square_resize(Image.fromarray(reference[i]["image"]), 32) for i in rows])
    np.testing.assert_array_equal(splits.train.images, expected)
    assert splits.train.provenance["train_sampling"]["rule"] == "image_ids file"


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from TFDS against the IDX reader


def _write_idx_by_hand(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_from_tfds_equals_the_idx_reader(tmp_path):
    with mock_tfds(12):
        ours = ts.fashion_mnist_from_tfds(restore_order=False)  # mock data is stored unshuffled
        reference = {s: tf_decoded("fashion_mnist", s) for s in ("train", "test")}
        with pytest.raises(DataError, match="does not reproduce the IDX release"):
            ts.export_fashion_mnist_idx(tmp_path / "verified")
        exported = ts.export_fashion_mnist_idx(
            tmp_path / "unverified", verify=False, restore_order=False
        )
    assert not (tmp_path / "verified").exists()
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = np.stack([ex["image"][..., 0] for ex in reference[split]])
        labels = np.asarray([ex["label"] for ex in reference[split]], np.uint8)
        files[f"{prefix}-images-idx3-ubyte"] = tmp_path / f"{prefix}-images-idx3-ubyte.gz"
        files[f"{prefix}-labels-idx1-ubyte"] = tmp_path / f"{prefix}-labels-idx1-ubyte.gz"
        _write_idx_by_hand(files[f"{prefix}-images-idx3-ubyte"], images)
        _write_idx_by_hand(files[f"{prefix}-labels-idx1-ubyte"], labels)
    from_idx = fashion_mnist.read_fashion_mnist_files(files, checksums=None)
    from_export = fashion_mnist.read_fashion_mnist_files(exported, checksums=None)
    for a, b, c in zip(ours, from_idx, from_export, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert ours[0].shape == (12, 28, 28) and ours[0].any()


def test_storage_order_matches_tfds_shuffler(tmp_path):
    from tensorflow_datasets.core import shuffle

    shuffler = shuffle.Shuffler(tmp_path, hash_salt="train")
    for key in range(500):
        shuffler.add(key, str(key).encode())
    tfds_order = [int(data) for _, data in shuffler]
    assert ts.tfds_storage_order(500, "train").tolist() == tfds_order
    assert ts.tfds_storage_order(500, "test").tolist() != tfds_order


def test_an_unprepared_dataset_stops_with_the_build_command(tmp_path):
    with pytest.raises(ts.DataNotFoundError, match="`tfds build voc/2007`"):
        ts.load_tfds(dataset="voc/2007", data_dir=tmp_path / "empty", cache_dir=tmp_path)
    with pytest.raises(ts.DataNotFoundError, match="TFDS has no dataset 'no_such_set'"):
        ts.load_tfds(dataset="no_such_set", cache_dir=tmp_path)


def test_decoding_on_a_process_pool_equals_the_one_process_decode_byte_for_byte():
    with mock_tfds(40):
        builder = ts.open_builder("voc/2007", None)
        image = ts.find_image_key(builder.info.features)
        spec = ts.find_label(builder.info.features)
        select = np.array([1, 4, 5, 17, 30, 31, 39])
        common = {"image_size": 16, "mode": "RGB", "select": select}
        one = tfds_decode.decode_split(builder, "test", image, spec, workers=1, **common)
        pool = tfds_decode.decode_split(builder, "test", image, spec, workers=2, **common)
        everything = tfds_decode.decode_split(
            builder, "test", image, spec, image_size=16, mode="RGB", workers=2
        )
    for key in ("images", "labels", "ids"):
        assert one[key].dtype == pool[key].dtype
        assert one[key].tobytes() == pool[key].tobytes(), key
    assert len(one["images"]) == len(select)
    assert everything["images"][select].tobytes() == one["images"].tobytes()


def test_mlt_train_and_val_come_from_one_read_of_the_source(tmp_path, monkeypatch):
    reads = []
    original = tfds_decode.read_examples

    def counting(builder, split, image_key, *, keep_image):
        reads.append((builder.info.full_name.split("/")[1], split, keep_image))
        return original(builder, split, image_key, keep_image=keep_image)

    monkeypatch.setattr(tfds_decode, "read_examples", counting)
    with mock_tfds(60):
        splits = mlt.load_voc_mlt(
            cutoff=None,
            cache_dir=tmp_path,
            image_size=16,
            head_images=12,
            tail_images=2,
            val_images=5,
            progress=False,
        )
        reference = tf_decoded("voc/2012", "train+validation")
    image_reads = [r for r in reads if r[2]]
    assert image_reads == [("2012", "train+validation", True), ("2007", "test", True)]
    # Each split holds what a build of its rows alone would: the pool's images, resized.
    assert len(splits.val.labels) == 5
    for part in (splits.train, splits.val):
        assert part.images.shape[1:] == (16, 16, 3)
    expected = {square_resize(Image.fromarray(ex["image"]), 16).tobytes() for ex in reference}
    assert {im.tobytes() for im in splits.val.images} <= expected
    assert {im.tobytes() for im in splits.train.images} <= expected
    assert not {im.tobytes() for im in splits.val.images} & {
        im.tobytes() for im in splits.train.images
    }
