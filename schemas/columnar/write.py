"""Vectorised Avro binary writers and the assembler that lays ``n`` records out at once.

Every field of ``n`` rows becomes a *piece*: a fixed-width ``[n, w]`` matrix (doubles,
booleans, constants, and varints or strings that happen to have one length in this batch), a
matrix of varints whose rows use different lengths, or flat bytes with per-row starts and
lengths (strings). :meth:`Assembler.rows` groups the rows by layout and builds each group
with one ``hstack`` (falling back to one byte-level gather over all rows when a batch has
many distinct layouts), then slices each row's ``bytes``.
"""

from __future__ import annotations

import numpy as np

_ZZ_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_BIT_LIMITS = np.array([1 << k for k in range(64)], dtype=np.uint64)


def zigzag_varints(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Avro longs ``v`` (int64) as a ``[n, w]`` uint8 matrix of varints and their lengths."""
    v = np.asarray(v, dtype=np.int64)
    z = (v.view(np.uint64) << np.uint64(1)) ^ (v >> 63).view(np.uint64)
    lens = np.searchsorted(_ZZ_LIMITS, z, side="right") + 1
    w = int(lens.max()) if len(lens) else 1
    mat = np.empty((len(v), w), dtype=np.uint8)
    for k in range(w):
        byte = ((z >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        mat[:, k] = byte | np.where(k < lens - 1, 0x80, 0).astype(np.uint8)
    return mat, lens.astype(np.int64)


def decimal_bytes(unscaled: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decimals as fastavro writes them: (matrix [n, 8] big-endian, first byte used, lengths).

    fastavro uses ``(bit_length(|v|) + 8) // 8`` bytes of two's complement (so -128 takes two).
    """
    v = np.asarray(unscaled, dtype=np.int64)
    mag = np.abs(v).view(np.uint64)
    bits = np.searchsorted(_BIT_LIMITS, mag, side="right")
    n = ((bits + 8) // 8).astype(np.int64)
    mat = v.astype(">i8").view(np.uint8).reshape(len(v), 8)
    return mat, 8 - n, n


MAX_GROUPS = 48  # more distinct row layouts than this: one byte-level gather instead


class Assembler:
    """Pieces of ``n`` rows in output order; :meth:`rows` lays them out row after row.

    A piece is ``("fixed", mat)`` (``[n, w]`` or ``[1, w]`` for every row), ``("matrix", mat,
    first, lengths)`` (row ``i`` gets ``mat[i, first : first + lengths[i]]``) or ``("flat",
    data, starts, lengths)`` (row ``i`` gets ``data[starts[i] : starts[i] + lengths[i]]``).
    Rows are grouped by their layout (the lengths of their pieces, usually a handful of
    distinct ones per batch); each group is one ``hstack`` of column blocks, a copy of its
    bytes and one slice per row.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._pieces: list[tuple] = []

    def const(self, data: bytes) -> None:
        if data:
            self.fixed(np.frombuffer(data, dtype=np.uint8)[None, :])

    def fixed(self, mat: np.ndarray) -> None:
        """A ``[n, w]`` (or ``[1, w]``, the same for every row) uint8 matrix."""
        if mat.shape[1]:
            self._pieces.append(("fixed", mat))

    def varying(self, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
        """Row ``i`` gets ``data[starts[i] : starts[i] + lengths[i]]``."""
        self._pieces.append(("flat", data, np.asarray(starts), np.asarray(lengths)))

    def matrix(self, mat: np.ndarray, lengths: np.ndarray, first: np.ndarray | int = 0) -> None:
        """Row ``i`` gets ``mat[i, first : first + lengths[i]]`` (fixed when all agree)."""
        lo, hi = int(lengths.min(initial=0)), int(lengths.max(initial=0))
        f_lo = int(np.min(first)) if np.ndim(first) else int(first)
        f_hi = int(np.max(first)) if np.ndim(first) else int(first)
        if lo == hi and f_lo == f_hi:
            self.fixed(mat[:, f_lo : f_lo + lo])
        else:
            self._pieces.append(("matrix", mat, first, lengths))

    def varint(self, values: np.ndarray) -> None:
        mat, lens = zigzag_varints(values)
        self.matrix(mat, lens)

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        """(every row's bytes back to back as uint8, row boundaries: ``n + 1`` offsets)."""
        rows = self.rows()
        bounds = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, rows), np.int64, self.n), out=bounds[1:])
        return np.frombuffer(b"".join(rows), dtype=np.uint8), bounds

    def rows(self) -> list[bytes]:
        """Every row's bytes."""
        n, pieces = self.n, self._pieces
        if n == 0:
            return []
        var = [p[-1] for p in pieces if p[0] != "fixed"]
        if not var:
            return _split(_block(pieces, None, n))
        lens = np.stack(var, axis=1).astype(np.int64)
        key = _layout_key(lens)
        if key is None:
            return self._gather()
        uniq, inv = np.unique(key, return_inverse=True)
        if len(uniq) == 1:
            return _split(_block(pieces, None, n))
        if len(uniq) > MAX_GROUPS:
            return self._gather()
        out: list[bytes] = [b""] * n
        order = np.argsort(inv, kind="stable")
        for idx in np.split(order, np.cumsum(np.bincount(inv))[:-1]):
            for i, row in zip(idx.tolist(), _split(_block(pieces, idx, len(idx))), strict=True):
                out[i] = row
        return out

    def _gather(self) -> list[bytes]:
        """Every row through one byte-level gather (for batches with many row layouts)."""
        n, w = self.n, 0
        sources, starts, lens = [], [], []
        base = 0
        for p in self._pieces:
            if p[0] == "fixed":
                mat = np.ascontiguousarray(np.broadcast_to(p[1], (n, p[1].shape[1])))
                w = mat.shape[1]
                data, st, ln = mat.reshape(-1), np.arange(n, dtype=np.int64) * w, w
            elif p[0] == "matrix":
                mat, first, ln = np.ascontiguousarray(p[1]), p[2], p[3]
                data, st = mat.reshape(-1), np.arange(n, dtype=np.int64) * mat.shape[1] + first
            else:
                data, st, ln = p[1], p[2], p[3]
            sources.append(data)
            starts.append(np.broadcast_to(st + base, (n,)))
            lens.append(np.broadcast_to(ln, (n,)))
            base += len(data)
        src = np.concatenate(sources)
        st2, ln2 = np.stack(starts, axis=1), np.stack(lens, axis=1).astype(np.int64)
        flat_len = ln2.reshape(-1)
        out_start = np.cumsum(flat_len) - flat_len
        total = int(flat_len.sum())
        idx = np.repeat(st2.reshape(-1) - out_start, flat_len) + np.arange(total, dtype=np.int64)
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(ln2.sum(axis=1), out=bounds[1:])
        data_b = src[idx].tobytes()
        b = bounds.tolist()
        return [data_b[b[i] : b[i + 1]] for i in range(n)]


