"""Seeing the data: `python -m experiments.data --task catalog --cutoff 6`.

Builds (or reads from cache) the task's splits, prints the per-split label histogram, and writes
to --out (default runs/data/<task>-cutoff<k>-seed<s>/):
  examples_<split>.png     a grid of example images titled with their labels
  label_frequencies.png    positives per label and split, labels by training frequency (log scale)
  histogram.json           the same counts, with the split sizes and the data's provenance

Any task of `experiments.data.TASK_LOADERS` works; task parameters go through --set, e.g.
  python -m experiments.data --task catalog_step --cutoff 12 --set head_count=2000
  python -m experiments.data --task catalog --set download=false
  python -m experiments.data --task sleevetype --data-dir /path/to/fashionpedia
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from experiments.atomic import atomic_open, atomic_write_json
from experiments.data import TASK_LOADERS, Dataset, Splits, load_task


def parse_set(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values parsed as JSON where they can be (2000, 0.5, false), else text."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value; got {item!r}.")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def histogram(splits: Splits) -> dict[str, Any]:
    """{label_names, num_examples: {split: n}, positives: {split: [int per label]}}."""
    return {
        "label_names": list(splits.train.label_names),
        "num_examples": {d.split: d.num_examples for d in splits},
        "positives": {d.split: d.label_counts().tolist() for d in splits},
    }


def format_histogram(hist: dict[str, Any], width: int = 30) -> str:
    """A text table: one row per label (by training frequency), a column per split, and a bar of
    the training count on a log scale."""
    names, positives = hist["label_names"], hist["positives"]
    splits = list(positives)
    train = np.asarray(positives[splits[0]])
    top = max(int(train.max()), 1)
    name_width = max(len("label"), *(len(n) for n in names))
    header = f"{'label':<{name_width}} " + " ".join(f"{s:>7}" for s in splits)
    sizes = " ".join(f"{hist['num_examples'][s]:>7}" for s in splits)
    lines = [header, f"{'(images)':<{name_width}} {sizes}"]
    for i in np.argsort(-train, kind="stable"):
        counts = " ".join(f"{positives[s][i]:>7}" for s in splits)
        bar = "#" * round(width * math.log1p(train[i]) / math.log1p(top))
        lines.append(f"{names[i]:<{name_width}} {counts}  {bar}")
    return "\n".join(lines)


def plot_examples(dataset: Dataset, path: Path, *, num: int = 16, seed: int = 0) -> list[int]:
    """Saves a grid of `num` random examples titled with their labels; returns their indices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num = min(num, dataset.num_examples)
    index = np.sort(np.random.default_rng(seed).choice(dataset.num_examples, num, replace=False))
    cols = max(1, math.ceil(math.sqrt(num)))
    rows = max(1, math.ceil(num / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), index, strict=False):
        image = dataset.images[i]
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        names = [dataset.label_names[c] for c in np.flatnonzero(dataset.labels[i])]
        title = ", ".join(names) if names else "(no labels)"
        ax.set_title(textwrap.fill(title, 24), fontsize=7)
    fig.suptitle(f"{dataset.split}: {num} of {dataset.num_examples} examples", fontsize=9)
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return index.tolist()


def plot_label_frequencies(hist: dict[str, Any], path: Path, *, title: str = "") -> None:
    """Saves a bar chart of positives per label and split, labels by training frequency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, positives = hist["label_names"], hist["positives"]
    splits = list(positives)
    order = np.argsort(-np.asarray(positives[splits[0]]), kind="stable")
    x = np.arange(len(names))
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names)), 4.0))
    for k, split in enumerate(splits):
        counts = np.asarray(positives[split])[order]
        ax.bar(x + (k - (len(splits) - 1) / 2) * width, np.maximum(counts, 0.5), width, label=split)
    ax.set_yscale("log")
    ax.set_xticks(x, [names[i] for i in order], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("positives (log scale)")
    ax.set_title(title or "label frequencies")
    ax.legend()
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.data",
        description="Print a task's label histogram and plot examples and label frequencies.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--task", required=True, help=f"one of {', '.join(TASK_LOADERS)}")
    parser.add_argument(
        "--cutoff", type=int, default=6, help="training positives of the rarest label"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="where the task's source data lives")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=None, help="output folder for the PNGs and JSON")
    parser.add_argument("--examples", type=int, default=16, help="images per example grid")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a task parameter"
    )
    args = parser.parse_args(argv)

    params = {"cutoff": args.cutoff, "seed": args.seed, **parse_set(args.set)}
    if args.data_dir is not None:
        params["data_dir"] = args.data_dir
    if args.cache_dir is not None:
        params["cache_dir"] = args.cache_dir
    try:
        splits = load_task(args.task, **params)
    except (ValueError, FileNotFoundError, ConnectionError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e

    out = Path(args.out or f"runs/data/{args.task}-cutoff{args.cutoff}-seed{args.seed}")
    hist = histogram(splits)
    print(f"task {args.task}, cut-off {args.cutoff}, seed {args.seed}")
    print(format_histogram(hist))
    examples = {}
    for dataset in splits:
        if dataset.num_examples:
            path = out / f"examples_{dataset.split}.png"
            examples[dataset.split] = plot_examples(
                dataset, path, num=args.examples, seed=args.seed
            )
    plot_label_frequencies(
        hist,
        out / "label_frequencies.png",
        title=f"{args.task}, cut-off {args.cutoff}, seed {args.seed}",
    )
    summary = {
        "task": args.task,
        "params": {
            k: v if isinstance(v, int | float | bool | None) else str(v) for k, v in params.items()
        },
        **hist,
        "examples_shown": examples,
        "provenance": splits.train.provenance,
    }
    atomic_write_json(out / "histogram.json", summary)
    print(f"wrote {out}/: examples_*.png, label_frequencies.png, histogram.json")
    return summary


if __name__ == "__main__":
    main()
