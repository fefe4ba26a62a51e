"""`python -m experiments.compare`: the suite's question, answered small: does a weighting help
the tail?

    python -m experiments.compare                     # catalog, none/inverse/proposed + floor
    python -m experiments.compare --dry-run           # the runs and how long they take
    python -m experiments.compare --methods none,inverse,proposed,focal --seeds 0,1

Trains each method on the embedded catalog for one replicate (seed 0) at one cut-off (6
training positives for the rarest label) at the cpu tier: `none`, `inverse`, `proposed` (its two
betas) and the `linear` floor, about 6 minutes on 2 cores. Then prints the comparison (test,
head, medium and tail mAP per method, each method's difference to `none`) and the command that
makes the full report with its plots. The records go under runs/ like any run's; rerunning skips
finished runs and resumes interrupted ones. One replicate shows the shape of the answer, not
its uncertainty: the committed sweep (RESULTS.md) has five.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments import execute, methods, sweep, xla
from experiments import plan as plan_mod
from experiments.runs import Run, plan_action, read_record

DEFAULT_METHODS = ("none", "inverse", "proposed", "linear")
COLUMNS = ("method", "runs", "test mAP", "head mAP", "medium mAP", "tail mAP", "test vs none")
BUCKETS = ("head", "medium", "tail")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", default="catalog", help="the task (default: catalog)")
    parser.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help="comma list (default: %(default)s)"
    )
    parser.add_argument("--seeds", default="0", help="comma list of seeds (default: 0)")
    parser.add_argument("--cutoffs", default="6", help="comma list of cut-offs (default: 6)")
    parser.add_argument("--tier", default="cpu", help="cpu (default), gpu or smoke")
    parser.add_argument("--output-dir", default="runs", help="records folder (default: runs)")
    parser.add_argument("--jobs", type=int, help="runs at once (default: one per core)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs; train nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def comparison_runs(args: argparse.Namespace) -> list[Run]:
    """The runs of every method's `<task>_<method>` config at the selected seeds and cut-offs;
    ValueError on an unknown method or a bad selection."""
    names = [m for m in args.methods.split(",") if m]
    unknown = [m for m in names if m not in methods.METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(methods.METHODS)}")
    seeds, cutoffs = plan_mod.parse_int_list(args.seeds), plan_mod.parse_int_list(args.cutoffs)
    runs = []
    for name in names:
        runs += plan_mod.config_runs(
            f"{args.task}_{name}",
            tier=args.tier,
            output_dir=args.output_dir,
            seeds=seeds,
            cutoffs=cutoffs,
        )
    return runs


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def comparison_rows(runs: Sequence[Run]) -> list[list[str]]:
    """One row per variant: mean test, head, medium and tail mAP over its finished runs, and the
    test mAP's difference to `none` over the (seed, cut-off) pairs both finished."""
    finished: dict[str, dict[tuple[int, int], dict]] = {}
    for r in runs:
        record = read_record(r.record_path)
        if record and record.get("status") == "finished":
            finished.setdefault(r.variant, {})[(r.seed, r.cutoff)] = record["test"]
    none = finished.get("none", {})
    rows = []
    for variant in dict.fromkeys(r.variant for r in runs):
        tests = finished.get(variant, {})
        numbers = [_mean([t["mAP"] for t in tests.values()])]
        for bucket in BUCKETS:
            numbers.append(
                _mean([(t["buckets"].get(bucket) or {}).get("mAP") for t in tests.values()])
            )
        paired = [tests[k]["mAP"] - none[k]["mAP"] for k in tests if k in none]
        difference = _mean(paired) if variant != "none" else None
        rows.append(
            [variant, str(len(tests)), *(_number(x) for x in numbers), _number(difference, "+.3f")]
        )
    return rows


def _number(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        runs = comparison_runs(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return execute.EXIT_USAGE
    plan = [(r, *plan_action(r, force=False)) for r in runs]
    code = sweep.run_plan(
        plan,
        argv=argv,
        program="experiments.compare",
        folder=Path(args.output_dir),
        jobs=args.jobs,
        dry_run=args.dry_run,
        progress=not args.no_progress,
    )
    if args.dry_run or code in (execute.EXIT_USAGE, execute.EXIT_INTERRUPTED):
        return code
    cutoffs = ", ".join(args.cutoffs.split(","))
    print(
        f"\nThe comparison ({args.task}, {args.tier} tier, cut-off {cutoffs}, seeds {args.seeds}):"
    )
    print(execute.format_table(COLUMNS, comparison_rows(runs)))
    print(
        "\nhead/medium/tail: labels by training positives; 'test vs none': the test mAP's "
        "difference to `none` on the same seed and cut-off; `linear` is the floor a network "
        "must clear.\nThe full report, with its plots and intervals (more seeds give them):\n  "
        f"python -m experiments.report --records {args.output_dir} --out my_results.md"
    )
    return code


if __name__ == "__main__":
    xla.configure_process()
    sys.exit(main())
