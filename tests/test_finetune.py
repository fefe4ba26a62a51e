"""The fine-tune recipe: the head at the base schedule, the backbone scaled and first frozen.

References are built independently with optax: the plain optimiser as the trainer built it before
the recipe existed, and a hand-built adamw at the scaled rate on the backbone's subtree alone.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import configs
from experiments.configs import base, overrides, tiers, validate
from experiments.models import create_model
from experiments.steps import make_optimizer, param_labels, train_step_fn

STEPS_PER_EPOCH = 5


def tiny_params():
    """A model-shaped tree: a head Dense, a backbone conv and a BatchNorm."""
    rng = np.random.default_rng(0)
    return {
        "head": {
            "kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        },
        "conv_init": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32)},
        "bn_init": {
            "scale": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        },
    }


def config_for(**fields):
    config = base.get_config()
    config.num_epochs = 4
    config.warmup_epochs = 1.0
    config.learning_rate = 1e-2
    config.weight_decay = 0.3  # large, so that decay alone visibly moves a kernel
    config.grad_clip = 0.0
    for key, value in fields.items():
        config[key] = value
    return config


def random_grads(params, step, zero_backbone=False):
    keys = jax.random.split(jax.random.PRNGKey(step), len(jax.tree.leaves(params)))
    leaves, treedef = jax.tree.flatten(params)
    grads = jax.tree.unflatten(
        treedef, [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves, strict=True)]
    )
    if zero_backbone:
        grads = {k: v if k == "head" else jax.tree.map(jnp.zeros_like, v) for k, v in grads.items()}
    return grads


def train(tx, params, num_steps, **grad_kwargs):
    """[params after step 0, 1, ..., num_steps]"""
    state = tx.init(params)
    history = [params]
    for step in range(num_steps):
        updates, state = tx.update(random_grads(params, step, **grad_kwargs), state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return history


def backbone(params):
    return {k: v for k, v in params.items() if k != "head"}


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def trees_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def reference_schedule(config):
    """The base schedule, written out from the config (warm-up 1 epoch, cosine to 0)."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=STEPS_PER_EPOCH,
        decay_steps=config.num_epochs * STEPS_PER_EPOCH,
        end_value=0.0,
    )


def legacy_optimizer(config, steps_per_epoch):
    """The trainer's optimiser as it was before the fine-tune recipe (copied verbatim)."""
    total_steps = int(config.num_epochs) * steps_per_epoch
    warmup_steps = round(float(config.warmup_epochs) * steps_per_epoch)
    warmup_steps = min(max(warmup_steps, 0), max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(config.learning_rate),
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=0.0,
    )

    def mask(params):
        return jax.tree.map(lambda p: p.ndim > 1, params)

    weight_decay = float(config.weight_decay)
    if config.optimizer == "adamw":
        tx = optax.adamw(schedule, weight_decay=weight_decay, mask=mask)
    else:
        tx = optax.chain(
            optax.add_decayed_weights(weight_decay, mask=mask),
            optax.sgd(schedule, momentum=float(config.momentum), nesterov=True),
        )
    if config.grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(float(config.grad_clip)), tx)
    return tx


# --------------------------------------------------------------------------------------------
# The optimiser


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("grad_clip", [0.0, 1.0])
def test_defaults_are_the_plain_optimiser_bit_for_bit(optimizer, grad_clip):
    config = config_for(optimizer=optimizer, grad_clip=grad_clip)
    assert config.backbone_lr_scale == 1.0 and config.freeze_backbone_epochs == 0.0
    params = tiny_params()
    tx, legacy = make_optimizer(config, STEPS_PER_EPOCH), legacy_optimizer(config, STEPS_PER_EPOCH)
    # Same state tree, so checkpoints written before the recipe restore.
    assert jax.tree.structure(tx.init(params)) == jax.tree.structure(legacy.init(params))
    for ours, theirs in zip(train(tx, params, 12), train(legacy, params, 12), strict=True):
        assert_trees_equal(ours, theirs)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("grad_clip", [0.0, 1.0])  # clipping is over all gradients, before
