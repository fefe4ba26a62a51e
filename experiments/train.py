"""The trainer: data-parallel train and eval steps over a device mesh, the loop, checkpoints.

One run = one (config, seed, cut-off). `train_and_evaluate` reads top to bottom:

1. Data: `load_task(config.task, cutoff=..., seed=config.data.seed, ...)` (or given `splits`);
   label counts of the TRAIN split feed the weighting scheme and the frequency buckets.
2. Loss: `make_loss_fn(config, counts)` is the one place where the config's scheme and loss become
   a function of (logits, labels). Reduction: the elementwise loss is summed over the C labels
   and averaged over the batch, L = (1/B) sum_b sum_j loss[b, j], so a label's weight scales its
   gradient directly and the loss does not shrink as C grows.
3. Model and optimiser: a Flax ResNet (`experiments.models`), optax adamw (or sgd + momentum)
   with linear warm-up and cosine decay to 0, weight decay on kernels only (not on BatchNorm
   scales/biases or dense biases), optional global-norm gradient clipping.
4. Steps: `jax.jit` over a 1-D mesh ("data",) of all devices: the batch is sharded on the data
   axis, parameters and optimiser state are replicated, the train state is donated. BatchNorm
   statistics are computed over the global batch (the SPMD partitioner inserts the all-reduce;
   no `axis_name`). Every host builds the same global batch and
   `jax.make_array_from_process_local_data` copies each local device its rows; results are read
   from local replicas; so the same code runs on one CPU, on N GPUs and on several hosts after
   `jax.distributed.initialize()` (the multi-host case is not tested here). Images travel as
   uint8 and are scaled to [-1, 1] inside the step.
5. Evaluation on the validation split every epoch (mAP, macro-F1, bucket metrics at threshold
   0.5). At the end the parameters of the best epoch by validation mAP are restored, per-label
   thresholds are chosen on validation (max F1) and applied to the test split.
6. Checkpoints (orbax CheckpointManager): every `checkpoint_every_steps` steps, at every epoch
   end (with the validation mAP as the checkpoint's metric) and on interruption. Kept: the
   last `keep_checkpoints` and the best `keep_best` (at least 1, since the final evaluation
   restores it) by validation mAP. A checkpoint holds the train state (step, parameters,
   optimiser state, BatchNorm statistics, RNG) and, as JSON, the data position (epoch, batch),
   the curves so far and the running loss sum, so a resumed run ends with exactly the metrics of
   an uninterrupted one.
7. Failures: SIGINT/SIGTERM (or `interrupt_at_step`) checkpoint at the next step boundary and
   raise `Interrupted`; a non-finite loss, gradient norm or parameter stops the run with status
   "failed", keeping the last good checkpoint (nothing is saved from the bad step on).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from orbax.checkpoint import checkpoint_managers as ocp_managers
from tqdm.auto import tqdm

from experiments.data import Dataset, Splits, load_task, pipeline
from experiments.models import create_model
from ltweights import losses, metrics, weights

__all__ = [
    "DATA_AXIS",
    "LOSSES",
    "Interrupted",
    "NonFiniteLoss",
    "create_train_state",
    "eval_scores",
    "make_eval_step",
    "make_init",
    "make_loss_fn",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "normalize_images",
    "shard_batch",
    "to_host",
    "train_and_evaluate",
    "train_step_fn",
]

DATA_AXIS = "data"
CHECKPOINT_DIR = "checkpoints"
# Metric stored with epoch-end checkpoints; an undefined mAP (no positives) ranks below any value.
_BEST_METRIC = "val_mAP"
_NO_MAP = -1.0


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
# Loss from config and label counts
# ---------------------------------------------------------------------------------------------

# name -> elementwise loss; every one has the logits' shape [B, C].
LOSSES: dict[str, Callable[..., jax.Array]] = {
    "bce": losses.weighted_sigmoid_bce,
    "focal": losses.sigmoid_focal,
    "asymmetric": losses.asymmetric,
    "distribution_balanced": losses.distribution_balanced,
    "logit_adjusted": losses.logit_adjusted_bce,
}
# Arguments the trainer supplies from the label counts; not settable through loss_params.
_SUPPLIED = ("logits", "labels", "pos_weight", "neg_weight", "positives", "num_examples", "prior")


def _as_dict(x: Any) -> dict[str, Any]:
    if x is None:
        return {}
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return dict(x)


def _keyword_params(fn: Callable) -> set[str]:
    return {
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def make_loss_fn(config: Any, counts: weights.LabelCounts) -> Callable[[jax.Array, jax.Array], Any]:
    """The training objective of a config: `loss_fn(logits [B, C], labels [B, C]) -> scalar`.

    pos/neg weights come from `ltweights.weights.scheme_weights(config.scheme, counts,
    **config.scheme_params)` with the TRAIN split's counts; the elementwise loss is
    `LOSSES[config.loss]` with `config.loss_params`:

      bce                    weighted_sigmoid_bce(logits, labels, pos_weight, neg_weight)
      focal                  sigmoid_focal(..., gamma, alpha, pos_weight, neg_weight)
      asymmetric             asymmetric(..., gamma_pos, gamma_neg, clip, pos_weight, neg_weight)
      distribution_balanced  distribution_balanced(..., positives, num_examples, ...) (its own
                             re-balancing; scheme weights are passed only if the loss takes them)
      logit_adjusted         logit_adjusted_bce(..., prior = positives / num_examples, tau, ...)

    Reduction: sum over labels, mean over the batch: L = (1/B) sum_b sum_j loss[b, j].
    loss_params keys that the chosen loss does not take are ignored when another loss takes
    them (one base config holds them all); a key no loss takes is an error.
    """
    name = config.loss
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; valid losses: {', '.join(LOSSES)}.")
    fn = LOSSES[name]
    accepted = _keyword_params(fn)
    params = _as_dict(config.get("loss_params"))
    known_anywhere = set().union(*(_keyword_params(f) for f in LOSSES.values())) - set(_SUPPLIED)
    unknown = sorted(set(params) - known_anywhere)
    if unknown:
        raise ValueError(
            f"loss_params {unknown} are not parameters of any loss; the losses take "
            f"{sorted(known_anywhere)}. Fix the config's loss_params."
        )
    kwargs = {k: v for k, v in params.items() if k in accepted and k not in _SUPPLIED}
    for key, value in kwargs.items():  # per-label vectors arrive as lists from a config
        if isinstance(value, list | tuple):
            kwargs[key] = jnp.asarray(value, jnp.float32)

    pos_weight, neg_weight = weights.scheme_weights(
        config.scheme, counts, **_as_dict(config.get("scheme_params"))
    )
    weighted = config.scheme != "none"
    if "pos_weight" in accepted:
        kwargs["pos_weight"], kwargs["neg_weight"] = pos_weight, neg_weight
    elif weighted:
        raise ValueError(
            f"Loss {name!r} does its own label re-weighting and takes no scheme weights, but the "
            f"config sets scheme={config.scheme!r}. Set scheme='none' for this loss."
        )
    positives = np.asarray(counts.positives, np.float32)
    if "positives" in accepted:
        kwargs["positives"] = jnp.asarray(positives)
        kwargs["num_examples"] = int(counts.num_examples)
    if "prior" in accepted:
        # A label with no positives (or no negatives) would give log(0); clip to half a count.
        half = 0.5 / counts.num_examples
        kwargs["prior"] = jnp.asarray(
            np.clip(positives / counts.num_examples, half, 1.0 - half), jnp.float32
        )

    def loss_fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
        elementwise = fn(logits, labels, **kwargs)
        return jnp.mean(jnp.sum(elementwise, axis=-1))

    return loss_fn


# ---------------------------------------------------------------------------------------------
# Optimiser, state, steps
# ---------------------------------------------------------------------------------------------


def _decay_mask(params):
    """Weight decay on kernels (ndim > 1) only: not on BatchNorm scale/bias or dense biases."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: Any, steps_per_epoch: int) -> optax.GradientTransformation:
    """adamw or sgd+momentum; linear warm-up over warmup_epochs, cosine decay to 0 at the end."""
    total_steps = int(config.num_epochs) * steps_per_epoch
    warmup_steps = round(float(config.get("warmup_epochs", 0.0)) * steps_per_epoch)
    warmup_steps = min(max(warmup_steps, 0), max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(config.learning_rate),
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=0.0,
    )
    weight_decay = float(config.get("weight_decay", 0.0) or 0.0)
    optimizer = config.get("optimizer", "adamw")
    if optimizer == "adamw":
        tx = optax.adamw(schedule, weight_decay=weight_decay, mask=_decay_mask)
    elif optimizer == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(weight_decay, mask=_decay_mask),
            optax.sgd(schedule, momentum=float(config.get("momentum", 0.9)), nesterov=True),
        )
    else:
        raise ValueError(f"Unknown optimizer {optimizer!r}; use 'adamw' or 'sgd'.")
    grad_clip = config.get("grad_clip", None)
    if grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(float(grad_clip)), tx)
    return tx


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh ("data",) over all devices (of all hosts).

    The axis is Explicit (sharding in types, JAX's default): the batch's sharding is part of the
    arrays' types and reductions over it (BatchNorm statistics, the mean loss, the gradients)
    become all-reduces over the global batch.
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),),
        (DATA_AXIS,),
        axis_types=(jax.sharding.AxisType.Explicit,),
        devices=devices,
    )


