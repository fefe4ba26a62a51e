"""The step maths of the trainer: loss from a config, optimiser, train state, jitted steps.

(About 500 lines: the jitted programs and the cache that shares them belong together.)

Everything here is a function of arrays and a config; the loop that calls these steps, the
checkpoints and the record live in `experiments.train` and `experiments.checkpoints`.

- Loss: `make_loss_fn(config, counts)` is the one place where the config's scheme and loss become
  a function of (logits, labels). Reduction: the elementwise loss is summed over the C labels and
  averaged over the batch, L = (1/B) sum_b sum_j loss[b, j], so a label's weight scales its
  gradient directly and the loss does not shrink as C grows.
- Optimiser: optax adamw (or sgd + momentum) with linear warm-up and cosine decay to 0, weight
  decay on kernels only (not on BatchNorm scales/biases or dense biases), optional global-norm
  gradient clipping; optionally the fine-tune recipe (`make_optimizer`): the backbone at a
  fraction of the head's rate and frozen, weight decay included, for the first epochs.
  BatchNorm running statistics are never frozen: they follow the training batches throughout.
- Steps: `jax.jit` over a 1-D mesh ("data",) of all devices: the batch is sharded on the data
  axis, the `TrainState` is replicated and donated. BatchNorm statistics are computed over the
  global batch (the SPMD partitioner inserts the all-reduce; no `axis_name`). Every host builds
  the same global batch and `jax.make_array_from_process_local_data` copies each local device
  its rows; results are read from local replicas; so the same code runs on one CPU, on N GPUs
  and on several hosts after `jax.distributed.initialize()` (the multi-host case is not tested
  here). Images travel as uint8 and are scaled to [-1, 1] inside the step.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import methods, records
from experiments.augment import get_augment
from experiments.data import Dataset, pipeline
from experiments.models import create_model
from ltweights import weights

__all__ = [
    "DATA_AXIS",
    "LOSSES",
    "TrainState",
    "config_dict",
    "create_train_state",
    "eval_scores",
    "make_eval_step",
    "make_init",
    "make_loss_fn",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "normalize_images",
    "param_labels",
    "run_functions",
    "shard_batch",
    "to_host",
    "train_step_fn",
]

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
    """What a train step reads and writes, and what a checkpoint holds.

    `rng` is not consumed by the (deterministic) ResNet; it is kept so that a stochastic layer or
    augmentation can use `fold_in(rng, step)` and still resume exactly.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array

    def __getitem__(self, name: str) -> Any:
        # Read access by name (`state["params"]`), as when the state was a dict: callers such
        # as the training benchmark still index it that way.
        return getattr(self, name)

    @property
    def variables(self) -> dict[str, Any]:
        """The model's variables, as `model.apply` takes them."""
        return {"params": self.params, "batch_stats": self.batch_stats}


# ---------------------------------------------------------------------------------------------
# Loss from config and label counts
# ---------------------------------------------------------------------------------------------

# The losses by function name and the arguments the trainer supplies: the method registry's.
LOSSES = methods.LOSSES
_SUPPLIED = methods.SUPPLIED_LOSS_ARGS


def config_dict(x: Any) -> dict[str, Any]:
    """A config block (ConfigDict, mapping or None) as a plain dict."""
    if x is None:
        return {}
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return dict(x)


