"""Prose of the report: the headline's sentences, each a template filled from the numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from experiments.configs import tasks
from experiments.report.comparisons import UNWEIGHTED, holm_sentence
from experiments.report.ranks import ranks_sentence
from experiments.report.tables import (
    BASELINES,
    CEILING,
    FLOOR,
    MAP_METRICS,
    METRICS,
    Group,
    cell_name,
    format_ci,
    interval_words,
    is_proposed,
    separated,
)
from experiments.stats import MeanCI
from experiments.words import count

# How far the unweighted network must clear the linear floor (mean paired mAP) before its
# comparisons describe a network that has learned more than a linear model of the pixels.
FLOOR_MARGIN = 0.05


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
        sentence += f"; largest gain {interval_words(ci)} for {cell_name(v, c)}"
    if result.lower:
        v, c, ci = min(result.lower, key=lambda t: (t[2].mean, t[1]))
        sentence += f"; largest loss {interval_words(ci)} for {cell_name(v, c)}"
    return sentence + "."


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


def describe_model(model: dict, num_params: int | None) -> str:
    """'ResNet [1, 1, 1] (basic blocks, 8 filters; 20,234 parameters)' from a config's model."""
    if model.get("name", "resnet") != "resnet":
        shape = str(model.get("name"))
    else:
        shape = (
            f"ResNet {list(model.get('stage_sizes') or [])} ({model.get('block', 'basic')} "
            f"blocks, {model.get('num_filters')} filters"
        )
        shape += f"; {num_params:,} parameters)" if num_params else ")"
    return shape


def regime_sentence(group: Group) -> str | None:
    """The regime in one line: network, schedule, the ceiling and the floor with intervals."""
    networks = [r for r in group.finished if r.method != FLOOR]
    if not networks:
        return None
    config = networks[0].record["config"]
    model = config.get("model") or {}
    num_params = network_parameters(networks[0])
    parts = [describe_model(model, num_params)] if model else []
    schedule = (
        ("num_epochs", "{} epochs"),
        ("batch_size", "batch {}"),
        ("learning_rate", "peak learning rate {:g}"),
        ("augment", "augmentation '{}'"),
    )
    parts += [
        template.format(config[key])
        for key, template in schedule
        if config.get(key) is not None and config.get(key) != "none"
    ]
    text = f"Regime: {', '.join(parts) or 'not recorded'}."
    if CEILING in group.references and group.cutoffs:
        ceiling = group.cell(CEILING, group.cutoffs[0], "mAP")
        text += f" Balanced ceiling mAP {format_ci(ceiling)}."
    if FLOOR in group.references:
        floors = "; ".join(
            f"cut-off {c}: {format_ci(group.cell(FLOOR, c, 'mAP'))}" for c in group.cutoffs
        )
        text += f" Linear floor mAP {floors}."
    return text


def floor_margin_sentence(group: Group) -> str | None:
    """`none` minus the linear floor (paired, mAP) at every cut-off, and where it falls short of
    FLOOR_MARGIN: there a weighting's gains are measured on a network that a linear model of the
    pixels nearly matches."""
    if FLOOR not in group.references or UNWEIGHTED not in group.variants or not group.cutoffs:
        return None
    tests = {c: group.test(UNWEIGHTED, FLOOR, c, "mAP") for c in group.cutoffs}
    text = "`none` − linear floor, mAP (paired; p: paired t-test): " + "; ".join(
        f"cut-off {c}: {format_ci(t.ci, signed=True, p=t.p_t)}" for c, t in tests.items()
    )
    short = [str(c) for c, t in tests.items() if t.ci.mean is not None and t.ci.mean < FLOOR_MARGIN]
    if short:
        text += (
            f". Below the {FLOOR_MARGIN:g} margin of a fitted regime at cut-off "
            f"{', '.join(short)}: there the network is not clearly better than a linear model "
            "of the pixels"
        )
    return text + "."


def network_parameters(run) -> int | None:
    """The parameter count of a run's network, from its config and data (None if unknown)."""
    from experiments.models import parameter_count  # deferred: Flax, only for this line

    config, data = run.record["config"], run.record["data"]
    task = tasks.TASKS.get(run.task)
    size = (config.get("data") or {}).get("image_size")
    if task is None or not size or not data.get("label_names"):
        return None
    channels = 1 if task.fashion_mnist_items else 3
    try:
        return parameter_count(config["model"], len(data["label_names"]), (size, size, channels))
    except (ValueError, TypeError, KeyError):
        return None


def headline(group: Group) -> list[str]:
    """Plain-language, templated findings for one (tier, task)."""
    lines = [line for line in (regime_sentence(group), floor_margin_sentence(group)) if line]
    lines += [
        f"{count(len(group.variants), 'variant')}, cut-offs {', '.join(map(str, group.cutoffs))}, "
        f"{count(len(group.seeds), 'seed')} with finished runs; "
        f"{count(len(group.finished), 'finished run')}"
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
    if proposed and (corrected := holm_sentence(group)):
        lines.append(corrected)
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
    if ranks := ranks_sentence(group):
        lines.append(ranks)
    return lines
