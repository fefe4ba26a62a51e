"""Initial weights from elsewhere: a ResNet weights file (torchvision, timm) or a suite checkpoint.

`initial_variables(config, variables) -> (variables, provenance)` is the trainer's one entry
point. With `config.model.init_from` None it returns `variables` unchanged and provenance None.
Otherwise the backbone (every parameter and BatchNorm statistic but the head) comes from the
source, and the head `head` keeps its fresh initialisation from `variables` (the task's labels
are those of the run, whatever the source was trained on; the head is re-initialised always,
also when the source has the same label count, since its labels mean something else).

Accepted `model.init_from` values (`resolve_source` tells them apart):

- a ResNet-18/34/50 weights file with torchvision's parameter names (torchvision's and timm's
  ResNets share them): a `.pth`/`.pt` state_dict saved with `torch.save(model.state_dict(),
  path)` (read with torch, an optional dependency) or a `.safetensors` file (read with the
  `safetensors` package, no torch); `experiments.resnet_weights` reads and converts them. The
  config must be the same architecture (`model.name` "resnet18" / "resnet34" / "resnet50" or
  the equivalent stage_sizes/block, num_filters 64, small_input False) with
  `model.padding="torchvision"`, so that the network computes what torchvision's does;
- a suite run folder (`<output_dir>/<config>/<variant>/cutoff<k>/seed<s>`, holding
  `checkpoints/`), or its `checkpoints` folder: the checkpoint of its best epoch by validation
  mAP (the one its final evaluation used), found from the curves saved in its latest checkpoint;
- one checkpoint step folder (`.../checkpoints/<step>`): that step.

A suite checkpoint's params and batch_stats are read with orbax (as NumPy arrays, whatever the
source's devices); its optimiser state is not used. The network must have the source's shape
(stage_sizes, block, num_filters, small_input, input channels); the source run's padding is
checked against the config's when the run folder holds its record.

Config validation (`source_problems`, called by `experiments.configs.validate`, so also by
`--dry-run`) opens the source before any run: the file's tensors (a safetensors header, a whole
torch file) or the suite checkpoint's metadata, and runs the same shape checks as the run
against the config's network (`jax.eval_shape`, nothing initialised), so an empty, corrupt or
mismatched source stops there with the first mismatching parameter. Without torch a `.pth` is
checked to be a file torch.save could have written, and the missing package is named.

Provenance (stored by the trainer in the record's `data.provenance.init_from`):
`{"format": "torchvision" | "safetensors" | "suite", "name": file or folder name,
"sha256": ..., "step": int}` (`step` for suite checkpoints only). For a file, sha256 is the
SHA-256 of its bytes. For a suite checkpoint it is `folder_sha256` of the restored step folder:
the SHA-256 of the lines `<relative POSIX path>\\0<SHA-256 of the file>\\n` over every file below
it, sorted by path. Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from experiments import records, resnet_weights
from experiments.resnet_weights import first_line as _first_line
from experiments.resnet_weights import flatten, load_weights, torchvision_to_flax

_SOURCE_FORMS = (
    "a ResNet weights file of torchvision or timm (.pth/.pt state_dict or .safetensors), a "
    "suite run folder (holding checkpoints/), its checkpoints folder, or one checkpoint step "
    "folder (checkpoints/<step>)"
)
_FILE_FORMATS = ("torchvision", "safetensors")


@dataclasses.dataclass(frozen=True)
class InitSource:
    """Where initial weights come from: `format` "torchvision" or "safetensors" (path: the
    file) or "suite" (path: the checkpoints folder; step: the step folder to read, None for
    the best epoch)."""

    format: str
    path: Path
    step: int | None = None


def resolve_source(init_from: str | Path) -> InitSource:
    """The source `init_from` names; a ValueError saying which forms are accepted otherwise."""
    path = Path(init_from).expanduser()
    if not path.exists():
        raise ValueError(f"model.init_from {str(init_from)!r} does not exist; give {_SOURCE_FORMS}")
    if path.is_file():
        fmt = resnet_weights.file_format(path)
        if fmt is not None:
            return InitSource(fmt, path)
        raise ValueError(
            f"model.init_from {str(init_from)!r} is a file without a .pth/.pt/.safetensors "
            f"suffix; give {_SOURCE_FORMS}"
        )
    from experiments.checkpoints import CHECKPOINT_DIR  # deferred: orbax, for run folders only

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


def source_problems(model_config: Any, *, channels: int | None = None) -> list[str]:
    """Config-time problems of `model.init_from`, one line each: the path and its form, the
    package that reads it, model.padding, and the source itself, opened and checked against
    the config's network for images of `channels` channels (None: not known before the data
    is loaded; the stem's input channels are then checked by the run only)."""
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
    if source.format in _FILE_FORMATS:
        return _file_problems(source, model_config, channels)
    return _suite_problems(source, model_config, channels)


