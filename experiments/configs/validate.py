"""Validation of a resolved config before any run starts (`--dry-run` included).

`problems(config)` lists every problem of one resolved run config (varied values applied): types
and ranges of the trainer's fields, unknown keys at any depth (the fixed blocks against the base
config; `scheme_params` and `loss_params` against the keyword parameters of the method's scheme
and loss; `data` against the task loader's signature), the values of the scheme's, the loss's
and the task's parameters, and `model.init_from` (`experiments.pretrained.source_problems`: the
path is a form it accepts, the package that reads it is installed, model.padding fits, and the
file or checkpoint opens and matches the config's network, parameter by parameter). The scheme
and loss check their own values: they are called once on a tiny made-up label count, so the
library's own range checks (beta in [0, 1], ...) are the ones applied. `check(config)` raises
one ValueError listing them all.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import methods, pretrained
from experiments.augment import AUGMENTATIONS
from experiments.configs import base, tasks
from experiments.configs.base import flat_values
from experiments.data import get_task_loader
from experiments.data.catalog import check_classes
from ltweights import weights

# Blocks whose keys are keyword arguments of a loader, scheme or loss: `--set` may add keys.
OPEN_BLOCKS = ("data", "scheme_params", "loss_params")
# Loader arguments the runner supplies itself, never from config.data.
_LOADER_SUPPLIED = ("cutoff",)

# field -> (check, what it must be)
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "num_epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "eval_batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "learning_rate": (lambda v: _num(v) and v > 0, "a finite number > 0"),
    "warmup_epochs": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "a finite number >= 0"),
    "momentum": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "grad_clip": (lambda v: _num(v) and v >= 0, "a finite number >= 0 (0 disables)"),
    "optimizer": (lambda v: v in ("adamw", "sgd"), "'adamw' or 'sgd'"),
    "augment": (lambda v: v in AUGMENTATIONS, " or ".join(map(repr, AUGMENTATIONS))),
    "input_prefetch": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: no prefetch)"),
    "checkpoint_every_steps": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: epoch ends)"),
    "keep_checkpoints": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "keep_best": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bucket_head": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bucket_tail": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "seeds": (lambda v: _int_list(v, 0), "a non-empty list of distinct integers >= 0"),
    "cutoffs": (lambda v: _int_list(v, 1), "a non-empty list of distinct integers >= 1"),
    "model.name": (lambda v: v in ("resnet", "linear"), "'resnet' or 'linear'"),
    "model.stage_sizes": (lambda v: _int_list(v, 1, distinct=False), "a list of integers >= 1"),
    "model.num_filters": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "model.block": (lambda v: v in ("basic", "bottleneck"), "'basic' or 'bottleneck'"),
    "model.small_input": (lambda v: isinstance(v, bool), "True or False"),
    "model.dtype": (
        lambda v: v in ("float32", "bfloat16"),
        "'float32' or 'bfloat16' (compute dtype; parameters and loss stay float32; float16 would "
        "need loss scaling, which the trainer does not do)",
    ),
    "model.padding": (
        lambda v: v in ("same", "torchvision"),
        "'same' (XLA padding, the default) or 'torchvision' (symmetric, for torchvision weights)",
    ),
    "data.seed": (lambda v: v is None or (_int(v) and v >= 0), "None or an integer >= 0"),
    "backbone_lr_scale": (
        lambda v: _num(v) and v > 0,
        "a finite number > 0 (the backbone's fraction of the head's learning rate; 1.0: the same)",
    ),
    "freeze_backbone_epochs": (
        lambda v: _num(v) and v >= 0,
        "a finite number >= 0 (epochs before the backbone trains; 0: from the start)",
    ),
    "finetune.backbone_lr_scale": (
        lambda v: v is None or (_num(v) and v > 0),
        "None or a finite number > 0",
    ),
    "finetune.freeze_backbone_epochs": (
        lambda v: v is None or (_num(v) and v >= 0),
        "None or a finite number >= 0",
    ),
    "finetune.learning_rate": (lambda v: v is None or (_num(v) and v > 0), "None or a number > 0"),
}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int_list(v: Any, low: int, *, distinct: bool = True) -> bool:
    if not isinstance(v, list | tuple) or not v or not all(_int(x) and x >= low for x in v):
        return False
    return not distinct or len(set(v)) == len(v)


def _unknown(block: str, given: Any, valid: dict[str, Any], owner: str) -> list[str]:
    import difflib

    found = []
    for key in sorted(set(given) - set(valid)):
        close = difflib.get_close_matches(key, list(valid), n=1)
        hint = f" (did you mean {block}.{close[0]}?)" if close else ""
        found.append(
            f"{block}.{key} is not a parameter of {owner}{hint}; it takes "
            f"{', '.join(sorted(valid)) or 'none'}"
        )
    return found


def _fixed_fields(config: ml_collections.ConfigDict) -> list[str]:
    """Unknown or missing fields outside the open blocks and `vary`."""
    reference = {p for p in flat_values(base.get_config())}
    reference |= {"data", "vary", "scheme_params", "loss_params"}
    found = []
    for path in flat_values(config):
        top = path.split(".")[0]
        if top in (*OPEN_BLOCKS, "vary") or path in reference:
            continue
        found.append(f"{path} is not a config field")
    return found


def _probe_scheme_and_loss(config: ml_collections.ConfigDict) -> list[str]:
    """Calls the scheme and the loss once on a made-up 2-label count, with the inputs the
    trainer would supply (`methods.loss_inputs`), so that their own checks judge the parameter
    values."""

    counts = weights.LabelCounts(positives=np.array([3, 1]), num_examples=8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pos, neg = weights.scheme_weights(config.scheme, counts, **config.scheme_params)
    except (TypeError, ValueError, KeyError) as e:
        return [f"scheme_params for scheme {config.scheme!r}: {e}"]
    fn = methods.LOSSES[config.loss]
    supplied = methods.loss_inputs(config.loss, counts, pos, neg)
    kwargs: dict[str, Any] = {**config.loss_params, **supplied.per_label, **supplied.static}
    logits, labels = jnp.zeros((2, 2)), jnp.asarray([[1.0, 0.0], [0.0, 1.0]])
    try:
        values = np.asarray(fn(logits, labels, **kwargs))
    except (TypeError, ValueError) as e:
        return [f"loss_params for loss {config.loss!r}: {e}"]
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        return [f"loss_params {dict(config.loss_params)} make {config.loss} non-finite or < 0"]
    return []


def _finetune_problems(flat: dict[str, Any]) -> list[str]:
    """The frozen epochs must leave the backbone epochs to train (the recipe's value too)."""
    found = []
    epochs = flat.get("num_epochs")
    if not _int(epochs):
        return found
    for path in ("freeze_backbone_epochs", "finetune.freeze_backbone_epochs"):
        value = flat.get(path)
        if _num(value) and value >= epochs:
            found.append(
                f"{path} must be < num_epochs = {epochs} (the backbone would never train); got "
                f"{value!r}: lower it, e.g. --set {path}=1, or raise num_epochs"
            )
    return found


def _data_fields(config: ml_collections.ConfigDict) -> list[str]:

    valid = methods.keyword_parameters(get_task_loader(config.task), _LOADER_SUPPLIED)
    found = _unknown("data", config.data, valid, f"the {config.task} loader")
    for key, value in config.data.items():
        default = valid[key].default if key in valid else None
        if key == "seed" or value is None or default in (None, inspect.Parameter.empty):
            continue
        if isinstance(default, bool) and not isinstance(value, bool):
            found.append(f"data.{key} must be True or False; got {value!r}")
        elif _int(default) and not (_int(value) and value >= 1):
            found.append(f"data.{key} must be an integer >= 1; got {value!r}")
        elif isinstance(default, float) and key.endswith("fraction"):
            if not (_num(value) and 0 <= value < 1):
                found.append(f"data.{key} must be a fraction in [0, 1); got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            found.append(f"data.{key} must be a string; got {value!r}")
    if "classes" in valid and config.data.get("classes") is not None:
        try:
            check_classes(config.data.classes)
        except ValueError as e:
            found.append(str(e).rstrip("."))
    return found


def _image_channels(config: ml_collections.ConfigDict) -> int | None:
    """The channels of the task's images where the config fixes them (1 for the Fashion-MNIST
    catalogs; the loader's `channels`, set or by default; 3 for loaders without one, whose
    photos are RGB); None where the dataset decides."""

    if tasks.TASKS[config.task].fashion_mnist_items:
        return 1
    loader = methods.keyword_parameters(get_task_loader(config.task), _LOADER_SUPPLIED)
    if "channels" not in loader:
        return 3
    channels = config.data.get("channels", loader["channels"].default)
    return channels if channels in (1, 3) else None


def problems(config: ml_collections.ConfigDict) -> list[str]:
    """Every problem of the resolved run config, one line each ([] when it is valid)."""
    if config.get("task") not in tasks.TASKS:
        return [f"task {config.get('task')!r} is not one of {', '.join(tasks.TASKS)}"]
    if config.get("method") not in methods.METHODS:
        return [f"method {config.get('method')!r} is not one of {', '.join(methods.METHODS)}"]
    if config.get("loss") not in methods.LOSSES:
        return [f"loss {config.get('loss')!r} is not one of {', '.join(methods.LOSSES)}"]
    flat = flat_values(config)
    found = _fixed_fields(config)
    for path, (ok, what) in _RANGES.items():
        if path in flat and not ok(flat[path]):
            found.append(f"{path} must be {what}; got {flat[path]!r}")
    if config.get("augment") == "cells" and not tasks.TASKS[config.task].fashion_mnist_items:
        found.append(
            f"augment 'cells' shuffles the 2 x 2 items of catalog images; task {config.task} "
            "has photos: use 'flip' or 'none'"
        )
    if methods.METHODS[config.method].balanced_data:
        head = config.data.get("head_count")
        if list(config.cutoffs) != [head]:
            found.append(
                f"method {config.method} trains on balanced data: cutoffs must be "
                f"[data.head_count] = [{head}]; got {list(config.cutoffs)} (use --cutoffs {head})"
            )
    if isinstance(config.get("model"), ml_collections.ConfigDict):
        found += pretrained.source_problems(config.model, channels=_image_channels(config))
    found += _finetune_problems(flat)
    if _num(flat.get("bucket_tail")) and _num(flat.get("bucket_head")):
        if flat["bucket_tail"] > flat["bucket_head"]:
            found.append("bucket_tail must be <= bucket_head")

    if config.scheme not in weights.SCHEMES:
        return [f"scheme {config.scheme!r} is not one of {', '.join(weights.SCHEMES)}"]
    scheme_valid = methods.keyword_parameters(
        weights.SCHEMES[config.scheme], ("positives", "num_examples")
    )
    found += _unknown("scheme_params", config.scheme_params, scheme_valid, config.scheme)
    loss_valid = methods.keyword_parameters(methods.LOSSES[config.loss], methods.SUPPLIED_LOSS_ARGS)
    found += _unknown("loss_params", config.loss_params, loss_valid, config.loss)
    found += _data_fields(config)
    if not found:  # the probe needs known keys
        found += _probe_scheme_and_loss(config)
    return found


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError listing every problem of `config` (see `problems`)."""
    found = problems(config)
    if found:
        raise ValueError(
            f"config {config.get('name')} is not valid:\n  "
            + "\n  ".join(found)
            + "\nFix these with --set (e.g. --set num_epochs=12); --show-config prints every "
            "field."
        )
