"""The labeling station in Chromium: shortcuts while typing, what a labeler can read, siblings.

The real app runs on a free port against a tmp demo database, with its background embedding worker on.
"""

import json
import re
import time

import pytest
from browser_support import card_on_screen, go, label_state, open_app, serve_app, settle, sign_in_as
from playwright.sync_api import expect

from flywheel.demo.build import build_demo
from flywheel.store.db import open_db
from flywheel.vectors.embeddings import pending_scrubs

SENTENCE = "Answer the question asked."

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server_db(tmp_path_factory):
    db_path = tmp_path_factory.mktemp("browser_label") / "demo.db"
    build_demo(db_path, seed=11, traces=1200)
    return db_path


@pytest.fixture(scope="module")
def server(server_db):
    with serve_app(server_db, env={"FLYWHEEL_EMBED_WORKER": "on"}) as (url, _):
        yield url


def _open_as(page, url: str, label: str) -> None:
    open_app(page, url)
    sign_in_as(page, label)


def test_typing_after_choosing_a_code_fires_no_shortcut(server, server_db, page):
    _open_as(page, server, "tom (labeler)")
    go(page, "Label")
    shown = card_on_screen(page)
    before = label_state(server_db, "tom")
    page.get_by_label("Failure code (type to search").focus()
    page.keyboard.type("WRONG_POL")  # type-ahead, then Enter picks
    page.keyboard.press("Enter")
    settle(page)
    guideline = page.get_by_test_id("stCaptionContainer").filter(
        has_text="Guideline · WRONG_POLICY — Wrong policy stated"
    )
    guideline.wait_for(timeout=10_000)  # the chosen code's definition beside the item
    page.keyboard.press("Tab")
    page.keyboard.type(SENTENCE)  # space, n, k, u, s, b, d: each a shortcut key outside a field
    settle(page)
    assert page.get_by_label("Expected behaviour").input_value() == SENTENCE
    assert guideline.count() == 1, "the code was cleared"
    assert page.get_by_text("New failure mode").count() == 0, "New failure opened"
    assert card_on_screen(page) == shown, "the card moved on"
    assert label_state(server_db, "tom") == before, "a label was submitted or undone"
    # on a focused button or any widget, a typed word is no command either
    page.keyboard.press("Tab")
    page.keyboard.type("x")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "BUTTON"
    page.keyboard.type("nubksd")  # (Space would press the focused button, as in any web page)
    settle(page)
    assert page.get_by_text("New failure mode").count() == 0 and card_on_screen(page) == shown
    assert label_state(server_db, "tom") == before
    # Esc leaves a field and the keys are shortcuts again: K labels with what was typed, U undoes it
    page.get_by_label("Pass criterion").focus()
    page.keyboard.press("Escape")
    page.keyboard.press("k")
    page.get_by_text(f"{shown}: WRONG_POLICY").wait_for(timeout=30_000)  # the label's confirmation
    count, undone, last = label_state(server_db, "tom")
    assert (count, undone) == (before[0] + 1, before[1])
    label = open_db(server_db).execute(
        "SELECT trace_id, kind, code, expected, pass_criterion FROM labels WHERE id = ?", [last]
    )
    assert label.fetchone() == (shown, "known", "WRONG_POLICY", SENTENCE, "x")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("u")
    page.get_by_text(f"Undid your label on trace {shown}: known failure WRONG_POLICY").wait_for(
        timeout=30_000
    )
    assert label_state(server_db, "tom") == (before[0] + 1, before[1] + 1, last)


def _raw_secrets(db, trace_ids: list[str]) -> dict[str, list[str]]:
    """Per trace, the raw words its approved scrub redacted: what a labeler must never read."""
    secrets = {}
    for trace_id in trace_ids:
        raw = db.execute(
            "SELECT input, output, messages FROM traces WHERE trace_id = ?", [trace_id]
        ).fetchone()
        fields = {"input": raw[0], "output": raw[1] or ""}
        for n, message in enumerate(json.loads(raw[2] or "[]")):
            fields[f"messages[{n}]"] = message.get("content") or ""
        spans = db.execute(
            "SELECT r.field, r.start, r.end FROM redactions r JOIN scrubs s ON s.id = r.scrub_id"
            " WHERE s.trace_id = ? AND r.removed_by IS NULL",
            [trace_id],
        )
        words = {fields.get(field, "")[start:end] for field, start, end in spans}
        scrub = db.execute("SELECT input, output, messages FROM scrubs WHERE trace_id = ?", [trace_id])
        approved_text = " ".join(part or "" for part in (scrub.fetchone() or ()))
        # words redacted in one place but left in another are the scrub's miss, not the page's
        secrets[trace_id] = sorted(w for w in words if len(w) >= 4 and w not in approved_text)
    return secrets


