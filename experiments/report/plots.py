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
from experiments.report.loading import ReportError
from experiments.report.tables import CEILING, REFERENCES, Group
from experiments.stats import defined

MANIFEST_NAME = "report_manifest.json"
# Fixed figure geometry: with the Agg renderer and no PNG metadata this makes plots byte-stable.
_DPI = 100
_PNG_METADATA = {"Software": None}


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


def _label_points(group: Group, variant: str, cutoff: int) -> list[tuple[float, float]]:
    """(training positives, test AP) of every label of every finished seed of one cell.

    The ceiling (`balanced`) has no long tail of its own: its points are its AP on each label
    paired with the label's training positives in a run at `cutoff` with the same seed, so
    they show how the same classes do when they are not rare.
    """
    points = []
    for run in group.finished:
        if run.variant != variant or (variant != CEILING and run.cutoff != cutoff):
            continue
        positives = run.record["data"]["train_positives"]
        if variant == CEILING:
            peer = group.long_tailed_peer(run.seed, cutoff)
            if peer is None:
                continue
            positives = peer.record["data"]["train_positives"]
        ap = run.record["test"]["per_label"]["ap"]
        points += [(float(n), float(a)) for a, n in zip(ap, positives, strict=True) if defined(a)]
    return points


def _mean_ap_by_frequency(group: Group, variant: str, cutoff: int) -> list[tuple[float, float]]:
    """(training positives, mean test AP over every label and seed with that many positives).

    Each seed draws its own class order, so a frequency's mean pools different classes: the
    curve shows the effect of frequency apart from which garments happen to be rare.
    """
    by_count: dict[float, list[float]] = defaultdict(list)
    for positives, ap in _label_points(group, variant, cutoff):
        by_count[positives].append(ap)
    return [(n, math.fsum(v) / len(v)) for n, v in sorted(by_count.items())]


def _line(variant: str) -> str:
    """Dashed for the reference rows, solid for the compared variants."""
    return "--" if variant in REFERENCES else "-"


def plot_ap_vs_frequency(group: Group) -> bytes:
    """One panel per cut-off: mean test AP against training positives, pooled over labels and
    seeds (class orders), one line per variant; the ceiling dashed."""
    from matplotlib import lines, style, ticker
    from matplotlib.figure import Figure

    cutoffs = group.cutoffs
    variants = [*group.variants, *group.references]
    styles = _variant_styles(variants)
    ncols = min(len(cutoffs), 2)
    nrows = math.ceil(len(cutoffs) / ncols)
    with style.context("default"):
        fig = Figure(figsize=(5.0 * ncols + 0.4, 3.8 * nrows + 1.0), dpi=_DPI, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for ax in axes.flat[len(cutoffs) :]:
            ax.set_visible(False)
        for ax, cutoff in zip(axes.flat, cutoffs, strict=False):
            for variant in variants:
                points = [(x, y) for x, y in _mean_ap_by_frequency(group, variant, cutoff) if x > 0]
                if points:
                    color, marker = styles[variant]
                    xs, ys = zip(*points, strict=True)
                    ax.plot(
                        xs, ys, color=color, marker=marker, markersize=4, linewidth=1,
                        linestyle=_line(variant), alpha=0.85,
                        label=variant,
                    )  # fmt: skip
            ax.set_xscale("log")
            # Plain numbers (5, 10, 100) read better than 10^1 and crowded minor labels.
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.tick_params(labelbottom=True, labelleft=True)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"cut-off {cutoff}")
            ax.set_xlabel("training positives of the label")
            ax.set_ylabel("test AP (mean over labels and seeds)")
            ax.grid(True, alpha=0.3)
        handles = [
            lines.Line2D(
                [],
                [],
                color=styles[v][0],
                marker=styles[v][1],
                linestyle=_line(v),
                label=v,
            )
            for v in variants
        ]
        # Below the panels, not beside them: a tall legend at the side ran into the title.
        fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize="small")
        fig.suptitle(f"Test AP against training frequency, pooled over class orders: {group.title}")
        return _render_png(fig)


def plot_map_vs_cutoff(group: Group) -> bytes:
    """mAP and tail mAP against cut-off, one line per variant, 95% CI error bars."""
    from matplotlib import style
    from matplotlib.figure import Figure

    cutoffs, variants = group.cutoffs, [*group.variants, *group.references]
    styles = _variant_styles(variants)
    with style.context("default"):
        fig = Figure(figsize=(10.4, 5.2), dpi=_DPI, layout="constrained")
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
        fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize="small")
        fig.suptitle(f"Test mAP against cut-off: {group.title}")
        return _render_png(fig)


# (file name part, caption, renderer) of every plot of a group, in the order of the report.
PLOTS = (
    ("map_vs_cutoff", "Test mAP and tail mAP against cut-off", plot_map_vs_cutoff),
    (
        "ap_vs_frequency",
        "Test AP against training positives, each point the mean over every label and seed "
        "(class order) with that many positives; dashed: the reference rows, the ceiling's AP "
        "on the same classes (labels with no training positives are not drawn)",
        plot_ap_vs_frequency,
    ),
)


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
