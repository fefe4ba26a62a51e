"""Run records: the JSON file each run leaves, written atomically, and read back by the report.

A record is the only thing the report reads, so it carries everything a table or plot needs.
Schema (version 1); every key is present, values JSON-native:

  schema_version: 1
  status: "finished" | "failed"
  failure: null | str                    why a failed run stopped (e.g. non-finite loss)
  config_name: str                       e.g. "catalog_proposed"
  task: str                              e.g. "catalog"
  scheme: str                            weighting scheme name (none, inverse, ...)
  loss: str                              loss name (bce, focal, asymmetric, distribution_balanced,
                                         logit_adjusted)
  variant: str                           what the report's rows are keyed by: the scheme or loss
                                         plus any swept hyperparameter, e.g. "proposed(beta=0.999)"
  tier: str                              smoke | cpu | gpu
  seed: int
  cutoff: int                            label-frequency cut-off (training positives of the rarest
                                         label)
  config: dict                           the full resolved config
  data: {provenance: dict, label_names: [str], train_positives: [int], num_train: int,
         num_val: int, num_test: int}
  environment: {packages: {name: version}, git_commit: str | null, git_dirty: bool,
                devices: [str], num_devices: int, platform: str, python: str, hostname: str}
  curves: [{epoch, step, train_loss, val_mAP, val_macro_f1, images_per_s}]
  val: metrics dict (best/last epoch, see ltweights.metrics.evaluate)
  test: metrics dict from ltweights.metrics.evaluate with per-label thresholds chosen on val:
        {mAP, macro_f1, micro_f1, missing_labels, per_label: {ap, precision, recall, f1},
         buckets: {head|medium|tail: {mAP, macro_f1, micro_f1, num_labels, labels}}}
  wall_time_s: float                     training + evaluation wall time of this run
  images_per_s: float                    training throughput
  steps: int
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

from experiments.atomic import atomic_open, atomic_write_json, atomic_write_text  # noqa: F401

SCHEMA_VERSION = 1
# Every key of a record, in the order of the schema above.
RECORD_KEYS = (
    "schema_version",
    "status",
    "failure",
    "config_name",
    "task",
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
        "platform": devices[0].platform,
        "python": sys.version.split()[0],
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
    }


def iter_record_paths(root: str | os.PathLike) -> Iterator[Path]:
    """Every record file below `root`, in a stable (sorted) order."""
    yield from sorted(Path(root).rglob(RECORD_FILENAME))


def load_record(
    path: str | os.PathLike, *, versions: Collection[int] = (SCHEMA_VERSION,)
) -> dict[str, Any]:
    """The record at `path`; ValueError naming the file when it is not JSON, not an object or of
    a schema version outside `versions` (a reader of older records passes the ones it reads)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"Run record {path} is not valid JSON ({e}); delete it and rerun.") from e
    if not isinstance(record, dict):
        raise ValueError(f"Run record {path} is not a JSON object; delete it and rerun.")
    version = record.get("schema_version")
    if type(version) is not int or version not in versions:
        readable = " or ".join(str(v) for v in sorted(versions))
        raise ValueError(
            f"Run record {path} has schema_version {version!r}; this code reads version "
            f"{readable}. Rerun the experiment with --force to rewrite it."
        )
    return record


def load_records(root: str | os.PathLike) -> list[dict[str, Any]]:
    """All records below `root`, sorted by path."""
    return [load_record(p) for p in iter_record_paths(root)]


# Config fields that do not change what a run computes: which seeds and cut-offs an invocation
# selected, how the sweep and variant are described, where files live, and how often checkpoints
# are kept. The resume fingerprint and the stale-record check both ignore exactly these.
RESULT_NEUTRAL_FIELDS = (
    "seeds",
    "cutoffs",
    "sweep",
    "variant",
    "output_dir",
    "data.data_dir",
    "data.cache_dir",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "keep_best",
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
