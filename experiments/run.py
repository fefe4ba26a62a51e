"""`python -m experiments.run`: configs -> runs -> records.

A config (see experiments/configs) enumerates runs: one per (varied value, cut-off, seed). Each
run trains with `experiments.train.train_and_evaluate` and leaves an atomically written record
(schema: experiments/records.py) at

  <output_dir>/<config name>/<variant slug>/cutoff<k>/seed<s>/record.json

with its checkpoints beside it (experiments/runs.py). Usage:

  python -m experiments.run --list                        # every config, runs and time
  python -m experiments.run --config catalog_proposed     # 2 betas x 2 cut-offs x 5 seeds
  python -m experiments.run --config catalog_proposed --seeds 0 --cutoffs 6,12
  python -m experiments.run --config catalog_focal --set loss_params.gamma=1.0 --set num_epochs=5
  python -m experiments.run --config catalog_none --tier smoke     # or: --config catalog_none_smoke
  python -m experiments.run --config catalog_none --dry-run        # validate; what would run
  python -m experiments.run --config catalog_none --dry-run --show-config  # who set each field

This module parses the arguments and calls: experiments/plan.py resolves the config into runs,
checks them (config, output folder, data) and estimates their time; experiments/execute.py
trains them (exit codes: `execute.EXIT_*`).

`--set key=value` (repeatable) sets any field by dotted path (experiments/configs/overrides.py);
values are Python literals (`5`, `0.5`, `[1,1]`, `'text'`), anything else is a string. New keys
may be added only under `data`, `scheme_params` and `loss_params`; `--set vary.<path>=[...]`
varies a field (one run per value), and setting a varied field fixes it. The whole resolved
config of every run is validated before anything runs, `--dry-run` included
(experiments/configs/validate.py): types, ranges, unknown keys at any depth, the scheme's,
loss's and loader's parameters. A config error
writes nothing and exits with code 2.

Each run holds an exclusive lock on its folder (experiments/lock.py) from before it reads the
record until it has written it; a second process on the same folder prints one line naming the
holder, touches nothing, and goes on to its other runs (exit code 1 at the end). The output
folder is checked to be writable before any data is loaded.

A run with a finished record (schema version 1 or 2) is skipped (with a note) unless `--force`,
which starts every selected run from scratch (its record and checkpoints are deleted first). A
finished record written by a different config (e.g. another tier) is never silently reused: the
run is reported as a conflict. A failed run is recorded as failed, with the command that restarts
just that run from scratch in its failure text, and the next run starts. Ctrl-C (or SIGTERM)
saves a checkpoint and exits with code 130; rerunning the same command resumes the interrupted
run and skips the finished ones. Exit codes: 0 all runs finished or skipped, 1 a run failed,
conflicted or was locked, 2 a usage, config or output-folder error or missing data (found before
any training), 130 interrupted.

Compiled train and eval steps are kept in JAX's persistent compilation cache under
<cache>/jax-compilation (see experiments.data.cache: $LTWEIGHTS_CACHE or ~/.cache/ltweights),
so the runs of a sweep, which share shapes, skip most compilation; --no-compilation-cache
turns it off.

`--jobs N` trains N runs at once, each in its own process pinned to a core (experiments/execute.py);
the default is $LTWEIGHTS_JOBS, else one job per core (1 where a GPU/TPU plugin is installed). A
single run, or --jobs 1, trains in this process, with progress bars. On a CPU every run uses one
core and one XLA thread (experiments/xla.py), so its numbers do not depend on --jobs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from experiments import distributed, execute, plan, xla
from experiments.configs import overrides, tiers
from experiments.execute import EXIT_INTERRUPTED, EXIT_USAGE, format_table
from experiments.runs import plan_action


def _argparse_type(parse):
    """Lets argparse print our message (it hides a plain ValueError's text)."""

    def wrapped(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.run",
        description="Run every (varied value, cut-off, seed) of a config; write one record each. "
        "Each run holds an exclusive lock on its folder; a run whose folder another process "
        "holds is reported as locked and skipped, the other runs go on, and the exit code is 1.",
        epilog="Examples: --config catalog_proposed | --config catalog_none --seeds 0 --cutoffs 6"
        " | --config catalog_focal --set loss_params.gamma=1.0 | --list. Exit codes: 0 done, "
        "1 a run failed, conflicted or was locked, 2 a usage or config error (nothing written), "
        "130 interrupted.",
    )
    parser.add_argument("--config", help="config name <task>_<method>[_<tier>]; see --list")
    parser.add_argument("--list", action="store_true", help="list the configs and exit")
    parser.add_argument("--tier", choices=list(tiers.TIERS), help="cpu (default), gpu or smoke")
    parser.add_argument(
        "--seeds", type=_argparse_type(plan.parse_int_list), help="comma list, e.g. 0 or 0,1,2"
    )
    parser.add_argument(
        "--cutoffs", type=_argparse_type(plan.parse_int_list), help="comma list, e.g. 6 or 6,12"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=_argparse_type(overrides.parse_override),
        metavar="KEY=VALUE",
        help="override a field by dotted path (repeatable), e.g. --set num_epochs=5",
    )
    parser.add_argument("--output-dir", help="folder of run records (default: the config's)")
    parser.add_argument("--force", action="store_true", help="rerun runs from scratch")
    parser.add_argument(
        "--dry-run", action="store_true", help="validate, print the runs; train nothing"
    )
    parser.add_argument(
        "--show-config",
        action="store_true",
        help="print the resolved config and who set each field",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--jobs",
        type=_argparse_type(plan.positive_int),
        help=f"runs trained at once, each in a process pinned to its share of the cores "
        f"(default: ${plan.JOBS_ENV}, else one per core; 1 trains in this process)",
    )
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile every run afresh (default: reuse compiled steps, <cache>/jax-compilation)",
    )
    distributed.add_arguments(parser)  # multi-process runs: --coordinator, --num-processes, ...
    return parser.parse_args(argv)


