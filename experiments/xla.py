"""XLA CPU settings that must be in place before JAX starts its CPU backend.

`configure_cpu(threads=1)` appends to `XLA_FLAGS` (never overriding a flag the user already set):

- ``--xla_cpu_multi_thread_eigen=false`` when `threads == 1`: convolutions and dots run on the
  calling thread instead of Eigen's pool. XLA sizes its own intra-op pool from the CPUs the
  process may run on, so `threads=N` also pins the process to N of its allowed cores
  (`os.sched_setaffinity`; `pin=False` leaves the affinity alone). XLA has no flag for the pool
  size itself: ``intra_op_parallelism_threads=N`` in XLA_FLAGS is silently ignored.
- ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions) when `ynnpack=False`:
  XLA 0.10's CPU backend hands the kernel gradient of a convolution (a convolution with a
  28 x 28 window over the batch) to YNNPACK, which runs it several times slower than the
  forward convolution; without it the cpu-tier train step took 0.90x the CPU time (one
  measurement series in `benchmarks.train`'s docstring). Only the kernels change, not the maths:
  results agree to float32 rounding (`tests/test_models.py`).

Call it first thing in a program's entry point, before anything imports and uses JAX
(`python -m benchmarks.train` does). Once the backend has started the flags cannot change;
`configure_cpu` then raises so that a measurement is never silently taken under other settings.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

__all__ = ["backend_started", "configure_cpu", "cpu_flags"]

_YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="


def cpu_flags(threads: int = 1, *, ynnpack: bool = False) -> list[str]:
    """The XLA_FLAGS entries for `threads` intra-op threads (and YNNPACK off unless asked)."""
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1; got {threads}.")
    flags = []
    if int(threads) == 1:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    if not ynnpack:
        flags.append(_YNN_OFF)
    return flags


def backend_started() -> bool:
    """Whether JAX has already created its backends (XLA_FLAGS are read then, once)."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # no public API says whether backends exist

    return bool(xla_bridge.backends_are_initialized())


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def configure_cpu(threads: int = 1, *, ynnpack: bool = False, pin: bool = True) -> str:
    """Appends `cpu_flags(threads, ynnpack=...)` to XLA_FLAGS and, with `pin`, restricts the
    process to the first `threads` of its allowed cores; returns the resulting XLA_FLAGS.

    A flag already named in XLA_FLAGS is kept as the user set it. Raises RuntimeError if JAX's
    backend has started (the flags would be ignored).
    """
    wanted = cpu_flags(threads, ynnpack=ynnpack)
    current = os.environ.get("XLA_FLAGS", "").split()
    present = {_flag_name(f) for f in current}
    missing = [f for f in wanted if _flag_name(f) not in present]
    if missing and backend_started():
        raise RuntimeError(
            f"JAX's backend has already started, so XLA_FLAGS {missing} would be ignored. Call "
            "experiments.xla.configure_cpu() before the first JAX computation, or set XLA_FLAGS "
            "in the environment."
        )
    if pin and hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) > int(threads):
            if backend_started():
                raise RuntimeError(
                    "JAX's backend has already started with its thread pool sized to "
                    f"{len(allowed)} cores; call experiments.xla.configure_cpu() first."
                )
            os.sched_setaffinity(0, allowed[: int(threads)])
    os.environ["XLA_FLAGS"] = " ".join(current + missing)
    return os.environ["XLA_FLAGS"]


def accelerator_installed() -> bool:
    """Whether a JAX GPU or TPU plugin is installed (asked without starting JAX)."""
    names = {dist.metadata["Name"].lower().replace("_", "-") for dist in metadata.distributions()}
    return any(n.startswith(("jax-cuda", "jax-rocm", "libtpu")) for n in names)


def configure_process() -> None:
    """For the command line, before anything starts JAX: on a CPU machine this process trains on
    one core with one XLA thread, as each --jobs worker does, so a run's numbers do not depend
    on --jobs (experiments.xla; workers still get the cores the process started with)."""
    if not accelerator_installed() and not backend_started():
        configure_cpu(threads=1)
