"""The base config: every field the trainer and the runner read, with neutral defaults.

A full config is built as base -> task -> tier -> method -> `--set` (see
`experiments.configs.get_config`; `python -m experiments.run --config NAME --show-config` prints
which layer set each field). The base values are the default (cpu) tier's, so the cpu tier
changes nothing; a task adds its own `data` fields, another tier sets only what it changes, and a
method (`experiments.methods.METHODS`) sets the scheme, loss and their parameters. This file is
the one place that lists every field.

Fields (the contract between configs, `experiments.train` and `experiments.run`):

  name            config name, "<task>_<method>", e.g. "catalog_proposed"
  task            key of `experiments.data.TASK_LOADERS`
  tier            "smoke" | "cpu" | "gpu": the size of data, model and schedule
  data            keyword arguments of `load_task(task, cutoff=..., seed=data.seed, **rest)`;
                  `data.seed` None (default): each run seed is a replicate that also draws its
                  own data (for the catalog: which classes are rare and which items are drawn),
                  so intervals over seeds cover the data draw; an integer fixes the data, and
                  seeds then vary only initialisation and batch order
  method          `experiments.methods.METHODS` key: what the config compares
  scheme          `ltweights.weights` scheme name; `scheme_params` its keyword arguments (beta)
  loss            `ltweights.losses` function name (`experiments.methods.LOSSES` key), e.g.
                  "weighted_sigmoid_bce"; `loss_params` its keyword arguments (gamma, tau, ...)
  model           Flax ResNet: name, stage_sizes, num_filters, block ("basic" | "bottleneck"),
                  small_input (3x3 stem without max-pool, for 28-64 px images), dtype (the
                  compute dtype, "float32" or "bfloat16": mixed precision, with parameters,
                  optimiser state, BatchNorm statistics, logits and loss in float32; the gpu
                  tier's default is "bfloat16"),
                  padding ("same" (default) | "torchvision": symmetric padding of stride-2
                  convolutions and the max-pool as torchvision's ResNet; needed for weights
                  imported from torchvision or timm), init_from (None (default): random
                  initialisation; or a torchvision/timm ResNet weights file (.pth/.pt
                  state_dict, or .safetensors), a suite run folder, its checkpoints folder or
                  one checkpoint step folder: the backbone starts from those weights, the head
                  is re-initialised; see experiments/pretrained.py)
  optimisation    batch_size, eval_batch_size, num_epochs, learning_rate (peak, after linear
                  warm-up over warmup_epochs, then cosine decay to 0), weight_decay, optimizer
                  ("adamw" | "sgd"), momentum (sgd only), grad_clip (global norm; 0 disables)
  fine-tuning     model.init_from: None, or a checkpoint the backbone starts from (a
                  torchvision or timm ResNet weights file or a suite run's folder);
                  backbone_lr_scale (1.0): every parameter but the head's (the model's `head`
                  Dense) trains at this fraction of the schedule; freeze_backbone_epochs (0.0):
                  for this many first epochs the backbone is not updated at all, weight decay
                  included (a linear probe first).
                  BatchNorm running statistics are not frozen: every step trains in training
                  mode, so they follow the new task's batches, frozen epochs included. The
                  linear model is all head (no effect). See `experiments.steps.make_optimizer`.
  finetune        the recipe a tier recommends for a pretrained backbone: backbone_lr_scale,
                  freeze_backbone_epochs, learning_rate, each None (keep the field) or a value
                  that replaces the top-level field of that name when model.init_from is set
                  (`experiments.configs.apply_finetune`), except where `--set` gives the field
                  itself; all None (the default): no recipe
  augment         "none" | "flip" | "cells" (catalog tasks: shuffle the 2 x 2 grid's items and
                  mirror each), done inside the train step (experiments/augment.py)
  input_prefetch  training batches gathered and placed on the devices ahead of the step by a
                  background thread (experiments.data.pipeline.prefetch); 0: in the loop. The
                  same batches in the same order, so the numbers do not depend on it
  checkpoints     checkpoint_every_steps, keep_checkpoints (how many of the last to keep),
                  keep_best (how many of the best by val mAP to keep, >= 1)
  buckets         bucket_head, bucket_tail: head >= bucket_head, tail < bucket_tail training
                  positives (`ltweights.metrics.frequency_buckets`)
  run axes        seeds, cutoffs (label-frequency cut-off: training positives of the rarest label)
  vary            nested ConfigDict whose list-valued leaves are varied, e.g.
                  vary.scheme_params.beta = [0.9, 0.99]: one run per value, applied at the
                  dotted path "scheme_params.beta" (several leaves: their Cartesian product).
                  Records before schema version 3 called it `sweep`; that word now names only
                  the results sweep (`experiments.sweep`)
  variant         `str.format` template over the config giving the record's variant, e.g.
                  "proposed(beta={scheme_params.beta:g})": one report row per variant
  output_dir      folder of run records: <output_dir>/<name>/<variant>/cutoff<k>/seed<s>/
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections

from experiments.records import flatten

# Five replicates (each seed also draws the data, see `data.seed`); cut-off 6 puts three of the
# catalog's ten labels in the tail bucket (< bucket_tail = 20 positives), 25 puts four in the
# medium bucket, so the two cut-offs measure both.
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_CUTOFFS = (6, 25)


def get_config() -> ml_collections.ConfigDict:
    """Base config: catalog task, unweighted BCE, the cpu tier's model and schedule."""
    config = ml_collections.ConfigDict()
    config.name = "base"
    config.task = "catalog"
    config.tier = "cpu"

    config.data = ml_collections.ConfigDict()
    # None: the run seed draws the data too (experiments.runs.expand_runs writes it in).
    config.data.seed = ml_collections.FieldReference(None, field_type=int)
    # Optional strings; None means "search the usual places" (see experiments.data).
    config.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    config.data.cache_dir = ml_collections.FieldReference(None, field_type=str)

    config.method = "none"
    config.scheme = "none"
    config.scheme_params = ml_collections.ConfigDict()
    config.loss = "weighted_sigmoid_bce"
    config.loss_params = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet"
    config.model.stage_sizes = [1, 1, 1]
    config.model.num_filters = 8
    config.model.block = "basic"
    config.model.small_input = True
    config.model.dtype = "float32"
    config.model.padding = "same"
    # None: random initialisation (see the field list above).
    config.model.init_from = ml_collections.FieldReference(None, field_type=str)

    config.batch_size = 32
    config.eval_batch_size = 512
    config.num_epochs = 48
    config.learning_rate = 2e-2
    config.warmup_epochs = 1.0
    config.weight_decay = 1e-4
    config.optimizer = "adamw"
    config.momentum = 0.9
    config.grad_clip = 1.0
    # The fine-tune recipe; these defaults are the plain optimiser (bit-identical results).
    config.backbone_lr_scale = 1.0
    config.freeze_backbone_epochs = 0.0
    # What a tier recommends for a pretrained backbone; None: keep the field's own value.
    config.finetune = ml_collections.ConfigDict()
    config.finetune.backbone_lr_scale = ml_collections.FieldReference(None, field_type=float)
    config.finetune.freeze_backbone_epochs = ml_collections.FieldReference(None, field_type=float)
    config.finetune.learning_rate = ml_collections.FieldReference(None, field_type=float)

    config.augment = "none"

    config.input_prefetch = 0

    config.checkpoint_every_steps = 200
    config.keep_checkpoints = 2
    config.keep_best = 1

    config.bucket_head = 100
    config.bucket_tail = 20

    config.seeds = list(DEFAULT_SEEDS)
    config.cutoffs = list(DEFAULT_CUTOFFS)
    config.vary = ml_collections.ConfigDict()
    config.variant = "{scheme}"
    config.output_dir = "runs"
    return config


def flat_values(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """{dotted path: JSON value} of every leaf (an empty block is a leaf)."""
    return flatten(json.loads(json.dumps(config.to_dict())))
