"""Tiers: one switch that sizes data, model and schedule for the machine at hand.

  cpu    (default) the base config as it stands: catalog images 28 x 28, a small ResNet
         ([1, 1, 1] basic blocks, 8 filters), 12 epochs of 2,000 training images; about
         CPU_SECONDS_PER_RUN seconds per catalog run on 2 CPU cores, so the catalog sweep of
         RESULTS.md (2 tasks x 12 variants x 4 cut-offs x 5 seeds, 480 runs) takes about
         2.7 hours there.
  gpu    ResNet-18 (basic blocks [2, 2, 2, 2], 64 filters) on 56 x 56 catalog images (items at
         full size) or 128 x 128 Fashionpedia crops; for ResNet-50 add
         `--set model.stage_sizes=[3,4,6,3] --set model.block=bottleneck`.
  smoke  a handful of steps on a tiny model and dataset: seconds; for tests and for checking
         that the whole pipeline runs. One seed and one cut-off.

A tier sets only the fields it changes from the base config (experiments/configs/base.py).
Records go to runs/ (cpu), runs/gpu/ (gpu) and runs-smoke/ (smoke) unless --output-dir says
otherwise. Choose with `--tier NAME` or a name suffix: `catalog_proposed_gpu` is
`catalog_proposed` at the gpu tier.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import tasks

# One cpu-tier catalog run (2,000 training images x 12 epochs, evaluation, checkpoints), measured
# on 2 CPU cores shared with other work: 18.6 CPU-seconds per run (user + sys) and 20.6 s wall
# over three seeds of catalog_proposed, with compiled steps reused from the compilation cache
# (the first run of a new method or cut-off compiles: ~25 s). Test mAP 0.45-0.52 at cut-off 6
# against 0.30 for random scores. Used by `--list` and `--dry-run` to estimate durations.
CPU_SECONDS_PER_RUN = 20.0
EXPECTED_SECONDS_PER_RUN = {"smoke": 5.0, "cpu": CPU_SECONDS_PER_RUN, "gpu": None}


def cpu(config: ml_collections.ConfigDict) -> None:
    """The base config unchanged: small ResNet ([1, 1, 1] basic blocks, 8 filters) on 28 x 28
    catalog images (64 x 64 crops for the other tasks), 12 epochs: about 20 s per catalog run
    on 2 CPU cores."""
    config.tier = "cpu"


def gpu(config: ml_collections.ConfigDict) -> None:
    """ResNet-18 on 56 x 56 catalog images (128 x 128 crops for the other tasks), 30 epochs;
    run time not yet measured (no accelerator was available when the tiers were sized)."""
    config.tier = "gpu"
    if tasks.TASKS[config.task].fashion_mnist_items:
        config.data.image_size = 56
        config.data.head_count = 2000
    else:
        config.data.image_size = 128
        config.model.small_input = False
    config.model.stage_sizes = [2, 2, 2, 2]
    config.model.num_filters = 64
    config.batch_size = 256
    config.eval_batch_size = 1024
    config.num_epochs = 30
    config.learning_rate = 1e-3
    config.warmup_epochs = 2.0
    config.checkpoint_every_steps = 500
    # Beside the cpu records (runs/), so one report covers both and the two never collide.
    config.output_dir = "runs/gpu"


def smoke(config: ml_collections.ConfigDict) -> None:
    """Tiny model and data, two short epochs: the whole pipeline in seconds."""
    config.tier = "smoke"
    if tasks.TASKS[config.task].fashion_mnist_items:
        config.data.head_count = 60
    else:
        config.data.image_size = 32
    config.model.stage_sizes = [1]
    config.model.num_filters = 4
    config.batch_size = 16
    config.eval_batch_size = 64
    config.num_epochs = 2
    config.learning_rate = 1e-2
    config.warmup_epochs = 0.5
    config.checkpoint_every_steps = 2
    # Kept apart from the benchmark records under runs/, which the report reads.
    config.output_dir = "runs-smoke"
    config.seeds = [0]
    config.cutoffs = [6]


TIERS = {"cpu": cpu, "gpu": gpu, "smoke": smoke}
DEFAULT_TIER = "cpu"
