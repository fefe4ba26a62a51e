"""`python -m experiments.report`: run records -> RESULTS.md and its PNG plots.

    python -m experiments.report [--records results/runs] [--out RESULTS.md]
                                 [--plots-dir results/plots] [--notes results/NOTES.md]

The report reads the run records only (see `experiments.records` for their schema) and is a pure
function of them: the same records give byte-identical RESULTS.md and plots, so RESULTS.md is
never edited by hand. Analysis prose belongs in a notes file (`--notes`), included verbatim.

What it writes, for every (tier, task) found in the records:
  * tables of variant x cut-off for test mAP (all labels, head, medium, tail buckets) and
    macro-F1: mean +/- half-width of the 95% Student-t interval over seeds, with n;
  * the per-seed paired difference of every `proposed(...)` variant against `none` and against
    `inverse` (same task, tier, cut-off and seed), marked where its 95% interval excludes 0;
  * plots: per-label test AP against training positives, and mAP / tail mAP against cut-off;
  * the data behind it (provenance, checksums, sizes), seeds, runs, failed runs and compute.
Failed runs are listed and left out of every mean.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import records as records_lib
from experiments.stats import MeanCI, defined, mean_ci, paired_difference

__all__ = [
    "BASELINES",
    "METRICS",
    "ReportError",
    "Run",
    "build_report",
    "main",
    "read_runs",
    "write_report",
]

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
# The analysis prose of the committed sweep, kept in the repository so RESULTS.md stays generated.
DEFAULT_NOTES = "results/NOTES.md"
PROPOSED = "proposed"
DASH = "–"
CONFIDENCE = 0.95
# Differences are printed with 3 decimals; smaller ones are not called separated from 0.
MIN_DIFFERENCE = 0.0005

# Row order of the tables: schemes, then losses, then anything else alphabetically.
_VARIANT_ORDER = (
    "none",
    "inverse",
    "inverse_sqrt",
    "class_balanced",
    "proposed",
    "focal",
    "asymmetric",
    "distribution_balanced",
    "logit_adjusted",
)
_TIER_ORDER = ("smoke", "cpu", "gpu")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{40,128}$")
_HOW_TO_PRODUCE = (
    "Produce records with `python -m experiments.run --config catalog_proposed` (list the "
    "configs with `python -m experiments.run --list`), or point --records at the folder that "
    "holds them."
)
# Fixed figure geometry: with the Agg renderer and no PNG metadata this makes plots byte-stable.
_DPI = 100
_PNG_METADATA = {"Software": None}
_PLOT_SUFFIXES = ("_map_vs_cutoff.png", "_ap_vs_frequency.png")


class ReportError(Exception):
    """Records that cannot be reported on; the message names the file and the fix."""


@dataclass(frozen=True)
class Run:
    """One run record and where it was found (path relative to the records folder, POSIX)."""

    path: str
    record: dict[str, Any]

    @property
    def tier(self) -> str:
        return self.record["tier"]

    @property
    def task(self) -> str:
        return self.record["task"]

    @property
    def variant(self) -> str:
        return self.record["variant"]

    @property
    def cutoff(self) -> int:
        return self.record["cutoff"]

    @property
    def seed(self) -> int:
        return self.record["seed"]

    @property
    def finished(self) -> bool:
        return self.record["status"] == "finished"


# --------------------------------------------------------------------------------------------
# Reading and validating records


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _record_problems(record: Any) -> list[str]:
    """What is wrong with one record, in words; empty when the report can use it."""
    if not isinstance(record, dict):
        return [f"top level is {type(record).__name__}, not an object"]
    missing = [k for k in records_lib.RECORD_KEYS if k not in record]
    if missing:
        return [f"missing key(s) {', '.join(missing)}"]
    problems = []
    for key in ("task", "variant", "tier", "config_name"):
        if not isinstance(record[key], str) or not record[key]:
            problems.append(f"{key} must be a non-empty string, got {record[key]!r}")
    for key in ("seed", "cutoff"):
        if not _is_int(record[key]):
            problems.append(f"{key} must be an integer, got {record[key]!r}")
    if record["status"] not in ("finished", "failed"):
        problems.append(f"status must be 'finished' or 'failed', got {record['status']!r}")
    if record["wall_time_s"] is not None and not defined(record["wall_time_s"]):
        problems.append(f"wall_time_s must be a number, got {record['wall_time_s']!r}")
    if not isinstance(record["environment"], dict):
        problems.append("environment must be an object")
    # A run that failed before its data was built records data = null.
    if not isinstance(record["data"], dict) and not (
        record["status"] == "failed" and record["data"] is None
    ):
        problems.append("data must be an object (null only for a failed run)")
    if problems or record["status"] != "finished":
        return problems
    test = record["test"]
    if not isinstance(test, dict):
        return [f"a finished run needs a test metrics object, got {test!r}"]
    for key in ("mAP", "macro_f1", "buckets", "per_label"):
        if key not in test:
            problems.append(f"test.{key} is missing")
    if problems:
        return problems
    if not isinstance(test["buckets"], dict):
        problems.append("test.buckets must be an object")
    ap = test["per_label"].get("ap") if isinstance(test["per_label"], dict) else None
    positives = record["data"].get("train_positives")
    if not isinstance(ap, list):
        problems.append("test.per_label.ap must be a list")
    elif not isinstance(positives, list) or len(positives) != len(ap):
        problems.append(
            "data.train_positives must be a list with one count per label of test.per_label.ap"
        )
    return problems


def _schema_version_of(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads(path.read_text(encoding="utf-8")).get("schema_version")
    return None


def read_runs(root: str | os.PathLike) -> list[Run]:
    """Every record below `root`, validated; raises ReportError naming each bad file."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(
            f"No run records: the folder {str(root)!r} does not exist. {_HOW_TO_PRODUCE}"
        )
    paths = list(records_lib.iter_record_paths(root))
    if not paths:
        raise ReportError(
            f"No run records ({records_lib.RECORD_FILENAME}) found below {str(root)!r}. "
            f"{_HOW_TO_PRODUCE}"
        )
    runs, errors, versions = [], [], defaultdict(list)
    for path in paths:
        rel = path.relative_to(root).as_posix()
        try:
            record = records_lib.load_record(path)
        except ValueError as e:
            versions[_schema_version_of(path)].append(rel)
            errors.append(str(e))
            continue
        versions[record.get("schema_version")].append(rel)
        problems = _record_problems(record)
        if problems:
            errors.append(
                f"Run record {path} is malformed: {'; '.join(problems)}. Rerun that run with "
                "--force (or delete the file) to rewrite it."
            )
            continue
        runs.append(Run(rel, record))
    if len(versions) > 1:
        counts = ", ".join(
            f"version {v!r}: {len(p)} (e.g. {p[0]})" for v, p in sorted(versions.items(), key=str)
        )
        errors.insert(
            0,
            f"The records below {str(root)!r} mix schema versions ({counts}); this code reads "
            f"version {records_lib.SCHEMA_VERSION}. Rerun the older runs with --force or move "
            "them to another folder.",
        )
    if errors:
        raise ReportError("\n".join(errors))
    _check_duplicates(runs)
    return runs


