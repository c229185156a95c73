"""Model metrics in numpy (no scikit-learn): AUC ROC, average precision, card precision@k,
accuracy and macro-F1."""

from __future__ import annotations

import numpy as np

__all__ = [
    "accuracy",
    "average_precision",
    "card_precision_at_k",
    "macro_f1",
    "roc_auc",
]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties get half credit, Mann-Whitney U)."""
    y = np.asarray(y).astype(bool)
    pos, neg = y.sum(), (~y).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks for ties
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks_sorted = np.repeat(avg, counts)
    ranks[order] = ranks_sorted
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision as scikit-learn computes it: sum over thresholds of ΔR · P."""
    y = np.asarray(y).astype(np.int64)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    s = np.asarray(score, dtype=np.float64)[order]
    yt = y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(yt)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def card_precision_at_k(
    day: np.ndarray, customer: np.ndarray, y: np.ndarray, score: np.ndarray, k: int = 100
) -> float:
    """The handbook's Card Precision@k, averaged over days.

    Per day: each card's score is its highest transaction score that day and it is
    compromised if any of its transactions that day is fraud; cards already detected as
    compromised on earlier days (compromised and in an earlier day's top k) are removed; the
    metric is the share of compromised cards among the k highest-scored remaining cards.
    """
    day, customer = np.asarray(day), np.asarray(customer)
    y, score = np.asarray(y).astype(np.int64), np.asarray(score, dtype=np.float64)
    detected: set = set()
    precisions = []
    for d in np.unique(day):
        m = day == d
        cards, inv = np.unique(customer[m], return_inverse=True)
        best = np.full(len(cards), -np.inf)
        np.maximum.at(best, inv, score[m])
        comp = np.zeros(len(cards), dtype=np.int64)
        np.maximum.at(comp, inv, y[m])
        keep = np.array([c not in detected for c in cards], dtype=bool)
        cards, best, comp = cards[keep], best[keep], comp[keep]
        top = np.argsort(-best, kind="mergesort")[:k]
        precisions.append(comp[top].sum() / k)
        detected.update(cards[top][comp[top] == 1].tolist())
    return float(np.mean(precisions)) if precisions else float("nan")


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(pred)))


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int = 3) -> float:
    """Unweighted mean of per-class F1 (classes absent from both y and pred are skipped)."""
    y, pred = np.asarray(y), np.asarray(pred)
    f1s = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")
