"""Model quality on live outcomes: scores joined with delayed labels, rolling metrics, PSI.

Torch-free and broker-free: the sidecar feeds it decoded flags and labels; tests feed it lists.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from finscore.models.evaluation import average_precision


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected`` (quantile bins of expected).

    Rule of thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 significant shift.
    """
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if len(expected) < bins or len(actual) < bins:
        return 0.0
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class QualityReport:
    """Rolling quality of one model version on labelled outcomes."""

    version: str
    outcomes: int
    frauds: int
    average_precision: float | None
    score_psi: float


class QualityMonitor:
    """Joins fraud flags with their delayed labels by transaction id, in either order.

    Whichever of flag and label arrives first waits (bounded: the oldest are forgotten beyond
    ``max_pending``); the second completes the pair, which joins a rolling window of the last
    ``window`` outcomes of the version that scored it.
    """

    def __init__(self, window: int = 20_000, max_pending: int = 2_000_000) -> None:
        self.window = window
        self.max_pending = max_pending
        self._pending: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._early_labels: OrderedDict[str, int] = OrderedDict()  # label before its flag
        self._outcomes: dict[str, deque[tuple[float, int]]] = {}
        self._reference: dict[str, np.ndarray] = {}
        self._recent_scores: dict[str, deque[float]] = {}

    def add_flag(self, transaction_id: str, score: float, version: str) -> None:
        label = self._early_labels.pop(transaction_id, None)
        if label is not None:
            self._outcome(version, score, label)
        else:
            self._pending[transaction_id] = (score, version)
            if len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
        recent = self._recent_scores.setdefault(version, deque(maxlen=self.window))
        recent.append(score)
        if version not in self._reference and len(recent) == recent.maxlen:
            self._reference[version] = np.asarray(recent)

    def add_label(self, transaction_id: str, is_fraud: bool) -> None:
        hit = self._pending.pop(transaction_id, None)
        if hit is None:  # replayed or compressed time: the label came first
            self._early_labels[transaction_id] = int(is_fraud)
            if len(self._early_labels) > self.max_pending:
                self._early_labels.popitem(last=False)
            return
        score, version = hit
        self._outcome(version, score, int(is_fraud))

    def _outcome(self, version: str, score: float, label: int) -> None:
        self._outcomes.setdefault(version, deque(maxlen=self.window)).append((score, label))

    def recent_scores(self, version: str) -> np.ndarray:
        """The last ``window`` scores of ``version``."""
        return np.asarray(self._recent_scores.get(version, ()), dtype=np.float64)

    def report(self, version: str) -> QualityReport:
        pairs = self._outcomes.get(version, deque())
        scores = np.fromiter((s for s, _ in pairs), dtype=np.float64, count=len(pairs))
        labels = np.fromiter((y for _, y in pairs), dtype=np.int64, count=len(pairs))
        frauds = int(labels.sum()) if len(labels) else 0
        ap = float(average_precision(labels, scores)) if frauds and frauds < len(labels) else None
        ref = self._reference.get(version)
        recent = np.asarray(self._recent_scores.get(version, ()))
        drift = psi(ref, recent) if ref is not None else 0.0
        return QualityReport(version, len(pairs), frauds, ap, drift)


def psi_against_quantiles(quantiles: list[float], actual: np.ndarray) -> float:
    """PSI of ``actual`` against a reference given by its deciles (equal mass between them)."""
    q = np.asarray(quantiles, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if len(q) < 3 or len(actual) < 10:
        return 0.0
    edges, counts = np.unique(q, return_counts=True)
    if len(edges) < 2:
        return 0.0
    # Expected mass per bin between consecutive distinct edges (merged where deciles coincide).
    mass = np.diff(np.searchsorted(q, edges, side="right")) / (len(q) - 1)
    inner = np.r_[-np.inf, edges[1:-1], np.inf]
    a = np.histogram(actual, inner)[0] / len(actual)
    e = np.clip(mass, 1e-4, None)
    a = np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))
