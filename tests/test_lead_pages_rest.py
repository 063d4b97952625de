"""Lead pages in use: focus never traps the review shortcuts, removed redactions leave the picker, an
import names its conflicting traces, the gate shows flipped rows whole, drift says its alarm in a sentence
and sends a cluster once, parity starts on the newest version and the live system."""

import pytest
from conftest import jsonl, trace
from test_pages import app, open_page

from flywheel.ingest import ingest_files
from flywheel.review import scrub_traces
from flywheel.store import open_db

PICKER = "Redactions to remove or reclassify"


@pytest.fixture
def review_db(tmp_path):
    path = tmp_path / "r.db"
    db = open_db(path)
    text = "I'm Maria Gonzalez, call 07700 900123 about the kettle lane branch"
    items = [trace(1, input=text, output="ok")]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)])
    scrub_traces(db, ["t-000001"], actor="ana")
    return path


def test_review_page_installs_the_shortcut_guard(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    guard = [h.value for h in at.html if "flywheelReviewGuard" in h.value]
    assert len(guard) == 1
    assert '"Escape"' in guard[0] and "[role=option]" in guard[0]


def test_a_removed_redaction_leaves_the_picker_under_a_new_key(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    before = next(m for m in at.multiselect if m.label == PICKER)
    table = at.dataframe[0].value
    unverified = table[~table["label"].isin(["EMAIL", "PHONE", "CARD", "IBAN"])]
    gone = int(unverified.iloc[0]["id"])
    before.set_value([gone]).run()
    next(b for b in at.button if b.label == "Remove 1 selected redaction(s)").click().run()
    assert not at.error
    after = next(m for m in at.multiselect if m.label == PICKER)
    assert after.key != before.key
    assert after.value == [] and len(after.options) == len(table) - 1
    assert not [o for o in after.options if o.startswith(f"#{gone} ")], after.options
