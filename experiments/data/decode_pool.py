"""Decoding images on every core: an ordered map over a process pool, with a first-build estimate.

`map_in_order(fn, tasks, ...)` yields `fn(task)` for every task, in task order, so what a caller
stacks is the same, byte for byte, whatever the number of workers. The tasks run in a pool of
`workers` processes (small chunks, a bounded number in flight, so a stream of tasks is read
only as fast as it is decoded), or in this process when `workers` is 1, under one
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

import collections
import dataclasses
import itertools
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

__all__ = ["DecodeTiming", "available_cores", "map_in_order", "resolve_workers"]

MIN_TASKS_PER_WORKER = 64
MAX_CHUNK = 4  # tasks per message to a worker: images take tens of ms, so messages are cheap
WINDOW_CHUNKS = 4  # chunks in flight per worker


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


def _apply_all(fn: Callable[[Any], Any], chunk: list) -> list:
    return [fn(task) for task in chunk]


def _in_order(pool, fn, tasks: Iterable, workers: int) -> Iterator[Any]:
    """fn over tasks on `pool`, in order, with at most WINDOW_CHUNKS chunks per worker in
    flight: tasks are taken from `tasks` (which may be a stream of encoded images) only as
    results come back, so memory stays bounded whatever the number of tasks."""
    pending: collections.deque = collections.deque()
    source = iter(tasks)
    while True:
        while len(pending) < WINDOW_CHUNKS * workers:
            chunk = list(itertools.islice(source, MAX_CHUNK))
            if not chunk:
                break
            pending.append(pool.apply_async(_apply_all, (fn, chunk)))
        if not pending:
            return
        yield from pending.popleft().get()


def map_in_order(
    fn: Callable[[Any], Any],
    tasks: Iterable[Any],
    *,
    total: int | None = None,
    costs: Sequence[float] | None = None,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "decode",
    unit: str = "img",
    timing: DecodeTiming | None = None,
) -> Iterator[Any]:
    """Yields fn(task) for each of `tasks` in order (module docstring).

    `tasks` is a sequence, or any iterable with `total` items (read as the workers need them);
    `costs` (default 1 each) weigh the tasks for the estimate; `timing`, if given, is filled in.
    """
    from tqdm.auto import tqdm

    total = len(tasks) if total is None else int(total)  # type: ignore[arg-type]
    costs = [1.0] * total if costs is None else [float(c) for c in costs]
    total_cost = sum(costs)

    def cost(i: int) -> float:  # a stream may hold more than `total` tasks: 1 each beyond
        return costs[i] if i < len(costs) else 1.0

    workers = resolve_workers(workers, total)
    timing = timing if timing is not None else DecodeTiming()
    timing.tasks, timing.workers = total, workers
    calibrate = calibration_tasks(total, workers)
    start = time.perf_counter()
    pool = None if workers == 1 else multiprocessing.get_context("spawn").Pool(workers)
    results = map(fn, tasks) if pool is None else _in_order(pool, fn, tasks, workers)
    done_cost, first = 0.0, None
    try:
        with tqdm(total=total or None, desc=desc, unit=unit, disable=not progress) as bar:
            for i, result in enumerate(results):
                yield result
                bar.update()
                now = time.perf_counter()
                if first is None:  # the first result: the workers have started
                    first = (now, cost(0))
                done_cost += cost(i)
                if i + 1 == 1 + calibrate and i + 1 < total:
                    rate = (now - first[0]) / max(done_cost - first[1], 1e-12)
                    timing.estimate_s = now - start + rate * (total_cost - done_cost)
                    tqdm.write(_estimate_line(desc, unit, timing, i + 1), file=sys.stderr)
    finally:
        if pool is not None:
            pool.terminate()  # after the last result a no-op; on an error it stops the workers
            pool.join()
    timing.seconds = time.perf_counter() - start


def _estimate_line(desc: str, unit: str, timing: DecodeTiming, done: int) -> str:
    return (
        f"{desc}: {timing.tasks} {unit} on {timing.workers} process(es); first build estimated "
        f"at {timing.estimate_s / 60:.1f} min (timed on the first {done} {unit})"
    )
