"""The Review page's keys in Chromium, as a reviewer uses them: a jump to a pending trace (by keyboard and
by mouse) hands the keyboard back to the page, so A, X and N act at once; letters typed into a field stay
in it; Esc leaves the field and the shortcuts work again."""

import pytest
from browser_support import go, open_app, settle, sign_in_as

from flywheel.store.db import open_db

pytestmark = pytest.mark.browser
JUMP = "Pending trace"


def _shown(page) -> str:
    heading = page.locator("h3").filter(has_text="Trace ").first
    heading.wait_for(timeout=30_000)
    page.get_by_role("button", name="Approve").wait_for(timeout=30_000)
    page.wait_for_function("window.flywheelReviewGuard === true", timeout=30_000)
    settle(page)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return heading.inner_text().split()[-1]


def _focus(page) -> str:
    """What holds the keyboard: 'body', or the focused control's label or tag."""
    return page.evaluate(
        "(() => { const el = document.activeElement;"
        " if (!el || el === document.body) return 'body';"
        " return el.getAttribute('aria-label') || el.tagName; })()"
    )


def _scrub(db_path, trace_id: str) -> tuple:
    return (
        open_db(db_path)
        .execute(
            "SELECT s.id, s.status, s.reviewed_by, s.note,"
            " EXISTS (SELECT 1 FROM review_skips k WHERE k.scrub_id = s.id AND k.reviewer = 'ravi')"
            " FROM scrubs s WHERE s.trace_id = ? AND s.is_current = 1",
            [trace_id],
        )
        .fetchone()
    )


def _pending(db_path, besides: str) -> list[str]:
    rows = open_db(db_path).execute(
        "SELECT trace_id FROM scrubs WHERE is_current = 1 AND status = 'pending' AND trace_id != ?"
        " ORDER BY trace_id DESC",
        [besides],
    )
    return [row[0] for row in rows]


def _moved_on(page, trace_id: str) -> str:
    page.locator("h3").filter(has_text=f"Trace {trace_id}").wait_for(state="detached", timeout=30_000)
    return _shown(page)


def test_the_review_keys_are_never_trapped_by_the_jump_box_or_a_field(demo_served, page):
    server, server_db = demo_served
    open_app(page, server)
    sign_in_as(page, "ravi (reviewer)")
    go(page, "Review scrubs")
    first = _shown(page)
    by_keys, by_mouse = _pending(server_db, first)[:2]

    # a jump by keyboard: type the trace in the box, Enter; N skips it straight away
    page.get_by_test_id("stSelectbox").filter(has_text=JUMP).click()
    page.keyboard.type(by_keys)
    page.keyboard.press("Enter")
    page.locator("h3").filter(has_text=f"Trace {by_keys}").wait_for(timeout=30_000)
    assert _shown(page) == by_keys
    assert _focus(page) == "body", f"the jump box kept the keyboard: {_focus(page)}"
    page.keyboard.press("n")
    _moved_on(page, by_keys)
    assert _scrub(server_db, by_keys)[1:] == ("pending", None, None, 1), "N did not skip the jumped-to trace"

    # a jump by mouse: click the option; X asks to confirm, a second X does not reject, Cancel keeps it
    page.get_by_test_id("stSelectbox").filter(has_text=JUMP).click()
    page.keyboard.type(by_mouse)
    page.get_by_role("option", name=by_mouse, exact=True).click()
    page.locator("h3").filter(has_text=f"Trace {by_mouse}").wait_for(timeout=30_000)
    assert _shown(page) == by_mouse
    assert _focus(page) == "body", f"the jump box kept the keyboard: {_focus(page)}"
    page.keyboard.press("x")
    page.get_by_role("button", name="Yes, reject").wait_for(timeout=30_000)
    page.keyboard.press("x")
    settle(page)
    assert _scrub(server_db, by_mouse)[1] == "pending", "a second X rejected without the confirmation"
    page.get_by_role("button", name="Cancel").click()
    page.get_by_role("button", name="Yes, reject").wait_for(state="detached", timeout=30_000)
    settle(page)

    # letters typed into the note are the note's: no approve (a), skip (n) or reject (x)
    page.get_by_label("Note (optional)").click()
    page.keyboard.type("an exact name")
    settle(page)
    assert _shown(page) == by_mouse, "a letter typed into the note acted on the card"
    assert _scrub(server_db, by_mouse)[1:] == ("pending", None, None, 0)
    assert page.get_by_label("Note (optional)").input_value() == "an exact name"
    # Esc leaves the field; A approves, with the note
    page.keyboard.press("Escape")
    settle(page)
    assert _focus(page) == "body", f"Esc did not leave the note: {_focus(page)}"
    page.keyboard.press("a")
    _moved_on(page, by_mouse)
    assert _scrub(server_db, by_mouse)[1:] == ("approved", "ravi", "an exact name", 0)
