import pytest
from conftest import jsonl, trace
from test_pages import app, open_page

from flywheel.ingest import ingest_files
from flywheel.review import scrub_traces
from flywheel.store import open_db


@pytest.fixture
def review_db(tmp_path):
    path = tmp_path / "r.db"
    db = open_db(path)
    items = [
        trace(1, input="I'm Maria Gonzalez <b>bold</b>, mail maria.g@example.com", output="ok"),
        trace(2, input="card lost at the kettle lane branch", output="sorry"),
    ]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)])
    scrub_traces(db, ["t-000001", "t-000002"], actor="ana")
    return path


def status(path, trace_id: str) -> str:
    return open_db(path).execute("SELECT status FROM scrubs WHERE trace_id = ?", [trace_id]).fetchone()[0]


def test_reviewer_sees_raw_and_scrubbed_side_by_side_escaped(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    marked = [m.value for m in at.markdown if "<mark" in m.value]
    assert any("Maria Gonzalez</mark>" in m for m in marked)
    assert any("[PERSON]</mark>" in m for m in marked)
    assert all("<b>bold</b>" not in m for m in marked) and any("&lt;b&gt;bold" in m for m in marked)
    assert [m.value for m in at.metric][:1] == ["2"]


def test_reviewer_adds_a_redaction_and_approves(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    at.text_input(key="redaction_text").input("<b>bold</b>")
    at.selectbox(key="redaction_label").select("ORG")
    at.button(key="FormSubmitter:add_redaction-Add redaction").click().run()
    assert not at.exception
    stored = open_db(review_db).execute("SELECT input FROM scrubs WHERE trace_id = 't-000001'").fetchone()[0]
    assert "<b>bold</b>" not in stored and "[ORG]" in stored
    next(b for b in at.button if b.label == "Approve").click().run()
    assert status(review_db, "t-000001") == "approved"
    assert any("t\\-000002" in h.value for h in at.subheader)


def test_reject_and_skip(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ana"), "pages/review.py")
    next(b for b in at.button if b.label == "Skip for now").click().run()
    assert any("t\\-000002" in h.value for h in at.subheader)
    next(b for b in at.button if b.label == "Reject").click().run()
    assert status(review_db, "t-000002") == "rejected" and status(review_db, "t-000001") == "pending"


def test_labeler_has_no_review_page(review_db, monkeypatch):
    at = app(review_db, monkeypatch, "lena")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/review.py")


def test_labeler_reads_only_approved_scrubbed_text_on_traces(review_db, monkeypatch):
    from flywheel.auth import User
    from flywheel.review import approve_scrub

    db = open_db(review_db)
    scrub_id = db.execute("SELECT id FROM scrubs WHERE trace_id = 't-000001'").fetchone()[0]
    approve_scrub(db, User("ravi", "reviewer"), scrub_id)
    at = open_page(app(review_db, monkeypatch, "lena"), "pages/traces.py")
    next(c for c in at.checkbox if c.label == "Approved scrubs only").uncheck().run()
    table = at.dataframe[0].value.set_index("trace_id")
    assert "[PERSON]" in table.loc["t-000001", "scrubbed_input"]
    assert table.loc["t-000002", "scrubbed_input"] == ""
    assert "Maria" not in str(table.to_dict())


def test_markdown_in_a_trace_id_renders_literally(tmp_path, monkeypatch):
    from pages._ui import md

    assert md("t-[click](javascript:alert(1))**x**") == r"t\-\[click\]\(javascript\:alert\(1\)\)\*\*x\*\*"
    path = tmp_path / "m.db"
    db = open_db(path)
    ingest_files(
        db, [jsonl(tmp_path / "t.jsonl", [trace(1, trace_id="**[x](http://evil)**", input="hi Bob")])]
    )
    scrub_traces(db, ["**[x](http://evil)**"], actor="ana")
    at = open_page(app(path, monkeypatch, "ravi"), "pages/review.py")
    assert at.subheader[0].value == r"Trace \*\*\[x\]\(http\://evil\)\*\*"


def test_a_missed_text_that_does_not_occur_is_named_and_the_card_stays(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    at.text_input(key="redaction_text").input("Zorblax")
    at.button(key="FormSubmitter:add_redaction-Add redaction").click().run()
    assert [e.value for e in at.error] == ["'Zorblax' does not occur in this trace"]
    assert any(b.label == "Approve" for b in at.button)
