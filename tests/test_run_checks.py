"""What the runner refuses before any run starts (config errors, an unwritable output folder),
what a failed run tells the user, the record schema v2, and finished v1 records still count."""

from __future__ import annotations

import json
import shlex

import pytest

from experiments import configs, execute, plan, records
from experiments import run as run_mod
from experiments import runs as runs_mod
from experiments.configs import validate

# ---------------------------------------------------------------------------------------------
# Config validation: each example of the issue is refused by --dry-run, exit 2, nothing written


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "num_epochs=0"], "num_epochs must be an integer >= 1; got 0"),
        (["--set", "scheme_params.beta=1.5"], "beta must be in [0, 1], got 1.5"),
        (["--seeds", "-1"], "Seeds are integers >= 0; got [-1]"),
        (["--set", "loss_params.gama=1.0"], "did you mean loss_params.gamma?"),
        (["--set", "data.head_cont=5"], "did you mean data.head_count?"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_config_errors_are_refused_before_any_run(tmp_path, capsys, monkeypatch, args, expected,
                                                  dry_run):  # fmt: skip
    calls = []
    monkeypatch.setattr(execute, "load_trainer", lambda: calls.append(1))
    monkeypatch.setattr(plan, "check_data", lambda *a, **kw: calls.append(2))
    name = "catalog_focal" if "gama" in args[-1] else "catalog_class_balanced"
    argv = ["--config", name, "--output-dir", str(tmp_path / "out"), *args]
    code = run_mod.main([*argv, "--dry-run"] if dry_run else argv)
    assert code == execute.EXIT_USAGE
    assert expected in capsys.readouterr().err
    assert calls == [] and not (tmp_path / "out").exists()


def test_validation_accepts_every_config_at_every_tier():
    for name in configs.list_configs():
        for tier in ("cpu", "gpu", "smoke"):
            assert validate.problems(configs.get_config(name, tier)) == [], (name, tier)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("learning_rate", float("nan"), "learning_rate must be a finite number > 0"),
        ("model.block", "wide", "model.block must be 'basic' or 'bottleneck'"),
        ("keep_best", 0, "keep_best must be an integer >= 1"),
        ("optimizer", "adam", "optimizer must be 'adamw' or 'sgd'"),
        ("data.val_fraction", 1.5, "data.val_fraction must be a fraction in [0, 1)"),
        ("data.image_size", 0, "data.image_size must be an integer >= 1"),
        ("loss_params.gamma_neg", 4.0, "gamma_neg is not a parameter of sigmoid_focal"),
        ("scheme_params.bta", 0.9, "scheme_params.bta is not a parameter of none"),
    ],
)
def test_validation_names_the_field_and_its_range(path, value, expected):
    from experiments.configs import overrides

    config = overrides.apply_overrides(configs.get_config("catalog_focal"), [(path, value)])
    problems = validate.problems(config)
    assert any(expected in p for p in problems), problems


def test_an_unknown_field_deep_in_a_fixed_block_is_refused():
    config = configs.get_config("catalog_none")
    config.model.widht = 3  # bypassing --set, which refuses it already
    assert validate.problems(config) == ["model.widht is not a config field"]


def test_varied_values_are_validated_too(tmp_path, capsys):
    argv = ["--config", "catalog_proposed", "--dry-run", "--output-dir", str(tmp_path)]
    code = run_mod.main([*argv, "--set", "vary.scheme_params.beta=[0.9,2.0]"])
    assert code == execute.EXIT_USAGE and "got 2.0" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Output folder


@pytest.mark.parametrize("where", ["is_a_file", "under_a_file"])
def test_unwritable_output_dir_is_one_line_before_data_loads(tmp_path, capsys, monkeypatch, where):
    loaded = []
    monkeypatch.setattr(plan, "check_data", lambda *a, **kw: loaded.append(1))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    output_dir = blocker if where == "is_a_file" else blocker / "runs"
    code = run_mod.main(["--config", "catalog_none_smoke", "--output-dir", str(output_dir)])
    err = capsys.readouterr().err.strip()
    assert code == execute.EXIT_USAGE and loaded == []
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"output directory {output_dir} is not writable" in err and "--output-dir" in err
    assert blocker.read_text() == "x"


