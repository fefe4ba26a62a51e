"""Task functions for tests/test_parallel.py, importable by the spawned worker processes."""

from __future__ import annotations

import os
import signal
import time


def where(task):
    """The task, this worker's cores and XLA flags."""
    if task == "boom":
        raise ValueError("task said boom")
    return task, sorted(os.sched_getaffinity(0)), os.environ.get("XLA_FLAGS", "")


def wait_for_stop(task):
    """Like a training run: handles SIGTERM as a request to stop, else works for up to 30 s."""
    stop = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        deadline = time.monotonic() + 30
        while not stop and time.monotonic() < deadline:
            time.sleep(0.05)
        return (task, "stopped" if stop else "finished")
    finally:
        signal.signal(signal.SIGTERM, previous)


def die(task):
    os._exit(3)


def reports_progress(task):
    """Reports two statuses and prints a line, as a training run in a worker does."""
    from experiments import parallel

    parallel.report_progress(f"{task} half")
    print(f"{task} says hello")
    parallel.report_progress(None)
    return task
