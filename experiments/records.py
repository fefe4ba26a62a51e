"""Run records: the JSON file each run leaves. This module is their one home: it builds them
(`trainer_fields`, `failed_result`, `build_record`), writes them atomically (`write_record`),
reads them back (`load_record`) and upgrades old versions (`upgrade_record`, `upgrade_config`).

A record is the only thing the report reads, so it carries everything a table or plot needs.
Schema (version 3); every key is present, values JSON-native:

  schema_version: 3
  status: "finished" | "failed"
  failure: null | str                    why a failed run stopped (e.g. non-finite loss) and,
                                         when its folder may be unusable, how to recover
  config_name: str                       e.g. "catalog_proposed"
  task: str                              e.g. "catalog"
  method: str                            `experiments.methods.METHODS` key (none, ..., focal, ...)
  scheme: str                            weighting scheme name (none, inverse, ...)
  loss: str                              `ltweights.losses` function name (weighted_sigmoid_bce,
                                         sigmoid_focal, asymmetric, distribution_balanced,
                                         logit_adjusted_bce)
  variant: str                           what the report's rows are keyed by: the scheme or loss
                                         plus any swept hyperparameter, e.g. "proposed(beta=0.999)"
  tier: str                              smoke | cpu | gpu
  seed: int
  cutoff: int                            label-frequency cut-off (training positives of the rarest
                                         label)
  config: dict                           the full resolved config
  data: {provenance: dict, split_provenance: {split: dict}, label_names: [str],
         train_positives: [int], num_train: int, num_val: int, num_test: int}
                                         provenance: the fields common to all splits, once;
                                         split_provenance: per split, the fields that differ
                                         ({} when none do)
  environment: {packages: {name: version}, git_commit: str | null, git_dirty: bool,
                devices: [str], num_devices: int, platform: str, python: str, hostname: str,
                cpu: {cpu_model, cpu_family, isa: [str], cpu_threads, xla_flags},
                gpu: null | {names, platform, driver_version, cuda_runtime, ...}}
                                         cpu and gpu: `experiments.hardware`; absent from
                                         records made before they were recorded
  curves: [{epoch, step, train_loss, val_mAP, val_macro_f1, images_per_s}]
  val: metrics dict (best/last epoch, see ltweights.metrics.evaluate)
  test: metrics dict from ltweights.metrics.evaluate with per-label thresholds chosen on val:
        {mAP, macro_f1, micro_f1, missing_labels, per_label: {ap, precision, recall, f1},
         buckets: {head|medium|tail: {mAP, macro_f1, micro_f1, num_labels, labels}}}
  wall_time_s: float                     training + evaluation wall time of this run
  images_per_s: float                    training throughput
  steps: int

Version 1 (the committed sweep) differs in: no `method` (nor `config.method`), `loss` and
`config.loss` hold the old loss keys (bce, focal, logit_adjusted, ...; `LEGACY_LOSS_NAMES`),
`config.keep_best` is a bool, and `data.provenance` is {split: dict} with no
`split_provenance`. Version 2 differs from version 3 only in the name of the config block of
varied fields: `config.sweep` (now `config.vary`, so that "sweep" names only the results sweep,
`experiments.sweep`). `load_record` reads all three; `upgrade_record` and `upgrade_config` bring
an older record or config to version 3.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Collection, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import ml_collections

from experiments import hardware
from experiments.atomic import atomic_write_json

SCHEMA_VERSION = 3
# Versions `load_record` reads (the report reads them too).
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
# What versions 1 and 2 called the config block that version 3 calls `vary`.
LEGACY_VARY_NAME = "sweep"
# Version-1 loss keys -> the ltweights.losses function names that version 2 stores.
LEGACY_LOSS_NAMES = {
    "bce": "weighted_sigmoid_bce",
    "focal": "sigmoid_focal",
    "asymmetric": "asymmetric",
    "distribution_balanced": "distribution_balanced",
    "logit_adjusted": "logit_adjusted_bce",
}
# Every key of a record written now (versions 2 and 3), in the order of the schema above.
SCHEMA_KEYS = (
    "schema_version",
    "status",
    "failure",
    "config_name",
    "task",
    "method",
    "scheme",
    "loss",
    "variant",
    "tier",
    "seed",
    "cutoff",
    "config",
    "data",
    "environment",
    "curves",
    "val",
    "test",
    "wall_time_s",
    "images_per_s",
    "steps",
)
# Keys that every readable record has, whatever its version (version 1 lacks "method"); what
# a reader of both versions may rely on. `record_keys(version)` gives one version's keys.
RECORD_KEYS = tuple(k for k in SCHEMA_KEYS if k != "method")


def record_keys(version: int) -> tuple[str, ...]:
    """The top-level keys of a record of schema `version` (1, 2 or 3)."""
    return RECORD_KEYS if version == 1 else SCHEMA_KEYS


# The keys that identify a run and its environment (`build_record` sets them); the trainer
# fills the rest (`trainer_fields`).
RUN_KEYS = frozenset(
    {"schema_version", "config_name", "task", "method", "scheme", "loss", "variant", "tier"}
    | {"seed", "cutoff", "config", "environment"}
)
TRAINER_KEYS = tuple(k for k in SCHEMA_KEYS if k not in RUN_KEYS)


def trainer_fields(**fields: Any) -> dict[str, Any]:
    """The trainer's part of a record: exactly the `TRAINER_KEYS`, in schema order (a missing
    or unknown key is a TypeError, so a new field is added here once)."""
    if set(fields) != set(TRAINER_KEYS):
        missing, unknown = set(TRAINER_KEYS) - set(fields), set(fields) - set(TRAINER_KEYS)
        raise TypeError(f"trainer fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return {key: fields[key] for key in TRAINER_KEYS}


def failed_result(failure: str, wall_time_s: float) -> dict[str, Any]:
    """The trainer's part of a record for a run that raised instead of returning."""
    return trainer_fields(
        status="failed",
        failure=failure,
        data=None,
        curves=[],
        val=None,
        test=None,
        wall_time_s=wall_time_s,
        images_per_s=None,
        steps=0,
    )


