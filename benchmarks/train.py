"""Training throughput of the cpu-tier and gpu-tier models: `python -m benchmarks.train`.

For each tier's model (from `experiments.configs`: catalog task, weighted BCE with the `inverse`
scheme, the tier's ResNet, batch size and image size) this measures, in the same run and
interleaved round by round (`benchmarks.common.time_interleaved`):

- data-parallel: the trainer's step (`experiments.train.make_train_step`): `jax.jit` over a
  mesh of all local devices, batch sharded, state replicated and donated, the global host batch
  placed with `shard_batch`;
- reference: a plain `jax.jit` of the same step maths on one device, no mesh, no shardings, no
  donation, the batch placed with `jax.device_put`.

Both include the host->device copy of the uint8 batch, as training does. Reported: images/s of
each, their ratio (data-parallel step time / reference step time; goal <= 1.05 on one device:
the mesh machinery must cost nothing), and the wall time of the first call of each (tracing +
compilation + one step).

On a CPU the gpu-tier model (ResNet-18 at 56 x 56, batch 256) takes tens of seconds per step,
so there its batch is cut to `--cpu-gpu-batch` (default 32) and its steps to `--gpu-steps`
(default 6) rather than the accelerator defaults; the table's batch column says what ran.

  python -m benchmarks.train                 # both tiers, table + benchmarks/out/train.json
  python -m benchmarks.train --tiers cpu --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.common import block, environment, markdown_table, time_interleaved, write_json
from experiments import train as trainer
from experiments.configs import get_config
from experiments.models import create_model
from ltweights import weights

NUM_LABELS = 10  # the catalog task's Fashion-MNIST classes
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "train.json"


def reference_train_step(model, tx, loss_fn):
    """The trainer's step maths (`train_step_fn`) as a plain one-device jit: no mesh, no
    shardings, no donation."""
    return jax.jit(trainer.train_step_fn(model, tx, loss_fn))


def _synthetic_batch(batch_size: int, image_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, image_size, image_size, 1), dtype=np.uint8)
    labels = (rng.random((batch_size, NUM_LABELS)) < 0.2).astype(np.uint8)
    return images, labels


def _first_call_seconds(fn, *args) -> tuple[float, Any]:
    start = time.perf_counter()
    out = block(fn(*args))
    return time.perf_counter() - start, out


def benchmark_tier(tier: str, *, steps: int, batch_size: int | None) -> dict[str, Any]:
    """Images/s of the data-parallel and reference steps of one tier's model."""
    config = get_config("catalog_inverse", tier=tier)
    batch_size = int(batch_size or config.batch_size)
    mesh = trainer.make_mesh()
    if batch_size % mesh.size:
        batch_size = max(mesh.size, batch_size // mesh.size * mesh.size)
    image_size = int(config.data.image_size)
    images, labels = _synthetic_batch(batch_size, image_size)
    counts = weights.label_counts(labels)
    model = create_model(config.model.to_dict(), NUM_LABELS)
    tx = trainer.make_optimizer(config, steps_per_epoch=100)
    loss_fn = trainer.make_loss_fn(config, counts)
    shape = images.shape[1:]

    dp_step = trainer.make_train_step(model, tx, loss_fn, mesh)
    dp = {"state": trainer.create_train_state(model, tx, shape, seed=0, mesh=mesh)}

    def dp_call():
        x, y = trainer.shard_batch(mesh, images), trainer.shard_batch(mesh, labels)
        dp["state"], metrics = dp_step(dp["state"], x, y)
        return metrics

    device = jax.devices()[0]
    ref_step = reference_train_step(model, tx, loss_fn)
    ref_mesh = trainer.make_mesh([device])
    ref = {
        "state": jax.device_put(
            trainer.create_train_state(model, tx, shape, seed=0, mesh=ref_mesh), device
        )
    }

    def ref_call():
        x, y = jax.device_put(images, device), jax.device_put(labels, device)
        ref["state"], metrics = ref_step(ref["state"], x, y)
        return metrics

    dp_compile, _ = _first_call_seconds(dp_call)
    ref_compile, _ = _first_call_seconds(ref_call)
    times = time_interleaved({"dp": (dp_call, ()), "ref": (ref_call, ())}, steps, warmup=1)
    dp_s, ref_s = statistics.median(times["dp"]), statistics.median(times["ref"])
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(dp["state"]["params"]))
    return {
        "tier": tier,
        "model": f"resnet {list(config.model.stage_sizes)} {config.model.block} "
        f"x{config.model.num_filters}",
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
    }


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
        rows.append(benchmark_tier(tier, steps=steps, batch_size=batch))

    headers = [
        "tier", "model", "params", "image", "batch", "devices", "steps", "DP img/s",
        "ref img/s", "DP / ref time", "DP first step s", "ref first step s",
    ]  # fmt: skip
    table = markdown_table(
        headers,
        [
            [
                r["tier"], r["model"], r["num_params"], r["image_size"], r["batch_size"],
                r["num_devices"], r["steps"], r["dp_images_per_s"], r["ref_images_per_s"],
                r["ratio_dp_over_ref"], r["dp_first_step_s"], r["ref_first_step_s"],
            ]
            for r in rows
        ],
    )  # fmt: skip
    print(table)
    print("Goal: DP / ref time <= 1.05 on one device.")
    result = {"rows": rows, "table": table, "environment": environment(), "goal_ratio": 1.05}
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
