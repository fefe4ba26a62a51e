"""The trainer: loss wiring from config + counts (checked against hand formulas), optimiser
masking, and whole runs of a tiny ResNet on small synthetic splits: record fields, no
recompilation, exact resume after SIGINT and interrupt_at_step, non-finite loss handling."""

from __future__ import annotations

import logging
import os
import signal
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from experiments import configs, steps
from experiments import train as trainer
from experiments.data import Dataset, Splits
from ltweights import losses, weights

NUM_LABELS = 5


def make_split(num_examples, seed, split, probs):
    """Random images where label j brightens rows 4j..4j+3: learnable, long-tailed labels."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((num_examples, NUM_LABELS)) < probs).astype(np.uint8)
    images = rng.integers(0, 60, (num_examples, 28, 28, 1)).astype(np.uint8)
    for j in range(NUM_LABELS):
        images[labels[:, j] == 1, 4 * j : 4 * j + 4, :, 0] += 150
    names = tuple(f"label{j}" for j in range(NUM_LABELS))
    return Dataset(images, labels, names, split, {"synthetic_seed": seed})


def synthetic_splits() -> Splits:
    """The trainer tests' synthetic splits (learnable, long-tailed, 28 px, 1 channel)."""
    probs = np.geomspace(0.5, 0.05, NUM_LABELS)
    return Splits(
        make_split(128, 1, "train", probs),
        make_split(80, 2, "val", np.maximum(probs, 0.2)),
        make_split(70, 3, "test", np.full(NUM_LABELS, 0.3)),
    )


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits()


def make_config(**overrides):
    config = ml_collections.ConfigDict(
        {
            "name": "synthetic_test",
            "task": "catalog",
            "tier": "smoke",
            "data": {"seed": 0},
            "scheme": "none",
            "scheme_params": {},
            "loss": "weighted_sigmoid_bce",
            "loss_params": {},
            "model": {
                "name": "resnet",
                "stage_sizes": [1],
                "num_filters": 4,
                "block": "basic",
                "small_input": True,
                "dtype": "float32",
            },
            "batch_size": 16,  # 8 steps per epoch
            "eval_batch_size": 32,  # val 80 and test 70 examples: padded last batches
            "num_epochs": 2,
            "learning_rate": 3e-3,
            "warmup_epochs": 0.5,
            "weight_decay": 1e-4,
            "optimizer": "adamw",
            "momentum": 0.9,
            "grad_clip": 1.0,
            "checkpoint_every_steps": 3,
            "keep_checkpoints": 2,
            "keep_best": 1,
            "bucket_head": 30,
            "bucket_tail": 15,
        }
    )
    config.update(overrides)
    return config


# ---------------------------------------------------------------------------------------------
# Loss wiring
# ---------------------------------------------------------------------------------------------


def _softplus(x):
    return np.logaddexp(0.0, x)


def _random_batch(seed=0, batch=6):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (batch, NUM_LABELS)).astype(np.float32)
    labels = (rng.random((batch, NUM_LABELS)) < 0.4).astype(np.float32)
    return logits, labels


def _hand_weighted_bce(logits, labels, pos_weight):
    """(1/B) sum_b sum_j [w_j y log(1 + e^-x) + (1 - y) log(1 + e^x)], float64."""
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    per_element = pos_weight * y * _softplus(-x) + (1 - y) * _softplus(x)
    return per_element.sum(axis=1).mean()


def test_unweighted_bce_is_optax_bce_summed_over_labels_and_averaged_over_batch(splits):
    counts = weights.label_counts(splits.train.labels)
    logits, labels = _random_batch()
    loss = steps.make_loss_fn(make_config(), counts)(jnp.asarray(logits), jnp.asarray(labels))
    expected = np.asarray(optax.sigmoid_binary_cross_entropy(logits, labels)).sum(1).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def test_inverse_scheme_weights_positives_by_negatives_over_positives(splits):
    counts = weights.label_counts(splits.train.labels)
    positives = splits.train.labels.sum(0).astype(np.float64)
    pos_weight = (128 - positives) / positives  # n-_j / n+_j
    logits, labels = _random_batch(1)
    loss = steps.make_loss_fn(make_config(scheme="inverse"), counts)(logits, labels)
    np.testing.assert_allclose(float(loss), _hand_weighted_bce(logits, labels, pos_weight), 1e-5)
    unweighted = steps.make_loss_fn(make_config(), counts)(logits, labels)
    assert abs(float(loss) - float(unweighted)) > 0.1


