"""Tests of `python -m experiments.report` on synthetic run records written in the schema of
experiments.records (version 1, and version 2 where said). Expected numbers are computed by hand
in the comments."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pytest

from experiments import records, report
from experiments.atomic import atomic_write_json

SHA = "3f2a9c1be0d47f6a8b5c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a"
NUM_LABELS = 4


def make_record(
    *,
    variant: str = "none",
    seed: int = 0,
    cutoff: int = 6,
    task: str = "catalog",
    tier: str = "cpu",
    status: str = "finished",
    mAP: float | None = 0.5,
    head: float | None = 0.6,
    medium: float | None = 0.5,
    tail: float | None = 0.3,
    macro_f1: float | None = 0.4,
    ap: list | None = None,
    train_positives: list | None = None,
    wall_time_s: float = 10.0,
    failure: str | None = None,
    commit: str = "a" * 40,
) -> dict:
    """One run record with every schema key present (experiments.records docstring)."""
    scheme = variant.split("(")[0]
    ap = [0.9, 0.6, 0.4, 0.2] if ap is None else ap
    train_positives = [300, 60, 20, cutoff] if train_positives is None else train_positives

    def bucket(value, labels):
        if value is None:
            return {"mAP": None, "macro_f1": None, "micro_f1": None, "num_labels": 0, "labels": []}
        return {"mAP": value, "macro_f1": 0.5, "micro_f1": 0.5, "num_labels": 1, "labels": labels}

    test = None
    if status == "finished":
        test = {
            "mAP": mAP,
            "macro_f1": macro_f1,
            "micro_f1": 0.5,
            "missing_labels": [],
            "per_label": {
                "ap": ap,
                "precision": [0.5] * len(ap),
                "recall": [0.5] * len(ap),
                "f1": [0.5] * len(ap),
            },
            "buckets": {
                "head": bucket(head, [0]),
                "medium": bucket(medium, [1, 2]),
                "tail": bucket(tail, [3]),
            },
        }
    return {
        "schema_version": 1,
        "status": status,
        "failure": failure,
        "config_name": f"{task}_{scheme}",
        "task": task,
        "scheme": scheme,
        "loss": "bce",
        "variant": variant,
        "tier": tier,
        "seed": seed,
        "cutoff": cutoff,
        "config": {"name": f"{task}_{scheme}", "data": {"seed": 0, "image_size": 32}},
        "data": {
            "provenance": {
                split: {
                    "source": "fashion-mnist",
                    "files": {"train-images": {"path": "/usr/share/fm/train.gz", "sha256": SHA}},
                    "params": {"cutoff": cutoff, "image_size": 32},
                    "counts": list(range(10)),
                }
                for split in ("train", "val", "test")
            },
            "label_names": [f"label{i}" for i in range(len(ap))],
            "train_positives": train_positives,
            "num_train": 1000,
            "num_val": 200,
            "num_test": 200,
        },
        "environment": {
            "packages": {"jax": "0.10.2", "numpy": "2.4.6"},
            "git_commit": commit,
            "git_dirty": False,
            "devices": ["TFRT_CPU_0"],
            "num_devices": 1,
            "platform": "cpu",
            "python": "3.11.2",
            "hostname": "host",
            "machine": "x86_64",
        },
        "curves": [
            {
                "epoch": 0,
                "step": 10,
                "train_loss": 0.7,
                "val_mAP": 0.4,
                "val_macro_f1": 0.3,
                "images_per_s": 100.0,
            }
        ],
        "val": test,
        "test": test,
        "wall_time_s": wall_time_s,
        "images_per_s": 100.0,
        "steps": 10,
    }


def write_record(root: Path, record: dict) -> Path:
    path = (
        root
        / record["config_name"]
        / record["variant"]
        / f"cutoff{record['cutoff']}"
        / f"seed{record['seed']}"
        / "record.json"
    )
    atomic_write_json(path, record)
    return path


# The sweep below, per seed s = 0, 1, 2 (cut-offs 6 and 25):
#   none:               mAP 0.40, 0.50, 0.45
#   proposed(beta=0.99): none + 0.05 on every seed -> paired diff 0.05, CI half-width 0
#   proposed(beta=0.9):  0.41, 0.49, 0.47 -> diff vs none 0.01, -0.01, 0.02 (CI includes 0)
#   inverse:            0.50, 0.62, 0.40 -> beta=0.99 minus inverse: -0.05, -0.07, 0.10
# Cut-off 25 has no tail labels (bucket empty). Seed 3 of none at cut-off 6 failed, and seed 3
# of inverse at cut-off 25 failed before its data was built.
NONE_MAP = {0: 0.40, 1: 0.50, 2: 0.45}
BETA09_MAP = {0: 0.41, 1: 0.49, 2: 0.47}
INVERSE_MAP = {0: 0.50, 1: 0.62, 2: 0.40}


def sweep_records() -> list[dict]:
    records = []
    for cutoff in (6, 25):
        tail = None if cutoff == 25 else 0.3
        for seed in range(3):
            for variant, value in (
                ("none", NONE_MAP[seed]),
                ("proposed(beta=0.99)", NONE_MAP[seed] + 0.05),
                ("proposed(beta=0.9)", BETA09_MAP[seed]),
                ("inverse", INVERSE_MAP[seed]),
            ):
                records.append(
                    make_record(
                        variant=variant,
                        seed=seed,
                        cutoff=cutoff,
                        mAP=value,
                        head=value,
                        medium=value,
                        tail=None if tail is None else value - 0.1,
                        wall_time_s=5.0,
                    )
                )
    records.append(
        make_record(
            variant="none",
            seed=3,
            cutoff=6,
            status="failed",
            failure="non-finite loss at step 7",
            wall_time_s=2.0,
        )
    )
    # A run that failed before its data was built, as experiments.run records it.
    early = make_record(variant="inverse", seed=3, cutoff=25, status="failed", wall_time_s=8.0)
    early.update(data=None, curves=[], images_per_s=None, steps=0, failure="data: missing file")
    records.append(early)
    return records


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One report over the synthetic sweep, written twice; the second copy kept for comparison."""
    base = tmp_path_factory.mktemp("report")
    root = base / "runs"
    for record in sweep_records():
        write_record(root, record)
    notes = base / "results" / "NOTES.md"
    notes.parent.mkdir(parents=True)
    notes.write_text("Hand-written *analysis* | kept verbatim.\n\n- point one\n", encoding="utf-8")
    out, plots = base / "RESULTS.md", base / "results" / "plots"
    summary = report.write_report(root, out, plots, notes)
    first = {p: p.read_bytes() for p in [out, *sorted(plots.glob("*.png"))]}
    report.write_report(root, out, plots, notes)
    second = {p: p.read_bytes() for p in [out, *sorted(plots.glob("*.png"))]}
    return {
        "base": base,
        "root": root,
        "out": out,
        "md": out.read_text(encoding="utf-8"),
        "summary": summary,
        "first": first,
        "second": second,
        "plots": plots,
    }


