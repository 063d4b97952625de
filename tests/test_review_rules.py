"""Review rules: reopening a rejected scrub (library and page), rejecting only after a confirmation, and
the conversation read in order, the reply being judged last."""

import json

import pytest
from conftest import jsonl, trace
from pages_support import app, open_page, sides

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.errors import BadInput, NotFound, PermissionDenied
from flywheel.ingest.run import ingest_files
from flywheel.review.scrubs import (
    approve_scrub,
    claim_scrub,
    reject_scrub,
    reopen_scrub,
    reopenable_scrubs,
    review_queue,
    scrub_counts,
    scrub_traces,
    scrub_view,
)
from flywheel.store.db import open_db

LEAD, RAVI, MIRA, LENA = (
    User("ana", "lead"),
    User("ravi", "reviewer"),
    User("mira", "reviewer"),
    User("lena", "labeler"),
)
CONVERSATION = [
    {"role": "user", "content": "first: my card never came"},
    {"role": "assistant", "content": "second: when did you order it?"},
    {"role": "user", "content": "third: two weeks ago"},
]


@pytest.fixture
def review_path(tmp_path):
    path = tmp_path / "rules.db"
    db = open_db(path)
    items = [
        trace(1, input="third: two weeks ago", output="fourth: the reply", messages=CONVERSATION),
        trace(2, input="card lost at the branch", output="sorry to hear"),
        trace(3, input="top up failed again", output="let me check"),
    ]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)], config=load_config())
    scrub_traces(db, ["t-000001", "t-000002", "t-000003"], actor="ana")
    db.close()
    return path


def sid(db, trace_id: str) -> int:
    return db.execute("SELECT id FROM scrubs WHERE trace_id = ? AND is_current = 1", [trace_id]).fetchone()[0]


def row(db, trace_id: str) -> dict:
    sql = "SELECT status, reviewed_by, claimed_by, note FROM scrubs WHERE trace_id = ? AND is_current = 1"
    return dict(
        zip(
            ("status", "reviewed_by", "claimed_by", "note"),
            db.execute(sql, [trace_id]).fetchone(),
            strict=True,
        )
    )


def audits(db, action: str) -> list[tuple[str, dict]]:
    rows = db.execute("SELECT actor, detail FROM audit_log WHERE action = ? ORDER BY id", [action])
    return [(actor, json.loads(detail)) for actor, detail in rows]


# Reopening a rejected scrub: the library ------------------------------------------------------------


def test_the_reviewer_who_rejected_reopens_it_and_it_is_back_in_review(review_path):
    db = open_db(review_path)
    scrub = sid(db, "t-000002")
    assert claim_scrub(db, RAVI, scrub, minutes=10) == scrub
    reject_scrub(db, RAVI, scrub, "unsure about the branch")
    assert scrub not in {q["scrub_id"] for q in review_queue(db, MIRA)}
    assert [r["scrub_id"] for r in reopenable_scrubs(db, RAVI)] == [scrub]
    assert reopenable_scrubs(db, RAVI)[0]["status"] == "rejected"

    reopen_scrub(db, RAVI, scrub, "  the branch is no personal data  ")

    assert row(db, "t-000002") == {
        "status": "pending",
        "reviewed_by": None,
        "claimed_by": None,
        "note": "the branch is no personal data",
    }
    assert scrub_counts(db) == {"pending": 3, "approved": 0, "rejected": 0}
    assert scrub in {q["scrub_id"] for q in review_queue(db, MIRA, free_only=True)}
    assert (
        claim_scrub(db, MIRA, scrub, minutes=10) == scrub
    )  # free for any reviewer, not held by its old decider
    assert row(db, "t-000002")["claimed_by"] == "mira"
    ((actor, detail),) = audits(db, "reopen_scrub")
    assert actor == "ravi"
    assert detail["was"] == "rejected" and detail["decided_by"] == "ravi"
    assert detail["reason"] == "the branch is no personal data" and detail["trace_id"] == "t-000002"
    assert reopenable_scrubs(db, RAVI) == []


@pytest.mark.parametrize(
    ("who", "allowed"),
    [(RAVI, True), (LEAD, True), (MIRA, False), (LENA, False)],
    ids=["the decider", "a lead", "another reviewer", "a labeler"],
)
def test_who_may_reopen_a_rejected_scrub(review_path, who, allowed):
    db = open_db(review_path)
    scrub = sid(db, "t-000003")
    reject_scrub(db, RAVI, scrub)
    if allowed:
        reopen_scrub(db, who, scrub, "second look")
        assert row(db, "t-000003")["status"] == "pending"
        assert [a for a, _ in audits(db, "reopen_scrub")] == [who.name]
    else:
        with pytest.raises(PermissionDenied, match=r"only ravi or a lead|needs the role"):
            reopen_scrub(db, who, scrub, "second look")
        assert row(db, "t-000003") == {
            "status": "rejected",
            "reviewed_by": "ravi",
            "claimed_by": None,
            "note": None,
        }
        assert audits(db, "reopen_scrub") == []


def test_a_reviewer_sees_only_the_decisions_they_may_take_back(review_path):
    db = open_db(review_path)
    reject_scrub(db, RAVI, sid(db, "t-000002"))
    approve_scrub(db, MIRA, sid(db, "t-000003"))
    assert {r["trace_id"]: r["status"] for r in reopenable_scrubs(db, RAVI)} == {"t-000002": "rejected"}
    assert {r["trace_id"]: r["status"] for r in reopenable_scrubs(db, MIRA)} == {"t-000003": "approved"}
    assert {r["trace_id"] for r in reopenable_scrubs(db, LEAD)} == {"t-000002", "t-000003"}
    with pytest.raises(PermissionDenied):
        reopenable_scrubs(db, LENA)


