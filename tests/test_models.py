"""Flax ResNets: output shapes for any input size and channel count, and the exact parameter
counts of ResNet-18/50 (the published torchvision figures for 1000 classes, an independent
implementation of the same architecture)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.models import PRESETS, ResNet18, ResNet34, ResNet50, create_model


def _num_params(model, image_shape=(224, 224, 3)):
    variables = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False)
    )
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize(
    "factory, expected",
    # torchvision.models.resnet18/34/50: 11,689,512 / 21,797,672 / 25,557,032 parameters.
    [(ResNet18, 11_689_512), (ResNet34, 21_797_672), (ResNet50, 25_557_032)],
)
def test_imagenet_shapes_have_the_published_parameter_counts(factory, expected):
    assert _num_params(factory(num_labels=1000)) == expected


def test_presets_are_the_flax_imagenet_shapes():
    assert PRESETS["resnet18"] == ((2, 2, 2, 2), "basic")
    assert PRESETS["resnet34"] == ((3, 4, 6, 3), "basic")
    assert PRESETS["resnet50"] == ((3, 4, 6, 3), "bottleneck")


def test_resnet50_shapes_for_a_multi_label_head_at_any_size():
    model = create_model({"name": "resnet50"}, num_labels=13)
    for shape in [(2, 224, 224, 3), (3, 96, 80, 1)]:
        out = jax.eval_shape(
            lambda x, model=model: model.init_with_output(jax.random.PRNGKey(0), x, train=False)[0],
            jax.ShapeDtypeStruct(shape, jnp.float32),
        )
        assert out.shape == (shape[0], 13) and out.dtype == jnp.float32


@pytest.mark.parametrize(
    "shape, small_input, block",
    [
        ((2, 28, 28, 1), True, "basic"),
        ((3, 56, 56, 3), True, "bottleneck"),
        ((2, 33, 47, 3), False, "basic"),  # odd, non-square sizes
        ((1, 64, 64, 1), False, "bottleneck"),
    ],
)
def test_small_variants_give_one_logit_per_label(shape, small_input, block):
    model = create_model(
        {"stage_sizes": [1, 1], "num_filters": 4, "block": block, "small_input": small_input},
        num_labels=7,
    )

    def forward(x):
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        train_logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return train_logits, updates, model.apply(variables, x, train=False)

    train_logits, updates, eval_logits = jax.eval_shape(
        forward, jax.ShapeDtypeStruct(shape, jnp.float32)
    )
    assert train_logits.shape == eval_logits.shape == (shape[0], 7)
    assert train_logits.dtype == eval_logits.dtype == jnp.float32
    assert set(updates) == {"batch_stats"}  # train=True updates the running statistics


def test_forward_pass_is_finite_and_batchnorm_modes_differ():
    model = create_model({"stage_sizes": [1, 1], "num_filters": 4, "small_input": True}, 5)
    x = jnp.asarray(np.random.default_rng(0).normal(3.0, 2.0, size=(4, 28, 28, 1)), jnp.float32)

    @jax.jit
    def forward(x):
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        train_logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return train_logits, updates, model.apply(variables, x, train=False)

    train_logits, updates, eval_logits = forward(x)
    assert np.all(np.isfinite(train_logits)) and np.all(np.isfinite(eval_logits))
    # Batch statistics (train) and the initial running statistics (eval) differ for this
    # input of mean 3, so the logits differ; the running mean moved by (1 - momentum) * mean.
    assert not np.allclose(train_logits, eval_logits)
    bn_mean = updates["batch_stats"]["bn_init"]["mean"]
    assert np.all(np.abs(bn_mean) > 0)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = create_model({"stage_sizes": [1], "num_filters": 4, "dtype": "bfloat16"}, 3)

    def forward(x):
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        return variables["params"], model.apply(variables, x, train=False)

    params, logits = jax.eval_shape(forward, jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    assert logits.dtype == jnp.float32


def test_small_input_stem_keeps_resolution():
    """The 3x3/1 stem without max-pool keeps 28 px; the ImageNet stem divides it by 4."""

    def stem_params(small_input):
        model = create_model({"stage_sizes": [1], "num_filters": 4, "small_input": small_input}, 2)
        params = jax.eval_shape(
            lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)
        )["params"]
        return params["conv_init"]["kernel"].shape

    assert stem_params(True) == (3, 3, 1, 4)
    assert stem_params(False) == (7, 7, 1, 4)


@pytest.mark.parametrize(
    "model_config, match",
    [
        ({"name": "resnet19"}, "Did you mean resnet18"),
        ({"stage_sizes": [1], "block": "wide"}, "basic"),
        ({"stage_sizes": []}, "non-empty"),
        ({"num_filters": 8}, "stage_sizes is missing"),
        ({"stage_sizes": [1], "width": 3}, "Unknown model field"),
        ({"stage_sizes": [1], "dtype": "float8"}, "bfloat16"),
    ],
)
def test_bad_model_config_names_the_problem(model_config, match):
    with pytest.raises(ValueError, match=match):
        create_model(model_config, num_labels=3)
