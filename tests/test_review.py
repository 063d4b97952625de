import json

import pytest
from conftest import jsonl, trace

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.errors import BadInput, NeedsConfirmation, NotFound, PermissionDenied, ScrubClaimed
from flywheel.ingest.run import ingest_files
from flywheel.review.scrubs import (
    AlreadyReviewed,
    add_known_names,
    add_redaction,
    add_redaction_text,
    approve_scrub,
    change_redaction_label,
    claim_scrub,
    clear_skips,
    highlight_html,
    known_name_history,
    known_names,
    literal_html,
    reject_scrub,
    remove_known_name,
    remove_redaction,
    remove_redactions,
    reopen_scrub,
    residue,
    review_progress,
    review_queue,
    scrub_counts,
    scrub_traces,
    scrub_view,
    skip_scrub,
)
from flywheel.store.db import open_db
from flywheel.traces.queries import approved_scrub

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
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)], config=load_config())
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
    assert [f.name for f in view.fields] == ["messages[0]", "messages[1]", "messages[2]", "input", "output"]
    assert "Tom Becker" not in view.fields[0].scrubbed
    stored = json.loads(
        scrubbed.execute("SELECT messages FROM scrubs WHERE id = ?", [view.scrub_id]).fetchone()[0]
    )
    assert stored[0] == {"role": "user", "content": view.fields[0].scrubbed}


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
    remove_redaction(scrubbed, REVIEWER, sid, first["id"], confirmed=True)
    view = scrub_view(scrubbed, REVIEWER, sid)
    assert first["id"] not in {r["id"] for r in view.fields[0].redactions}
    assert residue(scrubbed)[["kind", "detector"]].values.tolist() == [["false", first["detector"]]]
    with pytest.raises(NotFound):
        remove_redaction(scrubbed, REVIEWER, sid, first["id"], confirmed=True)


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
    ingest_files(
        db,
        [jsonl(tmp_path / "t.jsonl", [trace(9, input="we at GLOBEX FINTECH need 3 cards")])],
        config=load_config(),
    )
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


OTHER = User("rosa", "reviewer")


def redaction_of(db, sid: int, value: str) -> dict:
    field = scrub_view(db, REVIEWER, sid).fields[0]
    return next(r for r in field.redactions if field.raw[r["start"] : r["end"]] == value)


def test_two_reviewers_are_never_on_the_same_scrub(scrubbed):
    first, second = claim_scrub(scrubbed, REVIEWER, minutes=10), claim_scrub(scrubbed, OTHER, minutes=10)
    assert first != second
    assert claim_scrub(scrubbed, REVIEWER, minutes=10) == first  # the held scrub comes back, renewed
    with pytest.raises(ScrubClaimed, match="ravi is reviewing"):
        approve_scrub(scrubbed, OTHER, first)
    with pytest.raises(ScrubClaimed):
        claim_scrub(scrubbed, OTHER, first, minutes=10)
    with pytest.raises(ScrubClaimed):
        add_redaction_text(scrubbed, OTHER, first, "Maria", "PERSON")
    assert scrub_counts(scrubbed)["approved"] == 0


def test_an_expired_claim_frees_the_scrub(scrubbed):
    from datetime import UTC, datetime, timedelta

    past = datetime.now(UTC) - timedelta(minutes=30)
    held = claim_scrub(scrubbed, REVIEWER, moment=past, minutes=10)
    assert claim_scrub(scrubbed, OTHER, minutes=10) == held
    approve_scrub(scrubbed, OTHER, held)
    with pytest.raises(AlreadyReviewed, match="approved by rosa"):
        approve_scrub(scrubbed, REVIEWER, held)


