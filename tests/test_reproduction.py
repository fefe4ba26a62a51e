"""benchmarks.reproduction pairs rerun records with committed ones and reports the differences."""

from __future__ import annotations

import pytest

from benchmarks import reproduction
from tests.test_report import make_record, write_record


def test_differences_of_reruns_from_committed_records(tmp_path, capsys):
    committed, reruns = tmp_path / "committed", tmp_path / "reruns"
    for seed, (old, new) in enumerate([(0.70, 0.71), (0.80, 0.78)]):
        write_record(committed, make_record(seed=seed, mAP=old, tail=0.30))
        rerun = make_record(seed=seed, mAP=new, tail=0.33)
        rerun["environment"]["cpu"] = {"cpu_model": "Xeon", "isa": ["avx512f"], "cpu_threads": 1}
        write_record(reruns, rerun)
    rows = reproduction.difference_rows(reproduction.pair_records(reruns, committed))
    assert [r["all_delta"] for r in rows] == pytest.approx([0.01, -0.02])
    assert [r["tail_delta"] for r in rows] == pytest.approx([0.03, 0.03])
    assert reproduction.summary(rows, "all").startswith("all mAP: 2 records, largest |Δ| 0.0200")
    # root mean square of 0.01 and 0.02: sqrt((1e-4 + 4e-4) / 2) = 0.0158
    assert "root mean square 0.0158" in reproduction.summary(rows, "all")
    assert reproduction.main(["--reruns", str(reruns), "--committed", str(committed)]) == 0
    out = capsys.readouterr().out
    assert "| 0.7000 | +0.0100 | 0.3000 | +0.0300 |" in out
    assert "committed on: not recorded; rerun on: Xeon (avx512f, 1 thread)" in out


def test_a_rerun_without_a_committed_twin_is_named(tmp_path):
    write_record(tmp_path / "reruns", make_record(seed=3))
    with pytest.raises(SystemExit, match="no committed record"):
        reproduction.pair_records(tmp_path / "reruns", tmp_path / "committed")
