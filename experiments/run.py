"""`python -m experiments.run`: configs -> runs -> records.

A config (see experiments/configs) enumerates runs: one per (sweep value, cut-off, seed). Each
run trains with `experiments.train.train_and_evaluate` and leaves an atomically written record
(schema: experiments/records.py) at

  <output_dir>/<config name>/<variant slug>/cutoff<k>/seed<s>/record.json

with its checkpoints beside it. Usage:

  python -m experiments.run --list                        # every config, runs and time
  python -m experiments.run --config catalog_proposed     # 4 betas x 4 cut-offs x 3 seeds
  python -m experiments.run --config catalog_proposed --seeds 0 --cutoffs 6,12
  python -m experiments.run --config catalog_focal --set loss_params.gamma=1.0 --set num_epochs=5
  python -m experiments.run --config catalog_none --tier smoke     # or: --config catalog_none_smoke
  python -m experiments.run --config catalog_none --dry-run        # what would run, how long

`--set key=value` (repeatable) sets any field by dotted path; values are Python literals
(`5`, `0.5`, `[1,1]`, `'text'`), anything else is taken as a string. New keys may be added only
under `data`, `scheme_params` and `loss_params` (the loader or loss then rejects a misspelt
one); `--set sweep.<path>=[...]` sweeps a field, and setting a swept field fixes it.

A run with a finished record is skipped (with a note) unless `--force`, which starts every
selected run from scratch (its record and checkpoints are deleted first). A finished record
written by a different config (e.g. another tier) is never silently reused: the run is reported
as a conflict. A failed run is recorded as failed and the next run starts; the exit code is 1
if any run failed. Ctrl-C (or SIGTERM) saves a checkpoint and exits with code 130; rerunning
the same command resumes the interrupted run and skips the finished ones. Exit codes: 0 all
runs finished or skipped, 1 a run failed or conflicted, 2 a usage error or missing data (found
before any training), 130 interrupted.

Compiled train and eval steps are kept in JAX's persistent compilation cache under
<cache>/jax-compilation (see experiments.data.cache: $LTWEIGHTS_CACHE or ~/.cache/ltweights),
so the runs of a sweep, which share shapes, skip most compilation; --no-compilation-cache
turns it off.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import dataclasses
import difflib
import itertools
import json
import re
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from experiments import configs, records
from experiments.configs import schemes, tasks, tiers

# Blocks whose keys are keyword arguments of a loader, scheme or loss: `--set` may add keys.
OPEN_BLOCKS = ("data", "scheme_params", "loss_params")
# Fields that may differ between a finished record and the current config without making the
# record stale: where files live, and which seeds and cut-offs the invocation selected.
_NOT_COMPARED = ("output_dir", "data.data_dir", "data.cache_dir", "seeds", "cutoffs")
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


@dataclasses.dataclass(frozen=True)
class Run:
    """One (config, sweep value, cut-off, seed): the unit that leaves one record."""

    config: ml_collections.ConfigDict  # resolved for this run: sweep values applied
    variant: str
    seed: int
    cutoff: int
    workdir: Path

    @property
    def record_path(self) -> Path:
        return self.workdir / records.RECORD_FILENAME

    @property
    def label(self) -> str:
        return f"{self.config.name} {self.variant} cutoff={self.cutoff} seed={self.seed}"


# ---------------------------------------------------------------------------------------------
# Pure helpers: parsing, overrides, sweep expansion, paths.


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


def parse_value(raw: str) -> Any:
    """A Python literal (5, 0.5, [1, 2], None, True, 'x') or, failing that, the string."""
    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        return raw


def parse_override(text: str) -> tuple[str, Any]:
    """ "model.num_filters=32" -> ("model.num_filters", 32)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(
            f"--set expects key=value with a dotted key, e.g. --set model.num_filters=32; "
            f"got {text!r}."
        )
    return key, parse_value(raw)


