"""`python -m experiments.report`: run records -> a markdown report (RESULTS.md) and its plots.

    python -m experiments.report            # RESULTS.md + results/plots/ from results/runs
    python -m experiments.report --records runs --out my_results.md  # + my_results_plots/

The report reads the run records only (see `experiments.records` for their schema; versions 1
and 2 are read) and is a pure function of them: the same records give byte-identical markdown
and plots, so RESULTS.md is never edited by hand. Analysis prose belongs in a notes file
(`--notes`), included verbatim.

What it writes, for every (tier, task) found in the records:
  * tables of variant x cut-off for test mAP (all labels, head, medium, tail buckets) and
    macro-F1: mean +/- half-width of the 95% Student-t interval over seeds, with n;
  * paired differences (same task, tier, cut-off and seed) with their paired t and Wilcoxon
    p-values and Holm's correction, in two families: every `proposed(...)` variant against
    `none` and `inverse` (the headline's), and every other variant against `none`;
  * every compared variant's mean rank over complete (cut-off, seed) blocks per bucket, with
    Friedman's test and a critical-difference diagram (Nemenyi);
  * plots: a forest plot of every variant − none per bucket and cut-off, and the per-label AP
    difference from `none` against training positives, one small panel per variant;
  * the data behind it (provenance, checksums, sizes), seeds, runs, failed runs and compute.
Failed runs are listed and left out of every mean.

Modules: `loading` (read, normalise to schema v2, validate), `tables` (grouping, statistics,
tables), `comparisons` (paired tests and their Holm families), `ranks` (Friedman and Nemenyi),
`prose` (headline sentences), `plots` (figures and the plots manifest), `markdown` (assembly)
and `cli` (where to write, `main`).
"""

from experiments.report.cli import (
    COMMITTED_PLOTS,
    COMMITTED_RECORDS,
    COMMITTED_REPORT,
    DEFAULT_NOTES,
    UsageError,
    default_plots_dir,
    main,
    resolve_outputs,
    write_report,
)
from experiments.report.comparisons import (
    Comparison,
    headline_family,
    holm_sentence,
    others_family,
)
from experiments.report.loading import (
    RecordedRun,
    ReportError,
    normalise_record,
    read_runs,
)
from experiments.report.markdown import build_report
from experiments.report.plots import (
    MANIFEST_NAME,
    ap_difference_by_frequency,
    cutoff_label,
    forest_rows,
    paired_seed_count,
    plot_ap_difference_vs_frequency,
    plot_critical_difference,
    plot_forest,
    read_manifest,
)
from experiments.report.prose import compare, headline, short_summary
from experiments.report.ranks import Ranking, cliques, ranking, rankings
from experiments.report.tables import (
    BASELINES,
    METRICS,
    VARIANT_ORDER,
    Group,
    format_ci,
    group_runs,
    is_proposed,
    provenance_fields,
    run_metrics,
    separated,
    split_variant,
    variant_sort_key,
)
from experiments.stats import paired_difference

__all__ = [
    "BASELINES",
    "COMMITTED_PLOTS",
    "COMMITTED_RECORDS",
    "COMMITTED_REPORT",
    "DEFAULT_NOTES",
    "MANIFEST_NAME",
    "METRICS",
    "VARIANT_ORDER",
    "Comparison",
    "Group",
    "Ranking",
    "RecordedRun",
    "ReportError",
    "UsageError",
    "ap_difference_by_frequency",
    "build_report",
    "cliques",
    "compare",
    "cutoff_label",
    "default_plots_dir",
    "forest_rows",
    "format_ci",
    "group_runs",
    "headline",
    "headline_family",
    "holm_sentence",
    "is_proposed",
    "main",
    "normalise_record",
    "others_family",
    "paired_difference",
    "paired_seed_count",
    "plot_ap_difference_vs_frequency",
    "plot_critical_difference",
    "plot_forest",
    "provenance_fields",
    "ranking",
    "rankings",
    "read_manifest",
    "read_runs",
    "resolve_outputs",
    "run_metrics",
    "separated",
    "short_summary",
    "split_variant",
    "variant_sort_key",
    "write_report",
]