def table_row(md: str, heading: str, first_cell: str, occurrence: int = 0) -> list[str]:
    """Cells of the row starting with `first_cell` in the table after the n-th `heading`."""
    starts = [m.end() for m in re.finditer(re.escape(heading) + "\n", md)]
    section = md[starts[occurrence] :]
    section = section[: section.find("\n\n", section.find("|"))]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells[1:]
    raise AssertionError(f"no row {first_cell!r} under {heading!r}")


def test_table_cells_mean_ci_and_n(generated):
    # none at cut-off 6: mean(0.40, 0.50, 0.45) = 0.45, sd = 0.05,
    # half-width = 4.302653 * 0.05 / sqrt(3) = 0.124207. The failed seed 3 is left out.
    cells = table_row(generated["md"], "#### mAP (all labels)", "`none`")
    assert cells[0] == "0.450 ± 0.124 (n=3)"
    # proposed(beta=0.99) = none + 0.05: same spread, mean 0.50.
    cells = table_row(generated["md"], "#### mAP (all labels)", "`proposed(beta=0.99)`")
    assert cells == ["0.500 ± 0.124 (n=3)", "0.500 ± 0.124 (n=3)"]
    # tail = mAP - 0.1 at cut-off 6; no tail labels at cut-off 25.
    assert table_row(generated["md"], "#### tail mAP", "`none`") == ["0.350 ± 0.124 (n=3)", "–"]


def test_rows_are_ordered_schemes_then_swept_values(generated):
    section = generated["md"].split("#### mAP (all labels)")[1].split("####")[0]
    rows = re.findall(r"^\| (`[^`]+`) \|", section, flags=re.M)
    assert rows == ["`none`", "`inverse`", "`proposed(beta=0.9)`", "`proposed(beta=0.99)`"]


def table_rows(md: str, heading: str, occurrence: int = 0) -> list[list[str]]:
    """Cells of every body row of the table after the n-th `heading`."""
    starts = [m.end() for m in re.finditer(re.escape(heading) + "\n", md)]
    section = md[starts[occurrence] :]
    begin = section.find("\n|")
    section = section[begin + 1 : section.find("\n\n", begin)]
    lines = section.splitlines()[2:]  # header and rule
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]


def test_paired_difference_rows(generated):
    rows = {tuple(r[:3]): r[3:] for r in table_rows(generated["md"], "#### `proposed` − `none`")}
    # Constant shift of +0.05 on every seed: difference 0.05, zero width, t p = 0, so the Holm
    # p is 0 too: bold. Wilcoxon needs n >= 6: not shown with 3 pairs.
    assert rows[("`proposed(beta=0.99)`", "6", "all")] == [
        "**+0.050 ± 0.000** (n=3)",
        "<0.001",
        "–",
        "<0.001",
    ]
    # beta=0.9 minus none: 0.01, -0.01, 0.02 -> mean 0.006667, sd 0.015275, half-width
    # 4.302653 * 0.015275 / sqrt(3) = 0.037946; t = 0.755929 on 2 df, p = 1 - t / sqrt(2 + t^2)
    # = 0.529. Holm: 21 tests of the 28 have p >= 0.499, so its multiplier makes it 1.
    assert rows[("`proposed(beta=0.9)`", "6", "all")] == [
        "+0.007 ± 0.038 (n=3)",
        "0.529",
        "–",
        "1.000",
    ]
    # The tail bucket is defined at cut-off 6 only: the empty one at 25 has no row.
    assert ("`proposed(beta=0.99)`", "6", "tail") in rows
    assert ("`proposed(beta=0.99)`", "25", "tail") not in rows
    assert len(rows) == 14
    # beta=0.99 minus inverse: -0.05, -0.07, +0.10 -> mean -0.006667, squared deviations sum
    # to 0.017267, sd 0.092916, half-width 4.302653 * 0.092916 / sqrt(3) = 0.230815: not bold.
    rows = {tuple(r[:3]): r[3:] for r in table_rows(generated["md"], "#### `proposed` − `inverse`")}
    assert rows[("`proposed(beta=0.99)`", "6", "all")][0] == "-0.007 ± 0.231 (n=3)"


def test_other_methods_against_none_are_their_own_family(generated):
    md = generated["md"]
    rows = table_rows(md, "#### Every other method − `none`")
    # inverse minus none: 0.10, 0.12, -0.05 -> mean 0.056667; 7 rows (no tail at 25).
    assert [r[:3] for r in rows][:2] == [["`inverse`", "6", "all"], ["`inverse`", "6", "head"]]
    assert len(rows) == 7 and rows[0][3].startswith("+0.057 ± ")
    assert "over the 7 tests of this second family" in md
    assert "over the 28 tests of this family" in md


