"""The trainer's loop: one run = one (config, seed, cut-off), from data to the record's metrics.

(About 500 lines, read top to bottom like big_vision's trainer: exact resume, stop signals and
the non-finite stop are part of the loop.)

`train_and_evaluate` reads top to bottom:

1. Data: `load_task(config.task, cutoff=..., seed=config.data.seed, ...)` (or given `splits`);
   label counts of the TRAIN split feed the weighting scheme and the frequency buckets.
2. Steps (`experiments.steps`): the loss of the config's scheme and loss, the optimiser, a Flax
   ResNet (`experiments.models`), and the jitted init, train and eval steps over a device mesh.
   The runs of one method (seeds, cut-offs, scheme parameters) share their compiled steps.
3. Resume (`experiments.checkpoints`): if the workdir holds a checkpoint of the same run, the
   `TrainState` and the run's `Progress` (data position, curves, loss sum) come back from it.
4. Train: epoch by epoch; each step's metrics are read one step late and checked finite.
   Evaluation on the validation split at every epoch end (mAP, macro-F1, bucket metrics at
   threshold 0.5). Checkpoints every `checkpoint_every_steps` steps, at every epoch end and on
   interruption; the last `keep_checkpoints` and the best `keep_best` epochs by validation mAP are
   kept, whatever the interruptions.
5. Final evaluation: the parameters of the best epoch by validation mAP are restored, per-label
   thresholds are chosen on validation (max F1) and applied to the test split.
6. Failures: SIGINT/SIGTERM (or `interrupt_at_step`) checkpoint at the next step boundary and
   raise `Interrupted`; a non-finite loss, gradient norm or parameter stops the run with status
   "failed", keeping the last good checkpoint (nothing is saved from the bad step on); a run
   folder that cannot be resumed raises `CheckpointError` saying how to recover.

With `model.init_from` a new run starts from those weights (`experiments.pretrained`); the
record's `data.provenance.init_from` says which (name, SHA-256).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax

from experiments import distributed, pretrained, records
from experiments.checkpoints import CheckpointError, Checkpoints, Progress, best_entry
from experiments.checkpoints import run_fingerprint as _run_fingerprint
from experiments.data import Splits, load_task, pipeline
from experiments.progress import RunProgress
from experiments.runs import format_variant
from experiments.steps import (
    TrainState,
    config_dict,
    eval_scores,
    make_mesh,
    run_functions,
    shard_batch,
    to_host,
)
from ltweights import metrics, weights

__all__ = ["CheckpointError", "Interrupted", "NonFiniteLoss", "train_and_evaluate"]


class Interrupted(Exception):
    """The run stopped on SIGINT/SIGTERM or `interrupt_at_step` after saving a checkpoint.

    Calling `train_and_evaluate` again with the same workdir resumes from `step`.
    """

    def __init__(self, step: int, checkpoint_dir: Path, reason: str):
        self.step, self.checkpoint_dir, self.reason = step, checkpoint_dir, reason
        super().__init__(
            f"Run interrupted ({reason}) at step {step}; checkpoint saved in {checkpoint_dir}. "
            "Run it again with the same workdir to resume."
        )


class NonFiniteLoss(FloatingPointError):
    """A training step produced a NaN/inf loss or gradient norm; `step` is that step."""

    def __init__(self, step: int, message: str):
        self.step = step
        super().__init__(message)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def train_and_evaluate(
    config: Any,
    *,
    seed: int,
    cutoff: int,
    workdir: Path,
    progress: bool = True,
    interrupt_at_step: int | None = None,
    splits: Splits | None = None,
) -> dict[str, Any]:
    """Trains one run, evaluates it, and returns the record fields the trainer owns.

    Args:
      config: a config (see `experiments.configs.base`).
      seed: run seed: model initialisation and batch order, and the data draw unless
        config.data.seed fixes it.
      cutoff: label-frequency cut-off passed to the task loader.
      workdir: the run's folder; checkpoints go to `workdir/checkpoints`. If it holds a
        checkpoint of the same config, the run resumes from the latest one.
      progress: show a tqdm bar (loss, images/s) and print a one-line summary.
      interrupt_at_step: for tests: behave as if SIGINT arrived during this step.
      splits: use these splits instead of loading `config.task` (tests, notebooks).

    Returns:
      {status: "finished" | "failed", failure: None | str,
       data: {provenance: {split: dict}, label_names, train_positives, num_train, num_val,
              num_test},
       curves: [{epoch, step, train_loss, val_mAP, val_macro_f1, images_per_s}],
       val: metrics of the best epoch (per-label thresholds chosen on val) + best_epoch,
            best_step,
       test: test metrics with those thresholds + thresholds (None if failed),
       wall_time_s, images_per_s, steps}

    Raises:
      Interrupted: after saving a checkpoint, on SIGINT/SIGTERM or at `interrupt_at_step`.
      CheckpointError: the workdir holds a checkpoint that cannot be resumed.
    """
    clock = _WallClock(time.perf_counter())
    setup = _setup(
        config, seed, cutoff, _load_splits(config, cutoff, seed) if splits is None else splits
    )
    checkpoints = Checkpoints(
        Path(workdir).resolve(), keep_last=config.keep_checkpoints, keep_best=config.keep_best
    )
    try:
        state, run = _resume(setup, checkpoints)
        clock.before = run.wall_time_s  # earlier sessions of an interrupted run
        failure = None
        try:
            state = _train(setup, checkpoints, state, run, clock, interrupt_at_step, progress)
        except NonFiniteLoss as e:
            failure = e
            if jax.process_index() == 0:
                print(failure)
        checkpoints.finish()
        record = _record(setup, run, failure, clock)
        if failure is None:
            best = best_entry(run.curves)
            best_state = checkpoints.restore_state(best["step"], state)
            record["val"], record["test"] = _final_evaluation(setup, best_state, best)
    finally:
        checkpoints.close()  # waits for a checkpoint being written
    record["wall_time_s"] = clock.total()
    if failure is None and progress and jax.process_index() == 0:
        print(_summary_line(config, seed, cutoff, record))
    return record


@dataclasses.dataclass
class _WallClock:
    """Wall time of the run: this session since `start` plus `before` (earlier sessions)."""

    start: float
    before: float = 0.0

    def total(self) -> float:
        return time.perf_counter() - self.start + self.before


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What a run's loop needs, fixed once the data and the config are known."""

    config: Any
    seed: int
    cutoff: int
    splits: Splits
    train_positives: list[int]
    mesh: jax.sharding.Mesh
    batch_size: int
    eval_batch_size: int
    steps_per_epoch: int
    init: Callable
    train_step: Callable
    eval_step: Callable

    @property
    def num_epochs(self) -> int:
        return int(self.config.num_epochs)

    @property
    def bucket_kw(self) -> dict[str, int]:
        return {"head": int(self.config.bucket_head), "tail": int(self.config.bucket_tail)}

    @property
    def fingerprint(self) -> str:
        return _run_fingerprint(self.config, self.seed, self.cutoff, self.train_positives)


