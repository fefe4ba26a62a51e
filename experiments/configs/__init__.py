"""Experiment configs as code: `get_config("<task>_<method>")` returns an ml_collections
ConfigDict, built in layers, each setting only what it is about:

  base     every field, with the default (cpu) tier's values                    (base.py)
  task     catalog, catalog_step, sleevetype, archetype, csv: the data fields   (tasks.py)
  tier     cpu (default, changes nothing), gpu, smoke: sizes and schedule       (tiers.py)
  method   none, inverse, inverse_sqrt, class_balanced, proposed (weighting schemes);
           focal, asymmetric, distribution_balanced, logit_adjusted (losses); and the
           report's reference rows: linear (a linear model, the floor) and balanced (the
           network on balanced data, the ceiling)
                                                          (experiments/methods.py)
  --set    the command line's overrides (experiments.run)
  finetune with `model.init_from` set, the tier's fine-tune recipe (`config.finetune`) over the
           fields it names, except those `--set` gave (`apply_finetune`, applied with --set)

Every config enumerates seeds (default 0-4; each seed a replicate that also draws the data) and
label-frequency cut-offs (default 6 and 25: 6 fills the tail bucket, 25 the medium one), and
`proposed` also varies beta (0.99, 0.999). Run one with

  python -m experiments.run --config catalog_proposed              # cpu tier, 20 runs
  python -m experiments.run --config catalog_proposed --tier gpu   # or: catalog_proposed_gpu
  python -m experiments.run --config catalog_proposed --dry-run --show-config  # who set what
  python -m experiments.run --list                                 # every name

A cpu-tier catalog run takes about `tiers.CPU_SECONDS_PER_RUN` seconds on 2 CPU cores, so a
config costs that times its number of runs (`--dry-run` prints both); a smoke-tier run takes
seconds.
"""

from __future__ import annotations

import difflib

import ml_collections

from experiments import methods
from experiments.configs import base, tasks, tiers
from experiments.configs.base import flat_values
from experiments.configs.overrides import apply_finetune

__all__ = [
    "LAYERS",
    "apply_finetune",
    "describe",
    "flat_values",
    "get_config",
    "list_configs",
    "parse_config_name",
    "resolve",
]

LAYERS = ("base", "task", "tier", "method")


def _exists(task: str, method: str) -> bool:
    return methods.applies_to(methods.METHODS[method], tasks.TASKS[task].data)


def list_configs() -> list[str]:
    """Every config name, `<task>_<method>`, in task then method order."""
    return [f"{t}_{m}" for t in tasks.TASKS for m in methods.METHODS if _exists(t, m)]


def _split(name: str) -> tuple[str, str] | None:
    for task in sorted(tasks.TASKS, key=len, reverse=True):  # catalog_step before catalog
        prefix = task + "_"
        if name.startswith(prefix) and name[len(prefix) :] in methods.METHODS:
            return task, name[len(prefix) :]
    return None


def parse_config_name(name: str) -> tuple[str, str, str | None]:
    """ "<task>_<method>[_<tier>]" -> (task, method, tier or None).

    Raises ValueError naming the closest valid names when `name` is not one.
    """
    parts, tier = _split(name), None
    for suffix in tiers.TIERS:
        if parts is None and name.endswith("_" + suffix):
            parts, tier = _split(name[: -len(suffix) - 1]), suffix
    if parts is not None:
        if not _exists(*parts):
            with_head = [t for t in tasks.TASKS if _exists(t, parts[1])]
            raise ValueError(
                f"Config {name!r}: method {parts[1]!r} trains on data with every label at the "
                f"head count, which task {parts[0]!r} cannot draw; it exists for "
                f"{', '.join(with_head)}."
            )
        return (*parts, tier)
    close = difflib.get_close_matches(name, list_configs(), n=3, cutoff=0.5)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise ValueError(
        f"Unknown config {name!r}.{hint} Names are <task>_<method> with task in "
        f"{', '.join(tasks.TASKS)} and method in {', '.join(methods.METHODS)}, optionally "
        f"followed by _<tier> ({', '.join(tiers.TIERS)}); `python -m experiments.run --list` "
        "lists them."
    )


