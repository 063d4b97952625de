"""The siblings panel of the Label page searches the month's traffic, sampled or not: a trace no reviewer
approved is listed as needs review with no text, and sending it for review puts it in a siblings batch."""

import json

import pytest
from labels_support import LENA, RAW_ONLY, add_code, seed_queue
from pages_support import NEW_DEFINITION, app, button, open_page, shown_text, widget

from flywheel.store.db import open_db
from flywheel.vectors.embeddings import embed_all, month_siblings
from flywheel.vectors.stand_in import bag_of_words

UNSAMPLED = "Only the raw text says card 99 has not arrived, Zed Unsampled"


@pytest.fixture
def month_db(tmp_path):
    path = tmp_path / "month.db"
    db = open_db(path)
    seed_queue(db, 8, batches={1: list(range(8))}, approve=lambda n: n != 7)
    db["traces"].insert(
        {
            "trace_id": "t-unsampled",
            "ts": "2026-05-09T10:00:00.000Z",
            "week": "2026-W19",
            "input": f"I am {RAW_ONLY}. {UNSAMPLED}",
            "content_hash": "h-unsampled",
        }
    )
    add_code(db)
    embed_all(db, encoder=bag_of_words)  # what the background worker does in the app
    month_siblings(db, LENA, "t-00000", encoder=bag_of_words)  # the month's other texts, same encoder
    db.close()
    return path


def new_failure(at) -> None:
    button(at, "New failure").click().run()
    widget(at.text_input, "Expected behaviour").input("Quote only the fee schedule.")
    widget(at.text_input, "Pass criterion").input("Names no fee outside the schedule.")
    widget(at.text_input, "Code").input("MADE_UP_CARD_FEE")
    widget(at.text_input, "Name").input("Made-up card fee")
    widget(at.text_area, "Definition (two sentences: what it is, how to recognise it)").input(NEW_DEFINITION)
    button(at, "Create code and label").click().run()
    assert not at.exception and not at.error


def test_an_unsampled_trace_is_listed_as_needs_review_without_text_and_sent_for_review(month_db, monkeypatch):
    at = open_page(app(month_db, monkeypatch, "tom"), "pages/label.py")
    new_failure(at)
    assert at.subheader[0].value == r"Siblings for MADE\_UP\_CARD\_FEE"
    texts = [t.value for t in at.text]
    needs_review = sorted(t for t in texts if t.startswith("needs review: "))
    assert [t.split(",")[0] for t in needs_review] == ["needs review: t-00007", "needs review: t-unsampled"]
    assert all(t.split(", similarity ")[1].replace(".", "").isdigit() for t in needs_review)
    assert len(at.checkbox) == 6  # only the approved candidates can be ticked
    assert all("t-00007" not in c.label and "t-unsampled" not in c.label for c in at.checkbox)
    shown = shown_text(at)
    assert RAW_ONLY not in shown and "card 99" not in shown and "Zed" not in shown
    assert "card 7 has not arrived" not in shown  # the pending scrub of t-00007 is not shown either

    button(at, "Send 2 for review as siblings").click().run()
    assert not at.exception and not at.error
    db = open_db(month_db)
    batch = db.execute("SELECT id, plan, created_by FROM sample_batches WHERE plan_name = 'siblings'")
    batch = batch.fetchall()
    assert len(batch) == 1 and batch[0][2] == "tom" and json.loads(batch[0][1])["anchor"] == "t-00000"
    items = db.execute("SELECT trace_id, stratum FROM batch_items WHERE batch_id = ?", [batch[0][0]])
    items = items.fetchall()
    assert items == [("t-unsampled", "sibling")]  # t-00007 waits for review in its batch already
    assert db.execute("SELECT status FROM scrubs WHERE trace_id = 't-unsampled'").fetchall() == [("pending",)]
    assert db.execute("SELECT actor FROM audit_log WHERE action = 'pull_siblings'").fetchall() == [("tom",)]
    assert "needs review: t-unsampled" in repr([t.value for t in at.text])  # still no text until approved
    assert "card 99" not in shown_text(at)


def test_sending_siblings_already_waiting_for_review_makes_no_batch(month_db, monkeypatch):
    at = open_page(app(month_db, monkeypatch, "tom"), "pages/label.py")
    new_failure(at)
    button(at, "Send 2 for review as siblings").click().run()
    button(at, "Send 2 for review as siblings").click().run()
    assert not at.exception and not at.error
    batches = open_db(month_db).execute("SELECT count(*) FROM sample_batches WHERE plan_name = 'siblings'")
    assert batches.fetchone() == (1,)
