"""Tests of experiments.pretrained: torchvision state_dict -> the suite's Flax ResNet.

The fake state_dicts are built from the Flax tree with torchvision's key names and shapes (OIHW
kernels, BatchNorm weight/bias/running_mean/running_var, downsample.0/1, fc), so these tests need
no torch.
"""

import hashlib
import json
import re
import shutil
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import resnet_weights
from experiments import train as trainer
from experiments.checkpoints import Checkpoints
from experiments.configs import get_config, validate
from experiments.models import create_model
from experiments.models.resnet import BottleneckResNetBlock, ResNet, ResNetBlock
from experiments.pretrained import initial_variables, load_suite_checkpoint
from experiments.resnet_weights import flatten as _flat
from experiments.resnet_weights import torchvision_to_flax
from tests.test_train import make_config, synthetic_splits


def _init(stage_sizes, block, channels=3, small_input=False, labels=5):
    model = ResNet(stage_sizes, block, num_labels=labels, num_filters=4, small_input=small_input)
    return model, model.init(jax.random.key(0), jnp.zeros((1, 32, 32, channels)), train=False)


def _fake_torchvision(stage_sizes, bottleneck, filters=4, labels=5):
    rng = np.random.default_rng(1)
    sd = {"conv1.weight": rng.normal(size=(filters, 3, 7, 7))}
    for f in ("weight", "bias", "running_mean"):
        sd[f"bn1.{f}"] = rng.normal(size=filters)
    sd["bn1.running_var"] = rng.uniform(0.5, 2, size=filters)
    cin = filters
    for s, n in enumerate(stage_sizes):
        w = filters * 2**s
        for b in range(n):
            p = f"layer{s + 1}.{b}"
            if bottleneck:
                shapes = [(w, cin, 1, 1), (w, w, 3, 3), (4 * w, w, 1, 1)]
                cout = 4 * w
            else:
                shapes = [(w, cin, 3, 3), (w, w, 3, 3)]
                cout = w
            convs = [(f"{p}.conv{k + 1}", f"{p}.bn{k + 1}", sh) for k, sh in enumerate(shapes)]
            if cin != cout or (s > 0 and b == 0):
                convs.append((f"{p}.downsample.0", f"{p}.downsample.1", (cout, cin, 1, 1)))
            for conv, bn, sh in convs:
                sd[f"{conv}.weight"] = rng.normal(size=sh)
                for f in ("weight", "bias", "running_mean"):
                    sd[f"{bn}.{f}"] = rng.normal(size=sh[0])
                sd[f"{bn}.running_var"] = rng.uniform(0.5, 2, size=sh[0])
                sd[f"{bn}.num_batches_tracked"] = np.array(3)
            cin = cout
    sd["fc.weight"] = rng.normal(size=(labels, cin))
    sd["fc.bias"] = rng.normal(size=labels)
    return sd


@pytest.mark.parametrize(
    "sizes,block,bottleneck", [((2, 2), ResNetBlock, False), ((1, 2), BottleneckResNetBlock, True)]
)
def test_every_value_lands_in_its_place(sizes, block, bottleneck):
    _, variables = _init(sizes, block)
    sd = _fake_torchvision(sizes, bottleneck)
    out = torchvision_to_flax(sd, variables, stage_sizes=sizes, map_head=True)
    name = block.__name__
    p, s = out["params"], out["batch_stats"]
    np.testing.assert_allclose(
        p["conv_init"]["kernel"], sd["conv1.weight"].transpose(2, 3, 1, 0), rtol=1e-6
    )
    np.testing.assert_allclose(s["bn_init"]["var"], sd["bn1.running_var"], rtol=1e-6)
    last = f"{name}_{sum(sizes) - 1}"
    np.testing.assert_allclose(
        p[last]["Conv_1"]["kernel"],
        sd[f"layer{len(sizes)}.{sizes[-1] - 1}.conv2.weight"].transpose(2, 3, 1, 0),
        rtol=1e-6,
    )
    first2 = f"{name}_{sizes[0]}"
    np.testing.assert_allclose(
        p[first2]["norm_proj"]["scale"], sd["layer2.0.downsample.1.weight"], rtol=1e-6
    )
    np.testing.assert_allclose(
        s[first2]["norm_proj"]["mean"], sd["layer2.0.downsample.1.running_mean"], rtol=1e-6
    )
    np.testing.assert_allclose(p["head"]["kernel"], sd["fc.weight"].T, rtol=1e-6)
    # every leaf was replaced (shapes equal, values differ from the Flax init)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(out), strict=True):
        assert np.shape(a) == np.shape(b)
        assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_head_is_kept_unless_mapped():
    _, variables = _init((2, 2), ResNetBlock)
    out = torchvision_to_flax(_fake_torchvision((2, 2), False), variables, stage_sizes=(2, 2))
    np.testing.assert_array_equal(
        out["params"]["head"]["kernel"], variables["params"]["head"]["kernel"]
    )


