"""The report's paired comparisons with their p-values and Holm's correction.

Two families per (tier, task), each corrected on its own with Holm's step-down procedure over
its paired t-tests (family-wise error ALPHA):

  headline   every `proposed(...)` variant against `none` and against `inverse`: the paper's
             question, which the headline answers;
  others     every other compared variant against `none`.

A comparison pairs runs by (cut-off, seed), so cut-offs with more replicates give more pairs;
each row says its n. Rows with no pair (an empty bucket at that cut-off) are left out; rows with
one pair have no test and are not in the family.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from experiments.report.tables import (
    ALPHA,
    BASELINES,
    MAP_METRICS,
    MIN_DIFFERENCE,
    Group,
    format_ci,
    format_p,
    is_proposed,
    markdown_table,
    number,
    p_words,
)
from experiments.stats import WILCOXON_MIN_N, PairedTest, holm

UNWEIGHTED = "none"
BUCKETS = {"mAP": "all", "head": "head", "medium": "medium", "tail": "tail"}


@dataclass(frozen=True)
class Comparison:
    """variant − baseline at one cut-off, on one metric, with its family's Holm-adjusted p."""

    variant: str
    baseline: str
    cutoff: int
    metric: str
    test: PairedTest
    holm_p: float | None

    @property
    def survives(self) -> bool:
        """Holm-adjusted p below ALPHA, and the difference visible at the printed precision."""
        return (
            self.holm_p is not None
            and self.holm_p < ALPHA
            and abs(self.test.ci.mean) >= MIN_DIFFERENCE
        )

    @property
    def name(self) -> str:
        return (
            f"{self.variant} − {self.baseline}, {BUCKETS[self.metric]} labels at cut-off "
            f"{self.cutoff}"
        )


def family(group: Group, pairs: Iterable[tuple[str, str]]) -> list[Comparison]:
    """Every (variant, baseline) pair x cut-off x mAP metric with at least one paired seed,
    Holm-corrected together over the rows that have a t-test."""
    cells = [
        (variant, baseline, cutoff, metric, group.test(variant, baseline, cutoff, metric))
        for variant, baseline in pairs
        for cutoff in group.cutoffs
        for metric in MAP_METRICS
    ]
    cells = [cell for cell in cells if cell[-1].ci.n > 0]
    tested = [i for i, cell in enumerate(cells) if cell[-1].p_t is not None]
    adjusted = dict(zip(tested, holm([cells[i][-1].p_t for i in tested]), strict=True))
    return [Comparison(*cell, adjusted.get(i)) for i, cell in enumerate(cells)]


def headline_family(group: Group) -> list[Comparison]:
    """`proposed(...)` against each baseline present (the headline's family)."""
    proposed = [v for v in group.variants if is_proposed(v)]
    baselines = [b for b in BASELINES if b in group.variants]
    return family(group, [(v, b) for b in baselines for v in proposed])


def others_family(group: Group) -> list[Comparison]:
    """Every compared variant but `proposed(...)` and `none` itself, against `none`."""
    if UNWEIGHTED not in group.variants:
        return []
    others = [v for v in group.variants if v != UNWEIGHTED and not is_proposed(v)]
    return family(group, [(v, UNWEIGHTED) for v in others])


def tested(comparisons: Sequence[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.holm_p is not None]


def comparison_table(comparisons: Sequence[Comparison]) -> list[str]:
    header = [
        "variant",
        "cut-off",
        "labels",
        "Δ ± 95% CI (n)",
        "p (t)",
        "p (Wilcoxon)",
        "p (Holm)",
    ]
    rows = [
        [
            f"`{c.variant}`",
            str(c.cutoff),
            BUCKETS[c.metric],
            format_ci(c.test.ci, signed=True, bold=c.survives),
            format_p(c.test.p_t),
            format_p(c.test.p_wilcoxon),
            format_p(c.holm_p),
        ]
        for c in comparisons
    ]
    return markdown_table(header, rows)


def _explanation(size: int, what: str) -> str:
    return (
        "Δ: mean of the per-seed differences (pairs: same cut-off and seed) ± 95% CI "
        "half-width, n = pairs. p (t): two-sided paired t-test; p (Wilcoxon): exact two-sided "
        f"signed-rank test, a check shown where n ≥ {WILCOXON_MIN_N} (below, its smallest "
        "possible p is above 0.05) and the differences have no zeros or ties; p (Holm): the t "
        f"p-value adjusted by Holm's step-down procedure over the {size} tests of {what}. "
        f"**Bold**: Holm p < {ALPHA:g} and |Δ| ≥ {MIN_DIFFERENCE} (visible at 3 decimals). "
        "Buckets with no labels at a cut-off are left out."
    )


def paired_tables(group: Group) -> list[str]:
    """The headline family's tables (proposed − each baseline), then every other method − none."""
    lines: list[str] = []
    headline = headline_family(group)
    if not headline:
        lines += ["No `proposed` runs, or no baseline runs, in this task: no paired tests.", ""]
    else:
        lines += [
            _explanation(
                len(tested(headline)), "this family: `proposed` against `none` and `inverse`"
            ),
            "",
        ]
        for baseline in BASELINES:
            rows = [c for c in headline if c.baseline == baseline]
            lines += [f"#### `proposed` − `{baseline}`", ""]
            lines += [*comparison_table(rows), ""] if rows else [f"No `{baseline}` runs.", ""]
    others = others_family(group)
    lines += [f"#### Every other method − `{UNWEIGHTED}`", ""]
    if not others:
        lines += [f"No other methods, or no `{UNWEIGHTED}` runs.", ""]
        return lines
    lines += [
        _explanation(
            len(tested(others)),
            f"this second family (every method but `proposed` against `{UNWEIGHTED}`), "
            "corrected apart from the headline's",
        ),
        "",
        *comparison_table(others),
        "",
    ]
    return lines


def holm_sentence(group: Group) -> str | None:
    """The headline's one line: how many of its family's comparisons survive Holm."""
    comparisons = tested(headline_family(group))
    if not comparisons:
        return None
    survivors = [c for c in comparisons if c.survives]
    text = (
        f"Corrected for multiple comparisons (Holm, family-wise error {ALPHA:g}, over the "
        f"{len(comparisons)} paired t-tests of `proposed` against the baselines): "
        f"{len(survivors)} of {len(comparisons)} survive"
    )
    if survivors:
        text += ": " + "; ".join(
            f"{c.name} {number(c.test.ci.mean, signed=True)} ({p_words(c.holm_p, 'Holm p')})"
            for c in survivors
        )
    return text + ". The higher / lower counts above read each 95% interval alone, uncorrected."