def normalize_images(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1]; BatchNorm after the stem takes care of the rest."""
    return images.astype(jnp.float32) * (2.0 / 255.0) - 1.0


def make_init(model, tx, image_shape, mesh):
    """jit(init)(rng) -> the train state {step, params, batch_stats, opt_state, rng}, replicated.

    `rng` is not consumed by the (deterministic) ResNet; it is kept in the state so that a
    stochastic layer or augmentation can use `fold_in(rng, step)` and still resume exactly.
    """

    def init(rng):
        variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params = variables["params"]
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "batch_stats": variables["batch_stats"],
            "opt_state": tx.init(params),
            "rng": jax.random.fold_in(rng, 1),
        }

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def create_train_state(model, tx, image_shape, *, seed: int, mesh) -> dict[str, Any]:
    """The initial train state of `seed`, replicated on the mesh (see `make_init`)."""
    return make_init(model, tx, tuple(image_shape), mesh)(jax.random.PRNGKey(seed))


def train_step_fn(model, tx, loss_fn):
    """The step maths, unjitted: (state, images uint8, labels) -> (state, metrics).

    metrics: loss (scalar), grad_norm (global L2 norm of the gradients) and params_finite
    (every new parameter finite: a finite loss can still come with an overflowing update, and
    such parameters must never be checkpointed).
    """

    def train_step(state, images, labels):
        x = normalize_images(images)
        y = labels.astype(jnp.float32)

        def objective(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state["batch_stats"]},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return loss_fn(logits, y), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {
            "step": state["step"] + 1,
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": opt_state,
            "rng": state["rng"],
        }
        params_finite = jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)])
        )
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "params_finite": params_finite,
        }
        return new_state, metrics

    return train_step


def make_train_step(model, tx, loss_fn, mesh):
    """jit(train_step)(state, images uint8 [B,H,W,ch], labels [B,C]) -> (state, metrics).

    Batch sharded on the data axis, state replicated and donated, metrics replicated; see
    `train_step_fn` for the maths and the metrics.
    """
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
    return jax.jit(
        train_step_fn(model, tx, loss_fn),
        in_shardings=(replicated, batch, batch),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def make_eval_step(model, mesh):
    """jit(eval_step)({params, batch_stats}, images uint8) -> sigmoid scores float32 [B, C].

    Scores are replicated so that every host can read them (they are small: B x C).
    """

    def eval_step(variables, images):
        logits = model.apply(variables, normalize_images(images), train=False)
        return jax.nn.sigmoid(logits)

    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
    return jax.jit(eval_step, in_shardings=(replicated, batch), out_shardings=replicated)


def shard_batch(mesh, global_batch: np.ndarray) -> jax.Array:
    """A global host batch -> a jax.Array sharded on the data axis.

    Every host holds the same global batch (the pipeline is deterministic per seed and epoch);
    with `global_shape == local_data.shape`, `make_array_from_process_local_data` copies to
    each local device exactly its rows, whatever the order of devices in the mesh.
    """
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, P(DATA_AXIS)), global_batch, global_batch.shape
    )


def to_host(tree: Any) -> Any:
    """Replicated arrays -> NumPy, read from a local replica (works when other hosts hold
    devices of the mesh too, where `np.asarray` of the global array would fail)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def eval_scores(eval_step, variables, dataset: Dataset, batch_size: int, mesh) -> np.ndarray:
    """Scores [N, C] for every example of `dataset`, padded rows of the last batch dropped."""
    chunks = []
    for images, _, num_valid in pipeline.eval_batches(dataset, batch_size):
        scores = eval_step(variables, shard_batch(mesh, images))
        chunks.append(to_host(scores)[:num_valid])
    return np.concatenate(chunks, axis=0)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _keep_count(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        return 1 if value else 0
    return int(value)


def _checkpoint_manager(directory: Path, config: Any) -> ocp.CheckpointManager:
    """Keeps the last `keep_checkpoints` and the best `keep_best` (>= 1) by validation mAP.

    Only epoch-end checkpoints carry a metric; the best one is always kept because the final
    evaluation restores it.
    """
    keep_last = max(1, _keep_count(config.get("keep_checkpoints"), 2))
    keep_best = max(1, _keep_count(config.get("keep_best"), 1))
    policy = ocp_managers.AnyPreservationPolicy(
        [
            ocp_managers.LatestN(n=keep_last),
            ocp_managers.BestN(
                get_metric_fn=lambda m: m[_BEST_METRIC],
                n=keep_best,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
    return ocp.CheckpointManager(directory, options=options)


# Fields that do not change what a run computes: a resume may differ in them.
_NOT_FINGERPRINTED = (
    "seeds",
    "cutoffs",
    "sweep",
    "variant",
    "output_dir",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "keep_best",
)


def _run_fingerprint(config: Any, seed: int | None, cutoff: int, train_positives: list[int]) -> str:
    """Hash of what determines a run's numbers, to refuse resuming someone else's checkpoint.

    With seed=None: the key of the compiled steps, which runs differing only in seed share.
    """
    as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    as_dict = {k: v for k, v in as_dict.items() if k not in _NOT_FINGERPRINTED}
    if isinstance(as_dict.get("data"), dict):  # where the files live does not matter
        as_dict["data"] = {
            k: v for k, v in as_dict["data"].items() if k not in ("data_dir", "cache_dir")
        }
    key = {"config": as_dict, "seed": seed, "cutoff": cutoff, "train_positives": train_positives}
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Compiled steps of recent runs. Runs that differ only in seed (a sweep's repeats, a resume in
# the same process) have identical step functions: reusing the jitted callables skips their
# compilation. Small, since each entry holds executables.
_COMPILED: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()
_COMPILED_MAX_ENTRIES = 4


def _run_functions(config, counts, splits: Splits, steps_per_epoch: int, mesh, cutoff: int):
    """(init, train_step, eval_step) of a run, from the cache when a run had the same."""
    key = (
        _run_fingerprint(config, None, cutoff, [int(x) for x in counts.positives]),
        int(counts.num_examples),
        steps_per_epoch,
        mesh,
        splits.train.images.shape[1:],
    )
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    model = create_model(_as_dict(config.model), splits.train.num_labels)
    tx = make_optimizer(config, steps_per_epoch)
    loss_fn = make_loss_fn(config, counts)
    functions = (
        make_init(model, tx, tuple(splits.train.images.shape[1:]), mesh),
        make_train_step(model, tx, loss_fn, mesh),
        make_eval_step(model, mesh),
    )
    _COMPILED[key] = functions
    while len(_COMPILED) > _COMPILED_MAX_ENTRIES:
        _COMPILED.popitem(last=False)
    return functions


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


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _load_splits(config: Any, cutoff: int) -> Splits:
    data = _as_dict(config.data)
    data_seed = data.pop("seed", 0)
    return load_task(config.task, cutoff=cutoff, seed=data_seed, **data)


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


def _variables(state) -> dict[str, Any]:
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def _best_entry(curves: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch with the highest validation mAP; ties go to the later epoch (as orbax's BestN)."""

    def key(entry):
        value = entry["val_mAP"]
        return (_NO_MAP if value is None else value, entry["step"])

    return max(curves, key=key)


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
      seed: run seed: model initialisation and batch order (the data build uses config.data.seed).
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
    """
    start_time = time.perf_counter()
    workdir = Path(workdir).resolve()
    splits = _load_splits(config, cutoff) if splits is None else splits
    train, val, test = splits
    counts = weights.label_counts(train.labels)
    train_positives = [int(x) for x in counts.positives]
    data_fields = {
        "provenance": {d.split: d.provenance for d in splits},
        "label_names": list(train.label_names),
        "train_positives": train_positives,
        "num_train": train.num_examples,
        "num_val": val.num_examples,
        "num_test": test.num_examples,
    }

    mesh = make_mesh()
    batch_size, eval_batch_size = _check_batch_sizes(config, splits, mesh.size)
    steps_per_epoch = pipeline.num_batches(train.num_examples, batch_size)
    num_epochs = int(config.num_epochs)
    total_steps = num_epochs * steps_per_epoch
    bucket_kw = {"head": int(config.bucket_head), "tail": int(config.bucket_tail)}
    every = int(config.get("checkpoint_every_steps") or 0)  # 0: epoch ends only
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1; got {num_epochs}.")
    progress = progress and jax.process_index() == 0  # one bar and summary per job

    init, train_step, eval_step = _run_functions(
        config, counts, splits, steps_per_epoch, mesh, cutoff
    )
    state = init(jax.random.PRNGKey(seed))

    # --- resume --------------------------------------------------------------------------------
    checkpoint_dir = workdir / CHECKPOINT_DIR
    manager = _checkpoint_manager(checkpoint_dir, config)
    fingerprint = _run_fingerprint(config, seed, cutoff, train_positives)
    meta: dict[str, Any] = {
        "epoch": 0,
        "batch": 0,
        "curves": [],
        "loss_sum": 0.0,
        "loss_count": 0,
        "wall_time_s": 0.0,
        "train_time_s": 0.0,
        "train_images": 0,
        "fingerprint": fingerprint,
        "seed": int(seed),
        "cutoff": int(cutoff),
    }
    latest = manager.latest_step()
    try:
        if latest is not None:
            restored = manager.restore(
                latest,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(state), meta=ocp.args.JsonRestore()
                ),
            )
            saved_meta = dict(restored["meta"])
            if saved_meta.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{checkpoint_dir} holds checkpoints of a different run (config, seed, cut-off "
                    "or training data differ); delete the folder to start afresh or pass another "
                    "workdir."
                )
            state, meta = restored["state"], saved_meta
    except BaseException:
        manager.close()
        raise
    last_saved = latest

    def save(step: int, val_map: float | None = None, *, epoch_end: bool = False) -> None:
        nonlocal last_saved
        meta["wall_time_s"] = session_wall() + wall_before
        metric = {_BEST_METRIC: _NO_MAP if val_map is None else float(val_map)}
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))
            ),
            metrics=metric if epoch_end else None,
        )
        last_saved = step

    wall_before = float(meta["wall_time_s"])  # earlier sessions of an interrupted run

    def session_wall() -> float:
        return time.perf_counter() - start_time

    # --- train ---------------------------------------------------------------------------------
    step = int(meta["epoch"]) * steps_per_epoch + int(meta["batch"])
    state_step = int(to_host(state["step"]))
    if state_step != step:
        raise RuntimeError(
            f"Checkpoint in {checkpoint_dir} is inconsistent (state step {state_step}, "
            f"data position {step}); delete the folder and rerun."
        )
    failure = None
    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not progress,
        unit="step",
        desc=f"{config.get('name', 'run')} seed={seed} cutoff={cutoff}",
        leave=False,
    )
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    # Throughput of the current epoch in this session; the first step (compile) is left out.
    clock = {"tick": time.perf_counter(), "images": 0, "compiled": False}

    def live_rate() -> float:
        return _rate(clock["images"], time.perf_counter() - clock["tick"])

    def flush(keep: int = 0) -> None:
        """Reads the metrics of finished steps (all but the last `keep`), checking finiteness.

        Reading one step behind the one just dispatched keeps the device busy.
        """
        while len(pending) > keep:
            done_step, m = pending.pop(0)
            values = to_host(m)
            loss, grad_norm = float(values["loss"]), float(values["grad_norm"])
            if not (math.isfinite(loss) and math.isfinite(grad_norm) and values["params_finite"]):
                kept = (
                    f"the last good checkpoint (step {last_saved}) is kept in {checkpoint_dir}"
                    if last_saved is not None
                    else "no checkpoint had been saved yet"
                )
                raise NonFiniteLoss(
                    done_step,
                    f"Non-finite training loss, gradient or parameters at step {done_step} "
                    f"(epoch {(done_step - 1) // steps_per_epoch + 1}): loss={loss}, "
                    f"grad_norm={grad_norm}, params_finite={bool(values['params_finite'])}. "
                    f"Training stopped; {kept}. Lower learning_rate or set grad_clip.",
                )
            meta["loss_sum"] += loss
            meta["loss_count"] += 1
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{live_rate():.0f}", refresh=False)

    try:
        with _stop_signals() as stop:
            while meta["epoch"] < num_epochs:
                epoch = int(meta["epoch"])
                clock["tick"], clock["images"] = time.perf_counter(), 0
                batches = pipeline.epoch_batches(
                    train, batch_size, seed=seed, epoch=epoch, start_batch=int(meta["batch"])
                )
                for images, labels in batches:
                    state, step_metrics = train_step(
                        state, shard_batch(mesh, images), shard_batch(mesh, labels)
                    )
                    step += 1
                    meta["batch"] += 1
                    pending.append((step, step_metrics))
                    if not clock["compiled"]:
                        jax.block_until_ready(step_metrics)
                        clock["compiled"], clock["tick"] = True, time.perf_counter()
                    else:
                        clock["images"] += batch_size
                    flush(keep=1)
                    bar.update(1)

                    epoch_end = meta["batch"] == steps_per_epoch
                    interrupt = stop["signal"] or (
                        "interrupt_at_step" if step == interrupt_at_step else None
                    )
                    if epoch_end:
                        flush()
                        rate = live_rate()
                        meta["train_time_s"] += time.perf_counter() - clock["tick"]
                        meta["train_images"] += clock["images"]
                        val_map = _end_epoch(
                            meta, step, val, eval_step, _variables(state), eval_batch_size,
                            mesh, train_positives, bucket_kw, rate,
                        )  # fmt: skip
                        save(step, val_map, epoch_end=True)
                    elif interrupt or (every and step % every == 0):
                        flush()
                        save(step)
                    if interrupt:
                        manager.wait_until_finished()
                        raise Interrupted(step, checkpoint_dir, interrupt)
                    if epoch_end:
                        break
                if meta["epoch"] == epoch:
                    raise RuntimeError(
                        f"The input pipeline ended epoch {epoch} after {meta['batch']} batches; "
                        f"expected {steps_per_epoch}."
                    )
        manager.wait_until_finished()
    except NonFiniteLoss as e:
        manager.wait_until_finished()
        failure, step = str(e), e.step - 1  # steps: the last step with a finite loss
        if jax.process_index() == 0:
            print(failure)
    except BaseException:
        manager.close()  # waits for a checkpoint being written
        raise
    finally:
        bar.close()

    curves = list(meta["curves"])
    wall_time = session_wall() + wall_before
    images_per_s = _rate(meta["train_images"], meta["train_time_s"])
    record = {
        "status": "failed" if failure else "finished",
        "failure": failure,
        "data": data_fields,
        "curves": curves,
        "val": None,
        "test": None,
        "wall_time_s": wall_time,
        "images_per_s": images_per_s,
        "steps": step,
    }
    if failure:
        manager.close()
        return record

    # --- final evaluation with the best epoch's parameters -------------------------------------
    best = _best_entry(curves)
    try:
        restored = manager.restore(
            best["step"], args=ocp.args.Composite(state=ocp.args.StandardRestore(state))
        )
    finally:
        manager.close()
    variables = _variables(restored["state"])
    val_scores = eval_scores(eval_step, variables, val, eval_batch_size, mesh)
    test_scores = eval_scores(eval_step, variables, test, eval_batch_size, mesh)
    thresholds = metrics.choose_thresholds(val_scores, val.labels)
    record["val"] = {
        **metrics.evaluate(
            val_scores,
            val.labels,
            train_positives=train_positives,
            thresholds=thresholds,
            **bucket_kw,
        ),
        "best_epoch": best["epoch"],
        "best_step": best["step"],
    }
    record["test"] = {
        **metrics.evaluate(
            test_scores,
            test.labels,
            train_positives=train_positives,
            thresholds=thresholds,
            **bucket_kw,
        ),
        "thresholds": [float(t) for t in thresholds],
    }
    record["wall_time_s"] = session_wall() + wall_before
    if progress:
        print(_summary_line(config, seed, cutoff, record))
    return record


def _rate(images: int, seconds: float) -> float:
    return float(images / seconds) if seconds > 0 else 0.0


def _end_epoch(
    meta, step, val, eval_step, variables, eval_batch_size, mesh, train_positives, bucket_kw, rate
) -> float | None:
    """Validation metrics at threshold 0.5, one curve entry, data position to the next epoch."""
    scores = eval_scores(eval_step, variables, val, eval_batch_size, mesh)
    result = metrics.evaluate(scores, val.labels, train_positives=train_positives, **bucket_kw)
    count = max(meta["loss_count"], 1)
    meta["curves"].append(
        {
            "epoch": int(meta["epoch"]) + 1,
            "step": int(step),
            "train_loss": meta["loss_sum"] / count,
            "val_mAP": result["mAP"],
            "val_macro_f1": result["macro_f1"],
            "val_micro_f1": result["micro_f1"],
            "val_buckets_mAP": {k: v["mAP"] for k, v in result["buckets"].items()},
            "images_per_s": rate,
        }
    )
    meta["epoch"] = int(meta["epoch"]) + 1
    meta["batch"] = 0
    meta["loss_sum"], meta["loss_count"] = 0.0, 0
    return result["mAP"]


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _summary_line(config: Any, seed: int, cutoff: int, record: Mapping[str, Any]) -> str:
    test = record["test"]
    buckets = " ".join(f"{k} {_fmt(v['mAP'])}" for k, v in test["buckets"].items())
    return (
        f"{config.get('name', 'run')} seed={seed} cutoff={cutoff}: test mAP {_fmt(test['mAP'])} "
        f"({buckets}) macro-F1 {_fmt(test['macro_f1'])} | {record['steps']} steps, "
        f"{record['wall_time_s']:.0f} s, {record['images_per_s']:.0f} img/s"
    )
