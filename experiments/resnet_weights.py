"""ResNet weights files of the PyTorch libraries (torchvision, timm): reading and converting them.

Two file formats, told apart by the suffix (`file_format`):

- `.pth` / `.pt`: a `state_dict` saved with `torch.save(model.state_dict(), path)`; reading it
  needs PyTorch (an optional dependency);
- `.safetensors`: the Hugging Face safetensors format, read with the `safetensors` package's
  NumPy API (optional extra `[safetensors]`; no PyTorch needed). float32, float16 and float64
  tensors are read; bfloat16 ones are not (NumPy has no bfloat16).

Both hold the parameters under torchvision's names. timm's ResNet-18/34/50 (`resnet18`,
`resnet34`, `resnet50` and their pretrained tags, e.g. `timm/resnet18.a1_in1k` on the Hugging
Face hub) use the same names (timm's ResNet began as a copy of torchvision's), so one mapping
serves both; timm's variants with another stem or shortcut (`resnet50d`, deep-stem `resnet*c`,
...) are other networks and stop with an error naming their first unknown parameter.

Conversion to the suite's Flax ResNet (`torchvision_to_flax`):

- conv kernels OIHW -> HWIO; `conv1` -> `conv_init`, `bn1` -> `bn_init`;
- `layerS.B.convK`/`bnK` -> `ResNetBlock_N`/`BottleneckResNetBlock_N` `Conv_{K-1}`/`BatchNorm_{K-1}`
  (blocks numbered in order over all stages);
- `downsample.0`/`downsample.1` -> `conv_proj`/`norm_proj`;
- BatchNorm weight/bias -> params scale/bias, running_mean/running_var -> batch_stats mean/var;
  `num_batches_tracked` is ignored;
- the head `fc` is re-initialised (kept from `variables`) unless `map_head=True` (for tests).

A 1-channel model (Fashion-MNIST) takes the sum of the stem's RGB kernels over the input
channels: a grey image then gives exactly the activations that the RGB network gives for that
image copied to three channels. Any other mismatch raises a ValueError naming the first
mismatching parameter and the fix.

`file_shapes` gives a file's parameters as zero-copy stand-ins of the right shapes (read from
the safetensors header without the data), so that config validation can run the very same
conversion, and so the same checks, before any run.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

TORCH_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIX = ".safetensors"
TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
SAFETENSORS_INSTALL = 'pip install safetensors (or pip install -e ".[experiments,safetensors]")'
_SAVE_HINT = "save one with torch.save(model.state_dict(), path)"
# safetensors dtype names NumPy reads, and what to do about the others.
_SAFETENSORS_FLOATS = ("F32", "F16", "F64")
_CONVERT_HINT = (
    "convert it to float32, e.g. with torch: safetensors.torch.save_file("
    "{k: v.float() for k, v in safetensors.torch.load_file(path).items()}, 'float32.safetensors')"
)


def file_format(path: str | Path) -> str | None:
    """ "torchvision" (a torch.save file), "safetensors", or None for another suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "torchvision"
    if suffix == SAFETENSORS_SUFFIX:
        return "safetensors"
    return None


def missing_package(fmt: str) -> str | None:
    """The install line of the package that reading `fmt` needs, or None if it is installed."""
    import importlib.util

    package, install = {
        "torchvision": ("torch", TORCH_INSTALL),
        "safetensors": ("safetensors", SAFETENSORS_INSTALL),
    }[fmt]
    return None if importlib.util.find_spec(package) else f"needs {package}: {install}"


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The parameters of a `.pth`/`.pt` or `.safetensors` file by torchvision name, as NumPy."""
    if file_format(path) == "safetensors":
        return load_safetensors(path)
    return load_state_dict(path)


def file_shapes(path: str | Path) -> dict[str, np.ndarray]:
    """The file's parameters as read-only zero-copy float32 arrays of their shapes (a
    safetensors file's header only; a torch file is read whole): enough for the conversion's
    checks, never for training."""
    if file_format(path) == "safetensors":
        shapes = _safetensors_header(path)
    else:
        shapes = {k: v.shape for k, v in load_state_dict(path).items()}
    zero = np.zeros((), np.float32)
    return {k: np.broadcast_to(zero, shape) for k, shape in shapes.items()}


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a `.pth`/`.pt` state_dict with torch (optional dependency) as NumPy arrays."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"reading {str(path)!r} needs PyTorch: {TORCH_INSTALL}") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        problem = torch_file_problem(path)  # plainer words than torch's for what is no file of it
        if problem is not None:
            raise ValueError(problem) from err
        raise ValueError(
            f"{str(path)!r} cannot be read as a torch state_dict ({type(err).__name__}: "
            f"{first_line(err)}); {_SAVE_HINT}"
        ) from err
    if not isinstance(state, dict) or not all(hasattr(v, "numpy") for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state_dict of tensors; {_SAVE_HINT}")
    if not state:
        raise ValueError(f"{str(path)!r} holds an empty state_dict; {_SAVE_HINT}")
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def torch_file_problem(path: str | Path) -> str | None:
    """Without PyTorch: why `path` cannot be a file that torch.save wrote (empty, or neither
    its zip archive nor a legacy pickle), or None if it may be one."""
    path = Path(path)
    if path.stat().st_size == 0:
        return f"{str(path)!r} is empty; {_SAVE_HINT}"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith("data.pkl") for n in archive.namelist()):
                return None
        return f"{str(path)!r} is a zip archive without the data.pkl of torch.save; {_SAVE_HINT}"
    with open(path, "rb") as f:
        if f.read(1) == b"\x80":  # a pickle (torch.save's legacy format)
            return None
    return (
        f"{str(path)!r} is not a file torch.save writes (no zip archive, no pickle); {_SAVE_HINT}"
    )


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a `.safetensors` file with the safetensors package's NumPy API."""
    _safetensors_header(path)  # the clear errors (package, header, dtypes) first
    from safetensors.numpy import load_file

    return load_file(str(path))


