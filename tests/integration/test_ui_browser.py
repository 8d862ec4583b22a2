"""The live page in a real browser (headless Chromium via selenium) on the live stack: clicks in the
shop go through POST /events, Kafka and the worker, and the recommendations panel shows the stream
using them and names the model version and routing policy that served each answer; the operations
view shows the events and the routing's arms (share, impressions, CTR with its interval); with
STREAMREC_API_KEY set the page asks for the key.

Screenshots of both views go to a folder the test prints (under the live stack's data dir), and
also to $STREAMREC_UI_SCREENSHOTS when set (`STREAMREC_UI_SCREENSHOTS=docs` refreshes the README's).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streamrec import feature_schema as s
from infra import process
from infra.kafka import free_port
from streamrec.settings import Settings
from tests.conftest import read_session, start_api, wait_for

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's: selenium-manager fetches nothing
VISIBLE_WITHIN_MS = 2000
KEY = "ui-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1150",
                 "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(live_settings: Settings) -> Path:
    folder = live_settings.data_dir / "artifacts" / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {folder}")
    return folder


def save(driver, folder: Path, name: str) -> None:
    path = folder / name
    driver.save_screenshot(str(path))
    if os.environ.get("STREAMREC_UI_SCREENSHOTS"):
        target = Path(os.environ["STREAMREC_UI_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)


def worker_is_applying(settings: Settings, api: str) -> None:
    """A first click applied end to end, so the page's clicks do not wait for the worker's start-up."""
    session_id = f"ui-warm-{uuid.uuid4().hex[:6]}"
    answer = httpx.post(f"{api}/events", json={"session_id": session_id, "item_id": 1, "ts": time.time()},
                        headers={"X-API-Key": settings.api_key or ""}, timeout=5)
    assert answer.status_code == 202, answer.text
    wait_for(lambda: read_session(settings, session_id), 60, "the worker to apply a warm-up click")


def wait(driver, what: str, predicate, timeout_s: float = 15):
    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(lambda d: predicate(d), message=what)


def recommended(driver) -> list[str]:
    return [card.get_attribute("data-item-id") for card in driver.find_elements(By.CSS_SELECTOR, "#recs .card")]


def click_and_wait(driver, card) -> dict:
    """Click an item card; return what the page reports once it has measured that click."""
    item = card.get_attribute("data-item-id")
    card.click()
    wait(driver, f"the page to report on the click of item {item}",
         lambda d: d.find_element(By.ID, "visibility").get_attribute("data-item-id") == item)
    box = driver.find_element(By.ID, "visibility")
    return {"item": item, "visible_ms": box.get_attribute("data-visible-ms"), "text": box.text,
            "stage": driver.find_element(By.ID, "stage").text, "recs": recommended(driver)}


class Traffic(threading.Thread):
    """A few seconds of clicks and /recommend calls so the operations charts have something to draw."""

    def __init__(self, api: str, seconds: float, key: str | None = None) -> None:
        super().__init__(daemon=True)
        self.api, self.seconds, self.headers = api, seconds, {"X-API-Key": key} if key else {}

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with httpx.Client(timeout=5) as client:
            n = 0
            while time.monotonic() < deadline:
                session_id = f"ui-traffic-{n % 40}"
                client.post(f"{self.api}/events", headers=self.headers,
                            json={"session_id": session_id, "item_id": 1000 + (n * 7) % 700, "ts": time.time()})
                client.post(f"{self.api}/recommend", json={"session_id": session_id, "k": 10})
                n += 1
                time.sleep(0.03)


def test_clicks_change_the_recommendations_and_show_up_in_operations(live_settings, worker, api, browser, screenshots):
    worker_is_applying(live_settings, api)
    browser.get(f"{api}/")  # redirects to /ui
    wait(browser, "the catalogue", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) >= 12)
    assert browser.current_url.endswith("/ui")
    wait(browser, "the first recommendations", lambda d: recommended(d))
    assert browser.find_element(By.ID, "stage").text == "fallback_popular"  # a new session: nothing clicked yet
    session_id = browser.find_element(By.ID, "session-id").text
    assert session_id.startswith("web-")
    before = recommended(browser)

    first = click_and_wait(browser, browser.find_elements(By.CSS_SELECTOR, "#grid .card")[3])
    second = click_and_wait(browser, browser.find_elements(By.CSS_SELECTOR, "#recs .card")[0])  # a recommendation
    browser.find_element(By.ID, "next").click()
    wait(browser, "the catalogue's second page", lambda d: "25–48" in d.find_element(By.ID, "page-info").text)
    third = click_and_wait(browser, browser.find_elements(By.CSS_SELECTOR, "#grid .card")[5])

    previous = before
    for result in (first, second, third):
        assert result["visible_ms"] is not None, result["text"]
        assert float(result["visible_ms"]) <= VISIBLE_WITHIN_MS, result["text"]
        assert result["stage"] == "stream", result
        assert result["recs"] and result["recs"] != previous, result  # the click changed what is recommended
        assert result["item"] not in result["recs"]  # exclude_seen
        previous = result["recs"]
    clicked = [first["item"], second["item"], third["item"]]
    assert [chip.text for chip in browser.find_elements(By.CSS_SELECTOR, "#clicks .chip")] == clicked
    session = read_session(live_settings, session_id)  # the clicks really went through Kafka and the worker
    assert [str(i) for i in session[s.RECENT_ITEMS]] == clicked
    timings = browser.find_elements(By.CSS_SELECTOR, "#timings .timing .step")
    assert "total" in [t.text for t in timings]
    assert browser.find_element(By.ID, "model-version").text != "–"
    served = browser.find_element(By.ID, "served-by")  # under the answer: the arm that served it and the policy
    assert browser.find_element(By.ID, "served-version").text == browser.find_element(By.ID, "model-version").text
    assert served.get_attribute("data-version") == browser.find_element(By.ID, "model-version").text
    assert browser.find_element(By.ID, "served-policy").text == "single"
    browser.execute_script("window.scrollTo(0, 0)")
    save(browser, screenshots, "ui-shop.png")

    traffic = Traffic(api, seconds=8)
    traffic.start()
    browser.find_element(By.ID, "tab-ops").click()
    events = wait(browser, "the operations view to count the events", lambda d: float(
        d.find_element(By.ID, "events-total").get_attribute("data-value") or 0))
    assert events >= 3
    wait(browser, "Redis, Kafka and the worker's metrics reported up", lambda d: all(
        "up" in d.find_element(By.CSS_SELECTOR, f'[data-dependency="{name}"]').get_attribute("class")
        for name in ("redis", "kafka", "worker metrics")), timeout_s=20)
    wait(browser, "windowed figures (a second poll)", lambda d: d.find_element(By.ID, "ops-window").text != "–")
    traffic.join(30)
    time.sleep(3)  # two more polls after the traffic, so the charts show it rise and fall
    value = browser.find_element(By.CSS_SELECTOR, "#tile-latency .value").text
    assert "ms" in value, value  # /recommend percentiles over the window
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-throughput .chart polyline")
    # the routing's arms with the worker's attributed counters (the API refreshes them every few seconds)
    version = browser.find_element(By.ID, "served-version").get_attribute("textContent")
    assert browser.find_element(By.ID, "online-policy").get_attribute("textContent") == "single"
    row = wait(browser, "the champion's row in the arms table with its impressions", lambda d: next(
        (r for r in d.find_elements(By.CSS_SELECTOR, "#online-arms tbody tr.champion")
         if r.get_attribute("data-version") == version and r.find_elements(By.TAG_NAME, "td")[2].text not in ("", "0")),
        None), timeout_s=20)
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "100.0 %" and "[" in cells[4], cells  # share, CTR [interval]
    save(browser, screenshots, "ui-ops.png")

    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems  # no script error, no CSP violation, no failed request


@pytest.fixture(scope="module")
def keyed_api(live_settings: Settings) -> Iterator[str]:
    settings = Settings(**{**live_settings.model_dump(), "api_port": free_port(), "api_key": KEY})
    name = f"api-ui-key-{settings.api_port}"
    try:
        yield start_api(name, settings)
    finally:
        process.stop(name, settings)


def test_with_an_api_key_the_page_asks_for_it_and_then_works(live_settings, worker, keyed_api, browser):
    assert httpx.get(f"{keyed_api}/ops/summary", timeout=5).status_code == 401
    browser.get(f"{keyed_api}/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    wait(browser, "the catalogue", lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .card"))
    assert KEY not in browser.page_source
    assert "hidden" in browser.find_element(By.ID, "key-form").get_attribute("class")

    browser.find_element(By.ID, "tab-ops").click()  # the operations figures need the key too
    wait(browser, "the ops view's 401", lambda d: "401" in d.find_element(By.ID, "ops-error").text)
    browser.find_element(By.ID, "tab-shop").click()
    browser.find_elements(By.CSS_SELECTOR, "#grid .card")[0].click()  # refused: no key yet
    wait(browser, "the key form", lambda d: "hidden" not in d.find_element(By.ID, "key-form").get_attribute("class"))
    # the form opens first, the refused click's error is written when its promise settles
    wait(browser, "the click's 401", lambda d: "401" in d.find_element(By.ID, "error").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#clicks .chip") == []

    browser.find_element(By.ID, "key-input").send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    assert browser.execute_script("return sessionStorage.getItem('streamrec.apiKey')") == KEY
    result = click_and_wait(browser, browser.find_elements(By.CSS_SELECTOR, "#grid .card")[1])
    assert result["stage"] == "stream" and result["visible_ms"] is not None, result["text"]

    browser.find_element(By.ID, "tab-ops").click()
    wait(browser, "the operations view with the key", lambda d: float(
        d.find_element(By.ID, "events-total").get_attribute("data-value") or 0) >= 1)
    browser.get_log("browser")  # drop the expected 401 entries
