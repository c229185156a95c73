"""A columnar store of timed entries per key, built for window queries on whole batches.

Every entry is (key, time, tag, integer values). Entries live in flat numpy arrays sorted by a
composite int64 ``(key index << TIME_BITS) | (time - base)``, so "the entries of key k with a
time in (a, b]" is two ``searchsorted`` calls for a whole batch of queries at once, and window
sums come from prefix sums of the value columns. Values are integers (cents, 0/1 flags), so
every sum is exact: the same entries give the same features whatever the insertion order,
batch sizes, evictions or restores that led to them.

``tag`` (e.g. a CRC-32 of a transaction id) makes inserts idempotent: an entry with the same
key, time and tag as a stored one is not added again (at-least-once replays count once).

Limits, checked: at most ``2**KEY_BITS`` live keys (indices are compacted on eviction) and
times within ``±2**(TIME_BITS - 1)`` ms (±34 years) of the first time seen.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np

from finscore.features.exceptions import FeatureStateError

TIME_BITS = 41
KEY_BITS = 62 - TIME_BITS
TIME_MASK = (1 << TIME_BITS) - 1
SNAPSHOT_MAGIC = b"FST1"
_EMPTY = np.zeros(0, dtype=np.int64)


class TimeStore:
    """Sorted (key, time) entries with integer value columns; see the module docstring."""

    def __init__(self, value_names: Sequence[str]) -> None:
        self.value_names = tuple(value_names)
        self._index: dict[str, int] = {}
        self._names: list[str] = []
        self.base: int | None = None
        self.keys = _EMPTY.copy()
        self.tags = _EMPTY.copy()
        self.times = _EMPTY.copy()
        self.values = {n: _EMPTY.copy() for n in self.value_names}
        self._prefix: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.keys)

    # -- keys and composite keys --------------------------------------------------------------
    def index_of(self, names: Sequence[str], create: bool) -> np.ndarray:
        """Key index of each name (``-1`` for unknown names unless ``create``)."""
        index = self._index
        if not create:
            return np.fromiter(map(index.get, names, repeat(-1)), dtype=np.int64, count=len(names))
        got = list(map(index.get, names))
        if None in got:
            for r, name in enumerate(names):
                if got[r] is None:
                    i = index.get(name)
                    if i is None:
                        i = index[name] = len(self._names)
                        self._names.append(name)
                    got[r] = i
            if len(self._names) > 1 << KEY_BITS:
                raise FeatureStateError(f"more than {1 << KEY_BITS} live keys in one store")
        return np.fromiter(got, dtype=np.int64, count=len(got))

    def composite(self, idx: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Composite sort keys of (index, time); raises when a time is out of range."""
        t = np.asarray(t, dtype=np.int64)
        if self.base is None:
            if not len(t):
                return _EMPTY
            self.base = int(t.min()) - (1 << (TIME_BITS - 1))
        rel = t - self.base
        if len(rel) and (rel.min() < 0 or rel.max() > TIME_MASK):
            raise FeatureStateError(
                "event time more than 34 years away from the first time this state has seen"
            )
        return (np.asarray(idx, dtype=np.int64) << TIME_BITS) | rel

    def accepts(self, t: np.ndarray) -> np.ndarray:
        """Which times can be stored (all of them before the first insert)."""
        t = np.asarray(t, dtype=np.int64)
        if self.base is None:
            return np.ones(len(t), dtype=bool)
        rel = t - self.base
        return (rel >= 0) & (rel <= TIME_MASK)

    # -- writes -------------------------------------------------------------------------------
    def insert(
        self, idx: np.ndarray, t: np.ndarray, tags: np.ndarray, values: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Add entries (skipping any whose key, time and tag are already stored or repeated
        earlier in this call); returns the boolean mask of the entries that were added."""
        comp = self.composite(idx, t)
        tags = np.asarray(tags, dtype=np.int64)
        n = len(comp)
        fresh = np.ones(n, dtype=bool)
        if n == 0:
            return fresh
        lo = np.searchsorted(self.keys, comp, "left")
        hi = np.searchsorted(self.keys, comp, "right")
        for r in np.flatnonzero(hi > lo):  # same key and time already stored: compare tags
            if (self.tags[lo[r] : hi[r]] == tags[r]).any():
                fresh[r] = False
        order = np.lexsort((np.arange(n), tags, comp))
        same = (comp[order][1:] == comp[order][:-1]) & (tags[order][1:] == tags[order][:-1])
        fresh[order[1:][same]] = False
        if not fresh.all():
            comp, tags, t = comp[fresh], tags[fresh], np.asarray(t)[fresh]
            values = {k: np.asarray(v)[fresh] for k, v in values.items()}
            hi = hi[fresh]
        if len(comp):
            order = np.argsort(comp, kind="stable")
            pos = hi[order]
            self.keys = np.insert(self.keys, pos, comp[order])
            self.tags = np.insert(self.tags, pos, tags[order])
            self.times = np.insert(self.times, pos, np.asarray(t, dtype=np.int64)[order])
            for k in self.value_names:
                self.values[k] = np.insert(
                    self.values[k], pos, np.asarray(values[k], dtype=np.int64)[order]
                )
            self._prefix.clear()
        return fresh

    def evict(self, before: int) -> None:
        """Drop every entry with a time <= ``before``; compact key indices when many are dead."""
        if not len(self.keys):
            return
        keep = self.times > before
        if not keep.all():
            self._take(keep)
        live = np.unique(self.keys >> TIME_BITS)
        if len(self._names) > 2 * len(live) + 1024:
            self._compact(live)

    def _take(self, keep: np.ndarray) -> None:
        self.keys, self.tags, self.times = self.keys[keep], self.tags[keep], self.times[keep]
        self.values = {k: v[keep] for k, v in self.values.items()}
        self._prefix.clear()

    def _compact(self, live: np.ndarray) -> None:
        """Renumber live keys 0..n-1 in their old order (so the sort order is unchanged)."""
        remap = np.full(len(self._names), -1, dtype=np.int64)
        remap[live] = np.arange(len(live))
        self.keys = (remap[self.keys >> TIME_BITS] << TIME_BITS) | (self.keys & TIME_MASK)
        self._names = [self._names[i] for i in live.tolist()]
        self._index = {name: i for i, name in enumerate(self._names)}
        self._prefix.clear()

    # -- reads --------------------------------------------------------------------------------
    def prefix(self, name: str) -> np.ndarray:
        """Prefix sums of a value column (length N + 1, leading 0); cached until a write."""
        p = self._prefix.get(name)
        if p is None:
            p = np.zeros(len(self.keys) + 1, dtype=np.int64)
            np.cumsum(self.values[name], out=p[1:])
            self._prefix[name] = p
        return p

    def window(self, idx: np.ndarray, after: np.ndarray, upto: np.ndarray) -> tuple:
        """Entry ranges ``[lo, hi)`` of key ``idx`` with ``after < time <= upto`` (empty for
        ``idx == -1``)."""
        (lo,), hi = self.windows(idx, [after], upto)
        return lo, hi

    def windows(
        self, idx: np.ndarray, afters: Sequence[np.ndarray], upto: np.ndarray
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """:meth:`window` for several lower bounds sharing one upper bound: ([lo...], hi)."""
        idx = np.asarray(idx, dtype=np.int64)
        known = idx >= 0
        safe = np.where(known, idx, 0)
        q_hi = self._clip(safe, upto)
        order = np.argsort(q_hi)  # sorted queries: numpy's binary search reuses the last bound
        keys = self.keys

        def search(q: np.ndarray, side: str) -> np.ndarray:
            out = np.empty(len(q), dtype=np.int64)
            out[order] = np.searchsorted(keys, q[order], side)  # type: ignore[call-overload]
            return out

        start = search(safe << TIME_BITS, "left")
        hi = np.where(known, search(q_hi, "right"), start)
        los = [
            np.minimum(np.maximum(search(self._clip(safe, a), "right"), start), hi) for a in afters
        ]
        return los, hi

    def _clip(self, idx: np.ndarray, t: np.ndarray) -> np.ndarray:
        base = 0 if self.base is None else self.base
        rel = np.minimum(np.maximum(np.asarray(t, dtype=np.int64) - base, -1), TIME_MASK)
        return (idx << TIME_BITS) + rel

    def key_names(self) -> list[str]:
        """Keys that hold at least one entry."""
        live = np.unique(self.keys >> TIME_BITS)
        return [self._names[i] for i in live.tolist()]

    # -- changelog ----------------------------------------------------------------------------
    def snapshot(self, names: Iterable[str]) -> list[bytes]:
        """Each key's entries as bytes: magic, count, then int64 rows (time, tag, values...)."""
        names = list(names)
        idx = self.index_of(names, create=False)
        lo, hi = self.window(idx, np.full(len(idx), -(1 << 62)), np.full(len(idx), 1 << 62))
        packed = np.stack([self.times, self.tags, *self.values.values()], axis=1)
        return [
            SNAPSHOT_MAGIC + struct.pack("<I", b - a) + packed[a:b].tobytes()
            for a, b in zip(lo.tolist(), hi.tolist(), strict=True)
        ]

    def restore(self, snapshots: dict[str, bytes]) -> None:
        """Replace the entries of each key with those of its snapshot (one bulk write)."""
        if not snapshots:
            return
        width = 2 + len(self.value_names)
        names = list(snapshots)
        old = self.index_of(names, create=False)
        drop = np.isin(self.keys >> TIME_BITS, old[old >= 0])
        if drop.any():
            self._take(~drop)
        rows, owners = [], []
        for i, name in enumerate(names):
            snap = snapshots[name]
            if snap[:4] != SNAPSHOT_MAGIC:
                raise FeatureStateError(f"unknown state snapshot format for key {name!r}")
            (n,) = struct.unpack_from("<I", snap, 4)
            arr = np.frombuffer(snap, dtype=np.int64, count=n * width, offset=8)
            rows.append(arr.reshape(n, width))
            owners.append(np.full(n, i, dtype=np.int64))
        table = np.concatenate(rows) if rows else np.zeros((0, width), np.int64)
        idx = self.index_of(names, create=True)[np.concatenate(owners)]
        self.insert(idx, table[:, 0], table[:, 1],
                    {k: table[:, 2 + j] for j, k in enumerate(self.value_names)})  # fmt: skip


__all__ = ["TimeStore", "TIME_BITS", "KEY_BITS"]
