"""experiments.xla: the XLA_FLAGS it writes, and that it refuses once JAX's backend runs."""

import pytest

from experiments import xla


def test_cpu_flags():
    assert xla.cpu_flags(1) == [
        "--xla_cpu_multi_thread_eigen=false",
        "--xla_cpu_experimental_ynn_fusion_type=",
    ]
    assert xla.cpu_flags(2, ynnpack=True) == []
    with pytest.raises(ValueError, match="threads must be >= 1"):
        xla.cpu_flags(0)


def test_configure_cpu_keeps_user_flags_and_refuses_after_backend_start(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true --xla_foo=1")
    monkeypatch.setattr(xla, "backend_started", lambda: False)
    flags = xla.configure_cpu(1, pin=False)
    # the user's eigen setting is kept, the YNNPACK switch appended once
    assert flags.split() == [
        "--xla_cpu_multi_thread_eigen=true",
        "--xla_foo=1",
        "--xla_cpu_experimental_ynn_fusion_type=",
    ]
    assert xla.configure_cpu(1, pin=False) == flags  # idempotent
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(xla, "backend_started", lambda: True)
    with pytest.raises(RuntimeError, match="already started"):
        xla.configure_cpu(1, pin=False)


_CHILD = """
import sys
import jax, jax.numpy as jnp, numpy as np
from experiments import steps
from experiments.configs import get_config
from experiments.models import create_model
from ltweights import weights

config = get_config("catalog_inverse", tier="cpu")
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
labels = (rng.random((32, 10)) < 0.3).astype(np.uint8)
model = create_model(config.model.to_dict(), 10)
loss_fn = steps.make_loss_fn(config, weights.label_counts(labels))
variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)
# BatchNorm scales of 1 everywhere, so that every convolution's gradient is non-zero.
params = jax.tree_util.tree_map_with_path(
    lambda p, v: jnp.ones_like(v) if "scale" in jax.tree_util.keystr(p) else v,
    variables["params"],
)

def objective(params):
    logits, _ = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        steps.normalize_images(images), train=True, mutable=["batch_stats"],
    )
    return loss_fn(logits, jnp.asarray(labels, jnp.float32))

loss, grads = jax.jit(jax.value_and_grad(objective))(params)
paths = jax.tree_util.tree_leaves_with_path(grads)
leaves = {jax.tree_util.keystr(p): np.asarray(g) for p, g in paths}
np.savez(sys.argv[1], loss=np.asarray(loss), **leaves)
"""


def _loss_and_grads(tmp_path, name, xla_flags):
    import os
    import subprocess
    import sys

    out = tmp_path / f"{name}.npz"
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    subprocess.run(
        [sys.executable, "-c", _CHILD, str(out)], env=env, check=True, cwd=os.getcwd(), timeout=600
    )
    import numpy as np

    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def test_cpu_flags_leave_the_cpu_tier_loss_and_gradients_unchanged(tmp_path):
    """The flags change which kernels run (YNNPACK off, one Eigen thread), not the maths: the
    cpu-tier objective and every gradient agree with XLA's defaults to float32 rounding."""
    import numpy as np

    default = _loss_and_grads(tmp_path, "default", "")
    configured = _loss_and_grads(tmp_path, "configured", " ".join(xla.cpu_flags(1)))
    assert default.keys() == configured.keys() and len(default) > 10
    np.testing.assert_allclose(configured["loss"], default["loss"], rtol=1e-5)
    for key in default:
        scale = float(np.max(np.abs(default[key])))
        assert scale > 0, key
        np.testing.assert_allclose(configured[key], default[key], rtol=1e-4, atol=1e-4 * scale)
