"""Reading run records for the report: one reader, upgrade to the current schema, validation.

Records are read with `experiments.records.load_record`; every record, whatever its schema version,
is upgraded to the current schema (`records.SCHEMA_VERSION`) by `normalise_record`, and the rest
of the report reads that shape only. A record the report cannot use is named with what is wrong
and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import records as records_lib
from experiments.stats import defined

__all__ = [
    "RecordedRun",
    "ReportError",
    "classes_of",
    "init_from_of",
    "normalise_record",
    "read_runs",
    "transfer_key",
]

# Every key of a record once normalised to the current schema version.
RECORD_KEYS = records_lib.SCHEMA_KEYS
SPLITS = ("train", "val", "test")
HOW_TO_PRODUCE = (
    "Produce records with `python -m experiments.run --config catalog_proposed` (list the "
    "configs with `python -m experiments.run --list`), or point --records at the folder that "
    "holds them."
)


class ReportError(Exception):
    """Records that cannot be reported on; the message names the file and the fix."""


@dataclass(frozen=True)
class RecordedRun:
    """One run record and where it was found (path relative to the records folder, POSIX)."""

    path: str
    record: dict[str, Any]

    @property
    def tier(self) -> str:
        return self.record["tier"]

    @property
    def task(self) -> str:
        return self.record["task"]

    @property
    def variant(self) -> str:
        return self.record["variant"]

    @property
    def cutoff(self) -> int:
        return self.record["cutoff"]

    @property
    def seed(self) -> int:
        return self.record["seed"]

    @property
    def finished(self) -> bool:
        return self.record["status"] == "finished"

    @property
    def method(self) -> str:
        return self.record["method"]


# Any readable version -> the current one: one function, in experiments.records.
normalise_record = records_lib.upgrade_record


# --------------------------------------------------------------------------------------------
# Reading and validating records


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _record_problems(record: Any) -> list[str]:
    """What is wrong with one (normalised) record, in words; empty when the report can use it."""
    if not isinstance(record, dict):
        return [f"top level is {type(record).__name__}, not an object"]
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        return [f"missing key(s) {', '.join(missing)}"]
    problems = []
    for key in ("task", "variant", "tier", "config_name", "method"):
        if not isinstance(record[key], str) or not record[key]:
            problems.append(f"{key} must be a non-empty string, got {record[key]!r}")
    for key in ("seed", "cutoff"):
        if not _is_int(record[key]):
            problems.append(f"{key} must be an integer, got {record[key]!r}")
    if record["status"] not in ("finished", "failed"):
        problems.append(f"status must be 'finished' or 'failed', got {record['status']!r}")
    if record["wall_time_s"] is not None and not defined(record["wall_time_s"]):
        problems.append(f"wall_time_s must be a number, got {record['wall_time_s']!r}")
    if not isinstance(record["environment"], dict):
        problems.append("environment must be an object")
    # A run that failed before its data was built records data = null.
    if not isinstance(record["data"], dict) and not (
        record["status"] == "failed" and record["data"] is None
    ):
        problems.append("data must be an object (null only for a failed run)")
    if isinstance(record["data"], dict) and not all(
        isinstance(record["data"].get(key) or {}, dict)
        for key in ("provenance", "split_provenance")
    ):
        problems.append("data.provenance and data.split_provenance must be objects")
    if problems or record["status"] != "finished":
        return problems
    test = record["test"]
    if not isinstance(test, dict):
        return [f"a finished run needs a test metrics object, got {test!r}"]
    for key in ("mAP", "macro_f1", "buckets", "per_label"):
        if key not in test:
            problems.append(f"test.{key} is missing")
    if problems:
        return problems
    if not isinstance(test["buckets"], dict):
        problems.append("test.buckets must be an object")
    ap = test["per_label"].get("ap") if isinstance(test["per_label"], dict) else None
    positives = record["data"].get("train_positives")
    if not isinstance(ap, list):
        problems.append("test.per_label.ap must be a list")
    elif not isinstance(positives, list) or len(positives) != len(ap):
        problems.append(
            "data.train_positives must be a list with one count per label of test.per_label.ap"
        )
    return problems


def read_runs(root: str | os.PathLike) -> list[RecordedRun]:
    """Every record below `root`, upgraded to the current schema version and validated; raises
    ReportError naming each bad file."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(
            f"No run records: the folder {str(root)!r} does not exist. {HOW_TO_PRODUCE}"
        )
    paths = list(records_lib.iter_record_paths(root))
    if not paths:
        raise ReportError(
            f"No run records ({records_lib.RECORD_FILENAME}) found below {str(root)!r}. "
            f"{HOW_TO_PRODUCE}"
        )
    runs, errors = [], []
    for path in paths:
        try:
            record = normalise_record(records_lib.load_record(path))
        except ValueError as e:
            errors.append(str(e))
            continue
        problems = _record_problems(record)
        if problems:
            errors.append(
                f"Run record {path} is malformed: {'; '.join(problems)}. Rerun that run with "
                "--force (or delete the file) to rewrite it."
            )
            continue
        runs.append(RecordedRun(path.relative_to(root).as_posix(), record))
    if errors:
        raise ReportError("\n".join(errors))
    _check_duplicates(runs)
    return runs


# What a record's config says about transfer (the report's "Pretrained backbone" section,
# experiments/report/transfer.py), read here because duplicate detection needs it too.


def _config(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("config") or {}


def classes_of(record: dict[str, Any]) -> tuple[int, ...] | None:
    classes = (_config(record).get("data") or {}).get("classes")
    return None if classes is None else tuple(int(c) for c in classes)


def init_from_of(record: dict[str, Any]) -> str | None:
    return (_config(record).get("model") or {}).get("init_from")


def transfer_key(record: dict[str, Any]) -> tuple | None:
    """What sets a transfer run apart from the main sweep's run of the same variant, cut-off and
    seed: (classes, init_from); None for a main-sweep run."""
    classes, init_from = classes_of(record), init_from_of(record)
    if classes is None and init_from is None:
        return None
    return (classes, init_from)


def _check_duplicates(runs: Iterable[RecordedRun]) -> None:
    """Two records for one (tier, task, variant, cut-off, seed) would be counted twice."""
    seen: dict[tuple, str] = {}
    for run in runs:
        # A transfer run (experiments.report.transfer) is another run than the main sweep's.
        key = (run.tier, run.task, run.variant, run.cutoff, run.seed, transfer_key(run.record))
        if key in seen:
            raise ReportError(
                f"Two run records describe the same run (tier {run.tier}, task {run.task}, "
                f"variant {run.variant}, cut-off {run.cutoff}, seed {run.seed}): {seen[key]} and "
                f"{run.path}. Delete one of them (or give the configs distinct variant names)."
            )
        seen[key] = run.path
