"""Runs per hour of a sweep slice at `--jobs 1` and `--jobs N`: `python -m benchmarks.jobs`.

The slice is one config's 12 cpu-tier runs (`catalog_none`, cut-offs 6/12/25/50 x seeds 0/1/2),
trained through the real command line (`python -m experiments.run`) into fresh folders. One
warm-up run fills the shared compilation cache first, so neither timing pays for compilation
that the other reuses. Reported: wall time and runs/hour of each, and their ratio (goal >= 1.7
for --jobs 2 on 2 cores); the records of both must hold the same numbers (checked).

  python -m benchmarks.jobs               # --jobs 1 vs one job per core -> benchmarks/out/jobs.json
  python -m benchmarks.jobs --jobs 4 --seeds 0,1,2,3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_json
from experiments import parallel

ROOT = Path(__file__).resolve().parents[1]


def _run(output_dir: Path, jobs: int, cache: Path, args: argparse.Namespace) -> float:
    argv = [sys.executable, "-m", "experiments.run", "--config", args.config, "--no-progress"]
    argv += ["--seeds", args.seeds, "--cutoffs", args.cutoffs, "--jobs", str(jobs)]
    argv += ["--output-dir", str(output_dir), "--set", f"data.cache_dir={cache}"]
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _test_metrics(output_dir: Path) -> dict[str, float]:
    return {
        str(p.relative_to(output_dir)): json.loads(p.read_text())["test"]["mAP"]
        for p in sorted(output_dir.rglob("record.json"))
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jobs", description=__doc__)
    parser.add_argument("--config", default="catalog_none")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cutoffs", default="6,12,25,50")
    parser.add_argument("--jobs", type=int, default=parallel.default_jobs())
    parser.add_argument("--out", default="benchmarks/out/jobs.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        warm = argparse.Namespace(**{**vars(args), "seeds": "0", "cutoffs": "6"})
        _run(tmp / "warm-up", 1, cache, warm)
        serial = _run(tmp / "serial", 1, cache, args)
        together = _run(tmp / "parallel", args.jobs, cache, args)
        same = _test_metrics(tmp / "serial") == _test_metrics(tmp / "parallel")
        num_runs = len(_test_metrics(tmp / "serial"))
    result = {
        "config": args.config,
        "runs": num_runs,
        "jobs": args.jobs,
        "cores": list(parallel.STARTING_CORES),
        "jobs_1_s": serial,
        f"jobs_{args.jobs}_s": together,
        "runs_per_hour_jobs_1": num_runs * 3600 / serial,
        f"runs_per_hour_jobs_{args.jobs}": num_runs * 3600 / together,
        "speed_up": serial / together,
        "same_metrics": same,
    }
    write_json(args.out, result)
    print(
        f"{num_runs} runs: --jobs 1 {serial:.0f} s ({result['runs_per_hour_jobs_1']:.0f} runs/h), "
        f"--jobs {args.jobs} {together:.0f} s ({num_runs * 3600 / together:.0f} runs/h): "
        f"{serial / together:.2f}x (goal >= 1.7 for 2 jobs on 2 cores); same metrics: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
