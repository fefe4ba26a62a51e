"""Faults end cleanly: a full disk (checkpoints, records, the report) stops with one line naming
the folder and leaves everything resumable; a report is written whole or not at all."""

from __future__ import annotations

import errno
import os

import pytest

from experiments import atomic, execute, report
from experiments import run as run_mod
from experiments.train import train_and_evaluate
from tests.test_report import make_record, write_record
from tests.test_run import StubInterrupted, install_stub_trainer


def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.fixture
def stub(monkeypatch):
    return install_stub_trainer(monkeypatch)


ARGS = ["--config", "catalog_none", "--seeds", "0,1", "--cutoffs", "6", "--no-progress"]


def test_disk_full_in_training_stops_in_one_line_without_a_failed_record(
    tmp_path, stub, monkeypatch, capsys
):
    def full(config, *, seed, cutoff, workdir, **kw):
        raise RuntimeError("checkpoint save failed") from _enospc(workdir / "checkpoints" / "2")

    monkeypatch.setattr(execute, "load_trainer", lambda: (full, StubInterrupted))
    assert run_mod.main([*ARGS, "--output-dir", str(tmp_path)]) == execute.EXIT_FAILED
    err = capsys.readouterr().err
    folder = tmp_path / "catalog_none/none/cutoff6/seed0/checkpoints"
    assert f"no space left on device in {folder}" in err
    assert "Traceback" not in err and "--force" not in err
    assert not list(tmp_path.rglob("record.json"))  # resumable, not failed
    # The next run did not start; once there is space, the same command trains both.
    monkeypatch.setattr(execute, "load_trainer", lambda: (stub, StubInterrupted))
    assert run_mod.main([*ARGS, "--output-dir", str(tmp_path)]) == 0
    assert len(list(tmp_path.rglob("record.json"))) == 2


def test_disk_full_writing_a_record_is_one_line_not_a_traceback(
    tmp_path, stub, monkeypatch, capsys
):
    def full(path, obj):
        raise _enospc(path)

    monkeypatch.setattr(execute, "write_record", full)
    assert run_mod.main([*ARGS, "--output-dir", str(tmp_path)]) == execute.EXIT_FAILED
    err = capsys.readouterr().err
    assert "no space left on device in" in err and "Traceback" not in err
    assert "rerun" in err and len(stub.calls) == 1


@pytest.mark.usefixtures("fashion_mnist_installed")
def test_a_run_stopped_by_a_full_disk_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """The real trainer at the smoke tier: the second checkpoint hits a full disk; the run
    resumes from the first and ends where an uninterrupted run ends."""
    from experiments import configs
    from experiments.checkpoints import Checkpoints

    config = configs.get_config("catalog_none", tier="smoke")
    kw = {"seed": 0, "cutoff": 6, "progress": False}
    whole = train_and_evaluate(config, workdir=tmp_path / "whole", **kw)
    save, calls = Checkpoints.save, []

    def full_at_second(self, step, *args, **kwargs):
        calls.append(step)
        if len(calls) == 2:
            raise _enospc(self.directory / str(step))
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(Checkpoints, "save", full_at_second)
    with pytest.raises(OSError) as raised:
        train_and_evaluate(config, workdir=tmp_path / "full", **kw)
    assert atomic.disk_full(raised.value)
    monkeypatch.setattr(Checkpoints, "save", save)
    resumed = train_and_evaluate(config, workdir=tmp_path / "full", **kw)
    assert resumed["test"]["mAP"] == whole["test"]["mAP"]
    assert resumed["steps"] == whole["steps"]


def test_disk_full_is_found_behind_wrappers_and_in_text():
    assert atomic.disk_full(_enospc("/x/y")).filename == "/x/y"
    try:
        try:
            raise _enospc("/x/y")
        except OSError as e:
            raise ValueError("tensorstore write failed") from e
    except ValueError as wrapped:
        assert atomic.disk_full(wrapped)
        assert atomic.disk_full_message(wrapped, "/z").startswith("no space left on device in /x")
    assert atomic.disk_full(RuntimeError("OUT_OF_RANGE: No space left on device")) is True
    assert not atomic.disk_full(OSError(errno.EACCES, "Permission denied"))


def _report_files(tmp_path):
    return {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "runs" not in p.parts}


def test_a_report_on_a_full_disk_writes_nothing_and_says_so(tmp_path, monkeypatch, capsys):
    for seed in (0, 1):
        write_record(tmp_path / "runs", make_record(seed=seed))
    out = tmp_path / "R.md"
    args = ["--records", str(tmp_path / "runs"), "--out", str(out)]
    assert report.main(args) == 0
    before = _report_files(tmp_path)
    assert out in before and len(before) >= 3  # the report, its plots, the manifest
    write_record(tmp_path / "runs", make_record(seed=2))
    fsync, calls = os.fsync, []

    def full_on_second_file(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise _enospc(tmp_path / "R_plots" / "x.png")
        fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", full_on_second_file)
    assert report.main(args) == 1
    err = capsys.readouterr().err
    assert "no space left on device in" in err and "Traceback" not in err
    assert _report_files(tmp_path) == before  # no temporaries, no half of a new report


def test_report_out_naming_a_folder_is_a_usage_error(tmp_path, capsys):
    write_record(tmp_path / "runs", make_record())
    (tmp_path / "out").mkdir()
    assert report.main(["--records", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not any((tmp_path / "out").iterdir())
