"""Decoding images on every core: an ordered map over a process pool, with a first-build estimate.

`map_in_order(fn, tasks, ...)` yields `fn(task)` for every task, in task order, so what a caller
stacks is the same, byte for byte, whatever the number of workers. The tasks run in a pool of
`workers` processes (`imap`, small chunks), or in this process when `workers` is 1, under one
progress bar (tqdm, with its ETA). The estimate of the whole build is printed before the long
work starts: once the first `calibration_tasks(n)` results have come back from the running
workers, the seconds they took per unit of cost (pixels or bytes, for images) times the
remaining cost, plus the seconds spent so far (the workers' start-up included). Timing the
running pool, rather than one image in this process, counts what the pool really delivers on
this machine (cores shared with other work, the transfer of the results).
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

MIN_TASKS_PER_WORKER = 64
MAX_CHUNK = 4  # tasks per message to a worker: images take tens of ms, so messages are cheap


def calibration_tasks(num_tasks: int, workers: int) -> int:
    """Results timed for the estimate: a few chunks per worker, at most a tenth of the tasks."""
    return max(1, min(4 * workers * MAX_CHUNK, num_tasks // 10))


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
    estimate_s: float | None = None  # printed after the calibration results, before the rest
    seconds: float = 0.0  # all tasks, the workers' start-up included


def _results(fn, tasks, workers: int, pool_holder: list) -> Iterator[Any]:
    """fn over tasks in order: in this process, or on a spawned pool put in `pool_holder`."""
    if workers == 1:
        return map(fn, tasks)
    pool = multiprocessing.get_context("spawn").Pool(workers)
    pool_holder.append(pool)
    chunk = max(1, min(MAX_CHUNK, math.ceil(len(tasks) / (workers * 16))))
    return pool.imap(fn, tasks, chunksize=chunk)


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
    weigh the tasks for the estimate; `timing`, if given, is filled in."""
    from tqdm.auto import tqdm

    costs = [1.0] * len(tasks) if costs is None else [float(c) for c in costs]
    total_cost = sum(costs)
    workers = resolve_workers(workers, len(tasks))
    timing = timing if timing is not None else DecodeTiming()
    timing.tasks, timing.workers = len(tasks), workers
    calibrate = calibration_tasks(len(tasks), workers)
    start = time.perf_counter()
    pool_holder: list = []
    done_cost, first = 0.0, None
    try:
        with tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress) as bar:
            for i, result in enumerate(_results(fn, tasks, workers, pool_holder)):
                yield result
                bar.update()
                now = time.perf_counter()
                if first is None:  # the first result: the workers have started
                    first = (now, costs[0])
                done_cost += costs[i]
                if i + 1 == 1 + calibrate and i + 1 < len(tasks):
                    rate = (now - first[0]) / max(done_cost - first[1], 1e-12)
                    timing.estimate_s = now - start + rate * (total_cost - done_cost)
                    tqdm.write(_estimate_line(desc, unit, timing, i + 1), file=sys.stderr)
    finally:
        for pool in pool_holder:
            pool.terminate()  # after the last result a no-op; on an error it stops the workers
            pool.join()
    timing.seconds = time.perf_counter() - start


def _estimate_line(desc: str, unit: str, timing: DecodeTiming, done: int) -> str:
    return (
        f"{desc}: {timing.tasks} {unit} on {timing.workers} process(es); first build estimated "
        f"at {timing.estimate_s / 60:.1f} min (timed on the first {done} {unit})"
    )
