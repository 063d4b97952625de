"""The Label and Taxonomy pages through app.py: each action writes the right rows, no raw text shows."""

import json
from datetime import timedelta

import pytest
from labels_support import LENA, RAW_ONLY, T0, TOM, add_code, seed_queue
from pages_support import CODE_PICKER, NEW_DEFINITION, app, button, open_page, rows, shown_text, widget

from flywheel.labeling.labels import claim_next, record_label
from flywheel.review import label_queue
from flywheel.store.clock import format_ts
from flywheel.store.db import open_db, write
from flywheel.vectors.embeddings import embed_all, month_siblings
from flywheel.vectors.stand_in import bag_of_words
from pages._ui import md


@pytest.fixture
def label_db(tmp_path):
    path = tmp_path / "label.db"
    db = open_db(path)
    seed_queue(db, 8, batches={1: list(range(8))}, approve=lambda n: n != 7)
    add_code(db)
    embed_all(db, encoder=bag_of_words)  # what the background worker does in the app
    month_siblings(db, LENA, "t-00000", encoder=bag_of_words)  # the month's other texts, same encoder
    db.close()
    return path


def test_labeler_labels_known_and_not_a_bug_and_undoes(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    assert at.subheader[0].value == r"Trace t\-00000"
    assert any("[PERSON]" in t.value for t in at.text)
    widget(at.selectbox, CODE_PICKER).select("HALLUCINATED_FEE")
    widget(at.text_input, "Expected behaviour").input("Quote the fee schedule")
    widget(at.text_input, "Pass criterion").input("No fee outside the schedule")
    widget(at.selectbox, "Adversarial").select("prompt_injection")
    button(at, "Known failure").click().run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == r"Trace t\-00003"  # anomaly priority (n % 3 == 0) first
    button(at, "Not a bug").click().run()
    assert rows(label_db) == [
        ("t-00000", "lena", "known", "HALLUCINATED_FEE", "card"),
        ("t-00003", "lena", "not_a_bug", None, "card"),
    ]
    assert rows(label_db, "SELECT adversarial, expected FROM labels WHERE id = 1") == [
        ("prompt_injection", "Quote the fee schedule")
    ]
    assert at.subheader[0].value == r"Trace t\-00006"
    button(at, "Undo").click().run()
    assert at.subheader[0].value == r"Trace t\-00003"
    assert rows(label_db, "SELECT count(*) FROM labels WHERE undone_at IS NULL") == [(1,)]
    assert [i.value for i in at.info] == [md("Undid your label on trace t-00003: not a bug")]
    assert RAW_ONLY not in shown_text(at)


def test_known_without_a_code_shows_the_reason_and_writes_nothing(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    button(at, "Known failure").click().run()
    assert "needs the expected behaviour" in at.error[0].value
    assert rows(label_db) == [] and at.subheader[0].value == r"Trace t\-00000"


def test_new_failure_mode_then_siblings(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "tom"), "pages/label.py")
    button(at, "New failure").click().run()
    widget(at.text_input, "Expected behaviour").input("Quote only the fee schedule.")
    widget(at.text_input, "Pass criterion").input("Names no fee outside the schedule.")
    widget(at.text_input, "Code").input("MADE_UP_CARD_FEE")
    widget(at.text_input, "Name").input("Made-up card fee")
    widget(at.text_area, "Definition (two sentences: what it is, how to recognise it)").input(NEW_DEFINITION)
    button(at, "Create code and label").click().run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == r"Siblings for MADE\_UP\_CARD\_FEE"
    boxes = at.checkbox
    assert len(boxes) == 6  # the other approved traces (t-00007 is not approved)
    boxes[0].check()
    boxes[1].check()
    at.run()
    button(at, r"Add 2 selected to MADE\_UP\_CARD\_FEE").click().run()
    assert rows(label_db, "SELECT kind, code, via, labeler FROM labels ORDER BY id") == [
        ("new", "MADE_UP_CARD_FEE", "card", "tom"),
        ("known", "MADE_UP_CARD_FEE", "sibling", "tom"),
        ("known", "MADE_UP_CARD_FEE", "sibling", "tom"),
    ]
    assert open_db(label_db)["taxonomy"].get("MADE_UP_CARD_FEE")["created_by"] == "tom"
    assert at.subheader[0].value.startswith(r"Trace t\-0000")
    assert RAW_ONLY not in shown_text(at)


def test_two_labelers_see_different_items(label_db, monkeypatch):
    lena = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    tom = open_page(app(label_db, monkeypatch, "tom"), "pages/label.py")
    assert lena.subheader[0].value != tom.subheader[0].value


def test_lead_sets_overlap_and_reads_agreement(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "ana"), "pages/label.py")
    assert any("No item of this batch has two labels" in c.value for c in at.caption)
    at.number_input(key="overlap_1").set_value(2)
    button(at, "Set labels per item").click().run()
    db = open_db(label_db)
    assert db["batch_overlap"].get(1)["labels_per_item"] == 2
    # lena and tom label the same four items: agree on three (not a bug), differ on one
    for n in range(4):
        for user in (LENA, TOM):
            claim = claim_next(db, user, now=T0, minutes=10)
            disagree = n == 3 and user is TOM
            kind = {"kind": "known", "code": "HALLUCINATED_FEE", "expected": "x", "pass_criterion": "y"}
            record_label(db, user, claim, **(kind if disagree else {"kind": "not_a_bug"}), now=T0)
    at.run()
    # by hand: observed 3/4; chance (4/4 * 3/4) = 0.75 for not a bug, 0 for the code -> kappa 0
    assert at.metric[0].label == "Cohen's kappa over 4 items" and at.metric[0].value == "0.00"
    first = db.execute("SELECT trace_id FROM labels ORDER BY id LIMIT 1").fetchone()[0]
    db.execute("UPDATE labels SET kind = 'known', code = 'HALLUCINATED_FEE' WHERE trace_id = ?", [first])
    at.run()
    # now 2 agree on the code, 1 on not a bug, 1 differs: po 3/4, pe 1/2 * 1/4 + 1/2 * 3/4 = 1/2 -> 0.5
    assert at.metric[0].value == "0.50"
    assert list(at.dataframe[0].value["code or kind"]) == ["HALLUCINATED_FEE", "not_a_bug"]


