"""`--set key=value` overrides and varied fields of a config, on ml_collections' own path helpers.

Values are parsed as ml_collections' config flags parse a literal (`5`, `0.5`, `[1,1]`, `'x'`,
`true`/`false`; anything else is a string) and set with `config_flags.config_path`, so the
ConfigDict's type checks apply (an int is accepted for a float field, a string is not).
New keys may be added only directly under `data`, `scheme_params` and `loss_params`, whose keys
are checked against the loader's, scheme's and loss's parameters by `validate`.
`vary.<path>=[...]` varies an existing field (one run per value); setting a varied field fixes
it. After the overrides, a config with `model.init_from` set takes its fine-tune recipe
(`apply_finetune`) over every field the overrides did not set.
"""

from __future__ import annotations

import ast
import copy
import difflib
import itertools
import math
from collections.abc import Collection, Sequence
from typing import Any

import ml_collections
from ml_collections.config_flags import config_path

from experiments.configs.base import flat_values
from experiments.configs.validate import OPEN_BLOCKS
from experiments.records import LEGACY_VARY_NAME, flatten

# Spellings of a non-finite number, which are no Python literal: read as the float they name so
# that the error says what is wrong with them (no config field takes one), not that they are text.
NON_FINITE = ("nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity")


def parse_value(raw: str) -> Any:
    """A Python literal (5, 0.5, [1, 2], None, True, 'x') or, failing that, the string; `true`
    and `false` as absl writes them are booleans (as in ml_collections' config flags); `nan` and
    `inf` are the floats."""
    raw = raw.strip()
    if raw in ("true", "false"):
        raw = raw.capitalize()
    if raw.lower() in NON_FINITE:
        return float(raw)
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    return False


def parse_override(text: str) -> tuple[str, Any]:
    """ "model.num_filters=32" -> ("model.num_filters", 32)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(
            f"--set expects key=value with a dotted key, e.g. --set model.num_filters=32; "
            f"got {text!r}."
        )
    value = parse_value(raw)
    if _has_non_finite(value):
        raise ValueError(
            f"--set {key}={raw.strip()}: {raw.strip()} is not a finite number; every number in a "
            f"config must be finite. Give a finite value, e.g. --set {key}=0.001."
        )
    return key, value


def has_path(config: ml_collections.ConfigDict, path: str) -> bool:
    try:
        config_path.get_value(path, config)
    except (KeyError, AttributeError, IndexError, ValueError):
        return False
    return True


def _unknown_field(path: str, config: ml_collections.ConfigDict, what: str) -> ValueError:
    paths = list(flat_values(config))
    close = difflib.get_close_matches(path, paths, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ValueError(
        f"{what}: {config.name} has no field {path!r}.{hint} "
        "`python -m experiments.run --config NAME --dry-run --show-config` prints every field."
    )


def _set_varied(config: ml_collections.ConfigDict, target: str, values: Any) -> None:
    *parents, leaf = target.split(".")
    node = config.vary
    for key in parents:
        if key not in node:
            node[key] = ml_collections.ConfigDict()
        node = node[key]
    node[leaf] = values


def _drop_varied(config: ml_collections.ConfigDict, path: str) -> None:
    if has_path(config.vary, path):
        *parents, leaf = path.split(".")
        holder = config_path.get_value(".".join(parents), config.vary) if parents else None
        del (holder if holder is not None else config.vary)[leaf]


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, Any]]
) -> ml_collections.ConfigDict:
    """A copy of `config` with each (dotted path, value) set, checked against its fields."""
    config = copy.deepcopy(config)
    for path, value in overrides:
        if path.split(".")[0] == LEGACY_VARY_NAME:
            raise ValueError(
                f"--set {path}: the `{LEGACY_VARY_NAME}` block is now called `vary` (`sweep` names "
                f"only the results sweep, experiments.sweep); write --set vary."
                f"{path.partition('.')[2]}={value!r}."
            )
        if path.startswith("vary."):
            target = path[len("vary.") :]
            if not has_path(config, target):
                raise _unknown_field(target, config, f"--set {path}")
            _set_varied(config, target, value)
            continue
        open_block = path.split(".")[0] in OPEN_BLOCKS and path.count(".") == 1
        if not has_path(config, path) and not open_block:
            raise _unknown_field(path, config, f"--set {path}")
        try:
            config_path.set_value(path, config, value, accept_new_attributes=open_block)
        except TypeError as e:
            raise ValueError(f"--set {path}={value!r}: {e}") from None
        _drop_varied(config, path)
    # The fine-tune layer follows --set.
    apply_finetune(config, explicit={path for path, _ in overrides})
    return config


def apply_finetune(config: ml_collections.ConfigDict, explicit: Collection[str] = ()) -> list[str]:
    """The fine-tune layer: when `config.model.init_from` is set, each non-None field of
    `config.finetune` replaces the top-level field of its name, unless its dotted path is in
    `explicit` (the fields the command line set itself, which win). Returns the paths set.

    The recipe lives in the config (the gpu tier fills `finetune` for the photo tasks, see
    `tiers.FINETUNE_RECIPE`); runs without a pretrained backbone keep the plain fields.
    """
    if config.model.get("init_from") is None or "finetune" not in config:
        return []
    applied = []
    for key, value in config.finetune.items():
        if value is not None and key not in explicit:
            config[key] = value
            applied.append(key)
    return applied


def varied_axes(config: ml_collections.ConfigDict) -> list[tuple[str, list[Any]]]:
    """The varied fields of `config.vary` as (dotted path, values), in a stable order."""
    axes = []
    for path, value in sorted(flatten(config.vary.to_dict()).items()):
        if isinstance(value, dict):  # an empty vary block
            continue
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(
                f"vary.{path} must be a non-empty list of values, e.g. "
                f"--set vary.{path}=[0.9,0.99]; got {value!r}."
            )
        if not has_path(config, path):
            raise _unknown_field(path, config, f"vary.{path}")
        axes.append((path, list(value)))
    return axes


def varied_points(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """One {path: value} per point of the Cartesian product of `vary` ([{}] if none)."""
    axes = varied_axes(config)
    paths = [path for path, _ in axes]
    return [
        dict(zip(paths, combo, strict=True)) for combo in itertools.product(*[v for _, v in axes])
    ]


def at_point(config: ml_collections.ConfigDict, point: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` with the point's varied values set."""
    config = copy.deepcopy(config)
    for path, value in point.items():
        config_path.set_value(path, config, value)
    return config
