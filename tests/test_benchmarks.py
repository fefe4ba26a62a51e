"""The loss benchmark's code path on tiny shapes: structure of its JSON, never its timings."""

import json

import numpy as np
import pytest

from benchmarks import common
from benchmarks import losses as bench

ALL_LOSSES = {
    "optax_bce",
    "floor_multiply",
    "weighted_bce",
    "weighted_bce_no_weights",
    "sigmoid_focal",
    "asymmetric",
    "distribution_balanced",
    "logit_adjusted_bce",
}


def test_loss_benchmark_writes_complete_json(tmp_path, capsys, monkeypatch):
    out = tmp_path / "nested" / "losses.json"
    monkeypatch.setattr(bench, "GOAL_SHAPE", (8, 4))  # the goal's code path at a tiny shape
    argv = ["--shapes", "8x4", "--dtypes", "float32,bfloat16", "--repeats", "1"]
    result = bench.main([*argv, "--warmup", "0", "--no-torch", "--no-progress", "--out", str(out)])

    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result, allow_nan=True))
    assert written["settings"]["shapes"] == [[8, 4]]
    assert written["settings"]["repeats"] == 1
    assert written["torch"]["available"] is False

    rows = written["results"]
    seen = {(r["loss"], r["batch"], r["num_labels"], r["dtype"]) for r in rows}
    expected = {
        (loss, b, c, d)
        for loss in ALL_LOSSES
        for (b, c) in [(8, 4)]
        for d in ["float32", "bfloat16"]
    }
    assert seen == expected and len(rows) == len(expected)
    for r in rows:
        assert len(r["times_s"]) == 1 and r["median_s"] > 0
        assert r["ratio_to_torch"] is None
        if r["loss"] == "optax_bce":
            assert r["ratio_to_optax_bce"] == pytest.approx(1.0)

    goals = written["goals"]
    assert {g["kind"] for g in goals} == {"no_slower", "one_transcendental", "within"}
    no_slower = [g for g in goals if g["kind"] == "no_slower"]
    assert {(g["dtype"], tuple(g["shape"])) for g in no_slower} == {
        ("float32", (8, 4)),
        ("bfloat16", (8, 4)),
    }
    # The one-transcendental goal: weighted BCE <= 0.85x optax BCE, float32 at the goal shape.
    (one,) = [g for g in goals if g["kind"] == "one_transcendental"]
    weighted = next(r for r in rows if r["loss"] == "weighted_bce" and r["dtype"] == "float32")
    assert (one["dtype"], tuple(one["shape"]), one["limit"]) == ("float32", (8, 4), 0.85)
    assert one["ratio"] == weighted["ratio_to_optax_bce"]
    assert one["passed"] == (weighted["ratio_to_optax_bce"] <= 0.85)
    within = [g for g in goals if g["kind"] == "within"]
    assert len(within) == 6 * 2  # six ltweights cases x two dtypes
    assert all(isinstance(g["passed"], bool) for g in goals)

    printed = capsys.readouterr().out
    assert "| shape | dtype | loss |" in printed and "weighted_bce" in printed
    assert "<= 0.85x optax |" in printed.splitlines()[0]
    verdict = "pass" if one["passed"] else "FAIL"
    assert f"(one transcendental), float32: ratio {one['ratio']:.3f} -> {verdict}" in printed
    weighted_line = next(
        line for line in printed.splitlines() if "| float32 | weighted_bce |" in line
    )
    assert weighted_line.rstrip(" |").endswith(verdict)


def test_loss_benchmark_goal_shape_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "GOAL_SHAPE", (6, 3))
    argv = ["--goal-shape-only", "--dtypes", "float32", "--repeats", "1", "--warmup", "0"]
    result = bench.main([*argv, "--no-torch", "--no-progress", "--out", str(tmp_path / "o.json")])
    assert result["settings"]["shapes"] == [[6, 3]]
    assert {(r["batch"], r["num_labels"]) for r in result["results"]} == {(6, 3)}
    with pytest.raises(SystemExit):
        bench.main(["--goal-shape-only", "--shapes", "8x4"])
    assert "--goal-shape-only cannot be combined" in capsys.readouterr().err


def test_loss_benchmark_cases_compute_finite_values_and_gradients():
    problem = bench.make_problem(16, 5, "bfloat16", seed=1)
    labels = np.asarray(problem["labels"], np.float32)
    assert labels.any(axis=0).all() and (labels == 0).any(axis=0).all()
    for name, (loss, extra) in bench.loss_cases(problem).items():
        value, grad = bench.forward_backward(loss)(problem["logits"], problem["labels"], *extra)
        assert np.isfinite(float(value)), name
        assert grad.shape == (16, 5) and np.isfinite(np.asarray(grad, np.float32)).all(), name


def test_loss_benchmark_torch_case_when_installed():
    pytest.importorskip("torch")
    problem = bench.make_problem(8, 3, "float32")
    step, args = bench.torch_case(problem, "float32")
    value = step(*args)
    # Unweighted-negative BCE with pos_weight, computed independently in NumPy.
    z, y, w = problem["logits_np"], problem["labels_np"], problem["pos_weight_np"]
    expected = np.mean(w * y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
    assert value == pytest.approx(expected, rel=1e-5)


def test_time_fn_and_table_helpers():
    calls = []
    assert common.time_fn(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5
    with pytest.raises(ValueError, match="repeats >= 1"):
        common.time_interleaved({"f": (print, ())}, repeats=0)
    table = common.markdown_table(["a", "b"], [[1.23456, None]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | - |"]


def test_bad_shapes_and_dtypes_are_rejected(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "8by4"])
    with pytest.raises(SystemExit):
        bench.main(["--dtypes", "float16"])
    assert "BATCHxLABELS" in capsys.readouterr().err
