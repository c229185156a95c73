"""The market half of the sidecar: live macro-F1 from price signals and realised moves, and
recompression of the market model on the recent book history.

Inputs (given by the loop, :mod:`finscore.app.sidecar.loop`): ``market-ticks`` (each checked by
:meth:`MarketSidecar.check_tick`: bounds and sequence) and ``price-signals``.

Ticks (from ``market-ticks``) are kept per instrument as feature rows and mid prices, ordered by
sequence. A signal's outcome is the FI-2010 direction label of its tick's sequence, computed
from those mids with the live model's horizon and α — so the sidecar judges the model exactly
as it was trained. Recompression trains on the older part of the buffer and gates on the most
recent part: first against a teacher trained on the same (new-regime) data, then against the
live champion on the same windows, in the sequence both halves share
(:func:`~finscore.app.sidecar.gate.recompress_and_publish`; plan:
:func:`~finscore.compression.plans.market_recompress`).
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import numpy as np

from finscore.app.sidecar.config import SidecarConfig
from finscore.app.sidecar.gate import Recompression, recompress_and_publish
from finscore.app.sidecar.inputs import check_tick
from finscore.features.market import (
    BOOK_LAYOUT,
    book_array,
    direction_labels,
    make_windows,
    rows_from_book_array,
    with_layout,
)
from finscore.logging import get_logger
from finscore.models.evaluation import macro_f1
from finscore.models.registry import Registry

__all__ = ["CLASSES", "MarketSidecar"]

log = get_logger("sidecar.market")
CLASSES = {"DOWN": 0, "FLAT": 1, "UP": 2}


class MarketSidecar:
    """Buffers ticks and signals; says when to recompress; recompresses and publishes."""

    def __init__(self, cfg: SidecarConfig, max_rows: int = 60_000, window: int = 5_000) -> None:
        self.cfg = cfg
        self.max_rows = max_rows
        self.window = window
        self._seq: dict[str, deque[int]] = {}
        self._rows: dict[str, deque[np.ndarray]] = {}
        self._mid: dict[str, deque[float]] = {}
        self._signals: dict[str, dict[int, tuple[int, str]]] = {}
        self.best_f1: dict[str, float] = {}
        self._last_seq: dict[str, int] = {}  # newest sequence checked, per instrument

    # -- inputs -------------------------------------------------------------------------------
    def check_tick(self, tick: dict[str, Any]) -> dict[str, Any]:
        """``tick`` when it is within bounds and not behind its instrument's sequence
        (:func:`~finscore.app.sidecar.inputs.check_tick`); raises ``BadInput`` otherwise."""
        inst = tick.get("instrument", "")
        check_tick(tick, self._last_seq.get(inst))
        self._last_seq[tick["instrument"]] = max(tick["sequence"], self._last_seq.get(inst, -1))
        return tick

    def add_ticks(self, ticks: list[dict]) -> None:
        if not ticks:
            return
        rows = rows_from_book_array(book_array(ticks))
        for t, row in zip(ticks, rows, strict=True):
            inst = t["instrument"]
            if inst not in self._seq:
                self._seq[inst] = deque(maxlen=self.max_rows)
                self._rows[inst] = deque(maxlen=self.max_rows)
                self._mid[inst] = deque(maxlen=self.max_rows)
            seqs = self._seq[inst]
            if seqs and t["sequence"] <= seqs[-1]:
                continue  # replay
            seqs.append(int(t["sequence"]))
            self._rows[inst].append(row)
            self._mid[inst].append((t["bids"][0]["price"] + t["asks"][0]["price"]) / 2)

    def add_signals(self, signals: list[dict]) -> None:
        for s in signals:
            self._signals.setdefault(s["instrument"], {})[int(s["sequence"])] = (
                CLASSES[s["signal"]],
                s["model_version"],
            )

    def __len__(self) -> int:
        return sum(len(v) for v in self._seq.values())

    # -- quality --------------------------------------------------------------------------------
    def quality(self, version: str, horizon: int, alpha: float) -> tuple[int, float | None]:
        """(outcomes, macro-F1) of ``version`` over its last ``window`` signals with known moves."""
        y_true: list[int] = []
        y_pred: list[int] = []
        for inst, sigs in self._signals.items():
            if inst not in self._seq:
                continue
            seqs = np.fromiter(self._seq[inst], dtype=np.int64)
            labels = direction_labels(
                np.fromiter(self._mid[inst], dtype=np.float64), horizon, alpha
            )
            first = int(seqs[0]) if len(seqs) else 0
            for seq, (pred, ver) in sigs.items():
                k = seq - first
                if ver == version and 0 <= k < len(labels) and seqs[k] == seq and labels[k] >= 0:
                    y_true.append(int(labels[k]))
                    y_pred.append(pred)
        y_true, y_pred = y_true[-self.window :], y_pred[-self.window :]
        if len(y_true) < 100:
            return len(y_true), None
        return len(y_true), macro_f1(np.asarray(y_true), np.asarray(y_pred))

    def trigger(self) -> str | None:
        """The drift that calls for a recompression now (the champion's rolling macro-F1 fell
        ``market_f1_drop`` below its best over at least ``market_min_outcomes`` signals), or
        None."""
        min_outcomes, f1_drop = self.cfg.market_min_outcomes, self.cfg.market_f1_drop
        champion = Registry(self.cfg.registry_dir).champion("market")
        if champion is None:
            return None
        p = champion.manifest.params
        v = champion.manifest.version
        n, f1 = self.quality(v, int(p.get("horizon", 10)), float(p.get("alpha", 0.0)))
        if f1 is None or n < min_outcomes:
            return None
        best = max(self.best_f1.get(v, 0.0), f1)
        self.best_f1[v] = best
        if f1 < best - f1_drop:
            return f"drift: rolling macro-F1 of market v{v} fell from {best:.3f} to {f1:.3f}"
        return None

    # -- recompression ------------------------------------------------------------------------
    def recompress(self, reason: str, seed: int = 0) -> dict[str, Any]:
        """Train, compress and gate a candidate on the recent book history (train on the older
        60 %, validate on the next 15 %, hold out the newest 25 %); publish it if it passes."""
        from finscore.compression.export import run_onnx
        from finscore.compression.family import TrainData
        from finscore.compression.market import MarketFamily
        from finscore.compression.plans import market_recompress

        cfg, t0 = self.cfg, time.time()
        reg = Registry(cfg.registry_dir)
        champion = reg.champion("market")
        params = champion.manifest.params if champion else {}
        window, horizon = int(params.get("window", 100)), int(params.get("horizon", 10))
        layout = str(params.get("layout", BOOK_LAYOUT))  # the champion's, so workers accept it
        fam = MarketFamily(window=window, horizon=horizon, layout=layout)
        fam.alpha = float(params.get("alpha", 0.0))
        parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[], [], []]
        gap = window + horizon
        for inst in self._seq:
            mid = np.fromiter(self._mid[inst], dtype=np.float64)
            rows = with_layout(np.stack(self._rows[inst]), mid, layout)
            cuts = [0, int(0.6 * len(rows)), int(0.75 * len(rows)), len(rows)]
            for i in range(3):
                lo, hi = cuts[i] + (gap if i else 0), cuts[i + 1]
                if hi - lo <= 2 * gap:
                    continue
                y = direction_labels(mid[lo:hi], horizon, fam.alpha)
                parts[i].append(make_windows(rows[lo:hi], y, window, 2))
        if not all(parts):
            return {"model": "market", "reason": reason, "outcome": "rejected",
                    "why": "not enough recent ticks"}  # fmt: skip
        (xtr, ytr), (xva, yva), (xte, yte) = (
            (np.concatenate([x for x, _ in p]), np.concatenate([y for _, y in p])) for p in parts
        )
        data = TrainData(xtr, ytr, xva, yva, xte, yte, meta={"alpha": fam.alpha})
        champ_f1 = None
        if champion is not None:
            champ_f1 = fam.evaluate(run_onnx(champion.onnx, data.x_test), data)["macro_f1"]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        run = Recompression(
            family=fam, data=data, plan=market_recompress(cfg.market_epochs, seed),
            champion=champion, champion_metric=champ_f1,
            record={"model": "market", "reason": reason, "windows": len(xtr)},
            run_dir=cfg.reports_dir / f"market-{stamp}",
            title=f"sidecar recompression ({reason})", started=t0,
        )  # fmt: skip
        return recompress_and_publish(run, reg, cfg)
