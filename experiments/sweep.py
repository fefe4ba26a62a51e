"""`python -m experiments.sweep`: the headline sweep behind RESULTS.md, then the report.

    python -m experiments.sweep                         # cpu tier, catalog + catalog_step
    python -m experiments.sweep --seeds 0,1,2,3,4       # more seeds (finished runs are skipped)
    python -m experiments.sweep --tier gpu              # the gpu tier, on an accelerator
    python -m experiments.sweep --dry-run               # what would run, and the expected time

Every `<task>_<method>` config of the chosen tasks runs with its own sweep of seeds, cut-offs and
betas (see `experiments.configs`), writing records under `results/runs/<tier>/`; finished runs
are skipped, so the sweep can run in parts and an interrupted sweep resumes where it stopped.
When every run has finished, RESULTS.md is regenerated from all records under `results/runs/`.
Checkpoints stay beside the records and are never committed (.gitignore); the records are.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from experiments import methods, report, run

DEFAULT_TASKS = ("catalog", "catalog_step")
RECORDS_ROOT = "results/runs"


def sweep_configs(tasks: Sequence[str]) -> list[str]:
    """Config names of the sweep: every method for every task, in a stable order."""
    return [f"{task}_{method}" for task in tasks for method in methods.METHODS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__)
    parser.add_argument("--tier", default="cpu", help="cpu (default), gpu or smoke")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma list of tasks")
    parser.add_argument("--seeds", help="comma list of seeds (default: each config's)")
    parser.add_argument("--cutoffs", help="comma list of cut-offs (default: each config's)")
    parser.add_argument("--records", default=RECORDS_ROOT, help="records root (results/runs)")
    parser.add_argument(
        "--jobs", help="runs trained at once (default: one per core; see python -m experiments.run)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the runs; train nothing")
    parser.add_argument("--no-report", action="store_true", help="do not regenerate RESULTS.md")
    args = parser.parse_args(argv)

    common = ["--tier", args.tier, "--output-dir", f"{args.records}/{args.tier}", "--no-progress"]
    for flag in ("seeds", "cutoffs", "jobs"):
        if getattr(args, flag):
            common += [f"--{flag}", getattr(args, flag)]
    if args.dry_run:
        common.append("--dry-run")

    failed = []
    for name in sweep_configs([t for t in args.tasks.split(",") if t]):
        print(f"== {name} ({args.tier}) ==", flush=True)
        code = run.main(["--config", name, *common])
        if code == run.EXIT_INTERRUPTED:
            return code
        if code != 0:
            failed.append(name)
    if failed:
        print(f"sweep: configs with failed runs: {', '.join(failed)}", file=sys.stderr)
    if args.dry_run or args.no_report:
        return 1 if failed else 0
    report_args = ["--records", args.records]
    if args.records != RECORDS_ROOT:  # Other records get their report beside them.
        report_args += ["--out", f"{args.records}/REPORT.md"]
    return report.main(report_args) or (1 if failed else 0)


if __name__ == "__main__":
    run.configure_process()
    sys.exit(main())