def _check_duplicates(runs: Iterable[Run]) -> None:
    """Two records for one (tier, task, variant, cut-off, seed) would be counted twice."""
    seen: dict[tuple, str] = {}
    for run in runs:
        key = (run.tier, run.task, run.variant, run.cutoff, run.seed)
        if key in seen:
            raise ReportError(
                f"Two run records describe the same run (tier {run.tier}, task {run.task}, "
                f"variant {run.variant}, cut-off {run.cutoff}, seed {run.seed}): {seen[key]} and "
                f"{run.path}. Delete one of them (or give the configs distinct variant names)."
            )
        seen[key] = run.path


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
    rank = _VARIANT_ORDER.index(base) if base in _VARIANT_ORDER else len(_VARIANT_ORDER)
    return (
        rank,
        base,
        tuple((k, _param_sort_value(v)) for k, v in sorted(params.items())),
        variant,
    )


def _tier_sort_key(tier: str) -> tuple:
    return (_TIER_ORDER.index(tier) if tier in _TIER_ORDER else len(_TIER_ORDER), tier)


def is_proposed(variant: str) -> bool:
    return split_variant(variant)[0] == PROPOSED


@dataclass(frozen=True)
class Group:
    """All runs of one (tier, task): one section of the report."""

    tier: str
    task: str
    runs: tuple[Run, ...]

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if not r.finished]

    @property
    def variants(self) -> list[str]:
        return sorted({r.variant for r in self.runs}, key=variant_sort_key)

    @property
    def cutoffs(self) -> list[int]:
        return sorted({r.cutoff for r in self.runs})

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
        """Seed -> metric of the finished runs of one cell."""
        return {
            r.seed: run_metrics(r.record)[metric]
            for r in self.finished
            if r.variant == variant and r.cutoff == cutoff
        }

    def cell(self, variant: str, cutoff: int, metric: str) -> MeanCI:
        return mean_ci(self.values(variant, cutoff, metric).values(), CONFIDENCE)

    def paired(self, variant: str, baseline: str, cutoff: int, metric: str) -> MeanCI:
        return paired_difference(
            self.values(variant, cutoff, metric),
            self.values(baseline, cutoff, metric),
            CONFIDENCE,
        )


