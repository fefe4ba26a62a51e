"""A synthetic Fashionpedia at the real size, in the real file layout and JSON schema; and a
synthetic bring-your-own CSV catalog (`write_csv_catalog`, 100,000 images is the common case).

`write_fashionpedia(root, fraction=1.0)` writes what the Fashionpedia downloads unpack to:

    root/instances_attributes_train2020.json   45,623 images at fraction 1
    root/instances_attributes_val2020.json      1,158 images
    root/train/<hex>.jpg    root/test/<hex>.jpg

with about 333,000 annotations in all (7.1 per image on average, 1 to ~40; negative binomial),
each with id, image_id, category_id, attribute_ids, bbox [x, y, w, h], segmentation (a polygon of
24 points), area and iscrowd, and the real category and attribute tables (ids, names,
supercategories) from the ontology file the repository carries. Category frequencies follow
the shape of Fashionpedia's (sleeves, shoes and necklines most common, capes and leg warmers
rare; our approximate proportions, not the published counts), garments carry a garment nickname
and parts and garments other attributes, each drawn from a long tail. Sleeves carry a style (set-in
most often) and a length.

Images are 400 to 1,024 px on the long side, portrait mostly, JPEG (quality 90) of smooth noise:
their decoding costs what a photo of that size costs. To write 46,781 of them in minutes, the
files are hard links to 48 encoded templates, one per image size (the table's width and height
are the template's); where links are not possible they are copies.

Not in the wheel: only the benchmarks and tests use it. Everything is seeded (`seed`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from experiments.data.fashionpedia_labels import TaskSpec

REPO = Path(__file__).resolve().parents[1]
ONTOLOGY = REPO / "tests" / "fixtures" / "fashionpedia_ontology.json"
TRAIN_IMAGES, VAL_IMAGES, ANNOTATIONS = 45_623, 1_158, 333_000
NUM_TEMPLATES = 48

# Approximate relative frequency of each category's annotations (the shape of Fashionpedia's).
CATEGORY_WEIGHTS = {
    "sleeve": 59,
    "shoe": 46,
    "neckline": 34,
    "pocket": 27,
    "dress": 19,
    "top, t-shirt, sweatshirt": 17,
    "pants": 12,
    "collar": 10,
    "zipper": 8,
    "jacket": 8,
    "bag, wallet": 7,
    "belt": 7,
    "shirt, blouse": 6,
    "bead": 6,
    "lapel": 5.5,
    "skirt": 5,
    "glasses": 5,
    "tights, stockings": 4.3,
    "rivet": 4.3,
    "applique": 3.5,
    "watch": 3.4,
    "headband, head covering, hair accessory": 3.4,
    "buckle": 3.3,
    "coat": 3.1,
    "shorts": 2.8,
    "sock": 2.7,
    "hat": 2.5,
    "ruffle": 2.3,
    "sweater": 1.5,
    "flower": 1.5,
    "scarf": 1.4,
    "bow": 1.4,
    "cardigan": 1.1,
    "epaulette": 1.0,
    "jumpsuit": 0.9,
    "hood": 0.8,
    "sequin": 0.8,
    "vest": 0.7,
    "tassel": 0.7,
    "fringe": 0.7,
    "tie": 0.5,
    "ribbon": 0.4,
    "glove": 0.4,
    "umbrella": 0.2,
    "cape": 0.15,
    "leg warmer": 0.08,
}
GARMENT_SUPERCATEGORIES = ("upperbody", "lowerbody", "wholebody")


def load_ontology(path: str | os.PathLike | None = None) -> dict[str, Any]:
    return json.loads(Path(path or ONTOLOGY).read_text(encoding="utf-8"))


def _zipf(rng: np.random.Generator, n: int, exponent: float = 1.1) -> np.ndarray:
    """Probabilities of n items in a seeded random order, falling as rank ** -exponent."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return rng.permutation(p / p.sum())


