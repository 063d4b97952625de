"""The label card's number keys, edits of one's own earlier labels, and the lead's throughput and review
step, through app.py."""

import json

import pytest
from labels_support import LENA, T0, TOM, add_code, seed_queue
from pages_support import CODE_PICKER, app, button, open_page, rows, widget

from flywheel.labeling.labels import claim_next, record_label
from flywheel.labeling.taxonomy import add_entry, entry
from flywheel.store.db import open_db, write
from flywheel.vectors.embeddings import embed_all
from flywheel.vectors.stand_in import bag_of_words
from pages._ui import md


@pytest.fixture
def label_db(tmp_path):
    path = tmp_path / "card.db"
    db = open_db(path)
    seed_queue(db, 8, batches={1: list(range(8))}, approve=lambda n: n != 7)
    add_code(db)
    embed_all(db, encoder=bag_of_words)
    db.close()
    return path


def _label(path, user, kind="not_a_bug", **values) -> None:
    db = open_db(path)
    record_label(db, user, claim_next(db, user, now=T0, minutes=10), kind, now=T0, **values)


def test_a_number_key_picks_a_code_and_shows_its_guideline(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    assert not [c for c in at.caption if c.value.startswith("Guideline")]
    at.button(key="pick_HALLUCINATED_FEE").click().run()
    assert widget(at.selectbox, CODE_PICKER).value == "HALLUCINATED_FEE"
    (guideline,) = [c.value for c in at.caption if c.value.startswith("Guideline")]
    definition = entry(open_db(label_db), "HALLUCINATED_FEE")["definition"]
    assert "HALLUCINATED\\_FEE" in guideline and md(definition) in guideline, guideline
    widget(at.text_input, "Expected behaviour").input("Quote the fee schedule")
    widget(at.text_input, "Pass criterion").input("No fee outside the schedule")
    button(at, "Known failure").click().run()
    assert not at.error
    assert rows(label_db, "SELECT code FROM labels") == [("HALLUCINATED_FEE",)]
    assert widget(at.selectbox, CODE_PICKER).value is None, "the next card starts without a code"


def test_a_labeler_corrects_an_earlier_label_and_another_labelers_label_is_not_offered(label_db, monkeypatch):
    _label(label_db, TOM)
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    button(at, "Not a bug").click().run()
    button(at, "Not a bug").click().run()
    first, tom_label = (
        rows(label_db, "SELECT id FROM labels WHERE labeler = 'lena' ORDER BY id LIMIT 1")[0][0],
        1,
    )
    picker = widget(at.selectbox, "Label to edit")
    assert tom_label not in picker.options and len(picker.options) == 2
    picker.select(first).run()
    at.radio(key=f"edit_{first}_kind").set_value("known").run()
    at.selectbox(key=f"edit_{first}_code").select("HALLUCINATED_FEE")
    at.text_input(key=f"edit_{first}_expected").input("Quote the schedule")
    at.text_input(key=f"edit_{first}_pass").input("No invented fee")
    button(at, "Save edit").click().run()
    assert not at.error and not at.exception
    live = "SELECT labeler, kind, code, edited_by FROM labels WHERE undone_at IS NULL ORDER BY id"
    assert rows(label_db, live) == [
        ("tom", "not_a_bug", None, None),
        ("lena", "not_a_bug", None, None),
        ("lena", "known", "HALLUCINATED_FEE", "lena"),
    ]
    assert at.subheader[0].value.startswith(r"Trace t\-"), "the card stays on its trace"


def test_an_edit_without_the_expected_behaviour_is_refused_on_the_card(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    button(at, "Not a bug").click().run()
    (label_id,) = rows(label_db, "SELECT id FROM labels")[0]
    widget(at.selectbox, "Label to edit").select(label_id).run()
    at.radio(key=f"edit_{label_id}_kind").set_value("known").run()
    at.selectbox(key=f"edit_{label_id}_code").select("HALLUCINATED_FEE")
    button(at, "Save edit").click().run()
    assert "needs the expected behaviour" in at.error[0].value
    assert rows(label_db, "SELECT kind FROM labels WHERE undone_at IS NULL") == [("not_a_bug",)]


def test_the_lead_reads_throughput_turns_on_review_and_accepts_and_corrects(label_db, monkeypatch):
    db = open_db(label_db)
    with write(db):
        add_entry(db, "ana", "WRONG_POLICY", "Wrong policy", "States a policy we do not have. Any rule.")
    fee = {"code": "HALLUCINATED_FEE", "expected": "Quote it", "pass_criterion": "No invented fee"}
    _label(label_db, LENA, "known", **fee)
    _label(label_db, TOM, "known", **fee)
    at = open_page(app(label_db, monkeypatch, "ana"), "pages/label.py")
    table = at.dataframe[-1].value
    assert list(table["labeler"]) == ["lena", "tom"] and list(table["labels"]) == [1, 1]
    assert not [b for b in at.button if b.label.startswith("Accept")], "review is off: nothing to accept"
    at.toggle(key="review_on").set_value(True).run()
    assert rows(label_db, "SELECT value FROM label_settings") == [(1,)]
    lena_id, tom_id = (r[0] for r in rows(label_db, "SELECT id FROM labels ORDER BY id"))
    assert any("[PERSON]" in t.value for t in at.text), "the lead reads the scrubbed trace"
    at.button(key=f"accept_{lena_id}").click().run()
    at.selectbox(key=f"review_{tom_id}_code").select("WRONG_POLICY")
    at.button(key=f"review_{tom_id}_save").click().run()
    assert not at.exception and not at.error
    reviewed = "SELECT labeler, code, reviewed_by FROM labels WHERE undone_at IS NULL ORDER BY id"
    assert rows(label_db, reviewed) == [("lena", "HALLUCINATED_FEE", "ana"), ("tom", "WRONG_POLICY", "ana")]
    assert any("No label is waiting" in c.value for c in at.caption)


def test_the_review_step_shows_a_long_conversations_reply_in_full(label_db, monkeypatch):
    db = open_db(label_db)
    earlier = [
        {"role": "customer" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "words " * 80}
        for i in range(6)
    ]
    with write(db):
        db.execute("UPDATE scrubs SET messages = ?", [json.dumps(earlier)])
        db.execute("UPDATE scrubs SET output = output || ?", [" " + "detail " * 200 + "END-OF-REPLY"])
    _label(label_db, LENA, "not_a_bug", note="fine")
    at = open_page(app(label_db, monkeypatch, "ana"), "pages/label.py")
    at.toggle(key="review_on").set_value(True).run()
    assert not at.exception, at.exception[0].stack_trace
    assert any(t.value.rstrip().endswith("END-OF-REPLY") for t in at.text), "the reply being judged is cut"
    (earlier_turns,) = [e for e in at.expander if e.label.endswith("earlier turn(s)")]
    assert earlier_turns.text[0].value.startswith("customer: turn 0 words")
