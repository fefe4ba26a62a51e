"""Initial weights from elsewhere: a torchvision ResNet `state_dict` or a suite run's checkpoint.

`initial_variables(config, variables) -> (variables, provenance)` is the trainer's one entry
point. With `config.model.init_from` None it returns `variables` unchanged and provenance None.
Otherwise the backbone (every parameter and BatchNorm statistic but the head) comes from the
source, and the head `head` keeps its fresh initialisation from `variables` (the task's labels
are those of the run, whatever the source was trained on; the head is re-initialised always,
also when the source has the same label count, since its labels mean something else).

Accepted `model.init_from` values (`resolve_source` checks them; config validation calls it):

- a file ending in `.pth` or `.pt`: a torchvision ResNet-18/34/50 `state_dict` saved with
  `torch.save(model.state_dict(), path)`, read with torch (an optional dependency) and converted
  by `torchvision_to_flax`. The config must be the same architecture (`model.name` "resnet18" /
  "resnet34" / "resnet50" or the equivalent stage_sizes/block, num_filters 64,
  small_input False) with `model.padding="torchvision"`, so that the network computes what
  torchvision's does;
- a suite run folder (`<output_dir>/<config>/<variant>/cutoff<k>/seed<s>`, holding
  `checkpoints/`), or its `checkpoints` folder: the checkpoint of its best epoch by validation
  mAP (the one its final evaluation used), found from the curves saved in its latest checkpoint;
- one checkpoint step folder (`.../checkpoints/<step>`): that step.

A suite checkpoint's params and batch_stats are read with orbax (as NumPy arrays, whatever the
source's devices); its optimiser state is not used. The network must have the source's shape
(stage_sizes, block, num_filters, small_input, input channels); the source run's padding is
checked against the config's when the run folder holds its record.

Conversion from torchvision (`torchvision_to_flax`):

- conv kernels OIHW -> HWIO; `conv1` -> `conv_init`, `bn1` -> `bn_init`;
- `layerS.B.convK`/`bnK` -> `ResNetBlock_N`/`BottleneckResNetBlock_N` `Conv_{K-1}`/`BatchNorm_{K-1}`
  (blocks numbered in order over all stages);
- `downsample.0`/`downsample.1` -> `conv_proj`/`norm_proj`;
- BatchNorm weight/bias -> params scale/bias, running_mean/running_var -> batch_stats mean/var;
- the head `fc` is re-initialised (kept from `variables`) unless `map_head=True` (for tests).

A 1-channel model (Fashion-MNIST) takes the sum of the stem's RGB kernels over the input
channels: a grey image then gives exactly the activations that the RGB network gives for that
image copied to three channels. Any other mismatch raises a ValueError naming the first
mismatching parameter and the fix: a checkpoint parameter without a counterpart, a shape that
differs, or a parameter of the suite's network that the checkpoint does not provide.

Provenance (stored by the trainer in the record's `data.provenance.init_from`):
`{"format": "torchvision" | "suite", "name": file or folder name, "sha256": ..., "step": int}`
(`step` for suite checkpoints only). For a file, sha256 is the SHA-256 of its bytes. For a
suite checkpoint it is `folder_sha256` of the restored step folder: the SHA-256 of the lines
`<relative POSIX path>\\0<SHA-256 of the file>\\n` over every file below it, sorted by path.
Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

TORCH_SUFFIXES = (".pth", ".pt")
_TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
_SOURCE_FORMS = (
    "a torchvision ResNet state_dict file (.pth or .pt), a suite run folder (holding "
    "checkpoints/), its checkpoints folder, or one checkpoint step folder (checkpoints/<step>)"
)


@dataclasses.dataclass(frozen=True)
class InitSource:
    """Where initial weights come from: `format` "torchvision" (path: the file) or "suite"
    (path: the checkpoints folder; step: the step folder to read, None for the best epoch)."""

    format: str
    path: Path
    step: int | None = None


def resolve_source(init_from: str | Path) -> InitSource:
    """The source `init_from` names; a ValueError saying which forms are accepted otherwise."""
    path = Path(init_from).expanduser()
    if not path.exists():
        raise ValueError(f"model.init_from {str(init_from)!r} does not exist; give {_SOURCE_FORMS}")
    if path.is_file():
        if path.suffix.lower() in TORCH_SUFFIXES:
            return InitSource("torchvision", path)
        raise ValueError(
            f"model.init_from {str(init_from)!r} is a file without a .pth/.pt suffix; give "
            f"{_SOURCE_FORMS}"
        )
    from experiments.checkpoints import CHECKPOINT_DIR

    if (path / CHECKPOINT_DIR).is_dir():
        return InitSource("suite", path / CHECKPOINT_DIR)
    if (path / "state").is_dir() and path.name.isdigit():
        return InitSource("suite", path.parent, int(path.name))
    if _steps(path):
        return InitSource("suite", path)
    raise ValueError(
        f"model.init_from {str(init_from)!r} is a folder holding no suite checkpoint; give "
        f"{_SOURCE_FORMS}"
    )


def source_problems(model_config: Any) -> list[str]:
    """Config-time problems of `model.init_from` (path, format, torch, padding), one line each."""
    init_from = model_config.get("init_from")
    if init_from is None:
        return []
    if not isinstance(init_from, str | Path) or not str(init_from):
        return [f"model.init_from must be None or a path; got {init_from!r}"]
    if model_config.get("name") == "linear":
        return ["model.init_from needs a ResNet; the linear model has no backbone"]
    try:
        source = resolve_source(init_from)
    except ValueError as e:
        return [str(e)]
    found = []
    if source.format == "torchvision":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            found.append(f"model.init_from {str(init_from)!r} needs PyTorch: {_TORCH_INSTALL}")
        if model_config.get("padding", "same") != "torchvision":
            found.append(
                "model.init_from is a torchvision state_dict: set model.padding=torchvision "
                "(torchvision pads stride-2 convolutions symmetrically; 'same' would shift them)"
            )
    else:
        try:
            _check_padding(source.path.parent, model_config.get("padding", "same"))
        except ValueError as e:
            found.append(str(e))
    return found


def initial_variables(config: Any, variables: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(variables with the backbone from `config.model.init_from`, its provenance), or
    (`variables`, None) without init_from. The new arrays are placed like those of
    `variables` (same shardings, as `jax.make_array_from_callback` places them, which works
    on several processes too); host arrays stay NumPy."""
    model = config.model
    init_from = model.get("init_from")
    if init_from is None:
        return variables, None
    source = resolve_source(init_from)
    host = {k: _to_numpy(v) for k, v in variables.items()}
    if source.format == "torchvision":
        from experiments.models import PRESETS

        stage_sizes = PRESETS[model.name][0] if model.name in PRESETS else model.stage_sizes
        out = torchvision_to_flax(load_state_dict(source.path), host, stage_sizes=stage_sizes)
        provenance = {
            "format": "torchvision",
            "name": source.path.name,
            "sha256": file_sha256(source.path),
        }
    else:
        step = source.step if source.step is not None else best_step(source.path)
        step_dir = source.path / str(step)
        _check_padding(source.path.parent, model.get("padding", "same"))
        loaded = load_suite_checkpoint(step_dir)
        out = suite_to_flax(loaded, host, source=str(step_dir))
        provenance = {
            "format": "suite",
            "name": _run_name(source.path.parent),
            "step": int(step),
            "sha256": folder_sha256(step_dir),
        }
    return _placed_like(out, variables), provenance


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a `.pth`/`.pt` state_dict with torch (optional dependency) as NumPy arrays."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"reading {str(path)!r} needs PyTorch: {_TORCH_INSTALL}") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{str(path)!r} cannot be read as a torch state_dict ({type(err).__name__}: {err}); "
            "save one with torch.save(model.state_dict(), path)"
        ) from err
    if not isinstance(state, dict) or not all(hasattr(v, "numpy") for v in state.values()):
        raise ValueError(
            f"{str(path)!r} does not hold a state_dict of tensors; save one with "
            "torch.save(model.state_dict(), path)"
        )
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _steps(checkpoint_dir: Path) -> list[int]:
    """The finished checkpoint steps of an orbax checkpoints folder (temporary ones left out)."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in checkpoint_dir.iterdir() if p.name.isdigit() and (p / "state").is_dir()
    )


def best_step(checkpoint_dir: Path) -> int:
    """The step of the best epoch by validation mAP (`checkpoints.best_entry` of the curves
    saved in the latest checkpoint), which the run's keep policy never deletes."""
    import orbax.checkpoint as ocp

    from experiments.checkpoints import best_entry

    steps = _steps(checkpoint_dir)
    if not steps:
        raise ValueError(f"{checkpoint_dir} holds no finished checkpoint; give {_SOURCE_FORMS}")
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
        meta = checkpointer.restore(checkpoint_dir / str(steps[-1]) / "meta")
    curves = meta.get("curves") or []
    if not curves:
        raise ValueError(
            f"the run of {checkpoint_dir} has not finished an epoch yet, so it has no best "
            f"checkpoint; give one step folder ({checkpoint_dir}/<step>) instead"
        )
    step = int(best_entry(curves)["step"])
    if step not in steps:
        raise ValueError(
            f"the best epoch's checkpoint {checkpoint_dir / str(step)} is missing; give one of "
            f"the step folders {steps} instead"
        )
    return step


