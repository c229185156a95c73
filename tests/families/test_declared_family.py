"""A family nobody hand-coded (payments with a channel enum, a merchant key, chargebacks that
come early, on time or late), declared in TOML here: offline == online in batches with random
boundaries == a slow per-row reference written here; replays count once; out-of-order events
in a batch get what one event at a time gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finscore.families import DeclaredFeatures, FamilySpec, featurize, load_family

DAY = 86_400_000
HOUR = 3_600_000
DELAY = 2 * DAY
START = 1_717_200_000_000  # 2024-06-01
CHANNELS = ("POS", "ONLINE", "ATM")

PAYMENT = {
    "type": "record", "name": "Payment", "namespace": "test.v1",
    "fields": [
        {"name": "payment_id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "account", "type": "string"},
        {"name": "merchant", "type": "string"},
        {"name": "channel", "type": {"type": "enum", "name": "Channel", "symbols": list(CHANNELS)}},
        {"name": "amount", "type": "double"},
        {"name": "items", "type": "int"},
    ],
}  # fmt: skip
CHARGEBACK = {
    "type": "record", "name": "Chargeback", "namespace": "test.v1",
    "fields": [
        {"name": "payment_id", "type": "string"},
        {"name": "account", "type": "string"},
        {"name": "merchant", "type": "string"},
        {"name": "ts", "type": "long"},
        {"name": "reported_at", "type": "long"},
        {"name": "is_chargeback", "type": "boolean"},
    ],
}  # fmt: skip
FAMILY = """
name = "payments"

[input]
topic = "payments"
schema = "payment.avsc"
id = "payment_id"
key = "account"
time = "ts"
decimals = { amount = 2 }

[label]
topic = "chargebacks"
schema = "chargeback.avsc"
id = "payment_id"
field = "is_chargeback"
time = "ts"
label_time = "reported_at"
delay_days = 2

[output]
topic = "payment-scores"
kind = "probability"

[[features]]
name = "AMOUNT"
kind = "raw"
field = "amount"

[[features]]
name = "LOG_AMOUNT"
kind = "raw"
field = "amount"
transform = "log1p"

[[features]]
name = "HOUR"
kind = "time_flag"
flag = "hour"

[[features]]
name = "WEEKEND"
kind = "time_flag"
flag = "weekend"

[[features]]
name = "CHANNEL"
kind = "category"
field = "channel"
values = ["ONLINE", "ATM"]

[[features]]
name = "ACCOUNT_N_2D"
kind = "window"
key = "account"
days = 2
stat = "count"

[[features]]
name = "ACCOUNT_AMOUNT_Z_5D"
kind = "window"
key = "account"
days = 5
stat = "zscore"
field = "amount"

[[features]]
name = "MERCHANT_AVG_ITEMS_3D"
kind = "window"
key = "merchant"
days = 3
stat = "mean"
field = "items"

[[features]]
name = "MERCHANT_SUM_AMOUNT_12H"
kind = "window"
key = "merchant"
days = 0.5
stat = "sum"
field = "amount"

[[features]]
name = "MERCHANT_AMOUNT_RATIO_3D"
kind = "window"
key = "merchant"
days = 3
stat = "ratio"
field = "amount"

[[features]]
name = "MERCHANT_CB_N_4D"
kind = "label_risk"
key = "merchant"
days = 4
stat = "count"

[[features]]
name = "MERCHANT_CB_SHARE_4D"
kind = "label_risk"
key = "merchant"
days = 4
stat = "share"

[[features]]
name = "ACCOUNT_CB_1D"
kind = "label_risk"
key = "account"
days = 1
stat = "sum"
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:  # noqa: ANN001
    """A folder with the family's TOML (payments.toml) and its two schemas."""
    folder = tmp_path_factory.mktemp("payments")
    (folder / "payment.avsc").write_text(json.dumps(PAYMENT))
    (folder / "chargeback.avsc").write_text(json.dumps(CHARGEBACK))
    (folder / "payments.toml").write_text(FAMILY)
    return Path(folder)


@pytest.fixture(scope="module")
def spec(folder: Path) -> FamilySpec:
    return load_family(folder / "payments.toml")


def payments(n: int = 3000, days: int = 14, seed: int = 0, *, ordered: bool = True) -> dict:
    """Random payments (a few repeated times per account); labels sorted by event time unless
    ``ordered`` is False (then shuffled in blocks of 50: out-of-order arrivals)."""
    rng = np.random.default_rng(seed)
    ts = START + rng.integers(0, days * DAY, n)
    ts[rng.random(n) < 0.05] = ts[0]  # some simultaneous events
    ts = np.sort(ts)
    if not ordered:
        for a in range(0, n, 50):
            ts[a : a + 50] = rng.permutation(ts[a : a + 50])
    return {
        "payment_id": [f"p{i}" for i in range(n)],
        "ts": ts,
        "account": [f"a{k}" for k in rng.integers(0, 40, n)],
        "merchant": [f"m{k}" for k in rng.integers(0, 12, n)],
        "channel": rng.integers(0, 3, n),  # enum indices, as the columnar decoder gives them
        "amount": np.round(rng.lognormal(3, 1, n), 2),
        "items": rng.integers(1, 6, n),
    }


