"""torchvision ResNet weights in the suite's Flax ResNet, proven against torch itself.

torchvision is not needed: `TorchResNet` below re-implements torchvision's ResNet
(`torchvision/models/resnet.py`, v1.5: the stride of a bottleneck sits on its 3x3 convolution)
with its exact module names (conv1, bn1, layer1..4 with conv/bn/downsample.0/.1, fc), so its
`state_dict` has torchvision's keys and shapes. Weights and BatchNorm running statistics are
random (nothing is downloaded), so a wrong mapping, layout or padding changes the logits.
Skipped where torch is not installed (an optional test dependency).
"""

from __future__ import annotations

import hashlib
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from experiments import execute, records  # noqa: E402
from experiments import run as run_mod  # noqa: E402
from experiments.configs import get_config, validate  # noqa: E402
from experiments.models import create_model  # noqa: E402
from experiments.pretrained import initial_variables  # noqa: E402
from experiments.resnet_weights import torchvision_to_flax  # noqa: E402

# ---------------------------------------------------------------------------------------------
# torchvision's ResNet, re-implemented
# ---------------------------------------------------------------------------------------------


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.relu, self.downsample = nn.ReLU(inplace=True), downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv1x1(inplanes, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu, self.downsample = nn.ReLU(inplace=True), downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class TorchResNet(nn.Module):
    """torchvision.models.ResNet(block, layers, num_classes); `width` 64 as torchvision (smaller
    only for the trainer test's tiny checkpoint)."""

    def __init__(self, block, layers, num_classes, width=64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, n in enumerate(layers):
            layer = self._make_layer(block, width * 2**i, n, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", layer)
        self.num_layers = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 2 ** (len(layers) - 1) * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], "basic"),
    "resnet50": (Bottleneck, [3, 4, 6, 3], "bottleneck"),
}


def torch_resnet(arch, num_classes=7, seed=0, **kwargs):
    """torchvision's `arch` with random weights and random BatchNorm statistics, in eval mode."""
    block, layers, _ = ARCHS[arch]
    torch.manual_seed(seed)
    model = TorchResNet(block, layers, num_classes, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def flax_resnet(arch, num_labels=7, padding="torchvision", channels=3):
    """(jitted apply, variables' shapes, stage sizes) of the suite's network for `arch`; the
    shapes suffice where the conversion replaces every leaf (map_head=True)."""
    _, layers, block = ARCHS[arch]
    cfg = {"stage_sizes": layers, "block": block, "num_filters": 64, "small_input": False}
    model = create_model({**cfg, "padding": padding}, num_labels)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, channels)), train=False)
    )
    return jax.jit(lambda v, x: model.apply(v, x, train=False)), shapes, layers


def state_dict_of(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def torch_logits(model, x_nchw):
    with torch.no_grad():
        return model(torch.from_numpy(x_nchw)).numpy()


# ---------------------------------------------------------------------------------------------
# The conversion gives torchvision's logits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_converted_torchvision_resnet_gives_the_same_logits(arch):
    reference = torch_resnet(arch)
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    expected = torch_logits(reference, x)
    model, variables, layers = flax_resnet(arch)
    variables = torchvision_to_flax(
        state_dict_of(reference), variables, stage_sizes=layers, map_head=True
    )
    logits = np.asarray(model(variables, x.transpose(0, 2, 3, 1)))
    scale = np.max(np.abs(expected))
    print(f"{arch}: max |logit| {scale:.3g}, max abs error {np.max(np.abs(logits - expected)):.3g}")
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * max(1.0, scale))
    # Not trivially equal: the suite's default padding gives other logits with these weights.
    same, _, _ = flax_resnet(arch, padding="same")
    shifted = np.asarray(same(variables, x.transpose(0, 2, 3, 1)))
    assert np.max(np.abs(shifted - expected)) > 1e-2 * scale