def _safetensors_header(path: str | Path) -> dict[str, tuple[int, ...]]:
    """name -> shape of a safetensors file, from its header; a ValueError if it holds none or
    tensors NumPy cannot read."""
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError as err:
        raise ImportError(
            f"reading {str(path)!r} needs safetensors: {SAFETENSORS_INSTALL}"
        ) from err
    try:
        with safe_open(str(path), framework="numpy") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            specs = {k: (tuple(s.get_shape()), s.get_dtype()) for k, s in slices.items()}
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{str(path)!r} cannot be read as a safetensors file ({first_line(err)}); save one "
            "with safetensors.torch.save_file(model.state_dict(), path) or download a model's "
            "model.safetensors"
        ) from err
    if not specs:
        raise ValueError(f"{str(path)!r} holds no tensors")
    other = sorted({dtype for _, dtype in specs.values()} - set(_SAFETENSORS_FLOATS) - {"I64"})
    if other:
        raise ValueError(
            f"{str(path)!r} holds {', '.join(other)} tensors, which NumPy cannot read or which "
            f"are not weights (float32/16/64 only); {_CONVERT_HINT}"
        )
    return {k: shape for k, (shape, _) in specs.items()}


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# ---------------------------------------------------------------------------------------------
# torchvision (and timm) names -> the suite's Flax ResNet
# ---------------------------------------------------------------------------------------------


def flatten(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """A nested mapping as {path tuple: leaf}."""
    if hasattr(tree, "items"):
        flat: dict[tuple[str, ...], Any] = {}
        for k, v in tree.items():
            flat.update(flatten(v, (*prefix, str(k))))
        return flat
    return {prefix: tree}


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
    done: set[tuple[str, ...]] = set()  # (collection, *path, name) of every leaf set
    for key, value in state_dict.items():
        module, _, field = key.rpartition(".")
        if field == "num_batches_tracked":
            continue
        path = _flax_path(module, names)
        if path is None:
            raise ValueError(
                f"torchvision parameter {key!r} has no counterpart in the suite's ResNet: check "
                "model.stage_sizes/model.block match the checkpoint (resnet18/34/50; timm's "
                "variants with another stem or shortcut, such as resnet50d, are other networks)"
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
        if name not in node:
            raise ValueError(
                f"torchvision parameter {key!r} -> {'/'.join(path)}/{name} is missing in the "
                "suite's ResNet: the architectures differ; use the matching model preset"
            )
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
        done.add(("params" if target is params else "batch_stats", *path, name))
    for collection, tree in (("params", params), ("batch_stats", stats)):
        for path in flatten(tree):
            if path[0] == "head" and not map_head:
                continue
            if (collection, *path) not in done:
                raise ValueError(
                    f"first mismatching parameter: the suite's {collection}/{'/'.join(path)} "
                    "has no counterpart in the torchvision checkpoint (is it of a smaller "
                    "network?); use the model preset of the checkpoint (resnet18/34/50)"
                )
    out = dict(variables)
    out["params"] = params
    if "batch_stats" in variables:
        out["batch_stats"] = stats
    return out


def _deep_copy(tree: Any) -> Any:
    if hasattr(tree, "items"):
        return {k: _deep_copy(v) for k, v in tree.items()}
    return tree
