"""Reading run records for the report: one reader, v1 -> v2 normalisation, validation.

Records are read with `experiments.records.load_record`; every record, whatever its schema version,
is turned into the version-2 shape by `normalise_record`, and the rest of the report reads that
shape only. A record the report cannot use is named with what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import records as records_lib
from experiments.stats import defined

__all__ = [
    "READABLE_VERSIONS",
    "V1_LOSS_NAMES",
    "ReportError",
    "Run",
    "normalise_record",
    "read_runs",
    "split_common",
]

# Record schema versions the report reads; all are normalised to the last one.
READABLE_VERSIONS = (1, 2)
# v1 stored the trainer's short loss key in config.loss; v2 stores the function's name in
# ltweights.losses.
V1_LOSS_NAMES = {
    "bce": "weighted_sigmoid_bce",
    "focal": "sigmoid_focal",
    "asymmetric": "asymmetric",
    "distribution_balanced": "distribution_balanced",
    "logit_adjusted": "logit_adjusted_bce",
}
# Every key of a version-2 record.
RECORD_KEYS = tuple(dict.fromkeys((*records_lib.RECORD_KEYS, "method")))
SPLITS = ("train", "val", "test")
HOW_TO_PRODUCE = (
    "Produce records with `python -m experiments.run --config catalog_proposed` (list the "
    "configs with `python -m experiments.run --list`), or point --records at the folder that "
    "holds them."
)


class ReportError(Exception):
    """Records that cannot be reported on; the message names the file and the fix."""


@dataclass(frozen=True)
class Run:
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


# --------------------------------------------------------------------------------------------
# Version 1 -> version 2


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (so that 1, 1.0 and True stay distinct)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def split_common(by_split: dict[str, dict]) -> tuple[dict, dict[str, dict]]:
    """{split: dict} -> (the fields equal in every split, {split: the fields that differ}).

    Nested dicts are compared field by field; splits with no differing field are left out of the
    second result, so it is {} when all splits agree.
    """
    splits = list(by_split)
    common: dict[str, Any] = {}
    differ: dict[str, dict] = {s: {} for s in splits}
    missing = object()
    for key in dict.fromkeys(k for d in by_split.values() for k in d):
        values = [by_split[s].get(key, missing) for s in splits]
        if all(v is not missing for v in values) and all(_same(v, values[0]) for v in values):
            common[key] = values[0]
        elif all(isinstance(v, dict) and v for v in values):
            sub_common, sub_differ = split_common({s: by_split[s][key] for s in splits})
            if sub_common:
                common[key] = sub_common
            for split, fields in sub_differ.items():
                differ[split][key] = fields
        else:
            for split, value in zip(splits, values, strict=True):
                if value is not missing:
                    differ[split][key] = value
    return common, {s: d for s, d in differ.items() if d}


def _method_of(record: dict[str, Any]) -> Any:
    """The config-name axis of a v1 record: config_name minus its '<task>_' prefix."""
    name, task = record.get("config_name"), record.get("task")
    if isinstance(name, str) and isinstance(task, str) and name.startswith(f"{task}_"):
        return name[len(task) + 1 :]
    return name


def normalise_record(record: Any) -> Any:
    """A record of any readable schema version in the version-2 shape (a new dict; the input is
    not changed). Version 2 differs from version 1 in exactly these fields:

      * schema_version 2, and a top-level `method` (one of none, inverse, ..., logit_adjusted:
        the config name's axis), also as `config.method`;
      * data.provenance is one dict of the fields common to all splits and
        data.split_provenance is {split: fields that differ} ({} when none differ), where v1
        held a full copy per split, data.provenance = {train: ..., val: ..., test: ...};
      * config.loss is the loss function's name in ltweights.losses ("weighted_sigmoid_bce"),
        where v1 held the trainer's short key ("bce").

    Anything that is not a v1 record with the expected types is returned as it is, for
    validation to name.
    """
    if not isinstance(record, dict) or record.get("schema_version") != 1:
        return record
    out = {**record, "schema_version": 2, "method": _method_of(record)}
    if isinstance(record.get("config"), dict):
        config = {**record["config"], "method": out["method"]}
        if isinstance(config.get("loss"), str):
            config["loss"] = V1_LOSS_NAMES.get(config["loss"], config["loss"])
        out["config"] = config
    data = record.get("data")
    if isinstance(data, dict):
        provenance = data.get("provenance") or {}
        per_split = isinstance(provenance, dict) and all(
            key in SPLITS and isinstance(value, dict) for key, value in provenance.items()
        )
        if per_split and provenance:
            common, differ = split_common(provenance)
        else:
            common, differ = provenance, {}
        out["data"] = {**data, "provenance": common, "split_provenance": differ}
    return out


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


def read_runs(root: str | os.PathLike) -> list[Run]:
    """Every record below `root`, normalised to schema version 2 and validated; raises
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
            record = normalise_record(records_lib.load_record(path, versions=READABLE_VERSIONS))
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
        runs.append(Run(path.relative_to(root).as_posix(), record))
    if errors:
        raise ReportError("\n".join(errors))
    _check_duplicates(runs)
    return runs


def _check_duplicates(runs: Iterable[Run]) -> None:
    """Two records for one (tier, task, variant, cut-off, seed) would be counted twice."""
    seen: dict[tuple, str] = {}
    for run in runs:
        key = (run.tier, run.task, run.variant, run.cutoff, run.seed)
        if key in seen:
            raise ReportError(
                f"Two run records describe the same run (tier {run.tier}, task {run.task}, "
                f"variant {run.variant}, cut-off {run.cutoff}, seed {run.seed}): {seen[key]} and "
                f"{run.path}. Delete one of them (or give the configs distinct variant names)."
            )
        seen[key] = run.path