def json_safe_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """config.to_dict() through a JSON round trip (tuples -> lists), as stored in records."""
    return json.loads(json.dumps(config.to_dict()))


def build_record(run: Any, result: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any]:
    """The record of `run` (an `experiments.runs.Run`: config, variant, seed, cut-off): the
    trainer's fields plus what identifies the run, with the trainer's per-split provenance
    stored once (`split_provenance`), keys in schema order."""
    record = dict(result)
    data = record.get("data")
    if isinstance(data, dict) and "split_provenance" not in data:
        common, differ = split_provenance(data.get("provenance") or {})
        record["data"] = {**data, "provenance": common, "split_provenance": differ}
    record.update(
        schema_version=SCHEMA_VERSION,
        config_name=run.config.name,
        task=run.config.task,
        method=run.config.method,
        scheme=run.config.scheme,
        loss=run.config.loss,
        variant=run.variant,
        tier=run.config.tier,
        seed=run.seed,
        cutoff=run.cutoff,
        config=json_safe_config(run.config),
        environment=environment,
    )
    record.setdefault("failure", None)
    return {key: record[key] for key in SCHEMA_KEYS}


def write_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Writes `record` to `path` atomically: readers see the old file or the whole new one."""
    atomic_write_json(path, record)


RECORD_FILENAME = "record.json"
_PACKAGES = (
    "ltweights",
    "jax",
    "jaxlib",
    "numpy",
    "flax",
    "optax",
    "orbax-checkpoint",
    "ml-collections",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(repo: str | os.PathLike | None = None) -> tuple[str | None, bool]:
    """(commit, dirty) of the checkout holding this file; (None, False) outside git."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, False
    return commit, bool(status.strip())


