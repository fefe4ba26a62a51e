"""End to end on real data, smoke tier: `python -m experiments.run` trains, is interrupted,
resumes to exactly the metrics of an uninterrupted run, skips finished runs on rerun, and
`python -m experiments.report` builds RESULTS.md from the records. Runs in CI (tens of seconds).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import execute, records
from experiments import run as run_mod

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Per-epoch timings differ between two runs of the same computation; nothing else may.
TIMING_KEYS = {"images_per_s", "wall_time_s", "train_time_s", "eval_time_s"}


def _without_timings(tree):
    if isinstance(tree, dict):
        return {k: _without_timings(v) for k, v in tree.items() if k not in TIMING_KEYS}
    if isinstance(tree, list):
        return [_without_timings(v) for v in tree]
    return tree


def _record(root: Path, config: str, variant_dir: str) -> dict:
    return json.loads((root / config / variant_dir / "cutoff6/seed0/record.json").read_text())


@pytest.mark.usefixtures("fashion_mnist_installed")
def test_train_interrupt_resume_report(tmp_path, monkeypatch, capsys):
    common = ["--no-progress", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    none_args = ["--config", "catalog_none_smoke", *common]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    # 1. An uninterrupted run.
    assert run_mod.main([*none_args, "--output-dir", str(straight)]) == 0
    reference = _record(straight, "catalog_none", "none")
    assert reference["status"] == "finished" and reference["steps"] > 10

    # 2. The same run, interrupted mid-epoch by the trainer's test hook: exit 130, no record,
    #    a checkpoint to resume from.
    from experiments.train import Interrupted, train_and_evaluate

    interrupting = functools.partial(train_and_evaluate, interrupt_at_step=reference["steps"] - 5)
    monkeypatch.setattr(execute, "load_trainer", lambda: (interrupting, Interrupted))
    args = [*none_args, "--output-dir", str(resumed)]
    assert run_mod.main(args) == execute.EXIT_INTERRUPTED
    assert "rerunning the same command" in capsys.readouterr().err
    workdir = resumed / "catalog_none/none/cutoff6/seed0"
    assert not (workdir / "record.json").exists()
    assert any((workdir / "checkpoints").iterdir())

    # 3. Rerunning the same command resumes and ends with exactly the reference metrics.
    monkeypatch.setattr(execute, "load_trainer", lambda: (train_and_evaluate, Interrupted))
    assert run_mod.main(args) == 0
    result = _record(resumed, "catalog_none", "none")
    assert result["status"] == "finished" and result["steps"] == reference["steps"]
    for key in ("test", "val", "curves", "data"):
        assert _without_timings(result[key]) == _without_timings(reference[key]), key
    assert result["config"] == {**reference["config"], "output_dir": str(resumed)}

    # 4. A third run of the command trains nothing: the finished record is kept as it is.
    before = (workdir / "record.json").read_bytes()
    capsys.readouterr()
    assert run_mod.main(args) == 0
    assert "--force reruns it" in capsys.readouterr().out
    assert (workdir / "record.json").read_bytes() == before

    # 5. A second scheme beside it, then the report from the records alone.
    proposed_args = ["--config", "catalog_proposed_smoke", *common, "--output-dir", str(resumed)]
    proposed_args += ["--set", "scheme_params.beta=0.99"]
    assert run_mod.main(proposed_args) == 0
    assert len(records.load_records(resumed)) == 2
    out = tmp_path / "report" / "RESULTS.md"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.report",
            "--records",
            str(resumed),
            "--out",
            str(out),
            "--plots-dir",
            str(tmp_path / "report" / "plots"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    text = out.read_text()
    assert "catalog" in text and "proposed(beta=0.99)" in text and "none" in text
    assert list((tmp_path / "report" / "plots").rglob("*.png"))
