"""Models of the benchmark suite: Flax ResNets with a multi-label head.

`create_model(model_config, num_labels)` builds the model a config's `model` block describes:

  name: "resnet" (shape from stage_sizes and block) or a preset "resnet18" | "resnet34" |
        "resnet50" (the Flax ImageNet example's shapes; stage_sizes/block then come from the
        preset), or "linear" (the linear floor on the pixels: only dtype applies, the ResNet
        fields are ignored so a reference run keeps its network's config)
  stage_sizes: [int], block: "basic" | "bottleneck", num_filters: int,
  small_input: bool (3x3 stem without max-pool, for 28-64 px images), dtype: "float32" | "bfloat16"
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from experiments.models.linear import Linear
from experiments.models.resnet import (
    PRESETS,
    BottleneckResNetBlock,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNetBlock,
    model_dtype,
    resnet,
)

__all__ = [
    "MODEL_NAMES",
    "BottleneckResNetBlock",
    "Linear",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNetBlock",
    "create_model",
    "parameter_count",
    "resnet",
]

MODEL_NAMES = ("resnet", *PRESETS, "linear")


def create_model(model_config: Mapping[str, Any], num_labels: int) -> ResNet | Linear:
    """The Flax module described by a config's `model` block, with `num_labels` logits."""
    cfg = dict(model_config)
    name = cfg.pop("name", "resnet")
    cfg.pop("init_from", None)  # where the initial weights come from: experiments.pretrained
    if name not in MODEL_NAMES:
        close = difflib.get_close_matches(str(name), MODEL_NAMES, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Valid models: {', '.join(MODEL_NAMES)}.")
    if name == "linear":
        return Linear(num_labels=num_labels, dtype=model_dtype(cfg.get("dtype", "float32")))
    if name in PRESETS:
        cfg["stage_sizes"], cfg["block"] = PRESETS[name]
    if "stage_sizes" not in cfg:
        raise ValueError(
            "model.stage_sizes is missing: set it (e.g. [1, 1, 1]) or use a preset name "
            f"({', '.join(PRESETS)})."
        )
    known = {"stage_sizes", "block", "num_filters", "small_input", "dtype"}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(
            f"Unknown model field(s) {sorted(unknown)}; a ResNet takes {sorted(known)}."
        )
    return resnet(num_labels=num_labels, **cfg)


def parameter_count(model_config: Mapping[str, Any], num_labels: int, image_shape) -> int:
    """Trainable parameters of the model a config describes, for images of `image_shape`
    (H, W, channels); computed from shapes alone (nothing is initialised)."""
    import jax
    import jax.numpy as jnp

    model = create_model(model_config, num_labels)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False)
    )
    return sum(int(math.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))