def group_runs(runs: Iterable[Run]) -> list[Group]:
    by_key: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_key[(run.tier, run.task)].append(run)
    keys = sorted(by_key, key=lambda k: (_tier_sort_key(k[0]), k[1]))
    return [
        Group(tier, task, tuple(sorted(by_key[(tier, task)], key=lambda r: r.path)))
        for tier, task in keys
    ]


# --------------------------------------------------------------------------------------------
# Formatting


def _num(value: float, digits: int = 3, signed: bool = False) -> str:
    if round(value, digits) == 0:
        value = 0.0  # Never print "-0.000": it looks like a sign claim.
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def separated(ci: MeanCI) -> bool:
    """The 95% interval excludes 0 and the mean difference shows at the printed precision.

    Two nearly identical schemes give per-seed differences like 1e-9 with almost no spread, whose
    interval excludes 0; calling that "higher" would claim a difference nobody can see.
    """
    return ci.excludes_zero and abs(ci.mean) >= MIN_DIFFERENCE


def format_ci(ci: MeanCI, *, signed: bool = False, mark: bool = False) -> str:
    """'0.512 ± 0.034 (n=3)'; '–' when no value; bold when `mark` and the CI excludes 0."""
    if ci.mean is None:
        return DASH
    if ci.half_width is None:
        body = _num(ci.mean, signed=signed)
    else:
        body = f"{_num(ci.mean, signed=signed)} ± {_num(ci.half_width)}"
    if mark and separated(ci):
        body = f"**{body}**"
    return f"{body} (n={ci.n})"


