"""On-disk cache of built datasets: folder resolution, parameter keys, atomic npz files.

A cached build is ONE `.npz` file holding its arrays plus its provenance as a JSON string, so a
reader sees either a complete build or none (the file is written to a temporary name in the same
folder and renamed into place). A human-readable `.json` copy of the provenance sits beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from experiments.atomic import atomic_open, atomic_write_json

CACHE_ENV = "LTWEIGHTS_CACHE"
_PROVENANCE_KEY = "__provenance__"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache_dir` if given, else $LTWEIGHTS_CACHE, else ~/.cache/ltweights."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ltweights"


def params_key(params: dict[str, Any], length: int = 16) -> str:
    """A short hex digest of `params` (JSON with sorted keys), so equal parameters share a file."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def atomic_save_npz(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], provenance: dict[str, Any]
) -> None:
    """Writes `arrays` and `provenance` into `path` (.npz) atomically, plus a .json beside it."""
    path = Path(path)
    if _PROVENANCE_KEY in arrays:
        raise ValueError(f"Array name {_PROVENANCE_KEY!r} is reserved for the provenance.")
    payload = dict(arrays)
    payload[_PROVENANCE_KEY] = np.asarray(json.dumps(provenance, sort_keys=True))
    with atomic_open(path) as f:  # readable (0644): a shared cache
        np.savez(f, **payload)
    atomic_write_json(path.with_suffix(".json"), provenance)


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(arrays, provenance) from a file written by `atomic_save_npz`; None if absent or unreadable.

    An unreadable file (from an older format, say) is treated as a cache miss and rebuilt.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files if name != _PROVENANCE_KEY}
            provenance = json.loads(str(f[_PROVENANCE_KEY]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return arrays, provenance