def field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted path of `config`, blocks and leaves, e.g. ["data", "data.seed", ...]."""
    paths = []
    for key, value in config.items():
        path = prefix + key
        paths.append(path)
        if isinstance(value, ml_collections.ConfigDict):
            paths.extend(field_paths(value, path + "."))
    return paths


def _unknown_field(path: str, config: ml_collections.ConfigDict, what: str) -> ValueError:
    close = difflib.get_close_matches(path, field_paths(config), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ValueError(
        f"{what}: {config.name} has no field {path!r}.{hint} "
        "`python -m experiments.run --config NAME --dry-run --show-config` prints every field."
    )


def has_path(config: ml_collections.ConfigDict, path: str) -> bool:
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            return False
        node = node[key]
    return True


def get_path(config: ml_collections.ConfigDict, path: str) -> Any:
    node: Any = config
    for key in path.split("."):
        node = node[key]
    return node


def set_path(config: ml_collections.ConfigDict, path: str, value: Any, *, create: bool) -> None:
    """Sets config.<path> = value, making missing blocks when `create` (for sweep entries)."""
    *parents, leaf = path.split(".")
    node = config
    for key in parents:
        if key not in node:
            if not create:
                raise KeyError(path)
            node[key] = ml_collections.ConfigDict()
        node = node[key]
    if leaf not in node and not create:
        raise KeyError(path)
    node[leaf] = value


def sweep_axes(config: ml_collections.ConfigDict) -> list[tuple[str, list[Any]]]:
    """The swept fields of `config.sweep` as (dotted path, values), in a stable order."""
    axes = []

    def walk(node: ml_collections.ConfigDict, prefix: str) -> None:
        for key in sorted(node.keys()):
            value, path = node[key], prefix + key
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, path + ".")
                continue
            if not isinstance(value, list | tuple) or not value:
                raise ValueError(
                    f"sweep.{path} must be a non-empty list of values, e.g. "
                    f"--set sweep.{path}=[0.9,0.99]; got {value!r}."
                )
            if not has_path(config, path):
                raise _unknown_field(path, config, f"sweep.{path}")
            axes.append((path, list(value)))

    walk(config.sweep, "")
    return axes


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, Any]]
) -> ml_collections.ConfigDict:
    """A copy of `config` with each (dotted path, value) set, checked against its fields.

    Setting a swept field fixes it to that one value (its sweep entry is dropped);
    "sweep.<path>" adds or replaces a sweep over an existing field.
    """
    config = copy.deepcopy(config)
    for path, value in overrides:
        if path.startswith("sweep."):
            target = path[len("sweep.") :]
            if not has_path(config, target):
                raise _unknown_field(target, config, f"--set {path}")
            set_path(config, path, value, create=True)
            continue
        open_block = path.split(".")[0] in OPEN_BLOCKS and path.count(".") == 1
        if not has_path(config, path) and not open_block:
            raise _unknown_field(path, config, f"--set {path}")
        try:
            set_path(config, path, value, create=open_block)
        except TypeError as e:
            raise ValueError(f"--set {path}={value!r}: {e}") from None
        if has_path(config.sweep, path):
            _drop_sweep(config.sweep, path)
    return config


def _drop_sweep(sweep: ml_collections.ConfigDict, path: str) -> None:
    *parents, leaf = path.split(".")
    node = sweep
    for key in parents:
        node = node[key]
    del node[leaf]


def sweep_points(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """One {path: value} per point of the Cartesian product of the sweep ([{}] if none)."""
    axes = sweep_axes(config)
    paths = [path for path, _ in axes]
    return [
        dict(zip(paths, combo, strict=True)) for combo in itertools.product(*[v for _, v in axes])
    ]


def format_variant(config: ml_collections.ConfigDict) -> str:
    """The record's variant: `config.variant` formatted with the config's fields."""
    try:
        return config.variant.format(**config)
    except (KeyError, AttributeError, IndexError, ValueError) as e:
        raise ValueError(
            f"variant template {config.variant!r} of {config.name} does not format ({e!r}); "
            "it may use only the config's fields, e.g. '{scheme}(beta={scheme_params.beta:g})'."
        ) from None


def variant_slug(variant: str) -> str:
    """A folder name for a variant: "proposed(beta=0.999)" -> "proposed-beta-0.999"."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", variant).strip("-.")
    if not slug:
        raise ValueError(f"Variant {variant!r} gives an empty folder name; use letters or digits.")
    return slug


def run_dir(output_dir: str | Path, config_name: str, variant: str, cutoff: int, seed: int) -> Path:
    return (
        Path(output_dir) / config_name / variant_slug(variant) / f"cutoff{cutoff}" / f"seed{seed}"
    )


