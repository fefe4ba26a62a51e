"""The prepared GPU check (`python -m benchmarks.gpu_check`): its smoke mode runs every part on
the CPU at tiny sizes, and its verdicts fail where a part failed."""

from __future__ import annotations

import json
import math
import os

import pytest

from benchmarks import gpu_check


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_installed")
def test_smoke_mode_runs_every_check_on_the_cpu_and_writes_json_and_markdown(tmp_path):
    assert gpu_check.main(["--smoke", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    # On the CPU every check is required, identical metrics included.
    assert result["passed"] and all(ok and required for _, ok, _, required in result["checks"])
    assert len(result["checks"]) == 2 + 3 * 2  # devices, timings; 3 per slice, 2 slices
    rows = result["steps"]["train_step"]
    assert {(r["precision"], r["input_pipeline"]) for r in rows} == {
        (p, i) for p in ("float32", "bfloat16") for i in (False, True)
    }
    assert all(math.isfinite(r["step_s"]) and r["step_s"] > 0 for r in rows)
    # Each slice adds its flags to the XLA_FLAGS it inherits (CI may cap the ISA, say).
    inherited = os.environ.get("XLA_FLAGS", "")
    flags = {s["xla_flags"] for s in result["slices"].values()}
    assert flags == {inherited, f"{inherited} {gpu_check.DETERMINISTIC_FLAG}".strip()}
    for s in result["slices"].values():
        # The gpu tier's record names its precision; the run was interrupted, then resumed.
        assert s["precision"] == "bfloat16" and s["interrupted"] and s["checkpoints"]
        assert s["repeat_identical"] and s["resume_identical"]
    summary = (tmp_path / "gpu_check.md").read_text()
    assert summary.startswith("## GPU check (smoke")
    assert "| bfloat16 | in the loop | 16 | 28 |" in summary


def test_without_an_accelerator_the_real_check_stops_and_names_the_cuda_install(
    tmp_path, monkeypatch, capsys
):
    calls = []

    def child(kind, smoke, workdir, flags=""):
        calls.append(kind)
        return {"platform": "cpu", "accelerator": False, "devices": ["cpu:0"]}

    monkeypatch.setattr(gpu_check, "run_child", child)
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    assert calls == ["steps"]  # no slice at gpu sizes on a CPU
    summary = (tmp_path / "gpu_check.md").read_text()
    assert "| JAX sees the accelerator | **no** | JAX sees no accelerator (cpu): " in summary
    assert gpu_check.CUDA_INSTALL in summary and "jax[cuda" in gpu_check.CUDA_INSTALL


def test_a_failed_or_differing_part_fails_its_check():
    steps = {"platform": "gpu", "accelerator": True, "train_step": [{}] * 4}
    good = {
        "exit_code": 0,
        "record": True,
        "checkpoints": [5, 10],
        "precision": "bfloat16",
        "repeat_identical": True,
        "interrupted": True,
        "resume_identical": True,
    }
    slices = {
        "defaults": {**good, "repeat_identical": False, "repeat_test_mAP_difference": 0.002},
        "deterministic": {"error": "ran past its 140 s limit"},
        "resumed": {**good, "interrupted": False, "xla_flags": gpu_check.DETERMINISTIC_FLAG},
    }
    checks = {c: (ok, req) for c, ok, _, req in gpu_check.verdicts(steps, slices, smoke=False)}
    assert checks["JAX sees the accelerator"] == (True, True)
    assert checks["record and checkpoints (defaults)"] == (True, True)
    # With XLA's GPU defaults identical metrics are measured, not required.
    assert checks["two identical runs give identical metrics (defaults)"] == (False, False)
    assert checks["catalog slice (deterministic)"] == (False, True)
    assert checks["interrupted run resumed to identical metrics (resumed)"] == (False, True)
    assert checks["interrupted run resumed to identical metrics (defaults)"] == (True, False)