def test_proposed_scheme_uses_effective_numbers(splits):
    beta = 0.9
    counts = weights.label_counts(splits.train.labels)
    positives = splits.train.labels.sum(0).astype(np.float64)

    def effective(n):  # E(n) = (1 - beta^n) / (1 - beta)
        return (1 - beta**n) / (1 - beta)

    pos_weight = effective(128 - positives) / effective(positives)
    logits, labels = _random_batch(2)
    config = make_config(scheme="proposed", scheme_params={"beta": beta})
    loss = steps.make_loss_fn(config, counts)(logits, labels)
    np.testing.assert_allclose(float(loss), _hand_weighted_bce(logits, labels, pos_weight), 1e-5)


def test_class_balanced_scheme_weights_both_terms(splits):
    beta = 0.99
    counts = weights.label_counts(splits.train.labels)
    positives = splits.train.labels.sum(0).astype(np.float64)
    c = (1 - beta) / (1 - beta**positives)  # Cui et al.: 1 / effective number
    c = c * NUM_LABELS / c.sum()  # normalised to sum to C
    logits, labels = _random_batch(5)
    config = make_config(scheme="class_balanced", scheme_params={"beta": beta})
    loss = steps.make_loss_fn(config, counts)(logits, labels)
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    expected = (c * (y * _softplus(-x) + (1 - y) * _softplus(x))).sum(1).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "loss, loss_params, scheme",
    [
        ("sigmoid_focal", {"gamma": 1.5}, "inverse_sqrt"),
        ("asymmetric", {"gamma_neg": 2.0, "clip": 0.1}, "none"),
        ("logit_adjusted_bce", {"tau": 0.5}, "inverse"),
        ("distribution_balanced", {}, "none"),
    ],
)
def test_each_loss_gets_its_params_and_the_scheme_weights(splits, loss, loss_params, scheme):
    counts = weights.label_counts(splits.train.labels)
    positives = splits.train.labels.sum(0)
    logits, labels = _random_batch(3)
    config = make_config(loss=loss, loss_params=loss_params, scheme=scheme)
    got = steps.make_loss_fn(config, counts)(logits, labels)

    pos, neg = weights.scheme_weights(scheme, counts)
    if loss == "sigmoid_focal":
        elementwise = losses.sigmoid_focal(
            logits, labels, gamma=1.5, pos_weight=pos, neg_weight=neg
        )
    elif loss == "asymmetric":
        elementwise = losses.asymmetric(logits, labels, gamma_neg=2.0, clip=0.1)
    elif loss == "logit_adjusted_bce":
        prior = positives / 128.0
        elementwise = losses.logit_adjusted_bce(
            logits, labels, prior=prior, tau=0.5, pos_weight=pos, neg_weight=neg
        )
    else:
        elementwise = losses.distribution_balanced(
            logits, labels, positives=positives, num_examples=128
        )
    expected = np.asarray(elementwise, np.float64).sum(1).mean()
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_params_of_other_losses_are_ignored_but_unknown_ones_are_errors(splits):
    counts = weights.label_counts(splits.train.labels)
    logits, labels = _random_batch(4)
    plain = steps.make_loss_fn(make_config(), counts)(logits, labels)
    with_gamma = steps.make_loss_fn(make_config(loss_params={"gamma": 2.0}), counts)
    assert float(with_gamma(logits, labels)) == float(plain)
    with pytest.raises(ValueError, match="gama"):
        steps.make_loss_fn(make_config(loss_params={"gama": 2.0}), counts)
    with pytest.raises(ValueError, match="valid losses"):
        steps.make_loss_fn(make_config(loss="hinge"), counts)


