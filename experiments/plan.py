"""Planning a command's runs before any trains: config -> runs (the selection, validated), the
data each needs, where the records go, how many at once, and how long it will take. The
commands (`experiments.run`, `.sweep`, `.compare`, `.transfer`) parse their arguments and call
these; `experiments.execute` then trains the plan.

`check_data` loads every selected cut-off's data once (built and cached by the data layer), so
what a run would refuse (a cut-off beyond the data, a CSV without its columns, missing files) is
refused before the first run, `--dry-run` included, and the training-set sizes feed `estimate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import inspect
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from experiments import configs, distributed, methods, parallel, xla
from experiments.atomic import disk_full, disk_full_message
from experiments.configs import overrides, tasks, tiers, validate
from experiments.execute import format_table
from experiments.runs import Run, expand_runs
from experiments.words import count, duration

JOBS_ENV = "LTWEIGHTS_JOBS"


@dataclasses.dataclass(frozen=True)
class Throughput:
    """One run's speed on one core: training images per second (augmentation and the step),
    validation images per second (once per epoch), and the fixed seconds of a run (start-up,
    compilation, checkpoints, the final evaluation)."""

    train_images_per_s: float
    eval_images_per_s: float
    fixed_s: float


# Measured on the embedded catalog (28 px, 2,000 training and 500 validation images) on a 2-core
# machine, one run per core: the cpu tier's ResNet trains at 680-790 images/s (the 48-epoch sweep
# of RESULTS.md, median run 150 s), its linear floor at 9,000-12,000; smoke runs are mostly
# compilation. Other tasks have larger images, so their estimates are low (README says so).
THROUGHPUT = {
    ("cpu", "resnet"): Throughput(740.0, 3000.0, 15.0),
    ("cpu", "linear"): Throughput(10000.0, 20000.0, 5.0),
    ("smoke", "resnet"): Throughput(600.0, 2000.0, 15.0),
    ("smoke", "linear"): Throughput(5000.0, 10000.0, 5.0),
}


def run_seconds(config: ml_collections.ConfigDict, num_train: int, num_val: int) -> float | None:
    """Expected seconds of one run of `config` on one core, or None for an unmeasured tier."""
    speed = THROUGHPUT.get((config.tier, config.model.name))
    if speed is None:
        return None
    epochs = int(config.num_epochs)
    return (
        speed.fixed_s
        + epochs * num_train / speed.train_images_per_s
        + epochs * num_val / speed.eval_images_per_s
    )


def makespan(seconds: Sequence[float], jobs: int, cores: int | None = None) -> float:
    """Wall seconds of runs taking `seconds` each, `jobs` at a time on `cores` cores (more jobs
    than cores share them), the longest first as the sweep orders them."""
    lanes = max(1, min(jobs, cores or len(parallel.STARTING_CORES)))
    finish = [0.0] * lanes
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(finish, finish[0] + s)
    return max(finish)


@dataclasses.dataclass(frozen=True)
class DataSize:
    num_train: int
    num_val: int


def estimate(runs: Sequence[Run], sizes: dict[tuple, DataSize], jobs: int) -> str:
    """ "~6 min (2 at a time)" for `runs` with their data `sizes` (see `data_key`), or a reason
    it is unknown."""
    seconds = []
    for run in runs:
        size = sizes.get(data_key(run.config, run.cutoff))
        one = None if size is None else run_seconds(run.config, size.num_train, size.num_val)
        if one is None:
            return "time unknown: not measured for this tier or task"
        seconds.append(one)
    if not seconds:
        return "nothing to train"
    at_once = min(jobs, len(seconds))
    return f"~{duration(makespan(seconds, jobs))} at {at_once} at a time on an idle machine"


def rough_total(num_runs: int, tier: str) -> str:
    """ "~25 min" for `num_runs` long-tailed catalog runs of `tier` one after another (for
    --list, which loads no data), or "unknown"."""
    seconds = tiers.EXPECTED_SECONDS_PER_RUN.get(tier)
    return "unknown" if seconds is None else f"~{duration(num_runs * seconds)}"


def data_key(config: ml_collections.ConfigDict, cutoff: int) -> tuple:
    """What a run's data depends on (not its seed, which only redraws it)."""
    params = config.data.to_dict()
    params.pop("seed", None)
    return config.task, cutoff, repr(sorted(params.items()))


