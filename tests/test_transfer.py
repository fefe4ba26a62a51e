"""The transfer demonstration: the catalog's class subsets, the plan of runs, and its table.

Class subsets are checked on synthetic items whose pixel value encodes their Fashion-MNIST class
(as in test_catalog.py), so labels can be compared with what the cells show.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments import configs
from experiments.configs import validate
from experiments.data import catalog
from experiments.data import fashion_mnist as fm
from experiments.records import ADDED_FIELD_DEFAULTS


def synthetic_items(per_class: int, seed: int):
    """Constant items: item i of class c has value 10 + 20 c + (i mod 7)."""
    classes = np.random.default_rng(seed).permutation(np.repeat(np.arange(10), per_class))
    values = 10 + 20 * classes + np.arange(len(classes)) % 7
    items = np.broadcast_to(values[:, None, None], (len(classes), 28, 28)).astype(np.uint8)
    return items, classes.astype(np.uint8)


TRAIN_ITEMS, TRAIN_CLASSES = synthetic_items(400, seed=1)
TEST_ITEMS, TEST_CLASSES = synthetic_items(100, seed=2)
SMALL = dict(head_count=200, test_positives=50)


@pytest.fixture
def synthetic_source(monkeypatch, tmp_path):
    def fake_load(**kwargs):
        return fm.FashionMNIST(
            TRAIN_ITEMS, TRAIN_CLASSES, TEST_ITEMS, TEST_CLASSES, {"dataset": "synthetic"}
        )

    monkeypatch.setattr(catalog, "load_fashion_mnist", fake_load)
    monkeypatch.setenv("LTWEIGHTS_CACHE", str(tmp_path / "cache"))


def shown_classes(images: np.ndarray) -> list[set[int]]:
    """The Fashion-MNIST classes each image's cells show, read from the pixel values."""
    s = images.shape[1] // 2
    quadrants = images[..., 0].reshape(len(images), 2, s, 2, s).transpose(0, 1, 3, 2, 4)
    values = quadrants.reshape(len(images), 4, -1)[:, :, 0].astype(int)
    return [{(v - 10) // 20 for v in row if v} for row in values]


# --------------------------------------------------------------------------------------------
# data.classes


@pytest.mark.parametrize("loader", [catalog.load_catalog, catalog.load_catalog_step])
def test_classes_draw_only_those_items_and_reduce_the_labels(synthetic_source, loader):
    classes = [7, 1, 9, 3, 5]  # any order: label j is class classes[j]
    extra = {"num_tail_classes": 2} if loader is catalog.load_catalog_step else {}
    splits = loader(cutoff=6, seed=3, classes=classes, **SMALL, **extra)
    for dataset in splits:
        assert dataset.labels.shape[1] == 5
        assert dataset.label_names == tuple(fm.CLASS_NAMES[c] for c in classes)
        shown = shown_classes(dataset.images)
        assert set().union(*shown) == set(classes)  # every chosen class, and no other
        for row, labels in zip(shown, dataset.labels, strict=True):
            assert {classes[j] for j in np.flatnonzero(labels)} == row
    counts = splits.train.label_counts()
    assert counts.max() == 200 and counts.min() == 6 and len(counts) == 5
    assert splits.test.label_counts().tolist() == [50] * 5
    prov = splits.train.provenance
    assert prov["params"]["classes"] == classes
    assert prov["label_names"] == [fm.CLASS_NAMES[c] for c in classes]
    assert len(prov["class_order"]) == 5


def test_all_ten_classes_is_the_default_build_and_none_keeps_its_cache_key(synthetic_source):
    default = catalog.load_catalog(cutoff=6, seed=1, use_cache=False, **SMALL)
    every = catalog.load_catalog(
        cutoff=6, seed=1, classes=list(range(10)), use_cache=False, **SMALL
    )
    for a, b in zip(default, every, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert "classes" not in default.train.provenance["params"]  # the key it always had
    assert default.train.label_names == fm.CLASS_NAMES


def test_disjoint_class_lists_share_no_item(synthetic_source):
    a = catalog.load_catalog(cutoff=1000 // 5, seed=0, classes=[0, 2, 4, 6, 8], **SMALL)
    b = catalog.load_catalog(cutoff=6, seed=0, classes=[1, 3, 5, 7, 9], **SMALL)
    for x, y in zip(a, b, strict=True):
        assert not set(np.unique(x.images)) - {0} & set(np.unique(y.images)) - {0}


@pytest.mark.parametrize(
    "classes, words",
    [
        ([1, 2, 3], "needs at least 4"),
        ([1, 1, 2, 3], "repeats [1]"),
        ([0, 1, 2, 10], "not Fashion-MNIST class indices 0..9"),
        ([-1, 1, 2, 3], "not Fashion-MNIST class indices"),
        ([0, 1, 2, 3.5], "not Fashion-MNIST class indices"),
        ([0, 1, 2, True], "not Fashion-MNIST class indices"),
        ("1,3,5,7", "must be a list"),
        (5, "must be a list"),
    ],
)
def test_bad_classes_are_clear_errors(synthetic_source, classes, words):
    with pytest.raises(ValueError) as e:
        catalog.load_catalog(cutoff=6, classes=classes, **SMALL)
    assert words in str(e.value) and "data.classes" in str(e.value)
    config = configs.get_config("catalog_none")
    config.data.classes = classes
    assert any(words in line for line in validate.problems(config))


def test_classes_is_a_catalog_data_field_recorded_like_the_others():
    for name in ("catalog_none", "catalog_step_proposed", "catalog_balanced_smoke"):
        config = configs.get_config(name)
        assert config.data.classes is None
        assert validate.problems(config) == []
    assert "classes" not in configs.get_config("sleevetype_none").data
    assert ADDED_FIELD_DEFAULTS["data.classes"] is None
    config = configs.get_config("catalog_none")
    config.data.classes = [1, 3, 5, 7, 9]
    assert validate.problems(config) == []


# --------------------------------------------------------------------------------------------
# The plan of the demonstration


def test_the_plan_pretrains_on_one_half_and_compares_starts_on_the_other(tmp_path):
    from experiments import transfer
    from experiments.records import json_safe_config
    from experiments.runs import config_differences

    assert set(transfer.SOURCE_CLASSES) | set(transfer.TARGET_CLASSES) == set(range(10))
    assert not set(transfer.SOURCE_CLASSES) & set(transfer.TARGET_CLASSES)
    records = str(tmp_path / "records")
    phase1, phase2 = transfer.plan_legs(tier="cpu", records=records, seeds=[0, 1, 2])
    source, *scratch = phase1
    assert [leg.name for leg in phase1] == ["source", "scratch", "scratch", "scratch"]
    assert len(source.runs) == 3
    for r in source.runs:
        assert r.config.method == "balanced" and r.config.scheme == "none"
        assert list(r.config.data.classes) == [0, 2, 4, 6, 8]
        assert r.cutoff == r.config.data.head_count == 1000 and r.config.tier == "cpu"
        assert r.config.model.init_from is None
        assert r.workdir == (
            tmp_path
            / "records/transfer/cpu/source/catalog_balanced/balanced/cutoff1000"
            / f"seed{r.seed}"
        )
    by_start = {"scratch": {}, "pretrained": {}}
    for leg in scratch + phase2:
        for r in leg.runs:
            assert list(r.config.data.classes) == [1, 3, 5, 7, 9] and r.cutoff == 6
            by_start[leg.name][(r.config.method, r.seed)] = r
    assert (
        sorted(by_start["scratch"])
        == sorted(by_start["pretrained"])
        == [(m, s) for m in ("inverse", "none", "proposed") for s in (0, 1, 2)]
    )
    assert len(phase2) == 9 and all(len(leg.runs) == 1 for leg in phase2)
    pretrain_of = {r.seed: r.workdir for r in source.runs}
    for (method, seed), tuned in by_start["pretrained"].items():
        plain = by_start["scratch"][(method, seed)]
        assert plain.config.model.init_from is None
        assert tuned.config.model.init_from == str(pretrain_of[seed])
        assert tuned.variant == plain.variant and tuned.workdir != plain.workdir
        assert "/transfer/cpu/pretrained/" in str(tuned.workdir)
        # Only the start differs (and where the records go).
        differ = config_differences(json_safe_config(plain.config), json_safe_config(tuned.config))
        assert differ == ["model.init_from"]
        assert (tuned.config.backbone_lr_scale, tuned.config.freeze_backbone_epochs) == (1.0, 0.0)
        if method == "proposed":
            assert tuned.variant == "proposed(beta=0.999)"
            assert tuned.config.scheme_params.beta == 0.999


def test_a_fine_tuned_runs_recovery_command_repeats_its_overrides(tmp_path):
    from experiments import execute, transfer
    from experiments.configs import overrides

    _, phase2 = transfer.plan_legs(tier="smoke", records=str(tmp_path), seeds=[1])
    (tuned,) = phase2[0].runs
    command = execute.recovery_command(execute.run_argv(tuned), tuned)
    assert command.startswith("python -m experiments.run --config catalog_none --tier smoke")
    assert "--seeds 1 --cutoffs 6" in command and command.endswith("--force")
    assert "'data.classes=[1, 3, 5, 7, 9]'" in command
    # The overrides parse back to the run's own values.
    parsed = dict(
        overrides.parse_override(a)
        for a in __import__("shlex").split(command)
        if a.startswith(("data.classes=", "model.init_from="))
    )
    assert parsed == {
        "data.classes": [1, 3, 5, 7, 9],
        "model.init_from": tuned.config.model.init_from,
    }


def test_dry_run_prints_both_phases_and_the_time(tmp_path, capsys):
    from experiments import transfer

    code = transfer.main(
        ["--dry-run", "--tier", "smoke", "--jobs", "2", "--records", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "phase 1: pretraining and from scratch" in out
    assert "phase 2: fine-tuned from the pretraining run of the same seed" in out
    assert out.count("catalog_balanced balanced cutoff=60") == 3  # smoke head count
    # 12 runs in phase 1 and 9 in phase 2, 2 at a time: 6 + 5 rounds of 5 s (the smoke tier).
    assert "21 of 21 runs would train (12 in phase 1, 9 in phase 2), 2 at a time" in out
    assert "(55 s)" in out
    assert not (tmp_path / "transfer").exists()  # a dry run writes nothing


def test_the_cpu_demonstration_fits_in_half_an_hour():
    from experiments import transfer

    # 3 seeds: phase 1 = 3 pretraining + 9 scratch, phase 2 = 9 fine-tuned; 2 jobs.
    seconds = transfer.estimate_seconds([12, 9], "cpu", 2)
    assert seconds == (6 + 5) * transfer.DEMO_SCHEDULES["cpu"].seconds_per_run
    assert seconds * 120 / 90 <= 30 * 60  # even at 120 s a run


def test_the_cpu_demonstration_keeps_its_24_epochs_and_its_committed_records():
    from experiments import transfer
    from experiments.runs import plan_action

    # Phase 1 (pretraining and scratch legs): phase 2 needs the pretraining checkpoints, which
    # are never committed.
    legs = [
        transfer.make_leg(leg, m, tier="cpu", records="results/runs", seeds=[0, 1, 2])
        for leg, m in [("source", transfer.PRETRAIN_METHOD)]
        + [("scratch", m) for m in transfer.METHODS]
    ]
    runs = [r for leg in legs for r in leg.runs]
    assert len(runs) == 12 and {r.config.num_epochs for r in runs} == {24}
    # The committed demonstration was trained at 24 epochs: every run is a finished record of
    # the same config, not a conflict with the tier's 48 epochs.
    assert {plan_action(r, force=False)[0] for r in runs} == {"skip"}
    assert ("num_epochs", 24) in transfer.schedule_overrides("cpu")
    # And the whole command plans on them without the checkpoints: nothing left to train.
    _, phase2 = transfer.plan_legs(tier="cpu", records="results/runs", seeds=[0, 1, 2])
    later = [r for leg in phase2 for r in leg.runs]
    assert len(later) == 9 and {plan_action(r, force=False)[0] for r in later} == {"skip"}
    assert transfer.schedule_overrides("smoke") == []


def test_fine_tuned_legs_are_validated_once_their_pretraining_has_finished(tmp_path, monkeypatch):
    from experiments import plan, pretrained, transfer
    from experiments.atomic import atomic_write_json

    # The source below is an empty stand-in for a run's checkpoint; validation opens and checks
    # a real one (tests/test_pretrained.py), so that check is left out here.
    monkeypatch.setattr(pretrained, "source_problems", lambda model_config, **_: [])
    records = str(tmp_path)
    checked = []
    real = plan.resolve_config
    monkeypatch.setattr(plan, "resolve_config", lambda args: checked.append(args) or real(args))

    def validated_fine_tuned_legs():
        checked.clear()
        transfer.plan_legs(tier="smoke", records=records, seeds=[0])
        return [a for a in checked if any(p == "model.init_from" for p, _ in a.overrides)]

    assert validated_fine_tuned_legs() == []  # the source folder does not exist yet
    phase1, _ = transfer.plan_legs(tier="smoke", records=records, seeds=[0])
    source = phase1[0].runs[0]
    atomic_write_json(source.record_path, {"schema_version": 2, "status": "finished"})
    (source.workdir / "checkpoints" / "1" / "state").mkdir(parents=True)  # what a run leaves
    assert len(validated_fine_tuned_legs()) == 3  # none, inverse, proposed


# --------------------------------------------------------------------------------------------
# The report's "Pretrained backbone" section, from synthetic records

# Per seed 0, 1, 2 (target classes [1, 3, 5, 7, 9], cut-off 6):
#   none      scratch mAP 0.50 0.60 0.70 -> 0.600, s = 0.1, half-width t(0.975, 2) 0.1/sqrt(3)
#             = 4.302653 x 0.057735 = 0.248
#             fine-tuned 0.55 0.70 0.76 -> 0.670, s = sqrt(0.0234/2) = 0.108167, hw = 0.269
#             paired diff 0.05 0.10 0.06 -> 0.070, s = sqrt(0.0014/2) = 0.026458, hw = 0.066
#             tail: scratch 0.2 each, fine-tuned 0.3 each -> diff 0.100 ± 0.000 (excludes 0)
#   proposed  scratch mAP = none's + 0.02 every seed; fine-tuned = none's fine-tuned - 0.01
#             -> proposed - none: +0.020 ± 0.000 from scratch, -0.010 ± 0.000 fine-tuned
# The main sweep's none at cut-off 6 (all ten classes): 0.40 on seeds 0-2.
TARGET = [1, 3, 5, 7, 9]
NONE_SCRATCH = {0: 0.50, 1: 0.60, 2: 0.70}
NONE_TUNED = {0: 0.55, 1: 0.70, 2: 0.76}


def transfer_record(variant, seed, mAP, tail, *, classes=TARGET, init_from=None, cutoff=6):
    from tests.test_report import make_v2_record

    record = make_v2_record(variant=variant, seed=seed, cutoff=cutoff, mAP=mAP, tail=tail)
    record["config"]["data"]["classes"] = classes
    record["config"]["model"] = {"init_from": init_from}
    record["data"]["label_names"] = [f"class{c}" for c in classes][:4]
    return record


def write_transfer_records(root):
    from tests.test_report import make_v2_record, write_record

    for seed in range(3):
        source = f"runs/transfer/cpu/source/catalog_balanced/balanced/cutoff1000/seed{seed}"
        write_record(root / "cpu", make_v2_record(variant="none", seed=seed, mAP=0.40))
        write_record(
            root / "transfer/source",
            transfer_record("balanced", seed, 0.9, None, classes=[0, 2, 4, 6, 8], cutoff=1000),
        )
        for variant, shift in (("none", 0.0), ("proposed(beta=0.999)", 0.02)):
            write_record(
                root / "transfer/scratch",
                transfer_record(variant, seed, NONE_SCRATCH[seed] + shift, 0.2),
            )
        for variant, shift in (("none", 0.0), ("proposed(beta=0.999)", -0.01)):
            write_record(
                root / "transfer/pretrained",
                transfer_record(variant, seed, NONE_TUNED[seed] + shift, 0.3, init_from=source),
            )


def report_text(root):
    from experiments import report

    runs = report.read_runs(root)
    text, _, _ = report.build_report(
        runs, records_dir=root, out=root.parent / "R.md", plots_dir=root.parent / "plots"
    )
    return text


def test_pretrained_backbone_table_from_synthetic_records(tmp_path):
    from tests.test_report import table_row

    root = tmp_path / "runs"
    write_transfer_records(root)
    text = report_text(root)
    assert text.count("## Pretrained backbone") == 1
    assert "### cpu tier, classes [1, 3, 5, 7, 9], cut-off 6" in text
    section = text[text.index("## Pretrained backbone") : text.index("## Runs and compute")]
    heading = "### cpu tier, classes [1, 3, 5, 7, 9], cut-off 6"
    assert table_row(section, heading, "`none`") == [
        "0.600 ± 0.248 (n=3)",
        "0.670 ± 0.269 (n=3)",
        # Differences 0.05, 0.10, 0.06: t = 4.583 with 2 degrees of freedom, whose two-sided
        # p is 1 - t / sqrt(t^2 + 2) = 0.044; equal differences have no spread: p < 0.001.
        "**+0.070 ± 0.066** (n=3, p=0.044)",
        "0.200 ± 0.000 (n=3)",
        "0.300 ± 0.000 (n=3)",
        "**+0.100 ± 0.000** (n=3, p<0.001)",
    ]
    comparison = table_row(
        section,
        "Does the start change the comparison? Per-seed paired difference proposed − baseline "
        "within each start:\n",
        "`proposed(beta=0.999)` − `none`",
    )
    assert comparison == [
        "**+0.020 ± 0.000** (n=3, p<0.001)",
        "**-0.010 ± 0.000** (n=3, p<0.001)",
        "+0.000 ± 0.000 (n=3, p=1.000)",  # the tails are equal: no difference, not marked
        "+0.000 ± 0.000 (n=3, p=1.000)",
    ]
    assert "Pretraining: `balanced` on the catalog of Fashion-MNIST classes [0, 2, 4, 6, 8]" in (
        section
    )
    assert "its own test mAP 0.900 ± 0.000 (n=3)" in section
    # The main tables hold the main sweep's runs only: none at cut-off 6 is 0.400, n=3.
    main = text[: text.index("## Pretrained backbone")]
    assert table_row(main, "#### mAP (all labels)", "`none`") == ["0.400 ± 0.000 (n=3)"]
    assert "catalog (cpu tier): 30 s (0.5 min) over 3 runs" in text  # of 18 records
    assert "- Runs: 18 (18 finished, 0 failed)." in text


def test_no_transfer_records_no_section(tmp_path):
    from tests.test_report import make_v2_record, write_record

    root = tmp_path / "runs"
    for seed in range(2):
        write_record(root, make_v2_record(variant="none", seed=seed))
    text = report_text(root)
    assert "Pretrained backbone" not in text
    # A class subset without fine-tuned runs is kept out of the main tables but has no table.
    write_record(root / "subset", transfer_record("none", 0, 0.9, 0.2))
    assert report_text(root).count("Pretrained backbone") == 0
