"""The dashboard in real headless Chromium: it loads, shows live numbers that change while
outputs flow, and a screenshot is taken."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from finscore.app.console.observe import scrape
from finscore.app.dashboard.server import Dashboard
from finscore.app.dashboard.state import DashboardState, expand_worker_urls, worker_row
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.samples import sample
from finscore.streams.metrics import MetricsServer, WorkerMetrics
from tests.streams.kit import make_topics

pytestmark = pytest.mark.broker
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[2] / "reports"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make setup installs it)")
def test_dashboard_shows_live_numbers_in_a_real_browser(client, prefix) -> None:  # noqa: ANN001
    from playwright.sync_api import sync_playwright

    make_topics(client, prefix, partitions=1)
    metrics = WorkerMetrics("fraud")  # a worker's real metrics endpoint, fed by the loop below
    metrics.model_loaded("fraud", "1")
    server = MetricsServer(metrics, lambda: {"status": "ok"}).start()
    from finscore.app.sidecar.status import StatusServer

    sidecar = StatusServer(lambda: {"state": "waiting for labelled data (120 of 5,000)",
                                    "last_error": "IndexError: index -1 is out of bounds"}).start()  # fmt: skip
    dash = Dashboard(DashboardState(client, prefix, [server.url], sidecar_url=sidecar.url),
                     port=0).start()  # fmt: skip
    stop = threading.Event()

    def feed() -> None:
        from confluent_kafka import Producer

        p = Producer(client)
        flag, signal = Codec("fraud_flag"), Codec("price_signal")
        i = 0
        while not stop.is_set():
            f = sample("fraud_flag", i) | {"score": (i % 97) / 97, "flagged": i % 7 == 0,
                                             "model_version": "1" if i < 300 else "2",
                                             "threshold": 0.4}  # fmt: skip
            if f["flagged"]:  # ids are data, never markup: the page must show them as text
                f["transaction_id"] = f"<i>tx{i}</i>"
            p.produce(prefix + T.FRAUD_FLAGS, flag.encode(f), b"k")
            p.produce(
                prefix + T.PRICE_SIGNALS,
                signal.encode(
                    sample("price_signal", i) | {"signal": ["DOWN", "FLAT", "UP"][i % 3]}
                ),
                b"k",
            )
            metrics.events_in.inc()
            metrics.events_out(prefix + T.FRAUD_FLAGS, 1)
            metrics.e2e_latency.observe(0.004)
            i += 1
            p.poll(0)
            time.sleep(0.005)
        p.flush(10)

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        time.sleep(1.0)  # the dashboard's consumer is assigned at the end of the topics
        feeder.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(dash.url)
            page.wait_for_function(
                "document.getElementById('tot-flags').textContent.includes('total')", timeout=20000
            )
            first = page.inner_text("#tot-flags")
            time.sleep(2.5)
            page.wait_for_function(
                f"document.getElementById('tot-flags').textContent !== {first!r}", timeout=10000
            )
            second = page.inner_text("#tot-flags")
            assert int(first.split()[0].replace(",", "")) < int(second.split()[0].replace(",", ""))
            assert float(page.inner_text("#rate-flags").replace(",", "")) > 0
            page.wait_for_function(
                "document.getElementById('versions').textContent.includes('fraud v2')",
                timeout=15000,
            )
            assert page.locator("#flags tr").count() > 1  # recent flagged transactions listed
            assert "<i>tx" in page.inner_text("#flags") and page.locator("#flags i").count() == 0
            page.wait_for_function(  # the worker row: input rate from two scrapes, model, p99
                "document.querySelectorAll('#workers tr').length > 1 && "
                "document.querySelector('#workers tr:nth-child(2) td:nth-child(2)')"
                ".textContent.replace(/,/g, '') > 0",
                timeout=10000,
            )
            row = page.inner_text("#workers tr:nth-child(2)")
            assert "fraud v1 (live)" in row
            assert 2.5 <= float(row.split("\t")[3]) <= 5.0  # p99 within the 2.5-5 ms bucket
            # issue 16: flagged/s is not scored/s; series, threshold, sidecar, latency labels
            scored = float(page.inner_text("#rate-scored").replace(",", ""))
            assert 0 < float(page.inner_text("#rate-flags").replace(",", "")) < scored
            page.wait_for_function(
                "document.querySelectorAll('#chart-throughput path').length > 0", timeout=10000
            )
            assert page.locator("#hist #threshold").count() == 1
            assert "waiting for labelled data" in page.inner_text("#sidecar")
            assert "IndexError" in page.inner_text("#sidecar-error")
            latency = page.inner_text("#latency")
            assert "visible" in latency and "produced" in latency
            SHOTS.mkdir(exist_ok=True)
            shot = SHOTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000
    finally:
        stop.set()
        feeder.join(10)
        dash.stop()
        server.stop()
        sidecar.stop()


def test_a_dashboard_started_before_the_topics_exist_follows_them_once_created(
    client,  # noqa: ANN001
    prefix,  # noqa: ANN001
) -> None:
    from confluent_kafka import Producer

    state = DashboardState(client, prefix).start()
    try:
        time.sleep(1.0)  # the consumer has looked for the topics and found none
        make_topics(client, prefix, partitions=2)
        p = Producer(client)
        flag = Codec("fraud_flag")
        for i in range(40):
            p.produce(prefix + T.FRAUD_FLAGS, flag.encode(sample("fraud_flag", i)), str(i).encode())
        p.flush(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and state.snapshot()["totals"]["scored"] < 40:
            time.sleep(0.2)
        assert state.snapshot()["totals"]["scored"] == 40
    finally:
        state.stop()


def test_a_scaled_service_name_becomes_one_worker_url_per_container() -> None:
    dns = {"fraud-worker": ["10.0.0.7", "10.0.0.8"], "market-worker": ["10.0.0.9"]}
    urls = expand_worker_urls(
        ["http://fraud-worker:9100", "http://market-worker:9100", "http://127.0.0.1:9101"],
        resolve=lambda host, port: dns.get(host, []),
    )
    assert urls == [
        "http://10.0.0.7:9100",
        "http://10.0.0.8:9100",
        "http://market-worker:9100",  # a single container keeps its readable name
        "http://127.0.0.1:9101",
    ]
    assert expand_worker_urls(["http://localhost:9100"]) == ["http://localhost:9100"]


def test_worker_rows_show_rates_and_recent_latency_from_two_scrapes() -> None:
    metrics = WorkerMetrics("market")
    metrics.model_loaded("market", "3")
    metrics.model_loaded("market", "4", role="shadow")
    server = MetricsServer(metrics, lambda: {"status": "ok"}).start()
    try:
        metrics.events_in.inc(100)
        for _ in range(100):
            metrics.e2e_latency.observe(0.9)  # slow history...
        first = scrape(server.url)
        lifetime = worker_row(server.url, first, None)
        assert lifetime["in_per_s"] is None and lifetime["p99_ms"] is not None
        time.sleep(0.3)
        metrics.events_in.inc(600)
        metrics.events_out("price-signals", 600)
        metrics.dead_letter("crossed_book", 2)
        metrics.lag(0, 42)
        for _ in range(600):
            metrics.e2e_latency.observe(0.004)  # ...fast now: the row shows now
        second = scrape(server.url)
        row = worker_row(server.url, second, first)
        assert first is not None and second is not None
        dt = second.at - first.at
        assert row["in_per_s"] == pytest.approx(600 / dt)
        assert row["out_per_s"] == pytest.approx(600 / dt)
        assert row["p99_ms"] is not None and row["p99_ms"] <= 5.0
        assert (row["stream"], row["lag"], row["dead_letters"]) == ("market", 42, 2)
        assert row["models"] == ["market v3 (live)", "market v4 (shadow)"]
        restarted = worker_row(server.url, first, second)  # counters went down: a restart
        assert restarted["in_per_s"] is None
    finally:
        server.stop()
    down = worker_row("http://127.0.0.1:1", scrape("http://127.0.0.1:1"), None)
    assert down["up"] is False and down["models"] == []


def _wait(cond, timeout: float = 20.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def test_the_operator_view_counts_what_the_workers_count(client, prefix) -> None:  # noqa: ANN001
    """Issue 16: dead letters written before the dashboard started were missing ("0 total"
    beside a worker showing 2); flags/s was really scored/s; no per-partition group lag, no
    time series, a linear histogram without the threshold, no sidecar state."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from finscore.app.sidecar.status import StatusServer
    from finscore.streams.pipeline import DeadLetter, DeadLetterEncoder
    from finscore.streams.transport import Message

    make_topics(client, prefix, partitions=2)
    metrics = WorkerMetrics("fraud")
    server = MetricsServer(metrics, lambda: {"status": "ok"}).start()
    sidecar = StatusServer(lambda: {"state": "waiting for labelled data",
                                    "last_error": "IndexError: boom"}).start()  # fmt: skip
    p = Producer(client)
    dlq = DeadLetterEncoder("fraud@test")
    tx = prefix + T.TRANSACTIONS
    for i, why in enumerate(["SchemaError", "SchemaError", "OutOfBounds"]):
        rec = dlq.encode(DeadLetter(Message(tx, 1, 40 + i, b"k", b"junk"), why, f"bad {i}"), 1000)
        p.produce(rec.topic, rec.value, rec.key)
        metrics.dead_letter(why)
    for _ in range(30):  # the worker group has read 10 of 30 records on partition 0
        p.produce(tx, b"x", b"k", partition=0)
        p.flush(10)  # one record a batch: the embedded broker's end offset counts batches
    group = Consumer({**client, "group.id": prefix + "finscore-fraud"})
    group.commit(offsets=[TopicPartition(tx, 0, 10)], asynchronous=False)
    group.close()
    state = DashboardState(client, prefix, [server.url], sidecar_url=sidecar.url).start()
    try:
        time.sleep(1.0)
        flag = Codec("fraud_flag")
        for i in range(70):
            f = sample("fraud_flag", i) | {"score": [0.0004, 0.02, 0.9][i % 3],
                                           "flagged": i % 7 == 0, "threshold": 0.35}  # fmt: skip
            p.produce(prefix + T.FRAUD_FLAGS, flag.encode(f), b"k")
        p.flush(10)
        assert _wait(lambda: state.snapshot()["totals"]["scored"] == 70)
        assert _wait(lambda: state.snapshot()["dead_letters"]["workers_total"] == 3)
        assert _wait(lambda: len(state.snapshot()["series"]["t"]) >= 2)
        snap = state.snapshot()
        assert snap["totals"]["flagged"] == 10
        dead = snap["dead_letters"]
        assert dead["total"] == dead["workers_total"] == 3
        assert dead["by_reason"] == {"SchemaError": 2, "OutOfBounds": 1}
        last = dead["recent"][0]
        assert (last["error_type"], last["source_partition"], last["source_offset"]) == (
            "OutOfBounds",
            1,
            42,
        )
        assert last["reason"] == "bad 2" and last["source_topic"] == tx
        lags = {g["group"]: g for g in snap["groups"]}
        fraud = lags[prefix + "finscore-fraud"]
        assert fraud["topic"] == tx
        assert {p["partition"]: p["lag"] for p in fraud["partitions"]}[0] == 20, fraud
        hist = snap["score_histogram"]
        assert hist["threshold"] == 0.35 and sum(hist["counts"]) == 70
        edges = hist["edges"]
        assert edges[1] / edges[0] == pytest.approx(edges[-1] / edges[-2])  # log-spaced
        assert max(hist["counts"]) < 70 and len([c for c in hist["counts"] if c]) == 3
        assert snap["sidecar"]["state"] == "waiting for labelled data"
        assert snap["sidecar"]["last_error"] == "IndexError: boom"
        series = snap["series"]
        assert set(series) >= {"t", "scored", "flagged", "signals", "dead_letters", "lag"}
        assert max(series["scored"]) > 0
        assert {"visible", "produced"} <= set(snap["latency_ms"])
    finally:
        state.stop()
        server.stop()
        sidecar.stop()
