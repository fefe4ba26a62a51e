"""COCO-MLT at COCO's real size: `python -m benchmarks.mlt_scale`.

Rehearses a first `coco_mlt_*` run's data stage, everything it does before training, on 118,287
COCO 2017 train records and 5,000 validation records, at the level where the suite reads TFDS
examples: TensorFlow Datasets' own `coco/2017` builder (its real features and class names) under
`tfds.testing.mock_data`, whose `as_dataset` returns a `tf.data` pipeline of records shaped as
the suite reads them (encoded JPEG `image`, `image/id`, `objects/label`), so `load_coco_mlt` runs
unchanged: the label pass over every train record, the sampler, the decode and cache of the
sampled train, val and test images, and the cut-off. Labels follow COCO train's shape (80
classes; 2.9 classes per image on average; "person" on 54% of the images; class prevalence from
64,115 images down to ~200, a power law); images are 640 x 480 JPEGs (~150 KB, COCO's typical
size), so each pass moves COCO train's volume of bytes through tf.data.

What it cannot measure: reading COCO's 25 GB of prepared records from your disk. Every pass here
streams them from memory; on a real machine add three reads of the train records (labels,
then the train and val selections), which the disk bounds.

Reported: seconds and peak resident memory of the first start (the cache is built), and of the
second (the cache is read), each in a fresh process; the achieved class counts' head and tail.
Output: a markdown table and JSON at --out (default benchmarks/out/mlt_scale.json).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COCO_TRAIN, COCO_VAL = 118_287, 5_000
HEAD_IMAGES, TAIL_IMAGES, PERSON_SHARE, CLASSES_PER_IMAGE = 64_115, 200, 0.54, 2.9


def coco_like_labels(num_images: int, num_classes: int, seed: int) -> np.ndarray:
    """bool [N, C]: class c on an image with probability prevalence_c (a power law from the
    head to the tail share, scaled to CLASSES_PER_IMAGE classes per image); at least one."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, num_classes + 1, dtype=np.float64)
    exponent = np.log(HEAD_IMAGES / TAIL_IMAGES) / np.log(num_classes)
    share = ranks**-exponent * PERSON_SHARE
    share[1:] *= (CLASSES_PER_IMAGE - PERSON_SHARE) / share[1:].sum()
    labels = rng.random((num_images, num_classes)) < np.clip(share, 0, 1)
    empty = ~labels.any(axis=1)
    labels[empty, rng.integers(num_classes, size=int(empty.sum()))] = True
    return labels[:, rng.permutation(num_classes)]  # person need not be class 0


def jpeg_templates(count: int = 8) -> list[bytes]:
    """Encoded 640 x 480 JPEGs of smooth noise (quality 90), like photos to decode."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((640, 480), Image.Resampling.BICUBIC), np.int16)
        grain = rng.integers(-10, 11, (480, 640, 3), dtype=np.int16)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(
            buffer, "JPEG", quality=90
        )
        out.append(buffer.getvalue())
    return out


def mock_coco(train_images: int, val_images: int):
    """`tfds.testing.mock_data` for coco/2017 with records shaped as the suite reads them."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    templates = jpeg_templates()
    sizes = {"train": train_images, "validation": val_images}

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        names = self.info.features["objects"]["label"].names
        n = sizes[str(split)]
        labels = coco_like_labels(n, len(names), seed=0 if str(split) == "train" else 1)

        def examples():
            for i in range(n):
                yield {
                    "image": templates[i % len(templates)],
                    "image/id": i + 1,
                    "image/filename": f"{i + 1:012d}.jpg",
                    "objects": {"label": np.flatnonzero(labels[i]).astype(np.int64)},
                }

        signature = {
            "image": tf.TensorSpec((), tf.string),
            "image/id": tf.TensorSpec((), tf.int64),
            "image/filename": tf.TensorSpec((), tf.string),
            "objects": {"label": tf.TensorSpec((None,), tf.int64)},
        }
        return tf.data.Dataset.from_generator(examples, output_signature=signature)

    return tfds.testing.mock_data(num_examples=train_images, as_dataset_fn=as_dataset)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One start of coco_mlt's data stage, as a run does it (`load_coco_mlt`)."""
    from experiments.data import mlt  # in the child, whose peak memory is measured alone

    with mock_coco(args.train_images, COCO_VAL):
        start = time.perf_counter()
        splits = mlt.load_coco_mlt(
            seed=0, cache_dir=args.cache_dir, image_size=args.image_size, progress=False
        )
        seconds = time.perf_counter() - start
    counts = splits.train.label_counts()
    return {
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "num_examples": splits.train.provenance["num_examples"],
        "head_tail": [int(counts.max()), int(counts.min())],
    }


def _in_child(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.mlt_scale", "--child", "--cache-dir", str(cache)]
    argv += ["--image-size", str(args.image_size), "--train-images", str(args.train_images)]
    done = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=COCO_TRAIN)
    parser.add_argument("--image-size", type=int, default=64, help="cpu tier: 64; gpu: 128")
    parser.add_argument("--out", default="benchmarks/out/mlt_scale.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        result = child(args)
        print(json.dumps(result))
        return result
    # benchmarks.common imports JAX: deferred so that the measuring children start without it.
    from benchmarks.common import environment, markdown_table, write_json

    root = Path(tempfile.mkdtemp(prefix="mlt-scale-"))
    try:
        first = _in_child(args, root)
        second = _in_child(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        [name, round(r["seconds"], 1), round(r["peak_rss_mb"])]
        for name, r in (("first start (builds the cache)", first), ("second start", second))
    ]
    print(
        f"coco_mlt on {args.train_images} train + {COCO_VAL} val records (mock, see the "
        f"docstring), {args.image_size} px; sampled {first['num_examples']}, class counts "
        f"{first['head_tail'][0]} .. {first['head_tail'][1]}"
    )
    print(markdown_table(["coco_mlt data stage", "seconds", "peak RSS MB"], rows))
    result = {
        "benchmark": "mlt_scale",
        "train_records": args.train_images,
        "image_size": args.image_size,
        "first": first,
        "second": second,
        "environment": environment(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
