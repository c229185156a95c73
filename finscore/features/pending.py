"""Fraud reports held aside until their transaction's terminal entry arrives (the
``fraud_reports`` contract, :class:`finscore.features.fraud.FraudFeatures`): a report counts in
the terminal windows only with its entry's habit flag, so the order in which reports and
transactions reach an instance does not change the features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["REPORT_VALUES", "PendingReports"]

REPORT_VALUES = ("fraud", "late", "label_time", "cents")  # a report's values in the stores
_NONE = np.zeros(0, dtype=np.int64)
_PENDING_COLUMNS = ("tag", "time", "terminal", *REPORT_VALUES)
_PENDING_FILTER_BITS = 20  # the pending reports' tag bitmap (1 MB, from the first report)
_PENDING_FILTER_MASK = (1 << _PENDING_FILTER_BITS) - 1
_PENDING_MIN_DELTA = 1024  # the delta run is merged once it exceeds max(this, main / 8)


class PendingReports:
    """Fraud reports whose transaction's terminal entry is not held yet, as integer columns
    (tag, time, terminal code, the report's values) in two runs sorted by tag: a main run and
    a small delta run that takes the new reports and is merged into the main one once it
    holds an eighth of it (adding costs what is added, amortised). A bitmap of the held tags
    answers most "is any of these tags pending?" questions in one gather; the others are one
    binary search per run. A report repeated (same terminal, time and tag) is held once."""

    __slots__ = ("_runs", "_filter", "_names", "_codes")

    def __init__(self) -> None:
        self._runs = [self._empty(), self._empty()]  # main, delta
        self._filter: np.ndarray | None = None  # allocated with the first report
        self._names: list[str] = []  # terminal code -> name
        self._codes: dict[str, int] = {}

    @staticmethod
    def _empty() -> dict[str, np.ndarray]:
        return {c: _NONE for c in _PENDING_COLUMNS}

    def __len__(self) -> int:
        return sum(len(run["tag"]) for run in self._runs)

    def add(
        self, terminals: Sequence[str], times: np.ndarray, tags: np.ndarray, values: dict
    ) -> None:
        """Hold these reports (one already held, or repeated in the call, once)."""
        codes = self._codes
        for name in terminals:
            if name not in codes:
                codes[name] = len(self._names)
                self._names.append(name)
        new = {"tag": np.asarray(tags, dtype=np.int64),
               "time": np.asarray(times, dtype=np.int64),
               "terminal": np.fromiter(map(codes.__getitem__, terminals), np.int64,
                                       len(terminals)),
               **{c: np.asarray(values[c], dtype=np.int64) for c in REPORT_VALUES}}  # fmt: skip
        n = len(new["tag"])
        if n > 1:  # repeats inside the call: the first of each (terminal, time, tag) is kept
            order = np.lexsort((np.arange(n), new["terminal"], new["time"], new["tag"]))
            first = np.ones(n, dtype=bool)
            same = np.ones(n - 1, dtype=bool)
            for c in ("tag", "time", "terminal"):
                same &= new[c][order][1:] == new[c][order][:-1]
            first[order[1:][same]] = False
            new = {c: v[first] for c, v in new.items()}
        if self._filter is None:
            self._filter = np.zeros(1 << _PENDING_FILTER_BITS, dtype=bool)
        maybe = self._filter[new["tag"] & _PENDING_FILTER_MASK]
        if maybe.any():  # repeats of held reports (rare): compared with each run's same tags
            held = np.zeros(len(maybe), dtype=bool)
            for r in np.flatnonzero(maybe).tolist():
                tag, time, code = (int(new[c][r]) for c in ("tag", "time", "terminal"))
                for run in self._runs:
                    a = int(np.searchsorted(run["tag"], tag, "left"))
                    b = int(np.searchsorted(run["tag"], tag, "right"))
                    same = (run["time"][a:b] == time) & (run["terminal"][a:b] == code)
                    held[r] |= bool(same.any())
            new = {c: v[~held] for c, v in new.items()}
        if not len(new["tag"]):
            return
        self._filter[new["tag"] & _PENDING_FILTER_MASK] = True
        main, delta = self._runs
        self._runs[1] = delta = self._merged(delta, new)
        if len(delta["tag"]) > max(_PENDING_MIN_DELTA, len(main["tag"]) >> 3):
            self._runs = [self._merged(main, delta), self._empty()]

    @staticmethod
    def _merged(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run of the rows of two, sorted by tag."""
        both = {c: np.concatenate([a[c], b[c]]) for c in _PENDING_COLUMNS}
        order = np.argsort(both["tag"], kind="stable")
        return {c: v[order] for c, v in both.items()}

    def among(self, tags: np.ndarray) -> list[np.ndarray]:
        """Per run, the positions of the held reports whose tag is one of ``tags`` (one
        gather in the bitmap when none is)."""
        found = [_NONE, _NONE]
        if self._filter is None or not len(self) or not len(tags):
            return found
        tags = tags[self._filter[tags & _PENDING_FILTER_MASK]]
        if not len(tags):
            return found
        for k, run in enumerate(self._runs):
            held = run["tag"]
            if not len(held):
                continue
            lo = np.searchsorted(held, tags, "left")
            hit = lo < len(held)
            hit[hit] = held[lo[hit]] == tags[hit]
            if hit.any():
                ask = np.unique(tags[hit])
                lo = np.searchsorted(held, ask, "left")
                n = np.searchsorted(held, ask, "right") - lo
                ends = np.cumsum(n)
                found[k] = np.repeat(lo - (ends - n), n) + np.arange(int(ends[-1]))
        return found

    def rows(self, at: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The columns of the reports at ``at`` (per run, as :meth:`among` gives them), run
        after run."""
        return {c: np.concatenate([run[c][p] for run, p in zip(self._runs, at, strict=True)])
                for c in _PENDING_COLUMNS}  # fmt: skip

    def names(self, codes: np.ndarray) -> list[str]:
        """The terminal names of terminal codes."""
        return [self._names[c] for c in codes.tolist()]

    def terminals(self) -> list[str]:
        """The terminal of each report held."""
        return self.names(np.concatenate([run["terminal"] for run in self._runs]))

    def remove(self, at: list[np.ndarray]) -> None:
        """Forget the reports at ``at`` (per run). Their tags stay in the bitmap until the
        next eviction rebuilds it (a bit set for nothing costs a binary search, never a
        wrong answer)."""
        for k, pos in enumerate(at):
            if len(pos):
                keep = np.ones(len(self._runs[k]["tag"]), dtype=bool)
                keep[pos] = False
                self._runs[k] = {c: v[keep] for c, v in self._runs[k].items()}

    def evict(self, before: int) -> None:
        """Forget the reports of transactions at or before ``before``."""
        dropped = False
        for k, run in enumerate(self._runs):
            keep = run["time"] > before
            if not keep.all():
                self._runs[k] = {c: v[keep] for c, v in run.items()}
                dropped = True
        if not dropped or self._filter is None:
            return
        self._filter[:] = False
        for run in self._runs:
            self._filter[run["tag"] & _PENDING_FILTER_MASK] = True
        live = np.unique(np.concatenate([run["terminal"] for run in self._runs]))
        if len(self._names) > 2 * len(live) + 1024:  # renumber the terminals still pending
            remap = np.full(len(self._names), -1, dtype=np.int64)
            remap[live] = np.arange(len(live))
            for run in self._runs:
                run["terminal"] = remap[run["terminal"]]
            self._names = [self._names[c] for c in live.tolist()]
            self._codes = {name: i for i, name in enumerate(self._names)}
