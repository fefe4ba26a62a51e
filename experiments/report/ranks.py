"""Every compared variant ranked: mean ranks over (cut-off, seed) blocks, Friedman's test and the
Nemenyi critical difference, per (tier, task) and bucket (Demšar 2006).

A block is one (cut-off, seed) in which every compared variant has a defined value of the
metric; blocks with a gap (a missing or failed run, an empty bucket) are left out, so the test
always sees complete blocks, and the report says how many there are per cut-off. Rank 1 is the
highest mAP. The reference rows are not ranked: the ceiling trains on other data and the floor
is another model; they frame the comparison rather than take part in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.report.tables import ALPHA, METRICS, Group, markdown_table, p_words
from experiments.stats import Friedman, defined, friedman, nemenyi_critical_difference

TITLES = dict(METRICS)
# Rank the buckets in the order of the question: the rare labels first.
RANKED_METRICS = ("tail", "medium", "head", "mAP")


@dataclass(frozen=True)
class Ranking:
    """The ranks of one (tier, task) on one metric."""

    metric: str
    variants: tuple[str, ...]
    blocks: tuple[tuple[int, int], ...]  # complete (cut-off, seed) blocks
    test: Friedman | None  # None with fewer than 2 complete blocks or 3 variants
    critical_difference: float | None

    def blocks_at(self, cutoff: int) -> int:
        return sum(c == cutoff for c, _ in self.blocks)


def ranking(group: Group, metric: str) -> Ranking:
    """Mean ranks, Friedman's test and the Nemenyi CD over the complete blocks of `group`."""
    variants = tuple(group.variants)
    blocks, table = [], []
    for cutoff in group.cutoffs:
        values = {v: group.values(v, cutoff, metric) for v in variants}
        for seed in sorted({s for by_seed in values.values() for s in by_seed}):
            row = [values[v].get(seed) for v in variants]
            if all(defined(x) for x in row):
                blocks.append((cutoff, seed))
                table.append([float(x) for x in row])
    if len(variants) < 3 or len(blocks) < 2:
        return Ranking(metric, variants, tuple(blocks), None, None)
    test = friedman(table)
    cd = nemenyi_critical_difference(len(variants), len(blocks), ALPHA)
    return Ranking(metric, variants, tuple(blocks), test, cd)


def rankings(group: Group) -> list[Ranking]:
    return [ranking(group, metric) for metric in RANKED_METRICS]


def cliques(mean_ranks: list[float], critical_difference: float) -> list[tuple[int, int]]:
    """Maximal runs (i, j) of the ascending-sorted mean ranks that no Nemenyi test separates:
    r_j - r_i <= CD, as the bars of a critical-difference diagram. Indices are into the sorted
    list; a variant separated from all others forms no run."""
    ranks = sorted(mean_ranks)
    runs: list[tuple[int, int]] = []
    for i in range(len(ranks)):
        j = max(k for k in range(i, len(ranks)) if ranks[k] - ranks[i] <= critical_difference)
        if j > i and (not runs or j > runs[-1][1]):
            runs.append((i, j))
    return runs


def _blocks_words(ranking: Ranking, cutoffs: list[int]) -> str:
    per_cutoff = ", ".join(f"cut-off {c}: {ranking.blocks_at(c)}" for c in cutoffs)
    return f"{len(ranking.blocks)} complete (cut-off, seed) blocks ({per_cutoff})"


def friedman_words(ranking: Ranking, cutoffs: list[int]) -> str:
    """'tail mAP: 5 complete blocks (...); Friedman χ²(9) = 23.40, p=0.005; Nemenyi CD 6.06.'"""
    text = f"{TITLES[ranking.metric]}: {_blocks_words(ranking, cutoffs)}"
    if ranking.test is None:
        return text + "; too few to test (Friedman needs 2 blocks and 3 variants)."
    return (
        f"{text}; Friedman χ²({len(ranking.variants) - 1}) = {ranking.test.statistic:.2f}, "
        f"{p_words(ranking.test.p_value)}; Nemenyi critical difference "
        f"{ranking.critical_difference:.2f} (α = {ALPHA:g})."
    )


def rank_table(group: Group, found: list[Ranking]) -> list[str]:
    header = ["variant"] + [f"{TITLES[r.metric]}, N={len(r.blocks)}" for r in found]
    rows = []
    for i, variant in enumerate(group.variants):
        cells = [f"`{variant}`"]
        for r in found:
            cells.append("–" if r.test is None else f"{r.test.mean_ranks[i]:.2f}")
        rows.append(cells)
    return markdown_table(header, rows)


def ranks_section(group: Group, plot_link: str | None) -> list[str]:
    """The markdown of the ranks: the table, one line per bucket, and the CD diagram."""
    found = rankings(group)
    if len(group.variants) < 3:
        return ["Fewer than 3 compared variants: no ranking.", ""]
    lines = [
        "Mean rank of every compared variant (1 = highest mAP) over the complete (cut-off, "
        "seed) blocks, N per column: the blocks in which every variant has a value (a bucket "
        "with no labels at a cut-off, or a missing run, leaves its blocks out). The reference "
        "rows are not ranked. Friedman's test and the Nemenyi critical difference treat the "
        "blocks as independent; the two cut-offs of one seed share its class order, so they "
        "are not quite, and the p-values are somewhat optimistic where both cut-offs count.",
        "",
        *rank_table(group, found),
        "",
    ]
    lines += [f"- {friedman_words(r, group.cutoffs)}" for r in found]
    lines.append("")
    if plot_link is not None:
        caption = (
            "Critical-difference diagrams (Nemenyi, α = 0.05): mean ranks on the axis, best on "
            "the left; a bar joins variants whose mean ranks differ by no more than the "
            "critical difference (not separated)"
        )
        lines += [f"{caption}:", "", f"![{caption}]({plot_link})", ""]
    return lines


def ranks_sentence(group: Group, top: int = 3) -> str | None:
    """The headline's line on ranks: per bucket, N, Friedman's p and the best mean ranks."""
    parts = []
    for r in rankings(group):
        if r.test is None:
            continue
        best = sorted(range(len(r.variants)), key=lambda i: (r.test.mean_ranks[i], i))[:top]
        names = ", ".join(f"{r.variants[i]} {r.test.mean_ranks[i]:.2f}" for i in best)
        parts.append(
            f"{TITLES[r.metric]}, N={len(r.blocks)}, Friedman {p_words(r.test.p_value)}: {names}"
        )
    if not parts:
        return None
    return (
        f"Best mean ranks of the {len(group.variants)} compared variants (1 = best, over "
        "complete (cut-off, seed) blocks; the ranks section has all of them and the Nemenyi "
        "critical differences): " + "; ".join(parts) + "."
    )
