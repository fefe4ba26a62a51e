"""Experiment configs as code: `get_config("<task>_<scheme>")` returns an ml_collections
ConfigDict, built as base -> task -> tier -> scheme.

  tasks    catalog, catalog_step, sleevetype, archetype, csv                    (tasks.py)
  schemes  none, inverse, inverse_sqrt, class_balanced, proposed                 (schemes.py)
  losses   focal, asymmetric, distribution_balanced, logit_adjusted             (schemes.py)
  tiers    cpu (default), gpu, smoke                                             (tiers.py)

Every config enumerates seeds (default 0, 1, 2) and label-frequency cut-offs (default 6, 12,
25, 50), and `proposed` also sweeps beta (0.9, 0.99, 0.999, 0.9999). Run one with

  python -m experiments.run --config catalog_proposed              # cpu tier, 48 runs
  python -m experiments.run --config catalog_proposed --tier gpu   # or: catalog_proposed_gpu
  python -m experiments.run --list                                 # every name

A cpu-tier catalog run takes about `tiers.CPU_SECONDS_PER_RUN` seconds on 2 CPU cores, so a
config costs that times its number of runs (`--dry-run` prints both); a smoke-tier run takes
seconds.
"""

from __future__ import annotations

import difflib

import ml_collections

from experiments.configs import base, schemes, tasks, tiers

__all__ = ["describe", "get_config", "list_configs", "parse_config_name"]


def list_configs() -> list[str]:
    """Every config name, `<task>_<scheme>`, in task then scheme order."""
    return [f"{task}_{scheme}" for task in tasks.TASKS for scheme in schemes.SCHEMES]


def _split(name: str) -> tuple[str, str] | None:
    for task in sorted(tasks.TASKS, key=len, reverse=True):  # catalog_step before catalog
        prefix = task + "_"
        if name.startswith(prefix) and name[len(prefix) :] in schemes.SCHEMES:
            return task, name[len(prefix) :]
    return None


def parse_config_name(name: str) -> tuple[str, str, str | None]:
    """ "<task>_<scheme>[_<tier>]" -> (task, scheme, tier or None).

    Raises ValueError naming the closest valid names when `name` is not one.
    """
    parts = _split(name)
    if parts is not None:
        return (*parts, None)
    for tier in tiers.TIERS:
        if name.endswith("_" + tier):
            parts = _split(name[: -len(tier) - 1])
            if parts is not None:
                return (*parts, tier)
    names = list_configs()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise ValueError(
        f"Unknown config {name!r}.{hint} Names are <task>_<scheme> with task in "
        f"{', '.join(tasks.TASKS)} and scheme in {', '.join(schemes.SCHEMES)}, optionally "
        f"followed by _<tier> ({', '.join(tiers.TIERS)}); `python -m experiments.run --list` "
        "lists them."
    )


def get_config(name: str, tier: str | None = None) -> ml_collections.ConfigDict:
    """The config called `name` ("catalog_proposed", "catalog_proposed_gpu", ...).

    Args:
      name: "<task>_<scheme>", optionally with a "_<tier>" suffix.
      tier: "cpu" | "gpu" | "smoke"; None takes the name's suffix, else the default "cpu".
        Giving both a suffix and a different `tier` is an error.
    """
    task, scheme, suffix_tier = parse_config_name(name)
    if tier is not None and tier not in tiers.TIERS:
        raise ValueError(f"Unknown tier {tier!r}; valid tiers: {', '.join(tiers.TIERS)}.")
    if tier is not None and suffix_tier is not None and tier != suffix_tier:
        raise ValueError(
            f"Config {name!r} names tier {suffix_tier!r} but tier {tier!r} was asked for; "
            f"drop the suffix or the --tier flag."
        )
    tier = tier or suffix_tier or tiers.DEFAULT_TIER
    config = base.get_config()
    tasks.TASKS[task](config)
    tiers.TIERS[tier](config)
    schemes.SCHEMES[scheme](config)
    config.name = f"{task}_{scheme}"
    return config


def _doc(fn) -> str:
    return " ".join((fn.__doc__ or "").split())


def describe(name: str, tier: str | None = None) -> str:
    """The docstring of config `name`: its task, scheme and tier, how to run it and how long the
    runs take, composed from the docstrings of the parts."""
    task, scheme, _ = parse_config_name(name)
    config = get_config(name, tier)
    num_variants = 1
    for values in _sweep_values(config.sweep):
        num_variants *= len(values)
    num_runs = num_variants * len(config.seeds) * len(config.cutoffs)
    seconds = tiers.EXPECTED_SECONDS_PER_RUN.get(config.tier)
    duration = (
        f"about {num_runs * seconds / 60:.0f} min ({seconds:.0f} s per run, 2 CPU cores)"
        if seconds is not None
        else "not measured for this tier"
    )
    return "\n".join(
        [
            f"{config.name} at the {config.tier} tier: {num_runs} runs ({num_variants} variant(s) "
            f"x cut-offs {list(config.cutoffs)} x seeds {list(config.seeds)}), {duration}.",
            f"  run:    python -m experiments.run --config {config.name} --tier {config.tier}",
            f"  task:   {_doc(tasks.TASKS[task])}",
            f"  scheme: {_doc(schemes.SCHEMES[scheme])}",
            f"  tier:   {_doc(tiers.TIERS[config.tier])}",
        ]
    )


def _sweep_values(sweep: ml_collections.ConfigDict) -> list[list]:
    values = []
    for value in sweep.values():
        if isinstance(value, ml_collections.ConfigDict):
            values.extend(_sweep_values(value))
        else:
            values.append(list(value))
    return values