def test_check_writable_leaves_nothing_behind(tmp_path):
    plan.check_writable(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []  # the missing folder is not created, the probe gone


# ---------------------------------------------------------------------------------------------
# Failures say how to recover


def _stub(monkeypatch, trainer):
    monkeypatch.setattr(execute, "load_trainer", lambda: (trainer, KeyboardInterrupt))
    monkeypatch.setattr(plan, "check_data", lambda config, cutoff, **kw: None)
    monkeypatch.setattr(records, "environment", lambda: {})


def _result(**data):
    result = dict(status="finished", failure=None, data=data or None, curves=[], val=None)
    return result | dict(test=None, wall_time_s=1.0, images_per_s=1.0, steps=1)


def test_a_failed_run_names_the_command_that_restarts_just_it(tmp_path, monkeypatch, capsys):
    def trainer(config, *, seed, cutoff, workdir, progress=True):
        if config.scheme_params.beta == 0.99 and seed == 1:
            raise FileNotFoundError("Checkpoint at checkpoints/28 not found")
        (workdir / "checkpoints").mkdir(exist_ok=True)
        return _result()

    _stub(monkeypatch, trainer)
    argv = ["--config", "catalog_proposed", "--cutoffs", "6", "--seeds", "0,1"]
    argv += ["--output-dir", str(tmp_path), "--no-progress"]
    assert run_mod.main(argv) == execute.EXIT_FAILED
    err = capsys.readouterr().err
    workdir = tmp_path / "catalog_proposed/proposed-beta-0.99/cutoff6/seed1"
    record = records.load_record(workdir / "record.json")
    assert record["status"] == "failed" and "Checkpoint at" in record["failure"]
    command = next(line.strip() for line in record["failure"].splitlines() if "--force" in line)
    assert command in err and str(workdir) in record["failure"]
    # The command restarts exactly that run: rerun it with a trainer that now works.
    calls = []
    _stub(monkeypatch, lambda config, **kw: calls.append((config.scheme_params.beta, kw["seed"]))
          or _result())  # fmt: skip
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "experiments.run"]
    assert run_mod.main(words[3:]) == 0
    assert calls == [(0.99, 1)]
    assert records.load_record(workdir / "record.json")["status"] == "finished"


# ---------------------------------------------------------------------------------------------
# Record schema v2 and v1 records


def test_v2_record_stores_method_loss_function_and_provenance_once(tmp_path, monkeypatch):
    per_split = {
        split: {"source": "fashion-mnist", "sha256": "abc", "split": split, "n": n}
        for split, n in (("train", 10), ("val", 5), ("test", 5))
    }
    per_split["test"]["sha256"] = "def"
    _stub(monkeypatch, lambda config, **kw: _result(provenance=per_split, num_train=10))
    argv = ["--config", "catalog_focal_smoke", "--output-dir", str(tmp_path), "--no-progress"]
    assert run_mod.main(argv) == 0
    (record,) = records.load_records(tmp_path)
    assert record["schema_version"] == 3 and tuple(record) == tuple(sorted(records.SCHEMA_KEYS))
    assert (record["method"], record["scheme"], record["loss"]) == ("focal", "none",
                                                                    "sigmoid_focal")  # fmt: skip
    assert record["config"]["method"] == "focal" and record["config"]["loss"] == "sigmoid_focal"
    data = record["data"]
    assert data["provenance"] == {"source": "fashion-mnist"}
    assert data["split_provenance"] == {
        "train": {"sha256": "abc", "split": "train", "n": 10},
        "val": {"sha256": "abc", "split": "val", "n": 5},
        "test": {"sha256": "def", "split": "test", "n": 5},
    }
    for split, fields in per_split.items():  # nothing lost: common + differing = the original
        assert {**data["provenance"], **data["split_provenance"][split]} == fields


def test_split_provenance_is_empty_when_splits_agree():
    same = {"a": 1, "b": [1, 2]}
    assert records.split_provenance({"train": same, "val": dict(same)}) == (same, {})
    common, differ = records.split_provenance({"train": {"a": 1}, "val": {"a": 1, "x": 2}})
    assert (common, differ) == ({"a": 1}, {"val": {"x": 2}})


def _v1_record(config: dict) -> dict:
    """A finished version-1 record as the committed sweep stored it."""
    v1 = dict(config)
    del v1["method"]
    v1["loss"] = {v: k for k, v in records.LEGACY_LOSS_NAMES.items()}[config["loss"]]
    v1["keep_best"] = True
    return {"schema_version": 1, "status": "finished", "config": v1, "test": {"mAP": 0.5},
            "wall_time_s": 1.0, "variant": "focal(gamma=2)", "loss": v1["loss"]}  # fmt: skip


def _v2_record(config: dict) -> dict:
    """A finished version-2 record, whose config names the varied block `sweep`."""
    v2 = {("sweep" if key == "vary" else key): value for key, value in config.items()}
    return {"schema_version": 2, "status": "finished", "config": v2, "test": {"mAP": 0.5}}


@pytest.mark.parametrize("make_old", [_v1_record, _v2_record])
@pytest.mark.parametrize("name", ["catalog_focal", "catalog_logit_adjusted", "catalog_proposed"])
def test_finished_old_records_are_skipped_not_rerun(tmp_path, monkeypatch, capsys, name, make_old):
    calls = []
    _stub(monkeypatch, lambda config, **kw: calls.append(1) or _result())
    argv = ["--config", name, "--seeds", "0", "--cutoffs", "6", "--output-dir", str(tmp_path)]
    config = configs.get_config(name)
    config.output_dir = str(tmp_path)
    for run in runs_mod.expand_runs(config, seeds=[0], cutoffs=[6]):
        run.workdir.mkdir(parents=True)
        records.write_record(run.record_path, make_old(records.json_safe_config(run.config)))
    assert run_mod.main([*argv, "--no-progress"]) == 0
    assert calls == [] and "--force reruns it" in capsys.readouterr().out
    # ...but an old record of another recipe is still a conflict.
    assert run_mod.main([*argv, "--no-progress", "--set", "num_epochs=3"]) == execute.EXIT_FAILED


