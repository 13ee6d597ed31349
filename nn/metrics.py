"""Multi-label metrics: top-k decoding, the paper's accuracy, and honest ranking metrics.

Shapes: ``scores`` is float (N, G), one row per poster and one column per genre (probabilities
or logits: everything but ``top_k`` only uses their order); ``y`` is 0/1 (N, G).

Per-genre metrics (AP, ROC-AUC) are undefined for a genre with no positive (or, for AUC, no
negative) in the evaluated set. Such genres are reported as NaN, left out of the mean and
counted, so a small test split never raises a divide-by-zero warning or hides a skipped genre.
"""

import numpy as np


def _check(scores, y):
    """Validate a (scores, y) pair; return them as float64 and bool arrays of shape (N, G)."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y)
    if scores.ndim != 2 or scores.shape != y.shape or scores.shape[0] == 0:
        raise ValueError(
            f"scores and y must both be (N, G) with N >= 1; got {scores.shape} and {y.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN, so they cannot be ranked")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must hold only 0 and 1")
    return scores, y.astype(bool)


def top_k(scores, k=3):
    """The paper's decoding: 1 at the k highest scores of each row, 0 elsewhere.

    scores (N, G) -> uint8 (N, G) with exactly k ones per row. Ties are broken toward the lower
    column index (a stable sort of the negated scores), so the result never depends on the
    sorting algorithm.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or not 1 <= k <= scores.shape[1]:
        raise ValueError(f"need scores of shape (N, G) with 1 <= k <= G; got {scores.shape}, k={k}")
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    pred = np.zeros(scores.shape, dtype=np.uint8)
    np.put_along_axis(pred, best, 1, axis=1)
    return pred


def paper_accuracy(pred, y):
    """The paper's "val_acc": mean over posters of the genre slots where pred == y (0 to G).

    pred, y: 0/1 (N, G) -> float. It counts true negatives, and with 25 genres of which a poster
    has at most 3, a top-3 prediction is right on most slots whatever it says: always answering
    the three most frequent genres scores about 21.8 of 25 on the poster data, next to the
    paper's 21.9. The number cannot tell a model from the label prior; report it only beside
    the ranking metrics below.
    """
    pred, y = np.asarray(pred), np.asarray(y)
    if pred.shape != y.shape or pred.ndim != 2 or pred.shape[0] == 0:
        raise ValueError(
            f"pred and y must both be (N, G) with N >= 1; got {pred.shape} and {y.shape}"
        )
    return float((pred == y).sum(axis=1).mean())


def _hits_at_k(scores, y, k):
    """Per poster, how many of its top-k genres are true: (N,) int, plus y as bool."""
    scores, y = _check(scores, y)
    return (top_k(scores, k).astype(bool) & y).sum(axis=1), y


def precision_at_k(scores, y, k=3):
    """Mean over posters of hits / k, where hits = true genres among the top k. -> float."""
    hits, _ = _hits_at_k(scores, y, k)
    return float(hits.mean() / k)


def recall_at_k(scores, y, k=3):
    """Mean over posters with >= 1 true genre of hits / n_true. -> float (NaN if none has one).

    Posters without any true genre have no recall to measure and are skipped.
    """
    hits, y = _hits_at_k(scores, y, k)
    n_pos = y.sum(axis=1)
    has_pos = n_pos > 0
    if not has_pos.any():
        return float("nan")
    return float((hits[has_pos] / n_pos[has_pos]).mean())


def micro_f1_at_k(scores, y, k=3):
    """F1 of the top-k decoding from totals over all posters. -> float.

    P = hits / (N k), R = hits / total positives, F1 = 2 P R / (P + R), and 0 when P + R = 0
    (which includes a set with no positives at all).
    """
    hits, y = _hits_at_k(scores, y, k)
    total_hits, total_pos = hits.sum(), y.sum()
    if total_hits == 0:
        return 0.0
    p, r = total_hits / (y.shape[0] * k), total_hits / total_pos
    return float(2 * p * r / (p + r))


def _sorted_with_ties(scores, y):
    """Sort every column by descending score and locate each entry's block of tied scores.

    Returns (y_sorted bool (N, G), first (N, G), last (N, G)): y reordered, and for each sorted
    position the row indices where its run of equal scores begins and ends. Metrics that treat
    tied scores as one threshold read them from first/last.
    """
    n = scores.shape[0]
    order = np.argsort(-scores, axis=0, kind="stable")
    s = np.take_along_axis(scores, order, axis=0)
    y_sorted = np.take_along_axis(y, order, axis=0)
    idx = np.broadcast_to(np.arange(n)[:, None], s.shape)
    new_run = np.ones(s.shape, dtype=bool)
    new_run[1:] = s[1:] != s[:-1]
    ends_run = np.ones(s.shape, dtype=bool)
    ends_run[:-1] = new_run[1:]
    # Spread each run's first index forward and its last index backward over the run.
    first = np.maximum.accumulate(np.where(new_run, idx, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends_run, idx, n)[::-1], axis=0)[::-1]
    return y_sorted, first, last


