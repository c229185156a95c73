"""The fraud half of the sidecar: the live model's quality from its flags and the delayed labels,
drift triggers, and recompression on the recent labelled window.

Inputs (given by the loop, :mod:`finscore.app.sidecar.loop`, already checked): every
``fraud-labels`` record (a transaction's outcome with its features' raw inputs) goes into the
:class:`OutcomeBuffer` and the :class:`~finscore.app.sidecar.quality.QualityMonitor`; every
``fraud-flags`` record into the monitor (AP of each live version, PSI of its scores).

**Drift** (:meth:`FraudSidecar.trigger`): the live version's rolling AP falls ``ap_drop`` below
the best it has shown, or its score PSI exceeds ``psi_threshold`` (against its recent scores, or
against the score and amount distributions it was trained on, kept in its manifest).

**Enough labelled data first**: a recompression (whatever its trigger) waits until the buffer
holds ``min_labelled`` labelled transactions and each of its train/validation/hold-out windows
at least ``min_split_rows`` with at least one fraud in training; until then it ends with
outcome ``waiting`` (no training; a run on a few hundred rows used to die in ``np.quantile``).

Recompression (:meth:`FraudSidecar.recompress`) = the plan
:func:`~finscore.compression.plans.fraud_recompress` (teacher → distil → prune → share →
quantise) on the recent labelled window, then the shared gate-and-publish sequence
(:func:`~finscore.app.sidecar.gate.recompress_and_publish`): within ``tolerance`` of a teacher
trained on the new regime, never worse than the live champion on the same hold-out
transactions, within the size/latency budget; only then registered, signed, announced and
promoted.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from finscore.app.sidecar.config import SidecarConfig
from finscore.app.sidecar.gate import Recompression, recompress_and_publish
from finscore.app.sidecar.quality import QualityMonitor, psi_against_quantiles
from finscore.logging import get_logger
from finscore.models.registry import Registry
from finscore.sim.frame import TransactionFrame

__all__ = ["DAY_MS", "FraudSidecar", "OutcomeBuffer"]

log = get_logger("sidecar")
DAY_MS = 86_400_000


class OutcomeBuffer:
    """Recent labelled transactions (from fraud-label records), as columns.

    Thread-safe: the consumer adds while a recompression thread takes a :meth:`frame`."""

    def __init__(self, history_days: int) -> None:
        self.history_ms = history_days * DAY_MS
        self._rows: list[tuple] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.newest_ms: int | None = None  # newest tx_time added (validation's reference)

    def add(self, label: dict) -> None:
        tid = label["transaction_id"]
        row = (tid, int(label["tx_time"]), label["customer_id"], label["terminal_id"],
               float(label["amount"]), 1 if label["is_fraud"] else 0)  # fmt: skip
        with self._lock:
            if tid in self._seen:
                return
            self._seen.add(tid)
            self._rows.append(row)
            if self.newest_ms is None or row[1] > self.newest_ms:
                self.newest_ms = row[1]

    def __len__(self) -> int:
        return len(self._rows)

    def recent_amounts(self, n: int) -> np.ndarray:
        """Amounts of the last ``n`` labelled transactions received."""
        with self._lock:
            recent = self._rows[-n:]
        return np.asarray([r[4] for r in recent], dtype=np.float64)

    def frame(self) -> TransactionFrame:
        """The last ``history_days`` of labelled transactions, time-ordered, ids as ints (a
        snapshot: labels added meanwhile wait for the next frame)."""
        with self._lock:
            rows = sorted(self._rows, key=lambda r: r[1])
            if rows:
                newest = rows[-1][1]
                rows = [r for r in rows if r[1] > newest - self.history_ms]
            self._rows = list(rows)
            self._seen = {r[0] for r in rows}

        def ints(values: list) -> np.ndarray:
            return np.unique(np.asarray(values, dtype=str), return_inverse=True)[1].astype(np.int64)

        n = len(rows)
        return TransactionFrame(
            transaction_id=ints([r[0] for r in rows]) if n else np.zeros(0, np.int64),
            event_time=np.asarray([r[1] for r in rows], dtype=np.int64),
            customer_id=ints([r[2] for r in rows]) if n else np.zeros(0, np.int64),
            terminal_id=ints([r[3] for r in rows]) if n else np.zeros(0, np.int64),
            amount=np.asarray([r[4] for r in rows], dtype=np.float64),
            is_fraud=np.asarray([r[5] for r in rows], dtype=np.int8),
            scenario=np.zeros(n, dtype=np.int8),
        )


class FraudSidecar:
    """Buffers labels and flags; says when to recompress; recompresses and publishes."""

    def __init__(self, cfg: SidecarConfig) -> None:
        self.cfg = cfg
        self.monitor = QualityMonitor(window=20_000)
        self.buffer = OutcomeBuffer(cfg.history_days)
        self.best_ap: dict[str, float] = {}  # version -> the best rolling AP it has shown
        self.live_version: str | None = None  # the version of the newest flag seen

    # -- inputs -------------------------------------------------------------------------------
    def add_label(self, label: dict[str, Any]) -> None:
        """One checked ``fraud-labels`` record: training buffer and quality join."""
        self.buffer.add(label)
        self.monitor.add_label(label["transaction_id"], label["is_fraud"])

    def add_flag(self, flag: dict[str, Any]) -> None:
        """One checked ``fraud-flags`` record: quality join; its version is the live one."""
        self.monitor.add_flag(flag["transaction_id"], flag["score"], flag["model_version"])
        self.live_version = flag["model_version"]

    # -- quality --------------------------------------------------------------------------------
    def trigger(self) -> str | None:
        """The drift that calls for a recompression now, or None (see the module docstring)."""
        cfg = self.cfg
        champion = Registry(cfg.registry_dir).champion("fraud")
        v = champion.manifest.version if champion is not None else self.live_version
        if v is None:
            return None
        q = self.monitor.report(v)
        if q.outcomes < cfg.min_outcomes or q.average_precision is None:
            return None
        best = max(self.best_ap.get(v, 0.0), q.average_precision)
        self.best_ap[v] = best
        if q.average_precision < best - cfg.ap_drop:
            return f"drift: rolling AP of v{v} fell from {best:.3f} to {q.average_precision:.3f}"
        if q.score_psi > cfg.psi_threshold:
            return f"drift: score PSI of v{v} is {q.score_psi:.2f}"
        params = champion.manifest.params if champion is not None else {}
        recent = self.monitor.recent_scores(v)
        if params.get("score_quantiles") and len(recent) >= cfg.min_outcomes:
            drift = psi_against_quantiles(params["score_quantiles"], recent)
            if drift > cfg.psi_threshold:
                return f"drift: score PSI of v{v} against its training data is {drift:.2f}"
        amounts = self.buffer.recent_amounts(cfg.min_outcomes)
        if params.get("feature_quantiles") and len(amounts) >= cfg.min_outcomes:
            drift = psi_against_quantiles(params["feature_quantiles"][0], amounts)  # TX_AMOUNT
            if drift > cfg.psi_threshold:
                return f"drift: amount PSI against the training data is {drift:.2f}"
        return None

    # -- recompression ----------------------------------------------------------------------------
    def recompress(self, reason: str, seed: int = 0) -> dict[str, Any]:
        """Train, compress and gate a candidate against the champion on the recent labelled
        window; publish it if it passes. Returns the run's record (``outcome``: ``waiting``,
        ``rejected`` or ``promoted``)."""
        from finscore.compression.export import run_onnx
        from finscore.compression.fraud import FraudFamily, FraudSplits, split_frame
        from finscore.compression.plans import fraud_recompress
        from finscore.features.fraud import feature_columns

        cfg = self.cfg
        t0 = time.time()
        frame = self.buffer.frame()
        if len(frame) < cfg.min_labelled:
            why = f"{len(frame):,} labelled transactions, at least {cfg.min_labelled:,} needed"
            log.info("sidecar.waiting_for_labels", reason=reason, why=why)
            return {"model": "fraud", "reason": reason, "outcome": "waiting", "why": why}
        end = int(frame.event_time[-1]) // DAY_MS * DAY_MS + DAY_MS
        h = cfg.holdout_days * DAY_MS

        def day(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()

        splits = FraudSplits(train=(day(end - 4 * h - 14 * DAY_MS), day(end - 2 * h)),
                             val=(day(end - 2 * h), day(end - h)), test=(day(end - h), day(end)))  # fmt: skip
        fam = FraudFamily(teacher_hidden=(128, 64))
        data = split_frame(frame, splits, exclude_known_compromised=False)
        sizes = {"train": len(data.y_train), "validation": len(data.y_val),
                 "hold-out": len(data.y_test)}  # fmt: skip
        short = {k: n for k, n in sizes.items() if n < cfg.min_split_rows}
        if short or not np.any(data.y_train):
            why = ", ".join(f"{k} window {n:,} rows" for k, n in short.items()) or "no fraud"
            why += f" (each window needs {cfg.min_split_rows:,} rows and training a fraud)"
            log.info("sidecar.waiting_for_labels", reason=reason, why=why)
            return {"model": "fraud", "reason": reason, "outcome": "waiting", "why": why}
        reg = Registry(cfg.registry_dir)
        champion = reg.champion("fraud")
        champ_ap = None
        if champion is not None:
            cols = feature_columns(champion.manifest.feature_names or [])
            x = data.x_test if cols is None else data.x_test[:, cols]
            champ_ap = fam.evaluate(run_onnx(champion.onnx, x), data)["ap"]
        run = Recompression(
            family=fam, data=data, plan=fraud_recompress(cfg.epochs, seed),
            champion=champion, champion_metric=champ_ap,
            record={"model": "fraud", "reason": reason, "rows": len(frame),
                    "at": datetime.now(UTC).isoformat(timespec="seconds")},
            run_dir=cfg.reports_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S"),
            title=f"sidecar recompression ({reason})", started=t0,
        )  # fmt: skip
        return recompress_and_publish(run, reg, cfg)
