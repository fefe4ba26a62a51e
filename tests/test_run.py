"""The runner: pure helpers (overrides, expansion of varied fields, paths) and the CLI's
behaviour with a stubbed trainer, so every test is instant."""

from __future__ import annotations

import json
import re

import ml_collections
import pytest

from experiments import atomic, configs, execute, methods, plan, records
from experiments import run as run_mod
from experiments import runs as runs_mod
from experiments.configs import overrides

RECORD_KEYS = set(records.SCHEMA_KEYS)


def test_record_keys_are_the_documented_schema():
    # The schema in the records module docstring lists one top-level key per line ("  key: ...").
    documented = re.findall(r"^  (\w+):", records.__doc__, flags=re.MULTILINE)
    assert tuple(documented) == records.SCHEMA_KEYS
    assert len(documented) == 21


def test_atomic_open_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    with atomic.atomic_open(path) as f:
        f.write(b"old")
    assert path.read_bytes() == b"old" and path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError, match="midway"), atomic.atomic_open(path) as f:
        f.write(b"half")
        raise RuntimeError("midway")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]  # no temp file left


# ---------------------------------------------------------------------------------------------
# Parsing


def test_parse_int_list():
    assert plan.parse_int_list("0") == [0]
    assert plan.parse_int_list("6, 12,25") == [6, 12, 25]
    for bad in ("", "a", "1,b", "1.5"):
        with pytest.raises(ValueError, match="integer"):
            plan.parse_int_list(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("num_epochs=5", ("num_epochs", 5)),
        ("learning_rate=1e-3", ("learning_rate", 0.001)),
        ("model.stage_sizes=[1, 2]", ("model.stage_sizes", [1, 2])),
        ("model.small_input=False", ("model.small_input", False)),
        ("optimizer=sgd", ("optimizer", "sgd")),  # not a literal: taken as a string
        ("optimizer='sgd'", ("optimizer", "sgd")),
        ("data.data_dir=/tmp/x=y", ("data.data_dir", "/tmp/x=y")),  # split at the first "="
        (" data.data_dir = None", ("data.data_dir", None)),
    ],
)
def test_parse_override(text, expected):
    assert overrides.parse_override(text) == expected


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "NaN", "1e999", "[1, 1e999]"])
def test_non_finite_numbers_are_refused_plainly(raw, capsys):
    with pytest.raises(ValueError, match=r"is not a finite number.*learning_rate=0\.001"):
        overrides.parse_override(f"learning_rate={raw}")
    with pytest.raises(SystemExit):
        run_mod.main(["--config", "catalog_none", "--dry-run", "--set", f"learning_rate={raw}"])
    err = capsys.readouterr().err
    assert "not a finite number" in err and "cannot be casted" not in err


@pytest.mark.parametrize("bad", ["num_epochs", "=5", ""])
def test_parse_override_rejects_malformed(bad):
    with pytest.raises(ValueError, match="key=value"):
        overrides.parse_override(bad)


# ---------------------------------------------------------------------------------------------
# Overrides


def test_apply_overrides_sets_nested_fields_and_leaves_the_input_alone():
    config = configs.get_config("catalog_focal")
    new = overrides.apply_overrides(
        config,
        [("model.num_filters", 32), ("loss_params.gamma", 1), ("data.data_dir", "/data")],
    )
    assert (new.model.num_filters, new.loss_params.gamma, new.data.data_dir) == (32, 1.0, "/data")
    assert isinstance(new.loss_params.gamma, float)  # int accepted for a float field
    assert config.model.num_filters != 32 and config.data.data_dir is None


def test_apply_overrides_unknown_key_names_the_closest_field():
    config = configs.get_config("catalog_none")
    with pytest.raises(ValueError, match=r"no field 'model\.num_filter'.*model\.num_filters"):
        overrides.apply_overrides(config, [("model.num_filter", 8)])
    with pytest.raises(ValueError, match="no field 'epochs'"):
        overrides.apply_overrides(config, [("epochs", 3)])
    with pytest.raises(ValueError, match="no field"):  # deeper than one level in an open block
        overrides.apply_overrides(config, [("data.x.y", 1)])


