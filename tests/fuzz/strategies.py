"""Hypothesis strategies for the fuzz suite: structurally valid records with extreme field values,
hand-built JSON records with wrong types, and byte-level mutations of valid encodings.

Everything here is deterministic given hypothesis' choices (no global random state), so a
failing example shrinks and replays. The valid seeds come from the project's own simulators.
"""

from __future__ import annotations

import itertools
import json
import zlib
from decimal import Decimal
from functools import cache
from typing import Any

from hypothesis import strategies as st

from finscore.app.console.produce import tick_events, transaction_events
from finscore.schemas import sample
from finscore.schemas.codec import Codec
from finscore.schemas.exceptions import EncodeError
from finscore.streams.transport import Message

__all__ = [
    "BASE_MS",
    "EXTREME_MS",
    "FAR_MS",
    "JSON_JUNK",
    "NOW_MS",
    "POISON_MS",
    "bytes_of",
    "extreme_labels",
    "extreme_ticks",
    "extreme_transactions",
    "garbage",
    "json_records",
    "messages",
    "mutated",
    "sim_labels",
    "sim_ticks",
    "sim_transactions",
]

YEAR_1_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
YEAR_2200_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z
DAY_MS = 86_400_000


@cache
def sim_transactions(n: int = 400) -> tuple[dict, ...]:
    """The first ``n`` simulated transactions (seed 5): realistic, time-ordered, 2018."""
    out: list[dict] = []
    for _, _, schema, rec in transaction_events("", seed=5, days=30):
        if schema == "transaction" and isinstance(rec, dict):
            out.append(rec)
            if len(out) == n:
                break
    return tuple(out)


@cache
def sim_labels(n: int = 200) -> tuple[dict, ...]:
    """The first ``n`` simulated fraud labels (seed 5)."""
    return tuple(
        itertools.islice(
            (
                r
                for _, _, s, r in transaction_events("", seed=5, days=30)
                if s == "fraud_label" and isinstance(r, dict)
            ),
            n,
        )
    )


@cache
def sim_ticks(n: int = 300) -> tuple[dict, ...]:
    """The first ``n`` simulated order-book ticks (seed 4)."""
    return tuple(
        r for _, _, _, r in itertools.islice(tick_events("", seed=4), n) if isinstance(r, dict)
    )


BASE_MS = sim_transactions()[0]["event_time"]  # the first simulated event time
NOW_MS = sim_transactions()[-1]["event_time"] + 60_000  # the pipelines' clock: just after them
# Event times no stream should accept: year 1, before 1970, the epoch, 2200, the long limits,
# and a year either side of the stream.
FAR_MS = (
    YEAR_1_MS,
    -1,
    0,
    1,
    86_400_000,
    YEAR_2200_MS,
    2**62,
    -(2**62),
    2**63 - 1,
    -(2**63),
    NOW_MS + 400 * DAY_MS,
    BASE_MS - 400 * DAY_MS,
)
# The far times no bound may accept (before 2000, or after the clock): FAR_MS but the last one,
# which is a plausible replay of last year's history.
POISON_MS = FAR_MS[:-1]
EXTREME_MS = st.one_of(
    st.sampled_from(FAR_MS),
    st.integers(BASE_MS - 2 * DAY_MS, NOW_MS + 2 * DAY_MS),
    st.integers(-(2**63), 2**63 - 1),
)
AMOUNTS = st.one_of(
    st.sampled_from(
        [
            Decimal("0"),
            Decimal("0.01"),
            Decimal("-0.01"),
            Decimal("-99999"),
            Decimal("9999999999.99"),
            Decimal("-9999999999.99"),
            Decimal("1e9"),
        ]
    ),
    st.decimals(
        min_value=Decimal("-9999999999.99"),
        max_value=Decimal("9999999999.99"),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    ),  # fmt: skip
)
IDS = st.one_of(
    st.just(""),
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40),
    st.sampled_from(["\x00", "\u202e", "👾" * 3, "a" * 10_000]),
)


@st.composite
def extreme_transactions(draw: st.DrawFn) -> dict:
    """A transaction that fits the schema, with any times, amounts, ids and currencies."""
    base = draw(st.sampled_from(sim_transactions()))
    rec = dict(base)
    for name, strat in (
        ("transaction_id", IDS),
        ("event_time", EXTREME_MS),
        ("customer_id", IDS),
        ("terminal_id", IDS),
        ("amount", AMOUNTS),
        ("currency", st.sampled_from(["EUR", "", "€€€", "x" * 300])),
    ):
        if draw(st.booleans()):
            rec[name] = draw(strat)
    return rec


@st.composite
def extreme_labels(draw: st.DrawFn) -> dict:
    """A fraud label that fits the schema, with any times, amounts and ids."""
    rec = dict(draw(st.sampled_from(sim_labels())))
    for name, strat in (
        ("transaction_id", IDS),
        ("customer_id", IDS),
        ("terminal_id", IDS),
        ("tx_time", EXTREME_MS),
        ("label_time", EXTREME_MS),
        ("amount", AMOUNTS),
        ("is_fraud", st.booleans()),
        ("scenario", st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))),
    ):
        if draw(st.booleans()):
            rec[name] = draw(strat)
    return rec


FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e300, float("nan"), float("inf"), -float("inf")]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SIZES = st.one_of(st.sampled_from([0, -1, 2**63 - 1, -(2**63)]), st.integers(-(2**63), 2**63 - 1))


