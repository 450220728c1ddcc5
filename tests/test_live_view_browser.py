"""The live view in a real browser: headless Chromium (Debian ``chromium`` + ``chromium-driver``)
driven by Selenium against a running monitor on the two sample clips, looped.

The page must list both streams, load their thumbnails, update the scores and sparklines by
itself, and log no error (a Content-Security-Policy violation would show up there). A screenshot
is kept under the test's tmp_path and, when ``VQMON_ARTIFACTS`` names a folder, copied there.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from conftest import SAMPLES, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless browser test needs Chromium and its driver: apt-get install chromium chromium-driver")


def open_browser(width: int = 1280, height: int = 900):
    """Headless Chromium through the system chromedriver (Selenium's own driver download is never used)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))


def page_state(driver) -> list[dict]:
    """What the page shows, per card: name, state, score text, sparkline points, thumbnail loaded."""
    return driver.execute_script("""
        return [...document.querySelectorAll('.card')].map(c => ({
            name: c.dataset.stream,
            state: c.querySelector('.state').textContent,
            score: c.querySelector('.score').textContent,
            points: Number(c.querySelector('.spark').dataset.points || 0),
            line: c.querySelector('.spark .score-line') ? c.querySelector('.spark .score-line').getAttribute('points') : '',
            img: c.querySelector('.thumb img').naturalWidth,
            imgh: c.querySelector('.thumb img').naturalHeight,
            stats: c.querySelector('.stats').textContent,
            alerts: [...c.querySelectorAll('.alerts li')].map(li => li.className + ' ' + li.textContent),
            alerting: c.classList.contains('alerting'),
        }));""")


@pytest.fixture(scope="module")
def monitor(cpu_engine):
    from monitor.config import config_from_dict
    from monitor.service import Monitor

    cfg = config_from_dict({
        "defaults": {"sample_rate": 1.0},
        "streams": [{"name": "bigbuckbunny", "url": str(SAMPLES / "bigbuckbunny.mp4"), "loop": True},
                    # an alert that fires on any score, for the page to show
                    {"name": "bikes", "url": str(SAMPLES / "bikes.mp4"), "loop": True,
                     "alerts": {"quality_low": {"enabled": True, "threshold": 100, "clear_threshold": 100,
                                                "critical_threshold": 100}}}],
        "metrics": {"listen": "127.0.0.1:0"}, "redis": {"enabled": False}, "console": False,
    })
    m = Monitor(cfg, engines={"bifusion": cpu_engine}, announce=lambda text: None)
    m.start()
    loop = threading.Thread(target=m.run, name="housekeeping", daemon=True)
    loop.start()
    try:
        wait_for(lambda: all(rt.scored >= 2 for rt in m.streams.values()), 60, message="first scores")
        yield m
    finally:
        m.stop_event.set()
        loop.join(10)
        m.stop()


def test_live_page_in_chromium(monitor, tmp_path):
    host, port = monitor.metrics_address
    driver = open_browser()
    try:
        driver.get(f"http://{host}:{port}/")
        cards = wait_for(lambda: (lambda s: s if len(s) == 2 and all(c["img"] > 0 for c in s) else None)(
            page_state(driver)), 20, message="both streams listed with their thumbnails loaded")
        assert [c["name"] for c in cards] == ["bigbuckbunny", "bikes"]
        for c in cards:
            assert c["state"] == "up" and "fps" in c["stats"]
            assert c["img"] == 480 and c["imgh"] < c["img"]  # the overlay thumbnail, in the clip's aspect
            float(c["score"])  # a number, not the "–" placeholder
        assert "2 streams: 2 up" in driver.find_element("id", "summary").text

        # the page polls on its own: the scores or the sparklines change without a reload
        before = {c["name"]: (c["score"], c["points"], c["line"]) for c in cards}
        wait_for(lambda: all((c["score"], c["points"], c["line"]) != before[c["name"]]
                             for c in page_state(driver)), 10, message="the page to update by itself")
        assert all(c["points"] >= 2 for c in page_state(driver))
        bikes = wait_for(lambda: (lambda c: c if c["alerts"] else None)(page_state(driver)[1]), 20,
                         message="the alert on the page")
        assert bikes["alerts"][0].startswith("critical critical: quality_low for ") and bikes["alerting"]
        assert page_state(driver)[0]["alerts"] == []

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        shot = tmp_path / "live-view.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("VQMON_ARTIFACTS"):
            out = Path(os.environ["VQMON_ARTIFACTS"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, out / "live-view.png")
    finally:
        driver.quit()
