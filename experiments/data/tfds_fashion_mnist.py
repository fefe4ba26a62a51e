"""Fashion-MNIST from TFDS, for the catalog task: the IDX files rebuilt from TFDS's copy.

TFDS stores `fashion_mnist` shuffled; `tfds_storage_order` recovers the release's order, so the
four gzipped IDX files written by `export_fashion_mnist_idx` equal the published ones (their
SHA-256 is checked). Command line (kept under the name the README gives):

  python -m experiments.data.tfds_source fashion-mnist-idx DEST [--data-dir DIR]
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.atomic import atomic_open
from experiments.data.fashion_mnist import SHA256
from experiments.data.images import DataError
from experiments.data.tfds_decode import open_builder, read_examples
from experiments.data.tfds_features import find_label


def tfds_storage_order(num_examples: int, split: str) -> np.ndarray:
    """The generator keys 0..n-1 in the order TFDS stores them: sorted by the 128-bit MD5 of
    the split name followed by str(key) (`tensorflow_datasets.core.shuffle`, any number of
    shards). For `fashion_mnist` the key is the example's index in the IDX file."""
    salted = hashlib.md5(split.encode("utf-8"))

    def digest(key: int) -> int:
        md5 = salted.copy()
        md5.update(str(key).encode("utf-8"))
        return int(md5.hexdigest(), 16)

    return np.asarray(sorted(range(num_examples), key=digest), np.int64)


def fashion_mnist_from_tfds(
    *,
    data_dir: str | os.PathLike | None = None,
    name: str = "fashion_mnist",
    restore_order: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images [N, 28, 28], train_labels [N], test_images, test_labels), uint8, from the
    prepared TFDS `fashion_mnist`. TFDS stores the examples shuffled; `restore_order` puts them
    back in the IDX files' order (`tfds_storage_order`), so the arrays equal the release's."""
    from PIL import Image

    builder = open_builder(name, data_dir)
    spec = find_label(builder.info.features, "label")
    out = []
    for split in ("train", "test"):
        images, labels = [], []
        for example in read_examples(builder, split, "image", keep_image=True):
            with Image.open(io.BytesIO(example["image"])) as image:
                images.append(np.asarray(image.convert("L"), np.uint8))
            labels.append(int(spec.indices(example)[0]))
        stored = [np.stack(images), np.asarray(labels, np.uint8)]
        if restore_order:
            keys = tfds_storage_order(len(labels), split)
            for array in stored:
                array[keys] = array.copy()  # stored row i holds IDX row keys[i]
        out += stored
    return tuple(out)  # type: ignore[return-value]


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` (uint8) in the IDX format: 00 00 08 ndim, big-endian uint32 sizes, the data."""
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def export_fashion_mnist_idx(
    dest: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    verify: bool = True,
    restore_order: bool = True,
) -> dict[str, Path]:
    """Writes TFDS fashion_mnist as the four gzipped IDX files in `dest` (atomic, each file).

    With `verify` (default) every file's SHA-256 must equal the published release's
    (`experiments.data.fashion_mnist.SHA256`), so the catalog task built from `dest` (pass it
    as data.data_dir, or use <cache>/fashion-mnist, which the catalog searches) sees exactly the
    arrays of the IDX release; nothing is written if any file differs.
    """
    train_images, train_labels, test_images, test_labels = fashion_mnist_from_tfds(
        data_dir=data_dir, restore_order=restore_order
    )
    payloads = {
        "train-images-idx3-ubyte": idx_bytes(train_images),
        "train-labels-idx1-ubyte": idx_bytes(train_labels),
        "t10k-images-idx3-ubyte": idx_bytes(test_images),
        "t10k-labels-idx1-ubyte": idx_bytes(test_labels),
    }
    if verify:
        wrong = [
            name
            for name, data in payloads.items()
            if hashlib.sha256(data).hexdigest() != SHA256[name]
        ]
        if wrong:
            raise DataError(
                f"TFDS fashion_mnist does not reproduce the IDX release for {wrong} (SHA-256 "
                "differs); nothing was written. Rebuild it with `tfds build fashion_mnist`."
            )
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in payloads.items():
        paths[name] = dest / f"{name}.gz"
        with atomic_open(paths[name]) as f:
            f.write(gzip.compress(data, mtime=0))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m experiments.data.tfds_source fashion-mnist-idx DEST [--data-dir DIR]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m experiments.data.tfds_source",
        description="Write TFDS fashion_mnist as the IDX files the catalog task reads.",
    )
    parser.add_argument("command", choices=["fashion-mnist-idx"])
    parser.add_argument("dest", help="folder for the four .gz files (e.g. the catalog data_dir)")
    parser.add_argument("--data-dir", default=None, help="TFDS data folder (default: TFDS's)")
    args = parser.parse_args(argv)
    paths = export_fashion_mnist_idx(args.dest, data_dir=args.data_dir)
    print("\n".join(str(p) for p in paths.values()))
    return 0
