"""Behaviour is kept: smoke-tier runs on real Fashion-MNIST end with the metrics that the trainer
gave before its refactors (stored in tests/data/reference_metrics.json), and the same computation
twice on one machine gives the same bits.

The stored numbers were produced by the code before a change, not by the code under test, on one
machine (an AMD EPYC, Zen 3, AVX2). XLA's CPU kernels pick instructions by the CPU they run on,
so another CPU rounds differently: the stored numbers are compared within `TOLERANCES`, and the
bitwise property is tested where it holds, two processes on the same machine.

The tolerances were measured (2026-12-06), as the largest difference from the stored numbers over
five other kernel sets: an Intel Xeon with AVX-512 and AMX at its default ISA, with XLA capped at
AVX2, AVX and SSE4.2 (`--xla_cpu_max_isa`), and on one thread:

    train_loss (values near 7)     2.7e-7   (relative 4e-8)      tolerance: relative 1e-5
    thresholds                     1.8e-7                        tolerance: absolute 1e-5
    mAP, bucket mAP                4.4e-6                        tolerance: absolute 1e-3
    per-label AP                   2.2e-5                        tolerance: absolute 1e-3
    precision, recall, F1, steps   0 (counts, equal)             tolerance: absolute 1e-3 / exact

So the guard keeps its teeth: scaling the loss by 1 + 1e-3 moves the first train_loss by 7e-3
(700 times its tolerance), and the test fails (`test_a_perturbed_loss_fails_the_guard`). AP is
a step function of the scores' order, so its tolerance allows one near-tie to swap. Should a
change mean to alter the numbers, regenerate them with `python -m tests.test_reference_metrics`
and say why in the commit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "data" / "reference_metrics.json"
CONFIGS = ("catalog_none", "catalog_proposed", "catalog_asymmetric")
SEED, CUTOFF = 0, 6

# (pattern on the leaf's path, relative tolerance, absolute tolerance); the first match applies.
TOLERANCES = (
    (r"train_loss$", 1e-5, 0.0),
    (r"thresholds\[\d+\]$", 0.0, 1e-5),
    (r".*", 0.0, 1e-3),  # mAP, AP, F1, precision, recall: fractions in [0, 1]
)


def run_metrics(name: str, cache_dir: Path, workdir: Path) -> dict:
    """The metrics of one smoke-tier run (seed 0, cut-off 6): what a record's numbers hold,
    through JSON as a record stores them (tuples become lists, NaN stays NaN)."""
    from experiments.configs import get_config
    from experiments.train import train_and_evaluate

    config = get_config(name, tier="smoke")
    config.data.cache_dir = str(cache_dir)
    record = train_and_evaluate(config, seed=SEED, cutoff=CUTOFF, workdir=workdir, progress=False)
    val, test = record["val"], record["test"]
    metrics = {
        "status": record["status"],
        "steps": record["steps"],
        "curves": [{k: v for k, v in c.items() if k != "images_per_s"} for c in record["curves"]],
        "val": {k: val[k] for k in ("mAP", "buckets", "per_label", "best_epoch", "best_step")},
        "test": {k: test[k] for k in ("mAP", "buckets", "per_label", "thresholds")},
    }
    return json.loads(json.dumps(metrics))


def _leaves(tree: Any, path: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key in tree for k, v in _leaves(tree[key], f"{path}.{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, x in enumerate(tree) for k, v in _leaves(x, f"{path}[{i}]").items()}
    return {path: tree}


def _tolerance(path: str) -> tuple[float, float]:
    return next((rel, abs_) for pattern, rel, abs_ in TOLERANCES if re.search(pattern, path))


def metric_differences(got: Any, expected: Any) -> list[str]:
    """Every leaf where `got` is not `expected`: structure, ints, strings and None exactly,
    floats within `TOLERANCES` (NaN only matches NaN)."""
    got_leaves, expected_leaves = _leaves(got), _leaves(expected)
    problems = [
        f"{p}: missing" if p not in got_leaves else f"{p}: unexpected"
        for p in sorted(set(got_leaves) ^ set(expected_leaves))
    ]
    for path in sorted(set(got_leaves) & set(expected_leaves)):
        a, b = got_leaves[path], expected_leaves[path]
        if isinstance(a, float) and isinstance(b, float):
            rel, abs_ = _tolerance(path)
            if math.isnan(a) or math.isnan(b):
                same = math.isnan(a) and math.isnan(b)
            else:
                same = math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
        else:
            same = type(a) is type(b) and a == b
        if not same:
            problems.append(f"{path}: got {a!r}, expected {b!r}")
    return problems


def _run_in_subprocess(name: str, tmp_path: Path, tag: str, xla_flags: str = "") -> dict:
    """`run_metrics` in a fresh Python process (its own JAX backend and XLA_FLAGS)."""
    out = tmp_path / f"{tag}.json"
    code = (
        "import json, sys; from pathlib import Path;"
        "from tests.test_reference_metrics import run_metrics;"
        f"m = run_metrics({name!r}, Path(sys.argv[1]) / 'cache', Path(sys.argv[1]) / {tag!r});"
        "Path(sys.argv[2]).write_text(json.dumps(m))"
    )
    env = {**os.environ, "XLA_FLAGS": xla_flags}
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(out)], cwd=REPO, env=env, check=True
    )
    return json.loads(out.read_text())


# --------------------------------------------------------------------------------------------


def test_metric_differences_checks_structure_types_and_tolerances():
    expected = {"curves": [{"train_loss": 7.0}], "test": {"mAP": 0.5, "thresholds": [0.25]}}
    assert metric_differences(expected, expected) == []
    close = {"curves": [{"train_loss": 7.0 * (1 + 5e-6)}], "test": {"mAP": 0.5009}}
    close["test"]["thresholds"] = [0.25 + 5e-6]
    assert metric_differences(close, expected) == []
    far = {"curves": [{"train_loss": 7.0 * (1 + 1e-3)}], "test": {"mAP": 0.502}}
    far["test"]["thresholds"] = [0.2501]
    assert len(metric_differences(far, expected)) == 3
    assert metric_differences({"a": 1}, {"a": 1.0}) == [".a: got 1, expected 1.0"]
    assert metric_differences({"a": [1, 2]}, {"a": [1]}) == [".a[1]: unexpected"]
    assert metric_differences({"a": float("nan")}, {"a": float("nan")}) == []
    assert metric_differences({"a": float("nan")}, {"a": 0.5}) != []


@pytest.mark.usefixtures("fashion_mnist_installed")
@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_run_has_the_stored_reference_metrics(name, tmp_path):
    expected = json.loads(REFERENCE.read_text())[name]
    got = run_metrics(name, tmp_path / "cache", tmp_path / "run")
    assert metric_differences(got, expected) == []


@pytest.mark.usefixtures("fashion_mnist_installed")
def test_same_machine_two_processes_bitwise_and_other_kernels_within_tolerance(tmp_path):
    """Bitwise where it holds (the same computation in two processes), and the tolerances cover
    the drift of other kernels on this machine (XLA capped at SSE4.2)."""
    name = "catalog_proposed"
    first = _run_in_subprocess(name, tmp_path, "first")
    second = _run_in_subprocess(name, tmp_path, "second")
    assert first == second  # exact: the same CPU, threads, flags and packages
    older = _run_in_subprocess(name, tmp_path, "sse", xla_flags="--xla_cpu_max_isa=SSE4_2")
    expected = json.loads(REFERENCE.read_text())[name]
    assert metric_differences(older, first) == []
    assert metric_differences(older, expected) == []


@pytest.mark.usefixtures("fashion_mnist_installed")
def test_a_perturbed_loss_fails_the_guard(tmp_path, monkeypatch):
    """The guard's teeth: the training loss scaled by 1 + 1e-3 is caught."""
    from experiments import steps

    make_loss_fn = steps.make_loss_fn

    def perturbed(*args, **kwargs):
        objective = make_loss_fn(*args, **kwargs)
        fn = objective.fn
        return dataclasses.replace(objective, fn=lambda *a: fn(*a) * (1 + 1e-3))

    monkeypatch.setattr(steps, "make_loss_fn", perturbed)
    steps._COMPILED.clear()  # a step compiled with the true loss must not be reused
    try:
        got = run_metrics("catalog_none", tmp_path / "cache", tmp_path / "run")
    finally:
        steps._COMPILED.clear()
    problems = metric_differences(got, json.loads(REFERENCE.read_text())["catalog_none"])
    assert any("train_loss" in p for p in problems), problems


if __name__ == "__main__":  # regenerate the stored metrics (see the module docstring)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = {n: run_metrics(n, Path(tmp) / "cache", Path(tmp) / n) for n in CONFIGS}
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE}", file=sys.stderr)