def _file_problems(source: InitSource, model_config: Any, channels: int | None) -> list[str]:
    """A weights file: padding, the package that reads it, then its tensors against the network."""
    name = f"model.init_from {str(model_config.init_from)!r}"
    found = []
    if model_config.get("padding", "same") != "torchvision":
        found.append(
            f"{name} is a torchvision/timm ResNet: set model.padding=torchvision (torchvision "
            "pads stride-2 convolutions symmetrically; 'same' would shift them)"
        )
    missing = resnet_weights.missing_package(source.format)
    if missing is not None:
        found.append(f"{name} {missing}")
        if source.format == "torchvision":
            problem = resnet_weights.torch_file_problem(source.path)
            found += [] if problem is None else [_naming(source.path, problem)]
        return found
    try:
        torchvision_to_flax(
            _file_shapes(*_file_key(source.path)),
            _variable_shapes(_model_key(model_config), channels or 3),
            stage_sizes=_stage_sizes(model_config),
        )
    except (ValueError, ImportError) as e:
        found.append(_naming(source.path, str(e)))
    return found


def _naming(path: Path, message: str) -> str:
    """A problem of the file `path` as one line that names it once."""
    if str(path) in message:
        return f"model.init_from: {message}"
    return f"model.init_from {str(path)!r}: {message}"


def _suite_problems(source: InitSource, model_config: Any, channels: int | None) -> list[str]:
    """A suite checkpoint: the source run's padding, then its saved shapes against the network."""
    found = []
    try:
        _check_padding(source.path.parent, model_config.get("padding", "same"))
    except ValueError as e:
        found.append(str(e))
    try:
        step = source.step if source.step is not None else best_step(source.path)
        step_dir = source.path / str(step)
        check_same_backbone(
            _variable_shapes(_model_key(model_config), channels or 1),
            load_suite_checkpoint(step_dir, shapes_only=True),
            source=str(step_dir),
            any_stem_channels=channels is None,
        )
    except ValueError as e:
        found.append(f"model.init_from {str(model_config.init_from)!r}: {e}")
    return found


def _file_key(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, modification time): a file's identity for the cache."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _file_shapes(path: str, size: int, mtime_ns: int) -> dict[str, np.ndarray]:
    """`resnet_weights.file_shapes`, once per file version (configs validate every variant)."""
    del size, mtime_ns  # part of the cache key only
    return resnet_weights.file_shapes(path)


def _model_key(model_config: Any) -> tuple:
    """The model block as a hashable key (init_from left out: not a shape field)."""
    items = dict(model_config)
    items.pop("init_from", None)
    return tuple(
        sorted((k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in items.items())
    )


@functools.lru_cache(maxsize=8)
def _variable_shapes(model_key: tuple, channels: int) -> dict[str, Any]:
    """The variables of the network `model_key` describes, as shapes (nothing initialised)."""
    import jax
    import jax.numpy as jnp

    from experiments.models import create_model  # deferred: Flax loads only when needed

    model = create_model({k: list(v) if isinstance(v, tuple) else v for k, v in model_key}, 2)
    image = jnp.zeros((1, 32, 32, channels), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), image, train=False))


