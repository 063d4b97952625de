"""The Review page in Chromium: trace text reaches the reviewer character for character and never as
markup; two reviewers in two browser contexts are never shown the same scrub."""

import json

import pytest
from browser_support import VIEWPORT, serve_app, settle, sign_in_as

from flywheel.config import load_config
from flywheel.ingest.run import ingest_lines
from flywheel.review.scrubs import scrub_traces
from flywheel.store.db import open_db

pytestmark = pytest.mark.browser
TRICKY = (
    "Q?\n\n[1]: http://example.com/secret (pin X)\n[zz]: /x\n\nThanks\n"
    "# Heading ![img](http://127.0.0.1:9/x.png) $x^2$ <b>bold</b> <img src=x onerror=alert(1)>"
    " [link](http://evil.example) <script>alert(2)</script>\n"
    "card 4111\u200b1111\u200b1111\u200b1111 \u202eabc\u00a0end  trailing  "
)
# The characters a reader gets from a field, without the short names shown on boxed invisible marks.
SHOWN_JS = """els => els.map(el => {
    const copy = el.cloneNode(true);
    copy.querySelectorAll('.fw-mark-label').forEach(label => label.remove());
    return copy.textContent;
})"""


@pytest.fixture(scope="module")
def review_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("review_browser") / "r.db"
    db = open_db(path)
    lines = [
        json.dumps({"trace_id": "t-a-tricky", "input": TRICKY, "output": TRICKY}),
        json.dumps({"trace_id": "t-b", "input": "Hello, Maria Gonzalez here", "output": "ok"}),
        json.dumps({"trace_id": "t-c", "input": "mail me at jo@example.com", "output": "ok"}),
        json.dumps({"trace_id": "t-d", "input": "call 07700 900123", "output": "ok"}),
    ]
    ingest_lines(db, [line.encode() + b"\n" for line in lines], "review.jsonl", "test", config=load_config())
    scrub_traces(db, ["t-a-tricky", "t-b", "t-c", "t-d"], actor="test")
    return path


@pytest.fixture(scope="module")
def server(review_db):
    with serve_app(review_db) as (url, _):
        yield url


def _reviewer_page(browser, server: str, label: str):
    """A fresh browser context signed in as ``label`` (e.g. 'ravi (reviewer)') on the Review page."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(server)
    page.get_by_test_id("stNavSectionHeader").first.wait_for(timeout=60_000)
    settle(page)
    sign_in_as(page, label)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review scrubs", exact=True).click()
    page.locator("h3").filter(has_text="Trace").first.wait_for(timeout=30_000)
    settle(page)
    return context, page, dialogs


def _trace_shown(page) -> str:
    return page.locator("h3").filter(has_text="Trace").first.inner_text().removeprefix("Trace ").strip()


def test_tricky_trace_is_shown_character_for_character_and_never_as_markup(browser, server, review_db):
    context, page, dialogs = _reviewer_page(browser, server, "ravi (reviewer)")
    try:
        assert _trace_shown(page) == "t-a-tricky"
        page.locator(".fw-raw").first.wait_for(timeout=30_000)
        raw = page.locator(".fw-raw").evaluate_all(SHOWN_JS)
        scrubbed = page.locator(".fw-scrubbed").evaluate_all(SHOWN_JS)
        stored = (
            open_db(review_db)
            .execute("SELECT input, output FROM scrubs WHERE trace_id = 't-a-tricky'")
            .fetchone()
        )
        assert raw == [TRICKY, TRICKY]
        assert scrubbed == list(stored) and "[CREDIT_CARD]" in stored[0]
        main = page.get_by_test_id("stMain")
        assert main.locator(".fw-text b, .fw-text img, .fw-text a, .fw-text script, .fw-text h1").count() == 0
        assert main.locator(".katex").count() == 0
        assert main.locator("img[src*='x.png'], a[href*='evil.example']").count() == 0
        assert main.locator("h1").filter(has_text="Heading").count() == 0
        assert page.locator(".fw-raw .fw-invisible").count() >= 5  # 3 ZWSP, RLO, NBSP boxed and named
        assert page.locator(".fw-raw .fw-mark-label").filter(has_text="ZWSP").first.is_visible()
        assert dialogs == []
    finally:
        context.close()


def test_two_reviewers_in_two_browsers_never_see_the_same_scrub(browser, server, review_db):
    first, ravi, _ = _reviewer_page(browser, server, "ravi (reviewer)")
    second, ana, _ = _reviewer_page(browser, server, "ana (lead)")
    try:
        shown = {_trace_shown(ravi), _trace_shown(ana)}
        assert len(shown) == 2
        before = _trace_shown(ravi)
        ravi.get_by_role("button", name="Approve").click()
        ravi.locator("h3").filter(has_text="Trace").filter(has_not_text=before).first.wait_for(timeout=30_000)
        settle(ravi)
        assert _trace_shown(ravi) not in (before, _trace_shown(ana))
        db = open_db(review_db)
        holders = db.execute(
            "SELECT claimed_by, trace_id FROM scrubs WHERE status = 'pending' AND claimed_by IS NOT NULL"
        ).fetchall()
        assert sorted(holders) == sorted([("ana", _trace_shown(ana)), ("ravi", _trace_shown(ravi))])
    finally:
        first.close()
        second.close()
