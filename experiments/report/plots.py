"""Plots of the report (matplotlib, Agg, byte-stable PNGs) and the plots folder's manifest.

The manifest (`report_manifest.json` in the plots folder) lists, per report file, the plots that
report wrote. A report removes a plot it no longer makes only when its own earlier run wrote it,
so other files in the folder, and other reports' plots, are never touched.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from experiments import records as records_lib
from experiments.report.comparisons import UNWEIGHTED, headline_family, others_family
from experiments.report.loading import ReportError
from experiments.report.ranks import RANKED_METRICS, TITLES, Ranking, cliques, rankings
from experiments.report.tables import CEILING, REFERENCES, Group, p_words
from experiments.stats import MeanCI, defined

MANIFEST_NAME = "report_manifest.json"
# Fixed figure geometry: with the Agg renderer and no PNG metadata this makes plots byte-stable.
_DPI = 100
_PNG_METADATA = {"Software": None}


def _render_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return buffer.getvalue()


def _label_ap(group: Group, variant: str, cutoff: int) -> dict[tuple[int, int], tuple[int, float]]:
    """(seed, label) -> (training positives at `cutoff`, test AP) of one cell's finished runs.

    The ceiling (`balanced`) has no long tail of its own: its AP on each label is paired with
    the label's training positives in a run at `cutoff` with the same seed (same class order).
    """
    found = {}
    for run in group.finished:
        if run.variant != variant or (variant != CEILING and run.cutoff != cutoff):
            continue
        source = run if variant != CEILING else group.long_tailed_peer(run.seed, cutoff)
        if source is None:
            continue
        positives = source.record["data"]["train_positives"]
        ap = run.record["test"]["per_label"]["ap"]
        for label, (a, n) in enumerate(zip(ap, positives, strict=True)):
            if defined(a):
                found[(run.seed, label)] = (int(n), float(a))
    return found


def ap_difference_by_frequency(
    group: Group, variant: str, cutoff: int
) -> list[tuple[int, float, int]]:
    """(training positives, mean AP difference variant − none, number of (label, seed) pairs).

    Each label of each seed is paired with the same label of `none`'s run at the same cut-off
    and seed; the mean pools the labels and seeds (class orders) with that many positives.
    """
    by_count: dict[int, list[float]] = defaultdict(list)
    for positives, difference in _paired_label_ap(group, variant, cutoff).values():
        by_count[positives].append(difference)
    return [(n, math.fsum(d) / len(d), len(d)) for n, d in sorted(by_count.items())]


def paired_seed_count(group: Group, variant: str, cutoff: int) -> int:
    """How many seeds (class orders) `ap_difference_by_frequency` pairs with `none`'s."""
    return len({seed for seed, _ in _paired_label_ap(group, variant, cutoff)})


def _paired_label_ap(
    group: Group, variant: str, cutoff: int
) -> dict[tuple[int, int], tuple[int, float]]:
    """(seed, label) -> (`none`'s training positives, variant's test AP − `none`'s), for every
    label and seed that both have: the one pairing rule of the AP-difference plot."""
    control = _label_ap(group, UNWEIGHTED, cutoff)
    return {
        key: (control[key][0], ap - control[key][1])
        for key, (_, ap) in _label_ap(group, variant, cutoff).items()
        if key in control
    }


def cutoff_label(cutoff: int, counts: Sequence[int]) -> str:
    """A legend entry with the number of paired seeds: "cut-off 6 (n=15)", or a range where the
    panels differ (a failed run): "cut-off 6 (n=4–5)"."""
    low, high = min(counts, default=0), max(counts, default=0)
    return f"cut-off {cutoff} (n={low})" if low == high else f"cut-off {cutoff} (n={low}–{high})"


def _line(variant: str) -> str:
    """Dashed for the reference rows, solid for the compared variants."""
    return "--" if variant in REFERENCES else "-"