def test_one_channel_stem_sums_rgb_kernels():
    _, variables = _init((2, 2), ResNetBlock, channels=1)
    sd = _fake_torchvision((2, 2), False)
    out = torchvision_to_flax(sd, variables, stage_sizes=(2, 2))
    w = sd["conv1.weight"]  # [O, 3, 7, 7]
    expected = np.stack([w[o, 0] + w[o, 1] + w[o, 2] for o in range(w.shape[0])])  # [O, 7, 7]
    np.testing.assert_allclose(
        out["params"]["conv_init"]["kernel"][:, :, 0, :],
        expected.transpose(1, 2, 0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_bottleneck_weights_into_basic_config_fail_naming_parameter():
    _, variables = _init((2, 2), ResNetBlock)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight|layer1\.0\.conv3"):
        torchvision_to_flax(_fake_torchvision((2, 2), True), variables, stage_sizes=(2, 2))


def test_7x7_stem_into_small_input_fails_naming_conv1():
    _, variables = _init((2, 2), ResNetBlock, small_input=True)
    with pytest.raises(ValueError, match=r"conv1\.weight.*small_input"):
        torchvision_to_flax(_fake_torchvision((2, 2), False), variables, stage_sizes=(2, 2))


# ---------------------------------------------------------------------------------------------
# model.padding
# ---------------------------------------------------------------------------------------------


def _randomised(variables, seed):
    """Every leaf moved off its initial value (the zero-initialised last BatchNorm of each block
    would otherwise hide its branch), BatchNorm variances positive."""
    rng = np.random.default_rng(seed)

    def move(path, x):
        if path[-1].key == "var":
            return rng.uniform(0.5, 2.0, size=x.shape).astype(np.float32)
        return (np.asarray(x) + rng.normal(size=x.shape) * 0.5).astype(np.float32)

    return jax.tree_util.tree_map_with_path(move, variables)


# Logits of the code before model.padding existed (the commit that added the option), for
# ResNet((1, 1), block, num_labels=3, num_filters=4) with `_randomised(init, 1)` on `_PIN_X`.
_PIN_LOGITS = {
    "basic": [[16.71811294555664, -65.49608612060547, 67.92893981933594],
              [22.686630249023438, -66.88188171386719, 63.201019287109375]],
    "bottleneck": [[68.88231658935547, 3.3553102016448975, 37.86817169189453],
                   [115.49589538574219, -19.477827072143555, 63.37192916870117]],
}  # fmt: skip


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_padding_same_is_the_default_and_computes_what_it_did_before(block):
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    cfg = {"stage_sizes": [1, 1], "block": block, "num_filters": 4, "small_input": False}
    default = create_model(cfg, 3)
    same = create_model({**cfg, "padding": "same", "init_from": None}, 3)
    torchvision = create_model({**cfg, "padding": "torchvision"}, 3)
    variables = _randomised(default.init(jax.random.key(0), x, train=False), 1)
    logits = np.asarray(default.apply(variables, x, train=False))
    np.testing.assert_array_equal(np.asarray(same.apply(variables, x, train=False)), logits)
    np.testing.assert_allclose(logits, _PIN_LOGITS[block], rtol=1e-5)
    # The option changes the numbers (stride-2 convolutions and max-pool on 16 and 8 px).
    other = np.asarray(torchvision.apply(variables, x, train=False))
    assert np.max(np.abs(other - logits)) > 1e-2


def test_paddings_agree_where_no_stride_2_layer_pads():
    # small_input and one stage: only stride-1 3x3 convolutions, where SAME is symmetric.
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 1)).astype(np.float32)
    cfg = {"stage_sizes": [2], "block": "basic", "num_filters": 4, "small_input": True}
    a, b = create_model(cfg, 3), create_model({**cfg, "padding": "torchvision"}, 3)
    variables = _randomised(a.init(jax.random.key(0), x, train=False), 2)
    np.testing.assert_allclose(
        a.apply(variables, x, train=False), b.apply(variables, x, train=False), rtol=1e-6
    )