def test_an_action_names_its_scrub_and_never_reaches_another(scrubbed):
    one, two = scrub_id(scrubbed, "t-000001"), scrub_id(scrubbed, "t-000002")
    approve_scrub(scrubbed, REVIEWER, one)
    with pytest.raises(AlreadyReviewed):  # a second click on the stale card
        approve_scrub(scrubbed, OTHER, one)
    email = redaction_of(scrubbed, one, "maria.g@example.com")
    with pytest.raises(BadInput, match=f"belongs to scrub {one}, not scrub {two}"):
        remove_redaction(scrubbed, REVIEWER, two, email["id"], confirmed=True)
    assert scrub_counts(scrubbed) == {"pending": 2, "approved": 1, "rejected": 0}


def test_skips_are_kept_per_reviewer(scrubbed):
    first = claim_scrub(scrubbed, REVIEWER, minutes=10)
    skip_scrub(scrubbed, REVIEWER, first)
    again = open_db(scrubbed.conn.execute("PRAGMA database_list").fetchone()[2])  # a new session
    assert claim_scrub(again, REVIEWER, minutes=10) != first
    assert claim_scrub(again, OTHER, minutes=10) == first  # skipped for ravi only
    assert review_progress(again, REVIEWER) == {"position": 1, "total": 3, "pending": 3, "skipped": 1}
    assert clear_skips(again, REVIEWER) == 1
    assert review_progress(again, REVIEWER)["skipped"] == 0


def test_removing_a_verified_redaction_needs_confirmation(scrubbed):
    sid = scrub_id(scrubbed, "t-000001")
    email = redaction_of(scrubbed, sid, "maria.g@example.com")
    name = redaction_of(scrubbed, sid, "Maria Gonzalez")
    with pytest.raises(NeedsConfirmation, match=f"#{email['id']} EMAIL"):
        remove_redactions(scrubbed, REVIEWER, sid, [name["id"], email["id"]])
    assert {r["id"] for r in scrub_view(scrubbed, REVIEWER, sid).fields[0].redactions} >= {
        name["id"],
        email["id"],
    }
    assert remove_redactions(scrubbed, REVIEWER, sid, [name["id"], email["id"]], confirmed=True) == 2
    assert "maria.g@example.com" in scrub_view(scrubbed, REVIEWER, sid).fields[0].scrubbed


def test_a_redaction_changes_class_and_counts_as_residue(scrubbed):
    sid = scrub_id(scrubbed, "t-000001")
    name = redaction_of(scrubbed, sid, "Maria Gonzalez")
    new_id = change_redaction_label(scrubbed, REVIEWER, sid, name["id"], "CUSTOMER")
    field = scrub_view(scrubbed, REVIEWER, sid).fields[0]
    assert "[CUSTOMER]" in field.scrubbed and "Maria Gonzalez" not in field.scrubbed
    assert {r["id"]: r["label"] for r in field.redactions}[new_id] == "CUSTOMER"
    assert residue(scrubbed)[["kind", "label"]].values.tolist() == [["relabelled", "PERSON"]]


def test_reopen_takes_the_approval_back_and_the_trace_out_of_the_label_queue(scrubbed):
    from flywheel.labeling.labels import claim_next

    sid = scrub_id(scrubbed, "t-000001")
    approve_scrub(scrubbed, REVIEWER, sid)
    held = claim_next(scrubbed, User("lena", "labeler"), minutes=10)
    assert held.trace_id == "t-000001"
    with pytest.raises(PermissionDenied, match="only ravi or a lead"):
        reopen_scrub(scrubbed, OTHER, sid, "missed a name")
    with pytest.raises(BadInput, match="say why"):
        reopen_scrub(scrubbed, REVIEWER, sid, " ")
    reopen_scrub(scrubbed, REVIEWER, sid, "missed a name")
    assert scrubbed.execute("SELECT count(*) FROM label_queue WHERE trace_id = 't-000001'").fetchone()[0] == 0
    assert (
        scrubbed.execute("SELECT state FROM claims WHERE id = ?", [held.claim_id]).fetchone()[0]
        == "withdrawn"
    )
    with pytest.raises(PermissionDenied, match="pending"):
        approved_scrub(scrubbed, "t-000001")
    assert claim_next(scrubbed, User("lena", "labeler"), minutes=10) is None
    entry = scrubbed.execute("SELECT actor, detail FROM audit_log WHERE action = 'reopen_scrub'").fetchone()
    assert entry[0] == "ravi" and json.loads(entry[1])["reason"] == "missed a name"
    approve_scrub(scrubbed, LEAD, sid)  # approved again: back in the queue
    assert approved_scrub(scrubbed, "t-000001")["scrub_id"] == sid
    assert scrubbed.execute("SELECT count(*) FROM label_queue WHERE trace_id = 't-000001'").fetchone()[0] == 1
    reopen_scrub(scrubbed, LEAD, sid, "a lead may reopen any approval")
    with pytest.raises(BadInput, match="only an approved or rejected scrub"):
        reopen_scrub(scrubbed, LEAD, sid, "twice")


