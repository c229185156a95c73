"""Codec throughput: records/s to encode and decode, single-object Avro vs JSON, and the
per-record :class:`Codec` against the :class:`ColumnarCodec` side by side.

    .venv/bin/python bench/codec_bench.py [--n 20000] [--repeat 3] [--batch 5000] [--only columnar]

First table, one row per (schema, encoding, path): ``one`` is ``encode``/``decode`` per record,
``batch`` is ``encode_many``/``decode_many``. Second table: decode of transactions and market
ticks, encode of fraud flags (no top features, the worker default) and price signals, with
``Codec`` per record vs ``ColumnarCodec`` on batches of ``--batch`` records (columns given as
a worker has them: arrays per row, scalars for model/topic fields). Best of ``--repeat`` runs;
one process, one core.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from finscore.schemas import Codec, sample
from finscore.schemas.columnar.codec import ColumnarCodec

SCALAR_FIELDS = ("model_name", "model_version", "source_topic", "threshold", "horizon",
                 "processing_time")  # fmt: skip


def best_rate(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Highest records/s over ``repeat`` runs of ``fn`` (which handles ``n`` records)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def worker_columns(codec: ColumnarCodec, records: list[dict]) -> dict:
    """Columns as a worker holds them: arrays (or lists of str) per row, scalars where constant."""
    cols: dict = {}
    for f in codec.fields:
        if f.kind == "array":
            cols[f.name] = []
        elif f.name in SCALAR_FIELDS:
            cols[f.name] = records[0][f.name]
        elif f.kind in ("string", "enum"):
            cols[f.name] = [r[f.name] for r in records]
        else:
            cols[f.name] = np.array([r[f.name] for r in records])
    return cols


def columnar(n: int, repeat: int, batch: int) -> None:
    """Per-record Codec vs ColumnarCodec, side by side (records/s)."""
    print(f"{'schema':<13} {'op':<7} {'Codec/s':>12} {'Columnar/s':>12} {'ratio':>7}")
    for name in ("transaction", "market_tick"):
        codec, cc = Codec(name), ColumnarCodec(name)
        blobs = [codec.encode(sample(name, i)) for i in range(n)]
        chunks = [blobs[i : i + batch] for i in range(0, n, batch)]
        one = best_rate(lambda: [codec.decode(b) for b in blobs], n, repeat)  # noqa: B023
        col = best_rate(lambda: [cc.decode(c) for c in chunks], n, repeat)  # noqa: B023
        print(f"{name:<13} {'decode':<7} {one:>12,.0f} {col:>12,.0f} {col / one:>6.1f}x")
    for name in ("fraud_flag", "price_signal"):
        codec, cc = Codec(name), ColumnarCodec(name)
        records = [dict(sample(name, i), top_features=[]) if name == "fraud_flag"
                   else sample(name, i) for i in range(n)]  # fmt: skip
        for r in records:  # what a worker holds as one value per batch
            r.update({k: records[0][k] for k in SCALAR_FIELDS if k in r})
        parts = [records[i : i + batch] for i in range(0, n, batch)]
        cols = [(len(p), worker_columns(cc, p)) for p in parts]
        assert cc.encode(*cols[0]) == [codec.encode(r) for r in parts[0]]
        one = best_rate(lambda: [codec.encode(r) for r in records], n, repeat)  # noqa: B023
        col = best_rate(lambda: [cc.encode(k, c) for k, c in cols], n, repeat)  # noqa: B023
        print(f"{name:<13} {'encode':<7} {one:>12,.0f} {col:>12,.0f} {col / one:>6.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="records per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    ap.add_argument("--batch", type=int, default=5_000, help="columnar batch size")
    ap.add_argument("--only", choices=["columnar"], help="skip the encodings table")
    args = ap.parse_args()
    if args.only != "columnar":
        encodings(args.n, args.repeat)
        print()
    columnar(args.n, args.repeat, args.batch)


def encodings(n: int, repeat: int) -> None:
    """The encodings table: per-record and batch paths of Codec, Avro and JSON."""
    args = argparse.Namespace(n=n, repeat=repeat)
    print(
        f"{'schema':<12} {'encoding':<8} {'path':<6} {'bytes':>6} {'encode/s':>12} {'decode/s':>12}"
    )
    for name in ("transaction", "market_tick"):
        codec = Codec(name)
        records = [sample(name, i) for i in range(args.n)]
        for encoding in ("avro", "json"):
            blobs = codec.encode_many(records, encoding)
            size = sum(map(len, blobs)) / len(blobs)
            rows = {
                "one": (
                    lambda: [codec.encode(r, encoding) for r in records],  # noqa: B023
                    lambda: [codec.decode(b) for b in blobs],  # noqa: B023
                ),
                "batch": (
                    lambda: codec.encode_many(records, encoding),  # noqa: B023
                    lambda: codec.decode_many(blobs),  # noqa: B023
                ),
            }
            for path, (enc, dec) in rows.items():
                e = best_rate(enc, args.n, args.repeat)
                d = best_rate(dec, args.n, args.repeat)
                print(f"{name:<12} {encoding:<8} {path:<6} {size:>6.0f} {e:>12,.0f} {d:>12,.0f}")


if __name__ == "__main__":
    main()