def test_unknown_padding_is_a_clear_error():
    with pytest.raises(ValueError, match=r"padding 'valid'.*'same', 'torchvision'"):
        create_model({"stage_sizes": [1], "padding": "valid"}, 3)
    config = get_config("catalog_none_smoke")
    config.model.padding = "torch"
    assert any(
        p.startswith("model.padding must be 'same'") and "'torch'" in p
        for p in validate.problems(config)
    )


# ---------------------------------------------------------------------------------------------
# model.init_from: a suite run folder (no torch needed)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits()


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, splits):
    """A finished 2-epoch run of the trainer tests' tiny ResNet on synthetic splits."""
    workdir = tmp_path_factory.mktemp("source") / "catalog_none/none/cutoff6/seed0"
    record = trainer.train_and_evaluate(
        make_config(), seed=0, cutoff=6, workdir=workdir, progress=False, splits=splits
    )
    return workdir, record


def _restored_best(workdir, record, splits):
    """The source run's best checkpoint, read back the way its final evaluation reads it."""
    setup = trainer._setup(make_config(), 0, 6, splits)
    state = setup.init(jax.random.PRNGKey(0))
    checkpoints = Checkpoints(workdir, keep_last=2, keep_best=1)
    try:
        return checkpoints.restore_state(record["val"]["best_step"], state)
    finally:
        checkpoints.close()


def _sha256_of_folder(folder):
    """The documented folder hash, computed here independently."""
    lines = []
    for p in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            lines.append(f"{rel}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def test_init_from_a_run_folder_takes_its_best_backbone_and_a_fresh_head(source_run, splits):
    workdir, record = source_run
    best = _restored_best(workdir, record, splits)
    config = make_config(seed=5)
    config.model.init_from = str(workdir)
    fresh = trainer._setup(config, 5, 6, splits).init(jax.random.PRNGKey(5)).variables
    for form in (workdir, workdir / "checkpoints", workdir / "checkpoints" / str(best.step)):
        config.model.init_from = str(form)
        variables, provenance = initial_variables(config, fresh)
        for collection in ("params", "batch_stats"):
            ours, theirs = _flat(variables[collection]), _flat(best.variables[collection])
            assert ours.keys() == theirs.keys()
            for path, value in ours.items():
                if path[0] == "head":
                    expected = _flat(fresh[collection])[path]
                    assert not np.array_equal(value, theirs[path])
                else:
                    expected = theirs[path]
                np.testing.assert_array_equal(np.asarray(value), np.asarray(expected))
        assert provenance == {
            "format": "suite",
            "name": "catalog_none/none/cutoff6/seed0",
            "step": record["val"]["best_step"],
            "sha256": _sha256_of_folder(workdir / "checkpoints" / str(best.step)),
        }


def test_a_fine_tuned_run_starts_from_the_source_and_resumes_from_its_own_checkpoint(
    source_run, splits, tmp_path
):
    workdir, record = source_run
    copy = tmp_path / "pretrained/catalog_none/none/cutoff6/seed0"
    shutil.copytree(workdir, copy)
    best = _restored_best(workdir, record, splits)
    # A learning rate so small that the parameters stay the initial ones to float32 precision.
    config = make_config(num_epochs=1, learning_rate=1e-9, scheme="inverse")
    config.model.init_from = str(copy)
    run_dir = tmp_path / "fine_tuned"
    with pytest.raises(trainer.Interrupted):
        trainer.train_and_evaluate(
            config, seed=1, cutoff=6, workdir=run_dir, progress=False, splits=splits,
            interrupt_at_step=3,
        )  # fmt: skip
    source_hash = _sha256_of_folder(copy / "checkpoints" / str(best.step))
    shutil.rmtree(copy)  # a resumed run needs only its own checkpoint
    result = trainer.train_and_evaluate(
        config, seed=1, cutoff=6, workdir=run_dir, progress=False, splits=splits
    )
    assert result["status"] == "finished"
    init = result["data"]["provenance"]["test"]["init_from"]
    assert init["sha256"] == source_hash and init["step"] == record["val"]["best_step"]
    final = _flat(_restored_best(run_dir, result, splits).params)
    for path, value in _flat(best.params).items():
        if path[0] != "head":
            np.testing.assert_allclose(np.asarray(final[path]), np.asarray(value), atol=1e-6)


def test_a_suite_checkpoint_of_another_network_names_the_first_mismatch(source_run, splits):
    workdir, _ = source_run
    config = make_config()
    config.model.num_filters = 8
    config.model.init_from = str(workdir)
    fresh = trainer._setup(config, 0, 6, splits).init(jax.random.PRNGKey(0)).variables
    with pytest.raises(
        ValueError,
        match=r"first mismatching parameter: params/ResNetBlock_0/BatchNorm_0/bias has shape "
        r"\(4,\) in .* and \(8,\) here; .*num_filters",
    ):
        initial_variables(config, fresh)


def test_bad_init_from_paths_are_clear_config_errors(source_run, tmp_path):
    workdir, _ = source_run
    (tmp_path / "weights.npz").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "missing.pth"): "does not exist",
        str(tmp_path / "weights.npz"): "a file without a .pth/.pt/.safetensors suffix",
        str(tmp_path / "empty"): "a folder holding no suite checkpoint",
    }
    for path, message in cases.items():
        config = get_config("catalog_none_smoke")
        config.model.init_from = path
        found = validate.problems(config)
        assert len(found) == 1 and message in found[0] and "suite run folder" in found[0], found
    config = get_config("catalog_none_smoke")
    config.model.name = "linear"
    config.model.init_from = str(workdir)
    assert validate.problems(config) == [
        "model.init_from needs a ResNet; the linear model has no backbone"
    ]
    config.model.name = "resnet"
    assert validate.problems(config) == []


