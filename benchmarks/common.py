"""Small helpers shared by the benchmarks: timing, markdown tables and atomic JSON output.

Benchmarks report ratios against a reference measured in the same run, so that a loaded or
different machine changes the absolute times but not the comparison. Use `time_interleaved` for
such comparisons: it runs every candidate once per round, so a burst of background load hits all
of them alike, and it reports the median over rounds.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from experiments.atomic import atomic_write_json
from experiments.records import environment

__all__ = [
    "block",
    "environment",
    "markdown_table",
    "time_fn",
    "time_interleaved",
    "write_json",
]


def block(result: Any) -> Any:
    """Waits until every array in `result` (any pytree) is computed; JAX dispatch is async."""
    return jax.block_until_ready(result)


def _time_once(fn: Callable[..., Any], args: Sequence[Any]) -> float:
    start = time.perf_counter()
    block(fn(*args))
    return time.perf_counter() - start


def time_fn(fn: Callable[..., Any], *args: Any, repeats: int = 20, warmup: int = 2) -> float:
    """Median wall time in seconds of `fn(*args)`, blocking on its result each call.

    The `warmup` calls (compilation, caches) are not timed. `fn` may return JAX arrays, NumPy
    arrays or anything else; JAX results are waited for.
    """
    return statistics.median(time_interleaved({"fn": (fn, args)}, repeats, warmup)["fn"])


def time_interleaved(
    fns: Mapping[str, tuple[Callable[..., Any], Sequence[Any]]],
    repeats: int = 20,
    warmup: int = 2,
) -> dict[str, list[float]]:
    """Times several functions round-robin: `repeats` rounds, each calling every function once.

    Args:
      fns: name -> (function, positional args).
      repeats: timed rounds (>= 1).
      warmup: untimed calls of each function first (compilation).

    Returns:
      name -> list of `repeats` wall times in seconds (take the median).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0; got {repeats=}, {warmup=}.")
    for fn, args in fns.values():
        for _ in range(warmup):
            block(fn(*args))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, args) in fns.items():
            times[name].append(_time_once(fn, args))
    return times


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed with 3 significant digits, None as '-'."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as JSON atomically (readers never see a half-written file)."""
    atomic_write_json(path, obj)
