"""Mixed precision (`model.dtype = "bfloat16"`, the gpu tier's default): bfloat16 convolutions and
matmuls, float32 parameters, optimiser state, BatchNorm statistics, logits and loss; training on
the catalog stays finite and close to float32."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import steps
from experiments.configs import get_config
from experiments.models import create_model
from experiments.train import train_and_evaluate


def _step_once(dtype: str):
    config = get_config("catalog_none", tier="smoke")
    config.model.dtype = dtype
    model = create_model(config.model.to_dict(), 3)
    tx = steps.make_optimizer(config, steps_per_epoch=4)
    mesh = steps.make_mesh(jax.devices()[:1])
    state = steps.create_train_state(model, tx, (16, 16, 1), seed=0, mesh=mesh)
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
    labels = (np.arange(12).reshape(4, 3) % 2).astype(np.uint8)

    def loss_fn(logits, y):
        return jnp.mean(jnp.sum(jax.nn.softplus(-logits) * y, axis=-1))

    step = steps.make_train_step(model, tx, loss_fn, mesh)
    x = jnp.asarray(images, jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(state.variables))
    state, metrics = step(state, steps.shard_batch(mesh, images), steps.shard_batch(mesh, labels))
    return state, metrics, jaxpr


def test_bfloat16_computes_in_bfloat16_and_keeps_everything_it_stores_in_float32():
    state, metrics, jaxpr = _step_once("bfloat16")
    convolutions = [line for line in jaxpr.splitlines() if "conv_general_dilated" in line]
    assert convolutions and all("bf16[" in line for line in convolutions)
    stored = jax.tree.leaves((state.params, state.batch_stats, state.opt_state))
    assert {leaf.dtype for leaf in stored if jnp.issubdtype(leaf.dtype, jnp.floating)} == {
        jnp.dtype(jnp.float32)
    }
    assert metrics["loss"].dtype == jnp.float32 and math.isfinite(float(metrics["loss"]))
    _, _, jaxpr32 = _step_once("float32")
    assert "bf16[" not in jaxpr32  # the float32 default computes nothing in bfloat16


def _catalog_run(dtype: str, tmp_path):
    config = get_config("catalog_none", tier="smoke")
    config.model.dtype = dtype
    config.data.cache_dir = str(tmp_path / "cache")
    return train_and_evaluate(config, seed=0, cutoff=6, workdir=tmp_path / dtype, progress=False)


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_installed")
def test_bfloat16_training_on_the_catalog_is_finite_and_close_to_float32(tmp_path):
    """Smoke-tier sizes on the real catalog (measured on a 2-core CPU: the epoch losses agreed to
    1e-4 relative, validation mAP to 0.003); the bounds leave room for other machines."""
    full, mixed = _catalog_run("float32", tmp_path), _catalog_run("bfloat16", tmp_path)
    assert full["status"] == mixed["status"] == "finished"
    for a, b in zip(full["curves"], mixed["curves"], strict=True):
        assert math.isfinite(b["train_loss"]) and math.isfinite(b["val_mAP"])
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.01)
        assert b["val_mAP"] == pytest.approx(a["val_mAP"], abs=0.03)
    assert mixed["test"]["mAP"] == pytest.approx(full["test"]["mAP"], abs=0.03)
