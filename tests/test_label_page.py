"""The Label and Taxonomy pages through app.py: each action writes the right rows, no raw text shows."""

import pytest
from test_labels import ANA, RAW_ONLY, add_code, seed_queue
from test_pages import app, open_page

from flywheel.labels import set_overlap
from flywheel.store import open_db

NEW_DEFINITION = "The assistant quotes a made-up card fee. Any amount missing from the schedule counts."


@pytest.fixture
def label_db(tmp_path):
    path = tmp_path / "label.db"
    db = open_db(path)
    seed_queue(db, 8, batches={1: list(range(8))}, approve=lambda n: n != 7)
    add_code(db)
    db.close()
    return path


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def widget(elements, label: str):
    return next(e for e in elements if e.label == label)


def shown_text(at) -> str:
    kinds = ("title", "subheader", "text", "markdown", "caption", "error", "checkbox", "selectbox")
    elements = [e for kind in kinds for e in getattr(at, kind)]
    return repr([(getattr(e, "label", None), getattr(e, "value", None)) for e in elements])


def rows(path, sql: str = "SELECT trace_id, labeler, kind, code, via FROM labels ORDER BY id") -> list:
    return open_db(path).execute(sql).fetchall()


def test_labeler_labels_known_and_not_a_bug_and_undoes(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    assert at.subheader[0].value == r"Trace t\-00000"
    assert any("[PERSON]" in t.value for t in at.text)
    widget(at.selectbox, "Failure code (type to search)").select("HALLUCINATED_FEE")
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
    assert RAW_ONLY not in shown_text(at)


def test_known_without_a_code_shows_the_reason_and_writes_nothing(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    button(at, "Known failure").click().run()
    assert "needs the expected behaviour" in at.error[0].value
    assert rows(label_db) == [] and at.subheader[0].value == r"Trace t\-00000"


def test_new_failure_mode_then_siblings(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "tom"), "pages/label.py")
    button(at, "New failure").click().run()
    widget(at.text_input, "Code").input("MADE_UP_CARD_FEE")
    widget(at.text_input, "Name").input("Made-up card fee")
    widget(at.text_area, "Definition (two sentences: what it is, how to recognise it)").input(NEW_DEFINITION)
    button(at, "Create code and label").click().run()
    assert not at.exception and not at.error
    assert at.subheader[0].value == "Siblings for MADE_UP_CARD_FEE"
    boxes = at.checkbox
    assert len(boxes) == 6  # the other approved traces (t-00007 is not approved)
    boxes[0].check()
    boxes[1].check()
    at.run()
    button(at, "Add 2 selected to MADE_UP_CARD_FEE").click().run()
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
    set_overlap(open_db(label_db), ANA, 1, 2)
    at = open_page(app(label_db, monkeypatch, "ana"), "pages/label.py")
    assert any("No item of this batch has two labels" in c.value for c in at.caption)


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
