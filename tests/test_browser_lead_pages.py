"""Lead pages in Chromium, as a lead uses them with keyboard and mouse: drift's send-to-sampling sends once
however it is submitted, a saved plan says so, the weekly cycle page gives a crontab line with the inbox,
and the gate shows a flipped row's input and both outputs in full, side by side."""

import os
from pathlib import Path

import pytest
from browser_support import go, open_app, settle, sign_in_as

from flywheel.store.db import open_db

pytestmark = pytest.mark.browser


def _drift_batches(db_path) -> int:
    return (
        open_db(db_path)
        .execute("SELECT count(*) FROM sample_batches WHERE plan_name = 'drift'")
        .fetchone()[0]
    )


def test_enter_then_a_click_sends_a_drift_cluster_batch_once(demo_served, page):
    server, server_db = demo_served
    open_app(page, server)
    sign_in_as(page, "ana (lead)")
    go(page, "Drift")
    before = _drift_batches(server_db)
    clusters = page.get_by_label("Clusters")
    clusters.fill("2")
    clusters.press("Enter")  # submits the form
    page.get_by_text("sent to the scrubber").first.wait_for(timeout=60_000)
    settle(page)
    page.get_by_role("button", name="Send to sampling").click()
    page.get_by_text("Already sent").first.wait_for(timeout=60_000)
    settle(page)
    assert _drift_batches(server_db) == before + 1


def test_a_saved_plan_says_so(demo_served, page):
    server, _ = demo_served
    open_app(page, server)
    sign_in_as(page, "ana (lead)")
    go(page, "Sample")
    page.get_by_text("Edit plan").click()
    page.get_by_role("button", name="Save plan").click()
    page.get_by_text("Saved plan weekly").wait_for(timeout=30_000)


def test_the_cycle_page_gives_a_crontab_line_with_the_inbox(demo_served, page, tmp_path):
    server, _ = demo_served
    open_app(page, server)
    sign_in_as(page, "ana (lead)")
    go(page, "Weekly cycle")
    inbox = page.get_by_label("Inbox folder (new trace files are imported from it; empty: no import)")
    inbox.fill(str(tmp_path))
    inbox.press("Enter")
    settle(page)
    line = page.get_by_test_id("stCode").filter(has_text="flywheel cycle").first
    line.wait_for(timeout=30_000)
    text = line.inner_text()
    assert text.startswith("0 6 * * 1 ") and f"--inbox {tmp_path}" in text, text


def test_the_gate_shows_a_flipped_row_in_full_side_by_side(demo_served, page, tmp_path):
    server, _ = demo_served
    open_app(page, server)
    sign_in_as(page, "ana (lead)")
    go(page, "Release gate")
    row = page.get_by_test_id("stExpander").filter(has_text="fail→pass").first
    row.locator("summary").first.click()
    row.get_by_text("Scrubbed input").wait_for(timeout=30_000)
    base, challenger = (row.get_by_text(f"{side}: support-bot") for side in ("baseline", "challenger"))
    boxes = [base.bounding_box(), challenger.bounding_box()]
    assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"], "the two outputs are not side by side"
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 2
    row.scroll_into_view_if_needed()
    page.screenshot(path=str(Path(os.environ.get("FLYWHEEL_SCREENSHOTS", tmp_path)) / "gate_flipped_row.png"))
    texts = row.get_by_test_id("stText").all_inner_texts()
    assert len(texts) >= 4 and not any(t.endswith("…") for t in texts), texts
