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

Workers die with their parent: each watches its parent's pid, and when the parent is gone
(`kill -9`, a crash) it asks its task to stop as a SIGTERM would (the trainer checkpoints, so
the run resumes), then exits; between tasks it exits at once. So no worker outlives the
command, and no orphan holds a run's lock.

With a `watcher` (experiments.progress.Board), a task reports its progress with
`report_progress(...)` and the workers' printed output comes to the parent, which shows both.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from experiments import xla

# Seconds between a worker's checks of its parent, and how long a task may take to stop once
# the parent is gone before the worker exits anyway.
PARENT_POLL_S = 0.5
ORPHAN_GRACE_S = 120.0


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


class Watcher(Protocol):
    """What the parent does with its workers' messages (experiments.progress.Board)."""

    def show(self, index: int, status: Any) -> None: ...
    def write(self, text: str, stream: Any = None) -> None: ...
    def finished(self, index: int) -> None: ...
    def tick(self) -> None: ...


def _resolve(target: str) -> Callable[[Any], Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# In a worker: the queue to the parent, the index of the task running (None between tasks),
# whether progress is wanted, and whether the parent is gone.
_WORKER: dict[str, Any] = {}


def in_worker() -> bool:
    """Whether this process is a worker of `run_tasks`."""
    return bool(_WORKER)


def report_progress(status: Any) -> None:
    """From a task in a worker: sends `status` (None: the task's line goes) to the parent's
    watcher; does nothing elsewhere, or when the parent has no watcher."""
    if _WORKER.get("watched") and _WORKER.get("index") is not None:
        _WORKER["results"].put(("progress", _WORKER["index"], status))


class _ToParent:
    """A worker's sys.stdout / sys.stderr: whole lines go to the parent's watcher."""

    def __init__(self, results, stream: str):
        self.results, self.stream, self.buffer = results, stream, ""

    def write(self, text: str) -> int:
        self.buffer += text
        if "\n" in self.buffer:
            lines, _, self.buffer = self.buffer.rpartition("\n")
            self.results.put(("text", self.stream, lines + "\n"))
        return len(text)

    def flush(self) -> None:
        if self.buffer:
            self.results.put(("text", self.stream, self.buffer))
            self.buffer = ""

    def isatty(self) -> bool:
        return False


def _watch_parent(parent: int) -> None:
    """Thread of a worker: once the parent is gone, stops the running task as a SIGTERM would
    (repeated, since a task installs its handler only when it starts training) and exits when it
    has stopped; between tasks, exits at once. Never returns."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    _WORKER["orphan"] = True
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while _WORKER.get("index") is not None and time.monotonic() < deadline:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)
    os._exit(0 if _WORKER.get("index") is None else 1)


def _worker(target: str, cores: tuple[int, ...], tasks, results, parent: int, watched: bool):
    # The parent decides when to stop: between tasks both signals are ignored, during a task the
    # task's own handlers (the trainer's) see them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _WORKER.update(results=results, index=None, watched=watched)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if watched:
        sys.stdout, sys.stderr = _ToParent(results, "stdout"), _ToParent(results, "stderr")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)  # XLA sizes its thread pool from the affinity
    xla.configure_cpu(threads=len(cores), pin=False)
    fn = _resolve(target)  # imported only now, after the environment is set
    while (item := tasks.get()) is not None:
        index, task = item
        _WORKER["index"] = index
        try:
            outcome = Outcome(index, value=fn(task))
        except BaseException as e:  # reported to the parent, which records it
            text = "".join(traceback.format_exception_only(type(e), e)).strip()
            outcome = Outcome(index, error=text, value=traceback.format_exc())
        sys.stdout.flush()
        sys.stderr.flush()
        if _WORKER.get("orphan"):
            os._exit(0)  # nobody to answer; the queue's pipe may never be read again
        results.put(outcome)
        _WORKER["index"] = None


def run_tasks(
    target: str,
    tasks: Sequence[Any],
    jobs: int,
    *,
    watcher: Watcher | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Outcome]:
    """Runs `target(task)` for each task in `jobs` pinned worker processes; yields each Outcome as
    it finishes. `target` is "module:function" (importable, picklable arguments and results).
    With a `watcher`, the tasks' progress and the workers' output go to it. Once `should_stop()`
    is true no new task starts (the running ones finish).

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
        context.Process(
            target=_worker,
            args=(target, cores, task_queue, result_queue, os.getpid(), watcher is not None),
        )
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
            outcome = _next_result(result_queue, workers, watcher)
            in_flight -= 1
            if watcher is not None:
                watcher.finished(outcome.index)
            if pending and not stop.requested and not (should_stop and should_stop()):
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


def _next_result(result_queue, workers, watcher: Watcher | None) -> Outcome:
    """The next outcome, passing the messages before it to `watcher`; raises RuntimeError when a
    worker has died without sending one."""
    while True:
        if watcher is not None:
            watcher.tick()
        try:
            item = result_queue.get(timeout=1.0)
        except queue.Empty:
            dead = [w for w in workers if w.exitcode not in (None, 0)]
            if dead:
                names = ", ".join(f"pid {w.pid} (exit code {w.exitcode})" for w in dead)
                raise RuntimeError(
                    f"a worker process died without finishing its run: {names}"
                ) from None
            continue
        if isinstance(item, Outcome):
            return item
        kind, where, payload = item
        if watcher is None:
            continue
        if kind == "progress":
            watcher.show(where, payload)
        else:
            watcher.write(payload, sys.stdout if where == "stdout" else sys.stderr)
