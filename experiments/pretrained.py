"""Initialise the suite's Flax ResNet from a torchvision ResNet `state_dict`.

`torchvision_to_flax(state_dict, variables)` maps torchvision's names onto the suite's parameter
tree (experiments/models/resnet.py) and returns new variables:

- conv kernels OIHW -> HWIO; `conv1` -> `conv_init`, `bn1` -> `bn_init`;
- `layerS.B.convK`/`bnK` -> `ResNetBlock_N`/`BottleneckResNetBlock_N` `Conv_{K-1}`/`BatchNorm_{K-1}`
  (blocks numbered in order over all stages);
- `downsample.0`/`downsample.1` -> `conv_proj`/`norm_proj`;
- BatchNorm weight/bias -> params scale/bias, running_mean/running_var -> batch_stats mean/var;
- the head `fc` is re-initialised (kept from `variables`) unless `map_head=True`.

A 1-channel model takes the sum of the stem's RGB kernels over the input channels (a grey image
copied to three channels gives the same activations). Any other mismatch of names or shapes
raises a ValueError naming the first mismatching parameter.

Not yet wired into the trainer (`model.init_from`); torch is needed only by `load_state_dict`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a `.pth`/`.pt` state_dict with torch (optional dependency) as NumPy arrays."""
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading {path!r} needs PyTorch: pip install torch "
            "--index-url https://download.pytorch.org/whl/cpu"
        ) from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _flax_path(key: str, block_names: dict[tuple[int, int], str]) -> tuple[str, ...] | None:
    """torchvision key (without the last field) -> flax module path, or None if unknown."""
    if key == "conv1":
        return ("conv_init",)
    if key == "bn1":
        return ("bn_init",)
    if key == "fc":
        return ("head",)
    m = re.fullmatch(r"layer(\d+)\.(\d+)\.(conv|bn|downsample\.)(\d+)", key)
    if not m:
        return None
    block = block_names.get((int(m.group(1)), int(m.group(2))))
    if block is None:
        return None
    kind, k = m.group(3), int(m.group(4))
    if kind == "downsample.":
        return (block, "conv_proj" if k == 0 else "norm_proj")
    return (block, f"{'Conv' if kind == 'conv' else 'BatchNorm'}_{k - 1}")


def _block_names(params: dict[str, Any], stage_sizes: list[int]) -> dict[tuple[int, int], str]:
    blocks = sorted(
        (n for n in params if re.fullmatch(r"\w*ResNetBlock_\d+", n)),
        key=lambda n: int(n.rsplit("_", 1)[1]),
    )
    names, i = {}, 0
    for s, size in enumerate(stage_sizes):
        for b in range(size):
            if i < len(blocks):
                names[(s + 1, b)] = blocks[i]
            i += 1
    return names


def torchvision_to_flax(
    state_dict: dict[str, Any],
    variables: dict[str, Any],
    *,
    stage_sizes: list[int],
    map_head: bool = False,
) -> dict[str, Any]:
    """Returns `variables` with the backbone (and the head if `map_head`) from `state_dict`."""
    params = _deep_copy(variables["params"])
    stats = _deep_copy(variables.get("batch_stats", {}))
    names = _block_names(params, list(stage_sizes))
    for key, value in state_dict.items():
        module, _, field = key.rpartition(".")
        if field == "num_batches_tracked":
            continue
        path = _flax_path(module, names)
        if path is None:
            raise ValueError(
                f"torchvision parameter {key!r} has no counterpart in the suite's ResNet: check "
                "model.stage_sizes/model.block match the checkpoint (resnet18/34/50)"
            )
        if path == ("head",) and not map_head:
            continue
        value = np.asarray(value, np.float32)
        if field == "weight" and value.ndim == 4:
            target, name, value = params, "kernel", value.transpose(2, 3, 1, 0)
        elif path == ("head",):
            target = params
            name, value = ("kernel", value.T) if field == "weight" else ("bias", value)
        elif field in ("weight", "bias"):
            target, name = params, "scale" if field == "weight" else "bias"
        elif field in ("running_mean", "running_var"):
            target, name = stats, "mean" if field == "running_mean" else "var"
        else:
            raise ValueError(f"torchvision parameter {key!r}: unknown field {field!r}")
        node = target
        for p in path:
            if p not in node:
                raise ValueError(
                    f"torchvision parameter {key!r} -> {'/'.join(path)} is missing in the suite's "
                    "ResNet: the architectures differ; use the matching model preset"
                )
            node = node[p]
        have = np.shape(node[name])
        if path == ("conv_init",) and name == "kernel" and have[2] == 1 and value.shape[2] == 3:
            value = value.sum(axis=2, keepdims=True)
        if tuple(have) != value.shape:
            raise ValueError(
                f"first mismatching parameter: torchvision {key!r} has shape {value.shape} after "
                f"conversion, the suite's {'/'.join(path)}/{name} has {tuple(have)}; use the model "
                "preset of the checkpoint (resnet18/34/50) and small_input=False for a 7x7 stem"
            )
        node[name] = value
    out = dict(variables)
    out["params"] = params
    if "batch_stats" in variables:
        out["batch_stats"] = stats
    return out


def _deep_copy(tree: Any) -> Any:
    if hasattr(tree, "items"):
        return {k: _deep_copy(v) for k, v in tree.items()}
    return tree
