"""A record names the machine that computed it: CPU model, the ISA extensions that pick XLA's
kernels, threads and XLA_FLAGS (experiments.hardware), and the report says when a table mixes
CPU types."""

from __future__ import annotations

import pytest

from experiments import hardware, records, report
from experiments.report.tables import compute_section, cpu_type, seed_ranges
from tests.test_report import make_record, write_record

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13  64-Core Processor
flags\t\t: fpu sse sse2 sse4_1 sse4_2 avx avx2 fma f16c vmx

processor\t: 1
model name\t: another core that must not be read
"""

AARCH64 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sha2 asimddp sve sve2 bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd4f
"""


def test_x86_cpuinfo_gives_model_family_and_the_isa_extensions_in_order():
    identity = hardware.cpu_identity(X86)
    assert identity["cpu_model"] == "AMD EPYC 7B13 64-Core Processor"  # spaces collapsed
    assert identity["cpu_family"] == "AuthenticAMD family 25 model 1"
    # Only the kernel-relevant flags (vmx is not), in ISA_FLAGS order, from the first block.
    assert identity["isa"] == ["sse4_2", "avx", "avx2", "fma", "f16c"]
    assert identity["cpu_threads"] >= 1


def test_aarch64_cpuinfo_names_the_core_by_its_numbers():
    identity = hardware.cpu_identity(AARCH64)
    assert identity["cpu_model"] == "implementer 0x41 part 0xd4f"
    assert identity["cpu_family"] is None
    assert identity["isa"] == ["asimd", "asimddp", "sve", "sve2", "bf16", "i8mm"]


def test_cpu_identity_records_xla_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX")
    assert hardware.cpu_identity(X86)["xla_flags"] == "--xla_cpu_max_isa=AVX"


def test_this_machines_environment_carries_cpu_and_no_gpu_on_the_cpu():
    env = records.environment()
    assert set(env["cpu"]) == {"cpu_model", "cpu_family", "isa", "cpu_threads", "xla_flags"}
    assert isinstance(env["cpu"]["isa"], list) and env["gpu"] is None


class FakeGpu:
    platform = "gpu"
    device_kind = "NVIDIA H100 80GB HBM3"


def test_gpu_identity_names_the_devices():
    assert hardware.gpu_identity([]) is None
    info = hardware.gpu_identity([FakeGpu(), FakeGpu()])
    assert info["names"] == ["NVIDIA H100 80GB HBM3"] and info["platform"] == "gpu"
    assert "driver_version" in info


@pytest.mark.parametrize(
    "cpu, expected",
    [
        (None, "not recorded"),
        (
            {"cpu_model": "AMD EPYC", "isa": ["sse4_2", "avx", "avx2", "fma"], "cpu_threads": 1},
            "AMD EPYC (avx2, 1 thread)",
        ),
        (
            {"cpu_model": "Xeon", "isa": ["avx", "avx2", "avx512f"], "cpu_threads": 2},
            "Xeon (avx512f, 2 threads)",
        ),
    ],
)
def test_report_names_a_records_cpu_type(cpu, expected):
    environment = {} if cpu is None else {"cpu": cpu}
    assert cpu_type({"environment": environment}) == expected


def test_report_flags_a_table_whose_records_come_from_different_cpu_types(tmp_path):
    amd = {"cpu_model": "AMD EPYC", "isa": ["avx2"], "cpu_threads": 1}
    xeon = {"cpu_model": "Xeon", "isa": ["avx2", "avx512f"], "cpu_threads": 1}
    for task, cpus in (("catalog", (amd, xeon)), ("catalog_step", (amd, amd))):
        for seed, cpu in enumerate(cpus):
            record = make_record(task=task, seed=seed)
            record["environment"]["cpu"] = cpu
            write_record(tmp_path / "cpu", record)
    runs = report.read_runs(tmp_path)
    lines = compute_section(runs, report.group_runs(runs))
    assert (
        "- CPU types: AMD EPYC (avx2, 1 thread): 3 runs; Xeon (avx512f, 1 thread): 1 runs." in lines
    )
    mixed = [line for line in lines if "mixes" in line]
    assert len(mixed) == 1 and mixed[0].startswith("  - catalog (cpu tier) mixes 2 CPU types")
    # Seed 0 on the AMD, seed 1 on the Xeon: each replicate on one machine.
    assert mixed[0].endswith(
        "Each replicate's runs share one CPU type as recorded, so no paired difference crosses "
        "them (seeds 0: AMD EPYC (avx2, 1 thread); seeds 1: Xeon (avx512f, 1 thread))."
    )


def test_report_names_replicates_whose_runs_crossed_cpu_types(tmp_path):
    amd = {"cpu_model": "AMD EPYC", "isa": ["avx2"], "cpu_threads": 1}
    xeon = {"cpu_model": "Xeon", "isa": ["avx2", "avx512f"], "cpu_threads": 1}
    # Seed 1's `none` on one machine and its `inverse` on the other: a paired difference of
    # seed 1 compares two CPU types.
    for seed, variant, cpu in ((0, "none", amd), (0, "inverse", amd), (1, "none", amd),
                               (1, "inverse", xeon), (2, "none", xeon)):  # fmt: skip
        record = make_record(seed=seed, variant=variant)
        record["environment"]["cpu"] = cpu
        write_record(tmp_path / "cpu", record)
    runs = report.read_runs(tmp_path)
    (mixed,) = [line for line in compute_section(runs, report.group_runs(runs)) if "mixes" in line]
    assert mixed.endswith(
        "Replicates (seeds) 1 ran on more than one CPU type, so their paired differences include "
        "that drift."
    )


@pytest.mark.parametrize(
    ("seeds", "expected"),
    [([0], "0"), ([4, 0, 1, 2], "0-2, 4"), ([5, 6, 7, 8, 9, 10, 11], "5-11"), ([1, 3], "1, 3")],
)
def test_seed_ranges_shorten_consecutive_seeds(seeds, expected):
    assert seed_ranges(seeds) == expected
