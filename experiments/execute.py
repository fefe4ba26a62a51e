"""Carrying out a plan of runs: one after another in this process, or several at once.

`python -m experiments.run` resolves and checks the runs (experiments/run.py); this module trains
them. Each run holds its folder's lock (experiments/lock.py) while it trains and writes its record,
so two invocations, or two jobs, never share a run.

With `jobs` > 1 the runs go to worker processes (experiments/parallel.py), one per job, each
pinned to its share of the cores with XLA's intra-op pool sized to it; on a CPU machine a sweep of
small runs finishes sooner one run per core than one run over every core
(`python -m benchmarks.train --jobs` measures it). Workers print a line per run, never progress
bars. A stop (Ctrl-C, SIGTERM) starts no new run; the running ones checkpoint and the invocation
exits with code 130, as a single run does.

The runs of an invocation share JAX's persistent compilation cache (about half a cpu-tier run's
time is compilation): with several processes it is used with JAX's file lock (the `filelock`
package), so concurrent readers never see a half-written entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from experiments import distributed, parallel, progress, records
from experiments.atomic import disk_full, disk_full_message
from experiments.data.cache import cache_root
from experiments.lock import LOCK_FILENAME, LockHeld, RunLock
from experiments.records import build_record, failed_result, write_record
from experiments.runs import Run, plan_action, read_record

# The exit codes of every command that trains runs.
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
# A run's outcome when the disk is full: no record is written, its checkpoints resume it, and
# no further run starts (each would fail the same way).
NO_SPACE = "no space"
# Bound of the shared compilation cache; setting one turns on JAX's cross-process file lock.
COMPILATION_CACHE_BYTES = 2 << 30
SUMMARY_HEADER = ("variant", "cutoff", "seed", "status", "test mAP", "tail mAP", "macro-F1", "time")


@dataclasses.dataclass(frozen=True)
class Options:
    """How to carry out a plan: the invocation's argv and program (for the resume and recovery
    commands; a sweep's runs come from several configs, so `experiments.sweep` passes
    `per_run_argv` and each run's recovery names its own config), --force, progress bars, and the
    compilation cache folder (None: no cache)."""

    argv: tuple[str, ...]
    program: str = "experiments.run"
    per_run_argv: bool = False
    force: bool = False
    progress: bool = True
    cache_dir: Path | None = None


# ---------------------------------------------------------------------------------------------
# Summaries and commands printed to the user


def summary_row(run: Run, action: str, record: dict[str, Any] | None) -> list[str]:
    def number(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    test = (record or {}).get("test") or {}
    tail = ((test.get("buckets") or {}).get("tail") or {}).get("mAP")
    status = (record or {}).get("status", action) if action != "conflict" else "conflict"
    if action == "skip":
        status += " (skipped)"
    wall = (record or {}).get("wall_time_s")
    return [
        run.variant,
        str(run.cutoff),
        str(run.seed),
        status,
        number(test.get("mAP")),
        number(tail),
        number(test.get("macro_f1")),
        "-" if wall is None else f"{wall:.0f}s",
    ]


def labelled_result(row: Sequence[str]) -> str:
    """A summary row's status and numbers with their column names: "finished: test mAP 0.727,
    tail mAP 0.688, macro-F1 0.629, time 332s"."""
    status, *values = row[3:]
    named = ", ".join(
        f"{name} {value}" for name, value in zip(SUMMARY_HEADER[4:], values, strict=True)
    )
    return f"{status}: {named}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines = [line.rstrip() for line in lines]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def resume_command(argv: Sequence[str], program: str = "experiments.run") -> str:
    # Without --force: rerunning with it would delete the checkpoint it should resume from.
    kept = [a for a in argv if a != "--force"]
    return shlex.join(["python", "-m", program, *kept])


def run_argv(run: Run) -> list[str]:
    """The `experiments.run` arguments that name `run`'s config, tier and records folder."""
    config = run.config
    return ["--config", config.name, "--tier", config.tier, "--output-dir", str(config.output_dir)]


