"""Resume never loses the best checkpoint: interrupted at any step (before, at or after the best
epoch, or while a checkpoint was being written), the same call finishes with exactly the metrics
of an uninterrupted run; a run folder that cannot be resumed says how to recover."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments import checkpoints as ckpt
from experiments import records
from experiments import train as trainer
from tests.test_train import make_config, synthetic_splits

ROOT = Path(__file__).resolve().parents[1]

# 4 epochs of 8 steps at a high learning rate: validation mAP peaks at epoch 2 (step 16) and
# falls after it (asserted below), so interruptions after the best epoch are exercised. One
# last checkpoint kept besides the best: the setting in which a lost best checkpoint shows.
CONFIG = dict(num_epochs=4, learning_rate=3e-2, checkpoint_every_steps=3, keep_checkpoints=1)
BEST_STEP = 16


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits()


def _run(splits, workdir, **kwargs):
    config = make_config(**{**CONFIG, **kwargs.pop("config", {})})
    return trainer.train_and_evaluate(
        config, seed=0, cutoff=6, workdir=workdir, splits=splits, progress=False, **kwargs
    )


def _checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _numbers(record):
    curves = [{k: v for k, v in c.items() if k != "images_per_s"} for c in record["curves"]]
    return record["status"], record["steps"], curves, record["val"], record["test"]


@pytest.fixture(scope="module")
def uninterrupted(splits, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    record = _run(splits, workdir)
    return record, _checkpoint_steps(workdir)


def test_uninterrupted_run_peaks_early_and_keeps_the_last_and_the_best(uninterrupted):
    record, kept = uninterrupted
    maps = [c["val_mAP"] for c in record["curves"]]
    assert record["val"]["best_step"] == BEST_STEP  # the premise of the tests below
    assert maps[1] > maps[2] and maps[1] > maps[3]
    assert kept == [BEST_STEP, 32]


@pytest.mark.parametrize(
    "stops",
    [
        [5],  # before the best epoch
        [BEST_STEP],  # at the best epoch's end, after its evaluation
        [20],  # after the best epoch, mid-epoch: the case that lost the best checkpoint
        [27],  # after the best epoch, at a periodic checkpoint
        [20, 24, 31],  # interrupted again and again after the best epoch
    ],
)
def test_interrupted_at_any_step_resumes_to_the_uninterrupted_metrics(
    splits, tmp_path, uninterrupted, stops
):
    for stop in stops:
        with pytest.raises(trainer.Interrupted) as info:
            _run(splits, tmp_path, interrupt_at_step=stop)
        assert info.value.step == stop
        assert BEST_STEP in _checkpoint_steps(tmp_path) or stop < BEST_STEP
    resumed = _run(splits, tmp_path)
    assert _numbers(resumed) == _numbers(uninterrupted[0])
    assert _checkpoint_steps(tmp_path) == uninterrupted[1]


def test_a_half_written_checkpoint_is_ignored_and_removed(splits, tmp_path, uninterrupted):
    with pytest.raises(trainer.Interrupted):
        _run(splits, tmp_path, interrupt_at_step=20)
    # What a process killed while writing step 21 leaves: orbax writes a step into a temporary
    # folder and renames it only when whole.
    partial = tmp_path / "checkpoints" / "21.orbax-checkpoint-tmp-1764300000000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "_METADATA").write_text('{"tree_metadata": ')
    resumed = _run(splits, tmp_path)
    assert _numbers(resumed) == _numbers(uninterrupted[0])
    assert not partial.exists()


def test_killed_while_writing_a_checkpoint_resumes_to_the_uninterrupted_metrics(
    tmp_path, uninterrupted
):
    """A real kill: the process exits (no cleanup, as with kill -9) right after dispatching the
    asynchronous save of step 21 (after the best epoch), while orbax is writing it."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from experiments import checkpoints
        from tests.test_resume import _run
        from tests.test_train import synthetic_splits

        save = checkpoints.Checkpoints.save
        def save_then_die(self, step, state, progress):
            save(self, step, state, progress)
            if step == 21:
                os._exit(9)
        checkpoints.Checkpoints.save = save_then_die
        _run(synthetic_splits(), {str(tmp_path)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 9
    assert not (tmp_path / "record.json").exists()
    resumed = _run(synthetic_splits(), tmp_path)
    assert _numbers(resumed) == _numbers(uninterrupted[0])


def test_keep_best_counts_the_best_epochs_kept(splits, tmp_path, uninterrupted):
    record = _run(splits, tmp_path, config={"keep_best": 2})
    maps = {c["step"]: c["val_mAP"] for c in record["curves"]}
    second = sorted(maps, key=maps.get)[-2]
    assert _checkpoint_steps(tmp_path) == sorted({BEST_STEP, second, 32})
    assert _numbers(record) == _numbers(uninterrupted[0])


# ---------------------------------------------------------------------------------------------
# The keep policy and the fingerprint on their own
# ---------------------------------------------------------------------------------------------


def _curves(*pairs):
    return [{"step": s, "val_mAP": m} for s, m in pairs]


def test_steps_to_keep_is_the_last_n_and_the_best_k_epoch_ends():
    curves = _curves((8, 0.4), (16, 0.6), (24, 0.5), (32, None))
    saved = [3, 8, 16, 21, 24, 30, 32]
    assert ckpt.steps_to_keep(saved, curves, keep_last=1, keep_best=1) == {32, 16}
    assert ckpt.steps_to_keep(saved, curves, keep_last=2, keep_best=2) == {30, 32, 16, 24}
    # Ties go to the later epoch; an undefined mAP ranks last.
    tied = _curves((8, 0.5), (16, 0.5), (24, None))
    assert ckpt.steps_to_keep([8, 16, 24], tied, keep_last=1, keep_best=1) == {24, 16}
    assert ckpt.steps_to_keep([3], [], keep_last=1, keep_best=1) == {3}


@pytest.mark.parametrize("value, count", [(True, 1), (False, 1), (1, 1), (3, 3), (0, 1)])
def test_keep_best_as_a_count(value, count):
    assert ckpt.keep_best_count(value) == count


def test_fingerprint_ignores_exactly_the_result_neutral_fields():
    positives = [1, 2, 3, 4, 5]
    # The value the trainer computed before the fingerprint moved to experiments.checkpoints (for
    # the config of that time, whose loss key was "bce"): the algorithm is unchanged.
    assert ckpt.run_fingerprint(make_config(loss="bce"), 0, 6, positives) == "aa085ada1fae2315"
    base = ckpt.run_fingerprint(make_config(), 0, 6, positives)
    neutral = make_config(
        seeds=[0, 1], cutoffs=[6], vary={"beta": [0.9]}, variant="x", output_dir="o"
    )
    neutral.data.data_dir, neutral.data.cache_dir = "d", "c"
    neutral.update(checkpoint_every_steps=7, keep_checkpoints=5, keep_best=3, input_prefetch=3)
    # A tier's fine-tune recipe counts only through the fields it sets (with model.init_from).
    neutral.finetune = {"backbone_lr_scale": 0.1, "freeze_backbone_epochs": 2.0}
    flat = records.flatten(neutral.to_dict())
    assert all(
        any(p == f or p.startswith(f + ".") for p in flat) for f in records.RESULT_NEUTRAL_FIELDS
    )
    assert ckpt.run_fingerprint(neutral, 0, 6, positives) == base
    for change in ({"learning_rate": 1e-3}, {"data": {"seed": 1}}, {"scheme": "inverse"}):
        assert ckpt.run_fingerprint(make_config(**change), 0, 6, positives) != base
    assert ckpt.run_fingerprint(make_config(), 1, 6, positives) != base
    assert ckpt.run_fingerprint(make_config(), 0, 7, positives) != base
    assert ckpt.run_fingerprint(make_config(), 0, 6, [1, 2, 3, 4, 6]) != base


# ---------------------------------------------------------------------------------------------
# Run folders that cannot be resumed say what happened and how to recover
# ---------------------------------------------------------------------------------------------


def test_an_unrestorable_checkpoint_names_itself_and_the_recovery(splits, tmp_path):
    with pytest.raises(trainer.Interrupted):
        _run(splits, tmp_path, interrupt_at_step=5)
    latest = tmp_path / "checkpoints" / "5"
    for path in (latest / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")
    with pytest.raises(trainer.CheckpointError) as info:
        _run(splits, tmp_path)
    message = str(info.value)
    assert str(latest) in message and "cannot be restored" in message
    assert "--force" in message and f"delete {tmp_path / 'checkpoints'}" in message
    # The recovery it names works: without the folder the run starts afresh.
    shutil.rmtree(tmp_path / "checkpoints")
    assert _run(splits, tmp_path, config={"num_epochs": 1})["status"] == "finished"


def test_a_checkpoint_of_another_run_names_the_recovery(splits, tmp_path):
    with pytest.raises(trainer.Interrupted):
        _run(splits, tmp_path, interrupt_at_step=3)
    with pytest.raises(ValueError, match="different run") as info:
        _run(splits, tmp_path, config={"learning_rate": 1e-3})
    assert "--force" in str(info.value) and str(tmp_path / "checkpoints") in str(info.value)


def test_progress_round_trips_through_json():
    progress = ckpt.Progress(fingerprint="f", seed=1, cutoff=6, epoch=2, batch=3, loss_sum=1.5)
    progress.curves.append({"epoch": 1, "step": 8, "val_mAP": 0.5})
    back = ckpt.Progress.from_json(json.loads(json.dumps(progress.to_json())))
    assert back == progress and back.step(8) == 19


def test_a_checkpoint_folder_that_cannot_be_created_says_what_to_check(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(trainer.CheckpointError, match="writable, or choose another --output-dir"):
        ckpt.Checkpoints(not_a_folder, keep_last=1, keep_best=1)
