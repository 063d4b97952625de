"""Labeling fixtures: users, a seeded label queue, codes."""

from __future__ import annotations

from datetime import UTC, datetime

from flywheel.auth import User
from flywheel.labeling.labels import (
    record_label,
)
from flywheel.labeling.taxonomy import add_entry
from flywheel.review import label_queue
from flywheel.store.db import write

LENA, TOM, UMA = User("lena", "labeler"), User("tom", "labeler"), User("uma", "labeler")
ANA, RAVI = User("ana", "lead"), User("ravi", "reviewer")


T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

RAW_ONLY = "Zorblax Quintana"  # a name only the raw text holds; the scrub says [PERSON]

DEFINITION = "The assistant quotes a fee that does not exist. Any amount not in the schedule counts."


def seed_queue(db, traces: int, batches: dict[int, list[int]] | None = None, approve=lambda n: True) -> None:
    """``traces`` traces with scrubs (approved unless ``approve(n)`` is false) and sample batches.

    ``batches`` maps a batch id to the trace numbers it holds; a trace's priority is n % 3.
    """
    stamp = "2026-05-01T10:00:00.000000Z"
    db.conn.executemany(
        "INSERT INTO traces (trace_id, ts, week, input, output, content_hash, intent, thumbs)"
        " VALUES (?, ?, '2026-W18', ?, ?, ?, 'card_arrival', ?)",
        [
            (
                f"t-{n:05d}",
                f"2026-05-{1 + n % 28:02d}T10:00:00.000Z",
                f"I am {RAW_ONLY}, my card {n} has not arrived",
                f"Sorry {RAW_ONLY}, card {n} ships soon",
                f"h{n}",
                "down" if n % 2 else None,
            )
            for n in range(traces)
        ],
    )
    for batch_id, members in (batches or {}).items():
        db["sample_batches"].insert({"id": batch_id, "plan": "{}", "seed": 7, "week": "2026-W18"})
        db["batch_items"].insert_all(
            {
                "batch_id": batch_id,
                "trace_id": f"t-{n:05d}",
                "reasons": '["anomaly: thumbs_down"]',
                "priority": n % 3,
            }
            for n in members
        )
    db.conn.executemany(
        "INSERT INTO scrubs (trace_id, scrubber_version, status, input, output, created_at)"
        " VALUES (?, 'test', ?, ?, ?, ?)",
        [
            (
                f"t-{n:05d}",
                "approved" if approve(n) else "pending",
                f"I am [PERSON], my card {n} has not arrived",
                f"Sorry [PERSON], card {n} ships soon",
                stamp,
            )
            for n in range(traces)
        ],
    )
    with write(db):
        label_queue.enqueue_approved(db)


def add_code(db, code="HALLUCINATED_FEE") -> str:
    with write(db):
        return add_entry(db, "ana", code, "Hallucinated fee", DEFINITION)


def known(db, user, claim, code="HALLUCINATED_FEE", **kw) -> int:
    return record_label(
        db,
        user,
        claim,
        "known",
        code=code,
        expected="Quote the schedule",
        pass_criterion="No invented fee",
        **kw,
    )
