"""What a fresh clone and the published wheel hold.

- The README's first command runs on the embedded data: its comparison, at the smoke tier, from a
  copy of the checkout's files (what `git clone` gives), with every system-wide data location
  hidden, trains and records that Fashion-MNIST came from the repository.
- The core wheel (`pip install ltweights`, no extras) carries the library only, not the data,
  and its `py.typed` marker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _checkout_files() -> list[str]:
    """The files a clone of this checkout holds (tracked, plus new files git does not ignore)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("these tests need the project's git checkout (git ls-files)")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def _copy_checkout(dest: Path, only: tuple[str, ...] = ()) -> Path:
    for name in _checkout_files():
        if only and not name.startswith(only):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


def readme_main_command() -> list[str]:
    """The README's first command, after its `pip install ... &&`, as argv."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    first = blocks[0].strip()
    install, _, command = first.partition(" && ")
    assert "pip install" in install and command.startswith("python3 -m experiments."), first
    return shlex.split(command)


@pytest.mark.slow
def test_readme_main_command_runs_on_the_embedded_data(tmp_path):
    clone = _copy_checkout(tmp_path / "clone")
    argv = readme_main_command()
    assert argv[:3] == ["python3", "-m", "experiments.compare"] and "--tier" not in argv
    # Smoke tier and two methods keep this to seconds; the task and data are the command's.
    argv = [sys.executable, *argv[1:], "--tier", "smoke", "--no-progress"]
    argv += ["--output-dir", str(tmp_path / "runs"), "--methods", "none,inverse"]
    env = {k: v for k, v in os.environ.items() if k not in ("LTWEIGHTS_DATA", "PYTHONPATH")} | {
        "LTWEIGHTS_NO_SYSTEM_DATA": "1",  # no Debian folder, no cache copy, no download
        "LTWEIGHTS_CACHE": str(tmp_path / "empty-cache"),
    }
    done = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "The comparison" in done.stdout and "python -m experiments.report" in done.stdout
    record_path, _ = sorted((tmp_path / "runs").rglob("record.json"))
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["status"] == "finished"
    sources = _fashion_mnist_sources(record["data"])
    assert sources == {"repository"}, sources
    paths = _fashion_mnist_paths(record["data"])
    assert paths and all(Path(p).is_relative_to(clone / "data" / "fashion-mnist") for p in paths)


def _fashion_mnist_sources(tree) -> set[str]:
    found: set[str] = set()
    if isinstance(tree, dict):
        if tree.get("dataset") == "Fashion-MNIST":
            found.add(tree["source"])
        for value in tree.values():
            found |= _fashion_mnist_sources(value)
    return found


def _fashion_mnist_paths(tree) -> set[str]:
    found: set[str] = set()
    if isinstance(tree, dict):
        if tree.get("dataset") == "Fashion-MNIST":
            found |= {entry["path"] for entry in tree["files"].values()}
        for value in tree.values():
            found |= _fashion_mnist_paths(value)
    return found


@pytest.mark.slow
def test_core_wheel_carries_the_library_only(tmp_path):
    # Build from a copy that also holds the data folder, so leaving it out is the wheel's doing.
    source = _copy_checkout(
        tmp_path / "src", only=("pyproject.toml", "README.md", "ltweights/", "data/")
    )
    assert (source / "data" / "fashion-mnist").is_dir()
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    done = subprocess.run(
        [*pip_wheel, "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("ltweights-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"ltweights", next(t for t in top if t.endswith(".dist-info"))}, top
    assert not [n for n in names if "fashion" in n.lower() or n.endswith((".gz", ".npz"))]
    assert {"ltweights/losses.py", "ltweights/weights.py", "ltweights/metrics.py"} <= set(names)
    assert "ltweights/py.typed" in names  # PEP 561: type checkers read the package's hints
    assert wheel.stat().st_size < 200_000, wheel.stat().st_size
