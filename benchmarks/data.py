"""Input-pipeline throughput: `python -m benchmarks.data`.

Measures, on one CPU core (the process is pinned to one where the OS allows), the images/s of
`epoch_batches` (shuffled training batches) and `eval_batches` (padded evaluation batches) on the
catalog task, the same with each batch also copied to the default JAX device (what a training
step sees), and the time to build the catalog from decoded Fashion-MNIST. Goal: >= 20,000
training images/s, so the pipeline never bounds training. Nothing asserts on times.

    python -m benchmarks.data                      # 28 x 28 catalog, batch 128
    python -m benchmarks.data --image-size 56 --out /tmp/data.json

Output: a markdown table on stdout and JSON at --out (default benchmarks/out/data.json).

Needs Fashion-MNIST (see experiments.data.fashion_mnist); it does not download it.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time

import jax

from benchmarks.common import environment, markdown_table, write_json
from experiments.data import Splits
from experiments.data.catalog import load_catalog
from experiments.data.fashion_mnist import load_fashion_mnist
from experiments.data.pipeline import epoch_batches, eval_batches

GOAL_IMAGES_PER_S = 20_000


def pin_to_one_core() -> str:
    """Pins this process to its first allowed CPU; returns which, or why it could not."""
    if not hasattr(os, "sched_setaffinity"):
        return f"not pinned ({platform.system()} has no sched_setaffinity)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"cpu {cpu}"


def images_per_second(run_epoch, min_seconds: float) -> float:
    """Best-of-repeats throughput: runs whole epochs until `min_seconds` have passed."""
    best = 0.0
    start = time.perf_counter()
    epoch = 0
    while time.perf_counter() - start < min_seconds or epoch < 3:
        t0 = time.perf_counter()
        images = run_epoch(epoch)
        best = max(best, images / (time.perf_counter() - t0))
        epoch += 1
    return best


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cutoff", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=28, choices=(28, 56))
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/out/data.json")
    return parser.parse_args(argv)


def time_catalog_loads(args: argparse.Namespace) -> tuple[Splits, dict[str, float]]:
    """The catalog's splits and the seconds to decode Fashion-MNIST, build the catalog (into a
    fresh cache) and read it back from that cache."""
    t0 = time.perf_counter()
    load_fashion_mnist(data_dir=args.data_dir)
    decode_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as cache:
        load = functools.partial(
            load_catalog,
            cutoff=args.cutoff,
            image_size=args.image_size,
            data_dir=args.data_dir,
            cache_dir=cache,
            download=False,
        )
        t0 = time.perf_counter()
        splits = load()  # builds the catalog and writes its cache
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        load()  # reads it back from the cache
        cached_s = time.perf_counter() - t0
    return splits, {"decode_s": decode_s, "build_s": build_s, "cached_s": cached_s}


def pipeline_throughputs(splits: Splits, batch: int, seconds: float) -> dict[str, float]:
    """Images/s of shuffled training batches (touched, or sent to the default device) and of
    padded evaluation batches."""
    train, test = splits.train, splits.test

    def train_epoch(epoch: int) -> int:
        n = 0
        for images, labels in epoch_batches(train, batch, seed=0, epoch=epoch):
            images.sum(dtype="uint32")  # touch the data, as a transfer to the device would
            labels.sum(dtype="uint32")
            n += len(images)
        return n

    def eval_epoch(_: int) -> int:
        n = 0
        for images, _, valid in eval_batches(test, batch):
            images.sum(dtype="uint32")
            n += valid
        return n

    device = jax.devices()[0]

    def train_epoch_to_device(epoch: int) -> int:
        n = 0
        for images, labels in epoch_batches(train, batch, seed=0, epoch=epoch):
            jax.block_until_ready(jax.device_put((images, labels), device))
            n += len(images)
        return n

    return {
        "train": images_per_second(train_epoch, seconds),
        "device": images_per_second(train_epoch_to_device, seconds),
        "eval": images_per_second(eval_epoch, seconds),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    core = pin_to_one_core()
    splits, times = time_catalog_loads(args)
    ips = pipeline_throughputs(splits, args.batch_size, args.seconds)
    result = {
        "benchmark": "data",
        "task": "catalog",
        "cutoff": args.cutoff,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "core": core,
        "num_train": splits.train.num_examples,
        "train_images_per_s": round(ips["train"]),
        "eval_images_per_s": round(ips["eval"]),
        "train_images_per_s_to_device": round(ips["device"]),
        "device": str(jax.devices()[0]),
        "goal_images_per_s": GOAL_IMAGES_PER_S,
        "meets_goal": ips["train"] >= GOAL_IMAGES_PER_S,
        "fashion_mnist_decode_s": round(times["decode_s"], 3),
        "catalog_build_s": round(times["build_s"], 3),
        "catalog_cached_load_s": round(times["cached_s"], 4),
    }
    result["environment"] = environment()
    rows = [
        ["epoch_batches (shuffled training batches)", round(ips["train"])],
        ["epoch_batches + jax.device_put", round(ips["device"])],
        ["eval_batches (padded)", round(ips["eval"])],
    ]
    print(markdown_table(["pipeline on one core", "images/s"], rows))
    print(
        f"goal >= {GOAL_IMAGES_PER_S} images/s: {'met' if result['meets_goal'] else 'NOT met'}; "
        f"catalog build {times['build_s']:.3f} s (Fashion-MNIST decode {times['decode_s']:.3f} s), "
        f"cached load {times['cached_s']:.4f} s"
    )
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
