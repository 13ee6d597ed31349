"""Tests for nn.metrics: hand-computed cases, ties, skipped genres and brute-force references."""

import warnings

import numpy as np
import pytest

from nn.metrics import (
    average_precision,
    evaluate,
    format_table,
    macro_auc,
    mean_average_precision,
    micro_f1_at_k,
    paper_accuracy,
    precision_at_k,
    prior_scores,
    recall_at_k,
    roc_auc,
    top_k,
)

# Three posters, four genres; poster 1 has no true genre.
SCORES = np.array([
    [0.9, 0.8, 0.1, 0.7],
    [0.2, 0.3, 0.9, 0.1],
    [0.5, 0.4, 0.3, 0.2],
])
Y = np.array([
    [1, 0, 0, 1],
    [0, 0, 0, 0],
    [0, 1, 1, 1],
])
# Top 2 per row: {0, 1}, {2, 1}, {0, 1}; hits: 1 (genre 0), 0, 1 (genre 1).


@pytest.fixture(autouse=True)
def warnings_are_errors():
    # Also enforced by pyproject, but these tests are about never warning, so make it local.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_top_k_marks_the_k_highest():
    pred = top_k(SCORES, k=2)
    assert pred.dtype == np.uint8
    np.testing.assert_array_equal(pred, [[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]])


def test_top_k_breaks_ties_toward_lower_column():
    scores = np.array([[0.5, 0.5, 0.5, 0.1], [0.1, 0.9, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(
        top_k(scores, k=2), [[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]]
    )


def test_top_k_rejects_bad_k():
    with pytest.raises(ValueError):
        top_k(SCORES, k=5)
    with pytest.raises(ValueError):
        top_k(SCORES, k=0)


def test_paper_accuracy_by_hand():
    # pred [1,1,0,0] vs [1,0,0,1]: slots 0,2 agree -> 2
    # pred [0,1,1,0] vs [0,0,0,0]: slots 0,3 agree -> 2
    # pred [1,1,0,0] vs [0,1,1,1]: slot 1 agrees   -> 1;  mean = 5/3
    assert paper_accuracy(top_k(SCORES, k=2), Y) == pytest.approx(5 / 3)


def test_paper_accuracy_rewards_the_prior():
    # 25 genres, each poster has 1 of the 3 "frequent" genres: the constant top-3 answer gets
    # 1 hit, 2 false positives and 22 true negatives -> 23 of 25, while knowing nothing.
    y = np.zeros((3, 25), dtype=int)
    y[[0, 1, 2], [0, 1, 2]] = 1
    pred = np.zeros_like(y)
    pred[:, :3] = 1
    assert paper_accuracy(pred, y) == 23.0


def test_precision_at_k_by_hand():
    # hits 1, 0, 1 -> mean(1/2, 0/2, 1/2) = 1/3
    assert precision_at_k(SCORES, Y, k=2) == pytest.approx(1 / 3)


def test_recall_at_k_skips_posters_without_positives():
    # poster 0: 1 of 2; poster 1: skipped; poster 2: 1 of 3 -> (1/2 + 1/3) / 2 = 5/12
    assert recall_at_k(SCORES, Y, k=2) == pytest.approx(5 / 12)
    assert np.isnan(recall_at_k(SCORES, np.zeros_like(Y), k=2))


def test_micro_f1_at_k_by_hand():
    # hits 2; P = 2 / (3 * 2) = 1/3; R = 2 / 5 positives; F1 = 2PR/(P+R) = (4/15)/(11/15) = 4/11
    assert micro_f1_at_k(SCORES, Y, k=2) == pytest.approx(4 / 11)
    assert micro_f1_at_k(SCORES, np.zeros_like(Y), k=2) == 0.0


def test_average_precision_and_auc_without_ties():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])[:, None]
    y = np.array([1, 1, 0, 1, 0])[:, None]
    # positives at ranks 1, 2, 4: AP = (1/1 + 2/2 + 3/4) / 3 = 11/12
    assert average_precision(scores, y)[0] == pytest.approx(11 / 12)
    # pairs won: 0.9 and 0.8 beat both negatives (4), 0.6 beats 0.5 (1) -> 5 of 3*2 = 5/6
    assert roc_auc(scores, y)[0] == pytest.approx(5 / 6)


def test_tied_scores_are_one_threshold():
    scores = np.array([0.8, 0.5, 0.5, 0.2])[:, None]
    y = np.array([1, 1, 0, 0])[:, None]
    # As sklearn: thresholds 0.8 (P=1, R=1/2) and 0.5 (P=2/3, R=1):
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6 (ranking the tied positive first would give 1).
    assert average_precision(scores, y)[0] == pytest.approx(5 / 6)
    # Ascending ranks 0.2 -> 1, 0.5 -> 2.5 and 2.5, 0.8 -> 4; positives 4 + 2.5 = 6.5;
    # U = 6.5 - 2*3/2 = 3.5; AUC = 3.5 / (2*2) = 7/8 (the tie counts 1/2).
    assert roc_auc(scores, y)[0] == pytest.approx(7 / 8)


def test_skipped_genres_are_nan_counted_and_silent():
    scores = np.array([[0.9, 0.1, 0.4], [0.2, 0.8, 0.3], [0.6, 0.7, 0.5]])
    y = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1]])
    # genre 1 has no positive (AP and AUC skipped); genre 2 no negative (AUC skipped).
    ap, auc = average_precision(scores, y), roc_auc(scores, y)
    assert np.isnan(ap[1]) and not np.isnan(ap[2])
    assert np.isnan(auc[1]) and np.isnan(auc[2])
    # genre 0: positive first -> AP 1, AUC 1; genre 2: all positive -> AP 1
    assert mean_average_precision(scores, y) == (1.0, 1)
    assert macro_auc(scores, y) == (1.0, 2)
    metrics = evaluate(scores, y)
    assert metrics["n_genres_skipped_map"] == 1
    assert metrics["n_genres_skipped_auc"] == 2


