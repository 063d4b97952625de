import json

import pytest
from conftest import jsonl, trace

from flywheel.auth import User
from flywheel.errors import BadInput, NotFound, PermissionDenied
from flywheel.ingest import ingest_files
from flywheel.review import (
    AlreadyReviewed,
    add_known_names,
    add_redaction,
    add_redaction_text,
    approve_scrub,
    highlight_html,
    reject_scrub,
    remove_redaction,
    residue,
    review_queue,
    scrub_counts,
    scrub_traces,
    scrub_view,
)
from flywheel.traces import approved_scrub

LEAD, REVIEWER, LABELER = User("ana", "lead"), User("ravi", "reviewer"), User("lena", "labeler")
PII_INPUT = "Hi, I'm Maria Gonzalez, email maria.g@example.com or call +44 7700 900123. Order ORD-55812."


@pytest.fixture
def scrubbed(db, tmp_path):
    items = [
        trace(1, input=PII_INPUT, output="Thanks Maria, we will look into order ORD-55812."),
        trace(
            2,
            input="my card is lost",
            messages=[
                {"role": "user", "content": "hello, this is Tom Becker"},
                {"role": "assistant", "content": "Hi Tom, how can I help?"},
                {"role": "user", "content": "my card is lost"},
            ],
        ),
        trace(3, input="can i top up at the kettle lane branch?"),
    ]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)])
    assert scrub_traces(db, ["t-000001", "t-000002", "t-000003"], actor="ana") == 3
    return db


def scrub_id(db, trace_id: str) -> int:
    return db.execute("SELECT id FROM scrubs WHERE trace_id = ?", [trace_id]).fetchone()[0]


def test_scrub_stores_scrubbed_fields_and_spans_into_the_raw_text(scrubbed):
    row = scrubbed.execute("SELECT * FROM scrubs WHERE trace_id = 't-000001'").fetchone()
    view = scrub_view(scrubbed, REVIEWER, scrub_id(scrubbed, "t-000001"))
    (field,) = [f for f in view.fields if f.name == "input"]
    assert "maria.g@example.com" not in field.scrubbed and "[EMAIL]" in field.scrubbed
    assert "[PHONE]" in field.scrubbed and "Maria Gonzalez" not in field.scrubbed
    assert {field.raw[r["start"] : r["end"]] for r in field.redactions} >= {
        "maria.g@example.com",
        "Maria Gonzalez",
    }
    assert "[EMAIL]" in row[4] and row[3] == "pending"


def test_every_message_is_scrubbed(scrubbed):
    view = scrub_view(scrubbed, REVIEWER, scrub_id(scrubbed, "t-000002"))
    assert [f.name for f in view.fields] == ["input", "output", "messages[0]", "messages[1]", "messages[2]"]
    assert "Tom Becker" not in view.fields[2].scrubbed
    stored = json.loads(
        scrubbed.execute("SELECT messages FROM scrubs WHERE id = ?", [view.scrub_id]).fetchone()[0]
    )
    assert stored[0] == {"role": "user", "content": view.fields[2].scrubbed}


def test_scrubbing_twice_is_a_no_op(scrubbed):
    assert scrub_traces(scrubbed, ["t-000001", "t-000002"], actor="ana") == 0
    assert scrub_counts(scrubbed) == {"pending": 3, "approved": 0, "rejected": 0}


def test_reviewer_adds_a_missed_name_and_it_counts_as_residue(scrubbed):
    sid = scrub_id(scrubbed, "t-000003")
    assert add_redaction_text(scrubbed, REVIEWER, sid, "kettle lane", "LOCATION") == 1
    view = scrub_view(scrubbed, REVIEWER, sid)
    assert view.fields[0].scrubbed == "can i top up at the [LOCATION] branch?"
    stored = scrubbed.execute("SELECT input FROM scrubs WHERE id = ?", [sid]).fetchone()[0]
    assert stored == "can i top up at the [LOCATION] branch?"
    fixes = residue(scrubbed)
    assert fixes[["kind", "label", "detector", "fixes"]].values.tolist() == [
        ["missed", "LOCATION", "reviewer", 1]
    ]


def test_overlapping_redaction_merges(scrubbed):
    sid = scrub_id(scrubbed, "t-000001")
    view = scrub_view(scrubbed, REVIEWER, sid)
    name = next(
        r for r in view.fields[0].redactions if view.fields[0].raw[r["start"] : r["end"]] == "Maria Gonzalez"
    )
    add_redaction(scrubbed, REVIEWER, sid, "input", name["start"] - 4, name["start"] + 5, "PERSON")
    spans = scrub_view(scrubbed, REVIEWER, sid).fields[0].redactions
    assert any(r["start"] == name["start"] - 4 and r["end"] == name["end"] for r in spans)
    assert not any(r["id"] == name["id"] for r in spans)


