"""Multi-process runs: two JAX processes on this machine give the one-process metrics.

Two processes (one CPU device each, collectives over gloo on localhost, a free port chosen at
run time) run `python -m experiments.run` on the smoke tier through `tests/multihost_worker.py`,
with a time limit; on failure or timeout both are killed.

The reference is ONE process with TWO CPU devices (XLA_FLAGS=--xla_force_host_platform_device_
count=2) and the same config and seed: the global batch is the same in every case (batch_size is
global), and with two devices the jitted step is partitioned exactly as in the two-process run
(8 rows per device, the same two-party all-reduces), so only the transport differs and the
numbers agree to the last bit in practice. A one-device run sums each batch in another order and
drifts by ~1e-8 relative over the smoke run; tests/test_multidevice.py covers that comparison.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import distributed, records
from experiments import run as run_cli
from tests.test_reference_metrics import metric_differences

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "multihost_worker.py"
LAUNCH_TIMEOUT_S = 300
RUN_ARGS = ["--config", "catalog_none", "--tier", "smoke", "--no-progress"]
RUN_SUBDIR = Path("catalog_none", "none", "cutoff6", "seed0")  # the smoke tier's one run
STEPS = 14  # smoke catalog: 120 training images, batch 16 -> 7 steps x 2 epochs
INTERRUPT_STEP = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(cache: Path, devices: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env["LTWEIGHTS_CACHE"] = str(cache)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def launch(commands: list[list[str]], env: dict[str, str], logs: Path) -> list[dict]:
    """Runs the commands at once; returns [{rc, stdout, stderr}] or kills all and fails."""
    logs.mkdir(parents=True, exist_ok=True)
    procs, files = [], []
    try:
        for i, command in enumerate(commands):
            out, err = open(logs / f"p{i}.out", "w"), open(logs / f"p{i}.err", "w")
            files += [out, err]
            procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err))
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise
    finally:
        for f in files:
            f.close()
    return [
        {
            "rc": proc.returncode,
            "stdout": (logs / f"p{i}.out").read_text(),
            "stderr": (logs / f"p{i}.err").read_text(),
        }
        for i, proc in enumerate(procs)
    ]


def two_processes(output_dir: Path, cache: Path, logs: Path, *, interrupt_on_1=None, extra_1=()):
    """Both processes of a run; process 1 may get `--interrupt-at-step` and extra arguments."""
    port = free_port()
    commands = []
    for i in range(2):
        worker = [sys.executable, str(WORKER)]
        if interrupt_on_1 is not None and i == 1:
            worker += ["--interrupt-at-step", str(interrupt_on_1)]
        commands.append(
            [
                *worker,
                "--",
                *RUN_ARGS,
                *(extra_1 if i == 1 else ()),
                "--output-dir",
                str(output_dir),
                *("--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"),
                *("--process-id", str(i)),
            ]
        )
    return launch(commands, _env(cache, devices=1), logs)


def _explain(results: list[dict]) -> str:
    return "\n".join(
        f"process {i}: rc={r['rc']}\n{r['stderr'][-3000:]}" for i, r in enumerate(results)
    )


def load_record(output_dir: Path) -> dict:
    return json.loads((output_dir / RUN_SUBDIR / records.RECORD_FILENAME).read_text())


def _metrics(record: dict) -> dict:
    """The numbers of a record that training and evaluation produce."""
    return {
        "curves": [{k: v for k, v in c.items() if k != "images_per_s"} for c in record["curves"]],
        "val": {k: record["val"][k] for k in ("mAP", "macro_f1", "micro_f1", "buckets")},
        "best_epoch": record["val"]["best_epoch"],
        "test": {
            k: record["test"][k] for k in ("mAP", "macro_f1", "micro_f1", "buckets", "thresholds")
        },
    }


def assert_same_metrics(a: dict, b: dict) -> None:
    """Same training curve, best epoch, thresholds and val/test metrics within the tolerances
    measured for other kernels (`tests.test_reference_metrics.TOLERANCES`): the two runs'
    all-reduces (in-process vs gloo) may round differently, and a few ulps in the scores can
    swap a near-tie, which moves an AP by a step (3.9e-6 in a bucket mAP, seen on AVX-512)."""
    assert a["status"] == b["status"] == "finished"
    assert a["steps"] == b["steps"] == STEPS
    assert metric_differences(_metrics(a), _metrics(b)) == []


@pytest.fixture(scope="module")
def shared(tmp_path_factory, fashion_mnist_installed):
    """One data/compilation cache for the module; the reference run builds the data first."""
    root = tmp_path_factory.mktemp("multihost")
    cache = root / "cache"
    reference_dir = root / "reference"
    [result] = launch(
        [[sys.executable, "-m", "experiments.run", *RUN_ARGS, "--output-dir", str(reference_dir)]],
        _env(cache, devices=2),
        root / "logs-reference",
    )
    assert result["rc"] == 0, result["stderr"][-3000:]
    reference = load_record(reference_dir)
    assert reference["environment"]["num_devices"] == 2
    assert reference["environment"]["num_processes"] == 1
    return {"root": root, "cache": cache, "reference": reference}


@pytest.fixture(scope="module")
def two_process_run(shared):
    output_dir = shared["root"] / "two"
    results = two_processes(output_dir, shared["cache"], shared["root"] / "logs-two")
    return output_dir, results


@pytest.mark.slow
def test_two_processes_give_the_one_process_metrics_and_one_record(shared, two_process_run):
    output_dir, results = two_process_run
    assert [r["rc"] for r in results] == [0, 0], _explain(results)
    record_files = list(records.iter_record_paths(output_dir))
    assert record_files == [output_dir / RUN_SUBDIR / records.RECORD_FILENAME]
    record = load_record(output_dir)
    assert record["environment"]["num_processes"] == 2
    assert record["environment"]["num_devices"] == 2
    assert_same_metrics(record, shared["reference"])
    # Logs on process 0 only: the summary table is printed once.
    assert "test mAP" in results[0]["stdout"]
    assert "test mAP" not in results[1]["stdout"] and "finished" not in results[1]["stdout"]
    # Each process wrote its own shards of the last checkpoint through orbax.
    state_dir = output_dir / RUN_SUBDIR / "checkpoints" / str(STEPS) / "state"
    assert (state_dir / "ocdbt.process_0").is_dir() and (state_dir / "ocdbt.process_1").is_dir()


@pytest.mark.slow
def test_interrupt_on_one_process_stops_both_and_resume_gives_the_same_metrics(
    shared, two_process_run
):
    output_dir = shared["root"] / "interrupted"
    logs = shared["root"] / "logs-interrupted"
    # Only process 1 is asked to stop; process 0 must stop at the same step through agreement.
    results = two_processes(output_dir, shared["cache"], logs, interrupt_on_1=INTERRUPT_STEP)
    assert [r["rc"] for r in results] == [run_cli.EXIT_INTERRUPTED] * 2, _explain(results)
    assert list(records.iter_record_paths(output_dir)) == []
    checkpoints = output_dir / RUN_SUBDIR / "checkpoints"
    assert max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == INTERRUPT_STEP

    results = two_processes(output_dir, shared["cache"], logs / "resume")
    assert [r["rc"] for r in results] == [0, 0], _explain(results)
    assert "resume from checkpoint" in results[0]["stdout"]
    assert len(list(records.iter_record_paths(output_dir))) == 1
    uninterrupted = load_record(two_process_run[0])
    assert_same_metrics(load_record(output_dir), uninterrupted)


def test_processes_that_would_train_different_runs_stop_with_a_clear_error(tmp_path):
    # Process 1 selects another seed: without the check both would wait in each other's
    # collectives; with it both stop before training, naming the cause.
    results = two_processes(
        tmp_path / "runs", tmp_path / "cache", tmp_path / "logs", extra_1=["--seeds", "1"]
    )
    assert all(r["rc"] not in (0, None) for r in results), _explain(results)
    for r in results:
        assert "disagree on which runs to train" in r["stderr"]
    assert list(records.iter_record_paths(tmp_path / "runs")) == []


# --- the single-process side of experiments.distributed (no processes started) --------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--coordinator", "127.0.0.1:1234"], "--num-processes, --process-id missing"),
        (["--num-processes", "2", "--process-id", "0"], "--coordinator missing"),
        (
            ["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
            "expects HOST:PORT",
        ),
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
            "must be in 0 .. 1",
        ),
        (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], ">= 1"),
    ],
)
def test_bad_multiprocess_arguments_are_usage_errors(argv, message, capsys):
    assert run_cli.main(["--config", "catalog_none", "--dry-run", *argv]) == run_cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not distributed._state["initialized"]


def test_one_process_without_a_cluster_is_primary_and_agrees_with_itself(monkeypatch):
    for var in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.detected_cluster() is None
    assert distributed.initialize() is False
    assert distributed.process_count() == 1 and distributed.is_primary()
    assert distributed.any_process(True) and not distributed.any_process(False)
    assert distributed.agree_on_stop(None) is None
    assert distributed.agree_on_stop("SIGTERM") == "SIGTERM"
    distributed.agree("anything", "a test")  # nothing to disagree with
    distributed.barrier("alone")


def test_slurm_under_srun_is_detected(monkeypatch):
    slurm = {
        "SLURM_JOB_ID": "7",
        "SLURM_STEP_NODELIST": "gpu[01-02]",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "0",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert distributed.detected_cluster() == "SlurmCluster"
    monkeypatch.delenv("SLURM_PROCID")  # a shell inside salloc, not a task of srun
    assert distributed.detected_cluster() is None
