"""The benchmark's reference rows and replicates: the `linear` floor, the `balanced` ceiling,
data seeds drawn per replicate, the catalog augmentation, and a report that never mixes recipes."""

from __future__ import annotations

import copy
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import augment, configs, report, sweep
from experiments.configs import validate
from experiments.models import Linear, create_model, parameter_count
from experiments.report.tables import group_runs
from experiments.runs import expand_runs
from tests.test_report import make_record, table_row, write_record

# --------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize("tier, head", [("cpu", 1000), ("smoke", 60), ("gpu", 2000)])
def test_balanced_ceiling_trains_at_the_head_count(tier, head):
    config = configs.get_config("catalog_balanced", tier=tier)
    assert config.data.head_count == head and list(config.cutoffs) == [head]
    assert config.scheme == "none" and config.model.name == "resnet"
    validate.check(config)


def test_linear_floor_keeps_the_network_recipe_but_a_linear_model():
    floor, none = configs.get_config("catalog_linear"), configs.get_config("catalog_none")
    assert floor.model.name == "linear"
    for field in ("num_epochs", "batch_size", "learning_rate", "augment", "cutoffs", "seeds"):
        assert floor[field] == none[field], field


def test_balanced_exists_only_where_the_data_has_a_head_count():
    names = configs.list_configs()
    assert "catalog_balanced" in names and "catalog_step_balanced" in names
    assert "sleevetype_balanced" not in names and "sleevetype_linear" in names
    with pytest.raises(ValueError, match=r"head count.*catalog, catalog_step"):
        configs.get_config("sleevetype_balanced")


def test_balanced_with_another_cutoff_is_refused():
    config = configs.get_config("catalog_balanced")
    config.cutoffs = [6]
    with pytest.raises(ValueError, match=r"cutoffs must be \[data.head_count\] = \[1000\]"):
        validate.check(config)


def test_cells_augmentation_is_refused_for_photos():
    config = configs.get_config("sleevetype_none")
    config.augment = "cells"
    with pytest.raises(ValueError, match=r"augment 'cells'.*use 'flip'"):
        validate.check(config)


def test_each_replicate_draws_its_own_data_unless_fixed():
    config = configs.get_config("catalog_none", tier="smoke")
    config.seeds = [0, 3]
    assert config.data.seed is None
    assert [(r.seed, r.config.data.seed) for r in expand_runs(config)] == [(0, 0), (3, 3)]
    config.data.seed = 7
    assert [r.config.data.seed for r in expand_runs(config)] == [7, 7]


def test_sweep_runs_replicate_by_replicate_ceiling_first():
    runs = sweep.sweep_runs(["catalog"], tier="smoke", records="/nonexistent", seeds=[0, 1])
    seeds = [r.seed for r in runs]
    assert seeds == sorted(seeds)
    first = [r for r in runs if r.seed == 0]
    assert first[0].config.method == "balanced" and first[0].cutoff == 60
    assert {r.config.method for r in first} == {m for m in sweep.methods.METHODS}


# --------------------------------------------------------------------------------------------
# The linear model


def test_linear_model_is_affine_in_standardised_pixels():
    model = create_model({"name": "linear", "stage_sizes": [1], "num_filters": 8}, 3)
    assert isinstance(model, Linear)
    x = jax.random.uniform(jax.random.PRNGKey(0), (16, 4, 4, 1))
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    variables = {"params": variables["params"], **updates}
    stats = variables["batch_stats"]["standardise"]
    # By hand: running statistics after one step with momentum 0.9 from (0, 1).
    flat = np.asarray(x).reshape(16, -1)
    np.testing.assert_allclose(stats["mean"], 0.1 * flat.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * flat.var(0), rtol=1e-5)
    kernel = np.asarray(variables["params"]["head"]["kernel"])
    bias = np.asarray(variables["params"]["head"]["bias"])
    expected = (flat - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) @ kernel + bias
    logits = model.apply(variables, x, train=False)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_parameter_count_by_hand():
    # Linear on 4 x 4 x 1 pixels, 3 labels: a 16 x 3 kernel and 3 biases.
    assert parameter_count({"name": "linear"}, 3, (4, 4, 1)) == 16 * 3 + 3
    # ResNet [1], 4 filters, 3x3 stem, 1 channel: stem 9*4 + BN 8; block: 2 convs 9*4*4 + 2 BN 8;
    # head 4*2 + 2.
    model = {"stage_sizes": [1], "num_filters": 4, "small_input": True}
    assert parameter_count(model, 2, (8, 8, 1)) == 36 + 8 + 2 * 144 + 2 * 8 + 10


