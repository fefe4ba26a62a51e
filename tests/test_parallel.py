"""experiments.parallel: pinned worker processes, their XLA flags, errors, stops, dead workers."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from experiments import parallel, xla


@pytest.mark.parametrize(
    ("jobs", "cores", "groups"),
    [
        (1, [0, 1], [(0,)]),
        (2, [0, 1], [(0,), (1,)]),
        (3, [0, 1], [(0,), (1,), (0,)]),
        (2, [4, 5, 6, 7], [(4,), (5,)]),
    ],
)
def test_each_job_gets_one_core(jobs, cores, groups):
    assert parallel.core_groups(jobs, cores) == groups


def test_core_groups_rejects_no_jobs():
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        parallel.core_groups(0, [0, 1])


def test_run_tasks_pins_each_worker_and_returns_every_outcome(monkeypatch):
    cores = parallel.available_cores()
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    outcomes = list(parallel.run_tasks("tests._parallel_targets:where", list("abcde"), jobs=2))
    assert sorted(o.index for o in outcomes) == [0, 1, 2, 3, 4]
    groups = parallel.core_groups(min(2, 5), cores)
    for outcome in outcomes:
        task, affinity, flags = outcome.value
        assert task == "abcde"[outcome.index] and outcome.error is None
        assert tuple(affinity) in groups
        assert flags.split() == xla.cpu_flags(1)  # one thread, set before the task imported JAX


def test_a_failing_task_is_reported_and_the_others_still_run():
    outcomes = list(parallel.run_tasks("tests._parallel_targets:where", ["a", "boom", "c"], jobs=2))
    by_index = {o.index: o for o in outcomes}
    assert by_index[1].error == "ValueError: task said boom"
    assert "Traceback" in by_index[1].value
    assert by_index[0].value[0] == "a" and by_index[2].value[0] == "c"


def test_a_stop_starts_no_new_task_and_lets_running_ones_finish():
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
    seen = []
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for outcome in parallel.run_tasks(
                "tests._parallel_targets:wait_for_stop", range(5), jobs=2
            ):
                seen.append(outcome)
    finally:
        timer.cancel()
    # Only the two tasks in flight ran; each saw the forwarded SIGTERM and stopped cleanly.
    assert sorted(o.index for o in seen) == [0, 1]
    assert all(o.value[1] == "stopped" for o in seen)


def test_a_dead_worker_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="died without finishing"):
        list(parallel.run_tasks("tests._parallel_targets:die", [1], jobs=1))
