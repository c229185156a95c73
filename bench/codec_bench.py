"""Codec throughput: records/s to encode and decode, single-object Avro vs JSON.

    .venv/bin/python bench/codec_bench.py [--n 20000] [--repeat 3]

Prints one table row per (schema, encoding, path): ``one`` is ``encode``/``decode`` per record,
``batch`` is ``encode_many``/``decode_many``. Best of ``--repeat`` runs; one process, one core.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from finscore.schemas import Codec, sample


def best_rate(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Highest records/s over ``repeat`` runs of ``fn`` (which handles ``n`` records)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="records per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = ap.parse_args()
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
