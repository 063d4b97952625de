"""The lead's Overview in Chromium on a 1280x720 laptop screen: on the demo and on hand-built databases (a
divergence and a healthy case), the first screen says whether the suite keeps up with production and where
the loop is waiting; the chart below shows the pass rate held beside drift and production signals."""

import os
import shutil
from pathlib import Path

import pytest
from browser_support import go, open_app, serve_app, settle, sign_in_as
from overview_support import hand_built

pytestmark = pytest.mark.browser
LAPTOP = {"width": 1280, "height": 720}


def _shot(page, name: str) -> None:
    folder = Path(os.environ.get("FLYWHEEL_SCREENSHOTS", "/tmp"))
    page.screenshot(path=str(folder / name))


def _on_first_screen(page, locator, what: str) -> None:
    locator.wait_for(timeout=30_000)
    box = locator.bounding_box()
    assert box and box["y"] + box["height"] <= LAPTOP["height"], f"{what} is below the first screen: {box}"


def _first_screen(page, url: str, name: str) -> str:
    """Open the Overview as the lead; the verdict and the waiting stations sit on the first screen."""
    open_app(page, url)
    sign_in_as(page, "ana (lead)")
    go(page, "Overview")
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    settle(page)
    verdict = page.get_by_test_id("stAlert").first
    _on_first_screen(page, verdict, "the verdict")
    _on_first_screen(page, page.get_by_test_id("stMetric").first, "the pass rate")
    _on_first_screen(page, page.locator("h3").filter(has_text="Where the loop is waiting"), "the stations")
    _on_first_screen(page, page.get_by_test_id("stMetric").nth(4), "the first station's backlog")
    _shot(page, f"overview_{name}_1280x720.png")
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    _shot(page, f"overview_{name}_chart_1280x720.png")
    chart = page.locator(".js-plotly-plot").first
    legend = chart.locator(".legend").first.bounding_box()
    suite_title = chart.locator(".annotation-text").filter(has_text="The suite").first.bounding_box()
    assert legend["y"] + legend["height"] <= suite_title["y"] + 1, "the legend covers the suite's title"
    return verdict.inner_text()


@pytest.fixture
def laptop(browser):
    context = browser.new_context(viewport=LAPTOP)
    yield context.new_page()
    context.close()


def test_the_demo_tells_the_lead_on_the_first_screen_that_the_suite_fell_behind(
    demo_template, laptop, tmp_path
):
    path = tmp_path / "demo.db"
    shutil.copy(demo_template, path)
    with serve_app(path, env={"FLYWHEEL_EMBED_WORKER": "off"}) as (url, _):
        words = _first_screen(laptop, url, "demo")
    assert "fallen behind production" in words and "beyond τ rose" in words, words


@pytest.mark.parametrize(
    "case, thumbs_late, novel_late, expected",
    [
        ("diverging", 0.20, True, "The suite has fallen behind production"),
        ("healthy", 0.04, False, "The suite keeps up"),
    ],
)
def test_hand_built_cases_read_as_they_should_in_the_browser(
    case, thumbs_late, novel_late, expected, laptop, tmp_path
):
    path, db = hand_built(tmp_path, thumbs_late=thumbs_late, novel_late=novel_late, drift=True)
    db.close()
    with serve_app(path, env={"FLYWHEEL_EMBED_WORKER": "off"}) as (url, _):
        words = _first_screen(laptop, url, case)
        chart = laptop.locator(".js-plotly-plot").first
        legend = chart.locator(".legendtext").evaluate_all("els => els.map(e => e.textContent)")
        titles = chart.locator(".annotation-text").evaluate_all("els => els.map(e => e.textContent)")
    assert expected in words, words
    assert "pass rate, default (bot-b)" in legend and "pass rate, regression (bot-b)" in legend, legend
    assert ("drift alarm: beyond τ significantly above the reference" in legend) == (case == "diverging")
    assert {"The suite", "Production", "Judge"} <= set(titles), titles
