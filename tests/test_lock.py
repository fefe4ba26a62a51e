"""One process per run folder: the lock excludes a second real process, names its holder, is
released on any exit (kill -9 included), and the CLI then touches nothing in the locked folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments.lock import LOCK_FILENAME, LockHeld, RunLock, read_holder

ROOT = Path(__file__).resolve().parents[1]

# A child that takes the lock, says so on stdout, then sleeps until killed (bounded: 60 s).
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from experiments.lock import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _start_holder(directory: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert child.stdout.readline().strip() == "locked"  # blocks until the lock is held
    return child


@pytest.fixture
def holder(tmp_path):
    directory = tmp_path / "out" / "catalog_none" / "none" / "cutoff6" / "seed0"
    child = _start_holder(directory)
    yield directory, child
    if child.poll() is None:
        child.kill()
    child.wait(timeout=30)


def test_second_process_is_refused_with_the_holders_pid(holder):
    directory, child = holder
    with pytest.raises(LockHeld) as info:
        RunLock(directory).acquire()
    message = str(info.value)
    assert str(directory) in message and f"pid {child.pid}" in message
    assert "\n" not in message
    assert read_holder(directory)["pid"] == child.pid


def test_kill_9_releases_the_lock(holder):
    directory, child = holder
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert (directory / LOCK_FILENAME).exists()  # the file stays; the lock does not
    with RunLock(directory):
        assert read_holder(directory)["pid"] == os.getpid()


def test_lock_is_released_on_exit_and_on_an_exception(tmp_path):
    directory = tmp_path / "run"
    with pytest.raises(RuntimeError), RunLock(directory):
        raise RuntimeError("boom")
    with RunLock(directory):  # taken again: the first was released
        pass


def test_cli_skips_a_locked_run_touches_nothing_and_exits_1(holder, monkeypatch, capsys):
    from experiments import execute, plan, records
    from experiments import run as run_mod

    directory, child = holder
    output_dir = directory.parents[3]
    calls = []

    def trainer(config, *, seed, cutoff, workdir, progress=True):
        calls.append((seed, workdir))
        return {"status": "finished", "failure": None, "data": None, "curves": [], "val": None,
                "test": None, "wall_time_s": 1.0, "images_per_s": 1.0, "steps": 1}  # fmt: skip

    monkeypatch.setattr(execute, "load_trainer", lambda: (trainer, KeyboardInterrupt))
    monkeypatch.setattr(plan, "check_data", lambda config, cutoff, **kw: None)
    monkeypatch.setattr(records, "environment", lambda: {})
    # The holder's folder is catalog_none/none/cutoff6/seed0 below output_dir.
    assert directory.relative_to(output_dir).as_posix() == "catalog_none/none/cutoff6/seed0"
    marker = directory / "checkpoints" / "keep"
    marker.parent.mkdir()
    marker.write_text("theirs")
    argv = ["--config", "catalog_none", "--cutoffs", "6", "--seeds", "0,1", "--force"]
    code = run_mod.main([*argv, "--output-dir", str(output_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert code == execute.EXIT_FAILED
    assert [c[0] for c in calls] == [1]  # seed 0 is locked; seed 1 ran
    (line,) = [x for x in err.splitlines() if "is in use by" in x]
    assert str(directory) in line and f"pid {child.pid}" in line
    assert marker.read_text() == "theirs"  # --force deleted nothing in the locked folder
    assert not (directory / records.RECORD_FILENAME).exists()


def test_help_says_what_a_locked_run_does(capsys):
    from experiments import run as run_mod

    with pytest.raises(SystemExit):
        run_mod.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "reported as locked and skipped, the other runs go on, and the exit code is 1" in (
        help_text
    )


def test_two_cli_processes_on_one_folder_one_runs_one_is_refused(tmp_path):
    """Two real `python -m experiments.run` processes whose trainer waits for a release file
    (at most 60 s): the one that gets the lock finishes its record, the other prints the lock
    line and exits 1."""
    script = textwrap.dedent(
        """
        import sys, time
        from experiments import execute, plan, records, run
        def trainer(config, *, seed, cutoff, workdir, progress=True):
            print("training", flush=True)
            release = workdir.parents[3] / "release"
            for _ in range(600):
                if release.exists():
                    break
                time.sleep(0.1)
            return {"status": "finished", "failure": None, "data": None, "curves": [],
                    "val": None, "test": None, "wall_time_s": 3.0, "images_per_s": 1.0,
                    "steps": 1}
        execute.load_trainer = lambda: (trainer, KeyboardInterrupt)
        plan.check_data = lambda config, cutoff, **kw: None
        records.environment = lambda: {}
        sys.exit(run.main(sys.argv[1:]))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", script, "--config", "catalog_none_smoke", "--no-progress"]
    args += ["--output-dir", str(tmp_path)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=ROOT)  # fmt: skip
    assert first.stdout.readline().strip().endswith("new")  # the run line, lock held
    assert first.stdout.readline().strip() == "training"
    second = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    (tmp_path / "release").touch()
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert second.returncode == 1, second.stderr
    assert f"pid {first.pid}" in second.stderr and "is in use by" in second.stderr
    record = tmp_path / "catalog_none/none/cutoff6/seed0/record.json"
    assert json.loads(record.read_text())["status"] == "finished"
