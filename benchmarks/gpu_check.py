"""The prepared accelerator check: `python -m benchmarks.gpu_check`, one command, under 8 minutes.

For a machine with one GPU and a CUDA build of JAX (`CUDA_INSTALL`; README, "Running on a
GPU"). It checks, in three child processes run one after the other (so that each starts JAX
with its own XLA_FLAGS and none holds GPU memory while another runs):

1. `steps`: JAX sees the accelerator; the gpu-tier train step (the `catalog_inverse` config at
   the gpu tier: ResNet-18, batch 256, 56 px, the tier's augmentation; `experiments.steps`)
   timed in float32 and bfloat16 (`model.dtype`), each with the input pipeline in the loop
   (host batches from `experiments.data.pipeline.epoch_batches` over a synthetic training set,
   placed with `shard_batch`, as the trainer does) and without it (one batch kept on the
   device), interleaved round by round (`benchmarks.common.time_interleaved`).
2. `slice` with XLA's defaults, and 3. `slice` with `--xla_gpu_deterministic_ops=true`: a short
   gpu-tier catalog slice end to end (`catalog_none`, seed 0, cut-off 6, `SLICE_EPOCHS` epochs):
   `python -m experiments.run` writes a record and checkpoints; the same run trained again in
   another folder (determinism: identical metrics?); and once more, interrupted after
   `INTERRUPT_STEP` steps and resumed (identical to the uninterrupted run?).

Identical metrics are required with `--xla_gpu_deterministic_ops=true` (and on the CPU); with
XLA's GPU defaults they are measured and reported, not required. The children's time limits
(`LIMITS_S`: 180 + 140 + 140 s) keep the whole check under 8 minutes.

Writes `<out>/gpu_check.json` (every number) and `<out>/gpu_check.md` (a summary the report can
include) atomically; exit code 0 when every required check passed, 1 otherwise. Without an
accelerator it stops after the first child and says how to install the CUDA build.

`--smoke` runs everything on the CPU at tiny sizes (`SMOKE`: a 1-block, 4-filter ResNet at
28 px, batch 16, a 60-image head count), for CI; no accelerator is required there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.atomic import atomic_write_json, atomic_write_text

# The parent process imports neither JAX nor the trainer: each check runs in a child process
# started with its own XLA flags, and imports what it needs inside the check's function.
REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPOSITORY / "benchmarks" / "out"
DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"
CUDA_INSTALL = 'pip install -U "jax[cuda13]" (or "jax[cuda12]" for an older NVIDIA driver)'
CONFIG = "catalog_inverse"  # the train step's config, as benchmarks.train times it
SLICE_CONFIG, SLICE_SEED, SLICE_CUTOFF = "catalog_none", 0, 6
SLICE_EPOCHS, INTERRUPT_STEP = 2, 5
# Sizes (--set fields on top of the gpu tier) and child time limits in seconds.
SMOKE = {
    "model.stage_sizes": [1],
    "model.num_filters": 4,
    "batch_size": 16,
    "eval_batch_size": 64,
    "data.image_size": 28,
    "data.head_count": 60,
    "checkpoint_every_steps": 2,
}
LIMITS_S = {"steps": 180, "slice": 140}
SMOKE_LIMITS_S = {"steps": 300, "slice": 300}  # wall time on a loaded CI machine
STEP_ROUNDS = {"gpu": 30, "smoke": 3}


# ---------------------------------------------------------------------------------------------
# The checks (each runs in a child process: `--child steps|slice`)
# ---------------------------------------------------------------------------------------------


def gpu_tier_config(name: str, smoke: bool, **fields: Any):
    """`name` at the gpu tier, shrunk to the smoke sizes if `smoke`, with `fields` set."""
    from experiments.configs import get_config, overrides

    fields = {**(SMOKE if smoke else {}), **fields}
    return overrides.apply_overrides(get_config(name, tier="gpu"), list(fields.items()))


def check_steps(smoke: bool) -> dict[str, Any]:
    """Devices, and the gpu-tier train step's time in float32/bfloat16 with/without the input
    pipeline (see the module docstring)."""
    import jax

    from benchmarks.common import environment, time_interleaved

    devices = jax.devices()
    accelerator = devices[0].platform != "cpu"
    out: dict[str, Any] = {
        "devices": [str(d) for d in devices],
        "platform": devices[0].platform,
        "accelerator": accelerator,
        "environment": environment(),
    }
    if not accelerator and not smoke:
        return out
    calls, rows = {}, []
    for dtype in ("float32", "bfloat16"):
        config = gpu_tier_config(CONFIG, smoke, **{"model.dtype": dtype})
        for pipeline_in_loop, (call, first_s) in zip(
            (False, True), _step_calls(config), strict=True
        ):
            key = f"{dtype}/{'pipeline' if pipeline_in_loop else 'device batch'}"
            calls[key] = call
            rows.append(
                {
                    "precision": dtype,
                    "input_pipeline": pipeline_in_loop,
                    "batch_size": int(config.batch_size),
                    "image_size": int(config.data.image_size),
                    "first_step_s": first_s,
                    "key": key,
                }
            )
    rounds = STEP_ROUNDS["smoke" if smoke else "gpu"]
    times = time_interleaved({k: (fn, ()) for k, fn in calls.items()}, rounds, warmup=1)
    for row in rows:
        step_s = sorted(times[row["key"]])[len(times[row["key"]]) // 2]
        row |= {"step_s": step_s, "images_per_s": row["batch_size"] / step_s}
    return out | {"train_step": rows, "rounds": rounds}


def _step_calls(config):
    """Two calls that each run one train step of `config` on a synthetic training set, each
    with its own state: one with a batch kept on the device, one with the input pipeline in
    the loop; with the seconds of each one's first call (the first one's includes tracing and
    compilation; they share the compiled step)."""
    import numpy as np

    from benchmarks.common import block
    from experiments import steps
    from experiments.augment import get_augment
    from experiments.data import Dataset, pipeline
    from experiments.models import create_model
    from ltweights import weights

    size, batch, labels = int(config.data.image_size), int(config.batch_size), 10
    rng = np.random.default_rng(0)
    train = Dataset(
        rng.integers(0, 256, (4 * batch, size, size, 1), dtype=np.uint8),
        (rng.random((4 * batch, labels)) < 0.2).astype(np.uint8),
        tuple(f"label{i}" for i in range(labels)),
        "train",
    )
    mesh = steps.make_mesh()
    model = create_model(config.model.to_dict(), labels)
    tx = steps.make_optimizer(config, steps_per_epoch=4)
    loss_fn = steps.make_loss_fn(config, weights.label_counts(train.labels))
    train_step = steps.make_train_step(model, tx, loss_fn, mesh, get_augment(config.augment))
    fixed = [steps.shard_batch(mesh, a) for a in (train.images[:batch], train.labels[:batch])]

    def host_batches():
        for epoch in range(1 << 30):
            yield from pipeline.epoch_batches(train, batch, seed=0, epoch=epoch)

    out = []
    for batches in (None, host_batches()):
        holder = {"state": steps.create_train_state(model, tx, (size, size, 1), seed=0, mesh=mesh)}

        def call(holder=holder, batches=batches):
            if batches is None:
                x, y = fixed
            else:
                images, labels_ = next(batches)
                x, y = steps.shard_batch(mesh, images), steps.shard_batch(mesh, labels_)
            holder["state"], metrics = train_step(holder["state"], x, y)
            return metrics

        start = time.perf_counter()
        block(call())
        out.append((call, time.perf_counter() - start))
    return out


def check_slice(smoke: bool, workdir: Path) -> dict[str, Any]:
    """A gpu-tier catalog slice: a record and checkpoints from `experiments.run`, the same run
    again, and an interrupted run resumed; their metrics compared."""
    import jax

    from experiments import plan, records
    from experiments import run as run_mod
    from experiments.train import Interrupted, train_and_evaluate

    argv = [
        "--config", SLICE_CONFIG, "--tier", "gpu", "--seeds", str(SLICE_SEED),
        "--cutoffs", str(SLICE_CUTOFF), "--output-dir", str(workdir / "runs"), "--jobs", "1",
        "--no-progress", "--set", f"num_epochs={SLICE_EPOCHS}",
    ]  # fmt: skip
    for path, value in (SMOKE if smoke else {}).items():
        argv += ["--set", f"{path}={json.dumps(value)}"]
    timings: dict[str, float] = {}
    start = time.perf_counter()
    code = run_mod.main(argv)
    timings["record_run_s"] = time.perf_counter() - start
    (run,) = plan.resolve_config(run_mod.parse_args(argv))[2]
    folder = workdir / "runs" / SLICE_CONFIG / run.variant / f"cutoff{SLICE_CUTOFF}"
    folder = folder / f"seed{SLICE_SEED}"
    out: dict[str, Any] = {
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "platform": jax.devices()[0].platform,
        "exit_code": code,
        "record": (folder / records.RECORD_FILENAME).is_file(),
        "checkpoints": sorted(
            int(p.name) for p in (folder / "checkpoints").glob("*") if p.name.isdigit()
        ),
    }
    if not out["record"]:
        return out | {"timings": timings}
    first = records.load_record(folder / records.RECORD_FILENAME)
    out["precision"] = first["config"]["model"]["dtype"]
    kw = {"seed": SLICE_SEED, "cutoff": SLICE_CUTOFF, "progress": False}
    start = time.perf_counter()
    again = train_and_evaluate(run.config, workdir=workdir / "again", **kw)
    timings["repeat_s"] = time.perf_counter() - start
    start = time.perf_counter()
    try:
        train_and_evaluate(
            run.config, workdir=workdir / "resumed", interrupt_at_step=INTERRUPT_STEP, **kw
        )
        interrupted = False
    except Interrupted:
        interrupted = True
    resumed = train_and_evaluate(run.config, workdir=workdir / "resumed", **kw)
    timings["interrupted_and_resumed_s"] = time.perf_counter() - start
    return out | {
        "status": first["status"],
        "test_mAP": first["test"]["mAP"] if first["test"] else None,
        "steps": first["steps"],
        "interrupted": interrupted,
        "repeat_identical": run_metrics(again) == run_metrics(first),
        "repeat_test_mAP_difference": _difference(again, first),
        "resume_identical": run_metrics(resumed) == run_metrics(first),
        "resume_test_mAP_difference": _difference(resumed, first),
        "timings": timings,
    }


def run_metrics(record: dict[str, Any]) -> Any:
    """What a record's numbers are (curves without throughput, val and test metrics), as JSON
    would store them."""
    curves = [{k: v for k, v in c.items() if k != "images_per_s"} for c in record["curves"]]
    return json.loads(json.dumps({"curves": curves, "val": record["val"], "test": record["test"]}))


def _difference(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if not (a.get("test") and b.get("test")):
        return None
    return abs(float(a["test"]["mAP"]) - float(b["test"]["mAP"]))


# ---------------------------------------------------------------------------------------------
# The parent: children, verdicts, JSON and markdown
# ---------------------------------------------------------------------------------------------


def run_child(kind: str, smoke: bool, workdir: Path, flags: str = "") -> dict[str, Any]:
    """Runs `--child kind` in a fresh process (XLA_FLAGS plus `flags`); its JSON result, or
    {"error": ...} when it failed or ran past its time limit."""
    result = workdir / f"{kind}-{len(list(workdir.glob('*.json')))}.json"
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--child", kind]
    command += ["--result", str(result), "--workdir", str(workdir / f"{kind}{len(flags)}")]
    command += ["--smoke"] if smoke else []
    limit = (SMOKE_LIMITS_S if smoke else LIMITS_S)[kind]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired:
        return {"error": f"ran past its {limit} s limit", "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    if done.returncode != 0 or not result.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        return {"error": f"exit code {done.returncode}: {tail}", "wall_s": wall}
    return json.loads(result.read_text()) | {"wall_s": wall}


def verdicts(steps: dict[str, Any], slices: dict[str, dict[str, Any]], smoke: bool):
    """[(check, passed, what was seen, required)] for the summary. Identical metrics are
    required on the CPU and with `DETERMINISTIC_FLAG`; with XLA's GPU defaults they are
    measured, not required (some GPU kernels, e.g. scatter-adds, are nondeterministic)."""
    found = []
    seen = steps.get("error") or steps.get("platform", "?")
    sees = "error" not in steps and bool(steps.get("accelerator") or smoke)
    found.append(("JAX sees the accelerator" + (" (not required in smoke)" if smoke else ""),
                  sees, seen, True))  # fmt: skip
    rows = steps.get("train_step") or []
    found.append(("train step timed (float32, bfloat16; with/without input pipeline)",
                  len(rows) == 4, f"{len(rows)} of 4 timings", True))  # fmt: skip
    for name, s in slices.items():
        if "error" in s:
            found.append((f"catalog slice ({name})", False, s["error"].splitlines()[0], True))
            continue
        same_required = smoke or DETERMINISTIC_FLAG in s.get("xla_flags", "")
        wrote = s["exit_code"] == 0 and s["record"] and bool(s["checkpoints"])
        found.append((f"record and checkpoints ({name})", wrote,
                      f"exit {s['exit_code']}, checkpoints at steps {s['checkpoints']}, "
                      f"model.dtype {s.get('precision')}", True))  # fmt: skip
        found.append((f"two identical runs give identical metrics ({name})",
                      s.get("repeat_identical", False),
                      f"|test mAP difference| {s.get('repeat_test_mAP_difference')}",
                      same_required))  # fmt: skip
        found.append((f"interrupted run resumed to identical metrics ({name})",
                      s.get("interrupted", False) and s.get("resume_identical", False),
                      f"interrupted at step {INTERRUPT_STEP}: {s.get('interrupted')}; "
                      f"|test mAP difference| {s.get('resume_test_mAP_difference')}",
                      same_required))  # fmt: skip
    return found


def _passed_cell(ok: bool, required: bool) -> str:
    return "yes" if ok else ("**no**" if required else "no (measured, not required)")


def summary_markdown(result: dict[str, Any]) -> str:
    """The markdown summary: the checks, then the train-step table."""
    from benchmarks.common import markdown_table

    steps = result["steps"]
    env = steps.get("environment") or {}
    gpu = (env.get("gpu") or {}).get("names") or steps.get("devices") or ["?"]
    lines = [
        f"## GPU check ({result['mode']}, {result['date']})",
        "",
        f"`{result['command']}` on {', '.join(map(str, gpu))}, jax "
        f"{(env.get('packages') or {}).get('jax', '?')}: {result['total_s']:.0f} s in all.",
        "",
        markdown_table(
            ["check", "passed", "seen"],
            [[c, _passed_cell(ok, req), seen] for c, ok, seen, req in result["checks"]],
        ),
    ]
    rows = steps.get("train_step") or []
    if rows:
        lines += [
            "",
            f"Train step of `{CONFIG}` at the gpu tier (median of {steps['rounds']} interleaved "
            "rounds). First step: tracing, compilation and one step for the device-batch row of "
            "each precision; the pipeline row reuses that compiled step.",
            "",
            markdown_table(
                [
                    "precision",
                    "input pipeline",
                    "batch",
                    "image",
                    "step ms",
                    "images/s",
                    "first step s",
                ],
                [
                    [
                        r["precision"],
                        "in the loop" if r["input_pipeline"] else "no (device batch)",
                        r["batch_size"],
                        r["image_size"],
                        1000 * r["step_s"],
                        r["images_per_s"],
                        r["first_step_s"],
                    ]
                    for r in rows
                ],
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        return _child(args)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        workdir = Path(tmp)
        steps = run_child("steps", args.smoke, workdir)
        slices = {}
        if steps.get("accelerator") or args.smoke:
            slices["XLA defaults"] = run_child("slice", args.smoke, workdir)
            slices[DETERMINISTIC_FLAG] = run_child("slice", args.smoke, workdir, DETERMINISTIC_FLAG)
        elif "error" not in steps:
            steps["error"] = f"JAX sees no accelerator ({steps['platform']}): {CUDA_INSTALL}"
    checks = verdicts(steps, slices, args.smoke)
    result = {
        "mode": "smoke (CPU, tiny sizes)" if args.smoke else "gpu",
        "command": "python -m benchmarks.gpu_check" + (" --smoke" if args.smoke else ""),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "total_s": time.perf_counter() - start,
        "passed": all(ok or not required for _, ok, _, required in checks),
        "checks": checks,
        "steps": steps,
        "slices": slices,
    }
    atomic_write_json(args.out / "gpu_check.json", result)
    atomic_write_text(args.out / "gpu_check.md", summary_markdown(result))
    print(summary_markdown(result))
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return 0 if result["passed"] else 1


def _child(args: argparse.Namespace) -> int:
    if args.child == "steps":
        result = check_steps(args.smoke)
    else:
        result = check_slice(args.smoke, args.workdir)
    atomic_write_json(args.result, result)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the JSON and md")
    parser.add_argument("--child", choices=["steps", "slice"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