def recovery_command(argv: Sequence[str], run: Run) -> str:
    """The command that restarts just `run` from scratch: the same invocation narrowed to its
    seed, cut-off and varied values, with --force."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--seeds", "--cutoffs"):
            skip = True
        elif arg != "--force" and not arg.startswith(("--seeds=", "--cutoffs=")):
            kept.append(arg)
    kept += ["--seeds", str(run.seed), "--cutoffs", str(run.cutoff)]
    for path, value in run.point:
        kept += ["--set", f"{path}={value!r}"]
    return shlex.join(["python", "-m", "experiments.run", *kept, "--force"])


def recovery_hint(argv: Sequence[str], run: Run) -> str:
    return (
        f"recovery: rerun the same command to retry; if it fails the same way, its folder "
        f"{run.workdir} may hold an unusable checkpoint: start this run afresh with\n  "
        f"{recovery_command(argv, run)}\n(or delete {run.workdir} and rerun)"
    )


# ---------------------------------------------------------------------------------------------
# The compilation cache


@contextlib.contextmanager
def compilation_cache(directory: Path | None):
    """JAX's persistent compilation cache in `directory` for the runs of one invocation.

    The runs of a sweep share model and batch shapes, so after the first run XLA compilation
    (about half of a cpu-tier run) is read from disk; the executables are the same, so the
    numbers are too. The cache is bounded (COMPILATION_CACHE_BYTES), which makes JAX guard each
    read and write with a file lock: safe for several processes. Left alone when None or when
    the user configured a cache already; the previous settings come back afterwards.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    if directory is None or jax.config.jax_compilation_cache_dir is not None:
        yield
        return
    previous = {
        name: getattr(jax.config, name)
        for name in ("jax_persistent_cache_min_compile_time_secs", "jax_compilation_cache_max_size")
    }
    give_entries_access_times(Path(directory))
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_BYTES)
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        for name, value in previous.items():
            jax.config.update(name, value)
        jax_cache.reset_cache()


def give_entries_access_times(directory: Path) -> list[str]:
    """Give every entry of a JAX compilation cache folder the access-time file a bounded cache
    needs; returns the keys that lacked one.

    An unbounded cache (JAX's default, e.g. a user's own `jax_compilation_cache_dir`) writes
    `<key>-cache` files without `<key>-atime`. A bounded cache that meets such an entry fails
    every later write ("Error writing persistent compilation cache entry"), so each run would
    compile again. Stamping them "now" under the cache's own lock lets eviction order them.
    """
    import filelock

    if not directory.is_dir():
        return []
    stamped = []
    with filelock.FileLock(directory / ".lockfile", timeout=60):
        for entry in sorted(directory.glob("*-cache")):
            key = entry.name.removesuffix("-cache")
            atime = directory / f"{key}-atime"
            if not atime.exists():
                atime.write_bytes(time.time_ns().to_bytes(8, "little"))
                stamped.append(key)
    return stamped


def compilation_cache_dir(config: ml_collections.ConfigDict) -> Path:

    return cache_root(config.data.cache_dir) / "jax-compilation"


def load_trainer():
    """(train_and_evaluate, Interrupted); imported late so --list and --dry-run need no trainer."""
    from experiments.train import Interrupted, train_and_evaluate

    return train_and_evaluate, Interrupted


# ---------------------------------------------------------------------------------------------
# One run


def _clear_run_dir(workdir: Path) -> None:
    """Deletes everything in `workdir` but its lock file (held by this process)."""
    for child in workdir.iterdir():
        if child.name == LOCK_FILENAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def run_one(run: Run, options: Options, trainer, environment, prefix: str) -> tuple[str, Any]:
    """One run under its folder's lock. Returns (action, record) with action "run", "skip" or
    "conflict"; ("locked", message); or ("interrupted", None)."""
    # Multi-process runs: process 0 alone holds the lock, clears the folder and writes the record;
    # all processes learn whether it got the lock, so none waits in a collective for the others.
    with contextlib.ExitStack() as stack:
        held_by_other: LockHeld | None = None
        if distributed.is_primary():
            try:
                stack.enter_context(RunLock(run.workdir))
            except LockHeld as e:
                held_by_other = e
        if distributed.any_process(held_by_other is not None):
            message = str(held_by_other or "run folder locked (see process 0)")
            if held_by_other is not None:
                print(f"{prefix}: locked: {message}", file=sys.stderr)
            return "locked", message
        return _run_locked(run, options, trainer, environment, prefix)