def _layout_key(lens: np.ndarray) -> np.ndarray | None:
    """One int64 per row naming its piece lengths (None if they do not fit one)."""
    if lens.shape[1] == 1:
        return lens[:, 0]
    radix = lens.max(axis=0) + 1
    if float(np.prod(radix.astype(np.float64))) >= 2.0**62:
        return None
    mult = np.cumprod(np.concatenate(([1], radix[:-1]))).astype(np.int64)
    return lens @ mult


def _block(pieces: list[tuple], idx: np.ndarray | None, m: int) -> np.ndarray:
    """The ``[m, W]`` bytes of rows ``idx`` (None: all), whose pieces all have one length."""
    r0 = 0 if idx is None else int(idx[0])
    blocks = []
    for p in pieces:
        kind = p[0]
        if kind == "fixed":
            mat = p[1]
            blocks.append(
                np.broadcast_to(mat, (m, mat.shape[1]))
                if mat.shape[0] == 1
                else (mat if idx is None else mat[idx])
            )
            continue
        length = int(p[-1][r0])
        if length == 0:
            continue
        if kind == "matrix":
            mat, first = p[1], p[2]
            f = int(first[r0]) if np.ndim(first) else int(first)
            blocks.append(mat[:, f : f + length] if idx is None else mat[idx, f : f + length])
        else:
            starts = p[2] if idx is None else p[2][idx]
            blocks.append(p[1][starts[:, None] + np.arange(length)])
    if not blocks:
        return np.zeros((m, 0), dtype=np.uint8)
    return np.ascontiguousarray(np.hstack(blocks) if len(blocks) > 1 else blocks[0])


def _split(block: np.ndarray) -> list[bytes]:
    w = block.shape[1]
    data = block.tobytes()
    return [data[i : i + w] for i in range(0, len(block) * w, w)] if w else [b""] * len(block)


def split(flat: np.ndarray, bounds: np.ndarray) -> list[bytes]:
    """Row ``i`` of an assembled buffer as its own ``bytes``."""
    data = flat.tobytes()
    b = bounds.tolist()
    return [data[b[i] : b[i + 1]] for i in range(len(b) - 1)]