class _Vocabulary:
    """The ontology's categories and attribute groups, with the draw probabilities."""

    def __init__(self, ontology: dict[str, Any], rng: np.random.Generator):
        cats = ontology["categories"]
        self.category_ids = np.array([c["id"] for c in cats])
        weights = np.array([CATEGORY_WEIGHTS.get(c["name"], 0.5) for c in cats], np.float64)
        self.category_p = weights / weights.sum()
        self.garment = {c["id"] for c in cats if c["supercategory"] in GARMENT_SUPERCATEGORIES}
        self.sleeve = next(c["id"] for c in cats if c["name"] == "sleeve")
        attrs = ontology["attributes"]
        by_sup: dict[str, list[int]] = {}
        for a in attrs:
            by_sup.setdefault(a["supercategory"], []).append(a["id"])
        # The label sets the tasks select, chosen by the tasks' own rules (by name).
        _, styles = TaskSpec("sleevetype", "style").select(ontology, "ontology")
        _, nicknames = TaskSpec("archetype", "nickname").select(ontology, "ontology")
        sleeve_styles = [a["id"] for a in styles]
        garment_nicknames = [a["id"] for a in nicknames]
        self.groups = {
            "style": (np.array(sleeve_styles), _zipf(rng, len(sleeve_styles), 1.6)),
            "length": (np.array(by_sup["length"]), _zipf(rng, len(by_sup["length"]), 1.0)),
            "nickname": (np.array(garment_nicknames), _zipf(rng, len(garment_nicknames), 1.1)),
        }
        other = [i for s, ids in by_sup.items() if s not in ("nickname", "length") for i in ids]
        self.groups["other"] = (np.array(other), _zipf(rng, len(other), 0.9))

    def draw(self, rng: np.random.Generator, group: str) -> int:
        ids, p = self.groups[group]
        return int(rng.choice(ids, p=p))

    def attributes(self, rng: np.random.Generator, category: int) -> list[int]:
        """An annotation's attribute ids: a style and a length for sleeves, a nickname for most
        garments, and 0-3 others."""
        found = set()
        if category == self.sleeve:
            if rng.random() < 0.6:
                found.add(self.draw(rng, "style"))
            if rng.random() < 0.85:
                found.add(self.draw(rng, "length"))
        elif category in self.garment:
            if rng.random() < 0.7:
                found.add(self.draw(rng, "nickname"))
            found.update(self.draw(rng, "other") for _ in range(rng.integers(0, 4)))
        else:
            found.update(self.draw(rng, "other") for _ in range(rng.integers(0, 2)))
        return sorted(found)


def _image_sizes(rng: np.random.Generator) -> list[tuple[int, int]]:
    """NUM_TEMPLATES (width, height): long side 400-1024 px, mostly portrait."""
    aspects = np.array([3 / 4, 2 / 3, 1.0, 4 / 3, 9 / 16])
    sizes = []
    for _ in range(NUM_TEMPLATES):
        long_side = int(rng.integers(400, 1025))
        aspect = rng.choice(aspects, p=[0.4, 0.25, 0.1, 0.15, 0.1])  # width / height
        if aspect <= 1:
            sizes.append((max(1, round(long_side * aspect)), long_side))
        else:
            sizes.append((long_side, max(1, round(long_side / aspect))))
    return sizes


def _write_templates(folder: Path, sizes, rng: np.random.Generator) -> list[Path]:
    """One JPEG of smooth noise per size (quality 90), like a photo to decode."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (w, h) in enumerate(sizes):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), np.int16)
        grain = rng.integers(-10, 11, (h, w, 3), dtype=np.int16)
        image = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
        path = folder / f"template{k:02d}.jpg"
        image.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def _box(rng: np.random.Generator, w: int, h: int, garment: bool) -> list[float]:
    """A box inside the image: garments 30-90% of each side, parts and accessories 4-30%."""
    lo, hi = (0.3, 0.9) if garment else (0.04, 0.3)
    bw, bh = w * rng.uniform(lo, hi), h * rng.uniform(lo, hi)
    x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return [round(float(v), 2) for v in (x, y, bw, bh)]


def _polygon(box: list[float]) -> list[list[float]]:
    """A 24-point ellipse inscribed in the box, as Fashionpedia's polygon segmentations."""
    x, y, w, h = box
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    xs, ys = x + w / 2 * (1 + np.cos(t)), y + h / 2 * (1 + np.sin(t))
    return [[round(float(v), 2) for pair in zip(xs, ys, strict=True) for v in pair]]


