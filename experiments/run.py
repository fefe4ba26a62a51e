"""`python -m experiments.run`: configs -> runs -> records.

A config (see experiments/configs) enumerates runs: one per (sweep value, cut-off, seed). Each
run trains with `experiments.train.train_and_evaluate` and leaves an atomically written record
(schema: experiments/records.py) at

  <output_dir>/<config name>/<variant slug>/cutoff<k>/seed<s>/record.json

with its checkpoints beside it (experiments/runs.py). Usage:

  python -m experiments.run --list                        # every config, runs and time
  python -m experiments.run --config catalog_proposed     # 4 betas x 4 cut-offs x 3 seeds
  python -m experiments.run --config catalog_proposed --seeds 0 --cutoffs 6,12
  python -m experiments.run --config catalog_focal --set loss_params.gamma=1.0 --set num_epochs=5
  python -m experiments.run --config catalog_none --tier smoke     # or: --config catalog_none_smoke
  python -m experiments.run --config catalog_none --dry-run        # validate; what would run
  python -m experiments.run --config catalog_none --dry-run --show-config  # who set each field

`--set key=value` (repeatable) sets any field by dotted path (experiments/configs/overrides.py);
values are Python literals (`5`, `0.5`, `[1,1]`, `'text'`), anything else is a string. New keys
may be added only under `data`, `scheme_params` and `loss_params`; `--set sweep.<path>=[...]`
sweeps a field, and setting a swept field fixes it. The whole resolved config of every run is
validated before anything runs, `--dry-run` included (experiments/configs/validate.py): types,
ranges, unknown keys at any depth, the scheme's, loss's and loader's parameters. A config error
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
from pathlib import Path

import ml_collections

from experiments import configs, distributed, execute, methods, xla
from experiments import plan as plan_mod
from experiments.configs import overrides, tiers, validate
from experiments.execute import (  # noqa: F401  (re-exported for callers)
    SUMMARY_HEADER,
    compilation_cache,
    compilation_cache_dir,
    format_table,
    recovery_command,
    summary_row,
)
from experiments.runs import (  # noqa: F401  (the runner's API, re-exported for callers)
    Run,
    build_record,
    config_differences,
    expand_runs,
    failed_result,
    json_safe_config,
    plan_action,
    read_record,
    run_dir,
    variant_slug,
)
from experiments.words import count

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = (
    execute.EXIT_FAILED,
    execute.EXIT_USAGE,
    execute.EXIT_INTERRUPTED,
)  # defined once, in experiments.execute


def parse_int_list(text: str) -> list[int]:
    """ "0,1, 2" -> [0, 1, 2]; a clear error for anything else."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"Expected comma-separated integers such as 0,1,2; got {text!r}."
        ) from None
    if not values:
        raise ValueError(f"Expected at least one integer (e.g. 0 or 0,1,2); got {text!r}.")
    return values


# ---------------------------------------------------------------------------------------------
# The command line.


def _load_trainer():
    """(train_and_evaluate, Interrupted) for runs in this process."""
    return execute.load_trainer()


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
        description="Run every (sweep value, cut-off, seed) of a config; write one record each. "
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
        "--seeds", type=_argparse_type(parse_int_list), help="comma list, e.g. 0 or 0,1,2"
    )
    parser.add_argument(
        "--cutoffs", type=_argparse_type(parse_int_list), help="comma list, e.g. 6 or 6,12"
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
        type=_argparse_type(plan_mod.positive_int),
        help=f"runs trained at once, each in a process pinned to its share of the cores "
        f"(default: ${plan_mod.JOBS_ENV}, else one per core; 1 trains in this process)",
    )
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile every run afresh (default: reuse compiled steps, <cache>/jax-compilation)",
    )
    distributed.add_arguments(parser)  # multi-process runs: --coordinator, --num-processes, ...
    return parser.parse_args(argv)


def print_list() -> None:
    rows = []
    for name in configs.list_configs():
        config = configs.get_config(name)
        num_runs = len(expand_runs(config))
        doc = methods.METHODS[config.method].doc.split(" (")[0].split(":")[0].rstrip(".")
        rows.append([name, str(num_runs), plan_mod.rough_total(num_runs, config.tier), doc])
    print(format_table(("config", "runs", "cpu time", "method"), rows))
    print(
        f"\nTiers: {', '.join(tiers.TIERS)} (--tier NAME or a _<tier> suffix); times are for "
        "the cpu tier on 2 CPU cores."
    )


def show_config(config: ml_collections.ConfigDict, origin: dict[str, str]) -> str:
    """The resolved config, one `path = value  # layer` line per field."""
    flat = configs.flat_values(config)
    width = max(len(f"{p} = {v!r}") for p, v in flat.items())
    lines = [f"{f'{p} = {v!r}':<{width}}  # {origin.get(p, '--set')}" for p, v in flat.items()]
    return "\n".join(lines)


