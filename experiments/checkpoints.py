"""Checkpoints of a run: the orbax manager, which checkpoints are kept, the resume position.

A checkpoint (orbax, in `<workdir>/checkpoints/<step>`) holds the `TrainState` and, as JSON, the
run's `Progress`: the data position (epoch, batch), the curves so far, the running loss sum and
the timings, so a resumed run ends with exactly the metrics of an uninterrupted one.

Which checkpoints are kept. The final evaluation restores the best epoch by validation mAP, so
that checkpoint must survive any interruption. orbax's own best-N policy ranks checkpoints by a
metric that it keeps in memory only (with a preservation policy it writes none to disk), so
after a restart every earlier checkpoint looked metric-less and the next save deleted the best
one. Here nothing is left to orbax's memory: the ranking is a pure function of the curves, and
the curves are saved inside every checkpoint. After each save has finished, every step outside

    the last `keep_checkpoints` saved  U  the best `keep_best` epoch ends of the curves

is deleted (`steps_to_keep`). Why this is safe at any interruption: a step is deleted only after
a later checkpoint holding the curves that rank it out is complete on disk (orbax writes a step
to a temporary folder and renames it when whole; half-written ones are removed on the next
start); resuming continues those curves, and an epoch ranked out of the best k by some curves
stays out for every continuation of them (entries are only ever added).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from experiments import records

__all__ = [
    "CHECKPOINT_DIR",
    "CheckpointError",
    "Checkpoints",
    "Progress",
    "best_entry",
    "keep_best_count",
    "run_fingerprint",
    "steps_to_keep",
]

CHECKPOINT_DIR = "checkpoints"
# An undefined validation mAP (no positives) ranks below any value.
_NO_MAP = -1.0


class CheckpointError(RuntimeError):
    """The run folder holds a checkpoint that cannot be resumed; the message says how to recover."""


@dataclasses.dataclass
class Progress:
    """Where a run stands, saved as JSON with every checkpoint.

    epoch and batch: the data position (epochs finished, batches of the current epoch done);
    curves: one entry per finished epoch; loss_sum, loss_count: the current epoch's training loss
    so far; wall_time_s, train_time_s, train_images: totals over the sessions of the run;
    fingerprint, seed, cutoff: which run this is (see `run_fingerprint`); init_from: the
    provenance of the initial weights (`experiments.pretrained.initial_variables`), None for a
    random initialisation, kept so that a resumed run records it without reading it again.
    """

    fingerprint: str
    seed: int
    cutoff: int
    epoch: int = 0
    batch: int = 0
    curves: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    loss_sum: float = 0.0
    loss_count: int = 0
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    train_images: int = 0
    init_from: dict[str, Any] | None = None

    def step(self, steps_per_epoch: int) -> int:
        return self.epoch * steps_per_epoch + self.batch

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Progress:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


def run_fingerprint(config: Any, seed: int | None, cutoff: int, train_positives: list[int]) -> str:
    """Hash of what determines a run's numbers, to refuse resuming someone else's checkpoint.

    Fields listed in `records.RESULT_NEUTRAL_FIELDS` (where files live, how often to checkpoint,
    the seeds, cut-offs and varied values around the run) are left out, the same ones the
    runner's stale-record check ignores; fields still at their `records.ADDED_FIELD_DEFAULTS`
    value too, so adding an option does not orphan checkpoints. With seed=None: the key of the
    compiled steps, which runs differing only in seed share.
    """
    as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    flat = records.without_added_defaults(records.flatten(as_dict))
    kept = {p: v for p, v in flat.items() if not records.is_result_neutral(p)}
    key = {"config": _unflatten(kept), "seed": seed, "cutoff": cutoff}
    key["train_positives"] = train_positives
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{dotted path: leaf} -> nested dicts (the inverse of `records.flatten`)."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def keep_best_count(value: Any) -> int:
    """config.keep_best as a count (>= 1, since the final evaluation restores the best one).

    Older configs set keep_best=True (one kept) or False (then one is still kept).
    """
    if isinstance(value, bool):
        return 1
    return max(1, int(value))


def _rank_key(entry: dict[str, Any]) -> tuple[float, int]:
    value = entry["val_mAP"]
    return (_NO_MAP if value is None else value, entry["step"])


def best_entry(curves: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch with the highest validation mAP; ties go to the later epoch."""
    return max(curves, key=_rank_key)