def average_precision(scores, y):
    """Per-genre average precision, as sklearn's average_precision_score. -> (G,) float.

    AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, highest first, where P_n
    and R_n are precision and recall of "score >= threshold n". Tied scores form one threshold,
    so each positive contributes the precision at the end of its block of ties:
    AP = (1 / n_pos) sum over positives of tp(last) / (last + 1). Genres with no positive: NaN.
    """
    scores, y = _check(scores, y)
    y_sorted, _, last = _sorted_with_ties(scores, y)
    tp = np.cumsum(y_sorted, axis=0)
    precision_at_last = np.take_along_axis(tp, last, axis=0) / (last + 1)
    n_pos = y.sum(axis=0)
    total = np.where(y_sorted, precision_at_last, 0.0).sum(axis=0)
    return np.divide(total, n_pos, out=np.full(y.shape[1], np.nan), where=n_pos > 0)


def roc_auc(scores, y):
    """Per-genre ROC-AUC by the rank (Mann-Whitney) formula. -> (G,) float.

    AUC = (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg), with ranks
    1..N in ascending score and tied scores given their average rank, so a tie counts 1/2.
    Genres lacking a positive or a negative: NaN.
    """
    scores, y = _check(scores, y)
    n = scores.shape[0]
    y_sorted, first, last = _sorted_with_ties(scores, y)
    # Positions run in descending score; the ascending rank of position i is n - i.
    rank = n - (first + last) / 2
    n_pos = y.sum(axis=0)
    n_neg = n - n_pos
    u = np.where(y_sorted, rank, 0.0).sum(axis=0) - n_pos * (n_pos + 1) / 2
    denom = (n_pos * n_neg).astype(np.float64)
    return np.divide(u, denom, out=np.full(y.shape[1], np.nan), where=denom > 0)


def _mean_skipping_nan(per_genre):
    """(mean over the defined genres, or NaN if none; number of NaN genres skipped)."""
    defined = ~np.isnan(per_genre)
    mean = float(per_genre[defined].mean()) if defined.any() else float("nan")
    return mean, int((~defined).sum())


def mean_average_precision(scores, y):
    """mAP: mean of average_precision over genres with a positive. -> (mAP, n_skipped)."""
    return _mean_skipping_nan(average_precision(scores, y))


def macro_auc(scores, y):
    """Mean of roc_auc over genres with both classes. -> (macro AUC, n_skipped)."""
    return _mean_skipping_nan(roc_auc(scores, y))


def evaluate(scores, y, k=3):
    """Every metric of this module for one (scores, y) pair, as a flat dict of Python numbers.

    Keys: n_posters, paper_accuracy (of the top-k decoding), precision_at_{k}, recall_at_{k},
    micro_f1_at_{k}, map, macro_auc, n_genres_skipped_map, n_genres_skipped_auc.
    """
    scores, y = _check(scores, y)
    map_, skipped_map = mean_average_precision(scores, y)
    auc, skipped_auc = macro_auc(scores, y)
    return {
        "n_posters": int(y.shape[0]),
        "paper_accuracy": paper_accuracy(top_k(scores, k), y),
        f"precision_at_{k}": precision_at_k(scores, y, k),
        f"recall_at_{k}": recall_at_k(scores, y, k),
        f"micro_f1_at_{k}": micro_f1_at_k(scores, y, k),
        "map": map_,
        "macro_auc": auc,
        "n_genres_skipped_map": skipped_map,
        "n_genres_skipped_auc": skipped_auc,
    }


def prior_scores(train_y, n):
    """The label-prior baseline: every one of n posters gets the training genre frequencies.

    train_y: 0/1 (N_train, G) -> float64 (n, G). It ignores the image, so any model must beat it.
    """
    freq = np.asarray(train_y, dtype=np.float64).mean(axis=0)
    return np.tile(freq, (n, 1))


def format_table(rows):
    """A markdown table of metric dicts: one row per name (e.g. "model", "prior").

    rows: {name: metrics dict, e.g. from evaluate}. Columns are the metric keys in first-seen
    order; floats get 4 decimals and a metric missing from a row is left blank.
    """
    columns = list(dict.fromkeys(key for metrics in rows.values() for key in metrics))

    def cell(value):
        if isinstance(value, (float, np.floating)):
            return f"{value:.4f}"
        return "" if value is None else str(value)

    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(metrics.get(c)) for c in columns) + " |")
    return "\n".join(lines)
