"""Fuzz: the pure decoders (record codec, columnar codec, changelog and window-snapshot restore)
never let anything but their typed error out, and account for every value they are given."""

from __future__ import annotations

import contextlib
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from finscore.exceptions import FinscoreError
from finscore.features.fraud import FraudFeatures
from finscore.features.market_windows import MarketWindows
from finscore.schemas.codec import Codec
from finscore.schemas.columnar.codec import ColumnarCodec
from finscore.schemas.exceptions import DecodeError
from finscore.streams.fraud.columns import columns_from_records
from tests.fuzz import strategies as S

CONSUMED = ("transaction", "fraud_label", "market_tick", "model_update", "fraud_flag",
            "price_signal", "dead_letter")  # fmt: skip
RECORDS = {
    "transaction": S.extreme_transactions(),
    "fraud_label": S.extreme_labels(),
    "market_tick": S.extreme_ticks(),
}


def _values(schema: str) -> st.SearchStrategy[bytes | None]:
    if schema in RECORDS:
        return S.any_value(schema, RECORDS[schema])
    return st.one_of(S.mutated(schema), S.garbage(), S.json_records(schema))


def _same(a: object, b: object) -> bool:
    """Equality with NaN equal to NaN (ticks may carry NaN prices)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@given(schema=st.sampled_from(CONSUMED), data=st.data())
def test_codec_decode_raises_only_decode_error(schema: str, data: st.DataObject) -> None:
    """Codec.decode on any bytes returns a dict or raises DecodeError located at the record."""
    value = data.draw(_values(schema))
    codec = Codec(schema)
    try:
        rec = codec.decode(value, topic="t", partition=1, offset=7)  # type: ignore[arg-type]
    except DecodeError as exc:
        assert (exc.topic, exc.partition, exc.offset) == ("t", 1, 7)
        assert exc.reason
    else:
        assert isinstance(rec, dict)


@given(schema=st.sampled_from(sorted(RECORDS)), data=st.data())
def test_columnar_decode_accounts_for_every_value_and_agrees_with_codec(
    schema: str, data: st.DataObject
) -> None:
    """ColumnarCodec.decode never raises; every value is either a decoded row (equal to what
    Codec.decode makes of it) or left in ``rest`` for the per-record codec, exactly once."""
    values = data.draw(st.lists(_values(schema), max_size=40))
    batch = ColumnarCodec(schema).decode(values)
    ok = batch.ok.tolist()
    assert sorted(ok + list(batch.rest)) == list(range(len(values)))
    codec = Codec(schema)
    for j, i in enumerate(ok):
        assert _same(batch.record(j), codec.decode(values[i])), f"row {i}: {values[i]!r}"


def _changelog_seeds() -> list[tuple[str, bytes]]:
    """Real changelog records of a fraud pipeline: FSM1 rows, FST1 snapshots, FSD1 rows."""
    ff = FraudFeatures()
    txs = list(S.sim_transactions(60))
    cols = columns_from_records([None] * len(txs), txs)  # type: ignore[list-item]
    ff.transform_columns(
        cols.transaction_id, cols.event_time, cols.customer_id, cols.terminal_id, cols.cents
    )
    rows = [(f"p{p}", v) for p, v in ff.take_changes({c: 0 for c in cols.customer_id})]
    snaps = list(
        zip(cols.customer_id[:3], ff.snapshot_customers(cols.customer_id[:3]), strict=True)
    )
    fsd = [(c, b"FSD1" + s[4:]) for c, s in snaps]  # same layout, the <= 0.3 magic
    return rows + snaps + fsd


CHANGELOG = _changelog_seeds()


@st.composite
def _changelog_values(draw: st.DrawFn) -> tuple[str, bytes]:
    key, value = draw(st.sampled_from(CHANGELOG))
    data = bytearray(value)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "int", "truncate", "insert"]))
        if op == "flip" and n:
            data[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "int" and n >= 8:  # overwrite an aligned int64/uint32 with an extreme value
            i = draw(st.integers(0, n - 8))
            v = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**62, 2**63 - 1, -(2**63), -1]))
            data[i : i + 8] = int(v).to_bytes(8, "little", signed=True)
        elif op == "truncate":
            del data[draw(st.integers(0, n)) :]
        else:
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=12))
    return key, bytes(data)


@given(records=st.lists(_changelog_values(), min_size=1, max_size=4))
def test_changelog_restore_raises_only_feature_state_error(
    records: list[tuple[str, bytes]],
) -> None:
    """Restoring mutated FSM1/FSD1/FST1 records either works or raises FeatureStateError, and
    the store still scores ordinary transactions afterwards (one at a time, as the worker
    retries them)."""
    ff = FraudFeatures()
    for key, value in records:
        with contextlib.suppress(FinscoreError):
            ff.add_changes([(key, value)])
    txs = list(S.sim_transactions(20))
    cols = columns_from_records([None] * len(txs), txs)  # type: ignore[list-item]
    ok = ff.accepts_times(cols.event_time)
    take = np.flatnonzero(ok)
    sub = cols.take(take)
    x = ff.transform_columns(
        sub.transaction_id, sub.event_time, sub.customer_id, sub.terminal_id, sub.cents
    )
    assert x.shape[0] == len(take)


@given(
    value=st.one_of(
        st.binary(max_size=200),
        st.builds(lambda b, tail: b[: len(b) // 2] + tail, st.just(b""), st.binary(max_size=40)),
        st.tuples(
            st.integers(-(2**63), 2**63 - 1),
            st.integers(-(2**31), 2**31 - 1),
            st.binary(max_size=400),
        ).map(
            lambda t: (
                t[0].to_bytes(8, "little", signed=True)
                + t[1].to_bytes(4, "little", signed=True)
                + t[2]
            )
        ),
    )  # fmt: skip
)
def test_market_window_restore_raises_only_a_typed_error(value: bytes) -> None:
    """A corrupt market-window changelog record is refused with a FinscoreError (the worker
    skips it and rebuilds from the stream) and leaves other instruments' windows alone."""
    w = MarketWindows(5)
    ticks = list(S.sim_ticks(30))
    w.push(ticks)
    before = {k: w.snapshot(k) for k in {t["instrument"] for t in ticks}}
    with contextlib.suppress(FinscoreError):
        w.restore("BAD", value)
    assert {k: w.snapshot(k) for k in before} == before
