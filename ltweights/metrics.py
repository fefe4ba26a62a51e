"""Multi-label evaluation metrics: AP / mAP, precision, recall, F1, thresholds, frequency buckets.

(One module for the metrics a record holds; its length is mostly docstrings and examples.)

Host-side NumPy in float64. Inputs are a score matrix `scores` [N, C] (probabilities or logits:
any score where higher means "more likely positive") and a multi-hot matrix `labels` [N, C] with
values in {0, 1}; JAX arrays are accepted and copied to the host. Every label is an independent
binary problem; a label is predicted positive when its score is >= its threshold.

Conventions (stated once here, used throughout):

- A label with no positives among the evaluated examples ("missing label") has no defined AP,
  recall or F1. These are NaN in the per-label arrays (None in `evaluate`'s JSON-ready dict), the
  label is left out of mAP and macro-F1, and it is listed in `missing_labels`. It still counts in
  micro-F1, where its false positives are real errors.
- Precision with no predicted positives is 0 (scikit-learn's `zero_division=0`), so a label with
  positives but no predictions has precision = recall = F1 = 0.
- AP is scikit-learn's `average_precision_score`: the step-wise (non-interpolated) area under the
  precision-recall curve, AP = sum_k (R_k - R_{k-1}) P_k, with one operating point per distinct
  score (tied scores enter together).

Large inputs (N ~ 1e5, C ~ 1e3) are processed in blocks of labels so that the sort buffers stay
at a few tens of MB.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "average_precision",
    "binary_counts",
    "choose_thresholds",
    "evaluate",
    "frequency_buckets",
    "macro_f1",
    "mean_average_precision",
    "micro_f1",
    "precision_recall_f1",
]

BUCKETS = ("head", "medium", "tail")
DEFAULT_THRESHOLD = 0.5
# Elements per block of labels: 2**22 float64 values = 32 MB per temporary.
_BLOCK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _check_inputs(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Returns (scores, labels) as host arrays after checking shapes, finiteness and binariness.

    Scores keep their floating dtype (blocks are cast to float64 later, to bound memory); labels
    become bool.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.ndim != 2:
        raise ValueError(
            f"scores and labels must be 2-D [num_examples, num_labels]; got scores.shape="
            f"{scores.shape} and labels.shape={labels.shape}. For a single label, pass "
            "x.reshape(-1, 1)."
        )
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores.shape={scores.shape} and labels.shape={labels.shape} differ; pass one score "
            "per (example, label) pair, in the same order as the labels."
        )
    if scores.shape[0] == 0:
        raise ValueError("no examples to evaluate (num_examples = 0); pass at least one example.")
    if scores.dtype == bool or not (
        np.issubdtype(scores.dtype, np.number) or scores.dtype.name == "bfloat16"
    ):
        raise TypeError(
            f"scores must be numeric (probabilities or logits); got dtype {scores.dtype}."
        )
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        bad = np.argwhere(np.isnan(scores))[0]
        raise ValueError(
            f"scores contain NaN (first at example {bad[0]}, label {bad[1]}); NaN cannot be "
            "ranked. Check the model output for divergence before evaluating."
        )
    if labels.dtype != bool:
        if not np.issubdtype(labels.dtype, np.number):
            raise TypeError(f"labels must be numeric or bool multi-hot; got dtype {labels.dtype}.")
        binary = (labels == 0) | (labels == 1)
        if not binary.all():
            bad = np.argwhere(~binary)[0]
            raise ValueError(
                f"labels must be binary (0 or 1); found {labels[bad[0], bad[1]]!r} at example "
                f"{bad[0]}, label {bad[1]}. Binarise soft or smoothed labels (e.g. labels >= 0.5) "
                "before evaluating."
            )
        labels = labels == 1
    return scores, labels


def _check_thresholds(thresholds: Any, num_labels: int) -> np.ndarray:
    """Returns thresholds as float64 [C]; a scalar is broadcast to every label."""
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(num_labels, float(t))
    if t.shape != (num_labels,):
        raise ValueError(
            f"thresholds must be a scalar or one value per label, shape ({num_labels},); got "
            f"shape {t.shape}."
        )
    if np.isnan(t).any():
        raise ValueError(
            f"thresholds contain NaN at labels {np.flatnonzero(np.isnan(t)).tolist()}; "
            "use a finite threshold for every label."
        )
    return t


def _check_train_positives(train_positives: Any, num_labels: int | None = None) -> np.ndarray:
    p = np.asarray(train_positives)
    if p.ndim != 1:
        raise ValueError(
            f"train_positives must be a 1-D vector of per-label counts; got shape {p.shape}."
        )
    if num_labels is not None and p.shape[0] != num_labels:
        raise ValueError(
            f"train_positives has {p.shape[0]} labels but scores/labels have {num_labels}; pass "
            "the training counts of the same label set, in the same order."
        )
    if p.size and (
        not np.issubdtype(p.dtype, np.number)
        or np.any(p < 0)
        or np.any(p != np.round(p))
        or not np.all(np.isfinite(p))
    ):
        raise ValueError(
            "train_positives must be non-negative whole counts (e.g. LabelCounts.positives); "
            f"got {p!r}."
        )
    return p.astype(np.int64)


def _blocks(num_examples: int, num_labels: int) -> Iterator[slice]:
    """Slices of label columns with about _BLOCK_ELEMENTS elements each."""
    width = max(1, _BLOCK_ELEMENTS // max(1, num_examples))
    for start in range(0, num_labels, width):
        yield slice(start, min(start + width, num_labels))


# ---------------------------------------------------------------------------------------------
# Ranking metrics
# ---------------------------------------------------------------------------------------------


def _ranked(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sorts each column by descending score and returns the running counts at each rank.

    Returns (sorted_scores, tp, rank, group_end), all [N, c]: tp[i] true positives among the top
    i + 1, rank[i] = i + 1, and group_end[i] True where rank i is the last of a run of tied
    scores, i.e. a valid operating point (a threshold can not split tied scores).
    """
    s = scores.astype(np.float64)
    order = np.argsort(-s, axis=0, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=0)
    tp = np.cumsum(np.take_along_axis(labels, order, axis=0), axis=0, dtype=np.float64)
    rank = np.arange(1, s.shape[0] + 1, dtype=np.float64)[:, None]
    group_end = np.ones(s.shape, dtype=bool)
    group_end[:-1] = s_sorted[:-1] != s_sorted[1:]
    return s_sorted, tp, rank, group_end