def test_headline_sentences(generated):
    md = generated["md"]
    head = md.split("## Headline")[1].split("\n## ")[0]
    assert (
        "`proposed` vs `none`, mAP (all labels): higher in 2 of 4 (variant, cut-off) "
        "comparisons, lower in 0, not separated from 0 in 2; largest gain +0.050 (95% CI +0.050 "
        "to +0.050, n=3) for proposed(beta=0.99) at cut-off 25." in head
    )
    # Only cut-off 6 has tail labels: two comparisons.
    assert "`proposed` vs `none`, tail mAP: higher in 1 of 2" in head
    assert "`proposed` vs `inverse`, mAP (all labels): higher in 0 of 4" in head
    assert "2 failed (left out)" in head
    # 14 tests per baseline (4 + 4 + 4 mAP comparisons, 2 tail), 28 in all; the 7 of
    # beta=0.99 - none (a constant shift: p = 0) survive Holm, nothing else does.
    assert (
        "Corrected for multiple comparisons (Holm, family-wise error 0.05, over the 28 paired "
        "t-tests of `proposed` against the baselines): 7 of 28 survive: proposed(beta=0.99) − "
        "none, all labels at cut-off 6 +0.050 (Holm p<0.001); " in head
    )
    # Best beta by mean mAP: beta=0.99 (0.500) over beta=0.9 (0.457) at both cut-offs.
    assert (
        "cut-off 6: proposed(beta=0.99) 0.500 ± 0.124 (n=3); cut-off 25: proposed(beta=0.99)"
        in head
    )
    # inverse: mean(0.50, 0.62, 0.40) = 0.506667, sd 0.110151, half-width 0.273631.
    assert "Highest mean test mAP over all variants: cut-off 6: inverse 0.507 ± 0.274" in head


def test_notes_included_verbatim(generated):
    md = generated["md"]
    notes = md.split("## Notes\n\n")[1]
    assert notes.startswith("Hand-written *analysis* | kept verbatim.\n\n- point one\n\n## ")
    assert "analysis prose lives in `results/NOTES.md`" in md


def test_failed_runs_listed_and_compute_summed(generated):
    md = generated["md"]
    failed = md.split("### Failed runs")[1]
    assert "`catalog_none/none/cutoff6/seed3/record.json`" in failed
    assert "non-finite loss at step 7" in failed
    assert (
        "| `catalog_inverse/inverse/cutoff25/seed3/record.json` | `inverse` | 25 | 3 | data: "
        in failed
    )
    # 24 finished runs x 5 s + failed runs of 2 s and 8 s = 130 s.
    assert "Total compute: 130 s (2.2 min)" in md
    assert "Runs: 26 (24 finished, 2 failed)." in md


def test_data_section_abbreviates_checksums(generated):
    md = generated["md"]
    assert SHA[:12] + "…" in md
    assert SHA not in md
    assert "fashion-mnist" in md
    assert "image size: 32" in md
    assert "| `files.train-images.sha256` | " + SHA[:12] + "… |" in md
    assert "| `params.cutoff` | 6 / 25 |" in md
    # Machine paths would make the file depend on where it was generated.
    assert "/usr/share" not in md
    assert "Seeds with finished runs: 0, 1, 2 (3)" in md
    assert "`aaaaaaaaaaaa` (26 runs)" in md


def test_plots_linked_with_relative_paths_and_exist(generated):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", generated["md"])
    assert links == [
        "results/plots/cpu_catalog_critical_difference.png",
        "results/plots/cpu_catalog_forest.png",
        "results/plots/cpu_catalog_ap_difference_vs_frequency.png",
    ]
    for link in links:
        data = (generated["base"] / link).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        # No software/date text chunks that would make reruns differ.
        assert b"tEXt" not in data and b"tIME" not in data


def test_outputs_are_byte_identical_on_rerun(generated):
    assert len(generated["first"]) == 4
    assert generated["first"] == generated["second"]


