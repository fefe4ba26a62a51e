"""Independent runs at the same time: one worker process per job, each pinned to a core of its
own, with XLA's CPU settings for one thread (experiments.xla).

A sweep's runs are independent and small; on a CPU machine one run per core, each with one
intra-op thread, beats one run at a time spread over every core (XLA's per-op thread pool gains
little on tiny convolutions and loses to contention). `benchmarks/train.py` measures it.

How a job runs: the parent keeps exactly `jobs` tasks in flight and hands out the next one only
when a worker returns a result, so a stop (Ctrl-C, SIGTERM) starts no new task. Workers are
spawned (JAX is not fork-safe), set their affinity and XLA flags BEFORE they import the task's
module (the task function is named as "module:function" so that its import happens after), and
ignore SIGINT and SIGTERM between tasks: during a task the trainer's own handlers turn them into a
checkpoint and a clean stop. The parent forwards a SIGINT or SIGTERM it gets to the workers.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import queue
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from experiments import xla


def available_cores() -> list[int]:
    """The cores this process may run on (its affinity mask), in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity, count the cores
        return list(range(os.cpu_count() or 1))


# The cores this process could use when the module was imported, before an entry point pinned
# it to one (experiments.xla.configure_cpu): the workers' cores.
STARTING_CORES: tuple[int, ...] = tuple(available_cores())


def default_jobs() -> int:
    """One job per core the process started with."""
    return max(1, len(STARTING_CORES))


def core_groups(jobs: int, cores: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """One core for each of `jobs` workers: a run uses one core and one XLA thread whatever the
    number of jobs, so its numbers do not depend on --jobs (XLA's CPU kernels partition work by
    thread count, which changes float rounding). More jobs than cores share cores round-robin;
    fewer jobs leave cores idle."""
    cores = list(STARTING_CORES if cores is None else cores)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}.")
    return [(cores[i % len(cores)],) for i in range(jobs)]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one task gave: its index in the task list, and its return value or error text."""

    index: int
    value: Any = None
    error: str | None = None


def _resolve(target: str) -> Callable[[Any], Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _worker(target: str, cores: tuple[int, ...], tasks, results) -> None:
    # The parent decides when to stop: between tasks both signals are ignored, during a task the
    # task's own handlers (the trainer's) see them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)  # XLA sizes its thread pool from the affinity
    xla.configure_cpu(threads=len(cores), pin=False)
    fn = _resolve(target)  # imported only now, after the environment is set
    while (item := tasks.get()) is not None:
        index, task = item
        try:
            results.put(Outcome(index, value=fn(task)))
        except BaseException as e:  # reported to the parent, which records it
            text = "".join(traceback.format_exception_only(type(e), e)).strip()
            results.put(Outcome(index, error=text, value=traceback.format_exc()))


def run_tasks(target: str, tasks: Sequence[Any], jobs: int) -> Iterator[Outcome]:
    """Runs `target(task)` for each task in `jobs` pinned worker processes; yields each Outcome as
    it finishes. `target` is "module:function" (importable, picklable arguments and results).

    On SIGINT or SIGTERM in the parent: no new task starts, the running ones are asked to stop
    (SIGTERM: the trainer checkpoints and raises its Interrupted), their outcomes are still
    yielded, then KeyboardInterrupt is raised. A worker that dies without an answer (killed, out
    of memory) raises RuntimeError naming it.
    """
    if not tasks:
        return
    jobs = max(1, min(jobs, len(tasks)))
    context = multiprocessing.get_context("spawn")
    task_queue, result_queue = context.Queue(), context.Queue()
    workers = [
        context.Process(target=_worker, args=(target, cores, task_queue, result_queue))
        for cores in core_groups(jobs)
    ]
    stop = _StopFlag(workers)
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    pending = list(enumerate(tasks))[::-1]
    in_flight = 0
    try:
        for worker in workers:
            worker.start()
        for _ in workers:
            task_queue.put(pending.pop())
            in_flight += 1
        while in_flight:
            outcome = _next_result(result_queue, workers)
            in_flight -= 1
            if pending and not stop.requested:
                task_queue.put(pending.pop())
                in_flight += 1
            yield outcome
        if stop.requested:
            raise KeyboardInterrupt
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for _ in workers:
            task_queue.put(None)
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
                worker.join()


class _StopFlag:
    """Set by SIGINT/SIGTERM in the parent; forwards SIGTERM to the workers once."""

    def __init__(self, workers) -> None:
        self.workers = workers
        self.requested = False

    def handler(self, signum, frame) -> None:
        if self.requested:
            return
        self.requested = True
        print(
            "\nStopping: no new runs start; the running ones checkpoint and stop.",
            file=sys.stderr,
            flush=True,
        )
        for worker in self.workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)


def _next_result(result_queue, workers) -> Outcome:
    """The next outcome; raises RuntimeError when a worker has died without sending one."""
    while True:
        try:
            return result_queue.get(timeout=1.0)
        except queue.Empty:
            dead = [w for w in workers if w.exitcode not in (None, 0)]
            if dead:
                names = ", ".join(f"pid {w.pid} (exit code {w.exitcode})" for w in dead)
                raise RuntimeError(
                    f"a worker process died without finishing its run: {names}"
                ) from None