def apply_method(config: ml_collections.ConfigDict, method: methods.Method) -> None:
    """The method layer: scheme, loss, their parameters, the values varied by default (`vary`)
    and the variant."""
    config.method = method.name
    config.scheme = method.scheme
    config.loss = method.loss
    config.scheme_params.update(dict(method.scheme_params))
    config.loss_params.update(dict(method.loss_params))
    for path, values in method.vary.items():
        *parents, leaf = path.split(".")
        node = config.vary
        for key in parents:
            if key not in node:
                node[key] = ml_collections.ConfigDict()
            node = node[key]
        node[leaf] = list(values)
    config.variant = method.variant
    config.model.update(dict(method.model))
    if method.balanced_data:
        config.cutoffs = [config.data.head_count]


def _tier_name(name: str, tier: str | None) -> tuple[str, str, str]:
    task, method, suffix_tier = parse_config_name(name)
    if tier is not None and tier not in tiers.TIERS:
        raise ValueError(f"Unknown tier {tier!r}; valid tiers: {', '.join(tiers.TIERS)}.")
    if tier is not None and suffix_tier is not None and tier != suffix_tier:
        raise ValueError(
            f"Config {name!r} names tier {suffix_tier!r} but tier {tier!r} was asked for; "
            f"drop the suffix or the --tier flag."
        )
    return task, method, tier or suffix_tier or tiers.DEFAULT_TIER


def resolve(name: str, tier: str | None = None) -> tuple[ml_collections.ConfigDict, dict[str, str]]:
    """(config, origin): the config called `name` and, for each dotted field, the layer
    (base, task, tier, method) that gave it its value."""
    task, method, tier = _tier_name(name, tier)
    config = base.get_config()
    origin = dict.fromkeys(flat_values(config), "base")
    steps = (
        ("task", tasks.TASKS[task].apply),
        ("tier", tiers.TIERS[tier]),
        ("method", lambda c: apply_method(c, methods.METHODS[method])),
    )
    for layer, apply in steps:
        before = flat_values(config)
        apply(config)
        if layer == "method":
            config.name = f"{task}_{method}"
        for path, value in flat_values(config).items():
            if path not in before or before[path] != value:
                origin[path] = layer
    return config, origin


def get_config(name: str, tier: str | None = None) -> ml_collections.ConfigDict:
    """The config called `name` ("catalog_proposed", "catalog_proposed_gpu", ...).

    Args:
      name: "<task>_<method>", optionally with a "_<tier>" suffix.
      tier: "cpu" | "gpu" | "smoke"; None takes the name's suffix, else the default "cpu".
        Giving both a suffix and a different `tier` is an error.
    """
    return resolve(name, tier)[0]


def describe(config: ml_collections.ConfigDict, *, num_variants: int, num_runs: int) -> str:
    """What config `config` is: its task, method and tier, how to run it and how long its
    `num_runs` runs (as counted by `experiments.runs.expand_runs`) take."""
    seconds = tiers.EXPECTED_SECONDS_PER_RUN.get(config.tier)
    duration = (
        f"about {num_runs * seconds / 60:.0f} min ({seconds:.0f} s per run, 2 CPU cores)"
        if seconds is not None
        else "not measured for this tier"
    )
    tier_doc = " ".join((tiers.TIERS[config.tier].__doc__ or "").split())
    return "\n".join(
        [
            f"{config.name} at the {config.tier} tier: {num_runs} runs ({num_variants} variant(s) "
            f"x cut-offs {list(config.cutoffs)} x seeds {list(config.seeds)}), {duration}.",
            f"  run:    python -m experiments.run --config {config.name} --tier {config.tier}",
            f"  task:   {tasks.TASKS[config.task].doc}",
            f"  method: {methods.METHODS[config.method].doc}",
            f"  tier:   {tier_doc}",
        ]
    )