def chargebacks(p: dict, seed: int = 1) -> dict:
    """Every payment's outcome: most known exactly DELAY later, some early, some late."""
    rng = np.random.default_rng(seed)
    n = len(p["ts"])
    extra = np.where(rng.random(n) < 0.7, 0, rng.integers(-DAY, 2 * DAY, n))
    return {
        "payment_id": p["payment_id"],
        "account": p["account"],
        "merchant": p["merchant"],
        "ts": p["ts"],
        "reported_at": p["ts"] + DELAY + extra,
        "is_chargeback": rng.random(n) < 0.2,
    }


def reference(p: dict, labels: dict) -> np.ndarray:
    """The family's definitions the slow way: row i sees the events that arrived up to it
    (itself included) of its key in (t − w, t], and the labels of its key with an event time
    in (t − delay − w, t − delay] and a label time <= t; the engine's float arithmetic."""
    n = len(p["ts"])
    out = np.zeros((n, 14), dtype=np.float32)
    t, acct, merch = p["ts"], np.array(p["account"]), np.array(p["merchant"])
    cents = np.round(p["amount"] * 100).astype(np.int64)
    l_t, l_known = labels["ts"], labels["reported_at"]
    l_acct, l_merch = np.array(labels["account"]), np.array(labels["merchant"])
    l_cb = labels["is_chargeback"].astype(np.int64)
    for i in range(n):
        ti = int(t[i])
        row: list[float] = [float(p["amount"][i]), float(np.log1p(p["amount"][i])),
                            float((ti % DAY) // HOUR), float((ti // DAY + 3) % 7 >= 5),
                            float(p["channel"][i] == 1), float(p["channel"][i] == 2)]  # fmt: skip

        def window(keys: np.ndarray, key: str, w: int, i: int = i, ti: int = ti) -> np.ndarray:
            upto = np.arange(n) <= i
            return upto & (keys == key) & (t > ti - w) & (t <= ti)

        m = window(acct, acct[i], 2 * DAY)
        row.append(float(m.sum()))
        m = window(acct, acct[i], 5 * DAY)
        k, s1, s2 = float(m.sum()), float(cents[m].sum()), float((cents[m] ** 2).sum())
        mean = s1 / k
        std = np.sqrt(max((s2 * k - s1 * s1) / (k * k), 0)) if k > 1 else 0.0
        row.append((float(cents[i]) - mean) / std if std > 1e-7 else 0.0)
        m = window(merch, merch[i], 3 * DAY)
        row.append(float(p["items"][m].sum()) / float(m.sum()))
        m12 = window(merch, merch[i], DAY // 2)
        row.append(float(cents[m12].sum()) / 100)
        mean = float(cents[m].sum()) / float(m.sum())
        row.append(float(cents[i]) / mean if mean > 0 else 1.0)
        for keys, key, w, stats in ((l_merch, merch[i], 4 * DAY, ("count", "share")),
                                    (l_acct, acct[i], 1 * DAY, ("sum",))):  # fmt: skip
            known = ((keys == key) & (l_t > ti - DELAY - w) & (l_t <= ti - DELAY)
                     & (l_known <= ti))  # fmt: skip
            c, pos = float(known.sum()), float(l_cb[known].sum())
            row += [{"count": c, "sum": pos, "share": pos / c if c else 0.0}[s] for s in stats]
        out[i] = row
    return out


def online(spec: FamilySpec, p: dict, labels: dict, seed: int) -> np.ndarray:
    """A worker: events and labels merged by time (labels first), cut into batches at random
    points; each batch's labels applied, then its events transformed; evicting as it goes."""
    rng = np.random.default_rng(seed)
    n = len(p["ts"])
    when = np.r_[labels["reported_at"], p["ts"]]
    is_label = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    order = np.lexsort((~is_label, when))
    rows = np.r_[np.arange(n), np.arange(n)][order]
    is_label = is_label[order]
    cuts = np.unique(np.r_[0, rng.integers(0, 2 * n, 40), rng.integers(0, 2 * n, 5) // 50, 2 * n])
    engine = DeclaredFeatures(spec)
    out = np.full((n, len(spec.feature_names)), np.nan, dtype=np.float32)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        labs, txs = rows[a:b][is_label[a:b]], rows[a:b][~is_label[a:b]]
        engine.apply_label_columns(_rows(labels, labs))
        if len(txs):
            out[txs] = engine.transform_columns(_rows(p, txs))
        engine.evict()
    return out


def _rows(cols: dict, rows: np.ndarray) -> dict:
    return {k: [v[i] for i in rows.tolist()] if isinstance(v, list) else v[rows]
            for k, v in cols.items()}  # fmt: skip


def test_offline_equals_online_equals_the_reference(spec) -> None:  # noqa: ANN001
    p = payments()
    labels = chargebacks(p)
    want = reference(p, labels)
    assert want[:, 13].any() and want[:, 11].any() and want[:, 7].any()  # all exercised
    np.testing.assert_array_equal(featurize(spec, p, labels), want)
    for seed in (1, 2, 3):
        np.testing.assert_array_equal(online(spec, p, labels, seed), want)


def test_features_are_named_in_declaration_order(spec) -> None:  # noqa: ANN001
    assert spec.feature_names[:8] == ("AMOUNT", "LOG_AMOUNT", "HOUR", "WEEKEND",
                                      "CHANNEL_ONLINE", "CHANNEL_ATM", "ACCOUNT_N_2D",
                                      "ACCOUNT_AMOUNT_Z_5D")  # fmt: skip
    assert spec.input_fields == ("payment_id", "ts", "amount", "channel", "account",
                                 "merchant", "items")  # fmt: skip
    engine = DeclaredFeatures(spec)
    engine.transform_columns(_rows(payments(50), np.arange(50)))
    assert set(engine.held()) == {"window:account", "window:merchant", "label_risk:merchant",
                                  "label_risk:account"}  # fmt: skip


def test_out_of_order_events_in_a_batch_get_what_one_at_a_time_gives(spec) -> None:  # noqa: ANN001
    p = payments(1200, days=6, ordered=False)
    labels = chargebacks(p)
    want = reference(p, labels)
    whole, single = DeclaredFeatures(spec), DeclaredFeatures(spec)
    whole.apply_label_columns(labels)  # a label counts from its label time on, however early
    single.apply_label_columns(labels)
    got = whole.transform_columns(p)
    one = np.concatenate([single.transform_columns(_rows(p, np.array([i]))) for i in range(1200)])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(one, want)


def test_a_replayed_event_or_label_counts_once(spec) -> None:  # noqa: ANN001
    p = payments(800, days=5)
    labels = chargebacks(p)
    first, last = np.arange(600), np.arange(600, 800)
    once, twice = DeclaredFeatures(spec), DeclaredFeatures(spec)
    once.apply_label_columns(labels)
    twice.apply_label_columns(labels)
    twice.apply_label_columns(_rows(labels, np.arange(0, 800, 3)))  # labels replayed
    a = once.transform_columns(_rows(p, first))
    b = twice.transform_columns(_rows(p, first))
    replay = np.r_[np.arange(500, 600), np.arange(500, 600)]  # replayed, twice in one batch
    b_again = twice.transform_columns(_rows(p, replay))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(b_again[100:], b_again[:100])
    assert once.held() == twice.held()
    np.testing.assert_array_equal(
        once.transform_columns(_rows(p, last)), twice.transform_columns(_rows(p, last))
    )


def test_enum_symbols_and_indices_are_the_same_category(spec) -> None:  # noqa: ANN001
    p = payments(300)
    as_symbols = {**p, "channel": [CHANNELS[i] for i in p["channel"].tolist()]}
    np.testing.assert_array_equal(
        DeclaredFeatures(spec).transform_columns(p),
        DeclaredFeatures(spec).transform_columns(as_symbols),
    )


def test_eviction_bounds_the_state_without_changing_features(spec) -> None:  # noqa: ANN001
    p = payments(3000, days=30)
    labels = chargebacks(p)
    kept, evicted = DeclaredFeatures(spec), DeclaredFeatures(spec)
    for a in range(0, 3000, 300):
        batch = np.arange(a, a + 300)
        now = int(p["ts"][a + 299])
        known = np.flatnonzero(labels["reported_at"] <= now)
        kept.apply_label_columns(_rows(labels, known))
        evicted.apply_label_columns(_rows(labels, known))
        np.testing.assert_array_equal(
            kept.transform_columns(_rows(p, batch)), evicted.transform_columns(_rows(p, batch))
        )
        evicted.evict(now)
    assert evicted.held()["window:account"] < kept.held()["window:account"] / 3


def test_the_declaration_round_trips_beside_its_schemas(spec, folder: Path) -> None:  # noqa: ANN001
    again = folder / "again.toml"
    again.write_text(spec.to_toml())
    assert "[input.decimals]\namount = 2" in spec.to_toml()
    assert load_family(again) == spec