def check_data(config: ml_collections.ConfigDict, cutoff: int, *, progress: bool = True):
    """Loads the task's data once before training (built and cached by the data layer), so
    missing or unusable data fails at once rather than in every run; returns its DataSize."""
    from experiments.data import get_task_loader  # the data layer: imported when data is read

    params = config.data.to_dict()
    seed = params.pop("seed")
    loader = get_task_loader(config.task)
    if "progress" in inspect.signature(loader).parameters:
        params["progress"] = progress
    splits = loader(cutoff=cutoff, seed=0 if seed is None else seed, **params)
    return DataSize(splits.train.num_examples, splits.val.num_examples)


def check_runs_data(runs: Sequence[Run], *, progress: bool = True):
    """{data_key: DataSize} for the data of every run, each loaded once; the data layer's own
    error for the first that cannot be used."""
    sizes: dict[tuple, DataSize] = {}
    for run in runs:
        key = data_key(run.config, run.cutoff)
        if key not in sizes:
            sizes[key] = check_data(run.config, run.cutoff, progress=progress)
    return sizes


def data_error_message(config: ml_collections.ConfigDict, error: Exception) -> str:
    if disk_full(error):
        return f"{disk_full_message(error, config.data.cache_dir or '.')} (the data cache)"
    message = f"{config.task} data cannot be loaded: {type(error).__name__}: {error}"
    if tasks.TASKS[config.task].needs_download:
        method = config.method
        message += (
            f"\nOnce downloaded: python -m experiments.run --config {config.name} "
            "--set data.data_dir=<folder>"
            f"\nThe embedded config {tasks.EMBEDDED_TASK}_{method} runs the same comparison on "
            f"Fashion-MNIST catalog images with no download:\n  python -m experiments.run "
            f"--config {tasks.EMBEDDED_TASK}_{method}"
        )
    return message


def check_writable(directory: Path) -> None:
    """Raises OSError (one-line message) unless `directory` can hold files: a probe file is
    created and removed in it, or, while it does not exist yet, in its nearest existing
    ancestor (so nothing is left behind). Permission bits alone mislead (root ignores them)."""
    existing = directory.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(0, f"{existing} is not a folder")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-probe-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OSError(
            f"output directory {directory} is not writable ({reason}); choose another with "
            "--output-dir DIR"
        ) from None


def default_jobs() -> int:
    """$LTWEIGHTS_JOBS, else one job per available core on a CPU machine and 1 where an
    accelerator is installed (its runs share one device)."""
    value = os.environ.get(JOBS_ENV, "").strip()
    if not value:
        return 1 if xla.accelerator_installed() else parallel.default_jobs()
    try:
        return positive_int(value)
    except ValueError as e:
        raise SystemExit(f"error: ${JOBS_ENV}: {e}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise ValueError(f"expected a whole number >= 1, got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# The selection: config -> runs


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


def describe_selection(config: ml_collections.ConfigDict, runs: Sequence[Run]) -> str:
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


def config_table() -> list[list[str]]:
    """--list: [name, runs, rough time, method] for every config."""
    rows = []
    for name in configs.list_configs():
        config = configs.get_config(name)
        num_runs = len(expand_runs(config))
        doc = methods.METHODS[config.method].doc.split(" (")[0].split(":")[0].rstrip(".")
        rows.append([name, str(num_runs), rough_total(num_runs, config.tier), doc])
    return rows


# ---------------------------------------------------------------------------------------------
# Checks before any run, and the job count


class PlanError(Exception):
    """A check before any run failed; the message is the one line to print (exit code 2)."""


def check_before_running(
    output_dir: str | os.PathLike, todo: Sequence[Run], *, progress: bool = True
) -> dict[tuple, DataSize]:
    """What a run would refuse, refused before any: an unwritable output folder, then data
    that cannot be loaded (for every selected cut-off). Returns the data sizes by `data_key`."""
    if not todo:
        return {}
    try:
        check_writable(Path(output_dir))
    except OSError as e:
        raise PlanError(str(e)) from None
    try:
        return check_runs_data(todo, progress=progress)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # the data layer's own message, with what to do instead
        raise PlanError(data_error_message(todo[0].config, e)) from e


def format_plan(actions, todo: Sequence[Run], sizes: dict, jobs: int) -> str:
    """The dry run's table of (action, run, why) and its closing line with the estimate."""
    table = format_table(("action", "run", "why"), [[a, r.label, why] for r, a, why in actions])
    return (
        f"{table}\n\n{len(todo)} of {count(len(actions), 'run')} would train "
        f"({estimate(todo, sizes, jobs)})."
    )


def job_count(requested: int | None) -> int:
    """Runs at once: `requested`, else `default_jobs()`; 1 for a multi-process run (its
    processes train each run together)."""
    if distributed.process_count() > 1:
        return 1
    return requested or default_jobs()
