"""`python -m experiments.data`: histogram, PNGs and JSON for any registered task."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.data import Dataset, Splits
from experiments.data import __main__ as cli
from experiments.data import fashion_mnist as fm

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_splits(channels: int = 1) -> Splits:
    rng = np.random.default_rng(0)
    names = ("puff", "raglan", "cap")
    sizes = {"train": 30, "val": 10, "test": 0}
    datasets = []
    for split, n in sizes.items():
        images = rng.integers(0, 256, (n, 8, 8, channels)).astype(np.uint8)
        labels = np.zeros((n, 3), np.uint8)
        labels[: n // 2, 0] = 1  # puff: half
        labels[: n // 5, 1] = 1  # raglan: a fifth
        labels[:1, 2] = 1  # cap: one
        datasets.append(Dataset(images, labels, names, split, {"source": "fake"}))
    return Splits(*datasets)


@pytest.fixture
def fake_task(monkeypatch):
    calls = []

    def fake_load(name, **params):
        calls.append((name, params))
        return fake_splits(channels=3 if name == "sleevetype" else 1)

    monkeypatch.setattr(cli, "load_task", fake_load)
    return calls


def test_parse_set_reads_json_values():
    assert cli.parse_set(["head_count=2000", "a=0.5", "download=false", "root=/x/y", "n=null"]) == {
        "head_count": 2000,
        "a": 0.5,
        "download": False,
        "root": "/x/y",
        "n": None,
    }
    with pytest.raises(SystemExit):
        cli.parse_set(["no-equals-sign"])


def test_histogram_counts_by_hand():
    hist = cli.histogram(fake_splits())
    assert hist["num_examples"] == {"train": 30, "val": 10, "test": 0}
    assert hist["positives"]["train"] == [15, 6, 1]
    assert hist["positives"]["val"] == [5, 2, 1]
    assert hist["positives"]["test"] == [0, 0, 0]
    text = cli.format_histogram(hist).splitlines()
    assert text[0].split() == ["label", "train", "val", "test"]
    assert text[1].split() == ["(images)", "30", "10", "0"]
    assert text[2].split()[:4] == ["puff", "15", "5", "0"]  # most frequent first
    assert text[4].split()[:4] == ["cap", "1", "1", "0"]
    bars = [line.split()[-1] for line in text[2:]]
    assert len(bars[0]) > len(bars[1]) > len(bars[2]) > 0


@pytest.mark.parametrize("task", ["catalog", "sleevetype"])
def test_main_writes_pngs_and_json(fake_task, tmp_path, task, capsys):
    out = tmp_path / "out"
    args = ["--task", task, "--cutoff", "12", "--seed", "3", "--out", str(out)]
    args += ["--examples", "5", "--set", "head_count=50", "--data-dir", "/somewhere"]
    summary = cli.main(args)
    assert fake_task == [
        (task, {"cutoff": 12, "seed": 3, "head_count": 50, "data_dir": "/somewhere"})
    ]
    printed = capsys.readouterr().out
    assert "puff" in printed and "raglan" in printed
    for name in ("examples_train.png", "examples_val.png", "label_frequencies.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert not (out / "examples_test.png").exists()  # empty split: nothing to show
    saved = json.loads((out / "histogram.json").read_text())
    assert saved["positives"]["train"] == [15, 6, 1] and saved == json.loads(json.dumps(summary))
    assert len(saved["examples_shown"]["train"]) == 5
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_unknown_task_lists_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--task", "catalogue", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "Did you mean catalog" in err and "sleevetype" in err


def test_command_line_on_the_real_catalog(tmp_path, fashion_mnist_installed):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "experiments.data", "--task", "catalog", "--cutoff", "6"]
    command += [
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--set",
        "download=false",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # The last row is the rarest label: 6 training positives, 5 in val (the floor), 200 in test.
    rows = [
        line for line in result.stdout.splitlines() if re.search(r"\d+\s+\d+\s+\d+\s+#+$", line)
    ]
    assert len(rows) == 10 and re.search(r"\s6\s+5\s+200\s+#+$", rows[-1]), result.stdout
    saved = json.loads((out / "histogram.json").read_text())
    assert min(saved["positives"]["train"]) == 6 and max(saved["positives"]["train"]) == 1000
    assert saved["label_names"] == list(fm.CLASS_NAMES)
    assert (out / "label_frequencies.png").read_bytes()[:8] == PNG_MAGIC