def test_a_newer_scrubber_version_rescrubs_and_the_current_scrub_is_read(scrubbed, monkeypatch):
    import flywheel.review.scrubs as review

    old = scrub_id(scrubbed, "t-000001")
    approve_scrub(scrubbed, REVIEWER, old)
    monkeypatch.setattr(review, "SCRUBBER_VERSION", "9.9.9")
    assert scrub_traces(scrubbed, ["t-000001", "t-000003"], actor="ana") == 0  # without rescrub: as before
    assert scrub_traces(scrubbed, ["t-000001"], actor="ana", rescrub=True) == 1
    rows = scrubbed.execute(
        "SELECT id, scrubber_version, status, is_current FROM scrubs WHERE trace_id = 't-000001' ORDER BY id"
    ).fetchall()
    assert rows[0] == (old, rows[0][1], "superseded", 0) and rows[1][1:] == ("9.9.9", "pending", 1)
    with pytest.raises(PermissionDenied, match="pending"):
        approved_scrub(scrubbed, "t-000001")
    assert scrubbed.execute("SELECT count(*) FROM label_queue WHERE trace_id = 't-000001'").fetchone()[0] == 0
    approve_scrub(scrubbed, REVIEWER, rows[1][0])
    assert approved_scrub(scrubbed, "t-000001")["scrub_id"] == rows[1][0]
    assert scrub_traces(scrubbed, ["t-000001"], actor="ana", rescrub=True) == 0  # same version: no-op
    assert scrub_counts(scrubbed) == {"pending": 2, "approved": 1, "rejected": 0}


def test_concurrent_scrubs_of_one_trace_store_one_scrub(db, tmp_path):
    import threading

    ingest_files(
        db,
        [jsonl(tmp_path / "t.jsonl", [trace(n, input=PII_INPUT) for n in range(1, 9)])],
        config=load_config(),
    )
    path = db.conn.execute("PRAGMA database_list").fetchone()[2]
    ids = [f"t-{n:06d}" for n in range(1, 9)]
    results, errors = [], []

    def scrub() -> None:
        try:
            results.append(scrub_traces(open_db(path), ids, actor="ana"))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=scrub) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(results) == 8
    assert db.execute("SELECT count(*) FROM scrubs").fetchone()[0] == 8


def test_known_names_and_removed_names_are_for_reviewers_and_leads(db):
    add_known_names(db, LEAD, ["Globex Fintech", "Initech"])
    assert known_names(db, REVIEWER) == ["Globex Fintech", "Initech"]
    remove_known_name(db, LEAD, "initech")
    for read in (known_names, known_name_history):
        with pytest.raises(PermissionDenied):
            read(db, LABELER)
    assert [(h["name"], h["change"]) for h in known_name_history(db, LEAD)] == [("Initech", "removed")]
    audit_text = json.dumps(db.execute("SELECT * FROM audit_log").fetchall())
    assert "Initech" not in audit_text and "Globex" not in audit_text
    with pytest.raises(PermissionDenied):
        remove_known_name(db, REVIEWER, "Globex Fintech")