# --------------------------------------------------------------------------------------------
# Augmentation


def _cells(image):
    return [image[:2, :2], image[:2, 2:], image[2:, :2], image[2:, 2:]]


def test_shuffle_cells_moves_whole_items_and_mirrors_them():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (32, 4, 4, 1)), jnp.uint8)
    out = np.asarray(augment.shuffle_cells(images, jax.random.PRNGKey(0)))
    moved = mirrored = 0
    for before, after in zip(np.asarray(images), out, strict=True):
        source = _cells(before)
        candidates = source + [c[:, ::-1] for c in source]
        used = []
        for i, cell in enumerate(_cells(after)):
            match = [k for k, c in enumerate(candidates) if np.array_equal(c, cell)]
            assert match, "an output cell is not an input item (or its mirror)"
            used.append(match[0] % 4)
            moved += match[0] % 4 != i
            mirrored += match[0] >= 4
        assert sorted(used) == [0, 1, 2, 3]  # each item exactly once
    assert moved > 0 and mirrored > 0  # it does something, both ways


def test_flip_mirrors_whole_images():
    images = jnp.asarray(np.random.default_rng(1).integers(0, 255, (8, 4, 4, 2)), jnp.uint8)
    out = np.asarray(augment.flip(images, jax.random.PRNGKey(1)))
    kinds = [
        "same" if np.array_equal(o, i) else "mirror"
        for o, i in zip(out, np.asarray(images), strict=True)
        if np.array_equal(o, i) or np.array_equal(o, np.asarray(i)[:, ::-1])
    ]
    assert len(kinds) == 8 and set(kinds) == {"same", "mirror"}


def test_unknown_augmentation_lists_the_valid_ones():
    with pytest.raises(ValueError, match="none, flip, cells"):
        augment.get_augment("rotate")


# --------------------------------------------------------------------------------------------
# The report's reference rows and recipes


def _record(variant, seed, cutoff=6, **kwargs):
    record = make_record(variant=variant, seed=seed, cutoff=cutoff, **kwargs)
    record["config_name"] = f"catalog_{variant.split('(')[0]}"
    model = {"name": "linear" if variant == "linear" else "resnet", "stage_sizes": [1, 1, 1]}
    record["config"].update(model=model, num_epochs=30, batch_size=128, learning_rate=0.02)
    return record


def _reference_records():
    # Long-tailed runs: labels 0 head, 1-2 medium, 3 tail (make_record's buckets).
    out = []
    for seed, (none, floor, ceiling) in enumerate([(0.50, 0.30, 0.90), (0.60, 0.34, 0.80)]):
        out.append(_record("none", seed, mAP=none))
        out.append(_record("linear", seed, mAP=floor))
        # The ceiling: per-label AP on its balanced data (every label at the head count).
        ap = [0.95, 0.85, 0.75, 0.65] if seed == 0 else [0.9, 0.8, 0.6, 0.5]
        out.append(
            _record("balanced", seed, cutoff=1000, mAP=ceiling, ap=ap, train_positives=[1000] * 4)
        )
    return out


