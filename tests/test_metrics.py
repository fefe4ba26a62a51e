"""Tests for ltweights.metrics: hand-computed values and scikit-learn (a test-only reference)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import average_precision_score, f1_score

from ltweights import metrics

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _random_problem(rng, n, c, levels=5, positive_rate=0.3):
    """Scores on a coarse grid (many ties) and multi-hot labels."""
    scores = rng.integers(0, levels, size=(n, c)) / (levels - 1)
    labels = (rng.random((n, c)) < positive_rate).astype(np.int64)
    return scores, labels


def _sklearn_ap(scores, labels):
    return np.array(
        [
            average_precision_score(labels[:, j], scores[:, j]) if labels[:, j].any() else np.nan
            for j in range(labels.shape[1])
        ]
    )


def _f1_brute_force(scores, labels, threshold):
    """F1 of one label at one threshold, from the definition."""
    pred = scores >= threshold
    tp = np.sum(pred & (labels == 1))
    fp = np.sum(pred & (labels == 0))
    fn = np.sum(~pred & (labels == 1))
    return 2 * tp / (2 * tp + fp + fn)


problems = st.integers(1, 40).flatmap(
    lambda n: st.integers(1, 6).flatmap(
        lambda c: st.tuples(
            hnp.arrays(np.float64, (n, c), elements=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])),
            hnp.arrays(np.int64, (n, c), elements=st.integers(0, 1)),
        )
    )
)


# ---------------------------------------------------------------------------------------------
# Average precision
# ---------------------------------------------------------------------------------------------


def test_average_precision_hand_computed():
    # Label 0, no ties: positives at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2 = 5/6.
    # Label 1, a tie at 0.5 holding one positive and one negative: operating points
    #   t=0.9: P=0/1, R=0;  t=0.5: P=1/3, R=1/2;  t=0.1: P=2/4, R=1  ->  AP = 1/2*1/3 + 1/2*1/2.
    scores = np.array([[0.9, 0.9], [0.8, 0.5], [0.7, 0.5], [0.6, 0.1]])
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    np.testing.assert_allclose(
        metrics.average_precision(scores, labels), [5 / 6, 1 / 6 + 1 / 4], rtol=1e-12
    )


def test_average_precision_all_tied_is_prevalence():
    # One operating point: AP = precision at recall 1 = the positive rate.
    labels = np.array([[1], [0], [0], [1], [0]])
    np.testing.assert_allclose(metrics.average_precision(np.zeros((5, 1)), labels), [2 / 5])


@pytest.mark.parametrize("seed", range(4))
def test_average_precision_matches_sklearn_seeded(seed):
    rng = np.random.default_rng(seed)
    n, c = [(7, 3), (60, 12), (300, 5), (1, 4)][seed]
    scores, labels = _random_problem(rng, n, c, levels=[3, 5, 20, 2][seed])
    labels[:, 0] = 1  # a label that is all positives
    np.testing.assert_allclose(
        metrics.average_precision(scores, labels), _sklearn_ap(scores, labels), atol=1e-6
    )


@settings(max_examples=60, deadline=None)
@given(problems)
def test_average_precision_matches_sklearn_property(problem):
    scores, labels = problem
    ours = metrics.average_precision(scores, labels)
    ref = _sklearn_ap(scores, labels)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_average_precision_blocks_give_same_result(monkeypatch):
    rng = np.random.default_rng(7)
    scores, labels = _random_problem(rng, 50, 9)
    whole = metrics.average_precision(scores, labels)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 100)  # 2 labels per block
    np.testing.assert_allclose(metrics.average_precision(scores, labels), whole, rtol=1e-12)
    np.testing.assert_allclose(whole, _sklearn_ap(scores, labels), atol=1e-6)


def test_average_precision_accepts_jax_and_bfloat16():
    jnp = pytest.importorskip("jax.numpy")
    scores = np.array([[0.9], [0.5], [0.5], [0.25]])
    labels = np.array([[1], [0], [1], [0]])
    expected = metrics.average_precision(scores, labels)
    got = metrics.average_precision(jnp.asarray(scores, jnp.bfloat16), jnp.asarray(labels))
    np.testing.assert_allclose(got, expected)


def test_mean_average_precision_leaves_out_and_reports_missing_labels():
    scores = np.array([[0.9, 0.2, 0.3], [0.1, 0.8, 0.4]])
    labels = np.array([[1, 0, 0], [0, 0, 1]])
    # label 0: AP 1; label 1: no positives; label 2: positive ranked first -> AP 1.
    m, missing = metrics.mean_average_precision(scores, labels)
    assert missing == [1]
    assert m == pytest.approx(1.0)
    assert isinstance(m, float)
    m, missing = metrics.mean_average_precision(scores, np.zeros_like(labels))
    assert m is None and missing == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# Precision, recall, F1
# ---------------------------------------------------------------------------------------------


def test_precision_recall_f1_hand_computed():
    scores = np.array([[0.9, 0.1, 0.6], [0.6, 0.2, 0.7], [0.4, 0.3, 0.1], [0.5, 0.0, 0.2]])
    labels = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0]])
    # At 0.5: label 0 predicts rows 0,1,3 -> TP 2, FP 1, FN 1 -> P 2/3, R 2/3, F1 2/3.
    #         label 1 predicts nothing   -> TP 0, FP 0, FN 2 -> P 0 (zero_division), R 0, F1 0.
    #         label 2 has no positives, predicts rows 0,1 -> P 0, R and F1 undefined.
    tp, fp, fn = metrics.binary_counts(scores, labels, 0.5)
    np.testing.assert_array_equal(tp, [2, 0, 0])
    np.testing.assert_array_equal(fp, [1, 0, 2])
    np.testing.assert_array_equal(fn, [1, 2, 0])
    p, r, f1 = metrics.precision_recall_f1(scores, labels, 0.5)
    np.testing.assert_allclose(p, [2 / 3, 0, 0])
    np.testing.assert_allclose(r, [2 / 3, 0, np.nan])
    np.testing.assert_allclose(f1, [2 / 3, 0, np.nan])
    # macro over labels with positives: (2/3 + 0) / 2; micro pools all: 2*2 / (2*2 + 3 + 3).
    assert metrics.macro_f1(scores, labels, 0.5) == pytest.approx(1 / 3)
    assert metrics.micro_f1(scores, labels, 0.5) == pytest.approx(4 / 10)
    # Per-label thresholds: label 1 at 0.1 predicts rows 0..2 -> TP 2, FP 1 -> F1 4/5.
    _, _, f1 = metrics.precision_recall_f1(scores, labels, [0.5, 0.1, 0.5])
    assert f1[1] == pytest.approx(4 / 5)


def test_threshold_is_inclusive():
    scores = np.array([[0.5], [0.49]])
    tp, fp, fn = metrics.binary_counts(scores, np.array([[1], [1]]), 0.5)
    assert (tp[0], fp[0], fn[0]) == (1, 0, 1)


@pytest.mark.parametrize("seed", range(3))
def test_f1_matches_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    scores, labels = _random_problem(rng, 80, 10, levels=11, positive_rate=0.15)
    labels[:, 3] = 0  # a label without positives
    thresholds = [0.5, rng.random(10)][seed % 2]
    pred = (scores >= thresholds).astype(np.int64)
    present = np.flatnonzero(labels.sum(0) > 0)
    assert metrics.macro_f1(scores, labels, thresholds) == pytest.approx(
        f1_score(labels, pred, average="macro", labels=present, zero_division=0), abs=1e-12
    )
    assert metrics.micro_f1(scores, labels, thresholds) == pytest.approx(
        f1_score(labels, pred, average="micro", zero_division=0), abs=1e-12
    )
    _, _, f1 = metrics.precision_recall_f1(scores, labels, thresholds)
    np.testing.assert_allclose(
        f1[present], f1_score(labels, pred, average=None, zero_division=0)[present], atol=1e-12
    )


def test_micro_f1_undefined_without_positives_or_predictions():
    assert metrics.micro_f1(np.zeros((3, 2)), np.zeros((3, 2)), 0.5) is None
    assert metrics.macro_f1(np.zeros((3, 2)), np.zeros((3, 2)), 0.5) is None


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(problems)
def test_chosen_thresholds_maximise_validation_f1(problem):
    scores, labels = problem
    chosen = metrics.choose_thresholds(scores, labels)
    _, _, f1_chosen = metrics.precision_recall_f1(scores, labels, chosen)
    _, _, f1_half = metrics.precision_recall_f1(scores, labels, 0.5)
    for j in range(labels.shape[1]):
        if not labels[:, j].any():
            assert chosen[j] == 0.5
            continue
        assert f1_chosen[j] >= f1_half[j] - 1e-12
        # The best F1 over every candidate threshold, computed from the definition.
        best = max(_f1_brute_force(scores[:, j], labels[:, j], t) for t in np.unique(scores[:, j]))
        assert f1_chosen[j] == pytest.approx(best, abs=1e-12)


def test_choose_thresholds_tie_break_and_default():
    # Label 0: thresholds 0.9 (TP 1, FP 0, F1 2/3) and 0.4 (TP 2, FP 2, F1 2/3) tie; the higher
    # threshold wins. Label 1 has no positives and gets the default.
    scores = np.array([[0.9, 0.3], [0.8, 0.2], [0.7, 0.1], [0.4, 0.0]])
    labels = np.array([[1, 0], [0, 0], [0, 0], [1, 0]])
    np.testing.assert_allclose(metrics.choose_thresholds(scores, labels), [0.9, 0.5])
    np.testing.assert_allclose(metrics.choose_thresholds(scores, labels, default=0.0), [0.9, 0.0])


def test_choose_thresholds_blocks(monkeypatch):
    rng = np.random.default_rng(3)
    scores, labels = _random_problem(rng, 40, 7, levels=9)
    whole = metrics.choose_thresholds(scores, labels)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 80)
    np.testing.assert_array_equal(metrics.choose_thresholds(scores, labels), whole)


# ---------------------------------------------------------------------------------------------
# Buckets and evaluate
# ---------------------------------------------------------------------------------------------


def test_frequency_buckets_boundaries():
    counts = [0, 19, 20, 99, 100, 5000]
    assert metrics.frequency_buckets(counts) == {
        "head": [4, 5],
        "medium": [2, 3],
        "tail": [0, 1],
    }
    assert metrics.frequency_buckets(np.array(counts), head=20, tail=5) == {
        "head": [2, 3, 4, 5],
        "medium": [1],
        "tail": [0],
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head": 10, "tail": 20}, "tail <= head"),
        ({"head": 10, "tail": -1}, "tail <= head"),
    ],
)
def test_frequency_buckets_rejects_bad_cutoffs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.frequency_buckets([1, 2], **kwargs)


def test_frequency_buckets_rejects_bad_counts():
    with pytest.raises(ValueError, match="non-negative whole counts"):
        metrics.frequency_buckets([3, -1])
    with pytest.raises(ValueError, match="non-negative whole counts"):
        metrics.frequency_buckets([3.5])


def test_evaluate_structure_buckets_and_json():
    rng = np.random.default_rng(11)
    scores, labels = _random_problem(rng, 50, 6, levels=7)
    labels[:, 4] = 0  # missing label in the head bucket
    train_positives = [150, 100, 99, 20, 300, 19]  # head 0,1,4; medium 2,3; tail 5
    thresholds = metrics.choose_thresholds(scores, labels)
    result = metrics.evaluate(
        scores, labels, train_positives=train_positives, thresholds=thresholds
    )
    json.dumps(result, allow_nan=False)
    assert result["missing_labels"] == [4]
    assert result["num_labels"] == 6 and result["num_examples"] == 50

    # Overall values agree with the standalone functions (and so with sklearn, tested above).
    m, _ = metrics.mean_average_precision(scores, labels)
    assert result["mAP"] == pytest.approx(m)
    assert result["macro_f1"] == pytest.approx(metrics.macro_f1(scores, labels, thresholds))
    assert result["micro_f1"] == pytest.approx(metrics.micro_f1(scores, labels, thresholds))
    assert result["per_label"]["ap"][4] is None and result["per_label"]["f1"][4] is None
    assert all(len(v) == 6 for v in result["per_label"].values())

    # Each bucket equals the metrics of its sub-matrix.
    expected_members = {"head": [0, 1, 4], "medium": [2, 3], "tail": [5]}
    for name, members in expected_members.items():
        bucket = result["buckets"][name]
        assert bucket["labels"] == members and bucket["num_labels"] == len(members)
        sub = (scores[:, members], labels[:, members], thresholds[members])
        assert bucket["mAP"] == pytest.approx(metrics.mean_average_precision(*sub[:2])[0])
        assert bucket["macro_f1"] == pytest.approx(metrics.macro_f1(*sub))
        assert bucket["micro_f1"] == pytest.approx(metrics.micro_f1(*sub))
    assert result["buckets"]["head"]["missing_labels"] == [4]


def test_evaluate_empty_bucket_is_none():
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    labels = np.array([[1, 0], [0, 1]])
    result = metrics.evaluate(scores, labels, train_positives=[500, 200])
    json.dumps(result, allow_nan=False)
    for name in ("medium", "tail"):
        bucket = result["buckets"][name]
        assert bucket == {
            "mAP": None,
            "macro_f1": None,
            "micro_f1": None,
            "num_labels": 0,
            "labels": [],
            "missing_labels": [],
        }
    assert result["buckets"]["head"]["mAP"] == pytest.approx(1.0)
    assert isinstance(result["mAP"], float)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), r"scores.shape=\(3, 2\) and labels.shape=\(3, 3\)"),
        (np.zeros(3), np.zeros(3), "reshape"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "no examples"),
        (np.zeros((2, 2)), np.array([[0, 2], [1, 0]]), "binary"),
        (np.zeros((2, 2)), np.array([[0, 0.5], [1, 0]]), "binary"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), np.zeros((2, 2)), "NaN"),
    ],
)
def test_bad_inputs_raise_clear_errors(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        metrics.average_precision(scores, labels)


def test_bad_thresholds_and_train_positives():
    scores, labels = np.zeros((2, 3)), np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        metrics.binary_counts(scores, labels, [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        metrics.binary_counts(scores, labels, [0.5, np.nan, 0.5])
    with pytest.raises(ValueError, match="train_positives has 2 labels"):
        metrics.evaluate(scores, labels, train_positives=[1, 2])