def expand_runs(
    config: ml_collections.ConfigDict,
    *,
    seeds: Sequence[int] | None = None,
    cutoffs: Sequence[int] | None = None,
) -> list[Run]:
    """Every run of `config`: sweep point x cut-off x seed, in that nesting order.

    `seeds` and `cutoffs` replace the config's lists (to narrow a sweep or run it in parts).
    """
    seeds = list(config.seeds if seeds is None else seeds)
    cutoffs = list(config.cutoffs if cutoffs is None else cutoffs)
    for name, values in (("seeds", seeds), ("cutoffs", cutoffs)):
        if not values or len(set(values)) != len(values):
            raise ValueError(f"{name} must be a non-empty list without repeats; got {values}.")
    if any(c < 1 for c in cutoffs):
        raise ValueError(
            f"Cut-offs are training positives of the rarest label, >= 1; got {cutoffs}."
        )
    runs, slugs = [], {}
    for point in sweep_points(config):
        run_config = copy.deepcopy(config)
        for path, value in point.items():
            set_path(run_config, path, value, create=False)
        variant = format_variant(run_config)
        slug = variant_slug(variant)
        if slug in slugs:  # two sweep points would write (and skip) the same records
            raise ValueError(
                f"Sweep points {slugs[slug]} and {point} give variants that share the folder "
                f"{slug!r}; make the variant template tell the sweep values apart, e.g. "
                "'{scheme}(beta={scheme_params.beta:g})'."
            )
        slugs[slug] = point
        for cutoff in cutoffs:
            for seed in seeds:
                workdir = run_dir(config.output_dir, config.name, variant, cutoff, seed)
                runs.append(Run(run_config, variant, seed, cutoff, workdir))
    return runs


def json_safe_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """config.to_dict() through a JSON round trip (tuples -> lists), as stored in records."""
    return json.loads(json.dumps(config.to_dict()))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def config_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted paths where two record configs differ, ignoring where files live and the
    seed / cut-off selection."""
    a, b = _flatten(recorded), _flatten(current)
    return sorted(
        path
        for path in set(a) | set(b)
        if a.get(path, "<absent>") != b.get(path, "<absent>")
        and not any(path == n or path.startswith(n + ".") for n in _NOT_COMPARED)
    )


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None when absent, unreadable or of another schema version
    (either way the run is redone)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("schema_version") != records.SCHEMA_VERSION:
        return None
    return record


def plan_action(run: Run, *, force: bool) -> tuple[str, str]:
    """("run" | "skip" | "conflict", reason) for one run, from its existing record."""
    record = read_record(run.record_path)
    if record is None or record.get("status") != "finished":
        if record is not None:
            return "run", f"rerun: previous record has status {record.get('status')!r}"
        return "run", "new" if not run.workdir.exists() else "resume from checkpoint"
    if force:
        return "run", "forced: finished record and checkpoints deleted first"
    differences = config_differences(record.get("config", {}), json_safe_config(run.config))
    if differences:
        shown = ", ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
        return "conflict", (
            f"finished record {run.record_path} was written by a different config (differs in "
            f"{shown}); rerun with --force to replace it, or choose another --output-dir"
        )
    return "skip", f"finished record at {run.record_path} (--force reruns it)"


def failed_result(failure: str, wall_time_s: float) -> dict[str, Any]:
    """The trainer's part of a record for a run that raised instead of returning."""
    return {
        "status": "failed",
        "failure": failure,
        "data": None,
        "curves": [],
        "val": None,
        "test": None,
        "wall_time_s": wall_time_s,
        "images_per_s": None,
        "steps": 0,
    }


def build_record(run: Run, result: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any]:
    """The record of `run`: the trainer's fields plus what identifies the run."""
    record = dict(result)
    record.update(
        schema_version=records.SCHEMA_VERSION,
        config_name=run.config.name,
        task=run.config.task,
        scheme=run.config.scheme,
        loss=run.config.loss,
        variant=run.variant,
        tier=run.config.tier,
        seed=run.seed,
        cutoff=run.cutoff,
        config=json_safe_config(run.config),
        environment=environment,
    )
    record.setdefault("failure", None)
    return record


