"""RESULTS.md is generated: the committed file is what the report makes of the committed records.

A hand edit of RESULTS.md, a record changed without regenerating, or a report change that alters
the output without regenerating all fail here. PNG bytes are not compared (they depend on the
installed matplotlib and fonts); that every linked plot is committed, and listed in the plots
manifest as this report's, is.
"""

from pathlib import Path

import pytest

from experiments import report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_repo_root(monkeypatch):
    if not (ROOT / "results" / "runs").is_dir() or not (ROOT / "RESULTS.md").is_file():
        pytest.skip("no committed sweep records (results/runs) or RESULTS.md in this checkout")
    monkeypatch.chdir(ROOT)


@pytest.mark.slow
def test_results_md_is_regenerated_from_committed_records(in_repo_root):
    # Where `python -m experiments.report` (no arguments) writes.
    outputs = report.resolve_outputs(report.COMMITTED_RECORDS)
    assert outputs.out == Path("RESULTS.md") and outputs.plots_dir == Path("results/plots")
    runs = report.read_runs(report.COMMITTED_RECORDS)
    text, plots, _ = report.build_report(
        runs,
        records_dir=report.COMMITTED_RECORDS,
        out=outputs.out,
        plots_dir=outputs.plots_dir,
        notes=outputs.notes.read_text(encoding="utf-8") if outputs.notes else None,
        notes_name=str(outputs.notes) if outputs.notes else None,
    )
    committed = Path("RESULTS.md").read_text(encoding="utf-8")
    assert text == committed, (
        "RESULTS.md differs from its records: run python -m experiments.report"
    )
    for plot in plots:
        assert Path(plot).is_file(), f"{plot} is linked from RESULTS.md but not committed"
        assert f"({Path(plot).as_posix()})" in text
    assert report.read_manifest(outputs.plots_dir) == {
        "../../RESULTS.md": sorted(Path(p).name for p in plots)
    }, "results/plots/report_manifest.json is stale: run python -m experiments.report"