def _setup(config: Any, seed: int, cutoff: int, splits: Splits) -> _Setup:
    """Checks the config against the data and the devices and builds (or reuses) the steps."""
    if int(config.num_epochs) < 1:
        raise ValueError(f"num_epochs must be >= 1; got {config.num_epochs}.")
    counts = weights.label_counts(splits.train.labels)
    mesh = make_mesh()
    batch_size, eval_batch_size = _check_batch_sizes(config, splits, mesh.size)
    steps_per_epoch = pipeline.num_batches(splits.train.num_examples, batch_size)
    init, train_step, eval_step = run_functions(config, counts, splits.train, steps_per_epoch, mesh)
    return _Setup(
        config, int(seed), int(cutoff), splits, [int(x) for x in counts.positives], mesh,
        batch_size, eval_batch_size, steps_per_epoch, init, train_step, eval_step,
    )  # fmt: skip


def _resume(setup: _Setup, checkpoints: Checkpoints) -> tuple[TrainState, Progress]:
    """The initial state and progress, or those of the latest checkpoint of this run.

    A new run takes its backbone from `config.model.init_from` if set (the optimiser state,
    zeros of the parameters' shapes, is unchanged); a resumed run only from its checkpoint.
    """
    state = setup.init(jax.random.PRNGKey(setup.seed))
    fingerprint = setup.fingerprint
    restored = checkpoints.restore_latest(state, fingerprint)
    if restored is None:
        variables, init_from = pretrained.initial_variables(setup.config, state.variables)
        state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
        return state, Progress(
            fingerprint=fingerprint, seed=setup.seed, cutoff=setup.cutoff, init_from=init_from
        )
    state, run = restored
    state_step, position = int(to_host(state.step)), run.step(setup.steps_per_epoch)
    if state_step != position:
        raise CheckpointError(
            f"Checkpoint {checkpoints.directory / str(checkpoints.last_saved)} is inconsistent "
            f"(state step {state_step}, data position {position}). To start this run afresh, "
            f"rerun `python -m experiments.run` with --force or delete {checkpoints.directory}."
        )
    return state, run