def load_suite_checkpoint(step_dir: Path) -> dict[str, Any]:
    """{"params", "batch_stats"} of a suite checkpoint step folder, as NumPy arrays."""
    import jax
    import orbax.checkpoint as ocp

    # orbax reads no tree metadata through a relative path (item_metadata is None).
    step_dir = Path(step_dir).absolute()

    # The step's metadata file lies one folder up; orbax warns that "state" has none.
    absl_log, quiet = logging.getLogger("absl"), _Without("_CHECKPOINT_METADATA")
    absl_log.addFilter(quiet)
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            tree = checkpointer.metadata(step_dir / "state").item_metadata.tree
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            state = checkpointer.restore(
                step_dir / "state", args=ocp.args.PyTreeRestore(restore_args=restore_args)
            )
    except Exception as err:
        raise ValueError(
            f"{step_dir} cannot be read as a suite checkpoint ({type(err).__name__}: {err}); "
            f"give {_SOURCE_FORMS}"
        ) from err
    finally:
        absl_log.removeFilter(quiet)
    if not isinstance(state, dict) or "params" not in state or "batch_stats" not in state:
        raise ValueError(f"{step_dir} holds no params and batch_stats of a suite train state")
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def suite_to_flax(
    loaded: dict[str, Any], variables: dict[str, Any], *, source: str = "the checkpoint"
) -> dict[str, Any]:
    """`variables` with every params and batch_stats leaf but the head's from `loaded`.

    Raises a ValueError naming the first leaf that is missing on either side or differs in
    shape (the networks differ), with the fix.
    """
    fix = (
        "give the config the source run's model (stage_sizes, block, num_filters, small_input) "
        "and its number of image channels"
    )
    out = dict(variables)
    for collection in ("params", "batch_stats"):
        mine = _flatten(variables.get(collection, {}))
        theirs = _flatten(loaded.get(collection, {}))
        for path in list(mine) + [p for p in theirs if p not in mine]:
            if path[0] == "head":
                continue
            name = f"{collection}/{'/'.join(path)}"
            if path not in theirs:
                raise ValueError(
                    f"first mismatching parameter: {name} of this network is not in {source}; {fix}"
                )
            if path not in mine:
                raise ValueError(
                    f"first mismatching parameter: {name} of {source} is not in this network; {fix}"
                )
            if np.shape(mine[path]) != np.shape(theirs[path]):
                raise ValueError(
                    f"first mismatching parameter: {name} has shape {np.shape(theirs[path])} in "
                    f"{source} and {np.shape(mine[path])} here; {fix}"
                )
        merged = {
            p: (v if p[0] == "head" else np.asarray(theirs[p], np.asarray(v).dtype))
            for p, v in mine.items()
        }
        out[collection] = _unflatten(merged)
    return out


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(folder: str | Path) -> str:
    """SHA-256 of the lines `<relative POSIX path>\\0<file SHA-256>\\n` over every file below
    `folder`, sorted by path: equal for two copies of a checkpoint, wherever they lie."""
    folder = Path(folder)
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for rel, p in files:
        digest.update(f"{rel}\0{file_sha256(p)}\n".encode())
    return digest.hexdigest()