def test_one_channel_stem_gives_the_logits_of_the_grey_image_in_rgb():
    reference = torch_resnet("resnet18")
    grey = np.random.default_rng(1).normal(size=(2, 1, 64, 64)).astype(np.float32)
    expected = torch_logits(reference, np.repeat(grey, 3, axis=1))
    model, variables, layers = flax_resnet("resnet18", channels=1)
    variables = torchvision_to_flax(
        state_dict_of(reference), variables, stage_sizes=layers, map_head=True
    )
    assert variables["params"]["conv_init"]["kernel"].shape == (7, 7, 1, 64)
    logits = np.asarray(model(variables, grey.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.max(np.abs(expected)))


def test_resnet50_weights_into_a_resnet18_config_name_the_first_mismatching_parameter():
    _, variables, layers = flax_resnet("resnet18")
    with pytest.raises(ValueError, match=r"first mismatching parameter: torchvision "
                       r"'layer1\.0\.conv1\.weight' has shape \(1, 1, 64, 64\)"):  # fmt: skip
        torchvision_to_flax(state_dict_of(torch_resnet("resnet50")), variables, stage_sizes=layers)


def test_resnet18_weights_into_a_resnet34_config_name_what_is_left_unset():
    model = create_model({"stage_sizes": [3, 4, 6, 3], "num_filters": 64, "small_input": False}, 7)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    with pytest.raises(ValueError, match=r"suite's params/ResNetBlock_2/.*no counterpart"):
        torchvision_to_flax(
            state_dict_of(torch_resnet("resnet18")), variables, stage_sizes=[3, 4, 6, 3]
        )


def test_7x7_stem_into_a_small_input_stem_fails_naming_conv1():
    model = create_model({"stage_sizes": [2, 2, 2, 2], "num_filters": 64, "small_input": True}, 7)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    with pytest.raises(ValueError, match=r"'conv1\.weight' has shape \(7, 7, 3, 64\).*"
                       r"conv_init/kernel has \(3, 3, 3, 64\).*small_input=False"):  # fmt: skip
        torchvision_to_flax(
            state_dict_of(torch_resnet("resnet18")), variables, stage_sizes=[2, 2, 2, 2]
        )


# ---------------------------------------------------------------------------------------------
# Through the trainer: model.init_from
# ---------------------------------------------------------------------------------------------


def _smoke(tmp_path, *sets):
    """`python -m experiments.run` on the smoke tier's catalog (1-channel 28 px images)."""
    args = ["--config", "catalog_none_smoke", "--output-dir", str(tmp_path), "--no-progress"]
    return run_mod.main([*args, *(a for s in sets for a in ("--set", s))])


def test_init_from_a_torchvision_file_and_then_from_that_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(records, "environment", lambda: {"packages": {}, "git_commit": None})
    # A tiny torchvision-format checkpoint: one stage of one basic block, 4 filters, 7x7 RGB stem.
    source = TorchResNet(BasicBlock, [1], num_classes=1000, width=4)
    path = tmp_path / "tiny_resnet.pth"
    torch.save(source.state_dict(), path)
    shape = ["model.stage_sizes=[1]", "model.num_filters=4", "model.small_input=False"]
    assert (
        _smoke(tmp_path / "a", *shape, "model.padding=torchvision", f"model.init_from={path}") == 0
    )
    run_a = tmp_path / "a/catalog_none/none/cutoff6/seed0"
    record = json.loads((run_a / "record.json").read_text())
    assert record["status"] == "finished"
    init = record["data"]["provenance"]["init_from"]
    assert init == {
        "format": "torchvision",
        "name": "tiny_resnet.pth",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }

    # Fine-tune from that run folder (its best checkpoint), another method: same backbone.
    assert (
        _smoke(tmp_path / "b", *shape, "model.padding=torchvision", f"model.init_from={run_a}") == 0
    )
    record_b = json.loads((tmp_path / "b/catalog_none/none/cutoff6/seed0/record.json").read_text())
    init_b = record_b["data"]["provenance"]["init_from"]
    assert init_b["format"] == "suite" and init_b["name"] == "catalog_none/none/cutoff6/seed0"
    assert init_b["step"] == record["val"]["best_step"]
    assert re.fullmatch(r"[0-9a-f]{64}", init_b["sha256"])

    # The source run's padding is checked against the config's (from its record).
    capsys.readouterr()
    assert _smoke(tmp_path / "c", *shape, f"model.init_from={run_a}") == execute.EXIT_USAGE
    assert "trained with model.padding='torchvision'" in capsys.readouterr().err


def test_torchvision_file_needs_torchvision_padding_at_validation(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(TorchResNet(BasicBlock, [1], 3, width=4).state_dict(), path)
    config = get_config("catalog_none_smoke")
    config.model.small_input = False  # the file's 7x7 stem (validation checks every shape)
    config.model.init_from = str(path)
    assert any("set model.padding=torchvision" in p for p in validate.problems(config))
    config.model.padding = "torchvision"
    assert validate.problems(config) == []


# ---------------------------------------------------------------------------------------------
# safetensors files (torchvision and timm names) and files that are no weights
# ---------------------------------------------------------------------------------------------


def _resnet18_config(path):
    config = get_config("sleevetype_none", tier="gpu")  # the ResNet-18 shape, RGB photos
    config.model.dtype = "float32"  # torch's logits are float32 (the tier computes in bfloat16)
    config.model.padding = "torchvision"
    config.model.init_from = str(path)
    return config


def test_safetensors_give_the_variables_of_the_pth_route_and_torchs_logits(tmp_path):
    """One network saved three ways: torch.save (.pth), safetensors with torchvision's keys,
    and safetensors as timm's hub files hold it (same names, no num_batches_tracked, float16
    would be lossy so float32 here); all three initialise the same variables, and with the
    head mapped those give the logits of torch's own forward pass."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    reference = torch_resnet("resnet18")
    state = state_dict_of(reference)
    paths = {"pth": tmp_path / "r18.pth", "tv": tmp_path / "r18.safetensors"}
    torch.save(reference.state_dict(), paths["pth"])
    save_file(state, str(paths["tv"]))
    paths["timm"] = tmp_path / "model.safetensors"
    save_file({k: v for k, v in state.items() if "num_batches" not in k}, str(paths["timm"]))

    model = create_model(_resnet18_config(paths["pth"]).model.to_dict(), 7)
    fresh = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
    got = {}
    for name, path in paths.items():
        config = _resnet18_config(path)
        assert validate.problems(config) == [], name
        got[name], provenance = initial_variables(config, fresh)
        assert provenance["format"] == ("torchvision" if name == "pth" else "safetensors")
        assert provenance["name"] == path.name
        assert provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for name in ("tv", "timm"):
        for a, b in zip(jax.tree.leaves(got["pth"]), jax.tree.leaves(got[name]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    variables = got["timm"]
    variables["params"]["head"] = {"kernel": state["fc.weight"].T, "bias": state["fc.bias"]}
    x = np.random.default_rng(2).normal(size=(2, 3, 64, 64)).astype(np.float32)
    expected = torch_logits(reference, x)
    logits = np.asarray(model.apply(variables, x.transpose(0, 2, 3, 1), train=False))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.max(np.abs(expected)))


def test_resnet50_safetensors_into_a_resnet18_config_stop_at_validation(tmp_path):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    path = tmp_path / "resnet50.safetensors"
    save_file(state_dict_of(torch_resnet("resnet50")), str(path))
    (found,) = validate.problems(_resnet18_config(path))
    # In the file's (sorted) order, the first of ResNet-50's parameters without a place here.
    assert found.startswith(f"model.init_from {str(path)!r}: torchvision parameter 'layer1.0.bn3")
    assert "the architectures differ; use the matching model preset" in found


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "is empty"),
        (b"weights, I promise\n", "is not a file torch.save writes (no zip archive, no pickle)"),
        (bytes(range(256)) * 4, "is not a file torch.save writes (no zip archive, no pickle)"),
        (b"\x80\x02garbage", "cannot be read as a torch state_dict (UnpicklingError: "),
    ],
    ids=["empty", "text", "bytes", "bad pickle"],
)
def test_a_pth_that_holds_no_weights_stops_before_any_run(tmp_path, capsys, content, problem):
    """Issue 27: such a file used to pass validation, start the run, print a long traceback
    and leave a failed record and a lock; now it is a config error (exit 2), nothing written."""
    path = tmp_path / "resnet18.pth"
    path.write_bytes(content)
    out = tmp_path / "runs"
    shape = ["model.stage_sizes=[1]", "model.num_filters=4", "model.small_input=False"]
    code = _smoke(out, *shape, "model.padding=torchvision", f"model.init_from={path}")
    assert code == execute.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"  model.init_from: {str(path)!r} {problem}" in err, err
    assert "Traceback" not in err and len(err.splitlines()) < 8, err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
