"""Vectorised Avro binary readers: every row of a batch advances through its body at once.

A :class:`Reader` holds one padded ``uint8`` buffer (all bodies joined), a position and an end
per row, and a ``bad`` mask. Each read takes ``rows`` (``None`` = every row, else an int64
index array), reads one value per row, advances those rows and marks a row bad when the value
cannot be what the Python decoder would accept without question: a varint longer than 10
bytes (or past 64 bits), a read past the row's end, a negative length, invalid booleans and
enum indices, decimals over 8 bytes or past their precision. Bad rows are clamped to their end
so later reads stay inside the buffer; the caller sends them through the per-record codec.
"""

from __future__ import annotations

import numpy as np

PAD = 16  # zero bytes after the last body: a 10-byte gather from any position stays inside
_AR10 = np.arange(10)
_SHIFTS = (7 * _AR10).astype(np.uint64)
_ZERO, _ONE, _TWO, _FOUR = (np.uint64(k) for k in (0, 1, 2, 4))
_HIGH = np.uint64(0x8080808080808080)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_M1, _K1 = np.uint64(0x7F007F007F007F00), np.uint64(0x007F007F007F007F)
_M2, _K2 = np.uint64(0x3FFF00003FFF0000), np.uint64(0x00003FFF00003FFF)
_M3, _K3 = np.uint64(0x0FFFFFFF00000000), np.uint64(0x000000000FFFFFFF)


def _windows(buf: np.ndarray, w: int) -> np.ndarray:
    """``[len(buf) - w + 1, w]``: the ``w`` bytes starting at every byte (a view)."""
    return np.ndarray((len(buf) - w + 1, w), np.uint8, buf, strides=(1, 1))


def _scatter_mask(m: int, where: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    if not values.any():
        return None
    out = np.zeros(m, dtype=bool)
    out[where] = values
    return out


class Reader:
    """Positions of ``m`` rows in ``buf`` (``buf`` ends with :data:`PAD` zero bytes)."""

    def __init__(self, buf: np.ndarray, pos: np.ndarray, end: np.ndarray) -> None:
        self.buf = buf
        self.pos = pos.astype(np.int64, copy=True)
        self.end = end.astype(np.int64, copy=False)
        self.bad = np.zeros(len(pos), dtype=bool)
        # one (unaligned) 8-byte value starting at every byte of the buffer
        self._u64 = np.ndarray((len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
        self._f64 = np.ndarray((len(buf) - 7,), dtype="<f8", buffer=buf, strides=(1,))

    def _at(self, rows: np.ndarray | None) -> np.ndarray:
        return self.pos if rows is None else self.pos[rows]

    def _advance(self, rows: np.ndarray | None, new: np.ndarray, bad: np.ndarray | None) -> None:
        """Move ``rows`` to ``new``; rows past their end or flagged ``bad`` are clamped to it."""
        end = self.end if rows is None else self.end[rows]
        over = new > end
        if bad is not None:
            over |= bad
        if over.any():
            new = np.where(over, end, new)
            if rows is None:
                self.bad |= over
            else:
                self.bad[rows[over]] = True
        if rows is None:
            self.pos = new
        else:
            self.pos[rows] = new

    def long(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Zig-zag varints (Avro int and long) as int64.

        Varints of up to 8 bytes (|value| < 2**55) are read as one unaligned uint64 per row
        whose 7-bit groups are packed with three shift-and-mask steps; longer ones fall back to
        a 10-byte gather.
        """
        p = self._at(rows)
        x = self._u64[p]
        term = ~x & _HIGH
        low = term & (_ZERO - term)  # the lowest high bit that is clear: the last byte
        keep = (low << _ONE) - _ONE
        y = x & keep & _LOW7
        n = np.bitwise_count(keep) >> 3  # uint8 byte counts
        widest = int(n.max(initial=0))
        if widest > 1:
            y = ((y & _M1) >> _ONE) | (y & _K1)
        if widest > 2:
            y = ((y & _M2) >> _TWO) | (y & _K2)
        if widest > 4:
            y = ((y & _M3) >> _FOUR) | (y & _K3)
        v = (y >> _ONE) ^ (_ZERO - (y & _ONE))
        out = v.view(np.int64)
        if term.all():
            self._advance(rows, p + n, None)
            return out
        long_ones = np.flatnonzero(term == 0)
        out[long_ones], n[long_ones], bad = self._long_slow(p[long_ones])
        self._advance(rows, p + n, _scatter_mask(len(p), long_ones, bad))
        return out

    def _long_slow(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, byte lengths, bad) of varints read with a 10-byte gather per row."""
        g = _windows(self.buf, 10)[p]
        term = g < 0x80
        n = term.argmax(axis=1)
        bad = ~term[np.arange(len(p)), n] | ((n == 9) & (g[:, 9] > 1))
        keep = n[:, None] >= _AR10
        z = np.where(keep, (g & 0x7F).astype(np.uint64) << _SHIFTS, np.uint64(0)).sum(
            axis=1, dtype=np.uint64
        )
        v = (z >> _ONE) ^ (_ZERO - (z & _ONE))
        return v.view(np.int64), n + 1, bad

    def double(self, rows: np.ndarray | None = None) -> np.ndarray:
        p = self._at(rows)
        v = self._f64[p]
        self._advance(rows, p + 8, None)
        return v

    def float(self, rows: np.ndarray | None = None) -> np.ndarray:
        p = self._at(rows)
        v = np.ndarray((len(self.buf) - 3,), "<f4", self.buf, strides=(1,))[p].astype(np.float64)
        self._advance(rows, p + 4, None)
        return v

    def boolean(self, rows: np.ndarray | None = None) -> np.ndarray:
        p = self._at(rows)
        b = self.buf[p]
        self._advance(rows, p + 1, b > 1)
        return b == 1

    def enum(self, n_symbols: int, rows: np.ndarray | None = None) -> np.ndarray:
        idx = self.long(rows)
        bad = (idx < 0) | (idx >= n_symbols)
        if bad.any():
            self._mark(rows, bad)
            idx = np.where(bad, 0, idx)
        return idx

    def span(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Strings and bytes: (start, length) in ``buf`` of each row's payload."""
        n = self.long(rows)
        start = self._at(rows)
        neg = n < 0
        n = np.where(neg, 0, n)
        self._advance(rows, start + n, neg if neg.any() else None)
        return start, n

    def decimal(self, precision: int, rows: np.ndarray | None = None) -> np.ndarray:
        """A decimal's unscaled value (big-endian two's complement, at most 8 bytes) as int64."""
        start, n = self.span(rows)
        bad = n > 8
        n = np.minimum(n, 8)
        raw = np.ndarray((len(self.buf) - 7,), ">i8", self.buf, strides=(1,))[start].astype(
            np.int64
        )
        shift = (8 * (8 - n)).astype(np.int64)
        v = np.where(n > 0, raw >> np.minimum(shift, 63), 0)  # arithmetic shift sign-extends
        bad |= np.abs(v) >= 10**precision  # fastavro would round it to the precision
        if bad.any():
            self._mark(rows, bad)
        return v

    def _mark(self, rows: np.ndarray | None, bad: np.ndarray) -> None:
        if rows is None:
            self.bad |= bad
        else:
            self.bad[rows[bad]] = True


def join(values: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """All ``values`` and :data:`PAD` zero bytes in one bytes object.

    Returns (joined bytes, the same as a read-only uint8 array, start and end of each value).
    """
    lens = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    ends = np.cumsum(lens)
    starts = ends - lens
    joined = b"".join([*values, bytes(PAD)])
    return joined, np.frombuffer(joined, dtype=np.uint8), starts, ends
