"""`python -m benchmarks.reproduction`: how far reruns of committed records land from them.

    python -m experiments.run --config catalog_none --seeds 0,1 --cutoffs 6,25 --jobs 2 \\
        --output-dir reruns/cpu
    python -m benchmarks.reproduction --reruns reruns/cpu --committed results/runs/cpu

Each rerun record is paired with the committed record at the same relative path (config,
variant, cut-off, seed); the table gives the test mAP and tail mAP of the committed record and
the rerun's difference from it, whether the first epoch's training loss matched to the bit, and
which CPU made each (records before CPU identity was stored say "not recorded"). A rerun on the
same CPU type, threads and package versions matches to the bit; on another CPU the runs diverge
from the first steps (rounding differs), so the difference measures how far a result can be
reproduced across machines. The committed figures are in results/NOTES.md ("Reproducibility").
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import markdown_table
from experiments.records import iter_record_paths, load_record
from experiments.report.tables import cpu_type


def _bucket_map(record: dict[str, Any], bucket: str) -> float | None:
    if bucket == "all":
        return record["test"]["mAP"]
    return (record["test"].get("buckets", {}).get(bucket) or {}).get("mAP")


def pair_records(reruns: Path, committed: Path) -> list[tuple[Path, dict, dict]]:
    """(relative path, rerun, committed) for every rerun record with a committed twin."""
    pairs = []
    for path in iter_record_paths(reruns):
        relative = path.relative_to(reruns)
        twin = committed / relative
        if not twin.is_file():
            raise SystemExit(f"{path}: no committed record at {twin} to compare with.")
        pairs.append((relative.parent, load_record(path), load_record(twin)))
    if not pairs:
        raise SystemExit(f"No run records under {reruns}: rerun some committed runs first.")
    return pairs


def difference_rows(pairs: Sequence[tuple[Path, dict, dict]]) -> list[dict[str, Any]]:
    rows = []
    for relative, rerun, committed in pairs:
        row: dict[str, Any] = {"run": str(relative)}
        for bucket in ("all", "tail"):
            new, old = _bucket_map(rerun, bucket), _bucket_map(committed, bucket)
            row[f"{bucket}_committed"] = old
            row[f"{bucket}_delta"] = None if old is None or new is None else new - old
        row["first_loss_equal"] = (
            rerun["curves"][0]["train_loss"] == committed["curves"][0]["train_loss"]
        )
        row["rerun_cpu"], row["committed_cpu"] = cpu_type(rerun), cpu_type(committed)
        rows.append(row)
    return rows


def _fmt(x: float | None, signed: bool = False) -> str:
    return "–" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")


def summary(rows: Sequence[dict[str, Any]], bucket: str) -> str:
    deltas = [r[f"{bucket}_delta"] for r in rows if r[f"{bucket}_delta"] is not None]
    if not deltas:
        return f"{bucket}: no values"
    rms = math.sqrt(math.fsum(d * d for d in deltas) / len(deltas))
    largest = max(abs(d) for d in deltas)
    return (
        f"{bucket} mAP: {len(deltas)} records, largest |Δ| {largest:.4f}, "
        f"root mean square {rms:.4f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduction", description=__doc__)
    parser.add_argument("--reruns", required=True, type=Path, help="folder of rerun records")
    parser.add_argument(
        "--committed", default=Path("results/runs/cpu"), type=Path, help="committed records"
    )
    args = parser.parse_args(argv)
    rows = difference_rows(pair_records(args.reruns, args.committed))
    table = [
        [
            f"`{r['run']}`",
            _fmt(r["all_committed"]),
            _fmt(r["all_delta"], signed=True),
            _fmt(r["tail_committed"]),
            _fmt(r["tail_delta"], signed=True),
            "yes" if r["first_loss_equal"] else "no",
        ]
        for r in rows
    ]
    headers = ["run", "mAP", "Δ mAP", "tail mAP", "Δ tail mAP", "first loss bitwise"]
    print(markdown_table(headers, table))
    print()
    for bucket in ("all", "tail"):
        print(f"- {summary(rows, bucket)}")
    cpus = sorted({(r["committed_cpu"], r["rerun_cpu"]) for r in rows})
    for committed_cpu, rerun_cpu in cpus:
        print(f"- committed on: {committed_cpu}; rerun on: {rerun_cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