def test_head_update_equals_the_plain_optimisers(optimizer, grad_clip):
    plain = make_optimizer(config_for(optimizer=optimizer, grad_clip=grad_clip), STEPS_PER_EPOCH)
    recipe = make_optimizer(
        config_for(
            optimizer=optimizer,
            grad_clip=grad_clip,
            backbone_lr_scale=0.1,
            freeze_backbone_epochs=1.0,
        ),
        STEPS_PER_EPOCH,
    )
    params = tiny_params()
    ours, theirs = train(recipe, params, 12), train(plain, params, 12)
    for a, b in zip(ours, theirs, strict=True):
        assert_trees_equal(a["head"], b["head"])
    assert not trees_equal(backbone(ours[-1]), backbone(theirs[-1]))


def test_backbone_follows_adamw_at_the_scaled_rate():
    config = config_for(backbone_lr_scale=0.1)
    params = tiny_params()
    ours = train(make_optimizer(config, STEPS_PER_EPOCH), params, 15)
    # Hand-built: adamw at 0.1 x the schedule, kernels decayed, on the backbone subtree alone.
    schedule = reference_schedule(config)
    reference = optax.adamw(
        lambda count: 0.1 * schedule(count),
        weight_decay=config.weight_decay,
        mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
    )
    sub = backbone(params)
    state = reference.init(sub)
    for step in range(15):
        grads = backbone(random_grads(params, step))
        updates, state = reference.update(grads, state, sub)
        sub = optax.apply_updates(sub, updates)
        for x, y in zip(
            jax.tree.leaves(backbone(ours[step + 1])), jax.tree.leaves(sub), strict=True
        ):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    # ...and it is not the unscaled one.
    plain = train(make_optimizer(config_for(), STEPS_PER_EPOCH), params, 15)
    assert not trees_equal(backbone(plain[-1]), backbone(ours[-1]))


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("zero_backbone", [False, True])
def test_frozen_epochs_leave_the_backbone_exactly_unchanged(optimizer, zero_backbone):
    # zero_backbone: the backbone's gradients are 0, so only weight decay could move it.
    config = config_for(optimizer=optimizer, backbone_lr_scale=0.5, freeze_backbone_epochs=2.0)
    params = tiny_params()
    frozen = 2 * STEPS_PER_EPOCH
    history = train(
        make_optimizer(config, STEPS_PER_EPOCH), params, frozen + 2, zero_backbone=zero_backbone
    )
    for step in range(1, frozen + 1):
        assert_trees_equal(backbone(history[step]), backbone(params))
        if step > 1:  # the warm-up's first rate is 0
            assert not trees_equal(history[step]["head"], history[step - 1]["head"])
    # The first step after the frozen epochs moves the backbone's kernel (by decay alone when
    # its gradients are 0).
    moved = history[frozen + 1]["conv_init"]["kernel"]
    assert not np.array_equal(np.asarray(moved), np.asarray(params["conv_init"]["kernel"]))
    if zero_backbone and optimizer == "adamw":
        # Decoupled decay at 0.5 x the schedule's rate at step `frozen`: w <- w (1 - rate wd).
        rate = 0.5 * float(reference_schedule(config)(frozen))
        expected = np.asarray(params["conv_init"]["kernel"]) * (1 - rate * config.weight_decay)
        np.testing.assert_allclose(np.asarray(moved), expected, rtol=1e-6)
        # BatchNorm scale/bias are not decayed: with zero gradients they stay put.
        assert_trees_equal(history[frozen + 1]["bn_init"], params["bn_init"])


