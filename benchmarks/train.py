"""Training throughput of the cpu-tier and gpu-tier models: `python -m benchmarks.train`.

For each tier's model (from `experiments.configs`: catalog task, weighted BCE with the `inverse`
scheme, the tier's ResNet, batch size and image size) this measures, in the same run and
interleaved round by round (`benchmarks.common.time_interleaved`):

- data-parallel: the trainer's step (`experiments.steps.make_train_step`): `jax.jit` over a
  mesh of all local devices, batch sharded, state replicated and donated, the global host batch
  placed with `shard_batch`;
- reference: a plain `jax.jit` of the same step maths on one device, no mesh, no shardings, no
  donation, the batch placed with `jax.device_put`;
- torch (when PyTorch is installed; the row says why it is missing otherwise): the same
  network (`torch_resnet`, parameter counts checked equal), loss and optimiser in PyTorch,
  channels_last, one intra-op thread (`torch_train_step`).

All include the conversion of the uint8 host batch, as training does. Reported: images/s of
each, DP / ref time (goal <= 1.05 on one device: the mesh machinery must cost nothing), the
speed of the trainer's step against PyTorch's (PyTorch step time / DP step time over the
medians, and the spread of the per-round ratios; goal >= 1.0 on one core), and the wall time
of the first call (tracing + compilation + one step).

Run as `python -m benchmarks.train`, the process is pinned to one core with one XLA thread and
XLA's YNNPACK fusions off (`experiments.xla.configure_cpu`, before JAX starts; `--ynnpack`
keeps them). XLA_FLAGS and the CPU affinity are written to the JSON.

What was tried for the cpu-tier step (ResNet [1, 1, 1] basic x8, 3x3 stem, batch 128, 28 x 28
x 1, weighted BCE, AdamW), on a shared 2-core AMD EPYC (AVX2) at load average ~10. Each line
is one process with the PyTorch step interleaved; medians of CPU time (process_time, less
disturbed by other load than wall time) over 8-10 rounds; speed = PyTorch time / JAX time:

- XLA defaults: 0.54x and 0.56x in two series (201 vs 109 ms; 213 vs 119 ms); wall time
  per-round median 0.52x (range 0.40-0.65x). The issue's 0.55x, reproduced.
- YNNPACK fusions off (`--xla_cpu_experimental_ynn_fusion_type=`): 0.60x and 0.61x (181 vs
  108 ms; 157 vs 96 ms): a 1.10x faster step, the one change kept (`experiments.xla`). Why:
  XLA hands each convolution's kernel gradient (a convolution with a 28 x 28 window over the
  batch) to YNNPACK: 45 ms median CPU time for the 8 -> 8 stage-0 convolution, 8.8 ms with
  Eigen. The loss and gradients agree to float32 rounding (`tests/test_xla.py`).
- XNNPACK off (`--xla_cpu_use_xnnpack=false`): 0.48x, slower. oneDNN
  (`--xla_cpu_use_onednn=true`): had not finished 12 steps after two minutes; unusable.
- One thread vs two, pinned or not: the same (the issue's measurement); PyTorch with two
  threads on the loaded machine falls to 214-343 images/s, so both run one thread.
- Convolutions written differently, per op (CPU time, 128 x 28 x 28 x 8): the kernel gradient
  as im2col + one matmul 73-76 ms and as nine per-tap dots 69 ms, against Eigen's 8.8 ms (XLA's
  CPU concatenation of the nine patches is slow); the stage-0 forward as im2col + matmul 160 ms
  against 19 ms. The 1-channel stem as nine shifted multiply-adds (no convolution at all, same
  parameters; its loss and gradients matched nn.Conv's to rtol 1e-4): the whole step 1.05x slower
  (166 vs 157 ms CPU, YNNPACK off), as the nine column reductions of its gradient cost more
  than the convolution they replace. Not kept.
- Not measured for lack of time: NCHW layout, BatchNorm's share, the uint8 -> float
  conversion (one fused elementwise pass over 100 KB of input, against ~3 MB per activation of
  stage 0), donation (the trainer donates already), other batch sizes per core, and the
  compilation cache across runs.

`python -m benchmarks.train` itself (same machine, one core, 15 rounds, wall time): cpu tier
0.585x PyTorch (837 vs 1,430 images/s, per-round 0.44-0.77x), DP / ref 0.991; gpu-tier
ResNet-18 at batch 32: 0.787x (2.29 vs 2.91 images/s, 0.72-0.99x), DP / ref 0.95. With
`--ynnpack` (XLA defaults, a later run under heavier load): cpu tier 0.514x (0.43-0.69x).

Since the cpu tier's recipe moved to batch 32 (experiments/configs/tiers.py), same machine, one
core, one process per line unless said otherwise:

- `python -m benchmarks.train --tiers cpu` at the tier's batch 32: 0.796x PyTorch (1,080 vs
  1,350 images/s, per-round 0.64-1.24x) and 0.782x (0.65-1.22x) in two runs: the smaller batch
  narrows the gap (0.585x at batch 128).
- oneDNN for XLA's dots and convolutions (`--xla_cpu_use_onednn=true
  --xla_cpu_experimental_onednn_custom_call=true`; with the first flag alone the step hangs, as
  above): 0.777x (0.66-0.88x), beside 0.782x with the defaults: no gain.
- XNNPACK fusions (`--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce`, or
  `individual_convolution`, or `--xla_cpu_experimental_xnn_graph_fusion_mode=
  XNN_GRAPH_FUSION_MODE_GREEDY`): 27.0-32.3 ms per step against 29.6 ms with the defaults, in
  separate processes: inside the machine's drift, no measurable gain.
- Where the time goes at batch 32 (one process, interleaved rounds, CPU time): the gradient of
  the loss 28.0 ms, its forward 9.1 ms; with every BatchNorm replaced by a per-channel affine map
  24.4 ms, so BatchNorm is about 13% of the step. One 8 -> 8 3x3 convolution at 28 x 28: 1.5 ms
  forward, 2.7 ms for both its gradients; scaled by MACs the network's convolutions account for
  about 22 of the 28 ms. A free BatchNorm would still leave the step near 0.9x PyTorch's.
- The 'cells' augmentation inside the step: 0.15-0.24 ms, under 1%. The trainer's loop (metrics
  read one step late, a checkpoint per epoch) costs no more than the bare step within the
  machine's drift; reading the metrics synchronously every step would add ~10%.
- The machine drifts: the same script measured 27 ms and 39 ms per step 15 minutes apart, so
  only ratios taken in one process, round by round, are comparable.

Where the time goes: the per-op times of the 3x3 convolutions (forward, input gradient, kernel
gradient of the stem and the six block convolutions) add up to most of the step; XLA's CPU
convolution kernels run these 8-32-channel convolutions at about 4 GMAC/s, against oneDNN's
JIT kernels in PyTorch. With the flags above the goal (>= 1.0x) is not reached: best 0.61x at
batch 128 and 0.80x at the tier's batch 32. Closing the rest needs faster convolution kernels in
XLA's CPU backend than any of its flags selects.

On a CPU the gpu-tier model (ResNet-18 at 56 x 56, batch 256) takes tens of seconds per step,
so there its batch is cut to `--cpu-gpu-batch` (default 32) and its steps to `--gpu-steps`
(default 6) rather than the accelerator defaults; the table's batch column says what ran.

  python -m benchmarks.train                 # both tiers, table + benchmarks/out/train.json
  python -m benchmarks.train --tiers cpu --steps 50
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # before JAX starts: one core, one thread (see experiments.xla)
    from experiments import xla

    xla.configure_cpu(threads=1, ynnpack="--ynnpack" in sys.argv)

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.common import block, environment, markdown_table, time_interleaved, write_json
from experiments import steps as train_steps
from experiments.configs import get_config
from experiments.models import create_model
from ltweights import weights

NUM_LABELS = 10  # the catalog task's Fashion-MNIST classes
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "train.json"


def reference_train_step(model, tx, loss_fn):
    """The trainer's step maths (`train_step_fn`) as a plain one-device jit: no mesh, no
    shardings, no donation."""
    return jax.jit(train_steps.train_step_fn(model, tx, loss_fn))


def _synthetic_batch(batch_size: int, image_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, image_size, image_size, 1), dtype=np.uint8)
    labels = (rng.random((batch_size, NUM_LABELS)) < 0.2).astype(np.uint8)
    return images, labels


def _first_call_seconds(fn, *args) -> tuple[float, Any]:
    start = time.perf_counter()
    out = block(fn(*args))
    return time.perf_counter() - start, out


# ---------------------------------------------------------------------------------------------
# The same network, loss and optimiser in PyTorch (optional: imported only when present)
# ---------------------------------------------------------------------------------------------


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def torch_resnet(model_config: dict[str, Any], num_labels: int, channels: int = 1):
    """The Flax ResNet of `experiments.models` (same config block) as a `torch.nn.Module`.

    Same layers in the same order: convolutions without bias, BatchNorm after each (momentum
    1 - 0.9 in PyTorch's convention, epsilon 1e-5), basic or bottleneck blocks with a 1x1
    projection shortcut where the shape changes, the 3x3/1 stem (`small_input`) or 7x7/2 stem
    and 3x3/2 max-pool, global average pooling, a dense head with bias. Initialisation differs
    (it does not change the cost). One difference in padding: where Flax's 'SAME' pads a
    stride-2 convolution by (0, 1), PyTorch pads (1, 1); the output shape and the work are
    the same. Use it with `memory_format=torch.channels_last` (NHWC, as Flax).
    """
    import torch  # optional; only imported when present
    from torch import nn

    from experiments.models.resnet import BN_EPSILON, BN_MOMENTUM, PRESETS

    cfg = dict(model_config)
    name = cfg.get("name", "resnet")
    stage_sizes, block = PRESETS[name] if name in PRESETS else (cfg["stage_sizes"], cfg["block"])
    num_filters = int(cfg.get("num_filters", 64))
    small_input = bool(cfg.get("small_input", False))
    expansion = {"basic": 1, "bottleneck": 4}[block]

    def norm(c):
        return nn.BatchNorm2d(c, eps=BN_EPSILON, momentum=1.0 - BN_MOMENTUM)

    def conv(cin, cout, k, stride=1):
        return nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)

    class Block(nn.Module):
        def __init__(self, cin, filters, stride):
            super().__init__()
            cout = filters * expansion
            if block == "basic":
                layers = [conv(cin, filters, 3, stride), norm(filters), nn.ReLU()]
                layers += [conv(filters, filters, 3), norm(filters)]
            else:
                layers = [conv(cin, filters, 1), norm(filters), nn.ReLU()]
                layers += [conv(filters, filters, 3, stride), norm(filters), nn.ReLU()]
                layers += [conv(filters, cout, 1), norm(cout)]
            self.branch = nn.Sequential(*layers)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(conv(cin, cout, 1, stride), norm(cout))

        def forward(self, x):
            residual = x if self.proj is None else self.proj(x)
            return torch.relu(residual + self.branch(x))

    if small_input:
        stem = [conv(channels, num_filters, 3), norm(num_filters), nn.ReLU()]
    else:
        stem = [
            nn.Conv2d(channels, num_filters, 7, 2, padding=3, bias=False),
            norm(num_filters),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
        ]
    layers, cin = list(stem), num_filters
    for i, size in enumerate(stage_sizes):
        for j in range(size):
            stride = 2 if i > 0 and j == 0 else 1
            layers.append(Block(cin, num_filters * 2**i, stride))
            cin = num_filters * 2**i * expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_labels)]
    return nn.Sequential(*layers)


def torch_train_step(config, images: np.ndarray, labels: np.ndarray, pos_weight, neg_weight):
    """A PyTorch train step with the trainer's maths on the same host batch; returns `step()`.

    Per call: uint8 NHWC images -> float32 [-1, 1] (channels_last), forward in train mode,
    weighted BCE (w+ y softplus(-z) + w- (1 - y) softplus(z), summed over labels, averaged over
    the batch), backward, global-norm clipping at `config.grad_clip` (its norm is the step's
    grad_norm), AdamW with weight decay on kernels only, a finiteness check of the parameters.
    The learning-rate schedule is left out (a constant rate costs the same).
    """
    import torch  # optional; only imported when present

    net = torch_resnet(config.model.to_dict(), labels.shape[1], images.shape[-1])
    net = net.to(memory_format=torch.channels_last).train()
    decay = [p for p in net.parameters() if p.ndim > 1]
    other = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": float(config.weight_decay)},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=float(config.learning_rate),
    )
    params = list(net.parameters())
    x_u8 = torch.from_numpy(images).permute(0, 3, 1, 2)  # NCHW view of NHWC: channels_last
    y_u8 = torch.from_numpy(labels)
    w_pos = torch.tensor(np.array(pos_weight, np.float32))  # a copy: JAX arrays are read-only
    w_neg = torch.tensor(np.array(neg_weight, np.float32))
    plain_neg = bool(torch.all(w_neg == 1.0))
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=w_pos, reduction="sum")
    grad_clip = float(config.get("grad_clip", 0.0) or 0.0)
    softplus = torch.nn.functional.softplus

    def step() -> float:
        x = (x_u8.float() * (2.0 / 255.0) - 1.0).contiguous(memory_format=torch.channels_last)
        y = y_u8.float()
        logits = net(x)
        if plain_neg:  # the fused kernel PyTorch users would write
            loss = bce(logits, y) / logits.shape[0]
        else:
            elementwise = w_pos * y * softplus(-logits) + w_neg * (1 - y) * softplus(logits)
            loss = elementwise.sum() / logits.shape[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        opt.step()
        finite = all(bool(torch.isfinite(p).all()) for p in params)
        return float(loss.detach()), float(grad_norm), finite

    return step


def torch_num_params(module) -> int:
    return sum(int(p.numel()) for p in module.parameters())


def _dp_call(model, tx, loss_fn, mesh, images, labels):
    """The trainer's data-parallel step on `mesh` as a call without arguments (it keeps its
    state), and the state holder."""
    step = train_steps.make_train_step(model, tx, loss_fn, mesh)
    dp = {"state": train_steps.create_train_state(model, tx, images.shape[1:], seed=0, mesh=mesh)}

    def call():
        x, y = train_steps.shard_batch(mesh, images), train_steps.shard_batch(mesh, labels)
        dp["state"], metrics = step(dp["state"], x, y)
        return metrics

    return call, dp


def _ref_call(model, tx, loss_fn, images, labels):
    """The reference step (`reference_train_step`) on the first device, as a call without
    arguments."""
    device = jax.devices()[0]
    step = reference_train_step(model, tx, loss_fn)
    ref_mesh = train_steps.make_mesh([device])
    ref = {
        "state": jax.device_put(
            train_steps.create_train_state(model, tx, images.shape[1:], seed=0, mesh=ref_mesh),
            device,
        )
    }

    def call():
        x, y = jax.device_put(images, device), jax.device_put(labels, device)
        ref["state"], metrics = step(ref["state"], x, y)
        return metrics

    return call


def _torch_call(config, counts, images, labels, num_params: int):
    """PyTorch's step on one thread (`torch_train_step`), its net checked to have the Flax
    model's parameter count."""
    import torch

    torch.set_num_threads(1)
    pos_weight, neg_weight = weights.scheme_weights(
        config.scheme, counts, **config.get("scheme_params", {})
    )
    call = torch_train_step(config, images, labels, pos_weight, neg_weight)
    torch_params = torch_num_params(
        torch_resnet(config.model.to_dict(), NUM_LABELS, images.shape[-1])
    )
    if torch_params != num_params:  # the mirror must stay exact (tests check it too)
        raise AssertionError(f"PyTorch net has {torch_params} parameters, Flax {num_params}.")
    return call


