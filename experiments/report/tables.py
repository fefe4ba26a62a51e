"""Numbers and tables of the report: runs grouped by (tier, task), statistics per cell, and the
markdown tables of metrics, paired differences, data provenance and compute.

Over 500 lines because it is one job, the report's tables, read top to bottom; the statistics
live in `experiments.stats`, the comparisons in `comparisons`, the ranks in `ranks`.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.methods import METHODS
from experiments.records import flatten
from experiments.report.loading import RecordedRun, ReportError
from experiments.stats import MeanCI, PairedTest, defined, mean_ci, paired_difference, paired_test

# (key, column title); the first four are the mAP columns of the paired-difference tables.
METRICS: tuple[tuple[str, str], ...] = (
    ("mAP", "mAP (all labels)"),
    ("head", "head mAP"),
    ("medium", "medium mAP"),
    ("tail", "tail mAP"),
    ("macro_f1", "macro-F1"),
)
MAP_METRICS = ("mAP", "head", "medium", "tail")
BASELINES = ("none", "inverse")
PROPOSED = "proposed"
DASH = "–"
CONFIDENCE = 0.95
# Differences are printed with 3 decimals; smaller ones are not called separated from 0.
MIN_DIFFERENCE = 0.0005
# The family-wise error rate of the Holm-corrected tests.
ALPHA = 0.05

# Row order of the tables, by method (a variant's name before any "(...)"): the method
# registry's order; methods not listed follow alphabetically.
VARIANT_ORDER = tuple(METHODS)
# The reference rows: the floor (a linear model) and the ceiling (the network on balanced data).
FLOOR = "linear"
CEILING = "balanced"
REFERENCES = tuple(name for name, method in METHODS.items() if method.reference)
# What makes two runs comparable in one table: the same tier, model (the linear floor aside),
# schedule, augmentation and images. A table never mixes recipes (`check_one_recipe`).
RECIPE_FIELDS = (
    "tier",
    "model.stage_sizes",
    "model.num_filters",
    "model.block",
    "model.small_input",
    "model.dtype",
    "num_epochs",
    "batch_size",
    "learning_rate",
    "warmup_epochs",
    "weight_decay",
    "optimizer",
    "momentum",
    "grad_clip",
    "augment",
    "data.image_size",
    "data.head_count",
)
TIER_ORDER = ("smoke", "cpu", "gpu")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{40,128}$")


# --------------------------------------------------------------------------------------------
# Numbers


def run_metrics(record: dict[str, Any]) -> dict[str, float | None]:
    """Test metrics of one finished run by METRICS key; None where undefined (empty bucket)."""
    test = record["test"]
    buckets = test.get("buckets") or {}
    values: dict[str, float | None] = {"mAP": test.get("mAP"), "macro_f1": test.get("macro_f1")}
    for bucket in ("head", "medium", "tail"):
        entry = buckets.get(bucket) or {}
        empty = entry.get("num_labels") == 0
        values[bucket] = None if empty else entry.get("mAP")
    return {k: (float(v) if defined(v) else None) for k, v in values.items()}


def split_variant(variant: str) -> tuple[str, dict[str, str]]:
    """'proposed(beta=0.999)' -> ('proposed', {'beta': '0.999'})."""
    match = re.fullmatch(r"\s*([^()]+?)\s*\((.*)\)\s*", variant)
    if not match:
        return variant.strip(), {}
    params = {}
    for part in match.group(2).split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            params[key.strip()] = value.strip()
    return match.group(1), params


def _param_sort_value(value: str) -> tuple:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def variant_sort_key(variant: str) -> tuple:
    """Schemes first in a fixed order, then losses, then others; swept values numerically."""
    base, params = split_variant(variant)
    rank = VARIANT_ORDER.index(base) if base in VARIANT_ORDER else len(VARIANT_ORDER)
    return (
        rank,
        base,
        tuple((k, _param_sort_value(v)) for k, v in sorted(params.items())),
        variant,
    )


def _tier_sort_key(tier: str) -> tuple:
    return (TIER_ORDER.index(tier) if tier in TIER_ORDER else len(TIER_ORDER), tier)


def is_proposed(variant: str) -> bool:
    return split_variant(variant)[0] == PROPOSED


@dataclass(frozen=True)
class Group:
    """All runs of one (tier, task): one section of the report."""

    tier: str
    task: str
    runs: tuple[RecordedRun, ...]

    @property
    def finished(self) -> list[RecordedRun]:
        return [r for r in self.runs if r.finished]

    @property
    def failed(self) -> list[RecordedRun]:
        return [r for r in self.runs if not r.finished]

    @property
    def variants(self) -> list[str]:
        """The compared variants (the reference rows are `references`)."""
        found = {r.variant for r in self.runs if r.method not in REFERENCES}
        return sorted(found, key=variant_sort_key)

    @property
    def references(self) -> list[str]:
        """The reference rows present, floor first: a subset of ["linear", "balanced"]."""
        return [v for v in REFERENCES if any(r.variant == v for r in self.runs)]

    @property
    def cutoffs(self) -> list[int]:
        """The long-tailed cut-offs (the ceiling's balanced data is not one)."""
        return sorted({r.cutoff for r in self.runs if r.method != CEILING})

    @property
    def seeds(self) -> list[int]:
        """Seeds with at least one finished run (failed runs are listed separately)."""
        return sorted({r.seed for r in self.finished})

    @property
    def title(self) -> str:
        return f"{self.task} ({self.tier} tier)"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{self.tier}_{self.task}")

    def values(self, variant: str, cutoff: int, metric: str) -> dict[int, float | None]:
        """Seed -> metric of the finished runs of one cell (the ceiling: `ceiling_values`)."""
        if variant == CEILING:
            return self.ceiling_values(cutoff, metric)
        return {
            r.seed: run_metrics(r.record)[metric]
            for r in self.finished
            if r.variant == variant and r.cutoff == cutoff
        }

    def long_tailed_peer(self, seed: int, cutoff: int) -> RecordedRun | None:
        """A finished compared run at (seed, cut-off): its record says which labels were rare
        in that seed's class order (None when there is none)."""
        for run in self.finished:
            if run.seed == seed and run.cutoff == cutoff and run.method not in REFERENCES:
                return run
        return None

    def ceiling_values(self, cutoff: int, metric: str) -> dict[int, float | None]:
        """Seed -> the balanced run's metric as it compares with cut-off `cutoff`.

        mAP and macro-F1 are the balanced run's own. A bucket's mAP is the balanced run's mean
        test AP over the labels that are in that bucket at `cutoff` with the same seed (so the
        same class order): how well the network does on those very classes when they are not
        rare. Undefined where no finished run at `cutoff` and that seed says which labels those are.
        """
        values = {}
        for ceiling in (r for r in self.finished if r.variant == CEILING):
            if metric not in MAP_METRICS[1:]:
                values[ceiling.seed] = run_metrics(ceiling.record)[metric]
                continue
            peer = self.long_tailed_peer(ceiling.seed, cutoff)
            if peer is None:
                continue
            labels = peer.record["test"]["buckets"][metric]["labels"]
            ap = [ceiling.record["test"]["per_label"]["ap"][j] for j in labels]
            ap = [float(a) for a in ap if defined(a)]
            values[ceiling.seed] = math.fsum(ap) / len(ap) if ap else None
        return values

    def cell(self, variant: str, cutoff: int, metric: str) -> MeanCI:
        return mean_ci(self.values(variant, cutoff, metric).values(), CONFIDENCE)

    def paired(self, variant: str, baseline: str, cutoff: int, metric: str) -> MeanCI:
        return paired_difference(
            self.values(variant, cutoff, metric),
            self.values(baseline, cutoff, metric),
            CONFIDENCE,
        )

    def test(self, variant: str, baseline: str, cutoff: int, metric: str) -> PairedTest:
        """`paired` with its paired t and Wilcoxon p-values (pairs: same cut-off and seed)."""
        return paired_test(
            self.values(variant, cutoff, metric),
            self.values(baseline, cutoff, metric),
            CONFIDENCE,
        )


def recipe(run: RecordedRun) -> dict[str, Any]:
    """The fields of `RECIPE_FIELDS` in the run's config (absent ones as None)."""
    flat = flatten(run.record.get("config") or {})
    return {
        field: flat.get(field, run.tier if field == "tier" else None) for field in RECIPE_FIELDS
    }


def check_one_recipe(group: Group) -> None:
    """Raises ReportError when the runs of one table were trained with different recipes."""
    first: dict[str, Any] | None = None
    for run in group.runs:
        current = recipe(run)
        if first is None:
            first, first_path = current, run.path
            continue
        differ = [f for f in RECIPE_FIELDS if current[f] != first[f]]
        if differ:
            shown = ", ".join(f"{f} {first[f]!r} vs {current[f]!r}" for f in differ[:4])
            raise ReportError(
                f"The {group.title} records mix recipes, so one table would compare runs "
                f"trained differently: {first_path} and {run.path} differ in {shown}. Keep "
                "one recipe per records folder (move or delete the other runs, or report them "
                "with --records pointing at their own folder)."
            )


def group_runs(runs: Iterable[RecordedRun]) -> list[Group]:
    by_key: dict[tuple[str, str], list[RecordedRun]] = defaultdict(list)
    for run in runs:
        by_key[(run.tier, run.task)].append(run)
    keys = sorted(by_key, key=lambda k: (_tier_sort_key(k[0]), k[1]))
    return [
        Group(tier, task, tuple(sorted(by_key[(tier, task)], key=lambda r: r.path)))
        for tier, task in keys
    ]


# --------------------------------------------------------------------------------------------
# Formatting


def number(value: float, digits: int = 3, signed: bool = False) -> str:
    if round(value, digits) == 0:
        value = 0.0  # Never print "-0.000": it looks like a sign claim.
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def separated(ci: MeanCI) -> bool:
    """The 95% interval excludes 0 and the mean difference shows at the printed precision.

    Two nearly identical schemes give per-seed differences like 1e-9 with almost no spread, whose
    interval excludes 0; calling that "higher" would claim a difference nobody can see.
    """
    return ci.excludes_zero and abs(ci.mean) >= MIN_DIFFERENCE


def format_p(p: float | None) -> str:
    """'0.012', '<0.001', or '–' where there is no p-value."""
    if p is None:
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_words(p: float | None, name: str = "p") -> str:
    """'p=0.012' or 'p<0.001' for running text."""
    shown = format_p(p)
    return f"{name}{shown}" if shown.startswith("<") else f"{name}={shown}"


def format_ci(
    ci: MeanCI,
    *,
    signed: bool = False,
    mark: bool = False,
    bold: bool | None = None,
    p: float | None = None,
) -> str:
    """'0.512 ± 0.034 (n=3)'; '–' when no value; bold when `mark` and the CI excludes 0, or
    as `bold` says where given; with `p`, the p-value beside n: '(n=3, p=0.012)'."""
    if ci.mean is None:
        return DASH
    if ci.half_width is None:
        body = number(ci.mean, signed=signed)
    else:
        body = f"{number(ci.mean, signed=signed)} ± {number(ci.half_width)}"
    if (mark and separated(ci)) if bold is None else bold:
        body = f"**{body}**"
    return f"{body} (n={ci.n}" + (f", {p_words(p)})" if p is not None else ")")


def interval_words(ci: MeanCI) -> str:
    return (
        f"{number(ci.mean, signed=True)} (95% CI {number(ci.low, signed=True)} to "
        f"{number(ci.high, signed=True)}, n={ci.n})"
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def short(value: Any) -> str:
    """A provenance value for a table: checksums abbreviated, long lists counted."""
    if isinstance(value, str):
        return f"{value[:12]}…" if _SHA_RE.match(value) else value
    if isinstance(value, list):
        if len(value) <= 6 and all(not isinstance(v, dict | list) for v in value):
            return "[" + ", ".join(short(v) for v in value) + "]"
        return f"[{len(value)} items]"
    return json.dumps(value, sort_keys=True)


def leaves(tree: Any) -> dict[str, Any]:
    """{dotted path: value} of a nested dict; empty dicts carry no field and are left out."""
    if not isinstance(tree, dict):
        return {}
    return {k: v for k, v in flatten(tree).items() if not isinstance(v, dict)}


def _machine_specific(leaf: str, value: Any) -> bool:
    """Paths differ between machines and would make the report depend on where it ran."""
    if leaf in ("path", "hostname") or leaf.endswith(("_dir", "_path")):
        return True
    return isinstance(value, str) and re.match(r"^(/|~|[A-Za-z]:[\\/]|file:)", value) is not None


def provenance_fields(
    provenance: dict[str, Any], split_provenance: dict[str, dict] | None = None
) -> dict[str, str]:
    """Dotted provenance fields for the report, from a (v2) record's data.provenance and
    data.split_provenance: each split's differing fields merged with the common ones, machine
    paths and lists longer than 6 left out, checksums abbreviated."""
    fields: dict[str, set[str]] = defaultdict(set)
    sources = [provenance or {}, *(split_provenance or {}).values()]
    for key, value in (item for source in sources for item in leaves(source).items()):
        if _machine_specific(key.split(".")[-1], value):
            continue
        if isinstance(value, list) and len(value) > 6:
            continue
        fields[key].add(short(value))
    return {k: distinct(v) for k, v in fields.items()}


def distinct(values: Iterable[str], limit: int = 6) -> str:
    unique = sorted(set(values), key=_param_sort_value)  # 6 before 25
    if len(unique) > limit:
        return f"{len(unique)} distinct values"
    return " / ".join(unique)


def duration(seconds: float) -> str:
    minutes = seconds / 60.0
    if minutes < 120:
        return f"{seconds:.0f} s ({minutes:.1f} min)"
    return f"{seconds:.0f} s ({minutes / 60.0:.2f} h)"


def wall_time(run: RecordedRun) -> float:
    value = run.record["wall_time_s"]
    return float(value) if defined(value) else 0.0


def cell_name(variant: str, cutoff: int) -> str:
    return f"{variant} at cut-off {cutoff}"


# --------------------------------------------------------------------------------------------
# Markdown tables


def row_name(variant: str) -> str:
    """A table row's name: the reference rows say what they are."""
    role = {FLOOR: " (floor: linear model)", CEILING: " (ceiling: balanced data)"}
    return f"`{variant}`{role.get(variant, '')}"


def table_rows(group: Group) -> list[str]:
    """The rows of a results table: the floor, the compared variants, the ceiling."""
    floor = [v for v in group.references if v == FLOOR]
    ceiling = [v for v in group.references if v == CEILING]
    return floor + group.variants + ceiling


def metric_tables(group: Group) -> list[str]:
    lines = []
    if group.references:
        lines += [
            "The `linear` row is the floor (a linear model on the pixels, same loss, data and "
            "schedule) and the `balanced` row the ceiling (the same network with no weighting, "
            "trained with every label at the head count; its bucket mAPs are its AP on the "
            "labels that are in that bucket at the column's cut-off, same seed).",
            "",
        ]
    header = ["variant"] + [f"cut-off {c}" for c in group.cutoffs]
    for metric, title in METRICS:
        lines += [f"#### {title}", ""]
        rows = [
            [row_name(v)] + [format_ci(group.cell(v, c, metric)) for c in group.cutoffs]
            for v in table_rows(group)
        ]
        lines += [*markdown_table(header, rows), ""]
    return lines


def _image_size(group: Group) -> str:
    found = set()
    for run in group.runs:
        sources = (
            leaves((run.record["data"] or {}).get("provenance")),
            *map(leaves, ((run.record["data"] or {}).get("split_provenance") or {}).values()),
            leaves((run.record.get("config") or {}).get("data")),
        )
        for flat in sources:
            for key, value in flat.items():
                leaf = key.rsplit(".", 1)[-1].lower()
                if leaf in ("image_size", "image_shape", "size", "resolution"):
                    found.add(short(value))
        if found:
            break
    return distinct(found) if found else "not recorded in the run records"


def data_section(group: Group) -> list[str]:
    provenance: dict[str, set[str]] = defaultdict(set)
    sizes: dict[str, set[str]] = defaultdict(set)
    for run in group.runs:
        data = run.record["data"]
        if data is None:  # A run that failed before its data was built.
            continue
        for key, value in provenance_fields(
            data.get("provenance"), data.get("split_provenance")
        ).items():
            provenance[key].add(value)
        sizes["labels"].add(str(len(data.get("label_names") or [])))
        for split in ("train", "val", "test"):
            sizes[split].add(str(data.get(f"num_{split}")))
    wall = math.fsum(wall_time(r) for r in group.runs)
    several = any(len(sizes[k]) > 1 for k in ("train", "val", "test"))
    lines = [
        f"- Task `{group.task}`, tier `{group.tier}`; image size: {_image_size(group)}.",
        f"- Labels: {distinct(sizes['labels'])}; examples train / val / test: "
        f"{distinct(sizes['train'])} / {distinct(sizes['val'])} / {distinct(sizes['test'])}"
        + (" (several values: they differ between runs, e.g. by cut-off)." if several else "."),
        f"- Seeds with finished runs: {', '.join(map(str, group.seeds)) or 'none'} "
        f"({len(group.seeds)}); cut-offs: "
        f"{', '.join(map(str, group.cutoffs))}; variants: {len(group.variants)}.",
        f"- Runs: {len(group.runs)} ({len(group.finished)} finished, {len(group.failed)} failed); "
        f"compute {duration(wall)} (sum of wall_time_s).",
    ]
    if provenance:
        lines += [
            "- Data provenance (checksums abbreviated; file paths and long lists are left out "
            "here and kept in the records):",
            "",
        ]
        rows = [[f"`{k}`", distinct(v).replace("|", "\\|")] for k, v in sorted(provenance.items())]
        lines += ["  " + line for line in markdown_table(["field", "value"], rows)]
    else:
        lines.append("- Data provenance: not recorded.")
    return [*lines, ""]


def cpu_type(record: dict[str, Any]) -> str:
    """A record's CPU type as the report names it: model and the widest vector extension, or
    "not recorded" for records made before `environment.cpu` existed."""
    cpu = (record.get("environment") or {}).get("cpu")
    if not isinstance(cpu, dict):
        return "not recorded"
    isa = [f for f in cpu.get("isa") or [] if f.startswith(("avx", "sve", "asimd", "sse"))]
    widest = next((f for f in ("avx512f", "avx2", "avx", "sve2", "sve", "asimd") if f in isa), "")
    threads = cpu.get("cpu_threads")
    plural = "" if threads == 1 else "s"
    return f"{cpu.get('cpu_model', '?')} ({widest or 'no AVX'}, {threads} thread{plural})"


def replicate_cpu_types(runs: Sequence[RecordedRun]) -> str:
    """Whether each replicate (seed) of `runs` ran on one CPU type, as a sentence. Paired
    differences compare runs of one replicate, so when each replicate kept to one CPU type they
    hold no drift between machines, only between replicates."""
    by_seed: dict[int, set[str]] = defaultdict(set)
    for run in runs:
        by_seed[run.seed].add(cpu_type(run.record))
    crossing = sorted(seed for seed, kinds in by_seed.items() if len(kinds) > 1)
    if crossing:
        return (
            f"Replicates (seeds) {', '.join(map(str, crossing))} ran on more than one CPU type, so "
            "their paired differences include that drift."
        )
    seeds_of: dict[str, list[int]] = defaultdict(list)
    for seed, kinds in sorted(by_seed.items()):
        seeds_of[next(iter(kinds))].append(seed)
    where = "; ".join(f"seeds {seed_ranges(s)}: {kind}" for kind, s in sorted(seeds_of.items()))
    return (
        "Each replicate's runs share one CPU type as recorded, so no paired difference crosses "
        f"them ({where})."
    )


def seed_ranges(seeds: Sequence[int]) -> str:
    """Sorted seeds with runs of consecutive ones shortened: [0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    parts: list[list[int]] = []
    for seed in sorted(seeds):
        if parts and seed == parts[-1][-1] + 1:
            parts[-1].append(seed)
        else:
            parts.append([seed])
    return ", ".join(str(p[0]) if len(p) == 1 else f"{p[0]}-{p[-1]}" for p in parts)


def compute_section(runs: Sequence[RecordedRun], groups: Sequence[Group]) -> list[str]:
    wall = math.fsum(wall_time(r) for r in runs)
    failed = [r for r in runs if not r.finished]
    lines = [
        f"- Runs: {len(runs)} ({len(runs) - len(failed)} finished, {len(failed)} failed).",
        f"- Total compute: {duration(wall)}, the sum of wall_time_s over all runs, failed ones "
        "included.",
    ]
    for group in groups:
        group_wall = math.fsum(wall_time(r) for r in group.runs)
        lines.append(f"  - {group.title}: {duration(group_wall)} over {len(group.runs)} runs.")
    devices: dict[str, int] = defaultdict(int)
    packages: dict[str, set[str]] = defaultdict(set)
    commits: dict[str, int] = defaultdict(int)
    pythons: set[str] = set()
    dirty = 0
    for run in runs:
        env = run.record["environment"]
        devices[
            f"{env.get('num_devices', '?')} × {env.get('platform', '?')} "
            f"({distinct(env.get('devices') or [], limit=2)})"
        ] += 1
        for name, version in sorted((env.get("packages") or {}).items()):
            packages[name].add(str(version))
        commit = env.get("git_commit")
        commits[commit[:12] if isinstance(commit, str) else "unknown"] += 1
        dirty += bool(env.get("git_dirty"))
        if env.get("python"):
            pythons.add(str(env["python"]))
    lines.append(
        "- Devices: " + "; ".join(f"{d}: {n} runs" for d, n in sorted(devices.items())) + "."
    )
    cpu_types: dict[str, int] = defaultdict(int)
    for run in runs:
        cpu_types[cpu_type(run.record)] += 1
    lines.append(
        "- CPU types: " + "; ".join(f"{c}: {n} runs" for c, n in sorted(cpu_types.items())) + "."
    )
    for group in groups:
        kinds = sorted({cpu_type(r.record) for r in group.runs})
        if len(kinds) > 1:
            lines.append(
                f"  - {group.title} mixes {len(kinds)} CPU types ({'; '.join(kinds)}): its "
                "numbers agree across them within the measured drift, not bit for bit "
                f"(results/NOTES.md). {replicate_cpu_types(group.runs)}"
            )
    if pythons:
        lines.append(f"- Python: {distinct(pythons)}.")
    if packages:
        lines.append(
            "- Packages: "
            + ", ".join(f"{n} {distinct(v)}" for n, v in sorted(packages.items()))
            + "."
        )
    lines.append(
        "- Git commits: "
        + ", ".join(f"`{c}` ({n} runs)" for c, n in sorted(commits.items()))
        + (f"; {dirty} runs from a checkout with uncommitted changes." if dirty else ".")
    )
    lines.append("")
    lines += ["### Failed runs", ""]
    if not failed:
        lines += ["None.", ""]
    else:
        rows = [
            [
                f"`{r.path}`",
                f"`{r.variant}`",
                str(r.cutoff),
                str(r.seed),
                str(r.record.get("failure") or "no reason recorded").replace("|", "\\|"),
            ]
            for r in sorted(failed, key=lambda r: r.path)
        ]
        lines += [*markdown_table(["record", "variant", "cut-off", "seed", "failure"], rows), ""]
    return lines