def test_frozen_backbone_in_the_train_step_keeps_params_and_updates_batch_stats():
    """The real ResNet through the real train step: the frozen backbone's parameters do not
    move, the head's do, and BatchNorm running statistics follow the batches (as documented)."""
    config = config_for(freeze_backbone_epochs=1.0, backbone_lr_scale=0.1)
    model = create_model({"name": "resnet", "stage_sizes": [1], "num_filters": 4}, 3)
    tx = make_optimizer(config, STEPS_PER_EPOCH)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)
    from experiments.steps import TrainState

    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        rng=jax.random.PRNGKey(1),
    )

    def loss_fn(logits, labels):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))

    step = jax.jit(train_step_fn(model, tx, loss_fn))
    rng = np.random.default_rng(0)
    start = state
    for _ in range(STEPS_PER_EPOCH):
        images = jnp.asarray(rng.integers(0, 256, (6, 8, 8, 1)), jnp.uint8)
        labels = jnp.asarray(rng.integers(0, 2, (6, 3)), jnp.uint8)
        state, _ = step(state, images, labels)
    assert_trees_equal(backbone(state.params), backbone(start.params))
    assert not trees_equal(state.params["head"], start.params["head"])
    assert not trees_equal(state.batch_stats, start.batch_stats)
    state, _ = step(state, images, labels)  # unfrozen
    assert not trees_equal(backbone(state.params), backbone(start.params))


def test_param_labels_of_the_suite_models():
    resnet = create_model({"name": "resnet", "stage_sizes": [1, 1], "num_filters": 4}, 5)
    params = resnet.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)["params"]
    labels = param_labels(params)
    assert set(jax.tree.leaves(labels["head"])) == {"head"}
    assert {k for k, v in labels.items() if set(jax.tree.leaves(v)) != {"backbone"}} == {"head"}
    # The linear model is all head: the recipe cannot change it.
    linear = create_model({"name": "linear"}, 5)
    params = linear.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)["params"]
    assert set(jax.tree.leaves(param_labels(params))) == {"head"}
    config = config_for(backbone_lr_scale=0.1, freeze_backbone_epochs=2.0)
    recipe, plain = (
        make_optimizer(config, STEPS_PER_EPOCH),
        make_optimizer(config_for(), STEPS_PER_EPOCH),
    )
    for a, b in zip(train(recipe, params, 12), train(plain, params, 12), strict=True):
        assert_trees_equal(a, b)


# --------------------------------------------------------------------------------------------
# Validation


def valid_config():
    config = configs.get_config("catalog_none")
    assert validate.problems(config) == []
    return config


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("backbone_lr_scale", 0.0, "backbone_lr_scale must be a finite number > 0"),
        ("backbone_lr_scale", -0.1, "backbone_lr_scale must be a finite number > 0"),
        ("backbone_lr_scale", float("nan"), "backbone_lr_scale must be a finite number > 0"),
        ("freeze_backbone_epochs", -1.0, "freeze_backbone_epochs must be a finite number >= 0"),
        ("freeze_backbone_epochs", 48.0, "freeze_backbone_epochs must be < num_epochs = 48"),
        ("freeze_backbone_epochs", 60.0, "the backbone would never train"),
    ],
)
def test_validation_names_bad_recipe_values(field, value, words):
    config = valid_config()
    config[field] = value
    found = validate.problems(config)
    assert any(words in line for line in found), found


def test_validation_accepts_the_edges_and_checks_the_recipe_block():
    config = valid_config()
    config.freeze_backbone_epochs = 23.5
    config.backbone_lr_scale = 1e-3
    assert validate.problems(config) == []
    config.finetune.backbone_lr_scale = -1.0
    config.finetune.freeze_backbone_epochs = 99.0
    found = "\n".join(validate.problems(config))
    assert "finetune.backbone_lr_scale must be None or a finite number > 0" in found
    assert "finetune.freeze_backbone_epochs must be < num_epochs" in found
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        validate.check(config)


# --------------------------------------------------------------------------------------------
# The recipe in the configs


