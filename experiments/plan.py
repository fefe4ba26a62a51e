"""Planning a command's runs before any trains: the data each needs, where the records go, how
many at once, and how long it will take.

`check_data` loads every selected cut-off's data once (built and cached by the data layer), so
what a run would refuse (a cut-off beyond the data, a CSV without its columns, missing files) is
refused before the first run, `--dry-run` included, and the training-set sizes feed `estimate`.
"""

from __future__ import annotations

import dataclasses
import heapq
import inspect
import os
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import ml_collections

from experiments import parallel
from experiments.atomic import disk_full, disk_full_message
from experiments.configs import tasks, tiers
from experiments.runs import Run
from experiments.words import duration

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


def accelerator_installed() -> bool:
    """Whether a JAX GPU or TPU plugin is installed (asked without starting JAX)."""
    names = {dist.metadata["Name"].lower().replace("_", "-") for dist in metadata.distributions()}
    return any(n.startswith(("jax-cuda", "jax-rocm", "libtpu")) for n in names)


def default_jobs() -> int:
    """$LTWEIGHTS_JOBS, else one job per available core on a CPU machine and 1 where an
    accelerator is installed (its runs share one device)."""
    value = os.environ.get(JOBS_ENV, "").strip()
    if not value:
        return 1 if accelerator_installed() else parallel.default_jobs()
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
