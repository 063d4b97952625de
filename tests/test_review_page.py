"""The Review page through app.py: literal rendering, claims, actions bound to their scrub, redactions
chosen by id, reopen, and the residue chart."""

import json

import pytest
from conftest import jsonl, trace
from pages_support import app, open_page, sides

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.ingest.run import ingest_files
from flywheel.review.scrubs import approve_scrub, scrub_traces
from flywheel.store.db import open_db

MARKDOWN_INPUT = "Q?\n\n[1]: http://example.com/secret (pin X)\n[zz]: /x\n\nThanks"
TRICKY_INPUT = (
    "# Heading ![img](http://evil.example/x.png) $x^2$ <b>bold</b> [link](http://evil.example)\n"
    "card 4111\u200b1111\u200b1111\u200b1111 \u202eabc\u00a0end"
)


@pytest.fixture
def review_db(tmp_path):
    path = tmp_path / "r.db"
    db = open_db(path)
    items = [
        trace(1, input="I'm Maria Gonzalez <b>bold</b>, mail maria.g@example.com", output="ok"),
        trace(2, input="card lost at the kettle lane branch", output="sorry"),
        trace(3, input="hello, my number is 07700 900123", output="noted"),
    ]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)], config=load_config())
    scrub_traces(db, ["t-000001", "t-000002", "t-000003"], actor="ana")
    return path


def status(path, trace_id: str) -> str:
    sql = "SELECT status FROM scrubs WHERE trace_id = ? AND is_current = 1"
    return open_db(path).execute(sql, [trace_id]).fetchone()[0]


def scrub_id(path, trace_id: str) -> int:
    return open_db(path).execute("SELECT id FROM scrubs WHERE trace_id = ?", [trace_id]).fetchone()[0]


def picker(at):
    """The redaction picker; its key follows the scrub's redactions, so it is found by its label."""
    return next(m for m in at.multiselect if m.label == "Redactions to remove or reclassify")


