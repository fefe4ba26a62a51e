"""`python -m experiments.sweep`: the headline sweep behind RESULTS.md, then the report.

    python -m experiments.sweep                         # cpu tier, catalog + catalog_step
    python -m experiments.sweep --seeds 0,1,2,3,4,5     # more replicates (finished runs skipped)
    python -m experiments.sweep --tier gpu              # the gpu tier, on an accelerator
    python -m experiments.sweep --dry-run               # what would run, and the expected time

Every `<task>_<method>` config of the chosen tasks (the compared methods and the `linear` and
`balanced` reference rows) runs with its own seeds, cut-offs and betas (see
`experiments.configs`), writing records under `results/runs/<tier>/`. The runs of all configs
form one plan, ordered replicate by replicate (every run of seed 0, then of seed 1, ...), and are
trained `--jobs` at a time; so a sweep stopped part-way leaves whole replicates that the report
can already compare, and rerunning the same command skips finished runs and resumes the rest.
When every run has finished, RESULTS.md is regenerated from all records under `results/runs/`.
Checkpoints stay beside the records and are never committed (.gitignore); the records are.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments import configs, execute, methods, report, xla
from experiments import plan as plan_mod
from experiments.runs import Run, plan_action

DEFAULT_TASKS = ("catalog", "catalog_step")
RECORDS_ROOT = "results/runs"


def sweep_configs(tasks: Sequence[str]) -> list[str]:
    """Config names of the sweep: every method for every task, in a stable order."""
    existing = set(configs.list_configs())
    return [f"{t}_{m}" for t in tasks for m in methods.METHODS if f"{t}_{m}" in existing]


def replicate_order(runs: Sequence[Run]) -> list[Run]:
    """Seed by seed; within a seed the long `balanced` runs first (so the short ones fill the
    cores at the end), then the configs' own order."""
    return sorted(runs, key=lambda r: (r.seed, not methods.METHODS[r.config.method].balanced_data))


def sweep_runs(tasks, *, tier, records, seeds=None, cutoffs=None) -> list[Run]:
    runs = []
    for name in sweep_configs(tasks):
        runs += plan_mod.config_runs(
            name, tier=tier, output_dir=f"{records}/{tier}", seeds=seeds, cutoffs=cutoffs
        )
    return replicate_order(runs)


def run_plan(plan, *, argv, program, folder: Path, jobs, dry_run: bool, progress: bool) -> int:
    """The runs of several configs (a sweep, a comparison): checks the records folder and every
    run's data, as one config's runs are checked; with `dry_run` prints the plan and its
    estimate, else trains it (`jobs` at a time, default one per core); returns the exit code."""
    todo = [r for r, action, _ in plan if action == "run"]
    jobs = plan_mod.job_count(jobs)
    try:
        sizes = plan_mod.check_before_running(folder, todo, progress=progress)
    except plan_mod.PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return execute.EXIT_USAGE
    if dry_run:
        print(plan_mod.format_plan(plan, todo, sizes, jobs))
        return 0
    if not todo:
        return 0
    options = execute.Options(
        argv=tuple(argv),
        program=program,
        per_run_argv=True,
        progress=progress,
        cache_dir=execute.compilation_cache_dir(todo[0].config),
    )
    trainer = execute.load_trainer() if jobs == 1 or len(todo) == 1 else None
    return execute.execute(plan, options, trainer, jobs=jobs)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the examples one per line
    )
    parser.add_argument("--tier", default="cpu", help="cpu (default), gpu or smoke")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma list of tasks")
    parser.add_argument("--seeds", help="comma list of seeds (default: each config's)")
    parser.add_argument("--cutoffs", help="comma list of cut-offs (default: each config's)")
    parser.add_argument("--records", default=RECORDS_ROOT, help="records root (results/runs)")
    parser.add_argument(
        "--jobs",
        type=int,
        help="runs trained at once (default: one per core; see python -m experiments.run)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the runs; train nothing")
    parser.add_argument("--no-report", action="store_true", help="do not regenerate RESULTS.md")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        runs = sweep_runs(
            [t for t in args.tasks.split(",") if t],
            tier=args.tier,
            records=args.records,
            seeds=plan_mod.parse_int_list(args.seeds) if args.seeds else None,
            cutoffs=plan_mod.parse_int_list(args.cutoffs) if args.cutoffs else None,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return execute.EXIT_USAGE
    plan = [(r, *plan_action(r, force=False)) for r in runs]
    code = run_plan(
        plan,
        argv=argv,
        program="experiments.sweep",
        folder=Path(args.records) / args.tier,
        jobs=args.jobs,
        dry_run=args.dry_run,
        progress=not args.no_progress,
    )
    if args.dry_run or code in (execute.EXIT_USAGE, execute.EXIT_INTERRUPTED):
        return code
    if args.no_report:
        return code
    report_args = ["--records", args.records]
    if args.records != RECORDS_ROOT:  # Other records get their report beside them.
        report_args += ["--out", f"{args.records}/REPORT.md"]
    return report.main(report_args) or code


if __name__ == "__main__":
    xla.configure_process()
    sys.exit(main())
