"""Throughput of a two-process run against one process on the same machine:
`python -m benchmarks.multihost`.

Measures, in one invocation, images/s of the trainer's data-parallel step
(`experiments.steps.make_train_step` over `make_mesh()`, the global host batch placed with
`shard_batch` every step and the loss read back, as training does, plus the loop's per-step
stop agreement between processes, `experiments.distributed.agree_on_stop`) on the cpu-tier
catalog model (ResNet [1, 1, 1] basic x 8 filters, 28 x 28 images, batch 128, synthetic uint8
images) in three set-ups:

- one process, one CPU device (how a run on this machine trains by default);
- one process, two CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=2): the
  partitioned program of the two-process run, without crossing a process boundary;
- two processes, one CPU device each, joined through `experiments.distributed.initialize` on a
  localhost coordinator, collectives over gloo (TCP).

Each set-up runs in fresh subprocesses, one after the other, `--rounds` times interleaved so that
a burst of background load hits all alike; a round takes the median over `--steps` timed steps
(after 2 untimed ones that compile), and the reported figure is the median over rounds. All three
share the same cores. Two ratios are reported: two processes against one process with ONE
device (how this machine trains by default; one CPU device need not use both cores as well as
two devices do, so two devices of either kind can come out faster) and against one process with TWO
devices (the same partitioned program: the ratio is the price of crossing the process boundary,
gloo collectives and two runtimes sharing the cores). The final losses of the three set-ups are
reported too: they are the same maths and must agree. On a cluster each process has its own
accelerator and the same code scales instead.

  python -m benchmarks.multihost                       # table + benchmarks/out/multihost.json
  python -m benchmarks.multihost --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "multihost.json"
NUM_LABELS = 10
SETUPS = ("one process, 1 device", "one process, 2 devices", "two processes, 1 device each")
CHILD_TIMEOUT_S = 600


def _child(args: argparse.Namespace) -> None:
    """One process of a measurement: prints {"step_times_s": [...], ...} as JSON (process 0)."""
    # Imported here, in the child: JAX must not start before `distributed.initialize`.
    from experiments import distributed

    if args.num_processes > 1:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)

    import jax
    import numpy as np

    from experiments import steps as train_steps
    from experiments.configs import get_config
    from experiments.models import create_model
    from ltweights import weights

    config = get_config("catalog_none", tier="cpu")
    batch_size, image_size = int(config.batch_size), int(config.data.image_size)
    rng = np.random.default_rng(0)  # every process builds the same global batch
    images = rng.integers(0, 256, (batch_size, image_size, image_size, 1), dtype=np.uint8)
    labels = (rng.random((batch_size, NUM_LABELS)) < 0.2).astype(np.uint8)
    mesh = train_steps.make_mesh()
    model = create_model(config.model.to_dict(), NUM_LABELS)
    tx = train_steps.make_optimizer(config, steps_per_epoch=100)
    loss_fn = train_steps.make_loss_fn(config, weights.label_counts(labels))
    step = train_steps.make_train_step(model, tx, loss_fn, mesh)
    state = train_steps.create_train_state(model, tx, images.shape[1:], seed=0, mesh=mesh)

    times = []
    for i in range(args.steps + 2):
        start = time.perf_counter()
        x, y = train_steps.shard_batch(mesh, images), train_steps.shard_batch(mesh, labels)
        state, metrics = step(state, x, y)
        loss = float(train_steps.to_host(metrics["loss"]))
        distributed.agree_on_stop(None)  # the training loop's per-step stop agreement
        if i >= 2:  # the first steps compile
            times.append(time.perf_counter() - start)
    if distributed.is_primary():
        result = {
            "step_times_s": times,
            "batch_size": batch_size,
            "num_devices": mesh.size,
            "num_processes": jax.process_count(),
            "final_loss": loss,
        }
        print("RESULT " + json.dumps(result), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(setup: str, steps: int) -> dict[str, Any]:
    """Runs one set-up in fresh subprocesses; returns process 0's result."""
    devices = 2 if setup == SETUPS[1] else 1
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    base = [sys.executable, "-m", "benchmarks.multihost", "--child", "--steps", str(steps)]
    if setup == SETUPS[2]:
        coordinator = f"127.0.0.1:{_free_port()}"
        commands = [
            [*base, "--num-processes", "2", "--process-id", str(i), "--coordinator", coordinator]
            for i in range(2)
        ]
    else:
        commands = [base]
    procs = [
        subprocess.Popen(
            c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in commands
    ]
    try:
        outputs = [p.communicate(timeout=CHILD_TIMEOUT_S) for p in procs]
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        raise
    for p, (_, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"{setup}: a process exited with {p.returncode}:\n{err[-3000:]}")
    lines = [line for line in outputs[0][0].splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"{setup}: process 0 printed no result:\n{outputs[0][1][-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per set-up")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        parser.error(f"need --steps >= 1 and --rounds >= 1; got {args.steps}, {args.rounds}.")
    if args.child:
        _child(args)
        return {}

    from benchmarks.common import environment, markdown_table, write_json

    per_round: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
    for r in range(args.rounds):
        for setup in SETUPS:
            print(f"round {r + 1}/{args.rounds}: {setup} ...", flush=True)
            per_round[setup].append(_launch(setup, args.steps))
    rows = []
    for setup in SETUPS:
        results = per_round[setup]
        step_s = statistics.median(statistics.median(x["step_times_s"]) for x in results)
        rows.append(
            {
                "setup": setup,
                "num_processes": results[0]["num_processes"],
                "num_devices": results[0]["num_devices"],
                "batch_size": results[0]["batch_size"],
                "step_s": step_s,
                "images_per_s": results[0]["batch_size"] / step_s,
                "round_step_times_s": [x["step_times_s"] for x in results],
                "final_loss": [x["final_loss"] for x in results],
            }
        )
    one = rows[0]["images_per_s"]
    for row in rows:
        row["ratio_images_per_s_vs_one_process"] = row["images_per_s"] / one
    table = markdown_table(
        ["set-up", "processes", "devices", "batch", "step s", "img/s", "img/s / one process"],
        [
            [
                r["setup"], r["num_processes"], r["num_devices"], r["batch_size"], r["step_s"],
                r["images_per_s"], r["ratio_images_per_s_vs_one_process"],
            ]
            for r in rows
        ],
    )  # fmt: skip
    print(table)
    ratio = rows[2]["ratio_images_per_s_vs_one_process"]
    ratio_2 = rows[2]["images_per_s"] / rows[1]["images_per_s"]
    print(f"two processes / one process with 1 device (images/s): {ratio:.3f}")
    print(f"two processes / one process with 2 devices (images/s): {ratio_2:.3f}")
    result = {
        "model": "cpu-tier catalog ResNet [1, 1, 1] basic x8, 28 x 28, batch 128",
        "steps": args.steps,
        "rounds": args.rounds,
        "rows": rows,
        "ratio_two_processes_over_one_process": ratio,
        "ratio_two_processes_over_one_process_two_devices": ratio_2,
        "table": table,
        "environment": environment(),
        "cpu_count": os.cpu_count(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
