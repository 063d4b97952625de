"""Siblings over the month's traffic, not only sampled and reviewed traces: unsampled traces are
scrubbed and embedded for the search, shown only as "needs review" with no text until a reviewer
approves their scrub, and adding one pulls it into a batch that goes through review."""

import pytest
from labels_support import LENA, RAW_ONLY

from flywheel.errors import BadInput, PermissionDenied
from flywheel.review import label_queue
from flywheel.store.db import write
from flywheel.vectors.embeddings import NEEDS_REVIEW, month_siblings, pull_siblings
from flywheel.vectors.stand_in import hashing_encoder

TEXTS = {
    "t-fee": ("approved", "Why was I charged a fee on my card payment?"),
    "t-fee-approved": ("approved", "I was charged a fee on my payment, why?"),
    "t-fee-pending": ("pending", "Why is there a fee charged on my card payment?"),
    "t-fee-raw": (None, "Jane Doe here: why was I charged a fee on my card payment?"),
    "t-fee-rejected": ("rejected", "Why was I charged a fee on my card payment today?"),
    "t-pin": ("approved", "I forgot my PIN, how do I reset it?"),
    "t-old": (None, "Why was I charged a fee on my card payment?"),
}


@pytest.fixture
def month_db(db):
    for trace_id, (status, text) in TEXTS.items():
        ts = "2026-01-01T00:00:00.000Z" if trace_id == "t-old" else "2026-05-02T00:00:00.000Z"
        raw = text if status is None else f"{RAW_ONLY}: {text}"
        db["traces"].insert(
            {"trace_id": trace_id, "ts": ts, "week": "2026-W18", "input": raw, "content_hash": trace_id}
        )
        if status:
            db["scrubs"].insert({"trace_id": trace_id, "status": status, "input": f"[PERSON]: {text}"})
    with write(db):
        label_queue.enqueue_approved(db)
    return db


def test_siblings_come_from_the_months_unsampled_traces_without_unreviewed_text(month_db):
    rows = month_siblings(month_db, LENA, "t-fee", limit=5, encoder=hashing_encoder())
    by = {r["trace_id"]: r for r in rows}
    assert {"t-fee-approved", "t-fee-pending", "t-fee-raw"} <= set(by)  # sampled or not
    assert "t-fee-rejected" not in by and "t-old" not in by and "t-fee" not in by
    assert by["t-fee-approved"]["status"] == "approved" and by["t-fee-approved"]["turns"]
    for unreviewed in ("t-fee-pending", "t-fee-raw"):
        assert by[unreviewed] == {**by[unreviewed], "status": NEEDS_REVIEW, "turns": None}
    shown = repr(rows)
    assert RAW_ONLY not in shown and "Jane" not in shown and "Why is there a fee" not in shown


def test_the_unsampled_trace_is_searched_on_its_machine_scrub_not_its_raw_text(month_db):
    seen = []

    def encoder(texts):
        seen.extend(texts)
        return hashing_encoder()(texts)

    month_siblings(month_db, LENA, "t-fee", encoder=encoder)
    assert not any("Jane" in t for t in seen) and any("[PERSON]" in t and "fee" in t for t in seen)


def test_adding_a_sibling_pulls_it_into_a_batch_for_review(month_db):
    batch = pull_siblings(month_db, LENA, "t-fee", ["t-fee-raw", "t-fee-pending", "t-fee-approved"])
    items = {r["trace_id"] for r in month_db["batch_items"].rows_where("batch_id = ?", [batch])}
    assert items == {"t-fee-raw", "t-fee-pending", "t-fee-approved"}
    scrub = month_db.execute("SELECT status FROM scrubs WHERE trace_id = 't-fee-raw'").fetchone()
    assert scrub == ("pending",)  # scrubbed now, to be reviewed like any trace
    entry = month_db.execute("SELECT action FROM audit_log WHERE action = 'pull_siblings'").fetchall()
    assert len(entry) == 1
    assert pull_siblings(month_db, LENA, "t-fee", ["t-fee-raw"]) is None  # already in a batch
    with pytest.raises(BadInput, match="'t-nope'"):
        pull_siblings(month_db, LENA, "t-fee", ["t-nope"])


def test_an_approved_sibling_joins_its_siblings_batch_in_the_label_queue(month_db):
    queued = "SELECT batch_id, priority FROM label_queue WHERE trace_id = 't-fee-approved'"
    assert month_db.execute(queued).fetchone() == (None, 3)  # approved, sampled by no batch yet
    batch = pull_siblings(month_db, LENA, "t-fee", ["t-fee-approved"])
    assert month_db.execute(queued).fetchone() == (batch, 1)


def test_an_anchor_a_labeler_may_not_read_is_refused(month_db):
    with pytest.raises(PermissionDenied):
        month_siblings(month_db, LENA, "t-fee-pending", encoder=hashing_encoder())