def _train(setup, checkpoints, state, run, clock, interrupt_at_step, progress) -> TrainState:
    """Trains from the run's data position to the last epoch; returns the last state."""
    config = setup.config
    bar = RunProgress(  # a bar, plain lines or a worker's live line (experiments.progress)
        f"{_run_name(config)} cutoff={setup.cutoff} seed={setup.seed}",
        total_steps=setup.num_epochs * setup.steps_per_epoch,
        initial=run.step(setup.steps_per_epoch),
        steps_per_epoch=setup.steps_per_epoch,
        batch_size=setup.batch_size,
        enabled=progress and jax.process_index() == 0,
    )
    monitor = _StepMonitor(run, bar, setup, checkpoints)
    try:
        with _stop_signals() as stop:
            while run.epoch < setup.num_epochs:
                state = _train_epoch(
                    setup, checkpoints, state, run, clock, monitor, stop, interrupt_at_step
                )
    finally:
        bar.close()
    return state


def _train_epoch(setup, checkpoints, state, run, clock, monitor, stop, interrupt_at_step):
    """Trains the rest of the current epoch, evaluates it and checkpoints; returns the state.

    Checkpoints also every `checkpoint_every_steps` steps, and on a stop signal or at
    `interrupt_at_step`, after which it raises `Interrupted`.
    """
    every = int(setup.config.checkpoint_every_steps or 0)  # 0: epoch ends only
    epoch = run.epoch
    monitor.start_epoch()
    with contextlib.closing(_placed_batches(setup, run, epoch)) as placed:
        for images, labels in placed:
            state, step_metrics = setup.train_step(state, images, labels)
            run.batch += 1
            step = run.step(setup.steps_per_epoch)
            monitor.dispatched(step, step_metrics)
            epoch_end = run.batch == setup.steps_per_epoch
            interrupt = stop["signal"] or (
                "interrupt_at_step" if step == interrupt_at_step else None
            )
            # Multi-process runs: a stop seen by any process stops all at this step.
            interrupt = distributed.agree_on_stop(interrupt)
            if epoch_end or interrupt or (every and step % every == 0):
                monitor.flush()
                if epoch_end:
                    _end_epoch(setup, run, state, step, monitor.end_epoch())
                run.wall_time_s = clock.total()
                checkpoints.save(step, state, run)
            if interrupt:
                checkpoints.finish()
                raise Interrupted(step, checkpoints.directory, interrupt)
            if epoch_end:
                return state
    raise RuntimeError(
        f"The input pipeline ended epoch {epoch} after {run.batch} batches; "
        f"expected {setup.steps_per_epoch}."
    )


def _placed_batches(setup, run, epoch: int) -> Iterator:
    """The rest of the epoch's training batches, placed on the mesh; with `input_prefetch`,
    gathered and placed that many batches ahead by a background thread (the same batches in
    the same order, so the numbers do not change)."""
    batches = pipeline.epoch_batches(
        setup.splits.train, setup.batch_size, seed=setup.seed, epoch=epoch, start_batch=run.batch
    )
    placed = ((shard_batch(setup.mesh, x), shard_batch(setup.mesh, y)) for x, y in batches)
    depth = int(setup.config.get("input_prefetch", 0) or 0)
    return pipeline.prefetch(placed, depth) if depth else placed


