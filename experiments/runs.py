"""Runs of a config: expansion into (varied value, cut-off, seed), their folders, what to do
with each given its existing record (a record is built and written by experiments/records.py).

  <output_dir>/<config name>/<variant slug>/cutoff<k>/seed<s>/record.json

Used by `experiments.run` (the command line); pure functions of configs and files.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from experiments import records
from experiments.configs import overrides
from experiments.lock import LOCK_FILENAME


@dataclasses.dataclass(frozen=True)
class Run:
    """One (config, varied value, cut-off, seed): the unit that leaves one record."""

    config: ml_collections.ConfigDict  # resolved for this run: varied values applied
    variant: str
    seed: int
    cutoff: int
    workdir: Path
    point: tuple[tuple[str, Any], ...] = ()  # the varied values of this run, (path, value)

    @property
    def record_path(self) -> Path:
        return self.workdir / records.RECORD_FILENAME

    @property
    def label(self) -> str:
        return f"{self.config.name} {self.variant} cutoff={self.cutoff} seed={self.seed}"


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
    """Every run of `config`: varied point x cut-off x seed, in that nesting order.

    `seeds` and `cutoffs` replace the config's lists (to narrow a sweep or run it in parts).
    """
    seeds = list(config.seeds if seeds is None else seeds)
    cutoffs = list(config.cutoffs if cutoffs is None else cutoffs)
    for name, values in (("seeds", seeds), ("cutoffs", cutoffs)):
        if not values or len(set(values)) != len(values):
            raise ValueError(f"{name} must be a non-empty list without repeats; got {values}.")
    if any(s < 0 for s in seeds):
        raise ValueError(f"Seeds are integers >= 0; got {seeds}.")
    if any(c < 1 for c in cutoffs):
        raise ValueError(
            f"Cut-offs are training positives of the rarest label, >= 1; got {cutoffs}."
        )
    runs, slugs = [], {}
    for point in overrides.varied_points(config):
        run_config = overrides.at_point(config, point)
        variant = format_variant(run_config)
        slug = variant_slug(variant)
        if slug in slugs:  # two varied points would write (and skip) the same records
            raise ValueError(
                f"Varied points {slugs[slug]} and {point} give variants that share the folder "
                f"{slug!r}; make the variant template tell the varied values apart, e.g. "
                "'{scheme}(beta={scheme_params.beta:g})'."
            )
        slugs[slug] = point
        for cutoff in cutoffs:
            for seed in seeds:
                workdir = run_dir(config.output_dir, config.name, variant, cutoff, seed)
                seeded = replicate_config(run_config, seed)
                runs.append(Run(seeded, variant, seed, cutoff, workdir, tuple(point.items())))
    return runs


def replicate_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """`config` for run seed `seed`: with data.seed None the seed also draws the data, and the
    run's config (and so its record) says which data seed it used."""
    if config.data.get("seed") is not None:
        return config
    seeded = copy.deepcopy(config)
    seeded.data.seed = seed
    return seeded


def config_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted paths where two record configs differ in a field that changes the result
    (`records.is_result_neutral` fields, such as where files live, are ignored; a field added
    later counts as its `records.ADDED_FIELD_DEFAULTS` value where absent)."""
    a = records.without_added_defaults(records.flatten(recorded))
    b = records.without_added_defaults(records.flatten(current))
    return sorted(
        path
        for path in set(a) | set(b)
        if a.get(path, "<absent>") != b.get(path, "<absent>")
        and not records.is_result_neutral(path)
    )


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path` (`records.load_record`), or None when absent, unreadable or of a
    version this code does not read (either way the run is redone)."""
    try:
        return records.load_record(path)
    except (OSError, ValueError):
        return None


def recorded_config(record: dict[str, Any]) -> dict[str, Any]:
    """The record's config as the current schema stores it (an older version's upgraded)."""
    return records.upgrade_config(record.get("config") or {}, record.get("schema_version"))


def _has_state(workdir: Path) -> bool:
    """Whether `workdir` holds anything of a run (its lock file aside)."""
    return workdir.is_dir() and any(p.name != LOCK_FILENAME for p in workdir.iterdir())


def plan_action(run: Run, *, force: bool) -> tuple[str, str]:
    """("run" | "skip" | "conflict", reason) for one run, from its existing record."""
    record = read_record(run.record_path)
    if record is None or record.get("status") != "finished":
        if record is not None:
            return "run", f"rerun: previous record has status {record.get('status')!r}"
        return "run", "resume from checkpoint" if _has_state(run.workdir) else "new"
    if force:
        return "run", "forced: finished record and checkpoints deleted first"
    differences = config_differences(recorded_config(record), records.json_safe_config(run.config))
    if differences:
        shown = ", ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
        return "conflict", (
            f"finished record {run.record_path} was written by a different config (differs in "
            f"{shown}); rerun with --force to replace it, or choose another --output-dir"
        )
    return "skip", f"finished record at {run.record_path} (--force reruns it)"
