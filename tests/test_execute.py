"""`--jobs`: runs trained at once in pinned worker processes give the records of runs trained one
after another, and a Ctrl-C of a parallel invocation resumes to the uninterrupted metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import execute

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Long enough (a few seconds a run) that a Ctrl-C lands while both runs train.
COMMAND = ["--config", "catalog_none", "--tier", "smoke", "--seeds", "0,1", "--cutoffs", "6"]
COMMAND += ["--set", "num_epochs=12", "--no-progress"]


def _cli(output_dir: Path, *extra: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "LTWEIGHTS_CACHE": str(cache)}
    env.pop("LTWEIGHTS_JOBS", None)
    argv = [sys.executable, "-m", "experiments.run", *COMMAND, "--output-dir", str(output_dir)]
    return subprocess.Popen(
        [*argv, *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, like a terminal's foreground job
    )


def _metrics(output_dir: Path) -> dict:
    out = {}
    for seed in (0, 1):
        record = json.loads(
            (output_dir / f"catalog_none/none/cutoff6/seed{seed}/record.json").read_text()
        )
        assert record["status"] == "finished"
        out[seed] = (record["test"], record["val"], [c["train_loss"] for c in record["curves"]])
    return out


def test_parallel_runs_match_serial_runs_and_resume_after_ctrl_c(tmp_path):
    cache = tmp_path / "cache"
    serial = _cli(tmp_path / "serial", "--jobs", "1", cache=cache)
    out, _ = serial.communicate(timeout=600)
    assert serial.returncode == 0, out

    # Ctrl-C reaches the whole foreground process group: the parent and both workers.
    parallel_dir = tmp_path / "parallel"
    job = _cli(parallel_dir, "--jobs", "2", cache=cache)
    lines = []
    deadline = time.monotonic() + 300
    while sum(": new" in line for line in lines) < 2 and time.monotonic() < deadline:
        line = job.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    assert "2 runs, 2 at a time" in "".join(lines)
    time.sleep(1.0)
    os.killpg(job.pid, signal.SIGINT)
    out, _ = job.communicate(timeout=300)
    out = "".join(lines) + out
    finished_before_stop = out.count("finished")
    assert job.returncode == execute.EXIT_INTERRUPTED or finished_before_stop >= 2, out
    if job.returncode == execute.EXIT_INTERRUPTED:
        assert "Resume by rerunning the same command" in out

    resumed = _cli(parallel_dir, "--jobs", "2", cache=cache)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert _metrics(parallel_dir) == _metrics(tmp_path / "serial")


def test_jobs_must_be_a_positive_number(capsys):
    from experiments import run as run_mod

    with pytest.raises(SystemExit):
        run_mod.main([*COMMAND, "--jobs", "0"])
    assert "expected a whole number >= 1" in capsys.readouterr().err


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _in_session(session: int) -> list[int]:
    """The live processes of a session (the command and everything it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_stop_with_their_killed_parent_and_the_rerun_resumes(tmp_path):
    """`kill -9` of the parent of a --jobs 2 invocation: both workers checkpoint and exit within
    seconds (no process of the command lives on), and the same command resumes both runs."""
    output_dir, cache = tmp_path / "runs", tmp_path / "cache"
    job = _cli(output_dir, "--jobs", "2", "--set", "num_epochs=60", cache=cache)
    survivors: list[int] = []
    try:
        runs = [output_dir / f"catalog_none/none/cutoff6/seed{seed}" for seed in (0, 1)]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not all(
            any((run / "checkpoints").glob("[0-9]*")) for run in runs
        ):
            assert job.poll() is None, job.stdout.read()
            time.sleep(0.5)
        workers = [json.loads((run / ".lock").read_text())["pid"] for run in runs]
        assert job.pid not in workers and all(_alive(pid) for pid in workers)
        os.kill(job.pid, signal.SIGKILL)
        job.wait()
        deadline = time.monotonic() + 120  # a bound on a hang, not a timing
        while time.monotonic() < deadline and _in_session(job.pid):
            time.sleep(0.5)
        survivors = _in_session(job.pid)
        assert survivors == [], "processes outlived the command"
    finally:
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
    resumed = _cli(output_dir, "--jobs", "2", "--set", "num_epochs=60", cache=cache)
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out
    assert "locked" not in out and out.count("resume") >= 2, out