def _run_locked(run: Run, options: Options, trainer, environment, prefix: str):
    action, why = plan_action(run, force=options.force)  # again: the folder may have changed
    if action != "run":
        print(f"{prefix}: {action}: {why}", flush=True)
        return action, read_record(run.record_path)
    if options.force and distributed.is_primary():
        _clear_run_dir(run.workdir)
    distributed.barrier(f"run folder ready: {run.workdir}")
    print(f"{prefix}: {why}", flush=True)
    train_and_evaluate, Interrupted = trainer
    start = time.perf_counter()
    try:
        result = train_and_evaluate(
            run.config,
            seed=run.seed,
            cutoff=run.cutoff,
            workdir=run.workdir,
            progress=options.progress,
        )
    except (Interrupted, KeyboardInterrupt):
        return "interrupted", None
    except Exception as e:  # recorded as failed; the remaining runs still run
        if disk_full(e):  # not the run's fault: no failed record, its checkpoints resume it
            return _no_space(prefix, e, run.workdir)
        traceback.print_exc()
        hint = recovery_hint(run_argv(run) if options.per_run_argv else options.argv, run)
        print(f"{prefix}: failed: {type(e).__name__}: {e}\n{hint}", file=sys.stderr)
        failure = f"{type(e).__name__}: {e}\n{hint}"
        result = failed_result(failure, time.perf_counter() - start)
    record = build_record(run, result, environment)
    if distributed.is_primary():
        try:
            write_record(run.record_path, record)
        except OSError as e:  # the run's checkpoints are kept: rerunning writes the record
            if disk_full(e):
                return _no_space(prefix, e, run.workdir)
            print(f"{prefix}: could not write {run.record_path}: {e}", file=sys.stderr)
            return "no record", None
    print(f"{prefix}: {labelled_result(summary_row(run, action, record))}", flush=True)
    print(f"  record: {run.record_path}", flush=True)
    return action, record


def quiet_library_logs() -> None:
    """Leaves only errors in the absl logger (orbax's "Waiting for previous save to complete"
    and other notes would fill a run's output), and not those of a full disk, which the run's
    own one line reports."""
    logger = logging.getLogger("absl")
    logger.setLevel(logging.ERROR)
    if _not_disk_full not in logger.filters:
        logger.addFilter(_not_disk_full)


def _not_disk_full(record: logging.LogRecord) -> bool:
    return not disk_full(Exception(record.getMessage()))


def _no_space(prefix: str, error: BaseException, folder: Path) -> tuple[str, str]:
    message = disk_full_message(error, folder)
    print(f"{prefix}: stopped: {message}", file=sys.stderr, flush=True)
    return NO_SPACE, message


_WORKER_STATE: dict[str, Any] = {}


def run_in_worker(task: tuple[Run, Options, str]) -> tuple[str, Any]:
    """`run_one` in a worker process (experiments.parallel): the trainer, the environment and
    the compilation cache are set up once per worker."""
    run, options, prefix = task
    parallel.report_progress(f"{run.label}: starting")
    if not _WORKER_STATE:
        quiet_library_logs()
        _WORKER_STATE["trainer"] = load_trainer()
        _WORKER_STATE["environment"] = records.environment()
        cache = contextlib.ExitStack()
        cache.enter_context(compilation_cache(options.cache_dir))
        _WORKER_STATE["cache"] = cache  # held for the worker's life
    parallel.report_progress(f"{run.label}: starting (data, compilation)")
    return run_one(run, options, _WORKER_STATE["trainer"], _WORKER_STATE["environment"], prefix)


# ---------------------------------------------------------------------------------------------
# A plan


