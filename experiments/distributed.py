"""Multi-process runs: joining JAX's distributed runtime and keeping side effects on one process.

A run over several processes (one per host, or one per GPU) is the same program on every
process: each loads the same data, builds the same global batch, places the rows of its own
devices (`jax.make_array_from_process_local_data` in `experiments.steps.shard_batch`) and takes
part in every jitted step, whose collectives (gradients, BatchNorm statistics, replicated
evaluation scores) cross process boundaries. What differs is what touches the outside world:

- process 0 alone writes records, the run-directory lock and plots, deletes run folders
  (`--force`) and prints (the others' stdout goes to /dev/null; their errors still reach
  stderr);
- every process writes its own shards of each checkpoint through orbax, which coordinates the
  processes itself once `jax.distributed` is initialised (so the output folder must be one
  shared filesystem, e.g. NFS, for all processes);
- a stop request (SIGINT/SIGTERM) seen by any process stops all of them at the same step
  (`any_process`), so that they save the same checkpoint and none waits in a collective for a
  process that has left.

`initialize_from_args` joins a run when asked with `--coordinator HOST:PORT --num-processes N
--process-id I`, or when JAX's own cluster detection recognises the environment (SLURM under
`srun`, Open MPI, Kubernetes, Cloud TPU); otherwise the run is an ordinary single process. It
must run before anything else touches JAX's backends.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from typing import Any

__all__ = [
    "add_arguments",
    "agree",
    "any_process",
    "barrier",
    "detected_cluster",
    "initialize",
    "initialize_from_args",
    "is_primary",
    "process_count",
]

_state: dict[str, Any] = {"initialized": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--coordinator HOST:PORT --num-processes N --process-id I` on `parser`."""
    group = parser.add_argument_group(
        "multi-process runs",
        "Join a run over several processes (hosts or GPUs). Under SLURM (srun) and other "
        "clusters that JAX detects, these are read from the environment; give all three to "
        "start processes by hand.",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, 0 .. N-1")


def detected_cluster() -> str | None:
    """The name of the cluster environment JAX's auto-detection recognises, or None.

    Opt-in environments (mpi4py) are left out, as `jax.distributed.initialize()` leaves them.
    """
    try:
        from jax._src.clusters import ClusterEnv
    except ImportError:  # JAX moved its cluster registry: only explicit arguments then
        return None
    for env in ClusterEnv._cluster_types:
        if getattr(env, "opt_in_only_method", False):
            continue
        try:
            present = env.is_env_present()
        except Exception:  # a detector that cannot run here (missing package, no metadata)
            present = False
        if present:
            return env.__name__
    return None


def _check_explicit(coordinator: str | None, num_processes: int | None, process_id: int | None):
    given = {
        "--coordinator": coordinator,
        "--num-processes": num_processes,
        "--process-id": process_id,
    }
    missing = [name for name, value in given.items() if value is None]
    if missing and len(missing) < len(given):
        raise ValueError(
            f"{', '.join(missing)} missing: a multi-process run by hand needs all of "
            "--coordinator HOST:PORT --num-processes N --process-id I (the same coordinator and "
            "N on every process, I = 0 .. N-1)."
        )
    if missing:
        return False
    host, sep, port = coordinator.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"--coordinator expects HOST:PORT of process 0, e.g. 10.0.0.1:12345; got "
            f"{coordinator!r}."
        )
    if num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1; got {num_processes}.")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process-id must be in 0 .. {num_processes - 1} (--num-processes "
            f"{num_processes}); got {process_id}."
        )
    return True


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = 300,
) -> bool:
    """Joins a multi-process run (explicit arguments, or the detected cluster); True if joined.

    With none of the three arguments and no detected cluster this does nothing (one process).
    On processes other than 0, stdout is sent to /dev/null and Python logging raised to
    WARNING, so progress and logs come from process 0 alone. Idempotent.
    """
    if _state["initialized"]:
        return True
    explicit = _check_explicit(coordinator, num_processes, process_id)
    if not explicit and detected_cluster() is None:
        return False

    import jax

    # CPU processes exchange collectives over gloo (TCP); accelerators use their own (NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_s,
        )
    else:
        jax.distributed.initialize(initialization_timeout=timeout_s)
    _state["initialized"] = True
    if jax.process_index() != 0:
        sys.stdout.flush()
        sys.stdout = open(os.devnull, "w")
        logging.getLogger().setLevel(logging.WARNING)
    return True


def initialize_from_args(args: argparse.Namespace) -> bool:
    """`initialize` with the `add_arguments` flags of `args`."""
    return initialize(args.coordinator, args.num_processes, args.process_id)


def _joined() -> bool:
    """Whether this process is part of a distributed run (by `initialize` or by a direct
    `jax.distributed.initialize()`); never starts JAX's backends itself."""
    if _state["initialized"]:
        return True
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def process_count() -> int:
    """Processes in the run (1 unless one was joined)."""
    if not _joined():
        return 1
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """True on process 0, which alone writes records, locks and plots (always True alone)."""
    if not _joined():
        return True
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (no-op with one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is True on any (one small all-gather; alone: `flag`)."""
    if process_count() == 1:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(bool(flag), np.int32))
    return bool(np.any(flags))


def agree(text: str, what: str) -> None:
    """Raises on every process unless `text` is the same on all of them.

    For what each process decides from its own view of the filesystem (which runs to train,
    which to skip): processes that disagreed would wait forever in each other's collectives.
    """
    if process_count() == 1:
        return
    import numpy as np
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int32)
    digests = np.asarray(multihost_utils.process_allgather(digest))  # [processes, 2]
    if not (digests == digests[0]).all():
        raise RuntimeError(
            f"The processes of this run disagree on {what}: they must see the same files (the "
            "output folder on one shared filesystem) and get the same arguments."
        )


def agree_on_stop(reason: str | None) -> str | None:
    """The stop reason of this process, or of another when only another was asked to stop.

    Called at every step boundary: a signal reaches each process at a different step (or only
    one process), but all must save the same step's checkpoint and stop together.
    """
    if not any_process(reason is not None):
        return None
    return reason or "stop requested on another process"
