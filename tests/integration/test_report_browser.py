"""The run report in a real headless browser (chromium through selenium and chromedriver): the
page loads without console errors, the trace filters change the visible rows, a question opens
to its steps with the gold passages marked, markup in the data stays text, and a screenshot is
saved. Without chromium the test skips, except under CI (``CI=true``), where it fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from steper_ray.report import write_report

pytestmark = pytest.mark.slow


def _missing(what: str) -> NoReturn:
    """Skip for lack of ``what`` (a sentence that names its fix), or under CI fail."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what}; CI=true, so the browser test must run")
    pytest.skip(what)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless chromium driven by the system chromedriver (selenium never downloads one)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed: `./install.sh --dev` (the dev extra) installs it")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _missing("chromium and chromedriver are not on PATH: `./install.sh --dev` installs them as root "
                 "(or `sudo apt-get install chromium chromium-driver`)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _severe(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _visible_ids(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.get_attribute("data-id") for e in driver.find_elements(By.CSS_SELECTOR, "#questions details.q")
            if e.is_displayed()]


def _choose(driver: Any, select_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, select_id)).select_by_value(value)


def test_report_page_in_headless_chromium(browser: Any, report_run: dict[str, Any], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = write_report(report_run["run"])
    browser.get(page.as_uri())
    assert browser.title.startswith("steper-ray report")
    assert _severe(browser) == []
    count = browser.find_element(By.ID, "count")
    total = report_run["questions"]
    assert count.text == f"{total} of {total} questions"
    assert len(_visible_ids(browser)) == total

    # dropped teacher traces: q3 (wrong answer) and q4 (error)
    _choose(browser, "f-kept", "dropped")
    assert sorted(_visible_ids(browser)) == ["q3", "q4"] and count.text == f"2 of {total} questions"
    # and the dev predictions that are wrong, of the trained student only
    _choose(browser, "f-kept", "")
    _choose(browser, "f-correct", "wrong")
    _choose(browser, "f-source", "2")  # sources: generate, evaluate_base, evaluate
    assert _visible_ids(browser) == ["d2"]
    _choose(browser, "f-source", "")
    _choose(browser, "f-correct", "")
    _choose(browser, "f-dataset", "other")
    assert _visible_ids(browser) == ["q4"]
    _choose(browser, "f-dataset", "")
    search = browser.find_element(By.ID, "f-search")
    search.send_keys("lakeside")
    assert _visible_ids(browser) == ["q1"]

    # q1 opens to its three steps; passages: founded, script | born, river | born; gold: founded, born
    row = browser.find_element(By.CSS_SELECTOR, 'details.q[data-id="q1"]')
    row.find_element(By.TAG_NAME, "summary").click()
    # the steps are drawn by the details' "toggle" event, which the browser dispatches as a later task
    steps = WebDriverWait(browser, 10).until(lambda _: row.find_elements(By.CSS_SELECTOR, ".step"))
    assert len(steps) == 3
    gold = [[li.is_displayed() for li in s.find_elements(By.CSS_SELECTOR, "li.gold")] for s in steps]
    assert [len(g) for g in gold] == [1, 1, 1] and all(all(g) for g in gold)
    assert "wrote: Marta Velde was born in Bergen, Norway." in steps[1].text
    assert "10 tokens" in steps[1].text
    assert "gold paragraphs retrieved: 2 of 2" in row.text
    # the passage with <script> and <img onerror> is shown as text and ran nothing
    assert report_run["script_text"] in steps[0].text.replace("\n", " ")
    assert browser.execute_script("return window.__pwned === undefined && document.images.length === 0")
    assert _severe(browser) == []

    search.clear()
    browser.execute_script("arguments[0].dispatchEvent(new Event('input'))", search)
    assert len(_visible_ids(browser)) == total
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")