def print_list() -> None:
    print(format_table(("config", "runs", "cpu time", "method"), plan.config_table()))
    print(
        f"\nTiers: {', '.join(tiers.TIERS)} (--tier NAME or a _<tier> suffix); times are for "
        "the cpu tier on 2 CPU cores."
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # Multi-process runs: join before anything touches JAX; from here on, only process 0 prints.
    try:
        distributed.initialize_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.list:
        print_list()
        return 0
    if not args.config:
        print("error: --config NAME is required (see --list).", file=sys.stderr)
        return EXIT_USAGE
    try:
        config, origin, runs = plan.resolve_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    actions = [(run, *plan_action(run, force=args.force)) for run in runs]
    # Multi-process runs: every process must train the same runs (they meet in collectives).
    distributed.agree(repr([(str(r.workdir), a) for r, a, _ in actions]), "which runs to train")
    if args.show_config:
        print(plan.show_config(config, origin))
    todo = [run for run, action, _ in actions if action == "run"]
    try:
        sizes = plan.check_before_running(config.output_dir, todo, progress=not args.no_progress)
    except plan.PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("Interrupted before training; nothing to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    jobs = plan.job_count(args.jobs)
    if args.dry_run:
        print(plan.describe_selection(config, runs) + "\n")
        print(plan.format_plan(actions, todo, sizes, jobs))
        return 0
    trainer = execute.load_trainer() if todo and (jobs == 1 or len(todo) <= 1) else None
    options = execute.Options(
        argv=tuple(argv),
        force=args.force,
        progress=not args.no_progress,
        cache_dir=None if args.no_compilation_cache else execute.compilation_cache_dir(config),
    )
    return execute.execute(actions, options, trainer, jobs=jobs)


if __name__ == "__main__":
    xla.configure_process()
    sys.exit(main())