def test_summary_printed(generated, capsys):
    assert generated["summary"][0] == "Read 26 run records (24 finished, 2 failed)."
    assert generated["summary"][1] == (
        "catalog (cpu tier): 24 finished, 2 failed; proposed vs none (higher/lower/not "
        "separated): mAP 2/0/2, head 2/0/2, medium 2/0/2, tail 1/0/1; proposed vs inverse "
        "(higher/lower/not separated): mAP 0/0/4, head 0/0/4, medium 0/0/4, tail 0/0/2"
    )
    code = report.main(
        [
            "--records",
            str(generated["root"]),
            "--out",
            str(generated["base"] / "other" / "RESULTS.md"),
            "--plots-dir",
            str(generated["base"] / "other" / "plots"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "catalog (cpu tier):" in out and "Wrote" in out
    # A different folder gives different relative links but the same numbers.
    md = (generated["base"] / "other" / "RESULTS.md").read_text(encoding="utf-8")
    assert "](plots/cpu_catalog_forest.png)" in md
    assert "## Notes" not in md


def test_tiers_and_tasks_are_separate_sections(tmp_path):
    root = tmp_path / "runs"
    write_record(root / "smoke", make_record(tier="smoke", mAP=0.1))
    write_record(root / "cpu", make_record(tier="cpu", mAP=0.7))
    write_record(root / "cpu", make_record(task="catalog_step", mAP=0.3))
    runs = report.read_runs(root)
    groups = report.group_runs(runs)
    assert [g.title for g in groups] == [
        "catalog (smoke tier)",
        "catalog (cpu tier)",
        "catalog_step (cpu tier)",
    ]
    assert [g.cell("none", 6, "mAP") for g in groups] == [
        (0.1, None, 1),
        (0.7, None, 1),
        (0.3, None, 1),
    ]
    assert report.format_ci(groups[0].cell("none", 6, "mAP")) == "0.100 (n=1)"
    # No proposed runs: the headline says so instead of inventing a comparison.
    assert "No `proposed` runs" in " ".join(report.headline(groups[0]))


def test_split_variant_and_order():
    assert report.split_variant("proposed(beta=0.999)") == ("proposed", {"beta": "0.999"})
    assert report.split_variant("focal") == ("focal", {})
    variants = ["focal", "proposed(beta=0.9999)", "zeta", "proposed(beta=0.99)", "none"]
    assert sorted(variants, key=report.variant_sort_key) == [
        "none",
        "proposed(beta=0.99)",
        "proposed(beta=0.9999)",
        "focal",
        "zeta",
    ]


# ---------------------------------------------------------------------------------------------
# Errors


def test_missing_folder_says_how_to_produce_records(tmp_path):
    with pytest.raises(report.ReportError, match=r"does not exist.*python -m experiments\.run"):
        report.read_runs(tmp_path / "nowhere")


def test_empty_folder_names_the_folder(tmp_path):
    with pytest.raises(report.ReportError, match=r"No run records \(record\.json\) found below"):
        report.read_runs(tmp_path)


def test_invalid_json_names_the_file(tmp_path):
    write_record(tmp_path, make_record())
    bad = tmp_path / "catalog_none" / "none" / "cutoff6" / "seed1" / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(report.ReportError, match=re.escape(str(bad)) + ".*not valid JSON"):
        report.read_runs(tmp_path)


def test_missing_key_names_file_and_key(tmp_path):
    record = make_record()
    del record["variant"]
    path = write_record(tmp_path, {**record, "variant": "x"})
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(report.ReportError, match=r"malformed: missing key\(s\) variant.*--force"):
        report.read_runs(tmp_path)


def test_bad_metrics_name_the_problem(tmp_path):
    record = make_record()
    record["data"]["train_positives"] = [1, 2]
    write_record(tmp_path, record)
    record = make_record(seed=1)
    record["seed"] = "1"
    write_record(tmp_path, {**record, "seed": 1})
    (tmp_path / "catalog_none/none/cutoff6/seed1/record.json").write_text(json.dumps(record))
    with pytest.raises(report.ReportError) as info:
        report.read_runs(tmp_path)
    message = str(info.value)
    assert "seed0/record.json is malformed: data.train_positives" in message
    assert "seed1/record.json is malformed: seed must be an integer" in message


def test_unreadable_schema_version_names_the_file(tmp_path):
    write_record(tmp_path, make_record())
    write_record(tmp_path, {**make_record(seed=1), "schema_version": 0})
    write_record(tmp_path, {**make_record(seed=2), "schema_version": True})
    with pytest.raises(report.ReportError) as info:
        report.read_runs(tmp_path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert "seed1/record.json has schema_version 0; this code reads version 1, 2 or 3" in lines[0]
    assert "seed2/record.json has schema_version True" in lines[1]


def test_duplicate_runs_are_refused(tmp_path):
    write_record(tmp_path, make_record())
    write_record(tmp_path, {**make_record(), "config_name": "catalog_other"})
    with pytest.raises(report.ReportError, match=r"same run.*Delete one"):
        report.read_runs(tmp_path)


def test_main_reports_errors_on_stderr_and_keeps_old_results(tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    out.write_text("previous report\n", encoding="utf-8")
    assert report.main(["--records", str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert "error: No run records" in capsys.readouterr().err
    write_record(tmp_path / "runs", make_record())
    bad_record = write_record(tmp_path / "runs", make_record(seed=1))
    bad_record.write_text("{", encoding="utf-8")
    assert report.main(["--records", str(tmp_path / "runs"), "--out", str(out)]) == 1
    assert "seed1/record.json is not valid JSON" in capsys.readouterr().err
    bad_record.unlink()
    args = ["--records", str(tmp_path / "runs"), "--out", str(out)]
    assert report.main([*args, "--notes", str(tmp_path / "NOTES.md")]) == 1
    assert "Notes file" in capsys.readouterr().err
    # Nothing was written: the previous report is intact and no temporary files are left.
    assert out.read_text(encoding="utf-8") == "previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RESULTS.md", "runs"]


def test_provenance_fields_merge_splits_and_drop_machine_paths():
    common = {
        "source": {"file": {"path": "/data/x.gz", "sha256": SHA}},
        "cache_dir": "relative/but/a/dir",
        "url": "file:///data/x.gz",
        "labels": list(range(7)),
        "classes": [3, 1],
        "empty": {},
    }
    split_provenance = {"train": {"n": 5}, "val": {"n": 2, "extra": {"train": 1}}}
    assert report.provenance_fields(common, split_provenance) == {
        "source.file.sha256": SHA[:12] + "…",
        "n": "2 / 5",
        "classes": "[3, 1]",
        "extra.train": "1",
    }


def test_invisible_differences_are_not_called_separated():
    # Differences of ~1e-9 with tiny spread: the interval excludes 0 but no one could see it.
    control = {s: 0.3 + 0.01 * s for s in range(3)}
    tiny = report.paired_difference({s: v + 1e-9 * (10 + s) for s, v in control.items()}, control)
    assert tiny.excludes_zero and not report.separated(tiny)
    assert report.format_ci(tiny, signed=True, mark=True).startswith("+0.000 ± 0.000 (n=3)")
    shift = report.paired_difference({s: v - 0.002 for s, v in control.items()}, control)
    assert report.separated(shift)
    assert report.format_ci(shift, signed=True, mark=True) == "**-0.002 ± 0.000** (n=3)"


# ---------------------------------------------------------------------------------------------
# Record schema: version 1 is read as version 2


def test_normalise_v1_record_to_v3():
    v1 = make_record(variant="proposed(beta=0.9)")
    v1["config"]["loss"] = "bce"
    v1["data"]["provenance"] = {
        "train": {"source": "fm", "params": {"cutoff": 6, "seed": 0}, "n": 1000, "empty": {}},
        "val": {"source": "fm", "params": {"cutoff": 6, "seed": 0}, "n": 200, "empty": {}},
        "test": {"source": "fm", "params": {"cutoff": 6, "seed": 1}, "n": 200, "empty": {}, "x": 1},
    }
    original = json.loads(json.dumps(v1))
    v2 = report.normalise_record(v1)
    assert v1 == original  # The input is left as it was.
    assert v2["schema_version"] == 3
    assert v2["method"] == "proposed"  # config_name "catalog_proposed" minus "catalog_".
    assert v2["config"]["method"] == "proposed"
    assert v2["config"]["loss"] == "weighted_sigmoid_bce"
    assert v2["data"]["provenance"] == {"source": "fm", "empty": {}}
    assert v2["data"]["split_provenance"] == {
        "train": {"params": {"cutoff": 6, "seed": 0}, "n": 1000},
        "val": {"params": {"cutoff": 6, "seed": 0}, "n": 200},
        "test": {"params": {"cutoff": 6, "seed": 1}, "n": 200, "x": 1},
    }
    # Everything else is kept.
    for key in set(v1) - {"schema_version", "config", "data"}:
        assert v2[key] == v1[key], key
    assert v2["data"]["train_positives"] == v1["data"]["train_positives"]


def test_normalise_v1_identical_splits_and_task_prefix():
    v1 = make_record(task="catalog_step", variant="class_balanced")
    v2 = report.normalise_record(v1)
    # Not "step_class_balanced": the prefix is the task's whole name.
    assert v2["method"] == "class_balanced"
    assert v2["data"]["provenance"] == v1["data"]["provenance"]["train"]
    assert v2["data"]["split_provenance"] == {}
    # 1 and 1.0 (and True) are different JSON values: not merged into one common field.
    common, differ = records.split_provenance(
        {"train": {"a": 1}, "val": {"a": 1.0}, "test": {"a": 1}}
    )
    assert common == {} and differ == {"train": {"a": 1}, "val": {"a": 1.0}, "test": {"a": 1}}


def make_v2_record(**kwargs) -> dict:
    """The version-2 record of the same run as make_record(**kwargs), written out by hand."""
    record = make_record(**kwargs)
    method = record["variant"].split("(")[0]
    provenance = record["data"]["provenance"]["train"]  # All three splits are equal here.
    return {
        **record,
        "schema_version": 2,
        "method": method,
        "config": {**record["config"], "method": method, "loss": "weighted_sigmoid_bce"},
        "data": {**record["data"], "provenance": provenance, "split_provenance": {}},
    }


def test_v2_records_are_read_as_v3_and_mix_with_v1(tmp_path):
    v2 = make_v2_record(seed=1)
    v2["config"] = {"name": "catalog_none", "sweep": {"x": [1, 2]}, "variant": "{scheme}"}
    write_record(tmp_path, v2)
    write_record(tmp_path, make_record(seed=0))
    runs = report.read_runs(tmp_path)
    assert [r.record["schema_version"] for r in runs] == [3, 3]
    # Version 3 differs only in the name of the varied block, which keeps its place.
    v3_config = {"name": "catalog_none", "vary": {"x": [1, 2]}, "variant": "{scheme}"}
    assert list(runs[1].record["config"].items()) == list(v3_config.items())
    assert runs[1].record == {**v2, "schema_version": 3, "config": v3_config}
    assert runs[0].method == runs[1].method == "none"


def test_v3_records_are_read_unchanged():
    v3 = {**make_v2_record(), "schema_version": 3}
    v3["config"] = {**v3["config"], "vary": {"x": [1]}}
    assert report.normalise_record(v3) == v3
    # A config that somehow holds both names is left for validation, not silently merged.
    both = {"sweep": {"x": [1]}, "vary": {"y": [2]}}
    assert records.upgrade_config(both, 2) == both


def test_v2_record_gives_the_same_report_as_v1(tmp_path):
    kinds = {"v1": make_record, "v2": make_v2_record}
    texts = {}
    for name, make in kinds.items():
        root = tmp_path / name
        for seed in range(2):
            for variant in ("none", "proposed(beta=0.9)"):
                write_record(root, make(variant=variant, seed=seed, mAP=0.4 + 0.1 * seed))
        text, _, _ = report.build_report(
            report.read_runs(root), records_dir=root, out=tmp_path / "R.md", plots_dir="p"
        )
        texts[name] = text.replace(f"`{name}`", "`ROOT`")
    assert texts["v1"] == texts["v2"]
    assert "| `files.train-images.sha256` | " + SHA[:12] + "… |" in texts["v2"]


def test_v2_record_without_method_is_malformed(tmp_path):
    record = make_v2_record()
    del record["method"]
    write_record(tmp_path, record)
    with pytest.raises(report.ReportError, match=r"malformed: missing key\(s\) method"):
        report.read_runs(tmp_path)


def test_variant_order_is_read_from_one_place(monkeypatch):
    from experiments.report import tables

    variants = ["focal", "none", "inverse"]
    assert sorted(variants, key=report.variant_sort_key) == ["none", "inverse", "focal"]
    monkeypatch.setattr(tables, "VARIANT_ORDER", ("focal", "inverse", "none"))
    assert sorted(variants, key=report.variant_sort_key) == ["focal", "inverse", "none"]


# ---------------------------------------------------------------------------------------------
# Where the report writes


def test_stale_plots_removed_only_when_this_report_wrote_them(tmp_path):
    root, plots, out = tmp_path / "runs", tmp_path / "plots", tmp_path / "R.md"
    write_record(root, make_record())
    gpu = write_record(root / "gpu", make_record(tier="gpu"))
    report.write_report(root, out, plots)
    # Files the report did not write, one of them named like a report plot.
    (plots / "smoke_catalog_forest.png").write_bytes(b"someone else's")
    (plots / "diagram.png").write_bytes(b"mine")
    # A second report into the same folder, from the cpu records only.
    other_root = tmp_path / "other"
    write_record(other_root, make_record())
    report.write_report(other_root, tmp_path / "other.md", plots)
    assert (plots / "gpu_catalog_forest.png").is_file()  # Not the other report's plot.
    gpu.unlink()
    summary = report.write_report(root, out, plots)
    assert sorted(p.name for p in plots.iterdir()) == [
        "cpu_catalog_ap_difference_vs_frequency.png",
        "cpu_catalog_forest.png",
        "diagram.png",
        report.MANIFEST_NAME,
        "smoke_catalog_forest.png",
    ]
    assert summary[-1] == (
        "Removed 2 plots this report wrote before and no longer makes: "
        "gpu_catalog_ap_difference_vs_frequency.png, gpu_catalog_forest.png."
    )
    cpu = ["cpu_catalog_ap_difference_vs_frequency.png", "cpu_catalog_forest.png"]
    assert report.read_manifest(plots) == {"../R.md": cpu, "../other.md": cpu}


@pytest.mark.parametrize(
    "manifest", ["{not json", '{"reports": {"../R.md": ["../../RESULTS.md"]}}', "[]"]
)
def test_bad_manifest_is_refused_before_anything_is_written(tmp_path, manifest):
    root, plots, out = tmp_path / "runs", tmp_path / "plots", tmp_path / "R.md"
    write_record(root, make_record())
    plots.mkdir()
    (plots / report.MANIFEST_NAME).write_text(manifest, encoding="utf-8")
    with pytest.raises(report.ReportError, match=r"plots manifest .* Delete it and rerun"):
        report.write_report(root, out, plots)
    assert not out.exists()
    assert [p.name for p in plots.iterdir()] == [report.MANIFEST_NAME]


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A folder laid out like the repository: committed report, plots and records, and the
    user's own records in runs/; the current folder during the test."""
    write_record(tmp_path / "results" / "runs", make_record(mAP=0.7))
    write_record(tmp_path / "runs", make_record(tier="gpu", mAP=0.2))
    committed = {
        tmp_path / "RESULTS.md": b"committed report\n",
        tmp_path / "results" / "plots" / "cpu_catalog_forest.png": b"committed plot",
        tmp_path
        / "results"
        / "plots"
        / "cpu_catalog_ap_difference_vs_frequency.png": b"committed plot",
    }
    for path, data in committed.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    monkeypatch.chdir(tmp_path)
    return committed


def unchanged(files: dict[Path, bytes]) -> bool:
    return all(path.read_bytes() == data for path, data in files.items()) and sorted(
        p.name for p in (Path("results") / "plots").iterdir()
    ) == ["cpu_catalog_ap_difference_vs_frequency.png", "cpu_catalog_forest.png"]


def test_readme_example_writes_only_beside_its_out(checkout, capsys):
    assert report.main(["--records", "runs", "--out", "my_results.md"]) == 0
    assert unchanged(checkout)
    plots = Path("my_results_plots")
    assert sorted(p.name for p in plots.iterdir()) == [
        "gpu_catalog_ap_difference_vs_frequency.png",
        "gpu_catalog_forest.png",
        report.MANIFEST_NAME,
    ]
    md = Path("my_results.md").read_text(encoding="utf-8")
    assert "](my_results_plots/gpu_catalog_forest.png)" in md
    assert "## Notes" not in md
    assert "Wrote my_results.md and 2 plots in my_results_plots." in capsys.readouterr().out


def test_other_records_without_out_is_a_one_line_usage_error(checkout, capsys):
    assert report.main(["--records", "runs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out is required with --records runs" in err
    assert unchanged(checkout)


@pytest.mark.parametrize(
    "args",
    [
        ["--out", "RESULTS.md"],
        ["--out", "./RESULTS.md"],
        ["--out", "x.md", "--plots-dir", "results/plots/"],
    ],
)
def test_other_records_never_overwrite_committed_files_unasked(checkout, capsys, args):
    assert report.main(["--records", "runs", *args]) == 2
    assert "would overwrite the committed" in capsys.readouterr().err
    assert unchanged(checkout)
    assert sorted(p.name for p in Path().iterdir()) == ["RESULTS.md", "results", "runs"]


def test_overwrite_committed_flag_writes_committed_files(checkout):
    assert report.main(["--records", "runs", "--out", "RESULTS.md", "--overwrite-committed"]) == 0
    assert "gpu tier" in Path("RESULTS.md").read_text(encoding="utf-8")
    plots = sorted(p.name for p in (Path("results") / "plots").iterdir())
    # The committed cpu plots were not written by this report (no manifest listed them): kept.
    assert plots == [
        "cpu_catalog_ap_difference_vs_frequency.png",
        "cpu_catalog_forest.png",
        "gpu_catalog_ap_difference_vs_frequency.png",
        "gpu_catalog_forest.png",
        report.MANIFEST_NAME,
    ]


def test_default_command_regenerates_committed_report(checkout):
    Path("results/NOTES.md").write_text("Analysis.\n", encoding="utf-8")
    assert report.main([]) == 0
    md = Path("RESULTS.md").read_text(encoding="utf-8")
    assert "from 1 run records in `results/runs`" in md and "## Notes\n\nAnalysis.\n" in md
    assert "](results/plots/cpu_catalog_forest.png)" in md
    assert Path("results/plots/cpu_catalog_forest.png").read_bytes() != b"committed plot"
    assert report.read_manifest("results/plots") == {
        "../../RESULTS.md": ["cpu_catalog_ap_difference_vs_frequency.png", "cpu_catalog_forest.png"]
    }
    assert report.resolve_outputs("results/runs") == report.cli.Outputs(
        Path("RESULTS.md"), Path("results/plots"), Path("results/NOTES.md")
    )


def test_sweep_reports_other_records_beside_them(monkeypatch):
    from experiments import sweep

    calls = []
    monkeypatch.setattr(sweep, "sweep_runs", lambda *a, **k: [])  # nothing left to train
    monkeypatch.setattr(sweep.report, "main", lambda argv: calls.append(argv) or 0)
    assert sweep.main(["--tasks", "catalog"]) == 0
    assert sweep.main(["--tasks", "catalog", "--records", "mine"]) == 0
    assert calls == [
        ["--records", "results/runs"],
        ["--records", "mine", "--out", "mine/REPORT.md"],
    ]


# ---------------------------------------------------------------------------------------------
# Unequal replicates between cut-offs, ranks, Friedman and the critical-difference diagram

# Cut-off 6 has 7 seeds, cut-off 25 has 3 (as when replicates are added at one cut-off only);
# focal's seed 2 at cut-off 25 is missing. Per seed s, with b = 0.40 + 0.01 s:
#   none b; inverse b + 0.02; focal b + 0.04; proposed(beta=0.99) b + 0.06 + 0.002 s,
# the same value in every bucket (tail: at cut-off 6 only). In every block the order is
# proposed > focal > inverse > none.
UNEQUAL_SEEDS = {6: range(7), 25: range(3)}


def unequal_records() -> list[dict]:
    records = []
    for cutoff, seeds in UNEQUAL_SEEDS.items():
        for seed in seeds:
            base = 0.40 + 0.01 * seed
            for variant, value in (
                ("none", base),
                ("inverse", base + 0.02),
                ("focal(gamma=2)", base + 0.04),
                ("proposed(beta=0.99)", base + 0.06 + 0.002 * seed),
            ):
                if variant.startswith("focal") and (cutoff, seed) == (25, 2):
                    continue
                tail = value if cutoff == 6 else None
                records.append(
                    make_record(
                        variant=variant,
                        seed=seed,
                        cutoff=cutoff,
                        mAP=value,
                        head=value,
                        medium=value,
                        tail=tail,
                    )
                )
    return records


@pytest.fixture(scope="module")
def unequal(tmp_path_factory):
    base = tmp_path_factory.mktemp("unequal")
    for record in unequal_records():
        write_record(base / "runs", record)
    runs = report.read_runs(base / "runs")
    text, plots, _ = report.build_report(
        runs, records_dir=base / "runs", out=base / "R.md", plots_dir=base / "plots"
    )
    return {"md": text, "plots": plots, "group": report.group_runs(runs)[0]}


def test_unequal_replicates_show_their_own_n(unequal):
    md = unequal["md"]
    assert table_row(md, "#### mAP (all labels)", "`none`")[0].endswith("(n=7)")
    assert table_row(md, "#### mAP (all labels)", "`none`")[1].endswith("(n=3)")
    assert table_row(md, "#### mAP (all labels)", "`focal(gamma=2)`")[1].endswith("(n=2)")
    rows = {tuple(r[:3]): r[3:] for r in table_rows(md, "#### `proposed` − `none`")}
    # Cut-off 6: 7 pairs, differences 0.060, 0.062, ..., 0.072, all positive and distinct: the
    # exact two-sided Wilcoxon p is 2 / 2^7 = 0.015625.
    assert rows[("`proposed(beta=0.99)`", "6", "all")][0].startswith("**+0.066 ± ")
    assert rows[("`proposed(beta=0.99)`", "6", "all")][0].endswith("(n=7)")
    assert rows[("`proposed(beta=0.99)`", "6", "all")][2] == "0.016"
    # Cut-off 25: 3 pairs; no Wilcoxon below 6 pairs.
    assert rows[("`proposed(beta=0.99)`", "25", "all")][0].endswith("(n=3)")
    assert rows[("`proposed(beta=0.99)`", "25", "all")][2] == "–"
    # focal at cut-off 25 pairs with none on seeds 0 and 1 only.
    others = {tuple(r[:3]): r[3:] for r in table_rows(md, "#### Every other method − `none`")}
    assert others[("`focal(gamma=2)`", "25", "all")][0] == "**+0.040 ± 0.000** (n=2)"


def test_holm_adjusts_over_the_family_in_the_report(unequal):
    family = report.headline_family(unequal["group"])
    tested = [c for c in family if c.holm_p is not None]
    # proposed - none and proposed - inverse: 4 buckets at cut-off 6, 3 at 25 (no tail): 14.
    assert len(tested) == 14
    smallest = min(tested, key=lambda c: c.test.p_t)
    assert smallest.holm_p == pytest.approx(min(1.0, 14 * smallest.test.p_t))
    # Adjusted p-values keep the order of the raw ones and are never smaller.
    ordered = sorted(tested, key=lambda c: c.test.p_t)
    assert all(a.holm_p <= b.holm_p for a, b in itertools.pairwise(ordered))
    assert all(c.holm_p >= c.test.p_t for c in tested)
    head = unequal["md"].split("## Headline")[1].split("\n## ")[0]
    assert "over the 14 paired t-tests of `proposed` against the baselines): 14 of 14 survive" in (
        head
    )


def test_friedman_uses_complete_blocks_only(unequal):
    group = unequal["group"]
    result = report.ranking(group, "mAP")
    # 7 blocks at cut-off 6, 2 at 25 (focal has no seed 2 there): N = 9, k = 4.
    assert result.blocks_at(6) == 7 and result.blocks_at(25) == 2
    assert (25, 2) not in result.blocks
    order = ["none", "inverse", "proposed(beta=0.99)", "focal(gamma=2)"]  # the table's rows
    assert list(result.variants) == order
    assert result.test.mean_ranks == pytest.approx([4.0, 3.0, 1.0, 2.0])
    # chi2_F = 12 N / (k (k + 1)) [sum R_j^2 - k (k + 1)^2 / 4] = 12 * 9 / 20 * (30 - 25) = 27;
    # for 3 df, P(X > x) = erfc(sqrt(x / 2)) + sqrt(2 x / pi) exp(-x / 2).
    assert result.test.statistic == pytest.approx(27.0)
    x = 27.0
    expected_p = math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    assert result.test.p_value == pytest.approx(expected_p, rel=1e-6)
    # Nemenyi: CD = 2.569 sqrt(4 * 5 / (6 * 9)) (Demšar's q_0.05 for k = 4) = 1.5635.
    assert result.critical_difference == pytest.approx(2.569 * math.sqrt(20 / 54), abs=1e-3)
    # The tail bucket is empty at cut-off 25: its blocks are cut-off 6's alone.
    tail = report.ranking(group, "tail")
    assert (tail.blocks_at(6), tail.blocks_at(25)) == (7, 0)
    md = unequal["md"]
    assert (
        "- mAP (all labels): 9 complete (cut-off, seed) blocks (cut-off 6: 7, cut-off 25: 2); "
        "Friedman χ²(3) = 27.00, p<0.001; Nemenyi critical difference 1.56 (α = 0.05)." in md
    )
    assert (
        "| variant | tail mAP, N=7 | medium mAP, N=9 | head mAP, N=9 | mAP (all labels), N=9 |"
        in md
    )
    head = md.split("## Headline")[1].split("\n## ")[0]
    assert (
        "mAP (all labels), N=9, Friedman p<0.001: proposed(beta=0.99) 1.00, focal(gamma=2) "
        "2.00, inverse 3.00." in head
    )
    assert "tail mAP, N=7, Friedman p<0.001: " in head
    ranks = "### Ranks over cut-offs and seeds"
    assert table_row(md, ranks, "`proposed(beta=0.99)`") == ["1.00", "1.00", "1.00", "1.00"]
    assert table_row(md, ranks, "`none`") == ["4.00", "4.00", "4.00", "4.00"]


def test_too_few_blocks_are_not_tested(tmp_path):
    for seed, variant in ((0, "none"), (0, "inverse"), (0, "focal"), (1, "none")):
        write_record(tmp_path, make_record(variant=variant, seed=seed))
    group = report.group_runs(report.read_runs(tmp_path))[0]
    result = report.ranking(group, "mAP")
    assert result.blocks == ((6, 0),) and result.test is None
    md, _, _ = report.build_report(
        report.read_runs(tmp_path), records_dir=tmp_path, out=tmp_path / "R.md", plots_dir="p"
    )
    assert "1 complete (cut-off, seed) blocks (cut-off 6: 1); too few to test" in md


def test_cliques_hand_computed():
    # Sorted ranks 1.0, 1.5, 3.0, 3.2 with CD 1.6: from 1.0 the ranks up to 2.6 (1.5), from 1.5
    # those up to 3.1 (3.0), from 3.0 those up to 4.6 (3.2): three overlapping bars, each
    # ending later than the one before.
    assert report.cliques([3.2, 1.0, 3.0, 1.5], 1.6) == [(0, 1), (1, 2), (2, 3)]
    # Everything within CD: one bar; nothing within CD: none.
    assert report.cliques([1.0, 2.0, 3.0], 5.0) == [(0, 2)]
    assert report.cliques([1.0, 2.0, 3.0], 0.5) == []


def test_rank_and_difference_plots_render_from_synthetic_records(unequal):
    names = sorted(p.name for p in unequal["plots"])
    assert names == [
        "cpu_catalog_ap_difference_vs_frequency.png",
        "cpu_catalog_critical_difference.png",
        "cpu_catalog_forest.png",
    ]
    group = unequal["group"]
    for render in (
        report.plot_critical_difference,
        report.plot_forest,
        report.plot_ap_difference_vs_frequency,
    ):
        data = render(group)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert render(group) == data  # byte-stable
    # What the forest plot draws: 4 buckets x 2 cut-offs, one row per variant but none.
    rows = report.forest_rows(group)
    assert sorted(rows) == [(c, m) for c in (6, 25) for m in ("head", "mAP", "medium", "tail")]
    assert [v for v, _, _ in rows[(6, "tail")]] == [
        "inverse",
        "proposed(beta=0.99)",
        "focal(gamma=2)",
    ]
    inverse, proposed, focal = rows[(25, "mAP")]
    # inverse - none = 0.02 on every seed; focal - none = 0.04 on its 2 seeds at cut-off 25;
    # both constant shifts (p = 0), so they survive Holm in the second family: filled.
    assert inverse[1].mean == pytest.approx(0.02) and inverse[1].n == 3 and inverse[2]
    assert focal[1].mean == pytest.approx(0.04) and focal[1].n == 2 and focal[2]
    assert proposed[1].n == 3
    assert all(ci.mean is None for _, ci, _ in rows[(25, "tail")])  # empty bucket


def test_ap_difference_pairs_labels_and_seeds(tmp_path):
    # none's AP per label [0.9, 0.6, 0.4, 0.2], inverse's [0.8, 0.6, 0.5, 0.4] on 2 seeds, the
    # labels' training positives [300, 60, 20, 6]: differences -0.1, 0, +0.1, +0.2 per count.
    # The ceiling's AP [1, 1, 1, 1] is paired with the positives of a long-tailed run of the
    # same seed: 0.1, 0.4, 0.6, 0.8.
    for seed in (0, 1):
        write_record(tmp_path, make_record(variant="none", seed=seed, ap=[0.9, 0.6, 0.4, 0.2]))
        write_record(tmp_path, make_record(variant="inverse", seed=seed, ap=[0.8, 0.6, 0.5, 0.4]))
    write_record(
        tmp_path,
        make_record(
            variant="balanced", seed=0, cutoff=1000, ap=[1.0] * 4, train_positives=[1000] * 4
        ),
    )
    group = report.group_runs(report.read_runs(tmp_path))[0]
    found = report.ap_difference_by_frequency(group, "inverse", 6)
    assert [(n, k) for n, _, k in found] == [(6, 2), (20, 2), (60, 2), (300, 2)]
    assert [d for _, d, _ in found] == pytest.approx([0.2, 0.1, 0.0, -0.1])
    ceiling = report.ap_difference_by_frequency(group, "balanced", 6)
    assert [(n, k) for n, _, k in ceiling] == [(6, 1), (20, 1), (60, 1), (300, 1)]
    assert [d for _, d, _ in ceiling] == pytest.approx([0.8, 0.6, 0.4, 0.1])
    # The legend's n: seeds paired with none's (2 for inverse, 1 for the one ceiling run).
    assert report.paired_seed_count(group, "inverse", 6) == 2
    assert report.paired_seed_count(group, "balanced", 6) == 1
    assert report.paired_seed_count(group, "inverse", 25) == 0  # no run at 25


def test_cutoff_legend_names_n_or_its_range():
    assert report.cutoff_label(6, [15, 15, 15]) == "cut-off 6 (n=15)"
    assert report.cutoff_label(25, [5, 4, 5]) == "cut-off 25 (n=4–5)"


def test_counts_in_the_report_agree_with_their_number(tmp_path):
    write_record(tmp_path / "runs", make_record())
    out = tmp_path / "R.md"
    assert report.main(["--records", str(tmp_path / "runs"), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "1 variant, cut-offs 6, 1 seed with finished runs; 1 finished run." in text
    assert "1 seeds" not in text