def execute(plan, options: Options, trainer, jobs: int = 1) -> int:
    """Carries out `plan` [(run, action, why)]; returns the exit code. `trainer` is
    (train_and_evaluate, Interrupted) for runs in this process (None when nothing trains)."""
    quiet_library_logs()
    outcomes: dict[int, tuple[str, Any]] = {}
    todo = []
    for i, (run, action, why) in enumerate(plan):
        if action == "run":
            todo.append(i)
        else:
            print(f"{_prefix(i, plan)}: {action}: {why}")
            outcomes[i] = (action, read_record(run.record_path))
    if jobs > 1 and len(todo) > 1:
        print(f"{len(todo)} runs, {min(jobs, len(todo))} at a time", flush=True)
        interrupted = _run_parallel(plan, todo, options, jobs, outcomes)
    else:
        with compilation_cache(options.cache_dir if todo else None):
            interrupted = _run_serial(plan, todo, options, trainer, outcomes)
    rows = [_row(plan[i][0], outcomes[i]) for i in sorted(outcomes)]
    print(format_table(SUMMARY_HEADER, rows))
    if interrupted:
        labels = ", ".join(plan[i][0].label for i in interrupted)
        print(
            f"\nInterrupted: {labels}. Checkpoints are kept in their run folders. Resume by "
            f"rerunning the same command:\n  {resume_command(options.argv, options.program)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    full = [record for action, record in outcomes.values() if action == NO_SPACE]
    if full:
        print(
            f"\nStopped: {full[0]}. Finished runs and checkpoints are kept; resume with the "
            f"same command:\n  {resume_command(options.argv, options.program)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    failed = sum(_failed(outcome) for outcome in outcomes.values())
    if failed:
        print(
            f"\n{failed} of {len(plan)} runs failed, conflicted or were locked; see above.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


def _prefix(i: int, plan) -> str:
    return f"[{i + 1}/{len(plan)}] {plan[i][0].label}"


def _row(run: Run, outcome: tuple[str, Any]) -> list[str]:
    action, record = outcome
    if action in ("locked", "interrupted", "not started", NO_SPACE, "no record"):  # no record
        return summary_row(run, action, None)
    return summary_row(run, action, record)


def _failed(outcome: tuple[str, Any]) -> bool:
    action, record = outcome
    if action in ("conflict", "locked", NO_SPACE, "no record"):
        return True
    return action == "run" and (record or {}).get("status") != "finished"


def _run_serial(plan, todo, options, trainer, outcomes) -> list[int]:
    """Runs in order in this process; stops at the first interruption. Returns the
    interrupted runs' indices."""
    environment = records.environment() if todo else None
    for i in todo:
        outcomes[i] = run_one(plan[i][0], options, trainer, environment, _prefix(i, plan))
        if outcomes[i][0] == "interrupted":
            return [i]
        if outcomes[i][0] == NO_SPACE:  # the next runs would fail the same way
            for j in todo:
                outcomes.setdefault(j, ("not started", None))
            break
    return []


def _run_parallel(plan, todo, options, jobs, outcomes) -> list[int]:
    """Runs in `jobs` worker processes. Returns the interrupted runs' indices."""
    tasks = [(plan[i][0], options, _prefix(i, plan)) for i in todo]
    # The workers' live lines and output, shown by one board (bars of several processes would mix).
    board = progress.Board(len(todo)) if options.progress else None
    try:
        for done in parallel.run_tasks(
            "experiments.execute:run_in_worker",
            tasks,
            jobs,
            watcher=board,
            should_stop=lambda: any(a == NO_SPACE for a, _ in outcomes.values()),
        ):
            outcomes[todo[done.index]] = _outcome(done, plan[todo[done.index]][0])
        for i in todo:  # left over after a full disk
            outcomes.setdefault(i, ("not started", None))
    except KeyboardInterrupt:
        for i in todo:
            outcomes.setdefault(i, ("not started", None))
    finally:
        if board is not None:
            board.close()
    return [i for i in todo if outcomes[i][0] in ("interrupted", "not started")]


def _outcome(done: parallel.Outcome, run: Run) -> tuple[str, Any]:
    if done.error is None:
        return done.value
    # The worker could not record the failure itself (its record write failed, say).
    print(f"{run.label}: worker error: {done.error}\n{done.value}", file=sys.stderr)
    return "run", {"status": "failed"}