def test_distribution_balanced_refuses_a_scheme(splits):
    counts = weights.label_counts(splits.train.labels)
    config = make_config(loss="distribution_balanced", scheme="proposed")
    with pytest.raises(ValueError, match="scheme='none'"):
        steps.make_loss_fn(config, counts)


@pytest.mark.parametrize(
    "field", ["warmup_epochs", "weight_decay", "optimizer", "momentum", "grad_clip"]
)
def test_optimizer_reads_its_fields_from_the_config_without_fallbacks(field):
    """The base config defines every field; one that is missing is an error naming it, never a
    silent default that could disagree with base's."""
    values = {k: v for k, v in make_config(optimizer="sgd").to_dict().items() if k != field}
    with pytest.raises(AttributeError, match=field):
        steps.make_optimizer(ml_collections.ConfigDict(values), 10)


def test_warmup_epochs_of_the_config_set_the_warmup():
    params = {"w": jnp.ones((2, 2))}
    grads = {"w": jnp.ones((2, 2))}

    def first_updates(warmup_epochs):
        config = make_config(warmup_epochs=warmup_epochs, weight_decay=0.0, grad_clip=0.0)
        tx = steps.make_optimizer(config, 10)
        updates, _ = tx.update(grads, tx.init(params), params)
        return np.asarray(updates["w"])

    # Warm-up from 0: the first step has learning rate 0; without warm-up it has the peak 3e-3
    # (adam's first step moves each weight by the learning rate).
    np.testing.assert_array_equal(first_updates(1.0), 0.0)
    np.testing.assert_allclose(first_updates(0.0), -3e-3, rtol=1e-4)


def test_weight_decay_skips_batchnorm_and_biases():
    params = {"conv": {"kernel": jnp.ones((3, 3, 1, 4))}, "bn": {"scale": jnp.ones(4)}}
    params["head"] = {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}
    tx = steps.make_optimizer(make_config(warmup_epochs=0.0, grad_clip=0.0), 10)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # With zero gradients the only update is decoupled weight decay: -lr * wd * p.
    np.testing.assert_allclose(updates["conv"]["kernel"], -3e-3 * 1e-4, rtol=1e-5)
    np.testing.assert_allclose(updates["head"]["kernel"], -3e-3 * 1e-4, rtol=1e-5)
    assert np.all(updates["bn"]["scale"] == 0) and np.all(updates["head"]["bias"] == 0)


def test_global_batch_must_split_evenly_over_devices(splits):
    with pytest.raises(ValueError, match="multiple of the 4 devices"):
        trainer._check_batch_sizes(make_config(batch_size=30), splits, 4)
    with pytest.raises(ValueError, match="eval_batch_size"):
        trainer._check_batch_sizes(make_config(eval_batch_size=30), splits, 4)
    assert trainer._check_batch_sizes(make_config(), splits, 4) == (16, 32)


# ---------------------------------------------------------------------------------------------
# Whole runs
# ---------------------------------------------------------------------------------------------


def _without_timing(curves):
    return [{k: v for k, v in entry.items() if k != "images_per_s"} for entry in curves]