def _stage_sizes(model_config: Any) -> list[int]:
    from experiments.models import PRESETS  # deferred: Flax loads only when needed

    name = model_config.get("name")
    return list(PRESETS[name][0] if name in PRESETS else model_config.stage_sizes)


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
    if source.format in _FILE_FORMATS:
        weights = load_weights(source.path)
        out = torchvision_to_flax(weights, host, stage_sizes=_stage_sizes(model))
        provenance = {
            "format": source.format,
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

    from experiments.checkpoints import best_entry  # deferred: orbax

    steps = _steps(checkpoint_dir)
    if not steps:
        raise ValueError(f"{checkpoint_dir} holds no finished checkpoint; give {_SOURCE_FORMS}")
    try:
        with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
            meta = checkpointer.restore(checkpoint_dir / str(steps[-1]) / "meta")
    except Exception as err:
        raise ValueError(
            f"{checkpoint_dir / str(steps[-1])} cannot be read as a suite checkpoint "
            f"({type(err).__name__}: {_first_line(err)}); give {_SOURCE_FORMS}"
        ) from err
    curves = (meta.get("curves") if isinstance(meta, dict) else None) or []
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


def load_suite_checkpoint(step_dir: Path, *, shapes_only: bool = False) -> dict[str, Any]:
    """{"params", "batch_stats"} of a suite checkpoint step folder, as NumPy arrays; with
    `shapes_only`, read-only zero-copy stand-ins of their shapes from the checkpoint's
    metadata (no array data is read)."""
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
            if shapes_only:
                zero = np.zeros((), np.float32)
                state = jax.tree.map(lambda m: np.broadcast_to(zero, tuple(m.shape)), tree)
            else:
                args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
                state = checkpointer.restore(
                    step_dir / "state", args=ocp.args.PyTreeRestore(restore_args=args)
                )
    except Exception as err:
        raise ValueError(
            f"{step_dir} cannot be read as a suite checkpoint ({type(err).__name__}: "
            f"{_first_line(err)}); give {_SOURCE_FORMS}"
        ) from err
    finally:
        absl_log.removeFilter(quiet)
    if not isinstance(state, dict) or "params" not in state or "batch_stats" not in state:
        raise ValueError(f"{step_dir} holds no params and batch_stats of a suite train state")
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def check_same_backbone(
    variables: dict[str, Any],
    loaded: dict[str, Any],
    *,
    source: str = "the checkpoint",
    any_stem_channels: bool = False,
) -> None:
    """A ValueError naming the first params or batch_stats leaf but the head's that is missing
    on either side or differs in shape (the networks differ), with the fix. With
    `any_stem_channels` the stem kernel's input channels may differ (not known yet)."""
    fix = (
        "give the config the source run's model (stage_sizes, block, num_filters, small_input) "
        "and its number of image channels"
    )
    for collection in ("params", "batch_stats"):
        mine = flatten(variables.get(collection, {}))
        theirs = flatten(loaded.get(collection, {}))
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
            ours, their = list(np.shape(mine[path])), list(np.shape(theirs[path]))
            if any_stem_channels and path == ("conv_init", "kernel") and len(ours) == 4:
                ours[2] = their[2]
            if ours != their:
                raise ValueError(
                    f"first mismatching parameter: {name} has shape {tuple(their)} in "
                    f"{source} and {tuple(ours)} here; {fix}"
                )


def suite_to_flax(
    loaded: dict[str, Any], variables: dict[str, Any], *, source: str = "the checkpoint"
) -> dict[str, Any]:
    """`variables` with every params and batch_stats leaf but the head's from `loaded`; a
    ValueError naming the first mismatching leaf otherwise (`check_same_backbone`)."""
    check_same_backbone(variables, loaded, source=source)
    out = dict(variables)
    for collection in ("params", "batch_stats"):
        theirs = flatten(loaded.get(collection, {}))
        merged = {
            p: (v if p[0] == "head" else np.asarray(theirs[p], np.asarray(v).dtype))
            for p, v in flatten(variables.get(collection, {})).items()
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