def average_precision(scores: Any, labels: Any) -> np.ndarray:
    """Per-label average precision, identical to scikit-learn's `average_precision_score`.

    For label j with P_j > 0 positives, rank the examples by descending score and let the
    operating points be the distinct scores t_1 > t_2 > ...; at t_k, predicting score >= t_k gives
    precision P_k = TP_k / (TP_k + FP_k) and recall R_k = TP_k / P_j. Then

        AP_j = sum_k (R_k - R_{k-1}) * P_k,   R_0 = 0,

    the step-wise area under the precision-recall curve (no interpolation). Tied scores form one
    operating point, so each positive in a tie contributes the precision of the whole tie.

    Args:
      scores: [N, C] scores, higher = more likely positive.
      labels: [N, C] multi-hot labels in {0, 1}.

    Returns:
      float64 [C]; NaN for labels with no positives.

    Examples:
      >>> import numpy as np
      >>> from ltweights import metrics
      >>> scores = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7], [0.1, 0.4]])
      >>> labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
      >>> metrics.average_precision(scores, labels).round(4)  # (1 + 2/3) / 2 and 1
      array([0.8333, 1.    ])
    """
    return _average_precision(*_check_inputs(scores, labels))


def _average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    n, c = scores.shape
    ap = np.full(c, np.nan)
    for cols in _blocks(n, c):
        _, tp, rank, group_end = _ranked(scores[:, cols], labels[:, cols])
        # tp at the previous operating point: tp is non-decreasing, so a running max of tp over
        # operating points, shifted by one rank, is the tp of the last operating point before.
        tp_at_ends = np.where(group_end, tp, 0.0)
        prev = np.zeros_like(tp)
        prev[1:] = np.maximum.accumulate(tp_at_ends, axis=0)[:-1]
        new_positives = np.where(group_end, tp - prev, 0.0)
        positives = tp[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[cols] = (new_positives * (tp / rank)).sum(axis=0) / positives
        ap[cols] = np.where(positives > 0, ap[cols], np.nan)
    return ap


def mean_average_precision(scores: Any, labels: Any) -> tuple[float | None, list[int]]:
    """mAP: the mean of per-label AP over labels with at least one positive.

    Returns:
      (mAP, missing_labels): mAP as a Python float (None if no label has a positive) and the
      indices of the labels left out because they have no positives in `labels`.

    Examples:
      >>> import numpy as np
      >>> from ltweights import metrics
      >>> scores = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7], [0.1, 0.4]])
      >>> labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
      >>> mean_ap, missing = metrics.mean_average_precision(scores, labels)
      >>> round(mean_ap, 4), missing
      (0.9167, [])
    """
    ap = average_precision(scores, labels)
    return _nanmean(ap), np.flatnonzero(np.isnan(ap)).tolist()


def choose_thresholds(
    scores: Any, labels: Any, *, default: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Per-label thresholds that maximise F1 on a validation set.

    For label j the candidates are its distinct validation scores t_k (predict score >= t_k);
    F1_k = 2 TP_k / (TP_k + FP_k + P_j). The chosen threshold is the score t_k itself, so applied
    to the same validation set it reproduces F1_k exactly (on new data, scores between t_k and the
    next lower validation score are predicted negative).

    Tie-breaking: among candidates with equal F1 the highest threshold wins (fewest predicted
    positives). A label with no validation positives gets `default` (0.5, suited to
    probabilities; pass the scale of your scores, e.g. 0.0 for logits).

    Returns:
      float64 [C] thresholds.

    Examples:
      >>> import numpy as np
      >>> from ltweights import metrics
      >>> scores = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7], [0.1, 0.4]])
      >>> labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
      >>> metrics.choose_thresholds(scores, labels)
      array([0.3, 0.6])
    """
    scores, labels = _check_inputs(scores, labels)
    n, c = scores.shape
    thresholds = np.full(c, float(default))
    for cols in _blocks(n, c):
        s_sorted, tp, rank, group_end = _ranked(scores[:, cols], labels[:, cols])
        positives = tp[-1]
        f1 = np.where(group_end, 2.0 * tp / (rank + positives[None, :]), -1.0)
        best = np.argmax(f1, axis=0)  # first maximum = highest score
        chosen = s_sorted[best, np.arange(s_sorted.shape[1])]
        thresholds[cols] = np.where(positives > 0, chosen, default)
    return thresholds


# ---------------------------------------------------------------------------------------------
# Threshold metrics
# ---------------------------------------------------------------------------------------------


def binary_counts(
    scores: Any, labels: Any, thresholds: Any = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label (TP, FP, FN) as int64 [C] when predicting score >= threshold.

    `thresholds` is a scalar or a per-label vector [C] (e.g. from `choose_thresholds`).

    Examples:
      >>> import numpy as np
      >>> from ltweights import metrics
      >>> scores = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7], [0.1, 0.4]])
      >>> labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
      >>> [x.tolist() for x in metrics.binary_counts(scores, labels, 0.5)]  # TP, FP, FN
      [[1, 2], [1, 0], [1, 0]]
    """
    scores, labels = _check_inputs(scores, labels)
    return _binary_counts(scores, labels, _check_thresholds(thresholds, scores.shape[1]))


