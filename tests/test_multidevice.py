"""Data parallelism on 4 simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4).

The device count is fixed when JAX starts, so the work runs in a subprocess. There, the same
train steps run on a 1-device mesh and on a 4-device mesh with the same global batch: the loss
trajectory, parameters and BatchNorm statistics must agree within float tolerance (BatchNorm
over the global batch, gradients all-reduced), and each step function compiles once. A whole
run then goes through `train_and_evaluate` on the 4 devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    from pathlib import Path

    import jax
    import numpy as np

    sys.path.insert(0, str(Path.cwd() / "tests"))
    from test_train import make_config, make_split, NUM_LABELS  # noqa: E402

    from experiments import steps

    from experiments import train as trainer
    from experiments.data import Splits
    from experiments.models import create_model
    from ltweights import weights

    assert jax.device_count() == 4, jax.devices()
    probs = np.geomspace(0.5, 0.05, NUM_LABELS)
    splits = Splits(
        make_split(128, 1, "train", probs),
        make_split(80, 2, "val", np.maximum(probs, 0.2)),
        make_split(70, 3, "test", np.full(NUM_LABELS, 0.3)),
    )
    config = make_config(scheme="inverse")
    counts = weights.label_counts(splits.train.labels)
    model = create_model(config.model.to_dict(), NUM_LABELS)
    tx = steps.make_optimizer(config, steps_per_epoch=8)
    loss_fn = steps.make_loss_fn(config, counts)

    def trajectory(devices):
        mesh = steps.make_mesh(devices)
        state = steps.create_train_state(model, tx, (28, 28, 1), seed=0, mesh=mesh)
        step = steps.make_train_step(model, tx, loss_fn, mesh)
        losses = []
        for epoch in range(2):
            for images, labels in trainer.pipeline.epoch_batches(
                splits.train, 16, seed=0, epoch=epoch
            ):
                x = steps.shard_batch(mesh, images)
                y = steps.shard_batch(mesh, labels)
                state, metrics = step(state, x, y)
                losses.append(float(metrics["loss"]))
        shards = len(x.addressable_shards)
        assert isinstance(state, steps.TrainState)
        replicated = state.params["head"]["kernel"].sharding.is_fully_replicated
        leaves = jax.tree.leaves(state.variables)
        return {
            "losses": losses,
            "leaves": [np.asarray(v).ravel().tolist() for v in leaves],
            "batch_shards": shards,
            "params_replicated": bool(replicated),
            "cache_size": step.jitted._cache_size(),
        }

    one = trajectory(jax.devices()[:1])
    four = trajectory(jax.devices())

    record = trainer.train_and_evaluate(
        config, seed=0, cutoff=6, workdir=Path(sys.argv[1]), splits=splits, progress=False
    )
    print(json.dumps({
        "one": one,
        "four": four,
        "run": {"status": record["status"], "steps": record["steps"],
                "test_mAP": record["test"]["mAP"]},
    }))
    """
)


def test_four_devices_match_one_device(tmp_path):
    script = tmp_path / "multidevice.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    one, four = out["one"], out["four"]

    assert four["batch_shards"] == 4 and one["batch_shards"] == 1
    assert four["params_replicated"]
    assert one["cache_size"] == four["cache_size"] == 1  # no recompilation after step 1
    assert len(one["losses"]) == len(four["losses"]) == 16
    # Same global batch, same maths; only the order of floating-point reductions differs.
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5, atol=1e-6)
    for a, b in zip(four["leaves"], one["leaves"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert out["run"]["status"] == "finished" and out["run"]["steps"] == 16
    assert 0.0 <= out["run"]["test_mAP"] <= 1.0