def _run_name(run_dir: Path) -> str:
    """A run folder's name for the record: the last four parts
    (<config>/<variant>/cutoff<k>/seed<s>), no machine-specific prefix."""
    return "/".join(run_dir.resolve().parts[-4:])


def _check_padding(run_dir: Path, padding: str) -> None:
    """The source run's model.padding (from its record, when it has one) must be `padding`."""
    from experiments import records

    record_path = run_dir / records.RECORD_FILENAME
    if not record_path.is_file():
        return
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return
    model = (record.get("config") or {}).get("model") or {}
    theirs = model.get("padding", records.ADDED_FIELD_DEFAULTS["model.padding"])
    if theirs != padding:
        raise ValueError(
            f"the source run {run_dir} was trained with model.padding={theirs!r}, this config "
            f"has {padding!r}; set model.padding={theirs}"
        )


class _Without(logging.Filter):
    """Drops log records whose message contains `text`."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _to_numpy(tree: Any) -> Any:
    if hasattr(tree, "items"):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def _flatten(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if hasattr(tree, "items"):
        flat: dict[tuple[str, ...], Any] = {}
        for k, v in tree.items():
            flat.update(_flatten(v, (*prefix, str(k))))
        return flat
    return {prefix: tree}


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


def _placed_like(new: Any, like: Any) -> Any:
    """`new` (NumPy leaves) with each leaf placed as the same leaf of `like` where that is a
    jax.Array."""
    import jax

    def place(value, old):
        if not isinstance(old, jax.Array):
            return value
        value = np.asarray(value, old.dtype)
        return jax.make_array_from_callback(old.shape, old.sharding, lambda index: value[index])

    return jax.tree.map(place, new, like)


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
        for path in _flatten(tree):
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
