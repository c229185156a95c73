"""A columnar store of timed entries per key, built for window queries on whole batches.

Every entry is (key, time, tag, integer values). Entries live in flat numpy arrays sorted by a
composite int64 ``(key index << TIME_BITS) | (time - base)``, so "the entries of key k with a
time in (a, b]" is two ``searchsorted`` calls for a whole batch of queries at once, and window
sums come from prefix sums of the value columns. Values are integers (cents, 0/1 flags), so
every sum is exact: the same entries give the same features whatever the insertion order,
batch sizes, evictions or restores that led to them.

``tag`` (e.g. a CRC-32 of a transaction id) makes inserts idempotent: an entry with the same
key, time and tag as a stored one is not added again (at-least-once replays count once).

Writes go to a small sorted *delta* run that is merged into the main run once it holds an
eighth of it (a two-level log-structured merge): a batch of 5,000 or a single event costs an
insert into a small array, not a copy of the whole state.

Limits, checked: at most ``2**KEY_BITS`` live keys (indices are compacted on eviction) and
times within ``2**TIME_BITS`` ms (~69 years) from the store's base: ``origin`` when given (then
no record moves the range), else ±34 years around the median time of the first write (so a
few outliers in it cannot move the range either). Restored rows outside the range are dropped.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat

import numpy as np

from finscore.features.exceptions import FeatureStateError

TIME_BITS = 41
KEY_BITS = 62 - TIME_BITS
TIME_MASK = (1 << TIME_BITS) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
SNAPSHOT_MAGIC = b"FST1"  # a key's entries (snapshot)
ROWS_MAGIC = b"FSM1"  # entries added to several keys since the previous record (changelog)
KEY_ROWS_MAGIC = b"FSD1"  # entries added to one key (the changelog record of finscore <= 0.3)
_EMPTY = np.zeros(0, dtype=np.int64)
NO_TIME = -(1 << 62)  # "no such entry" in time queries: earlier than any storable time
MIN_DELTA = 4096  # the delta run is merged once it exceeds max(MIN_DELTA, main / 8)
TAG_FILTER_BITS = 23  # find_tags' filter: which tag hashes may be held (8 MB, rebuilt on evict)
_TAG_MASK = (1 << TAG_FILTER_BITS) - 1


class _Run:
    """One sorted run: composite keys, tags, times and value columns (+ cached prefix sums)."""

    __slots__ = ("keys", "tags", "times", "values", "_prefix")

    def __init__(self, value_names: Sequence[str]) -> None:
        self.keys = _EMPTY.copy()
        self.tags = _EMPTY.copy()
        self.times = _EMPTY.copy()
        self.values = {n: _EMPTY.copy() for n in value_names}
        self._prefix: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def insert(self, comp: np.ndarray, tags: np.ndarray, times: np.ndarray, values: dict) -> None:
        """Add entries (any order; equal keys keep their order, after those already here)."""
        if not len(comp):
            return
        order = np.argsort(comp, kind="stable")
        pos = np.searchsorted(self.keys, comp[order], "right")
        self.keys = np.insert(self.keys, pos, comp[order])
        self.tags = np.insert(self.tags, pos, tags[order])
        self.times = np.insert(self.times, pos, times[order])
        for k in self.values:
            self.values[k] = np.insert(self.values[k], pos, values[k][order])
        self._prefix.clear()

    def merge_from(self, other: _Run) -> None:
        self.insert(other.keys, other.tags, other.times, other.values)

    def take(self, keep: np.ndarray) -> None:
        self.keys, self.tags, self.times = self.keys[keep], self.tags[keep], self.times[keep]
        self.values = {k: v[keep] for k, v in self.values.items()}
        self._prefix.clear()

    def rekey(self, keys: np.ndarray) -> None:
        self.keys = keys
        self._prefix.clear()

    def has(self, comp: np.ndarray, tags: np.ndarray) -> np.ndarray:
        """Which (key, tag) pairs are stored here."""
        found = np.zeros(len(comp), dtype=bool)
        if not len(self.keys):
            return found
        lo = np.searchsorted(self.keys, comp, "left")
        same = self.keys[np.minimum(lo, len(self.keys) - 1)] == comp
        for r in np.flatnonzero(same).tolist():  # same key and time stored: compare tags
            hi = int(np.searchsorted(self.keys, comp[r], "right"))
            found[r] = bool((self.tags[lo[r] : hi] == tags[r]).any())
        return found

    def zeros_prefix(self, name: str) -> np.ndarray:
        """How many of the first q entries have ``name == 0``, for q = 0..N (leading 0); cached
        until a write. Non-decreasing: the last zero before a position is one binary search."""
        key = "zeros of " + name
        p = self._prefix.get(key)
        if p is None:
            p = np.zeros(len(self.keys) + 1, dtype=np.int64)
            np.cumsum(self.values[name] == 0, out=p[1:])
            self._prefix[key] = p
        return p

    def prefix(self, name: str) -> np.ndarray:
        """Prefix sums of a value column (length N + 1, leading 0); cached until a write."""
        p = self._prefix.get(name)
        if p is None:
            p = np.zeros(len(self.keys) + 1, dtype=np.int64)
            np.cumsum(self.values[name], out=p[1:])
            self._prefix[name] = p
        return p


class TimeStore:
    """Sorted (key, time) entries with integer value columns; see the module docstring."""

    def __init__(
        self, value_names: Sequence[str], *, track_changes: bool = False, origin: int | None = None
    ) -> None:
        """``track_changes``: remember inserted entries until :meth:`take_changes`;
        ``origin``: the earliest storable time (the range is fixed, ~69 years from it)."""
        self.value_names = tuple(value_names)
        self.track_changes = track_changes
        self._changes: list[np.ndarray] = []  # [n, 3 + values] (index, time, tag, values...)
        self._index: dict[str, int] = {}
        self._names: list[str] = []
        self.base: int | None = origin
        self._main = _Run(self.value_names)
        self._delta = _Run(self.value_names)
        self._tag_filter: np.ndarray | None = None  # built by the first find_tags

    def __len__(self) -> int:
        return len(self._main) + len(self._delta)

    @property
    def _runs(self) -> tuple[_Run, _Run]:
        return self._main, self._delta

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
            self._set_base(t)
        if not self.accepts(t).all():  # compared, never subtracted first: no int64 wrap-around
            raise FeatureStateError(
                "event time more than 34 years away from the first time this state has seen"
            )
        rel = t - self.base
        return (np.asarray(idx, dtype=np.int64) << TIME_BITS) | rel

    def _set_base(self, t: np.ndarray) -> None:
        """Centre the range on the median of the first times written (not on one of them);
        raises :class:`FeatureStateError` when that range leaves int64 (absurd times)."""
        base = int(np.median(t)) - (1 << (TIME_BITS - 1))
        if base < _I64_MIN or base + TIME_MASK > _I64_MAX:
            raise FeatureStateError("event times out of any representable range")
        self.base = base

    def accepts(self, t: np.ndarray) -> np.ndarray:
        """Which times can be stored (all of them before the first insert). Compared with the
        range's ends, so a time near the int64 limits is refused, never wrapped around."""
        t = np.asarray(t, dtype=np.int64)
        if self.base is None:
            return np.ones(len(t), dtype=bool)
        return (t >= self.base) & (t <= self.base + TIME_MASK)

    # -- writes -------------------------------------------------------------------------------
    def insert(
        self,
        idx: np.ndarray,
        t: np.ndarray,
        tags: np.ndarray,
        values: dict[str, np.ndarray],
        *,
        record: bool = True,
    ) -> np.ndarray:
        """Add entries (skipping any whose key, time and tag are already stored or repeated
        earlier in this call); returns the boolean mask of the entries that were added.
        ``record=False``: not a change to report (e.g. entries being restored)."""
        comp = self.composite(idx, t)
        tags = np.asarray(tags, dtype=np.int64)
        n = len(comp)
        if n == 0:
            return np.ones(0, dtype=bool)
        fresh = ~(self._main.has(comp, tags) | self._delta.has(comp, tags))
        if n > 1:
            order = np.lexsort((np.arange(n), tags, comp))
            same = (comp[order][1:] == comp[order][:-1]) & (tags[order][1:] == tags[order][:-1])
            fresh[order[1:][same]] = False
        keep = None if fresh.all() else fresh
        cols = {k: np.asarray(values[k], dtype=np.int64) for k in self.value_names}
        times = np.asarray(t, dtype=np.int64)
        if keep is not None:
            comp, tags, times = comp[keep], tags[keep], times[keep]
            cols = {k: v[keep] for k, v in cols.items()}
        self._delta.insert(comp, tags, times, cols)
        if self._tag_filter is not None:
            self._tag_filter[tags & _TAG_MASK] = True
        if self.track_changes and record and len(comp):
            self._changes.append(
                np.stack([comp >> TIME_BITS, times, tags, *(cols[k] for k in self.value_names)], 1)
            )
        if len(self._delta) > max(MIN_DELTA, len(self._main) >> 3):
            self._merge()
        return fresh

    def _merge(self) -> None:
        if len(self._delta):
            self._main.merge_from(self._delta)
            self._delta = _Run(self.value_names)

    def evict(self, before: int) -> None:
        """Drop every entry with a time <= ``before``; compact key indices when many are dead."""
        dropped = False
        for run in self._runs:
            keep = run.times > before
            if not keep.all():
                run.take(keep)
                dropped = True
        if dropped and self._tag_filter is not None:
            self._tag_filter = self._build_tag_filter()
        if dropped and len(self._names) > 1024:
            live = self._live_indices()
            if len(self._names) > 2 * len(live) + 1024:
                self._compact(live)

    def _live_indices(self) -> np.ndarray:
        """Sorted indices of the keys that hold entries (a scatter, not a sort)."""
        present = np.zeros(len(self._names), dtype=bool)
        for run in self._runs:
            present[run.keys >> TIME_BITS] = True
        return np.flatnonzero(present)

    def _compact(self, live: np.ndarray) -> None:
        """Renumber live keys 0..n-1 in their old order (so the sort order is unchanged)."""
        remap = np.full(len(self._names), -1, dtype=np.int64)
        remap[live] = np.arange(len(live))
        for run in self._runs:
            run.rekey((remap[run.keys >> TIME_BITS] << TIME_BITS) | (run.keys & TIME_MASK))
        if self._changes:  # unreported changes follow their keys (evicted ones are moot)
            rows = np.concatenate(self._changes)
            rows[:, 0] = remap[rows[:, 0]]
            self._changes = [rows[rows[:, 0] >= 0]]
        self._names = [self._names[i] for i in live.tolist()]
        self._index = {name: i for i, name in enumerate(self._names)}

    # -- reads --------------------------------------------------------------------------------
    def window_sums(
        self,
        idx: np.ndarray,
        afters: Sequence[np.ndarray],
        upto: np.ndarray,
        columns: Sequence[str] = (),
    ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Per lower bound in ``afters``: (count, {column: sum}) over the entries of key ``idx``
        with ``after < time <= upto`` (zero for ``idx == -1``). All bounds of all rows go
        through one sort and one binary search per run (few numpy calls per batch: small
        batches stay cheap)."""
        idx = np.asarray(idx, dtype=np.int64)
        n, k = len(idx), len(afters)
        known = idx >= 0
        safe = np.where(known, idx, 0)
        # Times are clipped to [-1, TIME_MASK] relative to the base, so every bound stays
        # inside its key's own block of entries: no search for the block's start is needed.
        queries = self._clip(safe, np.stack([np.asarray(upto), *afters]))  # [1 + k, n]
        order = np.argsort(queries[0])  # sorted queries: the binary search reuses bounds
        flat = queries[:, order].ravel()
        count = np.zeros((k, n), dtype=np.int64)
        sums = {c: np.zeros((k, n), dtype=np.int64) for c in columns}
        for run in self._runs:
            if not len(run):
                continue
            pos = np.empty((1 + k, n), dtype=np.int64)
            pos[:, order] = np.searchsorted(run.keys, flat, "right").reshape(1 + k, n)
            hi = pos[0]
            lo = np.where(known, np.minimum(pos[1:], hi), hi)
            count += hi - lo
            for c in columns:
                p = run.prefix(c)
                sums[c] += p[hi] - p[lo]
        return [(count[j], {c: sums[c][j] for c in columns}) for j in range(k)]

    def last_time_of_zero(self, idx: np.ndarray, upto: np.ndarray, column: str) -> np.ndarray:
        """Per row, the latest time <= ``upto`` of an entry of key ``idx`` whose ``column`` is
        0 (:data:`NO_TIME` when there is none, or for ``idx == -1``). One binary search per
        run for the whole batch, on the run's cached count of zeros."""
        idx = np.asarray(idx, dtype=np.int64)
        known = idx >= 0
        safe = np.where(known, idx, 0)
        best = np.full(len(idx), NO_TIME, dtype=np.int64)
        query = self._clip(safe, np.asarray(upto))
        for run in self._runs:
            if not len(run):
                continue
            zeros = run.zeros_prefix(column)
            hi = np.searchsorted(run.keys, query, "right")
            last = np.searchsorted(zeros, zeros[hi], "left") - 1  # the entry that made the count
            at = np.maximum(last, 0)
            found = known & (last >= 0) & ((run.keys[at] >> TIME_BITS) == safe)
            best = np.where(found, np.maximum(best, run.times[at]), best)
        return best

    def last_time(self, idx: np.ndarray, upto: np.ndarray) -> np.ndarray:
        """Per row, the latest time <= ``upto`` of any entry of key ``idx`` (:data:`NO_TIME`
        when there is none, or for ``idx == -1``): one binary search per run for the batch."""
        idx = np.asarray(idx, dtype=np.int64)
        known = idx >= 0
        safe = np.where(known, idx, 0)
        best = np.full(len(idx), NO_TIME, dtype=np.int64)
        query = self._clip(safe, np.asarray(upto))
        for run in self._runs:
            if not len(run):
                continue
            at = np.searchsorted(run.keys, query, "right") - 1
            ok = np.maximum(at, 0)
            found = known & (at >= 0) & ((run.keys[ok] >> TIME_BITS) == safe)
            best = np.where(found, np.maximum(best, run.times[ok]), best)
        return best

    def find_tags(
        self, idx: np.ndarray, tags: np.ndarray, column: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row, whether key ``idx`` holds an entry tagged ``tags`` at any time, and that
        entry's time and ``column`` value (0 where not found). Costs what the asked keys hold
        (their blocks are compared in one gather per run), not what the store holds."""
        idx = np.asarray(idx, dtype=np.int64)
        tags = np.asarray(tags, dtype=np.int64)
        n = len(idx)
        found = np.zeros(n, dtype=bool)
        times = np.zeros(n, dtype=np.int64)
        vals = np.zeros(n, dtype=np.int64)
        if self._tag_filter is None:
            self._tag_filter = self._build_tag_filter()
        ask = np.flatnonzero((idx >= 0) & self._tag_filter[tags & _TAG_MASK])
        if not len(ask):
            return found, times, vals
        got = self._find_tags(idx[ask], tags[ask], column)
        found[ask], times[ask], vals[ask] = got
        return found, times, vals

    def _build_tag_filter(self) -> np.ndarray:
        bits = np.zeros(1 << TAG_FILTER_BITS, dtype=bool)
        for run in self._runs:
            bits[run.tags & _TAG_MASK] = True
        return bits

    def _find_tags(
        self, idx: np.ndarray, tags: np.ndarray, column: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`find_tags` for known keys, by comparing the keys' whole blocks."""
        n = len(idx)
        found = np.zeros(n, dtype=bool)
        times = np.zeros(n, dtype=np.int64)
        vals = np.zeros(n, dtype=np.int64)
        known = np.ones(n, dtype=bool)
        safe = idx
        for run in self._runs:
            if not len(run):
                continue
            lo = np.searchsorted(run.keys, safe << TIME_BITS, "left")
            hi = np.where(known, np.searchsorted(run.keys, (safe + 1) << TIME_BITS, "left"), lo)
            lens = hi - lo
            total = int(lens.sum())
            if not total:
                continue
            row = np.repeat(np.arange(n), lens)
            ends = np.cumsum(lens)
            pos = np.repeat(lo - (ends - lens), lens) + np.arange(total)
            hit = run.tags[pos] == tags[row]
            if hit.any():
                r, p = row[hit], pos[hit]
                found[r], times[r], vals[r] = True, run.times[p], run.values[column][p]
        return found, times, vals

    def entries(
        self, idx: int, after: int, upto: int, *, with_times: bool = False, with_tags: bool = False
    ) -> dict[str, np.ndarray]:
        """The value columns of one key's entries with ``after < time <= upto`` (and their
        times as ``"time"`` when ``with_times``, tags as ``"tag"`` when ``with_tags``), in no
        particular order."""
        names = (*self.value_names, *(("time",) if with_times else ()),
                 *(("tag",) if with_tags else ()))  # fmt: skip
        if idx < 0:
            return {c: _EMPTY for c in names}
        one = np.array([idx], dtype=np.int64)
        parts: list[dict[str, np.ndarray]] = []
        for run in self._runs:
            lo = int(np.searchsorted(run.keys, self._clip(one, np.array([after]))[0], "right"))
            hi = int(np.searchsorted(run.keys, self._clip(one, np.array([upto]))[0], "right"))
            lo = max(lo, int(np.searchsorted(run.keys, idx << TIME_BITS, "left")))
            cols = {**run.values, "time": run.times, "tag": run.tags}
            parts.append({c: cols[c][lo : max(lo, hi)] for c in names})
        return {c: np.concatenate([p[c] for p in parts]) for c in names}

    def _clip(self, idx: np.ndarray, t: np.ndarray) -> np.ndarray:
        base = 0 if self.base is None else self.base
        rel = np.minimum(np.maximum(np.asarray(t, dtype=np.int64) - base, -1), TIME_MASK)
        return (idx << TIME_BITS) + rel

    def key_names(self) -> list[str]:
        """Keys that hold at least one entry."""
        return [self._names[i] for i in self._live_indices().tolist()]

    def time_range(self) -> tuple[int, int] | None:
        """(oldest, newest) time held, or None when empty."""
        times = [r.times for r in self._runs if len(r)]
        if not times:
            return None
        return min(int(t.min()) for t in times), max(int(t.max()) for t in times)

    def newest_times(self, n: int) -> np.ndarray:
        """The ``n`` newest times held (all when fewer), ascending, int64."""
        t = np.concatenate([r.times for r in self._runs])
        if len(t) > n:
            t = np.partition(t, len(t) - n)[-n:]
        return np.sort(t)

    # -- changelog ----------------------------------------------------------------------------
    def snapshot(self, names: Iterable[str]) -> list[bytes]:
        """Each key's entries as bytes: magic, count, then int64 rows (time, tag, values...).

        Gathers only the rows of the asked keys (from both runs), so a flush costs what the
        changed keys hold, not what the whole store holds."""
        idx = self.index_of(list(names), create=False)
        safe = np.where(idx >= 0, idx, 0)
        parts, counts = [], np.zeros(len(idx), dtype=np.int64)
        for run in self._runs:
            lo = np.searchsorted(run.keys, safe << TIME_BITS, "left")
            hi = np.where(idx >= 0, np.searchsorted(run.keys, (safe + 1) << TIME_BITS, "left"), lo)
            lens = hi - lo
            ends = np.cumsum(lens)
            rows = np.repeat(lo - (ends - lens), lens) + np.arange(
                int(ends[-1]) if len(ends) else 0
            )
            cols = [run.times[rows], run.tags[rows], *(v[rows] for v in run.values.values())]
            raw = np.stack(cols, axis=1).tobytes()
            width = 8 * len(cols)
            parts.append((raw, (ends - lens) * width, ends * width))
            counts += lens
        (raw_a, lo_a, hi_a), (raw_b, lo_b, hi_b) = parts
        head = [SNAPSHOT_MAGIC + struct.pack("<I", n) for n in counts.tolist()]
        return [
            h + raw_a[a:b] + raw_b[c:d]
            for h, a, b, c, d in zip(head, lo_a.tolist(), hi_a.tolist(), lo_b.tolist(),
                                     hi_b.tolist(), strict=True)
        ]  # fmt: skip

    def take_changes(
        self, group_of: Mapping[str, int], max_rows: int = 8192
    ) -> list[tuple[int, bytes]]:
        """The entries added since the last call, as (group, record) pairs: the changed keys
        grouped by ``group_of`` (e.g. key -> partition; keys it lacks are dropped), at most
        ``max_rows`` entries per record (:data:`ROWS_MAGIC`). An append-only changelog whose
        records together (see :meth:`add_rows`) rebuild the store; a flush costs what was
        added, not what is held, and a few records per group, not one per key."""
        if not self._changes:
            return []
        rows = np.concatenate(self._changes)
        self._changes = []
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        keys, starts = np.unique(rows[:, 0], return_index=True)
        names = [self._names[k] for k in keys.tolist()]
        group = np.fromiter(map(group_of.get, names, repeat(-1)), np.int64, len(names))
        out: list[tuple[int, bytes]] = []
        counts = np.diff(np.r_[starts, len(rows)])
        row_group = np.repeat(group, counts)
        local = np.repeat(np.arange(len(keys)), counts)
        for g in np.unique(group[group >= 0]).tolist():
            sel = np.flatnonzero(row_group == g)
            for a in range(0, len(sel), max_rows):
                part = sel[a : a + max_rows]
                used, inverse = np.unique(local[part], return_inverse=True)
                table = rows[part]
                table[:, 0] = inverse
                out.append((g, _encode_rows([names[k] for k in used.tolist()], table)))
        return out

    def take_change_rows(self) -> tuple[list[str], np.ndarray]:
        """The entries added since the last call (or :meth:`take_changes`) as (key names,
        int64 rows: index into those names, time, tag, values...), sorted by key; for callers
        that encode changes their own way."""
        if not self._changes:
            return [], np.zeros((0, 3 + len(self.value_names)), dtype=np.int64)
        rows = np.concatenate(self._changes)
        self._changes = []
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        used, inverse = np.unique(rows[:, 0], return_inverse=True)
        rows[:, 0] = inverse.reshape(-1)
        return [self._names[k] for k in used.tolist()], rows

    def add_rows(
        self,
        records: Iterable[tuple[str, bytes]],
        keep: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> int:
        """Insert the entries of changelog records (:meth:`take_changes` rows or
        :meth:`snapshot` snapshots, any order, repeats harmless) in one bulk write. Rows the
        store cannot hold (time out of range), or that ``keep(rows)`` (the int64 table: time,
        tag, values...) refuses, are dropped; returns how many were dropped."""
        width = 2 + len(self.value_names)
        tables, owners = [], []
        for name, value in records:
            magic = value[:4]
            if magic == ROWS_MAGIC:
                names, rows = _decode_rows(value, width + 1)
                tables.append(rows[:, 1:])
                owners.append(self.index_of(names, create=True)[rows[:, 0]])
            elif magic in (KEY_ROWS_MAGIC, SNAPSHOT_MAGIC):
                (n,) = struct.unpack_from("<I", value, 4) if len(value) >= 8 else (-1,)
                if len(value) != 8 + 8 * n * width:
                    raise FeatureStateError(f"corrupt state record for key {name!r}")
                tables.append(np.frombuffer(value, np.int64, n * width, 8).reshape(n, width))
                owners.append(np.repeat(self.index_of([name], create=True), n))
            else:
                raise FeatureStateError(f"unknown state record format for key {name!r}")
        if not tables:
            return 0
        idx = np.concatenate(owners)
        table = np.concatenate(tables)
        if self.base is None and len(table):
            self._set_base(table[:, 0])
        ok = self.accepts(table[:, 0])
        if keep is not None:
            ok &= keep(table)
        dropped = int(len(ok) - ok.sum())
        if dropped:
            idx, table = idx[ok], table[ok]
        self.insert(idx, table[:, 0], table[:, 1],
                    {k: table[:, 2 + j] for j, k in enumerate(self.value_names)},
                    record=False)  # fmt: skip
        return dropped

    def forget_changes(self, names: Iterable[str]) -> None:
        """Drop the unreported changes of these keys (e.g. their partition was revoked)."""
        if not self._changes:
            return
        drop = self.index_of(list(names), create=False)
        rows = np.concatenate(self._changes)
        self._changes = [rows[~np.isin(rows[:, 0], drop[drop >= 0])]]

    def restore(self, snapshots: dict[str, bytes]) -> None:
        """Replace the entries of each key with those of its snapshot (one bulk write)."""
        if not snapshots:
            return
        for name, snap in snapshots.items():
            if snap[:4] != SNAPSHOT_MAGIC:
                raise FeatureStateError(f"unknown state snapshot format for key {name!r}")
        old = self.index_of(list(snapshots), create=False)
        old = old[old >= 0]
        for run in self._runs:
            drop = np.isin(run.keys >> TIME_BITS, old)
            if drop.any():
                run.take(~drop)
        self.add_rows(snapshots.items())


def _encode_rows(names: list[str], table: np.ndarray) -> bytes:
    """:data:`ROWS_MAGIC`, key count, row count, the UTF-8 length of each key name (uint32),
    the names, zero padding to 8 bytes, then the int64 rows (local key index, time, tag,
    values...)."""
    blobs = [n.encode() for n in names]
    lengths = np.fromiter(map(len, blobs), np.uint32, len(blobs))
    head = ROWS_MAGIC + struct.pack("<II", len(names), len(table)) + lengths.tobytes()
    text = b"".join(blobs)
    pad = -(len(head) + len(text)) % 8
    return head + text + bytes(pad) + np.ascontiguousarray(table, dtype="<i8").tobytes()


def record_keys(value: bytes) -> list[str]:
    """The key names a :data:`ROWS_MAGIC` changelog record holds entries of."""
    return _decode_names(value)[0]


def _decode_names(value: bytes) -> tuple[list[str], int, int]:
    """(key names, row count, offset of the rows) of a :func:`_encode_rows` record."""
    if value[:4] != ROWS_MAGIC:
        raise FeatureStateError("not a multi-key changelog record")
    try:
        n_keys, n_rows = struct.unpack_from("<II", value, 4)
        lengths = np.frombuffer(value, np.uint32, n_keys, 12).astype(np.int64)
        ends = 12 + 4 * n_keys + np.cumsum(lengths)
        starts = ends - lengths
        names = [value[a:b].decode() for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise FeatureStateError(f"corrupt state record: {exc}") from exc
    at = int(ends[-1]) if n_keys else 12
    return names, n_rows, at + (-at % 8)


def _decode_rows(value: bytes, width: int) -> tuple[list[str], np.ndarray]:
    """(key names, int64 rows) of a :func:`_encode_rows` record; rows checked against names."""
    names, n_rows, at = _decode_names(value)
    if len(value) != at + 8 * n_rows * width:
        raise FeatureStateError("corrupt state record: its length does not match its counts")
    rows = np.frombuffer(value, "<i8", n_rows * width, at).reshape(n_rows, width)
    if len(rows) and (rows[:, 0].min() < 0 or rows[:, 0].max() >= len(names)):
        raise FeatureStateError("corrupt state record: a row names no key of the record")
    return names, rows.astype(np.int64, copy=False)


__all__ = [
    "KEY_BITS",
    "KEY_ROWS_MAGIC",
    "MIN_DELTA",
    "ROWS_MAGIC",
    "SNAPSHOT_MAGIC",
    "TIME_BITS",
    "TimeStore",
    "record_keys",
]
