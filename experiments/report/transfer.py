"""The report's "Pretrained backbone" section: runs from scratch against runs fine-tuned from a
pretrained backbone (`python -m experiments.transfer`), on the same data and seeds.

A transfer run is one whose config draws a subset of the catalog's classes (`data.classes`) or
starts from a checkpoint (`model.init_from`). Such runs never enter the main tables (one table,
one recipe); they are compared here, per (tier, target classes, cut-off):

  target runs      the runs that a fine-tuned run's (tier, classes, cut-off) names: from scratch
                   (no `model.init_from`) and fine-tuned (with it), per variant and seed;
  source runs      the other transfer runs of that tier without `model.init_from` on classes
                   disjoint from the target's (the pretraining), summarised in one line.

Per variant: test mAP and tail-bucket mAP from scratch and fine-tuned (mean ± 95% t-interval over
seeds) and the per-seed paired difference fine-tuned − scratch; then, for `proposed` against the
baselines, the paired difference within each start, which says whether the pretrained backbone
changes the comparison. No transfer runs: no section, and the rest of the report is unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from experiments.report.loading import RecordedRun, classes_of, init_from_of, transfer_key
from experiments.report.tables import (
    BASELINES,
    CONFIDENCE,
    DASH,
    MIN_DIFFERENCE,
    format_ci,
    is_proposed,
    markdown_table,
    run_metrics,
    variant_sort_key,
)
from experiments.stats import mean_ci, paired_test

TITLE = "Pretrained backbone"
METRICS = (("mAP", "test mAP"), ("tail", "tail mAP"))


def is_transfer(run: RecordedRun) -> bool:
    return transfer_key(run.record) is not None


def _label_names(runs: Iterable[RecordedRun]) -> str:
    for run in runs:
        names = (run.record.get("data") or {}).get("label_names")
        if names:
            return ", ".join(names)
    return DASH


def _values(runs: Iterable[RecordedRun], metric: str) -> dict[int, float | None]:
    return {r.seed: run_metrics(r.record)[metric] for r in runs if r.finished}


def _paired(treatment, control) -> str:
    """treatment − control, paired by seed: the interval and the paired t p-value (uncorrected:
    a demonstration of 3 seeds, not a family the headline draws from)."""
    test = paired_test(treatment, control, CONFIDENCE)
    return format_ci(test.ci, signed=True, mark=True, p=test.p_t)


def _target_groups(runs: Sequence[RecordedRun]) -> dict[tuple, list[RecordedRun]]:
    """(tier, target classes, cut-off) -> its runs, for every target a fine-tuned run names."""
    targets = {(r.tier, classes_of(r.record), r.cutoff) for r in runs if init_from_of(r.record)}
    groups: dict[tuple, list[RecordedRun]] = defaultdict(list)
    for run in runs:
        key = (run.tier, classes_of(run.record), run.cutoff)
        if key in targets:
            groups[key].append(run)
    return groups


def _source_line(runs: Sequence[RecordedRun], tier: str, target: tuple[int, ...] | None) -> str:
    sources = [
        r
        for r in runs
        if r.tier == tier
        and init_from_of(r.record) is None
        and classes_of(r.record) is not None
        and not set(classes_of(r.record)) & set(target or ())
    ]
    if not sources:
        return "- Pretraining runs: none among these records."
    variants = ", ".join(sorted({f"`{r.variant}`" for r in sources}))
    classes = sorted({classes_of(r.record) for r in sources})
    ci = mean_ci(_values(sources, "mAP").values(), CONFIDENCE)
    return (
        f"- Pretraining: {variants} on the catalog of Fashion-MNIST classes "
        f"{' / '.join(str(list(c)) for c in classes)} ({_label_names(sources)}), cut-off "
        f"{', '.join(str(c) for c in sorted({r.cutoff for r in sources}))}; its own test mAP "
        f"{format_ci(ci)}."
    )


def transfer_section(runs: Sequence[RecordedRun]) -> list[str]:
    """The markdown lines of the section ([] when there are no fine-tuned runs)."""
    transfer = [r for r in runs if is_transfer(r)]
    groups = _target_groups(transfer)
    if not groups:
        return []
    lines = [
        f"## {TITLE}",
        "",
        "Each method trained on a long-tailed catalog twice per seed: from random "
        "initialisation (scratch) and from the backbone of a network pretrained on other "
        "Fashion-MNIST classes (fine-tuned; its head re-initialised), same data, schedule and "
        "seed otherwise. Mean ± 95% CI half-width over seeds (n); Δ is the per-seed paired "
        "difference fine-tuned − scratch. **Bold**: the interval excludes 0 and the difference "
        f"is at least {MIN_DIFFERENCE}. p: the paired t-test's, uncorrected (a demonstration of "
        "three seeds, not a family the headline draws from).",
        "",
    ]
    for tier, target, cutoff in sorted(groups, key=lambda k: (k[0], k[1] or (), k[2])):
        group = groups[(tier, target, cutoff)]
        scratch = [r for r in group if init_from_of(r.record) is None]
        tuned = [r for r in group if init_from_of(r.record) is not None]
        lines += [
            f"### {tier} tier, classes {list(target or ())}, cut-off {cutoff}",
            "",
            f"- Target: the long-tailed catalog of {_label_names(group)}.",
            _source_line(transfer, tier, target),
            "",
        ]
        header = ["variant"]
        for _, title in METRICS:
            header += [f"{title}, scratch", f"{title}, fine-tuned", f"Δ {title}"]
        rows = []
        variants = sorted({r.variant for r in group}, key=variant_sort_key)
        for variant in variants:
            row = [f"`{variant}`"]
            for metric, _ in METRICS:
                a = _values((r for r in scratch if r.variant == variant), metric)
                b = _values((r for r in tuned if r.variant == variant), metric)
                row += [
                    format_ci(mean_ci(a.values(), CONFIDENCE)),
                    format_ci(mean_ci(b.values(), CONFIDENCE)),
                    _paired(b, a),
                ]
            rows.append(row)
        lines += [*markdown_table(header, rows), ""]
        proposed = [v for v in variants if is_proposed(v)]
        baselines = [b for b in BASELINES if b in variants]
        if proposed and baselines:
            lines += [
                "Does the start change the comparison? Per-seed paired difference proposed − "
                "baseline within each start:",
                "",
            ]
            header = ["comparison"]
            for _, title in METRICS:
                header += [f"Δ {title}, scratch", f"Δ {title}, fine-tuned"]
            rows = []
            for variant in proposed:
                for baseline in baselines:
                    row = [f"`{variant}` − `{baseline}`"]
                    for metric, _ in METRICS:
                        for runs_of_start in (scratch, tuned):
                            treat = _values(
                                (r for r in runs_of_start if r.variant == variant), metric
                            )
                            base = _values(
                                (r for r in runs_of_start if r.variant == baseline), metric
                            )
                            row.append(_paired(treat, base))
                    rows.append(row)
            lines += [*markdown_table(header, rows), ""]
    return lines