@dataclasses.dataclass(frozen=True)
class Objective:
    """A training objective: `fn(logits, labels, args) -> scalar` and its per-label `args`.

    Calling it, `objective(logits, labels)`, gives the loss. The per-label arrays (scheme
    weights, label counts, priors) are kept apart so that the train step takes them as an
    argument rather than baking them into the program as constants: runs whose seeds draw
    different class orders, or whose cut-offs differ, then compile to the same program, and a
    sweep compiles each method once (JAX's persistent cache serves the rest).

    `compiled` says what `fn` compiles into the step (the loss's name and its Python-valued
    arguments, as JSON): two objectives with equal `compiled` and args of equal shapes give
    the same program.
    """

    fn: Callable[[jax.Array, jax.Array, dict[str, jax.Array]], jax.Array]
    args: dict[str, jax.Array]
    compiled: str = ""

    def __call__(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        return self.fn(logits, labels, self.args)


def make_loss_fn(config: Any, counts: weights.LabelCounts) -> Objective:
    """The training objective of a config: `loss_fn(logits [B, C], labels [B, C]) -> scalar`
    (an `Objective`, whose per-label arrays the train step takes as an argument).

    pos/neg weights come from `ltweights.weights.scheme_weights(config.scheme, counts,
    **config.scheme_params)` with the TRAIN split's counts; the elementwise loss is
    `LOSSES[config.loss]` with `config.loss_params` and the inputs that
    `methods.loss_inputs` supplies from the counts and weights:

      weighted_sigmoid_bce   (logits, labels, pos_weight, neg_weight)
      sigmoid_focal          (..., gamma, alpha, pos_weight, neg_weight)
      asymmetric             (..., gamma_pos, gamma_neg, clip, pos_weight, neg_weight)
      distribution_balanced  (..., positives, num_examples, ...) (its own re-balancing; scheme
                             weights are passed only if the loss takes them)
      logit_adjusted_bce     (..., prior = positives / num_examples, tau, ...)

    Reduction: sum over labels, mean over the batch: L = (1/B) sum_b sum_j loss[b, j].
    loss_params keys that the chosen loss does not take are ignored when another loss takes
    them (one base config holds them all); a key no loss takes is an error.
    """
    name = config.loss
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; valid losses: {', '.join(LOSSES)}.")
    fn = LOSSES[name]
    accepted = methods.keyword_parameters(fn)
    params = config_dict(config.loss_params)
    known_anywhere = set().union(*(methods.keyword_parameters(f) for f in LOSSES.values()))
    known_anywhere -= set(_SUPPLIED)
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
        config.scheme, counts, **config_dict(config.scheme_params)
    )
    if "pos_weight" not in accepted and config.scheme != "none":
        raise ValueError(
            f"Loss {name!r} does its own label re-weighting and takes no scheme weights, but the "
            f"config sets scheme={config.scheme!r}. Set scheme='none' for this loss."
        )
    supplied = methods.loss_inputs(name, counts, pos_weight, neg_weight)
    kwargs.update(supplied.static)
    args = supplied.per_label  # per-label arrays: arguments of the step, not constants

    def loss_fn(logits: jax.Array, labels: jax.Array, args: dict[str, jax.Array]) -> jax.Array:
        elementwise = fn(logits, labels, **kwargs, **args)
        return jnp.mean(jnp.sum(elementwise, axis=-1))

    compiled = json.dumps([name, kwargs], sort_keys=True, default=lambda a: np.asarray(a).tolist())
    return Objective(loss_fn, {k: jnp.asarray(v, jnp.float32) for k, v in args.items()}, compiled)


# ---------------------------------------------------------------------------------------------
# Optimiser, state, steps
# ---------------------------------------------------------------------------------------------


