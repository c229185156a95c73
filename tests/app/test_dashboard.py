"""The dashboard in real headless Chromium: it loads, shows live numbers that change while
outputs flow, and a screenshot is taken."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from finscore.dashboard.server import Dashboard
from finscore.dashboard.state import DashboardState, expand_worker_urls, worker_row
from finscore.observe import scrape
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
    dash = Dashboard(DashboardState(client, prefix, [server.url]), port=0).start()
    stop = threading.Event()

    def feed() -> None:
        from confluent_kafka import Producer

        p = Producer(client)
        flag, signal = Codec("fraud_flag"), Codec("price_signal")
        i = 0
        while not stop.is_set():
            f = sample("fraud_flag", i) | {"score": (i % 97) / 97, "flagged": i % 7 == 0,
                                             "model_version": "1" if i < 300 else "2"}  # fmt: skip
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
        while time.monotonic() < deadline and state.snapshot()["totals"]["fraud_flags"] < 40:
            time.sleep(0.2)
        assert state.snapshot()["totals"]["fraud_flags"] == 40
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