def _binary_counts(
    scores: np.ndarray, labels: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, c = scores.shape
    tp, fp, fn = (np.zeros(c, np.int64) for _ in range(3))
    for cols in _blocks(n, c):
        pred = scores[:, cols].astype(np.float64) >= t[cols]
        y = labels[:, cols]
        tp[cols] = np.count_nonzero(pred & y, axis=0)
        fp[cols] = np.count_nonzero(pred & ~y, axis=0)
        fn[cols] = np.count_nonzero(~pred & y, axis=0)
    return tp, fp, fn


def _prf_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp, fp, fn = (x.astype(np.float64) for x in (tp, fp, fn))
    predicted, positives = tp + fp, tp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(positives > 0, tp / positives, np.nan)
        f1 = np.where(positives > 0, 2.0 * tp / (2.0 * tp + fp + fn), np.nan)
    return precision, recall, f1


def _micro_f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float | None:
    denominator = 2 * int(tp.sum()) + int(fp.sum()) + int(fn.sum())
    return None if denominator == 0 else 2 * int(tp.sum()) / denominator


def precision_recall_f1(
    scores: Any, labels: Any, thresholds: Any = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label precision, recall and F1 at `thresholds` (scalar or [C]), predicting score >= t.

    precision = TP / (TP + FP)  (0 when nothing is predicted positive, like sklearn's
    zero_division=0), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN). Recall and F1 are NaN
    for labels with no positives.

    Returns:
      (precision, recall, f1), each float64 [C].

    Examples:
      >>> import numpy as np
      >>> from ltweights import metrics
      >>> scores = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7], [0.1, 0.4]])
      >>> labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
      >>> [x.tolist() for x in metrics.precision_recall_f1(scores, labels, 0.5)]
      [[0.5, 1.0], [0.5, 1.0], [0.5, 1.0]]
    """
    return _prf_from_counts(*binary_counts(scores, labels, thresholds))


def macro_f1(scores: Any, labels: Any, thresholds: Any = DEFAULT_THRESHOLD) -> float | None:
    """Unweighted mean of per-label F1 over labels with at least one positive (None if none).

    Equals `sklearn.metrics.f1_score(labels, scores >= t, average="macro", zero_division=0,
    labels=<labels with positives>)`.

    Examples:
      >>> import numpy as np
      >>> from ltweights import metrics
      >>> scores = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7], [0.1, 0.4]])
      >>> labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
      >>> metrics.macro_f1(scores, labels, 0.5)  # mean of per-label F1 0.5 and 1.0
      0.75
    """
    return _nanmean(precision_recall_f1(scores, labels, thresholds)[2])


def micro_f1(scores: Any, labels: Any, thresholds: Any = DEFAULT_THRESHOLD) -> float | None:
    """F1 of the pooled counts over all labels: 2 sum TP / (2 sum TP + sum FP + sum FN).

    None when there are no positives and no predicted positives at all (0 / 0).

    Examples:
      >>> import numpy as np
      >>> from ltweights import metrics
      >>> scores = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7], [0.1, 0.4]])
      >>> labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
      >>> metrics.micro_f1(scores, labels, 0.5)  # 2 * 3 / (2 * 3 + 1 + 1)
      0.75
    """
    return _micro_f1_from_counts(*binary_counts(scores, labels, thresholds))


# ---------------------------------------------------------------------------------------------
# Frequency buckets and the full report
# ---------------------------------------------------------------------------------------------


def frequency_buckets(
    train_positives: Any, *, head: int = 100, tail: int = 20
) -> dict[str, list[int]]:
    """Splits labels by their number of training positives n+_j.

    head: n+_j >= head;  medium: tail <= n+_j < head;  tail: n+_j < tail.
    Defaults follow the long-tail literature's many/medium/few-shot split (head >= 100,
    medium 20-99, tail < 20).

    Returns:
      {"head": [label indices], "medium": [...], "tail": [...]} as Python ints, ascending.

    Examples:
      >>> from ltweights import metrics
      >>> metrics.frequency_buckets([500, 50, 5, 20])
      {'head': [0], 'medium': [1, 3], 'tail': [2]}
    """
    if not 0 <= tail <= head:
        raise ValueError(f"bucket cut-offs need 0 <= tail <= head; got head={head}, tail={tail}.")
    p = _check_train_positives(train_positives)
    return {
        "head": np.flatnonzero(p >= head).tolist(),
        "medium": np.flatnonzero((p >= tail) & (p < head)).tolist(),
        "tail": np.flatnonzero(p < tail).tolist(),
    }


def _nanmean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


def _json_floats(x: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in x.tolist()]


def _summary(
    ap: np.ndarray, f1: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray
) -> dict[str, Any]:
    return {
        "mAP": _nanmean(ap),
        "macro_f1": _nanmean(f1),
        "micro_f1": _micro_f1_from_counts(tp, fp, fn),
    }


def evaluate(
    scores: Any,
    labels: Any,
    *,
    train_positives: Sequence[int] | np.ndarray,
    thresholds: Any = DEFAULT_THRESHOLD,
    head: int = 100,
    tail: int = 20,
) -> dict[str, Any]:
    """Every metric, overall and per frequency bucket, as a JSON-ready dict.

    Args:
      scores: [N, C] scores (higher = more likely positive).
      labels: [N, C] multi-hot labels in {0, 1}.
      train_positives: [C] training positives per label (sets the buckets).
      thresholds: scalar or [C] decision thresholds for precision/recall/F1 (e.g. chosen on the
        validation set with `choose_thresholds` and applied to the test set).
      head, tail: bucket cut-offs, see `frequency_buckets`.

    Returns:
      {"mAP", "macro_f1", "micro_f1", "missing_labels": [int], "num_examples", "num_labels",
       "per_label": {"ap", "precision", "recall", "f1"} (lists of length C),
       "buckets": {"head"|"medium"|"tail": {"mAP", "macro_f1", "micro_f1", "num_labels",
                   "labels": [int], "missing_labels": [int]}}}
      Values are Python floats/ints; undefined values (no positives, empty bucket) are None, so
      `json.dumps(result, allow_nan=False)` works.

    Examples:
      >>> import numpy as np
      >>> from ltweights import metrics
      >>> scores = np.array([[0.9, 0.2], [0.8, 0.6], [0.3, 0.7], [0.1, 0.4]])
      >>> labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
      >>> result = metrics.evaluate(scores, labels, train_positives=[500, 5], thresholds=0.5)
      >>> round(result["mAP"], 4), result["macro_f1"], result["per_label"]["f1"]
      (0.9167, 0.75, [0.5, 1.0])
      >>> {name: bucket["labels"] for name, bucket in result["buckets"].items()}
      {'head': [0], 'medium': [], 'tail': [1]}
    """
    scores, labels = _check_inputs(scores, labels)
    n, c = scores.shape
    train_positives = _check_train_positives(train_positives, c)
    t = _check_thresholds(thresholds, c)

    ap = _average_precision(scores, labels)
    tp, fp, fn = _binary_counts(scores, labels, t)
    precision, recall, f1 = _prf_from_counts(tp, fp, fn)
    missing = np.isnan(ap)

    buckets = {}
    for name, members in frequency_buckets(train_positives, head=head, tail=tail).items():
        idx = np.asarray(members, dtype=np.int64)
        buckets[name] = {
            **_summary(ap[idx], f1[idx], tp[idx], fp[idx], fn[idx]),
            "num_labels": len(members),
            "labels": members,
            "missing_labels": idx[missing[idx]].tolist(),
        }
    return {
        **_summary(ap, f1, tp, fp, fn),
        "missing_labels": np.flatnonzero(missing).tolist(),
        "num_examples": int(n),
        "num_labels": int(c),
        "per_label": {
            "ap": _json_floats(ap),
            "precision": _json_floats(precision),
            "recall": _json_floats(recall),
            "f1": _json_floats(f1),
        },
        "buckets": buckets,
    }