def test_apply_overrides_type_mismatch_is_an_error():
    config = configs.get_config("catalog_none")
    with pytest.raises(ValueError, match="num_epochs"):
        overrides.apply_overrides(config, [("num_epochs", "many")])


def test_open_blocks_accept_new_keys():
    config = configs.get_config("catalog_focal")
    new = overrides.apply_overrides(
        config, [("loss_params.alpha", 0.25), ("data.test_positives", 50)]
    )
    assert new.loss_params.alpha == 0.25 and new.data.test_positives == 50


def test_setting_a_varied_field_fixes_it():
    config = configs.get_config("catalog_proposed")
    new = overrides.apply_overrides(config, [("scheme_params.beta", 0.99)])
    assert overrides.varied_axes(new) == []
    runs = runs_mod.expand_runs(new)
    assert {r.variant for r in runs} == {"proposed(beta=0.99)"} and len(runs) == 2 * 5


def test_vary_override_adds_a_varied_field():
    config = configs.get_config("catalog_class_balanced")
    new = overrides.apply_overrides(config, [("vary.scheme_params.beta", [0.99, 0.9999])])
    assert overrides.varied_axes(new) == [("scheme_params.beta", [0.99, 0.9999])]
    assert len(runs_mod.expand_runs(new)) == 2 * 2 * 5  # betas x cut-offs x seeds
    with pytest.raises(ValueError, match=r"no field 'scheme_params\.bta'"):
        overrides.apply_overrides(config, [("vary.scheme_params.bta", [0.9])])


def test_the_old_sweep_block_name_is_refused_with_the_new_one():
    # Version 3 renamed `sweep` (experiments/records.py); the old spelling must not slip through
    # as an unknown field or, worse, be taken for a field of that name.
    config = configs.get_config("catalog_class_balanced")
    with pytest.raises(ValueError, match=r"now called `vary`.*--set vary\.scheme_params\.beta="):
        overrides.apply_overrides(config, [("sweep.scheme_params.beta", [0.99, 0.9999])])


# ---------------------------------------------------------------------------------------------
# Expansion of varied fields, and paths


@pytest.mark.parametrize(
    ("name", "num_variants"),
    [("catalog_none", 1), ("catalog_proposed", 2), ("catalog_step_focal", 1)],
)
def test_expand_runs_counts(name, num_variants):
    config = configs.get_config(name)
    runs = runs_mod.expand_runs(config)
    assert len(runs) == num_variants * 2 * 5  # cut-offs 6 and 25, seeds 0-4
    assert len({r.workdir for r in runs}) == len(runs)
    assert len(runs_mod.expand_runs(config, seeds=[0], cutoffs=[6])) == num_variants
    assert len(runs_mod.expand_runs(config, seeds=[1, 2], cutoffs=[6, 50])) == num_variants * 4


def test_expand_runs_applies_each_beta_to_its_run():
    runs = runs_mod.expand_runs(configs.get_config("catalog_proposed"), seeds=[0], cutoffs=[6])
    assert [r.config.scheme_params.beta for r in runs] == [0.99, 0.999]
    assert [r.variant for r in runs] == ["proposed(beta=0.99)", "proposed(beta=0.999)"]


def test_two_varied_fields_give_their_product():
    config = configs.get_config("catalog_focal")
    config = overrides.apply_overrides(
        config,
        [
            ("vary.loss_params.gamma", [0.0, 1.0, 2.0]),
            ("vary.learning_rate", [1e-3, 3e-3]),
            ("variant", "focal(gamma={loss_params.gamma:g},lr={learning_rate:g})"),
        ],
    )
    runs = runs_mod.expand_runs(config, seeds=[0], cutoffs=[6])
    pairs = {(r.config.loss_params.gamma, r.config.learning_rate) for r in runs}
    assert pairs == {(g, lr) for g in (0.0, 1.0, 2.0) for lr in (1e-3, 3e-3)}


def test_variants_that_share_a_folder_are_rejected():
    config = configs.get_config("catalog_proposed")
    config = overrides.apply_overrides(config, [("variant", "proposed")])
    with pytest.raises(ValueError, match="share the folder"):
        runs_mod.expand_runs(config)