def test_taxonomy_page_lead_edits_and_labeler_reads(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "ana"), "pages/taxonomy.py")
    assert list(at.dataframe[0].value["code"]) == ["HALLUCINATED_FEE"]
    at.text_area[0].input("A fee is quoted that we never charge. Check the schedule first.")
    button(at, "Save definition").click().run()
    assert not at.exception and not at.error
    assert rows(label_db, "SELECT change FROM taxonomy_history ORDER BY id") == [("created",), ("edited",)]
    lena = open_page(app(label_db, monkeypatch, "lena"), "pages/taxonomy.py")
    assert not [b for b in lena.button if b.label.startswith(("Merge", "Retire"))]
    assert RAW_ONLY not in shown_text(lena)


def test_taxonomy_page_keeps_a_bad_entry_for_fixing_and_clears_a_good_one(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "ana"), "pages/taxonomy.py")
    at.text_input(key="new_code").input("SLOW_REFUND")
    at.text_input(key="new_name").input("Slow refund")
    at.text_area(key="new_definition").input("Too short")
    button(at, "Add code").click().run()
    assert not at.exception and at.error and at.text_input(key="new_code").value == "SLOW_REFUND"
    at.text_area(key="new_definition").input("The refund takes longer than promised. The reply hides it.")
    button(at, "Add code").click().run()
    assert not at.exception and not at.error
    assert rows(label_db, "SELECT code FROM taxonomy WHERE code = 'SLOW_REFUND'") == [("SLOW_REFUND",)]
    assert at.text_input(key="new_code").value == ""