def test_a_relative_init_from_path_reads_the_same_checkpoint(source_run, splits, monkeypatch):
    """orbax reads no tree metadata through a relative path; runs give paths relative to the
    working folder (`results/runs/...`), so the loader must resolve them first."""
    workdir, record = source_run
    step = workdir / "checkpoints" / str(record["val"]["best_step"])
    absolute = load_suite_checkpoint(step)
    monkeypatch.chdir(workdir.parent)
    relative = load_suite_checkpoint(step.relative_to(workdir.parent))
    for collection in ("params", "batch_stats"):
        ours, theirs = _flat(relative[collection]), _flat(absolute[collection])
        assert ours.keys() == theirs.keys() and ours
        for path, value in ours.items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(theirs[path]))


def test_a_run_folder_of_another_network_stops_at_validation(source_run):
    """A cpu-tier source (8 filters) into a smoke-tier config (4) is refused before any run,
    naming the first mismatching parameter, as the run itself would."""
    workdir, _ = source_run
    config = get_config("catalog_none_smoke")
    config.model.num_filters = 8
    config.model.init_from = str(workdir)
    (found,) = validate.problems(config)
    # The message of the run's own check (test above), before any run.
    assert re.search(
        r"first mismatching parameter: params/ResNetBlock_0/BatchNorm_0/bias has shape "
        r"\(4,\) in .* and \(8,\) here; .*num_filters",
        found,
    ), found
    assert found.startswith(f"model.init_from {str(workdir)!r}: ")


def test_an_unreadable_suite_checkpoint_stops_at_validation(source_run, tmp_path):
    workdir, record = source_run
    copy = tmp_path / "copy"
    shutil.copytree(workdir / "checkpoints", copy / "checkpoints")
    step = copy / "checkpoints" / str(record["val"]["best_step"])
    for f in (step / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"not a checkpoint")
    config = get_config("catalog_none_smoke")
    config.model.init_from = str(step)
    (found,) = validate.problems(config)
    assert f"{step.absolute()} cannot be read as a suite checkpoint" in found, found


# ---------------------------------------------------------------------------------------------
# model.init_from: weights files, with torch absent (a torch-free environment, simulated)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def without_torch(monkeypatch):
    """`import torch` fails and `importlib.util.find_spec("torch")` is None, as without it."""
    monkeypatch.setitem(sys.modules, "torch", None)


def _tiny_safetensors(path, dtype=np.float32, **kwargs):
    """A one-stage torchvision/timm-named ResNet (4 filters, 7x7 RGB stem) as safetensors."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    sd = _fake_torchvision((1,), False, **kwargs)
    save_file({k: np.asarray(v, np.int64 if v.ndim == 0 else dtype) for k, v in sd.items()}, path)
    return sd


def _file_config(path):
    """The smoke catalog config with the tiny file's network (7x7 stem, torchvision padding)."""
    config = get_config("catalog_none_smoke")
    config.model.small_input = False
    config.model.padding = "torchvision"
    config.model.init_from = str(path)
    return config


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "is empty"),
        (b"weights, I promise\n", "is not a file torch.save writes (no zip archive, no pickle)"),
        (bytes(range(256)) * 4, "is not a file torch.save writes (no zip archive, no pickle)"),
    ],
)
def test_a_bad_pth_without_torch_names_the_file_the_problem_and_the_package(
    without_torch, tmp_path, content, problem
):
    path = tmp_path / "resnet18.pth"
    path.write_bytes(content)
    found = validate.problems(_file_config(path))
    assert len(found) == 2, found
    assert found[0] == f"model.init_from {str(path)!r} needs torch: " + resnet_weights.TORCH_INSTALL
    assert found[1] == f"model.init_from: {str(path)!r} {problem}; " + (
        "save one with torch.save(model.state_dict(), path)"
    )