def _torch_columns(times: dict[str, list[float]], batch_size: int, dp_s: float) -> dict[str, Any]:
    """The PyTorch columns of a row (none when PyTorch did not run)."""
    if "torch" not in times:
        return {}
    torch_s = statistics.median(times["torch"])
    # Per-round ratios: each round's steps ran back to back under the same load.
    per_round = [t / d for d, t in zip(times["dp"], times["torch"], strict=True)]
    return {
        "torch_step_s": torch_s,
        "torch_images_per_s": batch_size / torch_s,
        "torch_step_times_s": times["torch"],
        "speed_dp_over_torch": torch_s / dp_s,
        "speed_dp_over_torch_per_round_median": statistics.median(per_round),
        "speed_dp_over_torch_per_round_range": [min(per_round), max(per_round)],
    }


def benchmark_tier(
    tier: str, *, steps: int, batch_size: int | None, use_torch: bool = True
) -> dict[str, Any]:
    """Images/s of the data-parallel, reference and (when installed) PyTorch steps of one
    tier's model, timed interleaved round by round."""
    config = get_config("catalog_inverse", tier=tier)
    # float32 whatever the tier's default (the gpu tier's is bfloat16): the PyTorch mirror
    # computes in float32. benchmarks.gpu_check times the bfloat16 step.
    config.model.dtype = "float32"
    batch_size = int(batch_size or config.batch_size)
    mesh = train_steps.make_mesh()
    if batch_size % mesh.size:
        batch_size = max(mesh.size, batch_size // mesh.size * mesh.size)
    image_size = int(config.data.image_size)
    images, labels = _synthetic_batch(batch_size, image_size)
    counts = weights.label_counts(labels)
    model = create_model(config.model.to_dict(), NUM_LABELS)
    tx = train_steps.make_optimizer(config, steps_per_epoch=100)
    loss_fn = train_steps.make_loss_fn(config, counts)

    dp_call, dp = _dp_call(model, tx, loss_fn, mesh, images, labels)
    ref_call = _ref_call(model, tx, loss_fn, images, labels)
    dp_compile, _ = _first_call_seconds(dp_call)
    ref_compile, _ = _first_call_seconds(ref_call)
    fns = {"dp": (dp_call, ()), "ref": (ref_call, ())}
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(dp["state"]["params"]))
    torch_row: dict[str, Any] = {"torch_note": _torch_note(use_torch)}
    if use_torch and torch_available():
        fns["torch"] = (_torch_call(config, counts, images, labels, num_params), ())
    times = time_interleaved(fns, steps, warmup=1)
    dp_s, ref_s = statistics.median(times["dp"]), statistics.median(times["ref"])
    torch_row |= _torch_columns(times, batch_size, dp_s)
    return {
        "tier": tier,
        "model": f"resnet {list(config.model.stage_sizes)} {config.model.block} "
        f"x{config.model.num_filters}",
        "precision": config.model.dtype,
        "num_params": num_params,
        "image_size": image_size,
        "batch_size": batch_size,
        "config_batch_size": int(config.batch_size),
        "num_devices": mesh.size,
        "steps": steps,
        "dp_step_s": dp_s,
        "ref_step_s": ref_s,
        "dp_images_per_s": batch_size / dp_s,
        "ref_images_per_s": batch_size / ref_s,
        "ratio_dp_over_ref": dp_s / ref_s,
        "dp_step_times_s": times["dp"],
        "ref_step_times_s": times["ref"],
        "dp_first_step_s": dp_compile,
        "ref_first_step_s": ref_compile,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpu_affinity": sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
    } | torch_row


