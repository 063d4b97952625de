"""The label queue's policy: which approved scrubs labelers get, in which order.

A trace joins the queue when a reviewer approves its scrub (``enqueue_scrub``, called inside the
approving transaction), in the first batch that sampled it; traces sampled by no batch rank after every
batch. A trace approved before any batch sampled it joins the first batch that does (``join_batch``,
called where sampling writes the batch's items). Within a batch, anomalies come before stratified and
random picks (the item's priority), then trace ids.
"""

from __future__ import annotations

from sqlite_utils import Database

from flywheel.store.clock import now

NO_BATCH_RANK = 9223372036854775807  # after every batch id
NO_BATCH_PRIORITY = 3

ENQUEUE_SQL = """
    INSERT INTO label_queue
        (trace_id, scrub_id, batch_id, batch_rank, priority, needed, done, is_open, queued_at)
    SELECT s.trace_id, s.id, b.batch_id, coalesce(b.batch_id, :no_rank), coalesce(b.priority, :no_priority),
           coalesce(o.labels_per_item, 1), 0, 1, :now
    FROM scrubs s
    LEFT JOIN batch_items b ON b.trace_id = s.trace_id
         AND b.batch_id = (SELECT min(batch_id) FROM batch_items WHERE trace_id = s.trace_id)
    LEFT JOIN batch_overlap o ON o.batch_id = b.batch_id
    WHERE s.id = :scrub AND s.status = 'approved'
    ON CONFLICT (trace_id) DO UPDATE SET scrub_id = excluded.scrub_id"""

JOIN_BATCH_SQL = """
    UPDATE label_queue SET batch_id = :batch, batch_rank = :batch,
        priority = (SELECT b.priority FROM batch_items b
                    WHERE b.batch_id = :batch AND b.trace_id = label_queue.trace_id)
    WHERE batch_id IS NULL
      AND trace_id IN (SELECT trace_id FROM batch_items WHERE batch_id = :batch)"""


def enqueue_scrub(db: Database, scrub_id: int) -> bool:
    """Queue the trace of an approved scrub for labeling; call inside the approving transaction.

    A trace already queued keeps its place, its labels and claims, and reads the newly approved scrub.
    Returns whether the scrub is (now) the one the queue serves; False if it is not approved.
    """
    params = {"scrub": scrub_id, "now": now(), "no_rank": NO_BATCH_RANK, "no_priority": NO_BATCH_PRIORITY}
    return db.execute(ENQUEUE_SQL, params).rowcount > 0


def join_batch(db: Database, batch_id: int) -> int:
    """Move queued traces that no batch held into batch ``batch_id``, which just sampled them.

    Call in the transaction that writes the batch's items; returns how many queued traces moved.
    """
    return db.execute(JOIN_BATCH_SQL, {"batch": batch_id}).rowcount


def enqueue_approved(db: Database) -> int:
    """Queue every approved scrub not queued yet (for data written without the review station)."""
    ids = [
        row[0]
        for row in db.execute(
            "SELECT s.id FROM scrubs s WHERE s.status = 'approved'"
            " AND NOT EXISTS (SELECT 1 FROM label_queue q WHERE q.scrub_id = s.id)"
        )
    ]
    return sum(enqueue_scrub(db, scrub_id) for scrub_id in ids)


def withdraw_traces(db: Database, trace_ids: list[str]) -> None:
    """``withdraw_trace`` for many traces at once (an erasure); call inside its transaction."""
    marks = ",".join("?" * len(trace_ids))
    db.execute(f"DELETE FROM label_queue WHERE trace_id IN ({marks})", trace_ids)
    db.execute(
        f"UPDATE claims SET state = 'withdrawn' WHERE state = 'open' AND trace_id IN ({marks})", trace_ids
    )


def count_label(db: Database, trace_id: str, step: int) -> None:
    """Move an item's label count by ``step``; it is open while it has fewer labels than its batch asks
    for. Call inside the labeling transaction."""
    db.execute(
        "UPDATE label_queue SET done = max(done + ?, 0), is_open = (max(done + ?, 0) < needed)"
        " WHERE trace_id = ?",
        [step, step, trace_id],
    )


def set_needed(db: Database, batch_id: int, labels_per_item: int) -> None:
    """Ask for ``labels_per_item`` labels on every queued item of a batch; call inside the caller's
    ``write``."""
    db.execute(
        "UPDATE label_queue SET needed = ?, is_open = (done < ?) WHERE batch_id = ?",
        [labels_per_item, labels_per_item, batch_id],
    )