def test_load_record_reads_v1_to_v3_and_refuses_others(tmp_path):
    path = tmp_path / "record.json"
    for version in (1, 2, 3):
        path.write_text(json.dumps({"schema_version": version}))
        assert records.load_record(path)["schema_version"] == version
    path.write_text(json.dumps({"schema_version": 4}))
    with pytest.raises(ValueError, match=r"schema_version 4; this code reads version 1, 2 or 3\."):
        records.load_record(path)
    path.write_text("[1]")
    with pytest.raises(ValueError, match="is not a JSON object"):
        records.load_record(path)


def test_show_config_names_the_layer_of_each_field(tmp_path, capsys):
    argv = ["--config", "catalog_focal_smoke", "--dry-run", "--show-config"]
    argv += ["--output-dir", str(tmp_path), "--set", "learning_rate=0.02"]
    assert run_mod.main(argv) == 0
    lines = {line.split(" = ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["learning_rate"].endswith("# --set") and "0.02" in lines["learning_rate"]
    assert lines["num_epochs"].endswith("# tier")
    assert lines["loss_params.gamma"].endswith("# method")
    assert lines["data.head_count"].endswith("# tier")
    assert lines["data.image_size"].endswith("# task")
    assert lines["weight_decay"].endswith("# base")
    assert lines["output_dir"].endswith("# --output-dir")


# ---------------------------------------------------------------------------------------------
# --dry-run refuses what a run would refuse, and says what the command selected


def test_dry_run_reports_the_runs_selected_not_the_configs_defaults(tmp_path, capsys):
    args = ["--config", "catalog_proposed", "--seeds", "0", "--cutoffs", "6", "--dry-run"]
    assert run_mod.main([*args, "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 runs (2 variants x cut-offs [6] x seeds [0])" in out
    assert "2 of 2 runs would train" in out and "[6, 25]" not in out
    assert not any(tmp_path.iterdir())


def test_dry_run_refuses_a_cutoff_beyond_the_data(tmp_path, capsys):
    args = ["--config", "catalog_none", "--seeds", "0", "--cutoffs", "100000", "--dry-run"]
    assert run_mod.main([*args, "--output-dir", str(tmp_path)]) == execute.EXIT_USAGE
    err = capsys.readouterr().err
    assert "cutoff=100000" in err and "lower the cut-off" in err


def test_dry_run_refuses_a_csv_without_its_columns(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("img,tags\na.png,x\n", encoding="utf-8")
    args = ["--config", "csv_none", "--dry-run", "--output-dir", str(tmp_path / "runs")]
    args += ["--set", f"data.path={catalog}", "--set", f"data.image_root={tmp_path / 'images'}"]
    assert run_mod.main(args) == execute.EXIT_USAGE
    assert "lacks the column(s) ['image', 'labels']" in capsys.readouterr().err


def test_dry_run_refuses_an_unwritable_output_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    args = ["--config", "catalog_none", "--seeds", "0", "--cutoffs", "6", "--dry-run"]
    assert run_mod.main([*args, "--output-dir", str(tmp_path / "file" / "runs")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_the_estimate_follows_the_epochs_the_data_and_the_jobs():
    config = configs.get_config("catalog_none")
    one = plan.run_seconds(config, num_train=2000, num_val=500)
    longer = configs.get_config("catalog_none")
    longer.num_epochs = 2 * config.num_epochs
    assert plan.run_seconds(longer, 2000, 500) > 1.8 * one
    assert (
        plan.run_seconds(config, 4000, 500) > 1.8 * one - plan.THROUGHPUT["cpu", "resnet"].fixed_s
    )
    assert plan.run_seconds(configs.get_config("catalog_linear"), 2000, 500) < one / 5
    assert plan.run_seconds(configs.get_config("catalog_none_gpu"), 2000, 500) is None
    assert plan.makespan([one] * 4, jobs=1, cores=2) == pytest.approx(4 * one)
    assert plan.makespan([one] * 4, jobs=2, cores=2) == pytest.approx(2 * one)
    assert plan.makespan([one] * 4, jobs=4, cores=2) == pytest.approx(2 * one)  # cores shared
    assert plan.makespan([3.0, 1.0, 1.0, 1.0], jobs=2, cores=2) == pytest.approx(3.0)


def test_a_cpu_tier_catalog_run_is_estimated_near_its_measured_time():
    """The committed sweep's records (measured on a 2-core machine) against the estimate of
    their own config and data: within 2x of each long-tailed run's wall time."""
    import glob
    import json

    paths = sorted(glob.glob("results/runs/cpu/catalog_*/*/cutoff6/seed0/record.json"))
    assert paths
    for path in paths:
        record = json.loads(open(path, encoding="utf-8").read())
        config = configs.get_config(record["config_name"])
        data = record["data"]
        expected = plan.run_seconds(config, data["num_train"], data["num_val"])
        if int(record["config"]["num_epochs"]) != int(config.num_epochs):
            continue  # a run trained with --set num_epochs
        assert 0.5 < record["wall_time_s"] / expected < 2.0, (path, expected)
