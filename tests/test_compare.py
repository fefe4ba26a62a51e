"""`python -m experiments.compare`, README's first command: trains the comparison and prints it
with labelled columns, then the command that makes the full report."""

from __future__ import annotations

import pytest

from experiments import compare
from tests.test_run import install_stub_trainer


@pytest.fixture
def stub(monkeypatch):
    return install_stub_trainer(monkeypatch)


def test_the_comparison_trains_each_method_and_prints_the_table_and_the_report_command(
    tmp_path, stub, capsys
):
    assert compare.main(["--output-dir", str(tmp_path), "--no-progress"]) == 0
    variants = {call[0] for call in stub.calls}
    assert variants == {"none", "inverse", "proposed(beta=0.99)", "proposed(beta=0.999)", "linear"}
    assert {(cutoff, seed) for _, cutoff, seed, _ in stub.calls} == {(6, 0)}
    out = capsys.readouterr().out
    table = out[out.index("The comparison") :]
    header = table.splitlines()[1].split()
    assert header[:4] == ["method", "runs", "test", "mAP"]
    for column in ("head mAP", "medium mAP", "tail mAP", "test vs none"):
        assert column in table.splitlines()[1]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[3:8]}
    assert rows["none"][1:4] == ["1", "0.500", "-"] and rows["none"][-1] == "-"
    assert rows["inverse"][-1] == "+0.000"
    assert f"python -m experiments.report --records {tmp_path} --out my_results.md" in out
    # Rerunning skips the finished runs and prints the same comparison.
    assert compare.main(["--output-dir", str(tmp_path), "--no-progress"]) == 0
    assert len(stub.calls) == 5 and "The comparison" in capsys.readouterr().out


def test_an_unknown_method_is_a_usage_error(tmp_path, capsys):
    assert compare.main(["--methods", "none,nope", "--output-dir", str(tmp_path)]) == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