def _grid(fig, count: int, ncols: int, **kwargs):
    nrows = math.ceil(count / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return axes.flat[:count]


def _cutoff_colours(cutoffs: Sequence[int]) -> dict[int, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {c: palette[i % len(palette)] for i, c in enumerate(cutoffs)}


def plot_ap_difference_vs_frequency(group: Group) -> bytes:
    """Small multiples, one panel per variant: test AP minus `none`'s on the same label and seed,
    against the label's training positives, one line per cut-off; the reference rows dashed."""
    from matplotlib import style, ticker
    from matplotlib.figure import Figure

    variants = [v for v in (*group.variants, *group.references) if v != UNWEIGHTED]
    colours = _cutoff_colours(group.cutoffs)
    curves = {
        (v, c): [(n, d) for n, d, _ in ap_difference_by_frequency(group, v, c) if n > 0]
        for v in variants
        for c in group.cutoffs
    }
    # The compared variants share one y scale; the reference rows (the ceiling gains far more)
    # get their own, so that they do not flatten the others.
    compared = [d for (v, _), points in curves.items() if v not in REFERENCES for _, d in points]
    low, high = min([0.0, *compared]), max([0.0, *compared])
    pad = 0.08 * (high - low) or 0.05
    ncols = min(4, max(1, len(variants)))
    nrows = math.ceil(len(variants) / ncols)
    with style.context("default"):
        fig = Figure(figsize=(3.2 * ncols + 0.4, 2.6 * nrows + 1.0), dpi=_DPI, layout="constrained")
        axes = _grid(fig, max(1, len(variants)), ncols, sharex=True)
        for ax, variant in zip(axes, variants, strict=False):
            for cutoff in group.cutoffs:
                if curves[(variant, cutoff)]:
                    xs, ys = zip(*curves[(variant, cutoff)], strict=True)
                    ax.plot(
                        xs, ys, color=colours[cutoff], marker="o", markersize=3, linewidth=1,
                        linestyle=_line(variant),
                    )  # fmt: skip
            if variant not in REFERENCES:
                ax.set_ylim(low - pad, high + pad)
            ax.axhline(0.0, color="0.3", linewidth=0.8)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.tick_params(labelbottom=True, labelleft=True, labelsize="small")
            own = " (own y scale)" if variant in REFERENCES else ""
            ax.set_title(f"{variant}{own}", fontsize="small")
            ax.set_xlabel("training positives", fontsize="small")
            ax.grid(True, alpha=0.3)
        fig.supylabel("test AP − none's (same label and seed)")
        counts = {c: [paired_seed_count(group, v, c) for v in variants] for c in group.cutoffs}
        handles = [_legend_handle(colours[c], cutoff_label(c, counts[c])) for c in group.cutoffs]
        fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize="small")
        fig.suptitle(f"AP gained or lost against none, by label frequency: {group.title}")
        return _render_png(fig)


def _legend_handle(colour, label: str):
    from matplotlib import lines

    return lines.Line2D([], [], color=colour, marker="o", label=label)


def forest_rows(group: Group) -> dict[tuple[int, str], list[tuple[str, MeanCI, bool]]]:
    """(cut-off, metric) -> [(variant, variant − none paired interval, survives Holm)] for every
    compared variant but `none`, in the tables' order; Holm as in the variant's family."""
    survives = {
        (c.variant, c.cutoff, c.metric): c.survives
        for c in (*headline_family(group), *others_family(group))
        if c.baseline == UNWEIGHTED
    }
    variants = [v for v in group.variants if v != UNWEIGHTED]
    return {
        (cutoff, metric): [
            (
                v,
                group.paired(v, UNWEIGHTED, cutoff, metric),
                survives.get((v, cutoff, metric), False),
            )
            for v in variants
        ]
        for cutoff in group.cutoffs
        for metric in RANKED_METRICS
    }


def _forest_panel(ax, rows: list[tuple[str, MeanCI, bool]], title: str) -> None:
    """One row per variant: the mean difference with its 95% interval; filled where it
    survives Holm's correction, open otherwise."""
    from matplotlib.ticker import MaxNLocator

    ns = set()
    for row, (_, ci, survives) in enumerate(rows):
        if ci.mean is None:
            continue
        ns.add(ci.n)
        ax.errorbar(
            ci.mean, row, xerr=[[ci.half_width or 0.0], [ci.half_width or 0.0]], fmt="o",
            color="C0" if ci.mean >= 0 else "C3", markersize=5, capsize=2, linewidth=1.2,
            markerfacecolor=None if survives else "white",
        )  # fmt: skip
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set_yticks(range(len(rows)), [v for v, _, _ in rows], fontsize="small")
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)
    ax.grid(True, axis="x", alpha=0.3)
    n = "no labels" if not ns else f"n={min(ns)}" + (f"–{max(ns)}" if len(ns) > 1 else "")
    ax.set_title(f"{title} ({n})", fontsize="small")
    if not ns:
        ax.text(0.5, 0.5, "empty bucket", transform=ax.transAxes, ha="center", color="0.4")