def click(at, label: str):
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_reviewer_sees_raw_and_scrubbed_side_by_side_escaped(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    marked = [h.value for h in at.html]
    assert any("Maria Gonzalez</mark>" in m for m in marked)
    assert any("[PERSON]</mark>" in m for m in marked)
    assert all("<b>bold</b>" not in m for m in marked) and any("&lt;b&gt;bold" in m for m in marked)
    assert not any("<mark" in m.value for m in at.markdown)  # no trace text goes through Markdown
    assert any(m.value.startswith("**3** pending") for m in at.markdown)
    assert any("Trace 1 of 3" in c.value for c in at.caption)


@pytest.mark.parametrize("raw", [MARKDOWN_INPUT, TRICKY_INPUT])
def test_trace_text_is_shown_character_for_character(tmp_path, monkeypatch, raw):
    path = tmp_path / "m.db"
    db = open_db(path)
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", [trace(1, input=raw, output=raw)])], config=load_config())
    scrub_traces(db, ["t-000001"], actor="ana")
    at = open_page(app(path, monkeypatch, "ravi"), "pages/review.py")
    raw_sides, scrubbed_sides = sides(at)
    stored = db.execute("SELECT input, output FROM scrubs").fetchone()
    assert raw_sides == [raw, raw]
    assert scrubbed_sides == list(stored)
    if "\u200b" in raw:
        assert "[CREDIT_CARD]" in stored[0]
        assert any(
            "invisible characters, boxed in red: ZWSP ×3, RLO ×1, NBSP ×1" in c.value for c in at.caption
        )


def test_messages_show_their_roles(tmp_path, monkeypatch):
    path = tmp_path / "m.db"
    db = open_db(path)
    messages = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", [trace(1, messages=messages)])], config=load_config())
    scrub_traces(db, ["t-000001"], actor="ana")
    at = open_page(app(path, monkeypatch, "ravi"), "pages/review.py")
    captions = [c.value for c in at.caption]
    assert "messages[0] · user" in captions and "messages[1] · assistant" in captions


def test_reviewer_adds_a_redaction_and_approves(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    at.text_input(key="redaction_text").input("<b>bold</b>")
    at.selectbox(key="redaction_label").select("ORG")
    at.button(key="FormSubmitter:add_redaction-Add redaction").click().run()
    assert not at.exception
    stored = open_db(review_db).execute("SELECT input FROM scrubs WHERE trace_id = 't-000001'").fetchone()[0]
    assert "<b>bold</b>" not in stored and "[ORG]" in stored
    click(at, "Approve")
    assert status(review_db, "t-000001") == "approved"
    assert any("t\\-000002" in h.value for h in at.subheader)
    assert any("Trace 2 of 3" in c.value for c in at.caption)


def test_skip_is_kept_across_reloads_and_reject(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ana"), "pages/review.py")
    click(at, "Skip for now")
    assert any("t\\-000002" in h.value for h in at.subheader)
    click(at, "Reject")
    click(at, "Yes, reject")
    assert status(review_db, "t-000002") == "rejected" and status(review_db, "t-000001") == "pending"
    reloaded = open_page(app(review_db, monkeypatch, "ana"), "pages/review.py")
    assert any("t\\-000003" in h.value for h in reloaded.subheader)
    click(reloaded, "Skip for now")
    assert any("You skipped every pending scrub" in i.value for i in reloaded.info)
    click(reloaded, "Show skipped scrubs again")
    assert any("t\\-000001" in h.value for h in reloaded.subheader)


def test_two_reviewers_get_different_scrubs_and_a_stale_click_changes_nothing(review_db, monkeypatch):
    ravi = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    ana = open_page(app(review_db, monkeypatch, "ana"), "pages/review.py")
    assert any("t\\-000001" in h.value for h in ravi.subheader)
    assert any("t\\-000002" in h.value for h in ana.subheader)
    # ana's claim lapses while her page stays open; ravi takes and approves her trace meanwhile.
    db = open_db(review_db)
    db.execute("UPDATE scrubs SET claim_expires = '2000-01-01T00:00:00.000000Z' WHERE claimed_by = 'ana'")
    approve_scrub(db, User("ravi", "reviewer"), scrub_id(review_db, "t-000002"))
    click(ana, "Approve")  # pressed on the card of t-000002, which she was shown
    assert [e.value for e in ana.error] == [
        f"scrub {scrub_id(review_db, 't-000002')} was already approved by ravi"
    ]
    assert status(review_db, "t-000003") == "pending" and status(review_db, "t-000001") == "pending"
    reviewed = db.execute("SELECT reviewed_by FROM scrubs WHERE trace_id = 't-000002'").fetchone()[0]
    assert reviewed == "ravi"


def test_redactions_are_chosen_by_id_and_the_last_one_removes_cleanly(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    sid = scrub_id(review_db, "t-000001")
    table = at.dataframe[0].value
    assert len(table) >= 2
    last = int(table.iloc[-1]["id"])
    picker(at).set_value([last]).run()
    if at.checkbox:  # a verified redaction asks first
        assert next(b for b in at.button if b.label.startswith("Remove")).disabled
        at.checkbox(key=f"confirm_{sid}").check().run()
    click(at, "Remove 1 selected redaction(s)")
    assert not at.error
    remaining = at.dataframe[0].value
    assert last not in set(remaining["id"]) and len(remaining) == len(table) - 1
    assert picker(at).value == []  # no tick slides onto another row
    assert next(b for b in at.button if b.label.startswith("Remove")).disabled
    assert any(b.label == "Approve" for b in at.button)


def test_removing_a_detected_email_asks_for_confirmation(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    sid = scrub_id(review_db, "t-000001")
    table = at.dataframe[0].value
    email = int(table[table["label"] == "EMAIL"].iloc[0]["id"])
    picker(at).set_value([email]).run()
    assert next(b for b in at.button if b.label.startswith("Remove")).disabled
    at.checkbox(key=f"confirm_{sid}").check().run()
    click(at, "Remove 1 selected redaction(s)")
    stored = open_db(review_db).execute("SELECT input FROM scrubs WHERE id = ?", [sid]).fetchone()[0]
    assert "maria.g@example.com" in stored


def test_a_redaction_class_can_be_changed(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    sid = scrub_id(review_db, "t-000001")
    table = at.dataframe[0].value
    person = int(table[table["label"] == "PERSON"].iloc[0]["id"])
    picker(at).set_value([person]).run()
    at.selectbox(key=f"relabel_{sid}").select("CUSTOMER").run()
    click(at, "Change class")
    stored = open_db(review_db).execute("SELECT input FROM scrubs WHERE id = ?", [sid]).fetchone()[0]
    assert "[CUSTOMER]" in stored and "[PERSON]" not in stored
    assert "wrong class" in set(at.dataframe[-1].value["what"])


def test_a_lead_reopens_an_approved_scrub(review_db, monkeypatch):
    sid = scrub_id(review_db, "t-000001")
    approve_scrub(open_db(review_db), User("ravi", "reviewer"), sid)
    at = open_page(app(review_db, monkeypatch, "ana"), "pages/review.py")
    at.text_input(key="reopen_reason").input("a name slipped through").run()
    click(at, "Reopen")
    assert status(review_db, "t-000001") == "pending"
    db = open_db(review_db)
    assert db.execute("SELECT count(*) FROM label_queue WHERE trace_id = 't-000001'").fetchone()[0] == 0
    detail = db.execute("SELECT detail FROM audit_log WHERE action = 'reopen_scrub'").fetchone()[0]
    assert json.loads(detail)["reason"] == "a name slipped through"


def test_labeler_has_no_review_page(review_db, monkeypatch):
    at = app(review_db, monkeypatch, "lena")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/review.py")


def test_labeler_reads_only_approved_scrubbed_text_on_traces(review_db, monkeypatch):
    approve_scrub(open_db(review_db), User("ravi", "reviewer"), scrub_id(review_db, "t-000001"))
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
        db,
        [jsonl(tmp_path / "t.jsonl", [trace(1, trace_id="**[x](http://evil)**", input="hi Bob")])],
        config=load_config(),
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