def _checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_run_resumes_exactly_after_sigint_and_interrupt_and_never_recompiles(
    splits, tmp_path, monkeypatch, caplog
):
    config = make_config()
    run = dict(seed=0, cutoff=6, splits=splits, progress=False)

    # Every compilation of this test is logged and counted at the end.
    caplog.set_level(logging.WARNING, logger="jax")
    with jax.log_compiles(True):
        # 1. Uninterrupted.
        full = trainer.train_and_evaluate(config, workdir=tmp_path / "full", **run)

        assert full["status"] == "finished" and full["failure"] is None and full["steps"] == 16
        assert [c["epoch"] for c in full["curves"]] == [1, 2]
        assert [c["step"] for c in full["curves"]] == [8, 16]
        assert full["data"]["train_positives"] == splits.train.labels.sum(0).tolist()
        assert full["data"]["num_val"] == 80 and full["data"]["num_test"] == 70
        test = full["test"]
        assert test["num_examples"] == 70 and len(test["thresholds"]) == NUM_LABELS
        assert set(test["buckets"]) == {"head", "medium", "tail"}
        best = max(full["curves"], key=lambda c: (c["val_mAP"], c["step"]))
        assert full["val"]["best_step"] == best["step"]
        assert full["images_per_s"] > 0 and full["wall_time_s"] > 0
        # Last 2 kept (8 is also an epoch end, 15 a periodic one) plus the best epoch end.
        assert _checkpoint_steps(tmp_path / "full") == sorted({15, 16, best["step"]})

        # 2. SIGINT during step 4 (sent from the input pipeline): checkpoint, Interrupted.
        original_batches = trainer.pipeline.epoch_batches

        def batches_with_sigint(dataset, batch_size, *, seed, epoch, start_batch=0):
            for index, batch in enumerate(
                original_batches(
                    dataset, batch_size, seed=seed, epoch=epoch, start_batch=start_batch
                ),
                start=start_batch,
            ):
                if (epoch, index) == (0, 3):
                    os.kill(os.getpid(), signal.SIGINT)
                yield batch

        monkeypatch.setattr(trainer.pipeline, "epoch_batches", batches_with_sigint)
        handler_before = signal.getsignal(signal.SIGINT)
        with pytest.raises(trainer.Interrupted, match="SIGINT") as info:
            trainer.train_and_evaluate(config, workdir=tmp_path / "resumed", **run)
        assert info.value.step == 4
        assert signal.getsignal(signal.SIGINT) is handler_before
        monkeypatch.setattr(trainer.pipeline, "epoch_batches", original_batches)

        # 3. Resume from step 4, interrupted again at the end of epoch 1 (after its evaluation);
        # 4. resume from there to the end.
        with pytest.raises(trainer.Interrupted, match="interrupt_at_step") as info:
            trainer.train_and_evaluate(
                config, workdir=tmp_path / "resumed", interrupt_at_step=8, **run
            )
        assert info.value.step == 8
        steps._COMPILED.clear()  # the last resume compiles afresh, as in a new process
        resumed = trainer.train_and_evaluate(config, workdir=tmp_path / "resumed", **run)

        assert resumed["steps"] == full["steps"]
        assert _without_timing(resumed["curves"]) == _without_timing(full["curves"])
        assert resumed["val"] == full["val"]
        assert resumed["test"] == full["test"]

        # A checkpoint of another seed or config is not silently resumed.
        with pytest.raises(ValueError, match="different run"):
            trainer.train_and_evaluate(config, workdir=tmp_path / "resumed", **{**run, "seed": 1})

    # 5 runs of the same config, each with many train steps and evaluations on a zero-padded
    # last batch. Runs that differ only in seed share their compiled steps, so each step
    # function was compiled exactly twice: in the first run and after the cache was cleared.
    compiled = [r.getMessage() for r in caplog.records if "Compiling jit(" in r.getMessage()]
    assert sum("jit(train_step)" in m for m in compiled) == 2
    assert sum("jit(eval_step)" in m for m in compiled) == 2