FINETUNE_CONFIGS = [
    f"{task}_none_gpu" for task in ("sleevetype", "archetype", "voc_mlt", "coco_mlt")
]


@pytest.mark.parametrize("name", FINETUNE_CONFIGS)
def test_gpu_photo_configs_take_the_recipe_only_with_init_from(name, tmp_path):
    config = configs.get_config(name)
    assert (config.backbone_lr_scale, config.freeze_backbone_epochs) == (1.0, 0.0)
    assert overrides.apply_overrides(config, [("num_epochs", 10)]).backbone_lr_scale == 1.0
    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(b"")
    tuned = overrides.apply_overrides(config, [("model.init_from", str(weights))])
    assert tuned.backbone_lr_scale == tiers.FINETUNE_RECIPE["backbone_lr_scale"] == 0.1
    assert tuned.freeze_backbone_epochs == tiers.FINETUNE_RECIPE["freeze_backbone_epochs"]
    assert tuned.learning_rate == config.learning_rate  # the recipe leaves the head's rate
    # A field the command line sets itself wins over the recipe, in either order.
    for order in (1, -1):
        sets = [("model.init_from", str(weights)), ("backbone_lr_scale", 0.5)][::order]
        mine = overrides.apply_overrides(config, sets)
        assert mine.backbone_lr_scale == 0.5
        assert mine.freeze_backbone_epochs == tiers.FINETUNE_RECIPE["freeze_backbone_epochs"]
    changed = overrides.apply_overrides(
        config, [("model.init_from", str(weights)), ("finetune.learning_rate", 3e-4)]
    )
    assert changed.learning_rate == 3e-4


def test_the_command_line_applies_the_recipe(tmp_path, monkeypatch):
    from experiments import plan, pretrained, run

    # A suite checkpoint step folder. Validation opens and checks a real source against the
    # network (tests/test_pretrained.py); this empty stand-in only names one, so that check is
    # left out here.
    monkeypatch.setattr(pretrained, "source_problems", lambda model_config, **_: [])
    step = tmp_path / "run" / "checkpoints" / "7"
    (step / "state").mkdir(parents=True)
    argv = ["--config", "archetype_proposed_gpu", "--set", f"model.init_from={step}"]
    config, origin, runs = plan.resolve_config(run.parse_args(argv))
    assert config.backbone_lr_scale == 0.1 and origin["backbone_lr_scale"] == "--set"
    assert all(r.config.freeze_backbone_epochs == 2.0 for r in runs)
    assert isinstance(run.parse_args(argv), argparse.Namespace)


@pytest.mark.parametrize(
    "name", ["catalog_none_gpu", "catalog_none", "sleevetype_none", "sleevetype_none_smoke"]
)
def test_other_configs_have_no_recipe(name, tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    config = overrides.apply_overrides(
        configs.get_config(name), [("model.init_from", str(weights))]
    )
    assert (config.backbone_lr_scale, config.freeze_backbone_epochs) == (1.0, 0.0)


def test_recipe_fields_match_records_written_before_them():
    from experiments.records import ADDED_FIELD_DEFAULTS, json_safe_config, without_added_defaults
    from experiments.runs import config_differences

    config = json_safe_config(configs.get_config("catalog_none"))
    old = {
        k: v
        for k, v in config.items()
        if k not in ("backbone_lr_scale", "freeze_backbone_epochs", "finetune")
    }
    old["model"] = {k: v for k, v in config["model"].items() if k != "init_from"}
    assert config_differences(old, config) == []
    for path in ("backbone_lr_scale", "freeze_backbone_epochs", "model.init_from"):
        assert path in ADDED_FIELD_DEFAULTS
    assert without_added_defaults({"backbone_lr_scale": 0.5}) == {"backbone_lr_scale": 0.5}
    config["backbone_lr_scale"] = 0.5
    assert config_differences(old, config) == ["backbone_lr_scale"]