def _decay_mask(params):
    """Weight decay on kernels (ndim > 1) only: not on BatchNorm scale/bias or dense biases."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


# The fine-tune recipe's two parameter groups (see `param_labels`).
HEAD, BACKBONE = "head", "backbone"
# The top-level parameter module that is the classifier head in every suite model
# (experiments/models: the ResNet's and the linear model's `nn.Dense(name="head")`).
HEAD_MODULE = "head"


def param_labels(params):
    """HEAD for the parameters under the top-level `head` module, BACKBONE for all others.

    The label comes from each leaf's tree path, so it holds for any suite model: the ResNet's
    head is its final Dense; the linear model's only parameters are its Dense `head` (its
    BatchNorm standardisation has none), so for it every parameter is HEAD and the fine-tune
    recipe changes nothing.
    """

    def label(path, _leaf):
        first = path[0]
        name = getattr(first, "key", getattr(first, "name", None))
        return HEAD if name == HEAD_MODULE else BACKBONE

    return jax.tree_util.tree_map_with_path(label, params)


def backbone_schedule(schedule, *, scale: float, frozen_steps: int):
    """The backbone's learning rate: 0 for the first `frozen_steps` steps, then `scale` times
    the base `schedule` at the same step (no second warm-up)."""

    def rate(count):
        return jnp.where(count < frozen_steps, 0.0, scale * schedule(count))

    return rate


def _base_optimizer(config: Any, learning_rate) -> optax.GradientTransformation:
    """adamw or sgd+momentum at `learning_rate` (a schedule), kernels weight-decayed."""
    weight_decay = float(config.weight_decay)
    optimizer = config.optimizer
    if optimizer == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay, mask=_decay_mask)
    if optimizer == "sgd":
        return optax.chain(
            optax.add_decayed_weights(weight_decay, mask=_decay_mask),
            optax.sgd(learning_rate, momentum=float(config.momentum), nesterov=True),
        )
    raise ValueError(f"Unknown optimizer {optimizer!r}; use 'adamw' or 'sgd'.")


def finetune_recipe(config: Any) -> tuple[float, float]:
    """(backbone_lr_scale, freeze_backbone_epochs) of a config; (1.0, 0.0), the plain
    optimiser, for configs written before the recipe existed."""
    return (
        float(config.get("backbone_lr_scale", 1.0)),
        float(config.get("freeze_backbone_epochs", 0.0)),
    )


def make_optimizer(config: Any, steps_per_epoch: int) -> optax.GradientTransformation:
    """adamw or sgd+momentum; linear warm-up over warmup_epochs, cosine decay to 0 at the end.

    The fine-tune recipe (`backbone_lr_scale`, `freeze_backbone_epochs`): the head (the
    parameters under the model's `head` module, `param_labels`) follows the schedule above;
    every other parameter (the backbone) follows `backbone_lr_scale` times it, and is not
    updated at all during the first `freeze_backbone_epochs` epochs (rounded to whole steps):
    a linear probe first, then fine-tuning of the whole network (`optax.partition`, one
    optimiser per group, each with its own moments). The rate multiplies the whole update,
    decoupled weight decay included (adamw: lr * (adam + wd * w); sgd: the decay is added to
    the gradient before the rate), so a frozen backbone does not move, not even by decay. Its
    optimiser state still tracks the backbone's gradients while frozen (Adam's moments, SGD's
    momentum), so the first unfrozen step is an ordinary step at scale x the schedule's rate
    at that point. Gradient clipping, when on, is over all gradients, frozen ones included.

    BatchNorm statistics are not parameters and are not frozen: every train step runs the
    network in training mode, normalising with the batch's statistics and updating the running
    averages (momentum 0.9), so during frozen epochs the running statistics re-estimate the
    new task's data under the frozen weights, and they keep adapting while fine-tuning.

    Defaults (scale 1, no frozen epochs) build exactly the plain optimiser (same state tree,
    bit-identical updates), so earlier configs and checkpoints are unchanged. The linear model
    is all head: the recipe changes nothing for it.
    """
    total_steps = int(config.num_epochs) * steps_per_epoch
    warmup_steps = round(float(config.warmup_epochs) * steps_per_epoch)
    warmup_steps = min(max(warmup_steps, 0), max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(config.learning_rate),
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=0.0,
    )
    scale, freeze_epochs = finetune_recipe(config)
    frozen_steps = round(freeze_epochs * steps_per_epoch)
    if scale == 1.0 and frozen_steps <= 0:
        tx = _base_optimizer(config, schedule)
    else:
        backbone = backbone_schedule(schedule, scale=scale, frozen_steps=frozen_steps)
        tx = optax.partition(
            {HEAD: _base_optimizer(config, schedule), BACKBONE: _base_optimizer(config, backbone)},
            param_labels,
        )
    if config.grad_clip:  # 0 (or None) disables clipping
        tx = optax.chain(optax.clip_by_global_norm(float(config.grad_clip)), tx)
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
    """jit(init)(rng) -> the initial `TrainState`, replicated on the mesh."""

    def init(rng):
        variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables["batch_stats"],
            opt_state=tx.init(params),
            rng=jax.random.fold_in(rng, 1),
        )

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def create_train_state(model, tx, image_shape, *, seed: int, mesh) -> TrainState:
    """The initial train state of `seed`, replicated on the mesh (see `make_init`)."""
    return make_init(model, tx, tuple(image_shape), mesh)(jax.random.PRNGKey(seed))


def train_step_fn(model, tx, loss_fn, augment=None):
    """The step maths, unjitted: (state, images uint8, labels) -> (state, metrics).

    `augment` (experiments.augment) transforms the uint8 batch first, with a key drawn from the
    state's rng and step so that a resumed run augments as an uninterrupted one.

    metrics: loss (scalar), grad_norm (global L2 norm of the gradients) and params_finite
    (every new parameter finite: a finite loss can still come with an overflowing update, and
    such parameters must never be checkpointed).
    """

    def train_step(state, images, labels, loss_args=None):
        if augment is not None:
            images = augment(images, jax.random.fold_in(state.rng, state.step))
        x = normalize_images(images)
        y = labels.astype(jnp.float32)

        def objective(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            loss = loss_fn(logits, y) if loss_args is None else loss_fn.fn(logits, y, loss_args)
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
        )
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


def make_train_step(model, tx, loss_fn, mesh, augment=None):
    """jit(train_step)(state, images uint8 [B,H,W,ch], labels [B,C]) -> (state, metrics).

    Batch sharded on the data axis, state replicated and donated, metrics replicated; see
    `train_step_fn` for the maths and the metrics.
    """
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
    if not isinstance(loss_fn, Objective):  # a plain loss(logits, labels): nothing to pass
        return jax.jit(
            train_step_fn(model, tx, loss_fn, augment),
            in_shardings=(replicated, batch, batch),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
    step = jax.jit(
        train_step_fn(model, tx, loss_fn, augment),
        in_shardings=(replicated, batch, batch, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    return with_loss_args(step, loss_fn.args, mesh)


def with_loss_args(step, loss_args: dict[str, jax.Array], mesh):
    """`train_step(state, images, labels)`: the jitted `step` with one run's per-label loss
    arguments (replicated on the mesh). `train_step.jitted` is `step`, for inspection
    (compilations, lowering) and for binding another run's arguments; `train_step.loss_args`
    the arguments bound."""
    loss_args = jax.device_put(loss_args, NamedSharding(mesh, P()))

    def train_step(state, images, labels):
        return step(state, images, labels, loss_args)

    train_step.jitted = step
    train_step.loss_args = loss_args
    return train_step


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


# Jitted steps of recent runs, keyed by what their programs depend on (`program_key`). The runs
# of one method (its seeds, cut-offs and scheme parameters, a resume in the same process) share
# them: their per-label weights and counts enter the train step as arguments, so only the first
# run compiles. Small, since each entry holds executables.
_COMPILED: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()
_COMPILED_MAX_ENTRIES = 4

# Config fields the compiled steps do not depend on: names, and the scheme, whose weights enter
# the train step as arguments (`Objective`); with the result-neutral fields (file locations, the
# seeds, cut-offs and varied values around the run, checkpoint cadence) and the backbone's
# source, whose weights are values.
_NOT_COMPILED = ("name", "method", "variant", "scheme", "scheme_params", "model.init_from")


def program_key(config, objective: Objective, train: Dataset, steps_per_epoch: int, mesh) -> tuple:
    """What a run's init, train and eval steps compile from: every config field but those in
    `_NOT_COMPILED` and the result-neutral ones (model, optimiser and schedule, augmentation,
    loss parameters, the data fields), the loss's compiled part, the per-label argument
    names, the images' shape and dtype, the number of labels, the steps per epoch (the
    schedule's length) and the mesh. Not the seed, the cut-off or the per-label values."""
    as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    fields = {
        path: value
        for path, value in records.flatten(as_dict).items()
        if not records.is_result_neutral(path)
        and not any(path == f or path.startswith(f + ".") for f in _NOT_COMPILED)
    }
    return (
        json.dumps(fields, sort_keys=True, default=str),
        objective.compiled,
        tuple(sorted(objective.args)),
        tuple(train.images.shape[1:]),
        str(train.images.dtype),
        int(train.num_labels),
        int(steps_per_epoch),
        mesh,
    )


def run_functions(config, counts, train: Dataset, steps_per_epoch: int, mesh):
    """(init, train_step, eval_step) of a run; the jitted steps come from the cache when an
    earlier run compiled the same programs (`program_key`), the loss's per-label arguments are
    this run's."""
    objective = make_loss_fn(config, counts)
    key = program_key(config, objective, train, steps_per_epoch, mesh)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
    else:
        model = create_model(config_dict(config.model), train.num_labels)
        tx = make_optimizer(config, steps_per_epoch)
        augment = get_augment(config.get("augment", "none"))
        _COMPILED[key] = (
            make_init(model, tx, tuple(train.images.shape[1:]), mesh),
            make_train_step(model, tx, objective, mesh, augment).jitted,
            make_eval_step(model, mesh),
        )
        while len(_COMPILED) > _COMPILED_MAX_ENTRIES:
            _COMPILED.popitem(last=False)
    init, step, eval_step = _COMPILED[key]
    return init, with_loss_args(step, objective.args, mesh), eval_step
