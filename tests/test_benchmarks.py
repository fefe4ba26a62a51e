"""The loss benchmark's code path on tiny shapes: structure of its JSON, never its timings."""

import json
import os

import numpy as np
import pytest

from benchmarks import common
from benchmarks import losses as bench
from experiments.configs import get_config

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


# ---------------------------------------------------------------------------------------------
# benchmarks.train: the PyTorch mirror of the Flax ResNets and the table's code path
# ---------------------------------------------------------------------------------------------


def _flax_num_params(model_config, num_labels, channels, image_size):
    import jax
    import jax.numpy as jnp

    from experiments.models import create_model

    model = create_model(model_config, num_labels)
    x = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize(
    "model_config",
    [
        {"stage_sizes": [1, 1, 1], "block": "basic", "num_filters": 8, "small_input": True},
        {"name": "resnet18", "num_filters": 64, "small_input": True},
        {"stage_sizes": [1, 2], "block": "bottleneck", "num_filters": 4, "small_input": False},
    ],
)
def test_torch_resnet_has_the_flax_models_parameter_count(model_config):
    pytest.importorskip("torch")
    from benchmarks import train as train_bench

    for channels in (1, 3):
        net = train_bench.torch_resnet(model_config, 10, channels)
        expected = _flax_num_params(model_config, 10, channels, 28)
        assert train_bench.torch_num_params(net) == expected


def test_torch_train_step_computes_the_weighted_bce_and_learns():
    torch = pytest.importorskip("torch")
    from benchmarks import train as train_bench
    from experiments.configs import get_config

    config = get_config("catalog_inverse", tier="cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    labels = (rng.random((16, 10)) < 0.3).astype(np.uint8)
    pos_weight = rng.uniform(1, 5, 10).astype(np.float32)
    torch.manual_seed(0)
    # neg_weight != 1 takes the explicit formula; == 1 PyTorch's fused BCEWithLogitsLoss: the
    # first loss of both (same seed, same initial net) must equal the NumPy weighted BCE.
    losses = []
    for neg_weight in (np.full(10, 2.0, np.float32), np.ones(10, np.float32)):
        torch.manual_seed(0)
        step = train_bench.torch_train_step(config, images, labels, pos_weight, neg_weight)
        torch.manual_seed(0)
        net = train_bench.torch_resnet(config.model.to_dict(), 10).train()
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * (2 / 255) - 1
        z = net(x).detach().numpy().astype(np.float64)
        y = labels.astype(np.float64)
        expected = np.mean(
            np.sum(
                pos_weight * y * np.logaddexp(0, -z) + neg_weight * (1 - y) * np.logaddexp(0, z), 1
            )
        )
        loss, grad_norm, finite = step()
        assert loss == pytest.approx(expected, rel=1e-4)
        assert np.isfinite(grad_norm) and grad_norm > 0 and finite
        losses.append([loss] + [step()[0] for _ in range(5)])
    assert losses[1][-1] < losses[1][0]  # AdamW steps lower the loss on a fixed batch


def test_train_benchmark_writes_ratios_for_the_cpu_tier(tmp_path, capsys):
    from benchmarks import train as train_bench

    out = tmp_path / "train.json"
    result = train_bench.main(["--tiers", "cpu", "--steps", "1", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    # The tier's own shapes, read from its config (a number copied here went stale before).
    tier = get_config("catalog_inverse", tier="cpu")
    assert row["tier"] == "cpu" and row["batch_size"] == tier.batch_size
    assert row["image_size"] == tier.data.image_size
    assert row["precision"] == "float32"  # the PyTorch mirror's, at every tier
    assert row["ratio_dp_over_ref"] == pytest.approx(row["dp_step_s"] / row["ref_step_s"])
    if train_bench.torch_available():
        assert row["speed_dp_over_torch"] == pytest.approx(row["torch_step_s"] / row["dp_step_s"])
        assert row["torch_images_per_s"] == pytest.approx(row["batch_size"] / row["torch_step_s"])
    else:
        assert "not installed" in row["torch_note"] and "torch_step_s" not in row
    assert "DP / torch speed" in capsys.readouterr().out and result["rows"][0]["tier"] == "cpu"


def test_data_benchmark_measures_the_gpu_tier_feed_without_and_with_prefetch(tmp_path, capsys):
    from benchmarks import data as data_bench

    out = tmp_path / "data.json"
    result = data_bench.main(["--seconds", "0.05", "--crops", "600", "--out", str(out)])
    feed = json.loads(out.read_text())["gpu_tier_feed"]
    assert feed == result["gpu_tier_feed"]
    shapes = {(r["shape"], r["cores"].split(" (")[0], r["prefetch"]) for r in feed}
    assert shapes == {
        (shape, cores, depth)
        for shape in ("128 x 128 x 3", "56 x 56 x 1")
        for cores in ("one core", "all cores")
        for depth in (0, 2)
    }
    assert all(r["images_per_s"] > 0 and r["demand_images_per_s"] > 0 for r in feed)
    assert "ResNet-18 demand" in capsys.readouterr().out


def test_data_benchmark_gives_the_caller_its_cores_back(tmp_path):
    """It pins itself to one core to measure; a test or notebook calling it keeps its cores
    (a pinned pytest process once made later tests see one core)."""
    from benchmarks import data as data_bench

    before = os.sched_getaffinity(0)
    data_bench.main(["--seconds", "0.01", "--no-gpu-feed", "--out", str(tmp_path / "d.json")])
    assert os.sched_getaffinity(0) == before