@st.composite
def extreme_ticks(draw: st.DrawFn) -> dict:
    """A market tick that fits the schema: any prices (NaN, inf, negative, crossed), sizes,
    level counts (0 to 15), sequences and times (microseconds)."""
    rec = dict(draw(st.sampled_from(sim_ticks())))
    level = st.fixed_dictionaries({"price": FLOATS, "size": SIZES})
    if draw(st.booleans()):
        rec["bids"] = draw(st.lists(level, max_size=15))
    if draw(st.booleans()):
        rec["asks"] = draw(st.lists(level, max_size=15))
    if draw(st.booleans()):
        rec["event_time"] = draw(
            st.one_of(
                st.sampled_from([t * 1000 for t in FAR_MS[:6]]), st.integers(-(2**63), 2**63 - 1)
            )
        )
    if draw(st.booleans()):
        rec["sequence"] = draw(
            st.one_of(st.sampled_from([-1, 0, 2**63 - 1]), st.integers(-(2**63), 2**63 - 1))
        )
    if draw(st.booleans()):
        rec["instrument"] = draw(IDS)
    return rec


def encoded(codec: Codec, rec: dict, encoding: str) -> bytes | None:
    """``rec`` encoded, or None when the encoder refuses it (a producer would never send it)."""
    try:
        return codec.encode(rec, encoding)
    except (EncodeError, ValueError, OverflowError):
        # JSON timestamps outside years 1..9999 raise ValueError (encode side, see the findings).
        return None


def bytes_of(schema: str, records: st.SearchStrategy[dict]) -> st.SearchStrategy[bytes]:
    """Encodings (Avro single-object or JSON) of generated records the encoder accepts."""
    codec = Codec(schema)
    return (
        st.tuples(records, st.sampled_from(["avro", "avro", "json"]))
        .map(lambda re: encoded(codec, *re))
        .filter(lambda b: b is not None)  # type: ignore[return-value]
    )  # type: ignore[return-value]


JSON_JUNK = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(
            [
                "NaN",
                "Infinity",
                "-Infinity",
                "1e400",
                "-0",
                "",
                "0x10",
                "1,5",
                "2200-01-01T00:00:00Z",
                "0001-01-01T00:00:00Z",
                "9999999999999.999",
            ]
        ),
        st.text(max_size=8),
    ),  # fmt: skip
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def json_records(draw: st.DrawFn, schema: str) -> bytes:
    """A JSON object with the schema's field names (some missing, some extra) holding any JSON
    values: NaN-like strings, huge numbers, nested junk, wrong types."""
    sample = {
        "transaction": sim_transactions()[0],
        "fraud_label": sim_labels()[0],
        "market_tick": sim_ticks()[0],
    }.get(schema)
    base: dict[str, Any] = {}
    if sample is not None:
        base = json.loads(Codec(schema).encode(sample, "json"))
    for name in list(base):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            base[name] = draw(JSON_JUNK)
        elif choice == 1:
            del base[name]
    if draw(st.booleans()):
        base[draw(st.text(max_size=6))] = draw(JSON_JUNK)
    return json.dumps(base, allow_nan=True).encode()


def _seeds(schema: str) -> list[bytes]:
    codec = Codec(schema)
    records = {
        "transaction": sim_transactions()[:20],
        "fraud_label": sim_labels()[:20],
        "market_tick": sim_ticks()[:20],
    }.get(schema) or [sample(schema)]
    return [codec.encode(r, enc) for r in records for enc in ("avro", "json")]


INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC3, ord("{"), ord('"')]


@st.composite
def mutated(draw: st.DrawFn, schema: str) -> bytes:
    """A valid encoding (Avro or JSON) of a simulated record after 1-5 byte-level mutations:
    bit flips, interesting bytes, inserted/deleted/duplicated spans, truncation."""
    data = bytearray(draw(st.sampled_from(_seeds(schema))))
    for _ in range(draw(st.integers(1, 5))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        if op == "flip" and n:
            data[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[draw(st.integers(0, n - 1))] = draw(st.sampled_from(INTERESTING))
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            del data[i : draw(st.integers(i + 1, min(n, i + 16)))]
        elif op == "truncate":
            del data[draw(st.integers(0, n)) :]
        elif op == "dup" and n:
            i = draw(st.integers(0, n - 1))
            j = draw(st.integers(i, min(n, i + 32)))
            data[j:j] = data[i:j]
    return bytes(data)


def garbage() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, including the single-object magic followed by junk."""
    return st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda b: b"\xc3\x01" + b),
        st.sampled_from([b"", b"\x00", b"{}", b"[]", b"null", b"123", b'"x"', b"\xc3\x01"]),
    )


def any_value(schema: str, records: st.SearchStrategy[dict]) -> st.SearchStrategy[bytes | None]:
    """Anything a topic can hold: valid-shaped extreme records, JSON junk, mutations, garbage,
    and tombstones (None)."""
    return st.one_of(
        bytes_of(schema, records),
        json_records(schema),
        mutated(schema),
        garbage(),
        st.none(),
    )


def messages(topic: str, values: list[bytes | None], first_offset: int = 0) -> list[Message]:
    """Messages on 3 partitions with distinct offsets and timestamps (the timestamp of an output
    is its input's, so outputs can be matched to inputs)."""
    out = []
    for i, v in enumerate(values):
        off = first_offset + i
        key = b"k%d" % off
        out.append(Message(topic, zlib.crc32(key) % 3, off, key, v, 1_000_000 + off))
    return out