def plot_forest(group: Group) -> bytes:
    """Forest plot: every variant − none (paired 95% interval) per bucket (rows: tail, medium,
    head, all) and cut-off (columns, side by side)."""
    from matplotlib import style
    from matplotlib.figure import Figure

    rows = forest_rows(group)
    ncols = max(1, len(group.cutoffs))
    nvariants = max(1, len(group.variants) - 1)
    with style.context("default"):
        fig = Figure(
            figsize=(3.6 * ncols + 2.6, (0.22 * nvariants + 0.9) * len(RANKED_METRICS) + 1.0),
            dpi=_DPI,
            layout="constrained",
        )
        axes = fig.subplots(len(RANKED_METRICS), ncols, squeeze=False, sharex="row", sharey=True)
        for r, metric in enumerate(RANKED_METRICS):
            for c, cutoff in enumerate(group.cutoffs):
                title = f"{TITLES[metric]}, cut-off {cutoff}"
                _forest_panel(axes[r, c], rows[(cutoff, metric)], title)
        fig.supxlabel("difference from none (mean over paired seeds, 95% CI)")
        fig.suptitle(
            f"Each method − none: {group.title}\nfilled: survives Holm's correction "
            "(α = 0.05) in its family; open: does not",
            fontsize="medium",
        )
        return _render_png(fig)


def plot_critical_difference(group: Group) -> bytes:
    """One critical-difference diagram per bucket, stacked (Demšar 2006, figure 1)."""
    from matplotlib import style
    from matplotlib.figure import Figure

    found = rankings(group)
    k = len(group.variants)
    with style.context("default"):
        fig = Figure(figsize=(10.0, (0.28 * k + 1.2) * len(found)), dpi=_DPI, layout="constrained")
        axes = fig.subplots(len(found), 1, squeeze=False)[:, 0]
        for ax, ranking in zip(axes, found, strict=True):
            _cd_panel(ax, ranking)
        fig.suptitle(f"Mean ranks (1 = best) and Nemenyi critical difference: {group.title}")
        return _render_png(fig)


def _cd_panel(ax, ranking: Ranking) -> None:
    k = len(ranking.variants)
    ax.set_axis_off()
    title = f"{TITLES[ranking.metric]}: N = {len(ranking.blocks)} complete blocks"
    if ranking.test is None:
        ax.set_title(title, fontsize="small")
        ax.text(0.5, 0.5, "too few blocks to rank", transform=ax.transAxes, ha="center")
        return
    p = ranking.test.p_value
    title += f", Friedman {p_words(p)}"
    ax.set_title(title, fontsize="small")
    order = sorted(range(k), key=lambda i: (ranking.test.mean_ranks[i], i))
    ranks = [ranking.test.mean_ranks[i] for i in order]
    bars = cliques(ranks, ranking.critical_difference)
    half = (k + 1) // 2
    depth = 0.6 + 0.25 * len(bars)
    ax.set_xlim(1 - 0.45 * (k - 1) - 0.5, k + 0.45 * (k - 1) + 0.5)
    ax.set_ylim(-(depth + half + 0.5), 1.6)
    ax.plot([1, k], [0, 0], color="black", linewidth=1)
    for tick in range(1, k + 1):
        ax.plot([tick, tick], [0, 0.15], color="black", linewidth=1)
        ax.text(tick, 0.3, str(tick), ha="center", va="bottom", fontsize="small")
    cd = ranking.critical_difference
    ax.plot([1, 1 + cd], [1.2, 1.2], color="black", linewidth=1.5)
    ax.text(1 + cd / 2, 1.3, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize="small")
    for level, (i, j) in enumerate(bars):
        y = -0.4 - 0.25 * level
        ax.plot([ranks[i] - 0.05, ranks[j] + 0.05], [y, y], color="black", linewidth=3)
    for slot, index in enumerate(order):
        rank, name = ranking.test.mean_ranks[index], ranking.variants[index]
        left = slot < half
        y = -(depth + (slot if left else k - 1 - slot) + 0.5)
        end = 1 - 0.1 if left else k + 0.1
        ax.plot([rank, rank, end], [0, y, y], color="0.35", linewidth=0.8)
        ax.text(
            end - 0.05 if left else end + 0.05, y, f"{name} ({rank:.2f})", fontsize="small",
            ha="right" if left else "left", va="center",
        )  # fmt: skip


