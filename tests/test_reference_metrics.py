"""Behaviour is kept: smoke-tier runs on real Fashion-MNIST end with exactly the metrics that the
trainer gave before its refactor (stored in tests/data/reference_metrics.json).

The stored numbers were produced by the code before the change, not by the code under test. Runs
of the same computation are bitwise stable across processes on the CPU, so the comparison is
exact. Should a change mean to alter the numbers, regenerate them with
`python -m tests.test_reference_metrics` and say why in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REFERENCE = Path(__file__).resolve().parent / "data" / "reference_metrics.json"
CONFIGS = ("catalog_none", "catalog_proposed", "catalog_asymmetric")
SEED, CUTOFF = 0, 6


def run_metrics(name: str, cache_dir: Path, workdir: Path) -> dict:
    """The metrics of one smoke-tier run (seed 0, cut-off 6): what a record's numbers hold."""
    from experiments.configs import get_config
    from experiments.train import train_and_evaluate

    config = get_config(name, tier="smoke")
    config.data.cache_dir = str(cache_dir)
    record = train_and_evaluate(config, seed=SEED, cutoff=CUTOFF, workdir=workdir, progress=False)
    val, test = record["val"], record["test"]
    return {
        "status": record["status"],
        "steps": record["steps"],
        "curves": [{k: v for k, v in c.items() if k != "images_per_s"} for c in record["curves"]],
        "val": {k: val[k] for k in ("mAP", "buckets", "per_label", "best_epoch", "best_step")},
        "test": {k: test[k] for k in ("mAP", "buckets", "per_label", "thresholds")},
    }


@pytest.mark.usefixtures("fashion_mnist_installed")
@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_run_has_the_stored_reference_metrics(name, tmp_path):
    expected = json.loads(REFERENCE.read_text())[name]
    got = run_metrics(name, tmp_path / "cache", tmp_path / "run")
    # Through JSON, as a record stores them (tuples become lists, NaN stays NaN).
    assert json.loads(json.dumps(got)) == expected


if __name__ == "__main__":  # regenerate the stored metrics (see the module docstring)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = {n: run_metrics(n, Path(tmp) / "cache", Path(tmp) / n) for n in CONFIGS}
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE}", file=sys.stderr)