def test_bad_varied_values_and_selections_are_errors():
    config = configs.get_config("catalog_none")
    with pytest.raises(ValueError, match="non-empty list"):
        runs_mod.expand_runs(overrides.apply_overrides(config, [("vary.learning_rate", [])]))
    with pytest.raises(ValueError, match="without repeats"):
        runs_mod.expand_runs(config, seeds=[0, 0])
    with pytest.raises(ValueError, match=">= 1"):
        runs_mod.expand_runs(config, cutoffs=[0])
    with pytest.raises(ValueError, match="does not format"):
        runs_mod.expand_runs(overrides.apply_overrides(config, [("variant", "{nope}")]))


def test_variant_slug_and_run_dir():
    assert runs_mod.variant_slug("proposed(beta=0.999)") == "proposed-beta-0.999"
    assert runs_mod.variant_slug("focal(gamma=2)") == "focal-gamma-2"
    assert runs_mod.variant_slug("inverse_sqrt") == "inverse_sqrt"
    path = runs_mod.run_dir("runs", "catalog_proposed", "proposed(beta=0.9)", 6, 2)
    assert path.as_posix() == "runs/catalog_proposed/proposed-beta-0.9/cutoff6/seed2"
    with pytest.raises(ValueError, match="empty folder name"):
        runs_mod.variant_slug("()")


def test_every_config_expands_to_distinct_report_rows():
    for name in configs.list_configs():
        runs = runs_mod.expand_runs(configs.get_config(name), seeds=[0], cutoffs=[6])
        assert len({r.variant for r in runs}) == len(runs), name


def test_config_differences_ignores_locations_and_selection():
    a = {"tier": "cpu", "output_dir": "runs", "data": {"data_dir": None, "seed": 0}, "seeds": [0]}
    b = {"tier": "cpu", "output_dir": "x", "data": {"data_dir": "/d", "seed": 0}, "seeds": [1]}
    assert runs_mod.config_differences(a, b) == []
    c = {**b, "tier": "smoke", "data": {"data_dir": None, "seed": 1}}
    assert runs_mod.config_differences(a, c) == ["data.seed", "tier"]


# ---------------------------------------------------------------------------------------------
# The CLI with a stubbed trainer


class StubInterrupted(Exception):
    pass