def test_a_torch_zip_without_torch_only_needs_torch(without_torch, tmp_path):
    path = tmp_path / "resnet18.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("resnet18/data.pkl", b"\x80\x02}q\x00.")
    assert validate.problems(_file_config(path)) == [
        f"model.init_from {str(path)!r} needs torch: " + resnet_weights.TORCH_INSTALL
    ]


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "header too small"),
        (b"weights, I promise\n", "cannot be read as a safetensors file"),
        (bytes(range(256)) * 4, "cannot be read as a safetensors file"),
    ],
)
def test_a_bad_safetensors_file_stops_at_validation(tmp_path, content, problem):
    pytest.importorskip("safetensors")
    path = tmp_path / "resnet18.safetensors"
    path.write_bytes(content)
    (found,) = validate.problems(_file_config(path))
    assert found.startswith(f"model.init_from: {str(path)!r} cannot be read"), found
    assert problem in found and "model.safetensors" in found


def test_a_bfloat16_safetensors_file_is_refused_with_the_fix(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "bf16.safetensors"
    header = json.dumps({"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    (found,) = validate.problems(_file_config(path))
    assert "holds BF16 tensors" in found and "convert it to float32" in found, found


def test_safetensors_of_another_network_name_the_first_mismatch_at_validation(tmp_path):
    path = tmp_path / "wide.safetensors"
    _tiny_safetensors(path, filters=8)
    (found,) = validate.problems(_file_config(path))
    # safetensors keeps its tensors sorted by name: bn1.bias comes first.
    assert "first mismatching parameter: torchvision 'bn1.bias' has shape (8,)" in found, found
    assert found.startswith(f"model.init_from {str(path)!r}: ")


def test_safetensors_weights_start_a_run_without_torch(without_torch, tmp_path, monkeypatch):
    """The issue's done-criterion: a safetensors ResNet initialises a run where torch is absent;
    the backbone is the file's (converted), the head fresh, the provenance the file's."""
    from experiments import records
    from experiments import run as run_mod

    monkeypatch.setattr(records, "environment", lambda: {"packages": {}, "git_commit": None})
    path = tmp_path / "tiny.safetensors"
    sd = _tiny_safetensors(path, dtype=np.float16)  # half precision, as some hub files are
    config = _file_config(path)
    assert validate.problems(config) == []
    model = create_model(config.model.to_dict(), 10)
    fresh = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    variables, provenance = initial_variables(config, fresh)
    assert provenance == {
        "format": "safetensors",
        "name": "tiny.safetensors",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    stem = np.asarray(sd["conv1.weight"], np.float16).astype(np.float32).sum(axis=1)
    np.testing.assert_allclose(
        variables["params"]["conv_init"]["kernel"][:, :, 0, :], stem.transpose(1, 2, 0), rtol=1e-6
    )
    np.testing.assert_array_equal(
        variables["params"]["head"]["kernel"], fresh["params"]["head"]["kernel"]
    )
    out = tmp_path / "runs"
    argv = ["--config", "catalog_none_smoke", "--output-dir", str(out), "--no-progress"]
    for field in ("small_input=False", "padding=torchvision", f"init_from={path}"):
        argv += ["--set", f"model.{field}"]
    assert run_mod.main(argv) == 0
    record = json.loads((out / "catalog_none/none/cutoff6/seed0/record.json").read_text())
    assert record["status"] == "finished"
    assert record["data"]["provenance"]["init_from"] == provenance


def test_a_safetensors_file_without_the_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    path = tmp_path / "resnet18.safetensors"
    path.write_bytes(b"{}")
    assert validate.problems(_file_config(path)) == [
        f"model.init_from {str(path)!r} needs safetensors: " + resnet_weights.SAFETENSORS_INSTALL
    ]
    assert "[experiments,safetensors]" in resnet_weights.SAFETENSORS_INSTALL
