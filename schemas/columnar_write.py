"""Vectorised Avro binary writers and the assembler that lays ``n`` records out at once.

Every field of ``n`` rows becomes a *piece* per row: bytes at (start, length) in a source array.
Fixed-width pieces (doubles, booleans, constants, varints or strings that happen to have one
length in this batch) are kept as ``[n, w]`` matrices and neighbouring ones are merged with
one ``hstack``; a variable-width piece (varints, strings) is a flat source with per-row starts
and lengths. :meth:`Assembler.build` copies all pieces of all rows into one buffer with a
single gather (or none when every piece is fixed-width) and returns it with row boundaries.
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


class Assembler:
    """Pieces of ``n`` rows in output order; :meth:`build` lays them out row after row."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._fixed: list[np.ndarray] = []  # the current run of fixed-width matrices
        self._pieces: list[tuple[np.ndarray, np.ndarray | int, np.ndarray | int]] = []

    def const(self, data: bytes) -> None:
        if data:
            self._fixed.append(np.frombuffer(data, dtype=np.uint8)[None, :])

    def fixed(self, mat: np.ndarray) -> None:
        """A ``[n, w]`` (or ``[1, w]``, the same for every row) uint8 matrix."""
        if mat.shape[1]:
            self._fixed.append(mat)

    def varying(self, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
        """Row ``i`` gets ``data[starts[i] : starts[i] + lengths[i]]``."""
        self._flush()
        self._pieces.append((data, starts, lengths))

    def matrix(self, mat: np.ndarray, lengths: np.ndarray, first: np.ndarray | int = 0) -> None:
        """Row ``i`` gets ``mat[i, first : first + lengths[i]]`` (fixed when all agree)."""
        lo, hi = int(lengths.min(initial=0)), int(lengths.max(initial=0))
        f_lo = int(np.min(first)) if np.ndim(first) else int(first)
        f_hi = int(np.max(first)) if np.ndim(first) else int(first)
        if lo == hi and f_lo == f_hi:
            self.fixed(mat[:, f_lo : f_lo + lo])
            return
        w = mat.shape[1]
        self.varying(mat.ravel(), np.arange(self.n, dtype=np.int64) * w + first, lengths)

    def varint(self, values: np.ndarray) -> None:
        mat, lens = zigzag_varints(values)
        self.matrix(mat, lens)

    def _flush(self) -> None:
        if not self._fixed:
            return
        mats = [np.broadcast_to(m, (self.n, m.shape[1])) for m in self._fixed]
        mat = np.ascontiguousarray(np.hstack(mats)) if len(mats) > 1 else mats[0]
        mat = np.ascontiguousarray(mat)
        w = mat.shape[1]
        self._pieces.append((mat.ravel(), np.arange(self.n, dtype=np.int64) * w, w))
        self._fixed = []

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        """(every row's bytes back to back as uint8, row boundaries: ``n + 1`` offsets)."""
        n = self.n
        if not self._pieces and self._fixed:  # all fixed: the merged matrix is the output
            mats = [np.broadcast_to(m, (n, m.shape[1])) for m in self._fixed]
            mat = np.ascontiguousarray(np.hstack(mats))
            w = mat.shape[1]
            return mat.ravel(), np.arange(n + 1, dtype=np.int64) * w
        self._flush()
        if not self._pieces:
            return np.zeros(0, np.uint8), np.zeros(n + 1, np.int64)
        sources = [p[0] for p in self._pieces]
        base = np.cumsum([0] + [len(s) for s in sources[:-1]])
        src = np.concatenate(sources) if len(sources) > 1 else sources[0]
        k = len(self._pieces)
        starts = np.empty((n, k), dtype=np.int64)
        lens = np.empty((n, k), dtype=np.int64)
        for j, (_, st, ln) in enumerate(self._pieces):
            starts[:, j] = st + base[j]
            lens[:, j] = ln
        flat_len = lens.ravel()
        out_start = np.cumsum(flat_len) - flat_len
        total = int(flat_len.sum())
        idx = np.repeat(starts.ravel() - out_start, flat_len) + np.arange(total, dtype=np.int64)
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens.sum(axis=1), out=bounds[1:])
        return src[idx], bounds


def split(flat: np.ndarray, bounds: np.ndarray) -> list[bytes]:
    """Row ``i`` of an assembled buffer as its own ``bytes``."""
    data = flat.tobytes()
    b = bounds.tolist()
    return [data[b[i] : b[i + 1]] for i in range(len(b) - 1)]