class _StepMonitor:
    """Reads the metrics of dispatched steps one step late (so the device stays busy), stops
    the run on a non-finite one, sums the epoch's loss into the run's progress and measures the
    epoch's throughput in this session (the first step, which compiles, left out)."""

    def __init__(self, run: Progress, bar: Any, setup: _Setup, checkpoints: Checkpoints):
        self.run, self.bar, self.setup, self.checkpoints = run, bar, setup, checkpoints
        self.pending: list[tuple[int, dict[str, jax.Array]]] = []
        self.tick, self.images, self.compiled = time.perf_counter(), 0, False

    def start_epoch(self) -> None:
        self.tick, self.images = time.perf_counter(), 0

    def rate(self) -> float:
        return _rate(self.images, time.perf_counter() - self.tick)

    def dispatched(self, step: int, step_metrics: dict[str, jax.Array]) -> None:
        self.pending.append((step, step_metrics))
        if not self.compiled:
            jax.block_until_ready(step_metrics)
            self.compiled, self.tick = True, time.perf_counter()
        else:
            self.images += self.setup.batch_size
        self.flush(keep=1)
        self.bar.update(1)

    def flush(self, keep: int = 0) -> None:
        """Reads the metrics of finished steps (all but the last `keep`), checking finiteness."""
        while len(self.pending) > keep:
            step, values = self.pending.pop(0)
            values = to_host(values)
            loss, grad_norm = float(values["loss"]), float(values["grad_norm"])
            if not (math.isfinite(loss) and math.isfinite(grad_norm) and values["params_finite"]):
                raise self._non_finite(step, loss, grad_norm, bool(values["params_finite"]))
            self.run.loss_sum += loss
            self.run.loss_count += 1
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{self.rate():.0f}", refresh=False)

    def end_epoch(self) -> float:
        """The epoch's throughput; adds the epoch's training time and images to the run's."""
        rate = self.rate()
        self.run.train_time_s += time.perf_counter() - self.tick
        self.run.train_images += self.images
        return rate

    def _non_finite(self, step: int, loss: float, grad_norm: float, finite: bool) -> NonFiniteLoss:
        last = self.checkpoints.last_saved
        kept = (
            f"the last good checkpoint (step {last}) is kept in {self.checkpoints.directory}"
            if last is not None
            else "no checkpoint had been saved yet"
        )
        return NonFiniteLoss(
            step,
            f"Non-finite training loss, gradient or parameters at step {step} "
            f"(epoch {(step - 1) // self.setup.steps_per_epoch + 1}): loss={loss}, "
            f"grad_norm={grad_norm}, params_finite={finite}. "
            f"Training stopped; {kept}. Lower learning_rate or set grad_clip.",
        )


def _end_epoch(setup: _Setup, run: Progress, state: TrainState, step: int, rate: float) -> None:
    """Validation metrics at threshold 0.5, one curve entry, data position to the next epoch."""
    val = setup.splits.val
    scores = eval_scores(setup.eval_step, state.variables, val, setup.eval_batch_size, setup.mesh)
    result = metrics.evaluate(
        scores, val.labels, train_positives=setup.train_positives, **setup.bucket_kw
    )
    run.curves.append(
        {
            "epoch": run.epoch + 1,
            "step": int(step),
            "train_loss": run.loss_sum / max(run.loss_count, 1),
            "val_mAP": result["mAP"],
            "val_macro_f1": result["macro_f1"],
            "val_micro_f1": result["micro_f1"],
            "val_buckets_mAP": {k: v["mAP"] for k, v in result["buckets"].items()},
            "images_per_s": rate,
        }
    )
    run.epoch, run.batch = run.epoch + 1, 0
    run.loss_sum, run.loss_count = 0.0, 0


