"""Atomic file writes: readers see the old file or the whole new one, never half of it.

The one temp-file-then-rename writer of the project: run records, RESULTS.md, plots and the data
cache all write through `atomic_open`; `atomic_write_all` writes several files (a report and its
plots) so that either all of them change or none does. `disk_full` tells a full disk from other
failures, wherever it was raised, so callers can say so in one line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "atomic_write_all",
    "atomic_write_json",
    "atomic_write_text",
    "disk_full",
    "disk_full_message",
]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """A file to write `path` through, so that readers see the old file or the whole new one.

    Yields a temporary file in the same folder (opened with `mode` and `kwargs`); on a clean
    exit it is flushed, synced, made readable (0644) and renamed onto `path`; on an error it is
    removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` so that readers see the old file or the whole new one, never half."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomic JSON write; sorted keys and a trailing newline so equal content gives equal bytes."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n")


def atomic_write_all(files: dict[Path, bytes]) -> None:
    """Writes every `{path: data}` to a temporary beside it, then renames them all: a failure
    while writing (a full disk) removes the temporaries and leaves every path as it was."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)


def disk_full(error: BaseException | None) -> OSError | bool:
    """The ENOSPC error behind `error` (its cause and context included; libraries such as
    orbax and tensorstore wrap it or keep only its text), True for a text-only one, else False."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_message(error: BaseException, folder: str | os.PathLike) -> str:
    """One line: where the disk is full (the file's folder when the error names it, else
    `folder`) and what to do."""
    found = disk_full(error)
    filename = getattr(found, "filename", None) if isinstance(found, OSError) else None
    where = Path(filename).parent if filename else Path(folder)
    return f"no space left on device in {where}: free some space there, then rerun"