def test_reviewer_removes_a_false_redaction(scrubbed):
    sid = scrub_id(scrubbed, "t-000001")
    first = scrub_view(scrubbed, REVIEWER, sid).fields[0].redactions[0]
    remove_redaction(scrubbed, REVIEWER, first["id"])
    view = scrub_view(scrubbed, REVIEWER, sid)
    assert first["id"] not in {r["id"] for r in view.fields[0].redactions}
    assert residue(scrubbed)[["kind", "detector"]].values.tolist() == [["false", first["detector"]]]
    with pytest.raises(NotFound):
        remove_redaction(scrubbed, REVIEWER, first["id"])


def test_approve_and_reject_are_final_and_audited(scrubbed):
    approve_scrub(scrubbed, REVIEWER, scrub_id(scrubbed, "t-000001"), note="clean")
    reject_scrub(scrubbed, LEAD, scrub_id(scrubbed, "t-000002"))
    assert scrub_counts(scrubbed) == {"pending": 1, "approved": 1, "rejected": 1}
    assert [q["trace_id"] for q in review_queue(scrubbed, REVIEWER)] == ["t-000003"]
    with pytest.raises(AlreadyReviewed, match="approved by ravi"):
        reject_scrub(scrubbed, LEAD, scrub_id(scrubbed, "t-000001"))
    with pytest.raises(AlreadyReviewed):
        add_redaction_text(scrubbed, LEAD, scrub_id(scrubbed, "t-000001"), "order", "ID")
    actions = [r[0] for r in scrubbed.execute("SELECT action FROM audit_log ORDER BY id")]
    assert actions[-2:] == ["approve_scrub", "reject_scrub"]


def test_labeler_gets_approved_scrubbed_text_only(scrubbed):
    with pytest.raises(PermissionDenied):
        scrub_view(scrubbed, LABELER, scrub_id(scrubbed, "t-000001"))
    with pytest.raises(PermissionDenied, match="pending"):
        approved_scrub(scrubbed, "t-000001")
    approve_scrub(scrubbed, REVIEWER, scrub_id(scrubbed, "t-000001"))
    text = approved_scrub(scrubbed, "t-000001")
    assert "Maria Gonzalez" not in text["input"] and "[PERSON]" in text["input"]
    reject_scrub(scrubbed, REVIEWER, scrub_id(scrubbed, "t-000002"))
    with pytest.raises(PermissionDenied, match="rejected"):
        approved_scrub(scrubbed, "t-000002")
    for action in (
        lambda: add_redaction_text(scrubbed, LABELER, scrub_id(scrubbed, "t-000003"), "top", "ID"),
        lambda: review_queue(scrubbed, LABELER),
        lambda: approve_scrub(scrubbed, LABELER, scrub_id(scrubbed, "t-000003")),
    ):
        with pytest.raises(PermissionDenied):
            action()


def test_bad_fixes_are_named(scrubbed):
    sid = scrub_id(scrubbed, "t-000003")
    with pytest.raises(BadInput, match="label 'SECRET'"):
        add_redaction(scrubbed, REVIEWER, sid, "input", 0, 3, "SECRET")
    with pytest.raises(BadInput, match=r"span 5\.\.500"):
        add_redaction(scrubbed, REVIEWER, sid, "input", 5, 500, "ID")
    with pytest.raises(BadInput, match="field 'messages\\[9\\]'"):
        add_redaction(scrubbed, REVIEWER, sid, "messages[9]", 0, 3, "ID")
    with pytest.raises(BadInput, match="does not occur"):
        add_redaction_text(scrubbed, REVIEWER, sid, "nowhere to be found", "ID")


def test_known_names_feed_the_lookup_layer(db, tmp_path):
    assert add_known_names(db, LEAD, ["Globex Fintech", "globex fintech", " "]) == 1
    with pytest.raises(PermissionDenied):
        add_known_names(db, REVIEWER, ["Initech"])
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", [trace(9, input="we at GLOBEX FINTECH need 3 cards")])])
    scrub_traces(db, ["t-000009"], actor="ana")
    assert db.execute("SELECT input FROM scrubs").fetchone()[0] == "we at [CUSTOMER] need 3 cards"


def test_highlight_escapes_untrusted_text():
    raw = '<script>alert("x")</script> call Bob <b>now</b>'
    start = raw.index("Bob")
    spans = [{"id": 1, "start": start, "end": start + 3, "label": "PERSON", "detector": "spacy"}]
    marked = highlight_html(raw, spans)
    assert "<script>" not in marked and "&lt;script&gt;" in marked and "&lt;b&gt;now" in marked
    assert 'class="pii pii-person"' in marked and ">Bob</mark>" in marked
    assert ">[PERSON]</mark>" in highlight_html(raw, spans, scrubbed=True)
