"""README's "add a loss" steps: a loss function and one `METHODS` entry give a config that
validates, resolves the loss's parameters and trains, with the inputs the trainer supplies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import configs, methods
from experiments.configs import validate
from experiments.train import train_and_evaluate
from ltweights import weights

SEEN_PRIORS: list[tuple[int, ...]] = []


def toy_squared_error(logits, labels, *, scale: float = 1.0, prior=None, pos_weight=None):
    """A loss only this test knows: the squared error of the probabilities, its positive term
    weighted, minus a prior-dependent constant (zero gradient), to check both are supplied."""
    SEEN_PRIORS.append(tuple(jnp.shape(prior)))
    p = jax.nn.sigmoid(logits)
    weight = jnp.where(labels > 0, pos_weight, 1.0)
    return scale * weight * (p - labels) ** 2 + 0.0 * jax.lax.stop_gradient(prior)


@pytest.fixture
def toy_method(monkeypatch):
    method = methods.Method(
        name="toy",
        scheme="inverse",
        loss_fn=toy_squared_error,
        doc="A toy loss: weighted squared error of the probabilities.",
        loss_params={"scale": 2.0},
    )
    monkeypatch.setitem(methods.METHODS, "toy", method)
    SEEN_PRIORS.clear()
    return method


def test_one_methods_entry_registers_the_loss_and_its_config(toy_method):
    assert methods.LOSSES["toy_squared_error"] is toy_squared_error
    config = configs.get_config("catalog_toy", tier="smoke")
    assert (config.method, config.scheme, config.loss) == ("toy", "inverse", "toy_squared_error")
    assert config.loss_params.scale == 2.0
    validate.check(config)
    config.loss_params.scael = 1.0
    with pytest.raises(ValueError, match=r"did you mean loss_params\.scale"):
        validate.check(config)


def test_loss_inputs_are_supplied_to_what_the_loss_takes(toy_method):
    counts = weights.LabelCounts(positives=np.array([3, 1]), num_examples=8)
    pos, neg = weights.scheme_weights("inverse", counts)
    supplied = methods.loss_inputs("toy_squared_error", counts, pos, neg)
    assert sorted(supplied.per_label) == ["pos_weight", "prior"] and supplied.static == {}
    np.testing.assert_array_equal(supplied.per_label["prior"], [3 / 8, 1 / 8])
    db = methods.loss_inputs("distribution_balanced", counts, pos, neg)
    assert sorted(db.per_label) == ["positives"] and db.static == {"num_examples": 8}


@pytest.mark.usefixtures("fashion_mnist_installed")
def test_the_toy_loss_trains_at_the_smoke_tier(toy_method, tmp_path):
    config = configs.get_config("catalog_toy", tier="smoke")
    config.data.cache_dir = str(tmp_path / "cache")
    record = train_and_evaluate(config, seed=0, cutoff=6, workdir=tmp_path / "run", progress=False)
    assert record["status"] == "finished"
    assert record["steps"] > 0 and all(np.isfinite(c["train_loss"]) for c in record["curves"])
    assert 0.0 < record["test"]["mAP"] <= 1.0
    num_labels = len(record["test"]["per_label"]["ap"])
    assert SEEN_PRIORS and set(SEEN_PRIORS) == {(num_labels,)}