def _record(setup: _Setup, run: Progress, failure: NonFiniteLoss | None, clock: _WallClock):
    """The record fields of a trained run, before its final evaluation (val and test)."""
    train, val, test = setup.splits
    # steps: those completed with finite numbers.
    steps = run.step(setup.steps_per_epoch) if failure is None else failure.step - 1
    return records.trainer_fields(
        status="failed" if failure else "finished",
        failure=None if failure is None else str(failure),
        data={
            "provenance": {d.split: _with_init(d.provenance, run) for d in setup.splits},
            "label_names": list(train.label_names),
            "train_positives": setup.train_positives,
            "num_train": train.num_examples,
            "num_val": val.num_examples,
            "num_test": test.num_examples,
        },
        curves=list(run.curves),
        val=None,
        test=None,
        wall_time_s=clock.total(),
        images_per_s=_rate(run.train_images, run.train_time_s),
        steps=steps,
    )


def _with_init(provenance: dict[str, Any], run: Progress) -> dict[str, Any]:
    """A split's provenance plus `init_from` (where the initial weights came from) if set."""
    return provenance if run.init_from is None else {**provenance, "init_from": run.init_from}


def _final_evaluation(setup: _Setup, state: TrainState, best: dict[str, Any]):
    """(val, test) metrics of `state` with per-label thresholds chosen on validation."""
    _, val, test = setup.splits
    mesh, batch_size, variables = setup.mesh, setup.eval_batch_size, state.variables
    val_scores = eval_scores(setup.eval_step, variables, val, batch_size, mesh)
    test_scores = eval_scores(setup.eval_step, variables, test, batch_size, mesh)
    thresholds = metrics.choose_thresholds(val_scores, val.labels)
    kw = {"train_positives": setup.train_positives, "thresholds": thresholds, **setup.bucket_kw}
    val_metrics = metrics.evaluate(val_scores, val.labels, **kw)
    test_metrics = metrics.evaluate(test_scores, test.labels, **kw)
    return (
        {**val_metrics, "best_epoch": best["epoch"], "best_step": best["step"]},
        {**test_metrics, "thresholds": [float(t) for t in thresholds]},
    )


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _load_splits(config: Any, cutoff: int, seed: int) -> Splits:
    data = config_dict(config.data)
    data_seed = data.pop("seed", None)  # None: the run seed also draws the data (a replicate)
    return load_task(
        config.task, cutoff=cutoff, seed=seed if data_seed is None else data_seed, **data
    )


def _check_batch_sizes(config: Any, splits: Splits, num_devices: int) -> tuple[int, int]:
    batch_size, eval_batch_size = int(config.batch_size), int(config.eval_batch_size)
    for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value < 1 or value % num_devices:
            raise ValueError(
                f"{name}={value} is not a positive multiple of the {num_devices} devices: the "
                f"global batch is split evenly over devices. Set {name} to a multiple of "
                f"{num_devices} (e.g. {max(num_devices, value // num_devices * num_devices)})."
            )
    if splits.train.num_examples < batch_size:
        raise ValueError(
            f"The training split has {splits.train.num_examples} examples, fewer than one batch "
            f"of {batch_size}; lower batch_size."
        )
    return batch_size, eval_batch_size


@contextlib.contextmanager
def _stop_signals() -> Iterator[dict[str, Any]]:
    """SIGINT/SIGTERM set a flag (checked at step boundaries); previous handlers come back after.

    Outside the main thread signals cannot be handled; the flag then only follows
    `interrupt_at_step`.
    """
    flag: dict[str, Any] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["signal"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _run_name(config: Any) -> str:
    """The run's variant ("proposed(beta=0.99)"), or what names a config built by hand."""
    if "variant" in config:
        return format_variant(config)
    return str(config.get("name", config.get("method", "run")))


def _rate(images: int, seconds: float) -> float:
    return float(images / seconds) if seconds > 0 else 0.0


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _summary_line(config: Any, seed: int, cutoff: int, record: Mapping[str, Any]) -> str:
    test = record["test"]
    buckets = " ".join(f"{k} {_fmt(v['mAP'])}" for k, v in test["buckets"].items())
    return (
        f"{config.name} seed={seed} cutoff={cutoff}: test mAP {_fmt(test['mAP'])} "
        f"({buckets}) macro-F1 {_fmt(test['macro_f1'])} | {record['steps']} steps, "
        f"{record['wall_time_s']:.0f} s, {record['images_per_s']:.0f} img/s"
    )