def test_labeler_reads_scrubbed_text_only_in_the_traces_table_and_on_the_card(server, server_db, page):
    _open_as(page, server, "lena (labeler)")
    assert page.get_by_test_id("stSidebarNav").get_by_role("link", name="Import", exact=True).count() == 0
    go(page, "Traces")
    page.get_by_text("Raw trace text is hidden").wait_for(timeout=30_000)
    db = open_db(server_db)
    seen = {}
    # thumbs-down traces are all sampled: the newest week's wait for review, older weeks' are approved
    signal = page.get_by_test_id("stMultiSelect").filter(has=page.get_by_text("Signal", exact=True))
    signal.click()
    page.get_by_role("option", name="thumbs down").click()
    page.keyboard.press("Escape")
    settle(page)
    for approved_only in (True, False):
        if not approved_only:
            # the grid's accessible copy of its cells is redrawn lazily when its data changes in place, so
            # the table goes away (a trace id that matches nothing) while the view changes, and comes back
            trace_id_box = page.get_by_label("Trace id starts with")
            trace_id_box.fill("no-such-trace")
            trace_id_box.press("Enter")
            page.get_by_text("No trace matches").wait_for(timeout=30_000)
            box = page.get_by_role("checkbox", name="Approved scrubs only")
            settle(page)  # every trace, newest (pending) first; a click during a run is lost
            page.get_by_test_id("stCheckbox").get_by_text("Approved scrubs only").click()
            settle(page)
            expect(box).not_to_be_checked()
            trace_id_box.fill("")
            trace_id_box.press("Enter")
            settle(page)
        table = page.get_by_test_id("stDataFrame").locator("table").first
        table.wait_for(state="attached", timeout=30_000)  # the grid's accessible copy of its cells
        text = table.inner_text()
        shown = re.findall(r"t-\d{6}", text)
        marks = ",".join("?" * len(shown))
        scrubs = db.execute(f"SELECT trace_id, status, input FROM scrubs WHERE trace_id IN ({marks})", shown)
        for _, status, scrubbed in scrubs:
            seen.setdefault(status, []).append(scrubbed in text)
        leaks = {t: w for t, words in _raw_secrets(db, shown).items() for w in words if w in text}
        assert not leaks, f"raw text in the labeler's table: {leaks}"
    # the table really shows text: approved scrubs with their placeholders, never a pending one
    assert any(seen.get("approved", [])), f"no approved scrubbed text in the table: {seen}"
    assert seen.get("pending") and not any(seen["pending"]), f"a pending scrub reached a labeler: {seen}"

    go(page, "Label")
    trace_id = card_on_screen(page)
    card = page.get_by_test_id("stMain").inner_text()
    assert db.execute("SELECT input FROM scrubs WHERE trace_id = ?", [trace_id]).fetchone()[0][:40] in card
    leaks = [w for w in _raw_secrets(db, [trace_id])[trace_id] if w in card]
    assert not leaks, f"raw text on the label card of {trace_id}: {leaks}"


def test_a_new_failure_lists_siblings_with_the_whole_exchange(server, server_db, page):
    _open_as(page, server, "ravi (reviewer)")  # reviewers label too; lena and tom hold cards already
    go(page, "Label")  # the app started its embedding worker with the first session
    db = open_db(server_db)
    deadline = time.monotonic() + 400
    while pending_scrubs(db) or pending_scrubs(db, "reply"):
        assert time.monotonic() < deadline, "the background worker did not embed the approved scrubs"
        time.sleep(1)
    page.get_by_role("button", name="Start labeling").click()  # a reviewer claims only when asked
    card_on_screen(page)
    page.get_by_role("button", name="New failure").click()
    page.get_by_text("New failure mode").wait_for(timeout=30_000)
    settle(page)
    page.get_by_label("Code", exact=True).fill("PROMISED_CALLBACK")
    page.get_by_label("Name", exact=True).fill("Promised callback")
    page.get_by_label("Definition").fill("The reply promises a call back nobody makes. Look for a callback.")
    page.get_by_label("Expected behaviour").fill("Solve it in the chat")
    page.get_by_label("Pass criterion").fill("No callback promised")
    settle(page)
    page.get_by_role("button", name="Create code and label").click()
    page.locator("h3").filter(has_text="Siblings for PROMISED_CALLBACK").wait_for(timeout=30_000)
    settle(page)
    boxes = page.get_by_test_id("stCheckbox")
    # ten of the month's traces: approved ones with a tick box and their text, unreviewed ones by id only
    ten = (
        "document.querySelectorAll('[data-testid=stCheckbox]').length + [...document.querySelectorAll("
        "'[data-testid=stText]')].filter(t => t.innerText.startsWith('needs review: ')).length === 10"
    )
    page.wait_for_function(ten, timeout=30_000)
    assert boxes.count() > 0, "no approved sibling to tick"
    text = page.get_by_test_id("stText").filter(has_text="customer: ").first.inner_text()
    assert text.startswith("customer: ") and "\nassistant: " in text  # roles, not messages[n]
    assert boxes.first.inner_text().startswith("t-")  # the checkbox label: trace id, similarity
    assert page.get_by_test_id("stException").count() == 0


