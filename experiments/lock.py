"""One process per run directory: an exclusive lock held for the whole of a run.

`RunLock(workdir)` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on `<workdir>/.lock` and writes the
holder (pid, host, command) into it for the message a second process prints. The kernel drops
the lock when its file descriptor closes, so any exit, `kill -9` included, releases it: a lock
file left behind by a dead process is not held, and the next run simply takes it (no stale-lock
guessing by pid). The file itself stays (removing it would race with a process opening it).

flock is per open file description and advisory: every runner that touches a run directory
takes it (experiments.run does, before reading the record, deleting for --force or training).
On network file systems without flock support the lock may not exclude other hosts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

LOCK_FILENAME = ".lock"


class LockHeld(RuntimeError):
    """Another process holds the run directory's lock; `holder` is what it wrote, if readable."""

    def __init__(self, directory: Path, holder: dict[str, Any] | None):
        self.directory, self.holder = directory, holder
        if holder:
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')} "
                f"({holder.get('command', 'unknown command')})"
            )
        else:
            who = "another process"
        super().__init__(
            f"{directory} is in use by {who}; wait for it to finish or stop it, then rerun."
        )


def _holder_text() -> str:
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        }
    )


def read_holder(directory: str | os.PathLike) -> dict[str, Any] | None:
    """What the last holder of `directory`'s lock wrote, or None."""
    try:
        holder = json.loads((Path(directory) / LOCK_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


class RunLock:
    """Context manager: holds the exclusive lock of `directory` (created if missing).

    Raises LockHeld at once (never waits) when another process holds it.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.directory, read_holder(self.directory)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