def _torch_note(use_torch: bool) -> str:
    if not use_torch:
        return "PyTorch comparison disabled (--no-torch)"
    if not torch_available():
        return "torch is not installed: the PyTorch row is skipped (pip install torch)"
    import torch

    return f"torch {torch.__version__}, 1 intra-op thread, channels_last"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiers", nargs="+", default=["cpu", "gpu"], choices=["cpu", "gpu"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (cpu tier)")
    parser.add_argument(
        "--gpu-steps", type=int, default=None, help="timed steps of the gpu tier (6 on CPU)"
    )
    parser.add_argument(
        "--cpu-gpu-batch",
        type=int,
        default=32,
        help="batch of the gpu-tier model when running on CPU (the config's 256 elsewhere)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch row")
    parser.add_argument(
        "--ynnpack",
        action="store_true",
        help="keep XLA's YNNPACK fusions (read before JAX starts; see experiments.xla)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    on_cpu = jax.devices()[0].platform == "cpu"
    rows = []
    for tier in args.tiers:
        if tier == "gpu":
            steps = args.gpu_steps or (6 if on_cpu else args.steps)
            batch = args.cpu_gpu_batch if on_cpu else None
        else:
            steps, batch = args.steps, None
        print(f"benchmarking the {tier}-tier model ({steps} steps) ...", flush=True)
        rows.append(
            benchmark_tier(tier, steps=steps, batch_size=batch, use_torch=not args.no_torch)
        )

    headers = [
        "tier", "model", "params", "image", "batch", "devices", "steps", "DP img/s",
        "ref img/s", "DP / ref time", "torch img/s", "DP / torch speed", "per-round range",
        "DP first step s", "ref first step s",
    ]  # fmt: skip
    table = markdown_table(
        headers,
        [
            [
                r["tier"], r["model"], r["num_params"], r["image_size"], r["batch_size"],
                r["num_devices"], r["steps"], r["dp_images_per_s"], r["ref_images_per_s"],
                r["ratio_dp_over_ref"], r.get("torch_images_per_s"),
                r.get("speed_dp_over_torch"),
                "-" if "torch_step_s" not in r
                else "{:.2f}-{:.2f}".format(*r["speed_dp_over_torch_per_round_range"]),
                r["dp_first_step_s"], r["ref_first_step_s"],
            ]
            for r in rows
        ],
    )  # fmt: skip
    print(table)
    print(f"PyTorch: {rows[0]['torch_note'] if rows else '-'}")
    print(
        f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')!r}; CPU affinity: {rows[0]['cpu_affinity']}"
    )
    print(
        "Goals: DP / ref time <= 1.05 on one device; DP / torch speed (PyTorch step time / "
        "DP step time, images/s ratio) >= 1.0 on one core."
    )
    result = {
        "rows": rows,
        "table": table,
        "environment": environment(),
        "goal_ratio": 1.05,
        "goal_speed_over_torch": 1.0,
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