# (file name part, caption, renderer) of every plot in a group's "Plots" section, in order.
PLOTS = (
    (
        "forest",
        "Each method − `none`, paired over seeds at the same cut-off, with its 95% interval; "
        "filled where the difference survives Holm's correction in its family (the tables "
        "above), open where it does not",
        plot_forest,
    ),
    (
        "ap_difference_vs_frequency",
        "Test AP minus `none`'s on the same label and seed, against the label's training "
        "positives, mean over every label and seed (class order) with that many positives; "
        "one panel per variant, dashed: the reference rows (labels with no training positives "
        "are not drawn)",
        plot_ap_difference_vs_frequency,
    ),
)
# The critical-difference diagrams go with the ranks table.
RANKS_PLOT = "critical_difference"


# --------------------------------------------------------------------------------------------
# The manifest


def _plain_png_name(name: Any) -> bool:
    """A file name inside the plots folder (no separators, no '..'), ending in .png."""
    return (
        isinstance(name, str)
        and name.endswith(".png")
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
    )


def read_manifest(plots_dir: str | os.PathLike) -> dict[str, list[str]]:
    """{report key: [plot file names]} from the plots folder's manifest; {} without one."""
    path = Path(plots_dir) / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(
            f"The plots manifest {path} cannot be read ({e}). Delete it and rerun; the report "
            "then removes no old plots, so delete any you no longer want by hand."
        ) from e
    reports = manifest.get("reports") if isinstance(manifest, dict) else None
    if not isinstance(reports, dict) or not all(
        isinstance(names, list) and all(map(_plain_png_name, names)) for names in reports.values()
    ):
        raise ReportError(
            f"The plots manifest {path} is not of the form "
            '{"reports": {report: [plot file names]}}. Delete it and rerun; the report then '
            "removes no old plots, so delete any you no longer want by hand."
        )
    return reports


def manifest_key(out: str | os.PathLike, plots_dir: str | os.PathLike) -> str:
    """How the manifest names a report: its path relative to the plots folder (POSIX)."""
    try:
        return Path(os.path.relpath(Path(out), Path(plots_dir))).as_posix()
    except ValueError:  # Different drives on Windows.
        return Path(os.path.abspath(out)).as_posix()


def update_plots(
    plots_dir: str | os.PathLike, key: str, previous: dict[str, list[str]], written: Iterable[Path]
) -> list[str]:
    """Records `written` as the plots of report `key` in the manifest (atomically), then deletes
    the plots this report wrote last time and not now, unless another report lists them.
    Returns the names deleted."""
    plots_dir = Path(plots_dir)
    names = sorted(Path(p).name for p in written)
    reports = {**previous, key: names}
    records_lib.atomic_write_json(plots_dir / MANIFEST_NAME, {"reports": reports})
    keep = {name for names in reports.values() for name in names}
    removed = []
    for name in sorted(set(previous.get(key, [])) - keep):
        path = plots_dir / name
        if path.is_file():
            path.unlink()
            removed.append(name)
    return removed
