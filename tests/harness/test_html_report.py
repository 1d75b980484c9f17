"""The HTML report: links, collapsed polls, a timeline lane per task, schema views, filters.

Read as a file, then in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromium-driver (.ci/run installs both).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from imagegen_conformance import contracts
from imagegen_conformance.harness import CallableClient, Report, render_html, run_scenario

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1300,900"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def report(cloudsway_faulty_client: Callable[..., Any]) -> Report:
    """never-finishes polled without a pause until the harness stops the client (a thousand
    identical polls), a schema deviation, and polls that come too fast."""
    contract = contracts.load("cloudsway")
    out = Report("cloudsway", "mixed", "mock")
    runs = [
        ("never-finishes", {"poll_every": 0.0, "deadline": None}, None),
        ("happy-path", {"body_patch": {"batchsize": 9}}, None),
        ("happy-path", {"poll_every": 0.05}, 10.0),  # a slow clock: the fast polls stay fast
    ]
    for scenario, flaws, scale in runs:
        client = CallableClient(cloudsway_faulty_client(**flaws))
        out.results.append(await run_scenario(contract, contract.scenario(scenario), client,
                                              startup_slack=2.0, time_scale=scale))
    return out


@pytest.fixture(scope="module")
def page(report: Report) -> str:
    return render_html(report)


def test_never_finishes_stays_small_however_many_polls(report: Report) -> None:
    never = report.results[0]
    assert len(never.exchanges) > 300  # the client polled on and on
    alone = Report("cloudsway", "no-pause", "mock")
    alone.results.append(never)
    page = render_html(alone)
    assert len(page.encode()) < 300_000
    rows = re.findall(r"<tr id='s0-x\d+' class='ex[^']*'>", page)
    # The create, runs of identical polls, and the few polls a deviation points at: a handful of
    # rows however long the client went on.
    assert len(rows) <= 10 and len(rows) * 30 < len(never.exchanges)
    assert re.search(r"<b>&#215;(\d+)</b> identical exchanges over", page)


def test_every_link_leads_to_an_element_of_the_page(page: str) -> None:
    ids = set(re.findall(r"\bid='([^']+)'", page))
    links = re.findall(r"href='#([^']+)'", page)
    assert links and set(links) <= ids
    assert re.search(r"<a class='xref' href='#s2-x\d+'>#\d+</a>", page)  # a deviation's exchange


def test_the_timeline_has_one_lane_per_task_drawn_to_scale(report: Report, page: str) -> None:
    section = page.split("<section")[3]  # the third scenario: one task, 1 create + polls + download
    svg = section[section.index("<svg"): section.index("</svg>")]
    assert svg.count("class='lane'") == 1
    xs = [float(x) for x in re.findall(r"<rect class='k-poll' x='([\d.]+)'", svg)]
    assert xs == sorted(xs) and len(xs) > 5
    # Drawn to scale: the marks' x follow provider time (to the bucket's few pixels).
    polls = [e for e in report.results[2].exchanges if e.operation == "getImageTask"]
    t0 = min(e.provider_time for e in report.results[2].exchanges)
    ends = [e.provider_time + (e.duration_ms or 0) / 1000 * report.results[2].time_scale
            for e in report.results[2].exchanges]
    span = max(ends) - t0
    first = 150 + 900 * (polls[0].provider_time - t0) / span
    assert abs(xs[0] - first) < 3.5
    assert "k-create" in svg and "k-download" in svg


def test_a_schema_deviation_shows_expected_and_actual_at_the_schema_path(page: str) -> None:
    section = page.split("<section")[2]
    assert "expected vs actual at <code>request.body$.batchsize</code>" in section
    compare = section[section.index("expected vs actual"):]
    assert "properties/batchsize/oneOf" in compare and "&quot;maximum&quot;: 8" in compare
    assert re.search(r"<b>actual</b><pre>9</pre>", compare)


def test_filters_are_checkboxes_read_by_css(page: str) -> None:
    for box in ("f-rule-client-poll-interval", "f-severity-error", "f-side-client",
                "f-rule-schema-request"):
        assert f"id='{box}' checked" in page
        assert f"body:has(#{box}:not(:checked)) tr.dev" in page
    assert "<script" not in page


# --- in a real browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.fail("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
                    " (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def opened(browser: Any, page: str, tmp_path: Path) -> Any:
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    browser.get(path.as_uri())
    return browser


def test_in_chromium_the_report_renders(opened: Any) -> None:
    from selenium.webdriver.common.by import By

    assert opened.title == "imagegen-conformance: cloudsway"
    assert opened.find_element(By.TAG_NAME, "h1").text.startswith("cloudsway conformance")
    sections = opened.find_elements(By.CSS_SELECTOR, "section.scenario")
    assert len(sections) == 3 and all(s.is_displayed() for s in sections)
    svg = opened.find_elements(By.CSS_SELECTOR, "svg.timeline")[2]
    assert svg.size["width"] > 900 and svg.size["height"] > 0
    assert opened.execute_script("return document.querySelectorAll('svg rect.k-poll').length") > 5


def test_in_chromium_a_deviation_link_jumps_to_its_exchange(opened: Any) -> None:
    from selenium.webdriver.common.by import By

    row = opened.find_element(By.CSS_SELECTOR, "tr.dev[data-rule='client.poll-interval']")
    link = row.find_element(By.CSS_SELECTOR, "a.xref")
    target = link.get_attribute("href").split("#", 1)[1]
    link.click()
    assert opened.execute_script("return location.hash") == "#" + target
    reached = opened.find_element(By.ID, target)
    assert opened.execute_script("return arguments[0].matches(':target')", reached)
    # Scrolled into view: the row's box is inside the viewport (a scroll may land a sub-pixel
    # off, so its top may be -0.33 px: judged to the whole pixel).
    top, bottom = opened.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom]", reached)
    assert -1 < top < opened.execute_script("return window.innerHeight") and bottom > 0
    assert reached.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"  # highlighted


def test_in_chromium_the_filter_hides_rows(opened: Any) -> None:
    from selenium.webdriver.common.by import By

    def shown(rule: str) -> list[bool]:
        return [r.is_displayed()
                for r in opened.find_elements(By.CSS_SELECTOR, f"tr.dev[data-rule='{rule}']")]

    assert all(shown("client.poll-interval")) and all(shown("schema.request"))
    opened.find_element(By.ID, "f-rule-client-poll-interval").click()
    assert not any(shown("client.poll-interval")) and all(shown("schema.request"))
    opened.find_element(By.ID, "f-severity-error").click()  # every deviation here is an error
    assert not any(shown("schema.request")) and not any(shown("scenario.outcome"))
    opened.find_element(By.ID, "f-severity-error").click()
    opened.find_element(By.ID, "f-rule-client-poll-interval").click()
    assert all(shown("client.poll-interval")) and all(shown("scenario.outcome"))