class StubTrainer:
    """Records its calls; `fail` / `interrupt` / `nan` hold (cutoff, seed) pairs to misbehave."""

    def __init__(self):
        self.calls = []
        self.fail, self.interrupt, self.nan = set(), set(), set()

    def __call__(self, config, *, seed, cutoff, workdir, progress=True, interrupt_at_step=None):
        assert isinstance(config, ml_collections.ConfigDict)
        self.calls.append((config.variant.format(**config), cutoff, seed, workdir))
        (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
        if (cutoff, seed) in self.interrupt:
            raise StubInterrupted("stopped at step 3")
        if (cutoff, seed) in self.fail:
            raise RuntimeError("out of memory")
        test = {"mAP": 0.5 + seed / 100, "macro_f1": 0.4, "buckets": {"tail": {"mAP": 0.3}}}
        return {
            "status": "failed" if (cutoff, seed) in self.nan else "finished",
            "failure": "non-finite loss at step 2" if (cutoff, seed) in self.nan else None,
            "data": {"num_train": 10},
            "curves": [],
            "val": {"mAP": 0.5},
            "test": test,
            "wall_time_s": 1.0,
            "images_per_s": 100.0,
            "steps": 3,
        }


def install_stub_trainer(monkeypatch) -> StubTrainer:
    """A StubTrainer in place of the real one, no data checks and a fixed environment."""
    trainer = StubTrainer()
    monkeypatch.setattr(execute, "load_trainer", lambda: (trainer, StubInterrupted))
    monkeypatch.setattr(plan, "check_data", lambda config, cutoff, **kw: None)
    monkeypatch.setattr(records, "environment", lambda: {"packages": {}, "git_commit": None})
    return trainer


@pytest.fixture
def stub(monkeypatch):
    return install_stub_trainer(monkeypatch)


def cli(tmp_path, *args):
    return run_mod.main(["--output-dir", str(tmp_path), "--no-progress", *args])


def test_cli_runs_every_run_and_writes_complete_records(tmp_path, stub, capsys):
    assert cli(tmp_path, "--config", "catalog_proposed", "--seeds", "0,1", "--cutoffs", "6") == 0
    assert len(stub.calls) == 2 * 2  # two betas x two seeds
    found = records.load_records(tmp_path)
    assert len(found) == 4
    for record in found:
        assert set(record) >= RECORD_KEYS
        assert record["config_name"] == "catalog_proposed" and record["task"] == "catalog"
        assert (record["scheme"], record["loss"]) == ("proposed", "weighted_sigmoid_bce")
        assert (record["method"], record["tier"]) == ("proposed", "cpu")
        assert record["config"]["scheme_params"]["beta"] == float(
            re.search(r"beta=([\d.]+)", record["variant"]).group(1)
        )
    path = tmp_path / "catalog_proposed/proposed-beta-0.99/cutoff6/seed1/record.json"
    record = json.loads(path.read_text())
    assert (record["seed"], record["cutoff"], record["variant"]) == (1, 6, "proposed(beta=0.99)")
    out = capsys.readouterr().out
    assert "test mAP" in out and out.count("finished") >= 8  # closing summary table


def test_each_finished_run_prints_its_numbers_with_their_names(tmp_path, stub, capsys):
    assert cli(tmp_path, "--config", "catalog_none", "--seeds", "1", "--cutoffs", "6") == 0
    out = capsys.readouterr().out
    assert "finished: test mAP 0.510, tail mAP 0.300, macro-F1 0.400, time 1s" in out


def test_library_warnings_stay_out_of_a_runs_output(tmp_path, stub, capsys, caplog):
    import logging

    def noisy(config, **kw):
        logging.getLogger("absl").warning("Waiting for previous save to complete")
        return stub(config, **kw)

    execute.load_trainer = lambda: (noisy, StubInterrupted)  # undone by the stub fixture
    assert cli(tmp_path, "--config", "catalog_none", "--seeds", "0", "--cutoffs", "6") == 0
    captured = capsys.readouterr()
    assert "Waiting for previous save" not in captured.out + captured.err + caplog.text


def test_cli_skips_finished_runs_and_force_reruns_them(tmp_path, stub, capsys):
    args = ("--config", "catalog_none", "--seeds", "0", "--cutoffs", "6,12")
    assert cli(tmp_path, *args) == 0 and len(stub.calls) == 2
    capsys.readouterr()
    assert cli(tmp_path, *args) == 0
    assert len(stub.calls) == 2  # nothing retrained
    assert capsys.readouterr().out.count("--force reruns it") == 2
    marker = tmp_path / "catalog_none/none/cutoff6/seed0/checkpoints/stale"
    marker.write_text("x")
    assert cli(tmp_path, *args, "--force") == 0
    assert len(stub.calls) == 4
    assert not marker.exists()  # forced runs start from scratch


def test_cli_records_a_failed_run_and_continues(tmp_path, stub, capsys):
    stub.fail = {(6, 1)}
    stub.nan = {(6, 2)}
    three = ("--config", "catalog_none", "--cutoffs", "6", "--seeds", "0,1,2")
    assert cli(tmp_path, *three) == execute.EXIT_FAILED
    assert [c[2] for c in stub.calls] == [0, 1, 2]
    by_seed = {r["seed"]: r for r in records.load_records(tmp_path)}
    assert by_seed[0]["status"] == "finished"
    assert by_seed[1]["status"] == "failed" and "out of memory" in by_seed[1]["failure"]
    assert set(by_seed[1]) >= RECORD_KEYS
    assert by_seed[2]["status"] == "failed" and "non-finite" in by_seed[2]["failure"]
    assert "2 of 3 runs failed" in capsys.readouterr().err
    # Failed runs are not "finished": a rerun tries them again, and only them.
    stub.fail, stub.nan = set(), set()
    assert cli(tmp_path, *three) == 0
    assert [c[2] for c in stub.calls[3:]] == [1, 2]


def test_cli_interrupt_exits_130_and_the_same_command_resumes(tmp_path, stub, capsys):
    stub.interrupt = {(6, 1)}
    args = ("--config", "catalog_none", "--cutoffs", "6", "--seeds", "0,1,2", "--force")
    assert cli(tmp_path, *args) == execute.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "rerunning the same command" in err and "--force" not in err.split("command:")[1]
    workdir = tmp_path / "catalog_none/none/cutoff6/seed1"
    assert (workdir / "checkpoints").is_dir() and not (workdir / "record.json").exists()
    assert [c[2] for c in stub.calls] == [0, 1]  # stopped: seed 2 did not start
    stub.interrupt = set()
    assert cli(tmp_path, *args[:-1]) == 0
    assert [(c[2], c[3]) for c in stub.calls[2:]] == [(1, workdir), (2, workdir.parent / "seed2")]


def test_cli_refuses_a_finished_record_from_another_config(tmp_path, stub, capsys):
    args = ("--config", "catalog_none", "--seeds", "0", "--cutoffs", "6")
    assert cli(tmp_path, *args, "--tier", "smoke") == 0
    path = tmp_path / "catalog_none/none/cutoff6/seed0/record.json"
    before = path.read_text()
    assert cli(tmp_path, *args) == execute.EXIT_FAILED
    assert "different config" in capsys.readouterr().out and "tier" in path.read_text()
    assert path.read_text() == before and len(stub.calls) == 1
    assert cli(tmp_path, *args, "--force") == 0
    assert json.loads(path.read_text())["tier"] == "cpu"


def test_cli_dry_run_trains_nothing(tmp_path, stub, capsys):
    assert cli(tmp_path, "--config", "catalog_proposed", "--dry-run") == 0
    out = capsys.readouterr().out
    # 2 betas x 2 cut-offs x 5 seeds.
    assert "20 of 20 runs would train" in out and stub.calls == []
    assert not any(tmp_path.iterdir())


def test_cli_list(capsys):
    assert run_mod.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in configs.list_configs():
        assert re.search(rf"^{name}\s", out, re.MULTILINE), name


def test_cli_usage_errors(tmp_path, stub, capsys):
    assert cli(tmp_path, "--config", "catalog_propsed") == execute.EXIT_USAGE
    assert "catalog_proposed" in capsys.readouterr().err
    assert cli(tmp_path, "--config", "catalog_none", "--set", "epochs=3") == execute.EXIT_USAGE
    assert "num_epochs" in capsys.readouterr().err
    assert cli(tmp_path) == execute.EXIT_USAGE
    with pytest.raises(SystemExit):
        cli(tmp_path, "--config", "catalog_none", "--seeds", "x")
    assert stub.calls == []


@pytest.mark.parametrize("task", ["sleevetype", "archetype"])
def test_fashionpedia_configs_fail_fast_naming_the_embedded_config(
    task, tmp_path, monkeypatch, capsys
):
    trainer = StubTrainer()
    monkeypatch.setattr(execute, "load_trainer", lambda: (trainer, StubInterrupted))
    monkeypatch.delenv("LTWEIGHTS_DATA", raising=False)
    empty = tmp_path / "no_fashionpedia"
    empty.mkdir()
    code = run_mod.main(
        [
            "--config",
            f"{task}_proposed",
            "--output-dir",
            str(tmp_path / "runs"),
            "--set",
            f"data.data_dir={empty}",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == execute.EXIT_USAGE and trainer.calls == []
    assert "Fashionpedia" in err  # the data layer's own message: how to get it
    assert "python -m experiments.run --config catalog_proposed" in err
    assert not (tmp_path / "runs").exists()


def test_compilation_cache_is_scoped_to_the_invocation(tmp_path):
    import jax
    import jax.numpy as jnp

    assert jax.config.jax_compilation_cache_dir is None
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    with execute.compilation_cache(tmp_path / "jax"):
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
        jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones(3)).block_until_ready()
    assert any((tmp_path / "jax").iterdir())  # compiled executables were stored
    assert jax.config.jax_compilation_cache_dir is None
    assert jax.config.jax_persistent_cache_min_compile_time_secs == before
    with execute.compilation_cache(None):  # disabled: nothing changes
        assert jax.config.jax_compilation_cache_dir is None


def test_compilation_cache_recovers_entries_an_unbounded_cache_wrote(tmp_path):
    """A folder shared with an unbounded cache holds `<key>-cache` without `<key>-atime`; a
    bounded cache then failed every write. The suite stamps them and new entries get stored."""
    import warnings

    import jax
    import jax.numpy as jnp

    folder = tmp_path / "jax"
    folder.mkdir()
    (folder / "jit_old-0123-cache").write_bytes(b"an executable from an unbounded cache")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Error writing persistent compilation cache entry"
        with execute.compilation_cache(folder):
            jax.jit(lambda x: x * 5.0 - 2.0)(jnp.ones(4)).block_until_ready()
    assert (folder / "jit_old-0123-atime").is_file()
    written = {p.name for p in folder.glob("*-cache")} - {"jit_old-0123-cache"}
    assert written, "the new executable was not stored"
    for entry in written:
        assert (folder / entry.replace("-cache", "-atime")).is_file()
    assert execute.give_entries_access_times(folder) == []  # nothing left to stamp


def test_added_config_fields_at_their_default_match_records_written_before_them(monkeypatch):
    from experiments import checkpoints, records

    old = json.loads(json.dumps(configs.get_config("catalog_none").to_dict()))
    new = json.loads(json.dumps(old))
    new["model"]["new_option"] = "off"
    assert runs_mod.config_differences(old, new) == ["model.new_option"]
    before = checkpoints.run_fingerprint(old, 0, 6, [6, 7])
    monkeypatch.setitem(records.ADDED_FIELD_DEFAULTS, "model.new_option", "off")
    assert runs_mod.config_differences(old, new) == []
    assert checkpoints.run_fingerprint(new, 0, 6, [6, 7]) == before
    new["model"]["new_option"] = "on"  # a non-default value is a real difference
    assert runs_mod.config_differences(old, new) == ["model.new_option"]
    assert checkpoints.run_fingerprint(new, 0, 6, [6, 7]) != before


@pytest.mark.parametrize("method", list(methods.METHODS))
def test_the_trainer_builds_every_methods_loss_from_its_config(method):
    import jax.numpy as jnp
    import numpy as np

    from experiments import steps
    from ltweights import weights

    config = configs.get_config(f"catalog_{method}")
    assert steps.LOSSES[config.loss] is methods.LOSSES[config.loss]
    counts = weights.label_counts(np.array([[1, 0], [0, 1], [1, 1], [0, 0]]))
    value = steps.make_loss_fn(config, counts)(jnp.zeros((4, 2)), jnp.ones((4, 2)))
    assert np.isfinite(float(value))
    assert config.loss == methods.METHODS[method].loss


def test_records_build_every_schema_key_in_order_and_refuse_unknown_trainer_fields(tmp_path):
    """One home for a record: the trainer's fields, the failed result and the full record come
    from experiments.records, with the schema's keys in its order."""
    failed = records.failed_result("boom", 1.5)
    assert tuple(failed) == records.TRAINER_KEYS and failed["status"] == "failed"
    with pytest.raises(TypeError, match=r"missing \['steps'\], unknown \['step'\]"):
        records.trainer_fields(**{**{k: None for k in records.TRAINER_KEYS[:-1]}, "step": 0})
    config = configs.get_config("catalog_none", tier="smoke")
    config.output_dir = str(tmp_path)
    (run,) = runs_mod.expand_runs(config, seeds=[0], cutoffs=[6])
    record = records.build_record(run, failed, {"packages": {}})
    assert tuple(record) == records.SCHEMA_KEYS
    assert (record["seed"], record["cutoff"], record["failure"]) == (0, 6, "boom")
    records.write_record(run.record_path, record)
    assert records.load_record(run.record_path) == json.loads(json.dumps(record))