def test_runs_of_one_method_share_compiled_steps_but_bind_their_own_loss_args(splits):
    """Seeds, cut-offs and scheme parameters change only the per-label loss arguments: the
    jitted steps are reused and each run binds its own weights. A change to the model or to a
    loss hyperparameter (compiled into the step) gets steps of its own."""
    steps._COMPILED.clear()
    mesh = steps.make_mesh()
    counts = weights.label_counts(splits.train.labels)
    # Another seed's draw: the same class counts in another class order.
    reordered = weights.LabelCounts(counts.positives[::-1].copy(), counts.num_examples)
    first_config = make_config(scheme="proposed", scheme_params={"beta": 0.999})
    second_config = make_config(scheme="proposed", scheme_params={"beta": 0.99}, name="other")
    first = steps.run_functions(first_config, counts, splits.train, 8, mesh)
    second = steps.run_functions(second_config, reordered, splits.train, 8, mesh)
    assert second[0] is first[0] and second[2] is first[2]
    assert second[1].jitted is first[1].jitted
    for config, run_counts, (_, train_step, _) in (
        (first_config, counts, first),
        (second_config, reordered, second),
    ):
        expected = steps.make_loss_fn(config, run_counts).args
        assert set(train_step.loss_args) == set(expected) == {"pos_weight", "neg_weight"}
        for name, value in expected.items():
            np.testing.assert_array_equal(np.asarray(train_step.loss_args[name]), value)
    assert not np.array_equal(first[1].loss_args["pos_weight"], second[1].loss_args["pos_weight"])

    wider = make_config(model={**make_config().model.to_dict(), "num_filters": 8})
    focal = make_config(loss="sigmoid_focal", loss_params={"gamma": 2.0})
    focal_gamma_1 = make_config(loss="sigmoid_focal", loss_params={"gamma": 1.0})
    jitted = {first[1].jitted}
    for config in (wider, focal, focal_gamma_1):
        jitted.add(steps.run_functions(config, counts, splits.train, 8, mesh)[1].jitted)
    assert len(jitted) == 4
    assert steps.run_functions(first_config, counts, splits.train, 9, mesh)[1].jitted not in jitted


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_set_a_flag_and_restore_the_previous_handlers(signum):
    before = signal.getsignal(signum)
    with trainer._stop_signals() as stop:
        assert stop["signal"] is None
        os.kill(os.getpid(), signum)
        assert stop["signal"] == signum.name
    assert signal.getsignal(signum) is before


def test_non_finite_loss_fails_the_run_and_keeps_the_last_good_checkpoint(splits, tmp_path):
    config = make_config(
        learning_rate=1e12, optimizer="sgd", grad_clip=0.0, checkpoint_every_steps=1
    )
    record = trainer.train_and_evaluate(
        config, seed=0, cutoff=6, workdir=tmp_path, splits=splits, progress=False
    )
    assert record["status"] == "failed" and record["test"] is None
    bad_step = record["steps"] + 1
    assert (
        f"Non-finite training loss, gradient or parameters at step {bad_step}" in record["failure"]
    )
    assert f"last good checkpoint (step {bad_step - 1})" in record["failure"]
    steps = _checkpoint_steps(tmp_path)
    assert steps and max(steps) == bad_step - 1  # nothing saved from the bad step on

    with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
        restored = manager.restore(max(steps))
    params = restored["state"]["params"]
    assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_installed")
def test_input_prefetch_trains_the_same_numbers_and_resumes_exactly(tmp_path):
    """input_prefetch gathers and places batches on a background thread: the same batches in
    the same order, so the same bits as without it, and an interrupted prefetching run resumes
    to them too (its thread is closed at the interrupt)."""

    def metrics(prefetch, workdir, **kw):
        config = configs.get_config("catalog_none", tier="smoke")
        config.data.cache_dir = str(tmp_path / "cache")
        config.input_prefetch = prefetch
        return trainer.train_and_evaluate(
            config, seed=0, cutoff=6, workdir=workdir, progress=False, **kw
        )

    def numbers(record):
        return {k: record[k] for k in ("curves", "val", "test", "steps")} | {
            "curves": [
                {k: v for k, v in c.items() if k != "images_per_s"} for c in record["curves"]
            ]
        }

    plain = numbers(metrics(0, tmp_path / "plain"))
    assert numbers(metrics(2, tmp_path / "prefetch")) == plain
    with pytest.raises(trainer.Interrupted):
        metrics(2, tmp_path / "resumed", interrupt_at_step=5)
    assert numbers(metrics(2, tmp_path / "resumed")) == plain
    # The interrupted run's thread was stopped and joined (pipeline.prefetch's finally).
    assert not [t for t in threading.enumerate() if t.name == "prefetch"]