def test_the_chosen_code_shows_its_definition_beside_the_item(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    assert not any("Any amount not in the schedule" in c.value for c in at.caption)
    widget(at.selectbox, CODE_PICKER).select("HALLUCINATED_FEE")
    at.run()
    assert any(
        c.value.startswith("Guideline · **HALLUCINATED\\_FEE — Hallucinated fee**  \nThe assistant quotes")
        for c in at.caption
    )


def test_skip_moves_on_and_release_pauses(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    button(at, "Skip").click().run()
    assert at.subheader[0].value == r"Trace t\-00003"
    tom = open_page(app(label_db, monkeypatch, "tom"), "pages/label.py")
    assert tom.subheader[0].value == r"Trace t\-00000"  # the skipped trace went to the others
    button(at, "Release this trace and pause").click().run()
    assert not at.subheader and "You hold no trace" in at.info[0].value
    assert rows(label_db, "SELECT claimed_by FROM label_queue WHERE trace_id = 't-00003'") == [(None,)]
    button(at, "Resume labeling").click().run()
    assert at.subheader[0].value == r"Trace t\-00003"
    assert rows(label_db, "SELECT count(*) FROM audit_log WHERE action IN ('skip', 'release_claim')") == [
        (2,)
    ]


MARKDOWN_ID = "![pwn](http://127.0.0.1:9/x.png) **t**"


def test_a_stale_claim_is_refused_in_plain_words_shown_literally_and_cleared_on_the_next_card(
    label_db, monkeypatch
):
    db = open_db(label_db)
    db["traces"].insert({"trace_id": MARKDOWN_ID, "ts": "2026-05-01T10:00:00.000Z", "week": "2026-W18",
                         "input": "q", "content_hash": "md"})  # fmt: skip
    db["batch_items"].insert({"batch_id": 1, "trace_id": MARKDOWN_ID, "reasons": "[]", "priority": 0})
    scrub_id = db["scrubs"].insert({"trace_id": MARKDOWN_ID, "status": "approved", "input": "q"}).last_pk
    with write(db):
        label_queue.enqueue_scrub(db, scrub_id)
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    assert at.subheader[0].value == f"Trace {md(MARKDOWN_ID)}"
    # lena's hold lapses while she is away; tom gets the trace and labels it
    db.execute("UPDATE label_queue SET claim_expires = '2000-01-01' WHERE claimed_by = 'lena'")
    record_label(db, TOM, claim_next(db, TOM, minutes=10), "not_a_bug")
    button(at, "Not a bug").click().run()
    assert len(at.error) == 1
    message = at.error[0].value
    assert "someone else labeled this trace while it was away from you" in message
    assert md(MARKDOWN_ID) in message and "![" not in message  # the id renders literally, never as an image
    assert rows(label_db, "SELECT labeler FROM labels") == [("tom",)]
    shown = at.subheader[0].value
    button(at, "Not a bug").click().run()
    assert not at.error and at.subheader[0].value != shown


def test_taxonomy_merge_and_retire_ask_first_and_the_picker_stays_on_the_merged_code(label_db, monkeypatch):
    db = open_db(label_db)
    add_code(db, "AAA_FIRST")
    add_code(db, "ZZZ_LAST")
    with write(db):
        db["taxonomy"].update("ZZZ_LAST", {"name": "**bold** [link](http://x) $x$"})
    at = open_page(app(label_db, monkeypatch, "ana"), "pages/taxonomy.py")
    at.selectbox(key="taxonomy_entry").select("HALLUCINATED_FEE").run()
    widget(at.selectbox, r"Merge HALLUCINATED\_FEE into").select("ZZZ_LAST").run()
    button(at, r"Merge HALLUCINATED\_FEE").click().run()
    assert "Merge HALLUCINATED\\_FEE into ZZZ\\_LAST?" in at.warning[0].value
    assert rows(label_db, "SELECT status FROM taxonomy WHERE code = 'HALLUCINATED_FEE'") == [("active",)]
    button(at, r"Yes, merge HALLUCINATED\_FEE").click().run()
    assert not at.exception and not at.error
    assert rows(label_db, "SELECT status, merged_into FROM taxonomy WHERE code = 'HALLUCINATED_FEE'") == [
        ("merged", "ZZZ_LAST")
    ]
    assert at.selectbox(key="taxonomy_entry").value == "HALLUCINATED_FEE"
    assert at.subheader[0].value == r"HALLUCINATED\_FEE · merged"
    names = list(at.dataframe[0].value["name"])
    assert "**bold** [link](http://x) $x$" in names  # the table shows a name as typed
    at.selectbox(key="taxonomy_entry").select("AAA_FIRST").run()
    button(at, r"Retire AAA\_FIRST").click().run()
    button(at, "Cancel").click().run()
    assert rows(label_db, "SELECT status FROM taxonomy WHERE code = 'AAA_FIRST'") == [("active",)]
    button(at, r"Retire AAA\_FIRST").click().run()
    button(at, r"Yes, retire AAA\_FIRST").click().run()
    assert rows(label_db, "SELECT status FROM taxonomy WHERE code = 'AAA_FIRST'") == [("retired",)]
    assert at.selectbox(key="taxonomy_entry").value == "AAA_FIRST"


def test_a_lead_reading_the_page_claims_nothing_until_they_start(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "ana"), "pages/label.py")
    assert not at.exception
    assert not [s for s in at.subheader if s.value.startswith("Trace")]
    assert open_db(label_db)["claims"].count == 0
    assert any("Start labeling" in i.value for i in at.info)
    button(at, "Start labeling").click().run()
    assert at.subheader[0].value.startswith(r"Trace t\-0000")
    assert open_db(label_db)["claims"].count == 1


def test_every_card_starts_with_empty_fields(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    first = at.subheader[0].value
    widget(at.text_input, "Expected behaviour").input("typed for the first trace")
    widget(at.text_input, "Note (optional, for not a bug)").input("a note for the first trace")
    widget(at.selectbox, "Adversarial").select("jailbreak")
    button(at, "Not a bug").click().run()
    assert at.subheader[0].value != first
    assert widget(at.text_input, "Expected behaviour").value == ""
    assert widget(at.text_input, "Note (optional, for not a bug)").value == ""
    assert widget(at.selectbox, "Adversarial").value == "none"
    assert widget(at.selectbox, CODE_PICKER).value is None
    button(at, "Not a bug").click().run()  # nothing typed on this card: nothing from the last one is saved
    notes = rows(label_db, "SELECT note, adversarial FROM labels ORDER BY id")
    assert notes == [("a note for the first trace", "jailbreak"), (None, "none")]
    # an undo brings the first trace back on a fresh card, not with what was typed on it before
    button(at, "Undo").click().run()
    assert widget(at.text_input, "Note (optional, for not a bug)").value == ""


def test_a_multi_turn_card_ends_with_the_reply_being_judged(label_db, monkeypatch):
    db = open_db(label_db)
    messages = [
        {"role": "user", "content": "My card payment failed twice."},
        {"role": "assistant", "content": "Which card did you use?"},
        {"role": "user", "content": "The blue one."},
    ]
    reply = "Please send me the full card number so I can check."
    with write(db):
        db.execute("UPDATE scrubs SET messages = ?, output = ? WHERE trace_id = 't-00000'",
                   [json.dumps(messages), reply])  # fmt: skip
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    assert at.subheader[0].value == r"Trace t\-00000"
    shown = [t.value for t in at.text if t.value in {m["content"] for m in messages} | {reply}]
    assert shown == [m["content"] for m in messages] + [reply]
    assert "Reply being judged" in [c.value for c in at.caption]


def test_the_labelers_claim_follows_the_configured_minutes(label_db, monkeypatch, clock):
    monkeypatch.setenv("FLYWHEEL_CLAIM_MINUTES", "3")
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    button(at, "Not a bug").click().run()
    clock.advance(minutes=1)
    button(at, "Undo").click().run()
    assert not at.exception and not at.error
    taken = rows(label_db, "SELECT claimed_at, expires_at FROM claims WHERE labeler = 'lena' ORDER BY id")
    start, undone = clock.moment - timedelta(minutes=1), clock.moment
    held = [(format_ts(start), format_ts(start + timedelta(minutes=3)))] * 2
    assert taken == [*held, (format_ts(undone), format_ts(undone + timedelta(minutes=3)))]
