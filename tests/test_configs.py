"""Configs: every name resolves to a config with the contract's fields, and those fields are
accepted by the functions that consume them (task loaders, schemes, losses)."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json

import ml_collections
import pytest

from experiments import configs
from experiments.configs import schemes, tasks, tfds_tasks, tiers
from experiments.data import TASKS as DATA_TASKS
from ltweights import losses
from ltweights import weights as ltw

ALL_NAMES = configs.list_configs()
TASK_NAMES = (
    "catalog",
    "catalog_step",
    "sleevetype",
    "archetype",
    "csv",
    "tfds",
    "voc_mlt",
    "coco_mlt",
)
SCHEME_NAMES = (
    "none",
    "inverse",
    "inverse_sqrt",
    "class_balanced",
    "proposed",
    "focal",
    "asymmetric",
    "distribution_balanced",
    "logit_adjusted",
)
LOSS_FUNCTIONS = {
    "bce": losses.weighted_sigmoid_bce,
    "focal": losses.sigmoid_focal,
    "asymmetric": losses.asymmetric,
    "distribution_balanced": losses.distribution_balanced,
    "logit_adjusted": losses.logit_adjusted_bce,
}
# field -> accepted Python types, from the config contract.
CONTRACT = {
    "name": str,
    "task": str,
    "tier": str,
    "data": ml_collections.ConfigDict,
    "scheme": str,
    "scheme_params": ml_collections.ConfigDict,
    "loss": str,
    "loss_params": ml_collections.ConfigDict,
    "model": ml_collections.ConfigDict,
    "batch_size": int,
    "eval_batch_size": int,
    "num_epochs": int,
    "learning_rate": float,
    "warmup_epochs": float,
    "weight_decay": float,
    "optimizer": str,
    "momentum": float,
    "grad_clip": float,
    "checkpoint_every_steps": int,
    "keep_checkpoints": int,
    "keep_best": bool | int,
    "bucket_head": int,
    "bucket_tail": int,
    "seeds": list,
    "cutoffs": list,
    "sweep": ml_collections.ConfigDict,
    "variant": str,
    "output_dir": str,
}


def test_names_are_every_task_times_every_scheme():
    assert sorted(ALL_NAMES) == sorted(f"{t}_{s}" for t in TASK_NAMES for s in SCHEME_NAMES)
    assert len(set(ALL_NAMES)) == 72


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_config_has_the_contract_fields(name):
    config = configs.get_config(name)
    for field, kind in CONTRACT.items():
        assert field in config, f"{name} lacks {field}"
        assert isinstance(config[field], kind), f"{name}.{field} = {config[field]!r}"
    assert config.name == name
    assert config.tier == "cpu"
    assert config.task in DATA_TASKS
    assert config.scheme in ltw.SCHEMES
    assert config.loss in LOSS_FUNCTIONS
    assert config.seeds == [0, 1, 2]
    mlt_cutoff = tfds_tasks.MLT_CUTOFFS.get(config.task)  # the MLT protocols fix theirs
    assert config.cutoffs == ([mlt_cutoff] if mlt_cutoff else [6, 12, 25, 50])
    assert {"seed", "data_dir", "cache_dir"} <= set(config.data)
    assert set(config.model) >= {
        "name",
        "stage_sizes",
        "num_filters",
        "block",
        "small_input",
        "dtype",
    }
    assert config.model.block in ("basic", "bottleneck")
    assert config.bucket_head == 100 and config.bucket_tail == 20
    json.dumps(config.to_dict())  # JSON-safe, as stored in every record
    assert copy.deepcopy(config).to_dict() == config.to_dict()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_params_are_accepted_by_the_functions_that_use_them(name):
    config = configs.get_config(name)
    scheme_kw = inspect.signature(ltw.SCHEMES[config.scheme]).parameters
    assert set(config.scheme_params) <= set(scheme_kw), name
    loss_kw = inspect.signature(LOSS_FUNCTIONS[config.loss]).parameters
    assert set(config.loss_params) <= set(loss_kw), name
    module_name, function_name = DATA_TASKS[config.task].split(":")
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"data module {module_name} is not in this checkout")
    loader = getattr(importlib.import_module(module_name), function_name)
    loader_kw = inspect.signature(loader).parameters
    assert set(config.data) <= set(loader_kw), (name, set(config.data) - set(loader_kw))


def test_losses_train_without_label_weighting_and_name_their_hyperparameters():
    focal = configs.get_config("catalog_focal")
    assert (focal.scheme, focal.loss, focal.loss_params.gamma) == ("none", "focal", 2.0)
    asl = configs.get_config("catalog_asymmetric")
    assert (asl.loss_params.gamma_pos, asl.loss_params.gamma_neg, asl.loss_params.clip) == (
        0.0,
        4.0,
        0.05,
    )
    for name in ("focal", "asymmetric", "distribution_balanced", "logit_adjusted"):
        config = configs.get_config(f"catalog_{name}")
        assert config.scheme == "none" and config.loss == name
    # The config's defaults are the library's: the record then states the values actually used.
    db = configs.get_config("catalog_distribution_balanced")
    defaults = inspect.signature(losses.distribution_balanced).parameters
    for key, value in db.loss_params.items():
        assert defaults[key].default == value


def test_weighting_schemes_train_with_bce():
    for name in ("none", "inverse", "inverse_sqrt", "class_balanced", "proposed"):
        config = configs.get_config(f"catalog_{name}")
        assert (config.scheme, config.loss) == (name, "bce")


def test_proposed_sweeps_four_betas_and_others_sweep_nothing():
    config = configs.get_config("catalog_proposed")
    assert config.sweep.to_dict() == {"scheme_params": {"beta": [0.9, 0.99, 0.999, 0.9999]}}
    for name in ALL_NAMES:
        if not name.endswith("_proposed"):
            assert configs.get_config(name).sweep.to_dict() == {}, name


def test_tier_by_suffix_equals_tier_by_argument():
    for tier in tiers.TIERS:
        by_suffix = configs.get_config(f"catalog_step_inverse_sqrt_{tier}")
        by_arg = configs.get_config("catalog_step_inverse_sqrt", tier=tier)
        assert by_suffix.to_dict() == by_arg.to_dict()
        assert by_arg.tier == tier and by_arg.name == "catalog_step_inverse_sqrt"
    assert configs.get_config("catalog_none_cpu", tier="cpu").tier == "cpu"


def test_tier_conflict_and_unknown_tier_are_errors():
    with pytest.raises(ValueError, match="names tier 'gpu' but tier 'smoke'"):
        configs.get_config("catalog_none_gpu", tier="smoke")
    with pytest.raises(ValueError, match=r"Unknown tier 'tpu'.*cpu, gpu, smoke"):
        configs.get_config("catalog_none", tier="tpu")


def test_tiers_size_the_model_and_data():
    cpu = configs.get_config("catalog_none")
    gpu = configs.get_config("catalog_none", tier="gpu")
    smoke = configs.get_config("catalog_none", tier="smoke")
    assert cpu.data.image_size == 28 and gpu.data.image_size >= 56
    assert gpu.model.stage_sizes == [2, 2, 2, 2] and gpu.model.num_filters == 64  # ResNet-18
    assert sum(smoke.model.stage_sizes) <= sum(cpu.model.stage_sizes)
    assert smoke.num_epochs <= cpu.num_epochs and smoke.data.head_count < cpu.data.head_count
    assert (smoke.seeds, smoke.cutoffs) == ([0], [6])
    # Tiers write to separate folders, so a smoke record never stands in for a cpu one.
    assert len({cpu.output_dir, gpu.output_dir, smoke.output_dir}) == 3
    assert cpu.output_dir == "runs"


@pytest.mark.parametrize(
    ("wrong", "expected"),
    [
        ("catalog_propsed", "catalog_proposed"),
        ("catlog_inverse", "catalog_inverse"),
        ("sleevetype_focall", "sleevetype_focal"),
    ],
)
def test_unknown_name_suggests_the_closest(wrong, expected):
    with pytest.raises(ValueError, match=f"Unknown config '{wrong}'") as info:
        configs.get_config(wrong)
    assert expected in str(info.value).split("Closest:")[1].split(".")[0]


def test_parse_config_name_splits_tasks_with_underscores():
    assert configs.parse_config_name("catalog_step_inverse_sqrt") == (
        "catalog_step",
        "inverse_sqrt",
        None,
    )
    assert configs.parse_config_name("catalog_inverse_sqrt_smoke") == (
        "catalog",
        "inverse_sqrt",
        "smoke",
    )


def test_every_task_scheme_and_tier_is_documented():
    for fn in [*tasks.TASKS.values(), *schemes.SCHEMES.values(), *tiers.TIERS.values()]:
        assert fn.__doc__ and len(fn.__doc__.split()) >= 5, fn.__name__
    assert "python -m experiments.run" in configs.__doc__


def test_describe_says_how_to_run_and_how_long():
    text = configs.describe("catalog_proposed")
    assert "48 runs" in text and "python -m experiments.run --config catalog_proposed" in text
    assert f"{48 * tiers.CPU_SECONDS_PER_RUN / 60:.0f} min" in text
    assert "12 runs" in configs.describe("catalog_focal") and "gamma = 2" in configs.describe(
        "catalog_focal"
    )
    assert "1 runs" in configs.describe("catalog_none_smoke")
