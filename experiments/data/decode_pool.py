"""Decoding images on every core: an ordered map over a process pool, with a first-build estimate.

`map_in_order(fn, tasks, ...)` yields `fn(task)` for every task, in task order, so what a caller
stacks is the same, byte for byte, whatever the number of workers. It runs in three steps:
  1. the first `CALIBRATION_TASKS` tasks run in this process, timed;
  2. the estimate of the whole build is printed before the long work starts: the calibration's
     seconds per unit of cost (pixels, for images) times the remaining cost, divided by the
     workers, plus their start-up;
  3. the remaining tasks run in a pool of `workers` processes (`imap`, chunked), one progress
     bar (tqdm, with its ETA) over all tasks.
The pool's processes are started with "spawn", not "fork": the parent may hold JAX's threads
(fork is unsafe then) and a parsed annotation table of gigabytes, which forked children would
copy page by page as Python's garbage collector touches it. `fn` must therefore be a module-level
function and the tasks picklable. An exception in the parent (a bad item under an "error"
policy, Ctrl-C) terminates the pool; callers write their cache only after the last result, so an
interrupted build leaves no cache file behind.

`workers=None` takes every core this process may run on (`available_cores`), but no more than
one per `MIN_TASKS_PER_WORKER` tasks, so a fixture of a few images never pays for a pool;
`workers=1` never starts one.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["DecodeTiming", "available_cores", "map_in_order", "resolve_workers"]

CALIBRATION_TASKS = 8
MIN_TASKS_PER_WORKER = 64
WORKER_START_S = 2.0  # spawning a worker and importing numpy, Pillow and the task module


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_workers(workers: int | None, num_tasks: int) -> int:
    """Processes to decode `num_tasks` tasks with: see the module docstring."""
    if workers is None:
        return max(1, min(available_cores(), num_tasks // MIN_TASKS_PER_WORKER))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 or None (all cores); got {workers!r}.")
    return max(1, min(workers, num_tasks))


@dataclasses.dataclass
class DecodeTiming:
    """What one `map_in_order` call measured and promised (seconds)."""

    tasks: int = 0
    workers: int = 1
    estimate_s: float | None = None  # printed before the pool started
    seconds: float = 0.0  # all tasks, calibration included


def _estimate(calibration_s: float, done_cost: float, rest_cost: float, workers: int) -> float:
    rate = calibration_s / max(done_cost, 1e-12)
    start = WORKER_START_S if workers > 1 else 0.0
    return calibration_s + rate * rest_cost / workers + start


def map_in_order(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    *,
    costs: Sequence[float] | None = None,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "decode",
    unit: str = "img",
    timing: DecodeTiming | None = None,
) -> Iterator[Any]:
    """Yields fn(task) for each of `tasks` in order (module docstring); `costs` (default 1 each)
    scale the estimate; `timing`, if given, is filled in."""
    from tqdm.auto import tqdm

    costs = [1.0] * len(tasks) if costs is None else [float(c) for c in costs]
    workers = resolve_workers(workers, len(tasks))
    timing = timing if timing is not None else DecodeTiming()
    timing.tasks, timing.workers = len(tasks), workers
    split = min(CALIBRATION_TASKS, len(tasks))
    start = time.perf_counter()
    with tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress) as bar:
        for task in tasks[:split]:
            yield fn(task)
            bar.update()
        if split == len(tasks):
            timing.seconds = time.perf_counter() - start
            return
        calibration_s = time.perf_counter() - start
        timing.estimate_s = _estimate(
            calibration_s, sum(costs[:split]), sum(costs[split:]), workers
        )
        message = (
            f"{desc}: {len(tasks)} {unit} on {workers} process(es); first build estimated at "
            f"{timing.estimate_s / 60:.1f} min (from the first {split} {unit}: "
            f"{calibration_s:.2f} s)"
        )
        tqdm.write(message, file=sys.stderr)
        rest = tasks[split:]
        if workers == 1:
            results = map(fn, rest)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers)
            chunk = max(1, min(16, math.ceil(len(rest) / (workers * 8))))
            results = pool.imap(fn, rest, chunksize=chunk)
        try:
            for result in results:
                yield result
                bar.update()
        finally:
            if pool is not None:
                pool.terminate()  # no-op cost after the last result; stops workers on an error
                pool.join()
    timing.seconds = time.perf_counter() - start
