"""Fashionpedia at its real size: `python -m benchmarks.fashionpedia_scale --fraction F`.

Writes a synthetic Fashionpedia (`benchmarks.fashionpedia_synth`: the real layout, JSON schema
and tables; 45,623 + 1,158 images and ~333,000 annotations at fraction 1) into a temporary
folder, then builds the `sleevetype` and `archetype` crops from it as a first run does and
measures each stage: JSON parse, label selection, crops (with the estimate printed before they
started), cache write; the peak memory of the build's process and of its busiest worker; the
cache's size on disk; and the second, cached start (`load_fashionpedia` reading the cache).
The same for a bring-your-own CSV catalog of `--fraction` x 100,000 images (`--csv-images`): the
first build (read and check the rows, fingerprint the image files, decode, cache) and the cached
start. Every build runs in a fresh process, so its peak memory is its own. The folder is deleted at
the end (`--keep DIR` writes there instead and keeps it).

    python -m benchmarks.fashionpedia_scale --fraction 0.01          # seconds
    python -m benchmarks.fashionpedia_scale --fraction 1 --image-size 128

Output: a markdown table on stdout and JSON at --out (default
benchmarks/out/fashionpedia_scale.json). Nothing asserts on times.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.fashionpedia_synth import CSV_IMAGES, write_csv_catalog, write_fashionpedia

REPO = Path(__file__).resolve().parents[1]
TASKS = ("sleevetype", "archetype")
SPLITS = ("train2020", "val2020")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.01, help="of the real counts")
    parser.add_argument("--image-size", type=int, default=64, help="crop size (cpu tier: 64)")
    parser.add_argument("--workers", type=int, default=None, help="default: every core")
    parser.add_argument("--keep", default=None, help="write the data and cache here and keep it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--out", default="benchmarks/out/fashionpedia_scale.json")
    parser.add_argument("--csv-images", type=int, default=None, help="default: fraction x 100k")
    parser.add_argument("--child", choices=("build", "cached", "csv"), help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class WorkerMemory:
    """Samples the peak resident memory (VmHWM) of this process's pool workers while running.

    Not `getrusage(RUSAGE_CHILDREN)`: Linux carries a process's peak across `exec`, so a spawned
    worker would report the parent's memory at the moment it was forked.
    """

    def __init__(self, every_s: float = 0.2):
        self.peak_mb, self.every_s = 0.0, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for child in multiprocessing.active_children():
                try:
                    status = Path(f"/proc/{child.pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _peak_mb(workers: WorkerMemory) -> dict[str, float]:
    """Peak resident memory (MB) of this process and of its busiest pool worker."""
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_worker_rss_mb": workers.peak_mb,
    }


def child_build(args: argparse.Namespace) -> dict[str, Any]:
    """The first build of one task (both annotation files), stage by stage."""
    from experiments.data import fashionpedia as fp  # in the child: its memory is measured alone

    start = time.perf_counter()
    with WorkerMemory() as workers:
        prepared = fp.prepare(
            args.task,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            image_size=args.image_size,
            progress=not args.no_progress,
            workers=args.workers,
        )
    seconds = time.perf_counter() - start
    folder = Path(args.cache_dir) / "fashionpedia"
    splits = {}
    for split, (arrays, meta) in prepared.items():
        cache = folder / meta["cache_file"]
        splits[split] = {
            **meta["timing"],
            "crops": len(arrays["images"]),
            "cache_mb": (cache.stat().st_size + cache.with_suffix(".json").stat().st_size) / 2**20,
        }
    return {"first_build_s": seconds, "splits": splits, **_peak_mb(workers)}


def child_cached(args: argparse.Namespace) -> dict[str, Any]:
    """The second start: the splits from the cache, as a run loads them."""
    from experiments.data import fashionpedia as fp  # in the child: its memory is measured alone

    start = time.perf_counter()
    splits = fp.load_fashionpedia(
        args.task,
        cutoff=None,
        seed=0,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        image_size=args.image_size,
        progress=False,
    )
    seconds = time.perf_counter() - start
    return {"cached_start_s": seconds, "num_examples": splits.train.provenance["num_examples"]}


def child_csv(args: argparse.Namespace) -> dict[str, Any]:
    """One start of the csv task: the first builds the cache, a second reads it."""
    from experiments.data import csv_catalog as cc  # in the child: its memory is measured alone

    path = Path(args.data_dir) / "catalog.csv"
    start = time.perf_counter()
    rows = cc.read_catalog(path)
    read_s = time.perf_counter() - start
    cc.image_fingerprint(rows, path.parent)
    fingerprint_s = time.perf_counter() - start - read_s
    start = time.perf_counter()
    with WorkerMemory() as workers:
        splits = cc.load_csv_catalog(
            path=path,
            cache_dir=args.cache_dir,
            image_size=args.image_size,
            progress=not args.no_progress,
            workers=args.workers,
        )
    seconds = time.perf_counter() - start
    cache = next((Path(args.cache_dir) / "csv").glob("*.npz"))
    return {
        "seconds": seconds,
        "read_rows_s": read_s,
        "fingerprint_s": fingerprint_s,
        "rows": len(rows),
        "num_examples": splits.train.provenance["num_examples"],
        "cache_mb": cache.stat().st_size / 2**20,
        **_peak_mb(workers),
    }


def _in_child(kind: str, task: str, args: argparse.Namespace, data: Path, cache: Path) -> dict:
    """Runs one measurement in a fresh process; its last stdout line is the result (JSON)."""
    argv = [sys.executable, "-m", "benchmarks.fashionpedia_scale", "--child", kind]
    argv += ["--task", task] if task else []
    argv += ["--data-dir", str(data), "--cache-dir", str(cache)]
    argv += ["--image-size", str(args.image_size)]
    argv += [] if args.workers is None else ["--workers", str(args.workers)]
    argv += ["--no-progress"] if args.no_progress else []
    done = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _total(build: dict, key: str) -> float:
    return sum(s[key] or 0.0 for s in build["splits"].values())


def _row(task: str, build: dict, cached: dict) -> list[Any]:
    estimate = _total(build, "crop_estimate_s")
    return [
        task,
        sum(s["images"] for s in build["splits"].values()),
        sum(s["crops"] for s in build["splits"].values()),
        round(_total(build, "json_parse_s"), 1),
        round(_total(build, "label_selection_s"), 1),
        f"{_total(build, 'crop_s'):.1f} (est. {estimate:.1f})",
        round(_total(build, "cache_write_s"), 2),
        round(build["first_build_s"], 1),
        f"{build['peak_rss_mb']:.0f} / {build['peak_worker_rss_mb']:.0f}",
        round(_total(build, "cache_mb"), 1),
        round(cached["cached_start_s"], 2),
    ]


HEADER = [
    "task",
    "images opened",
    "crops",
    "JSON parse s",
    "label selection s",
    "crops s (estimate)",
    "cache write s",
    "first build s",
    "peak RSS MB (build / worker)",
    "cache MB",
    "cached start s",
]


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    data, cache = root / "fashionpedia", root / "cache"
    start = time.perf_counter()
    counts = write_fashionpedia(data, fraction=args.fraction)
    generate_s = time.perf_counter() - start
    tasks = {}
    for task in TASKS:
        build = _in_child("build", task, args, data, cache)
        tasks[task] = {"build": build, "cached": _in_child("cached", task, args, data, cache)}
    shutil.rmtree(data)  # the csv catalog's images are written next
    num_csv = args.csv_images or max(100, round(CSV_IMAGES * args.fraction))
    write_csv_catalog(root / "csv", num_images=num_csv)
    csv = {
        "build": _in_child("csv", "", args, root / "csv", cache),
        "cached": _in_child("csv", "", args, root / "csv", cache),
    }
    return {"generated": {**counts, "seconds": generate_s}, "tasks": tasks, "csv": csv}


def report(args: argparse.Namespace, measured: dict[str, Any]) -> str:
    from benchmarks.common import markdown_table  # imports JAX: kept out of the children

    gen = measured["generated"]
    rows = [_row(t, m["build"], m["cached"]) for t, m in measured["tasks"].items()]
    first = sum(m["build"]["first_build_s"] for m in measured["tasks"].values())
    workers = next(iter(measured["tasks"].values()))["build"]["splits"]["train2020"]["workers"]
    csv = measured["csv"]
    csv_row = [
        csv["build"]["rows"],
        round(csv["build"]["read_rows_s"], 1),
        round(csv["build"]["fingerprint_s"], 1),
        round(csv["build"]["seconds"], 1),
        f"{csv['build']['peak_rss_mb']:.0f} / {csv['build']['peak_worker_rss_mb']:.0f}",
        round(csv["build"]["cache_mb"], 1),
        round(csv["cached"]["seconds"], 2),
    ]
    csv_header = [
        "csv catalog images",
        "read rows s",
        "fingerprint files s",
        "first build s",
        "peak RSS MB (build / worker)",
        "cache MB",
        "cached start s",
    ]
    return "\n".join(
        [
            f"synthetic Fashionpedia at fraction {args.fraction}: {gen['train_images']} + "
            f"{gen['val_images']} images, {gen['annotations']} annotations (written in "
            f"{gen['seconds']:.1f} s); crops {args.image_size} px on {workers} process(es)",
            markdown_table(HEADER, rows),
            f"both first builds: {first:.1f} s; projected at fraction 1 (linear in the images): "
            f"{first / args.fraction / 60:.1f} min",
            markdown_table(csv_header, [csv_row]),
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        result = {"build": child_build, "cached": child_cached, "csv": child_csv}[args.child](args)
        print(json.dumps(result))
        return result
    # benchmarks.common imports JAX; deferred so that the measuring children and their pool
    # workers (which re-import this module) start without it, as the data layer does.
    from benchmarks.common import environment, write_json

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fashionpedia-scale-"))
    try:
        measured = measure(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result = {
        "benchmark": "fashionpedia_scale",
        "fraction": args.fraction,
        "image_size": args.image_size,
        **measured,
        "environment": environment(),
    }
    print(report(args, measured))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