def environment() -> dict[str, Any]:
    """Package versions, git commit and devices: what a reader needs to reproduce a run."""
    import jax  # Imported here so that reading records needs no JAX.

    commit, dirty = git_state()
    devices = jax.devices()
    return {
        "packages": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "devices": [str(d) for d in devices],
        "num_devices": len(devices),
        "num_processes": jax.process_count(),  # > 1: a multi-process run (experiments.distributed)
        "platform": devices[0].platform,
        "python": sys.version.split()[0],
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        # Which kernels XLA ran: bitwise reproduction holds on the same CPU type and threads.
        "cpu": hardware.cpu_identity(),
        "gpu": hardware.gpu_identity(devices),
    }


def iter_record_paths(root: str | os.PathLike) -> Iterator[Path]:
    """Every record file below `root`, in a stable (sorted) order."""
    yield from sorted(Path(root).rglob(RECORD_FILENAME))


def load_record(
    path: str | os.PathLike, *, versions: Collection[int] = READABLE_SCHEMA_VERSIONS
) -> dict[str, Any]:
    """The record at `path` as stored; ValueError naming the file when it is not JSON, not an
    object or of a schema version outside `versions`. The one record reader: the runner and the
    report both use it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Run record {path} is not valid JSON ({e}); delete it and rerun.") from e
    if not isinstance(record, dict):
        raise ValueError(f"Run record {path} is not a JSON object; delete it and rerun.")
    version = record.get("schema_version")
    if type(version) is not int or version not in versions:
        *others, last = (str(v) for v in sorted(versions))
        readable = f"{', '.join(others)} or {last}" if others else last
        raise ValueError(
            f"Run record {path} has schema_version {version!r}; this code reads version "
            f"{readable}. Rerun the experiment with --force to rewrite it."
        )
    return record


def method_of_v1(config_name: Any, task: Any) -> Any:
    """A version-1 record's method: its config name minus the '<task>_' prefix."""
    if isinstance(config_name, str) and isinstance(task, str):
        if config_name.startswith(f"{task}_"):
            return config_name[len(task) + 1 :]
    return config_name


def upgrade_config_v1(config: dict[str, Any]) -> dict[str, Any]:
    """A version-1 record's config as version 2 would store it: `method` added (from the
    config name), `loss` as the function name, `keep_best` as an int."""
    config = dict(config)
    config.setdefault("method", method_of_v1(config.get("name", ""), config.get("task", "")))
    config["loss"] = LEGACY_LOSS_NAMES.get(config.get("loss"), config.get("loss"))
    if isinstance(config.get("keep_best"), bool):
        config["keep_best"] = int(config["keep_best"])
    return config


def upgrade_config_v2(config: dict[str, Any]) -> dict[str, Any]:
    """A version-2 record's config as version 3 stores it: the `sweep` block renamed `vary`,
    in the same place among the keys (a config that already has `vary` is left as it is)."""
    if LEGACY_VARY_NAME not in config or "vary" in config:
        return dict(config)
    return {("vary" if key == LEGACY_VARY_NAME else key): v for key, v in config.items()}


def upgrade_config(config: dict[str, Any], version: Any) -> dict[str, Any]:
    """A config stored by a record of schema `version` as the current version stores it."""
    if version == 1:
        config = upgrade_config_v1(config)
    return upgrade_config_v2(config) if version in (1, 2) else dict(config)


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values (1, 1.0 and True stay distinct)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def split_provenance(per_split: dict[str, dict[str, Any]]) -> tuple[dict, dict]:
    """{split: provenance} -> (fields equal in every split, {split: the fields that differ}).

    A field absent from some split counts as differing; values are compared as JSON. Splits
    with nothing of their own are left out of the second result ({} when all agree). Inverse:
    `{**common, **differ.get(s, {})}` is split s's provenance.
    """
    splits = list(per_split)
    keys = dict.fromkeys(k for s in splits for k in per_split[s])
    first = per_split[splits[0]] if splits else {}
    common = {
        k: first[k]
        for k in keys
        if all(k in per_split[s] and _same_json(per_split[s][k], first[k]) for s in splits)
    }
    differ = {s: {k: v for k, v in per_split[s].items() if k not in common} for s in splits}
    return common, {s: d for s, d in differ.items() if d}