def test_old_audit_entries_holding_removed_names_move_to_the_history(tmp_path):
    from flywheel.store.migrations import migrations

    path = tmp_path / "old.db"
    db = open_db(path)
    db.execute("DROP TABLE known_name_history")
    db.execute("DELETE FROM _sqlite_migrations WHERE name LIKE 'm021%'")
    db.execute(
        "INSERT INTO audit_log (at, actor, action, entity, entity_id, detail)"
        " VALUES ('2026-01-01T00:00:00Z', 'ana', 'remove_known_name', 'known_names', 'Umbrella Corp', '{}')"
    )
    assert [m.name for m in migrations.pending(db)] == ["m021_known_name_history"]
    db.close()
    db = open_db(path)
    assert "Umbrella" not in json.dumps(db.execute("SELECT * FROM audit_log").fetchall())
    assert [h["name"] for h in known_name_history(db, LEAD)] == ["Umbrella Corp"]


def test_residue_uses_iso_weeks(scrubbed):
    rows = [("2026-11-22T10:00:00.000000Z", "missed"), ("2027-01-01T10:00:00.000000Z", "false")]
    for at, kind in rows:
        scrubbed["scrub_fixes"].insert(
            {"scrub_id": 1, "kind": kind, "label": "PERSON", "detector": "spacy", "actor": "ravi", "at": at}
        )
    assert residue(scrubbed)[["week", "kind"]].values.tolist() == [
        ["2026-W47", "missed"],
        ["2026-W53", "false"],
    ]


def test_invisible_characters_are_boxed_and_kept():
    raw = "card 4111\u200b1111 \u202eabc\u00a0x"
    marked = literal_html(raw)
    assert marked.count('class="fw-invisible"') == 3
    assert "ZWSP U+200B ZERO WIDTH SPACE" in marked and ">RLO<" in marked and ">NBSP<" in marked
    assert "\u200b" in marked and "\u202e" in marked and "\u00a0" in marked  # the characters stay


def test_review_queue_lists_messages_with_their_roles(scrubbed):
    view = scrub_view(scrubbed, REVIEWER, scrub_id(scrubbed, "t-000002"))
    assert [(f.name, f.role) for f in view.fields] == [
        ("messages[0]", "user"),
        ("messages[1]", "assistant"),
        ("messages[2]", "user"),
        ("input", "user"),
        ("output", "assistant"),
    ]
    assert review_queue(scrubbed, REVIEWER, free_only=True)[0]["claimed_by"] is None


def test_a_database_from_before_scrub_versions_upgrades_with_its_scrubs(scrubbed):
    path = scrubbed.conn.execute("PRAGMA database_list").fetchone()[2]
    approve_scrub(scrubbed, REVIEWER, scrub_id(scrubbed, "t-000001"))
    # Back to the schema before m020: one scrub per trace, no claims, no skips.
    for statement in (
        "DROP INDEX idx_scrubs_current",
        "DROP INDEX idx_scrubs_trace_version",
        "DROP TABLE review_skips",
        "ALTER TABLE scrubs DROP COLUMN is_current",
        "ALTER TABLE scrubs DROP COLUMN claimed_by",
        "ALTER TABLE scrubs DROP COLUMN claim_expires",
        "CREATE UNIQUE INDEX idx_scrubs_trace_id ON scrubs(trace_id)",
        "DELETE FROM _sqlite_migrations WHERE name LIKE 'm020%'",
    ):
        scrubbed.execute(statement)
    scrubbed.close()
    db = open_db(path)
    assert db.execute("SELECT count(*) FROM scrubs WHERE is_current = 1").fetchone()[0] == 3
    assert approved_scrub(db, "t-000001")["scrub_id"] == scrub_id(db, "t-000001")
    assert claim_scrub(db, REVIEWER, minutes=10) is not None
    assert "idx_scrubs_trace_id" not in {i.name for i in db["scrubs"].indexes}