def check_data(config: ml_collections.ConfigDict, cutoff: int) -> None:
    """Loads the task's data once before training (built and cached by the data layer), so
    missing data fails at once rather than in every run."""
    from experiments.data import load_task

    params = config.data.to_dict()
    seed = params.pop("seed")
    load_task(config.task, cutoff=cutoff, seed=seed, **params)


def data_error_message(config: ml_collections.ConfigDict, error: Exception) -> str:
    message = f"{config.task} data is not available: {type(error).__name__}: {error}"
    if config.task in tasks.FASHIONPEDIA_TASKS:
        _, scheme, _ = configs.parse_config_name(config.name)
        message += (
            f"\nOnce downloaded: python -m experiments.run --config {config.name} "
            "--set data.data_dir=<folder>"
            f"\nThe embedded config {tasks.EMBEDDED_TASK}_{scheme} runs the same comparison on "
            f"Fashion-MNIST catalog images with no download:\n  python -m experiments.run "
            f"--config {tasks.EMBEDDED_TASK}_{scheme}"
        )
    return message


def summary_row(run: Run, action: str, record: dict[str, Any] | None) -> list[str]:
    def number(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    test = (record or {}).get("test") or {}
    tail = ((test.get("buckets") or {}).get("tail") or {}).get("mAP")
    status = (record or {}).get("status", action) if action != "conflict" else "conflict"
    if action == "skip":
        status += " (skipped)"
    wall = (record or {}).get("wall_time_s")
    return [
        run.variant,
        str(run.cutoff),
        str(run.seed),
        status,
        number(test.get("mAP")),
        number(tail),
        number(test.get("macro_f1")),
        "-" if wall is None else f"{wall:.0f}s",
    ]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines = [line.rstrip() for line in lines]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


SUMMARY_HEADER = ("variant", "cutoff", "seed", "status", "test mAP", "tail mAP", "macro-F1", "time")


# ---------------------------------------------------------------------------------------------
# The command line.


@contextlib.contextmanager
def compilation_cache(directory: Path | None):
    """JAX's persistent compilation cache in `directory` for the runs of one invocation.

    The runs of a sweep share model and batch shapes, so after the first run XLA compilation
    (about half of a cpu-tier run) is read from disk; the executables are the same, so the
    numbers are too. Left alone when None or when the user configured a cache already; the
    previous settings come back afterwards.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    if directory is None or jax.config.jax_compilation_cache_dir is not None:
        yield
        return
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
        jax_cache.reset_cache()


def compilation_cache_dir(config: ml_collections.ConfigDict) -> Path:
    from experiments.data.cache import cache_root

    return cache_root(config.data.cache_dir) / "jax-compilation"


def _load_trainer():
    """(train_and_evaluate, Interrupted); imported late so --list and --dry-run need no JAX."""
    from experiments.train import Interrupted, train_and_evaluate

    return train_and_evaluate, Interrupted


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
        description="Run every (sweep value, cut-off, seed) of a config; write one record each.",
        epilog="Examples: --config catalog_proposed | --config catalog_none --seeds 0 --cutoffs 6"
        " | --config catalog_focal --set loss_params.gamma=1.0 | --list",
    )
    parser.add_argument("--config", help="config name <task>_<scheme>[_<tier>]; see --list")
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
        type=_argparse_type(parse_override),
        metavar="KEY=VALUE",
        help="override a field by dotted path (repeatable), e.g. --set num_epochs=5",
    )
    parser.add_argument("--output-dir", help="folder of run records (default: the config's)")
    parser.add_argument("--force", action="store_true", help="rerun runs from scratch")
    parser.add_argument("--dry-run", action="store_true", help="print the runs; train nothing")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile every run afresh (default: reuse compiled steps, <cache>/jax-compilation)",
    )
    return parser.parse_args(argv)


def print_list() -> None:
    rows = []
    for name in configs.list_configs():
        config = configs.get_config(name)
        num_runs = len(expand_runs(config))
        _, scheme, _ = configs.parse_config_name(name)
        doc = " ".join((schemes.SCHEMES[scheme].__doc__ or "").split())
        doc = re.split(r" \(|:", doc)[0]  # the name, before its reference or formula
        rows.append([name, str(num_runs), _estimate(num_runs, config.tier), doc])
    print(format_table(("config", "runs", "cpu time", "scheme / loss"), rows))
    print(
        f"\nTiers: {', '.join(tiers.TIERS)} (--tier NAME or a _<tier> suffix); times are for "
        "the cpu tier on 2 CPU cores."
    )


def _estimate(num_runs: int, tier: str) -> str:
    seconds = tiers.EXPECTED_SECONDS_PER_RUN.get(tier)
    if seconds is None:
        return "unknown"
    total = num_runs * seconds
    return f"~{total / 60:.0f} min" if total >= 60 else f"~{total:.0f} s"


def _resume_command(argv: Sequence[str]) -> str:
    # Without --force: rerunning with it would delete the checkpoint it should resume from.
    kept = [a for a in argv if a != "--force"]
    return shlex.join(["python", "-m", "experiments.run", *kept])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.list:
        print_list()
        return 0
    if not args.config:
        print("error: --config NAME is required (see --list).", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = configs.get_config(args.config, tier=args.tier)
        config = apply_overrides(config, args.overrides)
        if args.output_dir:
            config.output_dir = args.output_dir
        runs = expand_runs(config, seeds=args.seeds, cutoffs=args.cutoffs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    plan = [(run, *plan_action(run, force=args.force)) for run in runs]
    if args.show_config:
        print(config)
    if args.dry_run:
        print(configs.describe(config.name, config.tier) + "\n")
        print(format_table(("action", "run", "why"), [[a, r.label, why] for r, a, why in plan]))
        todo = sum(a == "run" for _, a, _ in plan)
        print(f"\n{todo} of {len(plan)} runs would train ({_estimate(todo, config.tier)}).")
        return 0

    todo = [run for run, action, _ in plan if action == "run"]
    if todo:
        try:
            check_data(todo[0].config, todo[0].cutoff)
        except KeyboardInterrupt:
            print("Interrupted before training; nothing to resume.", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as e:  # the data layer's own message, with what to do instead
            print(f"error: {data_error_message(config, e)}", file=sys.stderr)
            return EXIT_USAGE
    trainer = _load_trainer() if todo else None

    cache = None if args.no_compilation_cache or not todo else compilation_cache_dir(config)
    with compilation_cache(cache):
        return _run_all(plan, args, argv, trainer)


def _run_all(plan, args: argparse.Namespace, argv: Sequence[str], trainer) -> int:
    """Runs the planned runs in order; returns the exit code. `trainer` is (train, Interrupted)."""
    if trainer is not None:
        train_and_evaluate, Interrupted = trainer
        environment = records.environment()
    rows, failed = [], 0
    for i, (run, action, why) in enumerate(plan, start=1):
        prefix = f"[{i}/{len(plan)}] {run.label}"
        if action != "run":
            print(f"{prefix}: {action}: {why}")
            failed += action == "conflict"
            rows.append(summary_row(run, action, read_record(run.record_path)))
            continue
        if args.force and run.workdir.exists():
            shutil.rmtree(run.workdir)
        print(f"{prefix}: {why}")
        start = time.perf_counter()
        try:
            result = train_and_evaluate(
                run.config,
                seed=run.seed,
                cutoff=run.cutoff,
                workdir=run.workdir,
                progress=not args.no_progress,
            )
        except (Interrupted, KeyboardInterrupt):
            rows.append(summary_row(run, "interrupted", None))
            print(format_table(SUMMARY_HEADER, rows))
            print(
                f"\nInterrupted: {run.label}. Its checkpoint is kept under {run.workdir}. "
                f"Resume by rerunning the same command:\n  {_resume_command(argv)}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        except Exception as e:  # recorded as failed; the remaining runs still run
            traceback.print_exc()
            result = failed_result(f"{type(e).__name__}: {e}", time.perf_counter() - start)
        record = build_record(run, result, environment)
        records.atomic_write_json(run.record_path, record)
        failed += record["status"] != "finished"
        rows.append(summary_row(run, action, record))
        print(f"{prefix}: {' '.join(rows[-1][3:])} -> {run.record_path}")

    print(format_table(SUMMARY_HEADER, rows))
    if failed:
        print(f"\n{failed} of {len(plan)} runs failed or conflicted; see above.", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
