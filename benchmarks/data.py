"""Input-pipeline throughput: `python -m benchmarks.data`.

Measures, on one CPU core (the process is pinned to one where the OS allows), the images/s of
`epoch_batches` (shuffled training batches) and `eval_batches` (padded evaluation batches) on the
catalog task, the same with each batch also copied to the default JAX device (what a training
step sees), and the time to build the catalog from decoded Fashion-MNIST. Goal: >= 20,000
training images/s, so the pipeline never bounds training. Nothing asserts on times.

The gpu tier's feed: batches of 256 as the step receives them (`epoch_batches`, then
`shard_batch` onto the mesh, as `experiments.train` does; augmentation runs inside the jitted
step, so it costs the input nothing), for 128 x 128 x 3 crops (the photo tasks; synthetic
pixels, a gather does not look at them) and the 56 x 56 catalog, on one core and on all cores,
without and with `prefetch` (the gather in a background thread, as the trainer does). Set
against what a ResNet-18 step consumes on a GPU: `DEMAND_IMAGES_PER_S`, derived from a published
figure (see there).

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
import numpy as np

from benchmarks.common import environment, markdown_table, write_json
from experiments.data import Splits
from experiments.data.catalog import load_catalog
from experiments.data.dataset import Dataset
from experiments.data.fashion_mnist import load_fashion_mnist
from experiments.data.pipeline import epoch_batches, eval_batches, prefetch
from experiments.steps import make_mesh, shard_batch

GOAL_IMAGES_PER_S = 20_000
GPU_BATCH = 256
# What a ResNet-18 training step consumes on a current GPU, images/s, derived from a published
# figure: NVIDIA DeepLearningExamples, PyTorch ResNet-50 v1.5 README, "Training performance:
# NVIDIA DGX A100 (8x A100 80GB)": 1 GPU, batch 256, 224 px, 2,470 images/s in mixed precision.
# Scaled by forward FLOPs, ResNet-50 at 224 px (4.1 GFLOPs) / ResNet-18 (1.8 GFLOPs) = 2.3x and
# (224 / size)^2 for the image size; 128 px: 2,470 x 2.3 x 3.06 ~ 17,000 images/s; 56 px (our
# 1-channel catalog, 7x7 stride-2 stem): x 16 ~ 91,000. An H100 is about twice an A100 on
# convolutions, so read these as the lower end of a current GPU's appetite.
DEMAND_IMAGES_PER_S = {128: 17_000, 56: 91_000}


def pin_to_one_core() -> str:
    """Pins this process to its first allowed CPU; returns which, or why it could not."""
    if not hasattr(os, "sched_setaffinity"):
        return f"not pinned ({platform.system()} has no sched_setaffinity)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"cpu {cpu}"


def allowed_cores() -> set[int] | None:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def set_cores(cores: set[int] | None) -> None:
    """Runs this thread (and the threads it starts) on `cores` (None: leave as is)."""
    if cores is not None:
        os.sched_setaffinity(0, cores)


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
    parser.add_argument("--crops", type=int, default=8192, help="128 px crops in the gpu feed")
    parser.add_argument("--no-gpu-feed", action="store_true", help="skip the gpu-tier feed")
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


def feed_images_per_second(dataset, mesh, seconds: float, *, depth: int) -> float:
    """Images/s of training batches placed on the mesh as the step receives them, with the
    gather `depth` batches ahead in a background thread (0: in this thread)."""

    def epoch(e: int) -> int:
        batches = epoch_batches(dataset, GPU_BATCH, seed=0, epoch=e)
        n = 0
        for images, labels in prefetch(batches, depth) if depth else batches:
            jax.block_until_ready((shard_batch(mesh, images), shard_batch(mesh, labels)))
            n += len(images)
        return n

    return images_per_second(epoch, seconds)


def gpu_tier_datasets(args: argparse.Namespace) -> dict[int, Dataset]:
    """{image size: training split}: synthetic 128 px crops and the real 56 px catalog."""
    rng = np.random.default_rng(0)
    crops = Dataset(
        images=rng.integers(0, 256, (args.crops, 128, 128, 3), dtype=np.uint8),
        labels=(rng.random((args.crops, 13)) < 0.1).astype(np.uint8),
        label_names=tuple(f"label{j}" for j in range(13)),
        split="train",
    )
    catalog = load_catalog(
        cutoff=args.cutoff, image_size=56, data_dir=args.data_dir, download=False
    ).train
    return {128: crops, 56: catalog}


def gpu_tier_feed(args: argparse.Namespace, all_cores: set[int] | None) -> list[dict]:
    """The feed of each gpu-tier shape, one core / all cores x without / with prefetch."""
    mesh = make_mesh()
    one_core = None if all_cores is None else {min(all_cores)}
    rows = []
    for size, dataset in gpu_tier_datasets(args).items():
        for cores_name, cores in (("one core", one_core), ("all cores", all_cores)):
            for depth in (0, 2):
                set_cores(cores)
                ips = feed_images_per_second(dataset, mesh, args.seconds, depth=depth)
                rows.append(
                    {
                        "shape": f"{size} x {size} x {dataset.images.shape[-1]}",
                        "cores": f"{cores_name} ({len(cores) if cores else '?'})",
                        "prefetch": depth,
                        "images_per_s": round(ips),
                        "demand_images_per_s": DEMAND_IMAGES_PER_S[size],
                        "supply_over_demand": round(ips / DEMAND_IMAGES_PER_S[size], 2),
                    }
                )
    set_cores(one_core)
    return rows


def main(argv: list[str] | None = None) -> dict:
    all_cores = allowed_cores()
    try:
        return _measure(parse_args(argv), all_cores)
    finally:  # the caller (a test, a notebook) gets its cores back
        set_cores(all_cores)


def _measure(args: argparse.Namespace, all_cores: set[int] | None) -> dict:
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
    if not args.no_gpu_feed:
        feed = gpu_tier_feed(args, all_cores)
        result["gpu_tier_feed"] = feed
        print(
            markdown_table(
                [
                    "gpu-tier batch (256)",
                    "cores",
                    "prefetch",
                    "images/s",
                    "ResNet-18 demand",
                    "supply / demand",
                ],
                [
                    [
                        r["shape"],
                        r["cores"],
                        r["prefetch"],
                        r["images_per_s"],
                        r["demand_images_per_s"],
                        r["supply_over_demand"],
                    ]
                    for r in feed
                ],
            )
        )
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