def _interval_words(ci: MeanCI) -> str:
    return (
        f"{_num(ci.mean, signed=True)} (95% CI {_num(ci.low, signed=True)} to "
        f"{_num(ci.high, signed=True)}, n={ci.n})"
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _short(value: Any) -> str:
    """A provenance value for a table: checksums abbreviated, long lists counted."""
    if isinstance(value, str):
        return f"{value[:12]}…" if _SHA_RE.match(value) else value
    if isinstance(value, list):
        if len(value) <= 6 and all(not isinstance(v, dict | list) for v in value):
            return "[" + ", ".join(_short(v) for v in value) + "]"
        return f"[{len(value)} items]"
    return json.dumps(value, sort_keys=True)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        flat: dict[str, Any] = {}
        for key in sorted(obj):
            flat.update(_flatten(obj[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: obj}


_SPLITS = ("train", "val", "test")


def _machine_specific(leaf: str, value: Any) -> bool:
    """Paths differ between machines and would make the report depend on where it ran."""
    if leaf in ("path", "hostname") or leaf.endswith(("_dir", "_path")):
        return True
    return isinstance(value, str) and re.match(r"^(/|~|[A-Za-z]:[\\/]|file:)", value) is not None


def provenance_fields(provenance: dict[str, Any]) -> dict[str, str]:
    """Dotted provenance fields for the report: per-split copies merged (a leading train/val/test
    key is dropped), machine paths and lists longer than 6 left out, checksums abbreviated."""
    fields: dict[str, set[str]] = defaultdict(set)
    for key, value in _flatten(provenance).items():
        parts = key.split(".")
        if len(parts) > 1 and parts[0] in _SPLITS:
            parts = parts[1:]
        if _machine_specific(parts[-1], value) or (isinstance(value, list) and len(value) > 6):
            continue
        fields[".".join(parts)].add(_short(value))
    return {k: _distinct(v) for k, v in fields.items()}


def _distinct(values: Iterable[str], limit: int = 6) -> str:
    unique = sorted(set(values), key=_param_sort_value)  # 6 before 25
    if len(unique) > limit:
        return f"{len(unique)} distinct values"
    return " / ".join(unique)


def _duration(seconds: float) -> str:
    minutes = seconds / 60.0
    if minutes < 120:
        return f"{seconds:.0f} s ({minutes:.1f} min)"
    return f"{seconds:.0f} s ({minutes / 60.0:.2f} h)"


def _wall(run: Run) -> float:
    value = run.record["wall_time_s"]
    return float(value) if defined(value) else 0.0


def _cell_name(variant: str, cutoff: int) -> str:
    return f"{variant} at cut-off {cutoff}"


# --------------------------------------------------------------------------------------------
# Headline: templated sentences from the numbers


@dataclass(frozen=True)
class Comparison:
    """Paired differences of every proposed variant x cut-off against one baseline, one metric."""

    testable: list[tuple[str, int, MeanCI]]  # comparisons with >= 2 paired seeds
    higher: list[tuple[str, int, MeanCI]]  # interval entirely above 0
    lower: list[tuple[str, int, MeanCI]]  # interval entirely below 0

    @property
    def unseparated(self) -> int:
        return len(self.testable) - len(self.higher) - len(self.lower)


def compare(group: Group, baseline: str, metric: str) -> Comparison:
    proposed = [v for v in group.variants if is_proposed(v)]
    results = [
        (v, c, group.paired(v, baseline, c, metric)) for v in proposed for c in group.cutoffs
    ]
    testable = [(v, c, ci) for v, c, ci in results if ci.half_width is not None]
    return Comparison(
        testable,
        [(v, c, ci) for v, c, ci in testable if separated(ci) and ci.mean > 0],
        [(v, c, ci) for v, c, ci in testable if separated(ci) and ci.mean < 0],
    )


def _comparison_sentence(group: Group, baseline: str, metric: str, title: str) -> str:
    result = compare(group, baseline, metric)
    subject = f"`proposed` vs `{baseline}`, {title}"
    if not result.testable:
        return f"{subject}: no comparison has 2 or more paired seeds with a defined value."
    sentence = (
        f"{subject}: higher in {len(result.higher)} of {len(result.testable)} (variant, cut-off) "
        f"comparisons, lower in {len(result.lower)}, not separated from 0 in {result.unseparated}"
    )
    if result.higher:
        v, c, ci = max(result.higher, key=lambda t: (t[2].mean, t[1]))
        sentence += f"; largest gain {_interval_words(ci)} for {_cell_name(v, c)}"
    if result.lower:
        v, c, ci = min(result.lower, key=lambda t: (t[2].mean, t[1]))
        sentence += f"; largest loss {_interval_words(ci)} for {_cell_name(v, c)}"
    return sentence + "."


def _multiplicity_sentence(group: Group) -> str | None:
    """How many of the intervals above would exclude 0 by chance alone."""
    total = sum(
        len(compare(group, b, m).testable)
        for b in BASELINES
        if b in group.variants
        for m in MAP_METRICS
    )
    if total == 0:
        return None
    return (
        f"These are {total} separate 95% intervals, not corrected for multiple comparisons: "
        f"with no real difference anywhere, about {total / 20:.1f} of them would exclude 0 by "
        "chance, so an isolated excluded interval is weak evidence."
    )


def short_summary(group: Group) -> str:
    """One line for stdout: higher/lower/not separated counts per baseline and bucket."""
    parts = [f"{group.title}: {len(group.finished)} finished, {len(group.failed)} failed"]
    if any(is_proposed(v) for v in group.variants):
        for baseline in BASELINES:
            if baseline not in group.variants:
                continue
            counts = []
            for metric in MAP_METRICS:
                r = compare(group, baseline, metric)
                counts.append(f"{metric} {len(r.higher)}/{len(r.lower)}/{r.unseparated}")
            parts.append(
                f"proposed vs {baseline} (higher/lower/not separated): {', '.join(counts)}"
            )
    return "; ".join(parts)


def _best_sentence(group: Group, variants: Sequence[str], metric: str, lead: str) -> str | None:
    parts = []
    for cutoff in group.cutoffs:
        cells = [(v, group.cell(v, cutoff, metric)) for v in variants]
        cells = [(v, ci) for v, ci in cells if ci.mean is not None]
        if cells:
            # Ties go to the earlier row, so the sentence is stable.
            v, ci = max(reversed(cells), key=lambda t: t[1].mean)
            parts.append(f"cut-off {cutoff}: {v} {format_ci(ci)}")
    return f"{lead}: " + "; ".join(parts) + "." if parts else None


def headline(group: Group) -> list[str]:
    """Plain-language, templated findings for one (tier, task)."""
    lines = [
        f"{len(group.variants)} variants, cut-offs {', '.join(map(str, group.cutoffs))}, "
        f"{len(group.seeds)} seeds with finished runs; {len(group.finished)} finished runs"
        + (f", {len(group.failed)} failed (left out)" if group.failed else "")
        + "."
    ]
    proposed = [v for v in group.variants if is_proposed(v)]
    if not proposed:
        lines.append("No `proposed` runs: nothing to compare against the baselines.")
    for baseline in BASELINES:
        if not proposed:
            break
        if baseline not in group.variants:
            lines.append(f"No `{baseline}` runs: `proposed` is not compared with `{baseline}`.")
            continue
        for metric, title in METRICS:
            if metric in MAP_METRICS:
                lines.append(_comparison_sentence(group, baseline, metric, title))
    if proposed and (caveat := _multiplicity_sentence(group)):
        lines.append(caveat)
    if len(proposed) > 1:
        best = _best_sentence(
            group,
            proposed,
            "mAP",
            "Best `proposed` setting by mean test mAP (betas not tested against each other)",
        )
        if best:
            lines.append(best)
    for metric, lead in (("mAP", "Highest mean test mAP"), ("tail", "Highest mean tail mAP")):
        best = _best_sentence(group, group.variants, metric, f"{lead} over all variants")
        if best:
            lines.append(best)
    return lines


# --------------------------------------------------------------------------------------------
# Plots


def _variant_styles(variants: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """A (colour, marker) per variant, stable for a given variant list."""
    from matplotlib import colormaps

    # tab20 lists dark/light pairs; take the ten dark colours first so that neighbouring rows
    # (none, inverse, ...) do not get two shades of one hue.
    tab20 = colormaps["tab20"].colors
    palette = list(tab20[0::2]) + list(tab20[1::2])
    markers = "os^Dv<>ph*"
    return {
        v: (palette[i % len(palette)], markers[(i // len(palette)) % len(markers)])
        for i, v in enumerate(variants)
    }


def _render_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return buffer.getvalue()


def _mean_ap_per_label(group: Group, variant: str, cutoff: int) -> list[tuple[float, float]]:
    """(training positives, test AP) per label, each the mean over the finished seeds."""
    sums: dict[int, list[float]] = defaultdict(list)
    positives: dict[int, list[float]] = defaultdict(list)
    for run in group.finished:
        if run.variant != variant or run.cutoff != cutoff:
            continue
        ap = run.record["test"]["per_label"]["ap"]
        for label, (value, count) in enumerate(
            zip(ap, run.record["data"]["train_positives"], strict=True)
        ):
            if defined(value) and defined(count):
                sums[label].append(float(value))
                positives[label].append(float(count))
    return [
        (math.fsum(positives[k]) / len(positives[k]), math.fsum(sums[k]) / len(sums[k]))
        for k in sorted(sums)
    ]


def plot_ap_vs_frequency(group: Group) -> bytes:
    """One panel per cut-off: per-label test AP (mean over seeds) against training positives."""
    from matplotlib import lines, style, ticker
    from matplotlib.figure import Figure

    cutoffs, variants = group.cutoffs, group.variants
    styles = _variant_styles(variants)
    ncols = min(len(cutoffs), 2)
    nrows = math.ceil(len(cutoffs) / ncols)
    with style.context("default"):
        fig = Figure(figsize=(5.0 * ncols + 2.4, 3.8 * nrows), dpi=_DPI, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for ax in axes.flat[len(cutoffs) :]:
            ax.set_visible(False)
        for ax, cutoff in zip(axes.flat, cutoffs, strict=False):
            for variant in variants:
                points = [(x, y) for x, y in _mean_ap_per_label(group, variant, cutoff) if x > 0]
                if points:
                    color, marker = styles[variant]
                    xs, ys = zip(*points, strict=True)
                    ax.scatter(xs, ys, s=12, color=color, marker=marker, alpha=0.75, label=variant)
            ax.set_xscale("log")
            # Plain numbers (5, 10, 100) read better than 10^1 and crowded minor labels.
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.tick_params(labelbottom=True, labelleft=True)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"cut-off {cutoff}")
            ax.set_xlabel("training positives of the label")
            ax.set_ylabel("test AP (mean over seeds)")
            ax.grid(True, alpha=0.3)
        handles = [
            lines.Line2D([], [], color=styles[v][0], marker=styles[v][1], linestyle="", label=v)
            for v in variants
        ]
        fig.legend(handles=handles, loc="outside right upper", fontsize="small")
        fig.suptitle(f"Per-label test AP against training frequency: {group.title}")
        return _render_png(fig)


def plot_map_vs_cutoff(group: Group) -> bytes:
    """mAP and tail mAP against cut-off, one line per variant, 95% CI error bars."""
    from matplotlib import style
    from matplotlib.figure import Figure

    cutoffs, variants = group.cutoffs, group.variants
    styles = _variant_styles(variants)
    with style.context("default"):
        fig = Figure(figsize=(12.4, 4.2), dpi=_DPI, layout="constrained")
        axes = fig.subplots(1, 2, squeeze=False, sharex=True)[0]
        for ax, (metric, title) in zip(
            axes, (("mAP", "test mAP"), ("tail", "test tail mAP")), strict=True
        ):
            for i, variant in enumerate(variants):
                # Small multiplicative offsets so that error bars at one cut-off do not overlap.
                shift = 1.0 + 0.012 * (i - (len(variants) - 1) / 2)
                xs, ys, errs = [], [], []
                for cutoff in cutoffs:
                    ci = group.cell(variant, cutoff, metric)
                    if ci.mean is not None:
                        xs.append(cutoff * shift)
                        ys.append(ci.mean)
                        errs.append(ci.half_width or 0.0)
                if xs:
                    color, marker = styles[variant]
                    ax.errorbar(
                        xs, ys, yerr=errs, color=color, marker=marker, markersize=4,
                        capsize=2, linewidth=1, label=variant,
                    )  # fmt: skip
            for cutoff in cutoffs:
                if all(group.cell(v, cutoff, metric).mean is None for v in variants):
                    ax.annotate(
                        "empty\nbucket" if metric != "mAP" else "no\nvalue", (cutoff, 0.5),
                        xycoords=("data", "axes fraction"), ha="center", va="center",
                        fontsize="small", color="0.4",
                    )  # fmt: skip
            ax.set_xscale("log")
            ax.set_xticks(cutoffs, [str(c) for c in cutoffs])
            ax.minorticks_off()
            ax.set_xlim(min(cutoffs) / 1.25, max(cutoffs) * 1.25)
            ax.set_xlabel("cut-off (training positives of the rarest label)")
            ax.set_ylabel(f"{title} (mean ± 95% CI)")
            ax.set_title(title)
            ax.grid(True, alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        if not handles:
            handles, labels = axes[1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize="small")
        fig.suptitle(f"Test mAP against cut-off: {group.title}")
        return _render_png(fig)


# --------------------------------------------------------------------------------------------
# Markdown


def _metric_tables(group: Group) -> list[str]:
    lines = []
    header = ["variant"] + [f"cut-off {c}" for c in group.cutoffs]
    for metric, title in METRICS:
        lines += [f"#### {title}", ""]
        rows = [
            [f"`{v}`"] + [format_ci(group.cell(v, c, metric)) for c in group.cutoffs]
            for v in group.variants
        ]
        lines += [*_table(header, rows), ""]
    return lines


def _paired_tables(group: Group) -> list[str]:
    proposed = [v for v in group.variants if is_proposed(v)]
    if not proposed:
        return ["No `proposed` runs in this task: no paired differences.", ""]
    lines = [
        "Mean over seeds of the per-seed difference proposed − baseline (same cut-off and seed) "
        f"± 95% CI half-width, n = paired seeds. **Bold**: the interval excludes 0 and the "
        f"difference is at least {MIN_DIFFERENCE} (visible at 3 decimals).",
        "",
    ]
    header = ["variant", "cut-off"] + [f"Δ {t}" for k, t in METRICS if k in MAP_METRICS]
    for baseline in BASELINES:
        lines += [f"#### `proposed` − `{baseline}`", ""]
        if baseline not in group.variants:
            lines += [f"No `{baseline}` runs in this task.", ""]
            continue
        rows = [
            [f"`{v}`", str(c)]
            + [
                format_ci(group.paired(v, baseline, c, m), signed=True, mark=True)
                for m in MAP_METRICS
            ]
            for v in proposed
            for c in group.cutoffs
        ]
        lines += [*_table(header, rows), ""]
    return lines


def _image_size(group: Group) -> str:
    found = set()
    for run in group.runs:
        sources = (
            _flatten((run.record["data"] or {}).get("provenance") or {}),
            _flatten((run.record.get("config") or {}).get("data") or {}),
        )
        for flat in sources:
            for key, value in flat.items():
                leaf = key.rsplit(".", 1)[-1].lower()
                if leaf in ("image_size", "image_shape", "size", "resolution"):
                    found.add(_short(value))
        if found:
            break
    return _distinct(found) if found else "not recorded in the run records"


def _data_section(group: Group) -> list[str]:
    provenance: dict[str, set[str]] = defaultdict(set)
    sizes: dict[str, set[str]] = defaultdict(set)
    for run in group.runs:
        data = run.record["data"]
        if data is None:  # A run that failed before its data was built.
            continue
        for key, value in provenance_fields(data.get("provenance") or {}).items():
            provenance[key].add(value)
        sizes["labels"].add(str(len(data.get("label_names") or [])))
        for split in ("train", "val", "test"):
            sizes[split].add(str(data.get(f"num_{split}")))
    wall = math.fsum(_wall(r) for r in group.runs)
    several = any(len(sizes[k]) > 1 for k in ("train", "val", "test"))
    lines = [
        f"- Task `{group.task}`, tier `{group.tier}`; image size: {_image_size(group)}.",
        f"- Labels: {_distinct(sizes['labels'])}; examples train / val / test: "
        f"{_distinct(sizes['train'])} / {_distinct(sizes['val'])} / {_distinct(sizes['test'])}"
        + (" (several values: they differ between runs, e.g. by cut-off)." if several else "."),
        f"- Seeds with finished runs: {', '.join(map(str, group.seeds)) or 'none'} "
        f"({len(group.seeds)}); cut-offs: "
        f"{', '.join(map(str, group.cutoffs))}; variants: {len(group.variants)}.",
        f"- Runs: {len(group.runs)} ({len(group.finished)} finished, {len(group.failed)} failed); "
        f"compute {_duration(wall)} (sum of wall_time_s).",
    ]
    if provenance:
        lines += [
            "- Data provenance (checksums abbreviated; file paths and long lists are left out "
            "here and kept in the records):",
            "",
        ]
        rows = [[f"`{k}`", _distinct(v).replace("|", "\\|")] for k, v in sorted(provenance.items())]
        lines += ["  " + line for line in _table(["field", "value"], rows)]
    else:
        lines.append("- Data provenance: not recorded.")
    return [*lines, ""]


def _compute_section(runs: Sequence[Run], groups: Sequence[Group]) -> list[str]:
    wall = math.fsum(_wall(r) for r in runs)
    failed = [r for r in runs if not r.finished]
    lines = [
        f"- Runs: {len(runs)} ({len(runs) - len(failed)} finished, {len(failed)} failed).",
        f"- Total compute: {_duration(wall)}, the sum of wall_time_s over all runs, failed ones "
        "included.",
    ]
    for group in groups:
        group_wall = math.fsum(_wall(r) for r in group.runs)
        lines.append(f"  - {group.title}: {_duration(group_wall)} over {len(group.runs)} runs.")
    devices: dict[str, int] = defaultdict(int)
    packages: dict[str, set[str]] = defaultdict(set)
    commits: dict[str, int] = defaultdict(int)
    pythons: set[str] = set()
    dirty = 0
    for run in runs:
        env = run.record["environment"]
        devices[
            f"{env.get('num_devices', '?')} × {env.get('platform', '?')} "
            f"({_distinct(env.get('devices') or [], limit=2)})"
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
    if pythons:
        lines.append(f"- Python: {_distinct(pythons)}.")
    if packages:
        lines.append(
            "- Packages: "
            + ", ".join(f"{n} {_distinct(v)}" for n, v in sorted(packages.items()))
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
        lines += [*_table(["record", "variant", "cut-off", "seed", "failure"], rows), ""]
    return lines


def _relative(target: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(target, start)).as_posix()
    except ValueError:  # Different drives on Windows.
        return target.as_posix()


def build_report(
    runs: Sequence[Run],
    *,
    records_dir: str | os.PathLike,
    out: str | os.PathLike,
    plots_dir: str | os.PathLike,
    notes: str | None = None,
    notes_name: str | None = None,
) -> tuple[str, dict[Path, bytes], list[str]]:
    """RESULTS.md text, {plot path: PNG bytes} and the stdout summary lines, from `runs` alone.

    Paths in the markdown are relative to the folder of `out`, so the file reads the same
    wherever the repository is checked out.
    """
    out, plots_dir = Path(out), Path(plots_dir)
    base = out.parent
    groups = group_runs(runs)
    plots: dict[Path, bytes] = {}
    failed = sum(not r.finished for r in runs)
    lines = [
        "# Results",
        "",
        f"Generated by `python -m experiments.report` from {len(runs)} run records in "
        f"`{_relative(Path(records_dir), base)}`. Do not edit this file by hand: rerun the "
        "command"
        + (f"; analysis prose lives in `{notes_name}`." if notes_name else ".")
        + " Metrics are on the test split with per-label thresholds chosen on validation; "
        "± is the half-width of the 95% Student-t interval over seeds; n is the number of seeds.",
        "",
        "## Headline",
        "",
    ]
    summary = [f"Read {len(runs)} run records ({len(runs) - failed} finished, {failed} failed)."]
    for group in groups:
        sentences = headline(group)
        lines += [f"**{group.title}**", ""] + [f"- {s}" for s in sentences] + [""]
        summary.append(short_summary(group))
    if notes is not None:
        lines += ["## Notes", "", notes.rstrip("\n"), ""]
    for group in groups:
        lines += [f"## {group.title}", "", "### Test metrics by variant and cut-off", ""]
        lines += _metric_tables(group)
        lines += ["### Paired differences against the baselines", ""]
        lines += _paired_tables(group)
        lines += ["### Plots", ""]
        for name, caption, render in (  # Names must end with one of _PLOT_SUFFIXES.
            ("map_vs_cutoff", "Test mAP and tail mAP against cut-off", plot_map_vs_cutoff),
            (
                "ap_vs_frequency",
                "Per-label test AP against training positives (mean over seeds; labels with no "
                "training positives are not drawn)",
                plot_ap_vs_frequency,
            ),
        ):
            path = plots_dir / f"{group.slug}_{name}.png"
            plots[path] = render(group)
            lines += [f"{caption}:", "", f"![{caption}]({_relative(path, base)})", ""]
        lines += ["### Data", "", *_data_section(group)]
    lines += ["## Runs and compute", "", *_compute_section(runs, groups)]
    text = "\n".join(lines).rstrip("\n") + "\n"
    return text, plots, summary


def write_report(
    records_dir: str | os.PathLike = "runs",
    out: str | os.PathLike = "RESULTS.md",
    plots_dir: str | os.PathLike = "results/plots",
    notes_path: str | os.PathLike | None = None,
) -> list[str]:
    """Reads the records, writes the plots and then RESULTS.md atomically; returns the summary."""
    notes = None
    if notes_path is not None:
        notes_path = Path(notes_path)
        if not notes_path.is_file():
            raise ReportError(
                f"Notes file {str(notes_path)!r} does not exist. Create it (markdown, kept in "
                "the repository) or leave out --notes."
            )
        notes = notes_path.read_text(encoding="utf-8")
    runs = read_runs(records_dir)
    out = Path(out)
    notes_name = _relative(notes_path, out.parent) if notes_path is not None else None
    text, plots, summary = build_report(
        runs,
        records_dir=records_dir,
        out=out,
        plots_dir=plots_dir,
        notes=notes,
        notes_name=notes_name,
    )
    for path, data in plots.items():
        with records_lib.atomic_open(path) as f:
            f.write(data)
    records_lib.atomic_write_text(out, text)
    summary.append(f"Wrote {out} and {len(plots)} plots in {plots_dir}.")
    stale = remove_stale_plots(plots_dir, set(plots))
    if stale:
        summary.append(
            f"Removed {len(stale)} plots no record refers to any more: {', '.join(stale)}."
        )
    return summary


def remove_stale_plots(plots_dir: str | os.PathLike, keep: set[Path]) -> list[str]:
    """Deletes this report's plot files (by their name pattern) that it did not write this time,
    so that a committed plots folder holds exactly what RESULTS.md links to. Other files stay."""
    plots_dir = Path(plots_dir)
    if not plots_dir.is_dir():
        return []
    removed = []
    for path in sorted(plots_dir.glob("*.png")):
        if path.name.endswith(_PLOT_SUFFIXES) and path not in keep:
            path.unlink()
            removed.append(path.name)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.report",
        description="Regenerate RESULTS.md and its plots from the run records.",
    )
    parser.add_argument(
        "--records",
        default="results/runs",
        help="folder of run records, searched recursively (default: results/runs, the committed"
        " sweep; your own runs are under runs/)",
    )
    parser.add_argument("--out", default="RESULTS.md", help="markdown file to write")
    parser.add_argument("--plots-dir", default="results/plots", help="folder for the PNG plots")
    parser.add_argument(
        "--notes",
        default=None,
        help=f"markdown file included verbatim under 'Notes' (default: {DEFAULT_NOTES} where the"
        " records are the default ones and it exists)",
    )
    args = parser.parse_args(argv)
    if args.notes is None and args.records == "results/runs" and Path(DEFAULT_NOTES).exists():
        args.notes = DEFAULT_NOTES
    try:
        summary = write_report(args.records, args.out, args.plots_dir, args.notes)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
