"""Fashionpedia's label sets, chosen by name from an annotation file's own tables.

Which categories are a task's examples and which attributes its labels (the rules are in the
`experiments.data.fashionpedia` module docstring). Names are matched after `name_key`, so
spellings that differ in case, parentheses or hyphens agree, and ids are never assumed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.data.images import DataError

__all__ = [
    "DEFAULT_LABELS",
    "GARMENT_CATEGORIES",
    "GARMENT_PARTS_SUPERCATEGORY",
    "SLEEVE_LENGTHS",
    "SLEEVE_STYLES",
    "TaskSpec",
    "garment_nicknames",
    "name_key",
    "task_spec",
]

# The label set each task uses unless `labels=` says otherwise.
DEFAULT_LABELS = {"sleevetype": "style", "archetype": "nickname"}


# Wanted names; each entry lists accepted spellings (matched after `name_key`).
SLEEVE_STYLES: tuple[tuple[str, ...], ...] = (
    ("set-in sleeve",),
    ("dropped-shoulder sleeve",),
    ("raglan (sleeve)",),
    ("cap (sleeve)",),
    ("tulip (sleeve)",),
    ("puff (sleeve)",),
    ("bell (sleeve)",),
    ("circular flounce (sleeve)",),
    ("poet (sleeve)",),
    ("dolman (sleeve), batwing (sleeve)", "dolman (sleeve)", "batwing (sleeve)"),
    ("bishop (sleeve)",),
    ("leg of mutton (sleeve)",),
    ("kimono (sleeve)",),
)
SLEEVE_LENGTHS: tuple[tuple[str, ...], ...] = (
    ("sleeveless",),
    ("short (length)",),
    ("elbow-length",),
    ("three quarter (length)",),
    ("wrist-length",),
)
GARMENT_CATEGORIES: tuple[tuple[str, ...], ...] = tuple(
    (name,)
    for name in (
        "shirt, blouse",
        "top, t-shirt, sweatshirt",
        "sweater",
        "cardigan",
        "jacket",
        "vest",
        "pants",
        "shorts",
        "skirt",
        "coat",
        "dress",
        "jumpsuit",
        "cape",
    )
)
GARMENT_PARTS_SUPERCATEGORY = "garment parts"


def name_key(name: str) -> str:
    """Spelling-insensitive key of an ontology name: lower case, no parentheses or hyphens."""
    return " ".join(re.sub(r"[()\-]", " ", name.lower()).split())


# ---------------------------------------------------------------------------------------------
# Selecting categories and labels by name


def _select_by_name(
    table: Sequence[dict], wanted: Sequence[Sequence[str]], *, what: str, source: str, **where: str
) -> list[dict]:
    """Rows of `table` (restricted to fields == `where`) matching each wanted name, in order."""
    rows = [r for r in table if all(r.get(k) == v for k, v in where.items())]
    by_key: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_key[name_key(str(r.get("name", "")))].append(r)
    found, missing = [], []
    for spellings in wanted:
        hits = {id(r): r for s in spellings for r in by_key.get(name_key(s), [])}
        if len(hits) > 1:
            names = sorted(f"{r['id']}: {r['name']}" for r in hits.values())
            raise DataError(f"{source}: {what} {spellings[0]!r} matches several rows: {names}.")
        if hits:
            found.append(next(iter(hits.values())))
        else:
            missing.append(spellings[0])
    if missing:
        scope = " and ".join(f"{k} {v!r}" for k, v in where.items()) or "any row"
        have = sorted(str(r.get("name")) for r in rows)
        raise DataError(
            f"{source}: the {what} table lacks {missing} (looked among rows with {scope}; it "
            f"has {have[:40]}{' ...' if len(have) > 40 else ''}). Use the Fashionpedia 2020 "
            "attribute annotation files (instances_attributes_*2020.json)."
        )
    return found


def garment_nicknames(attributes: Sequence[dict], categories: Sequence[dict], source: str):
    """Nickname attributes naming a whole garment: see the module docstring for the rule."""
    parts = {
        name_key(str(c["name"]))
        for c in categories
        if c.get("supercategory") == GARMENT_PARTS_SUPERCATEGORY
    }
    if not parts:
        raise DataError(
            f"{source}: no category has supercategory {GARMENT_PARTS_SUPERCATEGORY!r}, so "
            "garment nicknames cannot be told from part nicknames. Use the Fashionpedia 2020 "
            "attribute annotation files."
        )
    part_words = re.compile(r"\b(" + "|".join(re.escape(p) for p in sorted(parts)) + r")\b")
    nicknames = [
        a
        for a in attributes
        if a.get("supercategory") == "nickname"
        and not part_words.search(name_key(str(a.get("name", ""))))
    ]
    if not nicknames:
        raise DataError(f"{source}: the attribute table has no garment nickname attributes.")
    return sorted(nicknames, key=lambda a: a["id"])


@dataclass(frozen=True)
class TaskSpec:
    """Which annotations are examples (categories) and which attributes are labels."""

    task: str
    labels: str

    def select(self, table: dict, source: str) -> tuple[list[dict], list[dict]]:
        """(category rows, label attribute rows) chosen by name from the file's own tables."""
        categories, attributes = table["categories"], table["attributes"]
        if self.task == "sleevetype":
            cats = _select_by_name(categories, [("sleeve",)], what="category", source=source)
            wanted, sup = (
                (SLEEVE_STYLES, "nickname")
                if self.labels == "style"
                else (
                    SLEEVE_LENGTHS,
                    "length",
                )
            )
            attrs = _select_by_name(
                attributes, wanted, what="attribute", source=source, supercategory=sup
            )
            return cats, attrs
        cats = _select_by_name(categories, GARMENT_CATEGORIES, what="category", source=source)
        return cats, garment_nicknames(attributes, categories, source)


def task_spec(task: str, labels: str) -> TaskSpec:
    if task not in ("sleevetype", "archetype"):
        raise ValueError(f"Unknown Fashionpedia task {task!r}; valid: sleevetype, archetype.")
    valid = ("style", "length") if task == "sleevetype" else ("nickname",)
    if labels not in valid:
        raise ValueError(f"labels={labels!r} is not valid for {task}; choose one of {valid}.")
    return TaskSpec(task, labels)