def test_all_genres_skipped_gives_nan_without_warning():
    scores, y = np.array([[0.3, 0.1]]), np.array([[0, 0]])
    value, skipped = mean_average_precision(scores, y)
    assert np.isnan(value) and skipped == 2
    value, skipped = macro_auc(scores, y)
    assert np.isnan(value) and skipped == 2


def _brute_force_ap(s, t):
    """sklearn's definition, one distinct threshold at a time."""
    ap, prev_recall = 0.0, 0.0
    for threshold in np.unique(s)[::-1]:
        chosen = s >= threshold
        tp = (chosen & t).sum()
        recall = tp / t.sum()
        ap += (recall - prev_recall) * tp / chosen.sum()
        prev_recall = recall
    return ap


def _brute_force_auc(s, t):
    """Probability that a random positive outscores a random negative, ties counting 1/2."""
    pos, neg = s[t][:, None], s[~t][None, :]
    return ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)


def test_ap_and_auc_match_brute_force_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(200, 8)) / 5  # six score levels: ties everywhere
    y = rng.random((200, 8)) < np.linspace(0.05, 0.6, 8)
    ap, auc = average_precision(scores, y), roc_auc(scores, y)
    for g in range(8):
        assert ap[g] == pytest.approx(_brute_force_ap(scores[:, g], y[:, g]), abs=1e-12)
        assert auc[g] == pytest.approx(_brute_force_auc(scores[:, g], y[:, g]), abs=1e-12)


def test_auc_equals_mann_whitney_u():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=(300, 5)), 1)  # rounding makes ties
    y = rng.random((300, 5)) < 0.3
    auc = roc_auc(scores, y)
    for g in range(5):
        pos, neg = scores[y[:, g], g], scores[~y[:, g], g]
        u = stats.mannwhitneyu(pos, neg).statistic
        assert auc[g] == pytest.approx(u / (pos.size * neg.size), abs=1e-12)


def test_prior_gives_auc_one_half_and_ap_prevalence():
    rng = np.random.default_rng(2)
    train_y = (rng.random((500, 6)) < 0.2).astype(int)
    test_y = (rng.random((150, 6)) < 0.2).astype(int)
    scores = prior_scores(train_y, len(test_y))
    assert scores.shape == (150, 6)
    np.testing.assert_allclose(scores[0], train_y.mean(axis=0))
    # One score per genre: every poster ties, so AUC is exactly 1/2 and AP the prevalence.
    np.testing.assert_array_equal(roc_auc(scores, test_y), 0.5)
    np.testing.assert_allclose(average_precision(scores, test_y), test_y.mean(axis=0), rtol=1e-12)


def test_perfect_predictor_scores_one_everywhere():
    rng = np.random.default_rng(3)
    y = np.zeros((40, 10), dtype=int)
    for row in y:
        row[rng.choice(10, size=3, replace=False)] = 1
    scores = y + 0.01 * rng.random(y.shape)  # positives always above negatives
    metrics = evaluate(scores, y, k=3)
    assert metrics == {
        "n_posters": 40,
        "paper_accuracy": 10.0,
        "precision_at_3": 1.0,
        "recall_at_3": 1.0,
        "micro_f1_at_3": 1.0,
        "map": 1.0,
        "macro_auc": 1.0,
        "n_genres_skipped_map": 0,
        "n_genres_skipped_auc": 0,
    }


def test_evaluate_names_keys_after_k():
    metrics = evaluate(SCORES, Y, k=2)
    assert metrics["precision_at_2"] == pytest.approx(1 / 3)
    assert metrics["recall_at_2"] == pytest.approx(5 / 12)
    assert metrics["micro_f1_at_2"] == pytest.approx(4 / 11)
    assert metrics["paper_accuracy"] == pytest.approx(5 / 3)
    assert all(isinstance(v, (int, float)) for v in metrics.values())


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="shape|\\(N, G\\)"):
        evaluate(SCORES, Y[:2])
    with pytest.raises(ValueError, match="0 and 1"):
        evaluate(SCORES, Y * 2)
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.full((3, 4), np.nan), Y)


def test_format_table_is_markdown():
    table = format_table({
        "model": {"map": 0.123456, "n_genres_skipped_map": 0},
        "prior": {"map": 0.1, "n_genres_skipped_map": 0},
    })
    assert table.splitlines() == [
        "| | map | n_genres_skipped_map |",
        "|---|---|---|",
        "| model | 0.1235 | 0 |",
        "| prior | 0.1000 | 0 |",
    ]
