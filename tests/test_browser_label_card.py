"""The label card for an hour of work, in Chromium on a 1280x720 laptop screen: number keys, the keys
that reach the picker and the expected behaviour, the form beside the trace, editing an earlier label,
and the lead's review step before labels fold."""

import os
from pathlib import Path

import pytest
from browser_support import card_on_screen, go, label_state, open_app, serve_app, settle, sign_in_as

from flywheel.demo.build import build_demo
from flywheel.labeling.labels import most_used_codes
from flywheel.store.db import open_db

pytestmark = pytest.mark.browser
LAPTOP = {"width": 1280, "height": 720}
PICKER = 'input[aria-label^="Failure code (type to search"]'


@pytest.fixture(scope="module")
def server_db(tmp_path_factory):
    db_path = tmp_path_factory.mktemp("browser_card") / "demo.db"
    build_demo(db_path, seed=13, traces=1200)
    return db_path


@pytest.fixture(scope="module")
def server(server_db):
    with serve_app(server_db, env={"FLYWHEEL_EMBED_WORKER": "off"}) as (url, _):
        yield url


@pytest.fixture
def laptop(browser):
    context = browser.new_context(viewport=LAPTOP)
    yield context.new_page()
    context.close()


def _focused_label(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.getAttribute('aria-label') || ''")


def _shot(page, name: str) -> None:
    """Keep a screenshot where a person can read it (FLYWHEEL_SCREENSHOTS), else in the test's tmp dir."""
    folder = Path(os.environ.get("FLYWHEEL_SCREENSHOTS", "/tmp"))
    page.screenshot(path=str(folder / name))


def test_keys_pick_a_code_reach_the_fields_and_the_form_sits_beside_the_trace(server, server_db, laptop):
    page = laptop
    open_app(page, server)
    sign_in_as(page, "tom (labeler)")
    go(page, "Label")
    shown = card_on_screen(page)
    _shot(page, "label_card_1280x720.png")
    form = page.get_by_role("button", name="Known failure").bounding_box()
    picker = page.locator(PICKER).bounding_box()
    trace = page.get_by_test_id("stChatMessage").first.bounding_box()
    assert form["y"] + form["height"] <= LAPTOP["height"], "the buttons are below the fold"
    assert picker["y"] + picker["height"] <= LAPTOP["height"], "the code picker is below the fold"
    assert trace["x"] + trace["width"] <= picker["x"], "the form is not beside the trace"

    page.keyboard.press("/")
    assert _focused_label(page).startswith("Failure code"), "/ did not reach the code picker"
    assert page.locator(PICKER).input_value() == "", "the / was typed into the picker"
    page.keyboard.press("Escape")
    first = most_used_codes(open_db(server_db))[0]
    page.keyboard.press("1")
    settle(page)
    guideline = page.get_by_test_id("stCaptionContainer").filter(has_text=f"Guideline · {first} — ").first
    guideline.wait_for(timeout=10_000)
    _shot(page, "label_card_code_1280x720.png")
    for part, box in [
        ("the code's guideline", guideline.bounding_box()),
        ("the expected behaviour", page.get_by_label("Expected behaviour").bounding_box()),
        ("the pass criterion", page.get_by_label("Pass criterion").bounding_box()),
        ("the buttons", page.get_by_role("button", name="Known failure").bounding_box()),
    ]:
        assert box["y"] + box["height"] <= LAPTOP["height"], f"with a code picked, {part} is below the fold"
        assert box["x"] >= trace["x"] + trace["width"], f"{part} is not beside the trace"
    page.keyboard.press("e")
    assert _focused_label(page) == "Expected behaviour", "E did not reach the expected behaviour"
    page.keyboard.type("Answer the question asked.")
    page.keyboard.press("Tab")
    page.keyboard.type("Names the real rule.")
    tabs = 0  # the seven action buttons (coverage included) come first, the note right after them
    while tabs < 12 and _focused_label(page) != "Note (optional, for not a bug)":
        page.keyboard.press("Tab")
        tabs += 1
    assert tabs == 8, f"the note is {tabs} tabs from the pass criterion"
    page.keyboard.press("Escape")
    _, _, before = label_state(server_db, "tom")
    page.keyboard.press("k")
    page.wait_for_function(
        "(shown) => [...document.querySelectorAll('h3')].some(h => h.innerText.startsWith('Trace ')"
        " && !h.innerText.endsWith(shown))",
        arg=shown,
        timeout=30_000,
    )
    stored = (
        open_db(server_db)
        .execute(
            "SELECT trace_id, code, expected, pass_criterion FROM labels WHERE labeler = 'tom' AND id > ?",
            [before],
        )
        .fetchall()
    )
    assert stored == [(shown, first, "Answer the question asked.", "Names the real rule.")]


def test_a_labeler_edits_an_earlier_label_from_my_recent_labels(server, server_db, laptop):
    page = laptop
    open_app(page, server)
    sign_in_as(page, "lena (labeler)")
    go(page, "Label")
    first = card_on_screen(page)
    page.keyboard.press("b")
    second = card_on_screen(page)
    while second == first:
        second = card_on_screen(page)
    page.keyboard.press("b")
    card_on_screen(page)
    db = open_db(server_db)
    (label_id,) = db.execute(
        "SELECT id FROM labels WHERE labeler = 'lena' AND trace_id = ? AND undone_at IS NULL", [first]
    ).fetchone()
    page.get_by_text("My recent labels").click()
    picker = page.get_by_label("Label to edit")
    picker.scroll_into_view_if_needed()
    page.mouse.wheel(0, 300)  # room below the box for its list, as a person scrolls to open it
    picker.click()
    page.keyboard.type(first)  # type-ahead narrows the list; pick the option once it is drawn
    page.get_by_role("option").filter(has_text=first).first.click()
    settle(page)
    _shot(page, "label_edit_1280x720.png")
    page.get_by_test_id("stRadio").get_by_text("known failure", exact=True).click()
    settle(page)
    code = most_used_codes(db)[0]
    page.get_by_test_id("stRadio").get_by_role("radio", name="known failure").wait_for(timeout=10_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('input[aria-label=\"Code\"]')].some(i => !i.disabled)",
        timeout=30_000,
    )
    page.get_by_label("Code", exact=True).click()
    page.keyboard.type(code)
    page.keyboard.press("Enter")
    settle(page)
    page.get_by_label("Expected", exact=True).fill("Say when the card arrives.")
    page.get_by_label("Criterion", exact=True).fill("Gives a date.")
    page.get_by_role("button", name="Save edit").click()
    settle(page)
    page.get_by_text(f"label {label_id} is now label").wait_for(timeout=10_000)
    live = db.execute(
        "SELECT kind, code, expected, edited_by FROM labels WHERE labeler = 'lena' AND trace_id = ?"
        " AND undone_at IS NULL",
        [first],
    ).fetchall()
    assert live == [("known", code, "Say when the card arrives.", "lena")]
    other = "SELECT kind FROM labels WHERE trace_id = ? AND labeler = 'lena' AND undone_at IS NULL"
    assert db.execute(other, [second]).fetchall() == [("not_a_bug",)], "another label changed"


def test_the_lead_turns_on_review_and_accepts_a_label(server, server_db, laptop):
    page = laptop
    open_app(page, server)
    sign_in_as(page, "ana (lead)")
    go(page, "Label")
    db = open_db(server_db)
    page.get_by_text("Labels fold only after a lead accepts or corrects them").click()
    settle(page)
    page.get_by_role("button", name="Accept", exact=True).first.wait_for(timeout=30_000)
    assert db.execute("SELECT value FROM label_settings WHERE name = 'review_step'").fetchone() == (1,)
    (oldest,) = db.execute(
        "SELECT id FROM labels WHERE undone_at IS NULL AND reviewed_at IS NULL"
        " ORDER BY created_at, id LIMIT 1"
    ).fetchone()
    page.get_by_role("button", name="Accept", exact=True).first.click()
    settle(page)
    page.get_by_text("Accepted 1 label(s)").wait_for(timeout=10_000)
    assert db.execute("SELECT reviewed_by FROM labels WHERE id = ?", [oldest]).fetchone() == ("ana",)
    _shot(page, "label_review_1280x720.png")