def upgrade_record(record: Any) -> Any:
    """A record of any readable version in the current (version 3) shape, as a new dict; the
    input is not changed.

    Version 2 differs from version 1 in exactly: schema_version 2; a top-level `method` (the
    config name's axis) and `config.method`; `config.loss` as the loss function's name;
    `config.keep_best` an int; `data.provenance` one dict of the fields common to all splits
    plus `data.split_provenance` {split: fields that differ}, where version 1 held a full copy
    per split. Version 3 differs from version 2 in exactly: schema_version 3 and `config.sweep`
    renamed `config.vary`. Anything else (another version, wrong types) is returned as it is,
    for validation to name."""
    if not isinstance(record, dict) or record.get("schema_version") not in (1, 2):
        return record
    out = _upgrade_v1(record) if record["schema_version"] == 1 else dict(record)
    out["schema_version"] = 3
    if isinstance(out.get("config"), dict):
        out["config"] = upgrade_config_v2(out["config"])
    return out


def _upgrade_v1(record: dict[str, Any]) -> dict[str, Any]:
    """A version-1 record in the version-2 shape (see `upgrade_record`)."""
    method = method_of_v1(record.get("config_name"), record.get("task"))
    out = {**record, "schema_version": 2, "method": method}
    if isinstance(record.get("config"), dict):
        out["config"] = upgrade_config_v1({**record["config"], "method": method})
    data = record.get("data")
    if isinstance(data, dict):
        provenance = data.get("provenance") or {}
        per_split = isinstance(provenance, dict) and all(
            isinstance(value, dict) for value in provenance.values()
        )
        common, differ = split_provenance(provenance) if per_split else (provenance, {})
        out["data"] = {**data, "provenance": common, "split_provenance": differ}
    return out


def load_records(root: str | os.PathLike) -> list[dict[str, Any]]:
    """All records below `root`, sorted by path."""
    return [load_record(p) for p in iter_record_paths(root)]


# Config fields that do not change what a run computes: which seeds and cut-offs an invocation
# selected, which fields a config varies and how its variant is named, where files live, and how
# often checkpoints are kept. The resume fingerprint and the stale-record check both ignore
# exactly these.
RESULT_NEUTRAL_FIELDS = (
    "seeds",
    "cutoffs",
    "vary",
    "variant",
    "output_dir",
    "data.data_dir",
    "data.cache_dir",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "input_prefetch",
    "keep_best",
    # The fine-tune recipe a tier offers: what it does shows in the fields it sets
    # (`experiments.configs.apply_finetune`), which are compared.
    "finetune",
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted path: leaf}; an empty dict is a leaf."""
    if isinstance(tree, dict) and tree:
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def is_result_neutral(path: str) -> bool:
    """Whether the dotted config path is (inside) one of RESULT_NEUTRAL_FIELDS."""
    return any(path == f or path.startswith(f + ".") for f in RESULT_NEUTRAL_FIELDS)


# Config fields added after records were committed, each with the value that means what the code
# did before it existed. A stored config without the field reads as that value, so adding an
# option with a neutral default neither invalidates finished records nor changes fingerprints.
ADDED_FIELD_DEFAULTS: dict[str, Any] = {
    "model.padding": "same",
    # The fine-tune recipe (experiments.steps.make_optimizer): random init, the plain optimiser.
    "model.init_from": None,
    "backbone_lr_scale": 1.0,
    "freeze_backbone_epochs": 0.0,
    # Catalog tasks: all ten Fashion-MNIST classes (experiments.data.catalog).
    "data.classes": None,
    # Batches gathered in the training loop, none ahead (experiments.train).
    "input_prefetch": 0,
}


def without_added_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config with every ADDED_FIELD_DEFAULTS field that holds its default dropped,
    so configs from before and after the field was added compare (and hash) the same."""
    return {
        path: value
        for path, value in flat.items()
        if not (path in ADDED_FIELD_DEFAULTS and _same_json(value, ADDED_FIELD_DEFAULTS[path]))
    }