def test_report_renders_floor_and_ceiling_rows(tmp_path):
    root = tmp_path / "runs"
    for record in _reference_records():
        write_record(root, record)
    out = tmp_path / "REPORT.md"
    report.write_report(root, out, tmp_path / "plots", None)
    md = out.read_text(encoding="utf-8")
    # One column (cut-off 6): the ceiling's balanced data is not a cut-off of its own.
    assert "| variant | cut-off 6 |" in md and "cut-off 1000" not in md

    # Means and 95% t intervals by hand: t(0.975, 1) = 12.7062; half-width t * sd / sqrt(2).
    def ci(a, b):
        return f"{(a + b) / 2:.3f} ± {12.7062 * abs(a - b) / 2:.3f} (n=2)"

    heading = "#### mAP (all labels)"
    assert table_row(md, heading, "`linear` (floor: linear model)") == [ci(0.30, 0.34)]
    assert table_row(md, heading, "`none`") == [ci(0.50, 0.60)]
    assert table_row(md, heading, "`balanced` (ceiling: balanced data)") == [ci(0.90, 0.80)]
    # Ceiling bucket mAP: its AP on the labels in that bucket at cut-off 6, same seed.
    assert table_row(md, "#### medium mAP", "`balanced` (ceiling: balanced data)") == [
        ci((0.85 + 0.75) / 2, (0.8 + 0.6) / 2)
    ]
    assert table_row(md, "#### tail mAP", "`balanced` (ceiling: balanced data)") == [ci(0.65, 0.5)]
    rows = [
        line.split("|")[1].strip() for line in md.split(heading)[1].split("\n\n")[1].splitlines()
    ]
    assert rows[2] == "`linear` (floor: linear model)" and rows[-1].startswith("`balanced`")
    regime = next(line for line in md.splitlines() if line.startswith("- Regime:"))
    assert "30 epochs" in regime and "batch 128" in regime
    assert f"Balanced ceiling mAP {ci(0.90, 0.80)}" in regime
    assert f"Linear floor mAP cut-off 6: {ci(0.30, 0.34)}" in regime
    # none - floor, paired per seed: 0.20 and 0.26, above the 0.05 margin.
    margin = next(line for line in md.splitlines() if line.startswith("- `none` − linear floor"))
    # Its paired t-test has 1 degree of freedom, where t is Cauchy: p = 1 - (2 / pi) atan(|t|).
    t = 0.23 / (math.sqrt(((0.20 - 0.23) ** 2 + (0.26 - 0.23) ** 2) / 1) / math.sqrt(2))
    p = 1 - 2 / math.pi * math.atan(t)
    assert margin == (
        f"- `none` − linear floor, mAP (paired; p: paired t-test): cut-off 6: "
        f"+{ci(0.20, 0.26)[:-1]}, p={p:.3f})."
    )


def test_report_flags_cutoffs_where_none_barely_beats_the_floor(tmp_path):
    root = tmp_path / "runs"
    records = _reference_records()
    for record in records:
        if record["variant"] == "linear":  # floors 0.46 and 0.58: paired margins 0.04 and 0.02
            record["test"]["mAP"] = {0: 0.46, 1: 0.58}[record["seed"]]
        write_record(root, record)
    report.write_report(root, tmp_path / "REPORT.md", tmp_path / "plots", None)
    md = (tmp_path / "REPORT.md").read_text(encoding="utf-8")
    margin = next(line for line in md.splitlines() if line.startswith("- `none` − linear floor"))
    # t(0.975, 1) * 0.01 = 0.127; t = 0.03 / 0.01 = 3 with 1 degree of freedom (Cauchy):
    # p = 1 - (2 / pi) atan(3) = 0.205.
    assert "cut-off 6: +0.030 ± 0.127 (n=2, p=0.205)" in margin
    assert "Below the 0.05 margin of a fitted regime at cut-off 6" in margin


def test_report_refuses_to_mix_recipes(tmp_path):
    records = _reference_records()
    changed = copy.deepcopy(records[0])
    changed["seed"] = 5
    changed["config"]["num_epochs"] = 12
    root = tmp_path / "runs"
    for record in [*records, changed]:
        write_record(root, record)
    with pytest.raises(report.ReportError, match=r"mix recipes.*num_epochs 30 vs 12"):
        report.write_report(root, tmp_path / "REPORT.md", tmp_path / "plots", None)
    assert not (tmp_path / "REPORT.md").exists()


def test_reference_rows_are_not_compared_variants():
    runs = [
        report.RecordedRun(f"r{i}", report.normalise_record(r))
        for i, r in enumerate(_reference_records())
    ]
    (group,) = group_runs(runs)
    assert group.variants == ["none"] and group.references == ["linear", "balanced"]
    assert group.cutoffs == [6]


def test_a_sweep_run_names_its_own_recovery_command():
    from experiments import execute

    runs = sweep.sweep_runs(["catalog"], tier="smoke", records="out", seeds=[1])
    run = next(r for r in runs if r.config.method == "proposed")
    command = execute.recovery_command(execute.run_argv(run), run)
    assert command.startswith("python -m experiments.run --config catalog_proposed --tier smoke")
    assert "--output-dir out/smoke --seeds 1 --cutoffs 6" in command
    assert "--set scheme_params.beta=" in command and command.endswith("--force")
    assert execute.resume_command(["--jobs", "2"], "experiments.sweep") == (
        "python -m experiments.sweep --jobs 2"
    )
