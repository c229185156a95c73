"""The dashboard in real headless Chromium: it loads, shows live numbers that change while
outputs flow, and a screenshot is taken."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from finscore.dashboard.server import Dashboard
from finscore.dashboard.state import DashboardState
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.samples import sample
from tests.streams.kit import make_topics

pytestmark = pytest.mark.broker
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[2] / "reports"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make setup installs it)")
def test_dashboard_shows_live_numbers_in_a_real_browser(client, prefix) -> None:  # noqa: ANN001
    from playwright.sync_api import sync_playwright

    make_topics(client, prefix, partitions=1)
    dash = Dashboard(DashboardState(client, prefix), port=0).start()
    stop = threading.Event()

    def feed() -> None:
        from confluent_kafka import Producer

        p = Producer(client)
        flag, signal = Codec("fraud_flag"), Codec("price_signal")
        i = 0
        while not stop.is_set():
            f = sample("fraud_flag", i) | {"score": (i % 97) / 97, "flagged": i % 7 == 0,
                                             "model_version": "1" if i < 300 else "2"}  # fmt: skip
            p.produce(prefix + T.FRAUD_FLAGS, flag.encode(f), b"k")
            p.produce(
                prefix + T.PRICE_SIGNALS,
                signal.encode(
                    sample("price_signal", i) | {"signal": ["DOWN", "FLAT", "UP"][i % 3]}
                ),
                b"k",
            )
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
            SHOTS.mkdir(exist_ok=True)
            shot = SHOTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000
    finally:
        stop.set()
        feeder.join(10)
        dash.stop()
