"""What machine computed a run: the CPU identity that decides XLA's kernels, the threads, the GPU.

XLA's CPU backend (Eigen, XNNPACK/YNNPACK and its own code generation) picks instructions by the
CPU it runs on, so the same config and seed give bitwise-equal numbers only on the same CPU type,
thread count and package versions. A record therefore stores `cpu_identity()` (and, on a GPU,
`gpu_identity()`), and the report says when one table mixes CPU types.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["ISA_FLAGS", "cpu_identity", "gpu_identity", "isa_extensions", "parse_cpuinfo"]

# The instruction-set extensions that change which kernels XLA's CPU backend emits or calls
# (x86: SSE4.2 .. AVX-512 and AMX; aarch64: NEON, SVE, the dot-product and bfloat16 units).
# Everything else in /proc/cpuinfo (power management, virtualisation) leaves the numbers alone.
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)

_CPUINFO = Path("/proc/cpuinfo")


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor block of a /proc/cpuinfo text as {key: value}."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def isa_extensions(fields: dict[str, str]) -> list[str]:
    """The `ISA_FLAGS` present in a parsed cpuinfo block (x86 'flags', aarch64 'Features')."""
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    return [flag for flag in ISA_FLAGS if flag in present]


def _cpu_model(fields: dict[str, str]) -> str:
    model = fields.get("model name") or fields.get("Hardware") or ""
    if not model and "CPU implementer" in fields:  # aarch64 names its core by numbers
        model = f"implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return re.sub(r"\s+", " ", model).strip() or platform.processor() or "unknown"


def _x86_family(fields: dict[str, str]) -> str | None:
    if "cpu family" not in fields:
        return None
    return (
        f"{fields.get('vendor_id', '?')} family {fields['cpu family']} "
        f"model {fields.get('model', '?')}"
    )


def cpu_identity(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU a computation ran on: model, family, the ISA extensions XLA's kernels depend on,
    the cores this process may use and `XLA_FLAGS` (which can cap the ISA or the threads)."""
    if cpuinfo is None:
        try:
            cpuinfo = _CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields = parse_cpuinfo(cpuinfo)
    try:
        threads = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        threads = os.cpu_count() or 1
    return {
        "cpu_model": _cpu_model(fields),
        "cpu_family": _x86_family(fields),
        "isa": isa_extensions(fields),
        "cpu_threads": threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def gpu_identity(devices: list[Any]) -> dict[str, Any] | None:
    """Name, driver and CUDA versions of the accelerators in `devices` (JAX devices), or None on
    a CPU-only run. The driver comes from nvidia-smi when it is on the PATH."""
    gpus = [d for d in devices if getattr(d, "platform", "cpu") != "cpu"]
    if not gpus:
        return None
    info: dict[str, Any] = {
        "names": sorted({str(getattr(d, "device_kind", d)) for d in gpus}),
        "platform": gpus[0].platform,
    }
    try:
        from jax._src.lib import cuda_versions  # no public API reports the CUDA versions

        if cuda_versions is not None:
            info["cuda_runtime"] = cuda_versions.cuda_runtime_get_version()
            info["cuda_driver"] = cuda_versions.cuda_driver_get_version()
            info["cudnn"] = cuda_versions.cudnn_get_version()
    except Exception:  # a ROCm or other build: versions stay unknown rather than fail a run
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        info["driver_version"] = out.split()[0] if out.split() else None
    except (OSError, subprocess.SubprocessError):
        info["driver_version"] = None
    return info