def resolve_config(args: argparse.Namespace):
    """(config, origin, runs) for the command line, validated; ValueError on any problem."""
    config, origin = configs.resolve(args.config, tier=args.tier)
    before = configs.flat_values(config)
    config = overrides.apply_overrides(config, args.overrides)
    if args.output_dir:
        config.output_dir = args.output_dir
    for path, value in configs.flat_values(config).items():
        if path not in before or before[path] != value:
            origin[path] = "--output-dir" if path == "output_dir" and args.output_dir else "--set"
    runs = expand_runs(config, seeds=args.seeds, cutoffs=args.cutoffs)
    checked = set()
    for run in runs:
        if run.variant not in checked:
            checked.add(run.variant)
            validate.check(run.config)
    return config, origin, runs


def config_runs(
    name: str,
    *,
    tier: str | None = None,
    output_dir: str | None = None,
    seeds: Sequence[int] | None = None,
    cutoffs: Sequence[int] | None = None,
) -> list[Run]:
    """The validated runs of config `name` (what `--config name` would run, before planning);
    ValueError on any problem. A method with its own fixed cut-off (the `balanced` ceiling)
    keeps it whatever `cutoffs` says."""
    config = configs.get_config(name, tier=tier)
    if output_dir:
        config.output_dir = output_dir
    if methods.METHODS[config.method].balanced_data:
        cutoffs = None
    runs = expand_runs(config, seeds=seeds, cutoffs=cutoffs)
    for variant_config in {run.variant: run.config for run in runs}.values():
        validate.check(variant_config)
    return runs


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
        config, origin, runs = resolve_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    plan = [(run, *plan_action(run, force=args.force)) for run in runs]
    # Multi-process runs: every process must train the same runs (they meet in collectives).
    distributed.agree(repr([(str(r.workdir), a) for r, a, _ in plan]), "which runs to train")
    if args.show_config:
        print(show_config(config, origin))
    todo = [run for run, action, _ in plan if action == "run"]
    code, sizes = _check(config, todo, args)
    if code is not None:
        return code
    jobs = _job_count(args)
    if args.dry_run:
        print(_selection(config, runs) + "\n")
        print(format_table(("action", "run", "why"), [[a, r.label, why] for r, a, why in plan]))
        print(
            f"\n{len(todo)} of {count(len(plan), 'run')} would train "
            f"({plan_mod.estimate(todo, sizes, jobs)})."
        )
        return 0
    return _run(config, plan, todo, jobs, args, argv)


def _selection(config, runs) -> str:
    """What the command selected: the config described, with the runs, cut-offs and seeds it
    will actually run (not the config's defaults)."""
    variants = sorted({run.variant for run in runs})
    cutoffs = sorted({run.cutoff for run in runs})
    seeds = sorted({run.seed for run in runs})
    described = configs.describe(config, num_variants=len(variants), num_runs=len(runs))
    rest = described.split("\n")[1:]  # its first line counts the config's default selection
    selected = (
        f"{config.name} at the {config.tier} tier: {count(len(runs), 'run')} "
        f"({count(len(variants), 'variant')} x cut-offs {cutoffs} x seeds {seeds})."
    )
    return "\n".join([selected, *rest])


def _check(config, todo, args: argparse.Namespace):
    """(exit code or None, data sizes): what a run would refuse, refused before any runs, the
    same with --dry-run: an unwritable output folder, then data that cannot be loaded."""
    if not todo:
        return None, {}
    try:
        plan_mod.check_writable(Path(config.output_dir))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE, {}
    try:
        return None, plan_mod.check_runs_data(todo, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("Interrupted before training; nothing to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED, {}
    except Exception as e:  # the data layer's own message, with what to do instead
        print(f"error: {plan_mod.data_error_message(config, e)}", file=sys.stderr)
        return EXIT_USAGE, {}


def _job_count(args: argparse.Namespace) -> int:
    # A multi-process run trains its runs one by one, all processes together.
    return 1 if distributed.process_count() > 1 else args.jobs or plan_mod.default_jobs()


def _run(config, plan, todo, jobs: int, args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Runs the checked plan; returns the exit code."""
    in_process = jobs == 1 or len(todo) <= 1
    trainer = _load_trainer() if todo and in_process else None
    options = execute.Options(
        argv=tuple(argv),
        force=args.force,
        progress=not args.no_progress,
        cache_dir=None if args.no_compilation_cache else compilation_cache_dir(config),
    )
    return execute.execute(plan, options, trainer, jobs=jobs)


def configure_process() -> None:
    """For the command line, before anything starts JAX: on a CPU machine this process trains on
    one core with one XLA thread, as each --jobs worker does, so a run's numbers do not depend
    on --jobs (experiments.xla; workers still get the cores the process started with)."""
    if not plan_mod.accelerator_installed() and not xla.backend_started():
        xla.configure_cpu(threads=1)


if __name__ == "__main__":
    configure_process()
    sys.exit(main())