def test_only_a_decided_scrub_is_reopened_and_always_with_a_reason(review_path):
    db = open_db(review_path)
    scrub = sid(db, "t-000002")
    with pytest.raises(BadInput, match="is pending: only an approved or rejected scrub"):
        reopen_scrub(db, LEAD, scrub, "nothing to reopen")
    reject_scrub(db, RAVI, scrub)
    with pytest.raises(BadInput, match="say why"):
        reopen_scrub(db, RAVI, scrub, "   ")
    reopen_scrub(db, RAVI, scrub, "once")
    with pytest.raises(BadInput, match="is pending"):
        reopen_scrub(db, RAVI, scrub, "twice")
    assert len(audits(db, "reopen_scrub")) == 1
    with pytest.raises(NotFound, match="no scrub with id 9999"):
        reopen_scrub(db, LEAD, 9999, "missing")


def test_a_reopened_rejection_can_be_decided_again_by_anyone_holding_it(review_path):
    db = open_db(review_path)
    scrub = sid(db, "t-000002")
    reject_scrub(db, RAVI, scrub)
    reopen_scrub(db, LEAD, scrub, "looks fine to me")
    claim_scrub(db, MIRA, scrub, minutes=10)
    approve_scrub(db, MIRA, scrub)
    assert row(db, "t-000002")["status"] == "approved"
    assert db.execute("SELECT count(*) FROM label_queue WHERE trace_id = 't-000002'").fetchone()[0] == 1
    assert [a for a, _ in audits(db, "reject_scrub")] == ["ravi"]
    assert [a for a, _ in audits(db, "approve_scrub")] == ["mira"]


# The conversation in order ------------------------------------------------------------------------


def test_the_review_view_reads_the_messages_in_order_and_the_reply_last(review_path):
    db = open_db(review_path)
    view = scrub_view(db, RAVI, sid(db, "t-000001"))
    names = [f.name for f in view.fields]
    assert names == ["messages[0]", "messages[1]", "messages[2]", "input", "output"]
    assert [f.role for f in view.fields] == ["user", "assistant", "user", "user", "assistant"]
    assert [f.raw.split(":")[0] for f in view.fields] == ["first", "second", "third", "third", "fourth"]
    plain = scrub_view(db, RAVI, sid(db, "t-000002"))
    assert [f.name for f in plain.fields] == ["input", "output"]


# The Review page ----------------------------------------------------------------------------------


def click(at, label: str):
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_page_draws_the_messages_in_order_then_the_reply_on_both_sides(review_path, monkeypatch):
    at = open_page(app(review_path, monkeypatch, "ravi"), "pages/review.py")
    assert any("t\\-000001" in h.value for h in at.subheader)
    raw, scrubbed = sides(at)
    expected = [m["content"] for m in CONVERSATION] + ["third: two weeks ago", "fourth: the reply"]
    assert raw == expected
    assert scrubbed == expected  # nothing here for the scrubber to redact
    where = [c.value for c in at.caption if c.value.startswith(("messages[", "input", "output"))]
    assert where[::2] == where[1::2]  # each field's caption over its raw and its scrubbed column
    assert where[::2] == [
        "messages[0] · user",
        "messages[1] · assistant",
        "messages[2] · user",
        "input · user",
        "output · assistant",
    ]


def test_reject_asks_first_and_only_the_confirmation_rejects(review_path, monkeypatch):
    at = open_page(app(review_path, monkeypatch, "ravi"), "pages/review.py")
    db = open_db(review_path)
    click(at, "Reject")  # the X shortcut presses this same button
    assert row(db, "t-000001")["status"] == "pending"
    assert any("Reject trace t\\-000001?" in w.value for w in at.warning)
    click(at, "Reject")  # pressing X again is still no confirmation
    assert row(db, "t-000001")["status"] == "pending"
    click(at, "Cancel")
    assert row(db, "t-000001")["status"] == "pending"
    assert not any(b.label == "Yes, reject" for b in at.button)
    assert audits(db, "reject_scrub") == []

    click(at, "Reject")
    click(at, "Yes, reject")
    decided = {"status": "rejected", "reviewed_by": "ravi", "claimed_by": None, "note": None}
    assert row(db, "t-000001") == decided
    assert [a for a, _ in audits(db, "reject_scrub")] == ["ravi"]
    assert any("t\\-000002" in h.value for h in at.subheader)  # on to the next scrub
    assert not any(b.label == "Yes, reject" for b in at.button)  # the question does not follow


def test_a_pending_rejection_question_does_not_block_an_approval(review_path, monkeypatch):
    at = open_page(app(review_path, monkeypatch, "ravi"), "pages/review.py")
    click(at, "Reject")
    click(at, "Approve")
    db = open_db(review_path)
    assert row(db, "t-000001")["status"] == "approved"
    assert not any(b.label == "Yes, reject" for b in at.button)


def test_a_reviewer_reopens_their_rejection_on_the_page(review_path, monkeypatch):
    db = open_db(review_path)
    reject_scrub(db, RAVI, sid(db, "t-000003"), "a name?")
    approve_scrub(db, MIRA, sid(db, "t-000002"))
    at = open_page(app(review_path, monkeypatch, "ravi"), "pages/review.py")
    picker = at.selectbox(key="reopen_pick")
    assert picker.options == ["t-000003 (rejected by ravi)"]  # mira's approval is not ravi's to reopen
    at.text_input(key="reopen_reason").input("no name after all").run()
    click(at, "Reopen")
    assert row(db, "t-000003")["status"] == "pending"
    ((actor, detail),) = audits(db, "reopen_scrub")
    assert actor == "ravi" and detail["was"] == "rejected" and detail["reason"] == "no name after all"
    assert any("No approved or rejected scrub you may reopen" in c.value for c in at.caption)