def _split_table(
    ontology, vocabulary, num_images, first_image_id, first_ann_id, sizes, rng, mean_anns
):
    """(annotation table, template index per image) of one split."""
    images, annotations, template_of = [], [], []
    ann_id = first_ann_id
    # Negative binomial with the given mean and a long right tail, at least one per image.
    counts = 1 + rng.negative_binomial(3, 3 / (3 + mean_anns - 1), num_images)
    for k in range(num_images):
        image_id = first_image_id + k
        t = int(rng.integers(NUM_TEMPLATES))
        w, h = sizes[t]
        name = hashlib.md5(str(image_id).encode()).hexdigest() + ".jpg"
        images.append(
            {
                "id": image_id,
                "width": w,
                "height": h,
                "file_name": name,
                "license": 1,
                "time_captured": "March-August, 2018",
                "original_url": f"https://example.invalid/{name}",
                "isstatic": 1,
                "kaggle_id": name[:-4],
            }
        )
        template_of.append(t)
        categories = rng.choice(vocabulary.category_ids, size=counts[k], p=vocabulary.category_p)
        for category in categories.tolist():
            box = _box(rng, w, h, category in vocabulary.garment)
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": category,
                    "attribute_ids": vocabulary.attributes(rng, category),
                    "bbox": box,
                    "segmentation": _polygon(box),
                    "area": round(box[2] * box[3] * np.pi / 4, 1),
                    "iscrowd": 0,
                }
            )
            ann_id += 1
    table = {
        "info": {"year": 2020, "version": "synthetic", "description": "ltweights rehearsal"},
        "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
        "categories": ontology["categories"],
        "attributes": ontology["attributes"],
        "images": images,
        "annotations": annotations,
    }
    return table, template_of


def _place(templates: list[Path], folder: Path, table: dict, template_of: list[int]) -> None:
    """Each image file as a hard link to its template (a copy where links fail)."""
    folder.mkdir(parents=True, exist_ok=True)
    for image, t in zip(table["images"], template_of, strict=True):
        target = folder / image["file_name"]
        try:
            os.link(templates[t], target)
        except OSError:
            shutil.copyfile(templates[t], target)


def write_fashionpedia(
    root: str | os.PathLike, *, fraction: float = 1.0, seed: int = 0, ontology=None
) -> dict[str, int]:
    """Writes the synthetic Fashionpedia (module docstring) at `fraction` of the real counts;
    returns {train_images, val_images, annotations}."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}.")
    root = Path(root)
    rng = np.random.default_rng(seed)
    ontology = load_ontology(ontology)
    vocabulary = _Vocabulary(ontology, rng)
    sizes = _image_sizes(rng)
    templates = _write_templates(root / ".templates", sizes, rng)
    mean_anns = ANNOTATIONS / (TRAIN_IMAGES + VAL_IMAGES)
    counts = {"train_images": 0, "val_images": 0, "annotations": 0}
    splits = [
        ("train2020", "train", max(1, round(TRAIN_IMAGES * fraction)), 1),
        ("val2020", "test", max(1, round(VAL_IMAGES * fraction)), 100_000),
    ]
    first_ann = 1
    for split, folder, num_images, first_image in splits:
        table, template_of = _split_table(
            ontology, vocabulary, num_images, first_image, first_ann, sizes, rng, mean_anns
        )
        first_ann += len(table["annotations"])
        _place(templates, root / folder, table, template_of)
        with open(root / f"instances_attributes_{split}.json", "w", encoding="utf-8") as f:
            json.dump(table, f, separators=(",", ":"))
        counts["train_images" if split == "train2020" else "val_images"] = num_images
        counts["annotations"] += len(table["annotations"])
    return counts


CSV_IMAGES = 100_000
CSV_LABELS = 30


def write_csv_catalog(root: str | os.PathLike, *, num_images: int, seed: int = 0) -> Path:
    """A bring-your-own catalog of `num_images` product photos: root/catalog.csv (image, labels,
    split: 70% train, 10% val, 20% test) and root/images/. Each row carries 1-3 of CSV_LABELS
    labels drawn from a long tail; the first CSV_LABELS training rows carry one label each, so
    every label has a training row. Images are hard links to the Fashionpedia templates."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    sizes = _image_sizes(rng)
    templates = _write_templates(root / ".templates", sizes, rng)
    (root / "images").mkdir(parents=True, exist_ok=True)
    p = _zipf(rng, CSV_LABELS, 1.2)
    lines = ["image,labels,split"]
    train_rows = 0
    for i in range(num_images):
        split = ("train",) * 7 + ("val",) + ("test",) * 2
        split = split[i % 10]
        if split == "train" and train_rows < CSV_LABELS:
            labels = [train_rows]
        else:
            labels = sorted(set(rng.choice(CSV_LABELS, size=rng.integers(1, 4), p=p).tolist()))
        train_rows += split == "train"
        name = f"images/p{i:06d}.jpg"
        target = root / name
        try:
            os.link(templates[int(rng.integers(NUM_TEMPLATES))], target)
        except OSError:
            shutil.copyfile(templates[int(rng.integers(NUM_TEMPLATES))], target)
        lines.append(f"{name},{'|'.join(f'label {j:02d}' for j in labels)},{split}")
    path = root / "catalog.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