def steps_to_keep(
    saved_steps: list[int], curves: list[dict[str, Any]], *, keep_last: int, keep_best: int
) -> set[int]:
    """The last `keep_last` of the saved steps and the best `keep_best` epoch ends of `curves`."""
    best = sorted(curves, key=_rank_key, reverse=True)[:keep_best]
    return set(sorted(saved_steps)[-keep_last:]) | {int(entry["step"]) for entry in best}


def check_free_space(directory: Path, state: Any, last_saved: int | None) -> None:
    """Raises OSError(ENOSPC) naming `directory` when its disk has less free space than twice
    the last checkpoint's size (or, before the first, twice the state's bytes): a save that
    fails part-way fills the output with the checkpoint library's tracebacks, and the run's
    earlier checkpoint is what resumes it."""
    import jax  # a dependency of orbax, imported with it anyway

    previous = directory / str(last_saved) if last_saved is not None else None
    if previous is not None and previous.is_dir():
        size = sum(f.stat().st_size for f in previous.rglob("*") if f.is_file())
    else:
        size = sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree_util.tree_leaves(state))
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if shutil.disk_usage(existing).free < 2 * size:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))


class Checkpoints:
    """The checkpoints of one run folder: save, prune (see the module docstring), restore.

    Saves are asynchronous; the keep policy is applied to finished saves only, just before the
    next save and at `finish`.
    """

    def __init__(self, workdir: Path, *, keep_last: int, keep_best: int):
        self.workdir = Path(workdir)
        self.directory = self.workdir / CHECKPOINT_DIR
        self.keep_last, self.keep_best = max(1, int(keep_last)), keep_best_count(keep_best)
        options = ocp.CheckpointManagerOptions(create=True, cleanup_tmp_directories=True)
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as e:  # nothing in the folder is lost: say what to check
            raise CheckpointError(
                f"Cannot create or read the checkpoint folder {self.directory} "
                f"({type(e).__name__}: {e}). Check that the output directory is writable, or "
                "choose another --output-dir."
            ) from e
        self.last_saved: int | None = self._manager.latest_step()
        self._pending_curves: list[dict[str, Any]] | None = None  # of the save in flight

    def _unusable(self, what: str, error: BaseException | None = None) -> CheckpointError:
        cause = f" ({type(error).__name__}: {error})" if error is not None else ""
        return CheckpointError(
            f"The run in {self.workdir} cannot be resumed: {what}{cause}. To start this run "
            f"afresh, rerun `python -m experiments.run` with --force or delete {self.directory}."
        )

    def restore_latest(self, abstract_state: Any, fingerprint: str) -> tuple[Any, Progress] | None:
        """(state, progress) of the latest checkpoint, or None if there is none."""
        step = self.last_saved
        if step is None:
            return None
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        )
        try:
            restored = self._manager.restore(step, args=args)
            progress = Progress.from_json(dict(restored["meta"]))
        except Exception as e:
            what = f"checkpoint {self.directory / str(step)} cannot be restored"
            raise self._unusable(what, e) from e
        if progress.fingerprint != fingerprint:
            raise ValueError(
                f"{self.directory} holds checkpoints of a different run (config, seed, cut-off or "
                f"training data differ). To train this run there, rerun `python -m "
                f"experiments.run` with --force or delete {self.directory}; or use another "
                "workdir."
            )
        self._pending_curves = progress.curves
        self._prune()  # in case the last session stopped between a save and its pruning
        return restored["state"], progress

    def save(self, step: int, state: Any, progress: Progress) -> None:
        """Starts writing a checkpoint of `state` and `progress` at `step`; OSError (ENOSPC)
        before writing anything when the disk cannot hold it (see `check_free_space`)."""
        self._prune()
        check_free_space(self.directory, state, self.last_saved)
        meta = progress.to_json()
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )
        self._pending_curves = meta["curves"]
        self.last_saved = step

    def _prune(self) -> None:
        """Waits for the save in flight, then deletes the steps that `steps_to_keep` leaves out."""
        self._manager.wait_until_finished()
        if self._pending_curves is None:
            return
        saved = list(self._manager.all_steps())
        keep = steps_to_keep(
            saved, self._pending_curves, keep_last=self.keep_last, keep_best=self.keep_best
        )
        for step in saved:
            if step not in keep:
                self._manager.delete(step)

    def finish(self) -> None:
        """Waits for the last save and applies the keep policy."""
        self._prune()

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """The train state saved at `step` (the best epoch's, for the final evaluation)."""
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )
        except Exception as e:
            raise self._unusable(
                f"the best epoch's checkpoint {self.directory / str(step)} cannot be restored", e
            ) from e
        return restored["state"]

    def close(self) -> None:
        """Waits for a checkpoint being written and releases the manager."""
        self._manager.close()