FIELDS = ("Expected behaviour", "Pass criterion", "Note (optional, for not a bug)")


def _next_card(page, shown: str) -> str:
    """Wait until the card shows another trace than ``shown``; return its id."""
    page.wait_for_function(
        "(shown) => [...document.querySelectorAll('h3')].some("
        "h => h.innerText.startsWith('Trace ') && !h.innerText.endsWith(shown))",
        arg=shown,
        timeout=30_000,
    )
    return card_on_screen(page)


def _assert_empty_card(page, trace_id: str) -> None:
    for label in FIELDS:
        assert page.get_by_label(label).input_value() == "", f"{label} on {trace_id} holds an old value"
    code = page.get_by_label("Failure code (type to search").input_value()
    assert code == "", f"the failure code on {trace_id} holds {code!r}"
    assert page.get_by_text("Guideline").count() == 0, f"an old guideline is shown on {trace_id}"


def _pick_code(page, how: str) -> None:
    picker = page.get_by_label("Failure code (type to search")
    picker.click() if how == "mouse" else picker.focus()
    page.keyboard.type("WRONG_POL")
    page.keyboard.press("Enter")
    settle(page)  # may look before the pick's run begins: the guideline shows it has ended
    page.get_by_test_id("stCaptionContainer").filter(has_text="Guideline · WRONG_POLICY").first.wait_for()


def test_twenty_cards_by_keyboard_and_mouse_never_carry_a_value(server, server_db, page):
    """Label by keyboard and mouse, skip and undo: every card starts empty, and every stored value was
    typed on the card of its own trace."""
    _open_as(page, server, "lena (labeler)")
    go(page, "Label")
    typed: dict[str, list[str]] = {}  # trace id -> every value typed on its card
    shown, step = card_on_screen(page), 0
    _, _, before = label_state(server_db, "lena")
    while step < 20:
        _assert_empty_card(page, shown)
        mine = [f"expected for {shown}", f"criterion for {shown}", f"note for {shown}"]
        typed.setdefault(shown, []).extend(mine)
        action = step % 6
        if action == 0:  # keyboard only: pick, type, leave the field, K
            _pick_code(page, "keyboard")
            page.keyboard.press("Tab")
            page.keyboard.type(mine[0])
            page.keyboard.press("Tab")
            page.keyboard.type(mine[1])
            page.keyboard.press("Escape")
            page.keyboard.press("k")
        elif action == 1:  # mouse: a note, then the button
            page.get_by_label(FIELDS[2]).click()
            page.keyboard.type(mine[2])
            page.get_by_role("button", name="Not a bug").click()
        elif action == 2:  # a click on the trace's text, then B with nothing typed
            page.get_by_test_id("stChatMessage").first.click()
            page.keyboard.press("b")
        elif action == 3:  # typed, then skipped with the mouse: nothing is saved, and nothing carries
            page.get_by_label(FIELDS[0]).fill(mine[0])
            page.get_by_label(FIELDS[2]).fill(mine[2])
            page.get_by_role("button", name=re.compile(r"^Skip")).click()
        elif action == 4:  # mouse all the way
            _pick_code(page, "mouse")
            page.get_by_label(FIELDS[0]).fill(mine[0])
            page.get_by_label(FIELDS[1]).fill(mine[1])
            page.get_by_role("button", name="Known failure").click()
        else:  # typed a note, then U: the last label comes back on a fresh card, and is labeled again
            page.get_by_label(FIELDS[2]).fill(mine[2])
            page.keyboard.press("Escape")
            page.keyboard.press("u")
            page.get_by_text("Undid your label on trace").wait_for(timeout=30_000)
            back = card_on_screen(page)
            _assert_empty_card(page, back)
            page.keyboard.press("b")
            shown = back
        shown = _next_card(page, shown)
        step += 1
    db = open_db(server_db)
    stored = db.execute(
        "SELECT trace_id, expected, pass_criterion, note FROM labels WHERE labeler = 'lena' AND id > ?",
        [before],
    ).fetchall()
    assert len(stored) >= 15
    for trace_id, *values in stored:
        for value in filter(None, values):
            assert value in typed.get(trace_id, []), f"{trace_id} holds {value!r}, typed for another trace"
    live = "SELECT count(*) FROM labels WHERE labeler = 'lena' AND undone_at IS NULL AND id > ?"
    assert db.execute(live, [before]).fetchone()[0] >= 13
