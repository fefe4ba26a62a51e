"""A catalog file read into validated rows: the parsing half of task `csv`.

The format and the checks are described in `experiments.data.csv_catalog`, the task that
decodes the rows' images. Here: CSV and JSONL parsing (UTF-8, with the line and column of a
byte that is not), one `CatalogRow` per line with its labels and split checked, and duplicated
image paths refused or skipped (counted) by the `on_duplicate` policy.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.data.images import DataError, SkipLog

__all__ = ["SPLITS", "CatalogRow", "deduplicate", "read_catalog"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CatalogRow:
    line: int  # line number in the file, for error messages
    image: str
    labels: tuple[str, ...]
    split: str | None


def _parse_labels(value: Any, separator: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        names = [str(v).strip() if isinstance(v, str) else None for v in value]
        if any(n is None for n in names):
            raise DataError(f"{where}: labels {value!r} must be strings.")
    elif isinstance(value, str):
        if not value.strip():
            return ()
        names = [part.strip() for part in value.split(separator)]
    else:
        raise DataError(f"{where}: labels must be a {separator!r}-separated string or a list.")
    if any(not n for n in names):
        raise DataError(
            f"{where}: empty label name in {value!r} (a doubled or trailing {separator!r}); "
            "remove it or name the label."
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{where}: label(s) {repeated} repeated in {value!r}; list each once.")
    return tuple(names)


def _make_row(record: dict, line: int, has_split: bool, separator: str, where: str) -> CatalogRow:
    image = record.get("image")
    if not isinstance(image, str) or not image.strip():
        raise DataError(f"{where}: the image path is missing or empty; give a file path.")
    split = None
    if has_split:
        raw = record.get("split")
        split = raw.strip().lower() if isinstance(raw, str) else raw
        if split not in SPLITS:
            raise DataError(
                f"{where}: split {raw!r} is not one of {list(SPLITS)}; fix the value, or drop "
                "the split column to let the task split the rows by seed."
            )
    return CatalogRow(
        line, image.strip(), _parse_labels(record.get("labels"), separator, where), split
    )


def _undecodable_line(path: Path) -> tuple[int, int, int]:
    """(line, column, byte) of the first byte of `path` that is not UTF-8; lines from 1."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return number, e.start + 1, raw[e.start]
    raise AssertionError(f"{path} decodes as UTF-8 line by line")  # only called after a failure


def _not_utf8(path: Path, error: UnicodeDecodeError) -> DataError:
    line, column, byte = _undecodable_line(path)
    return DataError(
        f"{path.name} line {line}: byte 0x{byte:02x} at column {column} is not UTF-8 "
        f"({error.reason}); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
    )


def _read_csv(path: Path, label_separator: str) -> list[CatalogRow]:
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("image", "labels") if c not in header]
        if missing:
            raise DataError(
                f"{path}: the header {header} lacks the column(s) {missing}; the first line "
                "must name the columns image,labels[,split]."
            )
        has_split = "split" in header
        for values in reader:
            where = f"{path.name} line {reader.line_num}"
            if not any(v.strip() for v in values):
                continue  # blank line
            if len(values) != len(header):
                raise DataError(
                    f"{where}: {len(values)} fields for {len(header)} columns; quote fields "
                    'holding commas ("a, b").'
                )
            record = dict(zip(header, values, strict=True))
            rows.append(_make_row(record, reader.line_num, has_split, label_separator, where))
    return rows


def _read_jsonl(path: Path, label_separator: str) -> list[CatalogRow]:
    with open(path, encoding="utf-8") as f:
        lines = [(i, line) for i, line in enumerate(f, start=1) if line.strip()]
    records = []
    for i, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path.name} line {i}: not valid JSON ({e}).") from e
        if not isinstance(record, dict) or "image" not in record or "labels" not in record:
            raise DataError(f"{path.name} line {i}: expected an object with keys image and labels.")
        records.append((i, record))
    has_split = any("split" in r for _, r in records)
    return [
        _make_row(record, i, has_split, label_separator, f"{path.name} line {i}")
        for i, record in records
    ]


def read_catalog(path: str | os.PathLike, *, label_separator: str = "|") -> list[CatalogRow]:
    """Parses and validates a CSV (.csv) or JSONL (.jsonl, .ndjson) catalog file (UTF-8)."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".ndjson": _read_jsonl}
    if suffix not in readers:
        raise DataError(f"{path}: unknown catalog format {suffix!r}; use .csv or .jsonl.")
    try:
        rows = readers[suffix](path, label_separator)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from e
    if not rows:
        raise DataError(f"{path} holds no rows.")
    return rows


def deduplicate(rows: list[CatalogRow], policy: str, skips: SkipLog, name: str):
    first: dict[str, CatalogRow] = {}
    out = []
    for row in rows:
        key = os.path.normpath(row.image)
        if key in first:
            detail = f"{name} line {row.line} repeats image {row.image!r} of line {first[key].line}"
            if policy == "error":
                raise DataError(
                    f"{detail}. Remove the duplicate, or pass on_duplicate='skip' to keep the "
                    "first row (counted)."
                )
            skips.add("duplicate image row", detail)
            continue
        first[key] = row
        out.append(row)
    return out
