"""The SQLite store: opening a database, its schema migrations, transactions and the audit log.

Raw trace text lives only in the ``traces`` table (and, for lines that could not be read, in
``quarantine``); every other station stores ids and scrubbed text.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database, Migrations

from flywheel.config import Config, load_config
from flywheel.errors import StoreError

migrations = Migrations("flywheel")


@migrations()
def m001_traces_ingest_audit(db: Database) -> None:
    db["traces"].create(
        {
            "trace_id": str,
            "ts": str,
            "week": str,
            "input": str,
            "output": str,
            "messages": str,
            "cohort": str,
            "intent": str,
            "thumbs": str,
            "regenerated": int,
            "retried": int,
            "escalated": int,
            "guardrail_tripped": int,
            "schema_valid": int,
            "judge_score": float,
            "turns": int,
            "latency_ms": float,
            "cost_usd": float,
            "metadata": str,
            "content_hash": str,
            "run_id": int,
        },
        pk="trace_id",
        not_null={"input", "ts", "week", "content_hash"},
    )
    for columns in (["week", "ts"], ["ts"], ["cohort"], ["intent"]):
        db["traces"].create_index(columns)
    db["ingest_runs"].create(
        {
            "id": int,
            "started_at": str,
            "finished_at": str,
            "actor": str,
            "sources": str,
            "status": str,
            "lines_read": int,
            "ingested": int,
            "duplicates": int,
            "changed": int,
            "quarantined": int,
            "blank_lines": int,
        },
        pk="id",
    )
    db["quarantine"].create(
        {"id": int, "run_id": int, "file": str, "line_no": int, "reason": str, "raw": bytes},
        pk="id",
        foreign_keys=[("run_id", "ingest_runs", "id")],
    )
    db["quarantine"].create_index(["run_id", "line_no"])
    db["ingest_conflicts"].create(
        {"id": int, "run_id": int, "file": str, "line_no": int, "trace_id": str},
        pk="id",
        foreign_keys=[("run_id", "ingest_runs", "id")],
    )
    db["ingest_conflicts"].create_index(["run_id"])
    db["audit_log"].create(
        {"id": int, "at": str, "actor": str, "action": str, "entity": str, "entity_id": str, "detail": str},
        pk="id",
    )
    db["audit_log"].create_index(["at"])


def open_db(path: str | Path | None = None, config: Config | None = None) -> Database:
    """Open (creating if needed) the database at ``path`` with WAL, a busy timeout, foreign keys
    and every pending migration applied."""
    config = config or load_config()
    path = Path(path or config.db)
    if not path.parent.is_dir():
        raise StoreError(f"cannot open database {str(path)!r}: folder {str(path.parent)!r} does not exist")
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=config.busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        db = Database(conn)
        if migrations.pending(db):
            with write(db):  # under the write lock, so two processes never migrate at once
                migrations.apply(db)
    except sqlite3.DatabaseError as error:
        raise StoreError(f"cannot open database {str(path)!r}: {error}") from None
    return db


@contextlib.contextmanager
def write(db: Database) -> Iterator[Database]:
    """A write transaction taken with BEGIN IMMEDIATE: all or nothing, one writer at a time."""
    try:
        db.conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        raise StoreError(f"database is not writable: {error}") from None
    try:
        yield db
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def query_rows(db: Database, sql: str, params: list | dict = ()) -> list[dict]:
    """Rows of a query as dicts keyed by column name."""
    cursor = db.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def query_one(db: Database, sql: str, params: list | dict = ()) -> dict | None:
    """The first row of a query as a dict, or None."""
    rows = query_rows(db, sql, params)
    return rows[0] if rows else None


def now() -> str:
    """The current UTC time as the store writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit(db: Database, actor: str, action: str, entity: str, entity_id: object, **detail: object) -> None:
    """Record who did what to which entity; call inside the write transaction of the change itself."""
    db["audit_log"].insert(
        {
            "at": now(),
            "actor": actor,
            "action": action,
            "entity": entity,
            "entity_id": str(entity_id),
            "detail": json.dumps(detail, default=str),
        }
    )


def audit_entries(db: Database, limit: int = 50) -> list[dict]:
    """The most recent audit entries, newest first."""
    return list(db["audit_log"].rows_where(order_by="id desc", limit=limit))


@migrations()
def m002_scrubs_and_review(db: Database) -> None:
    db["scrubs"].create(
        {
            "id": int,
            "trace_id": str,
            "scrubber_version": str,
            "status": str,
            "input": str,
            "output": str,
            "messages": str,
            "created_at": str,
            "reviewed_by": str,
            "reviewed_at": str,
            "note": str,
        },
        pk="id",
        not_null={"trace_id", "status", "input"},
        foreign_keys=[("trace_id", "traces", "trace_id")],
    )
    db["scrubs"].create_index(["trace_id"], unique=True)
    db["scrubs"].create_index(["status", "id"])
    db["redactions"].create(
        {
            "id": int,
            "scrub_id": int,
            "field": str,
            "start": int,
            "end": int,
            "label": str,
            "detector": str,
            "removed_by": str,
        },
        pk="id",
        foreign_keys=[("scrub_id", "scrubs", "id")],
    )
    db["redactions"].create_index(["scrub_id"])
    db["scrub_fixes"].create(
        {"id": int, "scrub_id": int, "kind": str, "label": str, "detector": str, "actor": str, "at": str},
        pk="id",
        foreign_keys=[("scrub_id", "scrubs", "id")],
    )
    db["scrub_fixes"].create_index(["at"])
    db["known_names"].create(
        {"id": int, "name": str, "added_by": str, "added_at": str},
        pk="id",
        not_null={"name"},
    )
    db.execute("CREATE UNIQUE INDEX idx_known_names_name ON known_names(name COLLATE NOCASE)")


@migrations()
def m003_sampling(db: Database) -> None:
    db["sampling_plans"].create(
        {"name": str, "body": str, "updated_at": str, "updated_by": str}, pk="name", not_null={"body"}
    )
    db["sample_batches"].create(
        {
            "id": int,
            "plan_name": str,
            "plan": str,
            "seed": int,
            "week": str,
            "created_by": str,
            "created_at": str,
            "window": int,
            "selected": int,
            "sampled": int,
            "dropped": int,
            "reasons": str,
        },
        pk="id",
        not_null={"plan", "seed", "week"},
    )
    db["batch_items"].create(
        {"batch_id": int, "trace_id": str, "reasons": str, "stratum": str, "priority": int},
        pk=("batch_id", "trace_id"),
        not_null={"reasons", "priority"},
        foreign_keys=[("batch_id", "sample_batches", "id"), ("trace_id", "traces", "trace_id")],
    )
    db["batch_items"].create_index(["trace_id"])
    db["batch_strata"].create(
        {
            "batch_id": int,
            "kind": str,
            "rule": str,
            "stratum": str,
            "quota": int,
            "population": int,
            "selected": int,
            "dropped": int,
            "in_batch": int,
        },
        pk=("batch_id", "rule", "stratum"),
        foreign_keys=[("batch_id", "sample_batches", "id")],
    )
    # Per-week strata counts read only these index entries, never the trace rows.
    db["traces"].create_index(["week", "cohort", "intent"])
    db["traces"].create_index(["week", "cost_usd"])


# Queue a trace for labeling as soon as its scrub is approved (review.py knows nothing of labels),
# in the batch that sampled it first; traces in no batch rank after every batch.
_ENQUEUE = """
    INSERT OR IGNORE INTO label_queue
        (trace_id, scrub_id, batch_id, batch_rank, priority, needed, done, is_open, queued_at)
    SELECT s.trace_id, s.id, b.batch_id, coalesce(b.batch_id, 9223372036854775807), coalesce(b.priority, 3),
           coalesce(o.labels_per_item, 1), 0, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM {source}
    LEFT JOIN batch_items b ON b.trace_id = s.trace_id
         AND b.batch_id = (SELECT min(batch_id) FROM batch_items WHERE trace_id = s.trace_id)
    LEFT JOIN batch_overlap o ON o.batch_id = b.batch_id"""


@migrations()
def m004_labels_taxonomy_embeddings(db: Database) -> None:
    db["taxonomy"].create(
        {
            "code": str,
            "name": str,
            "definition": str,
            "status": str,
            "merged_into": str,
            "created_by": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="code",
        not_null={"name", "definition", "status"},
    )
    db["taxonomy_history"].create(
        {"id": int, "code": str, "change": str, "name": str, "definition": str, "actor": str, "at": str},
        pk="id",
        foreign_keys=[("code", "taxonomy", "code")],
    )
    db["taxonomy_history"].create_index(["code", "id"])
    db["batch_overlap"].create(
        {"batch_id": int, "labels_per_item": int, "set_by": str, "set_at": str},
        pk="batch_id",
        foreign_keys=[("batch_id", "sample_batches", "id")],
    )
    db["label_queue"].create(
        {
            "trace_id": str,
            "scrub_id": int,
            "batch_id": int,
            "batch_rank": int,
            "priority": int,
            "needed": int,
            "done": int,
            "is_open": int,
            "claim_id": int,
            "claimed_by": str,
            "claim_expires": str,
            "queued_at": str,
        },
        pk="trace_id",
        not_null={"batch_rank", "priority", "needed", "done", "is_open"},
        foreign_keys=[("trace_id", "traces", "trace_id")],
    )
    db["label_queue"].create_index(["is_open", "batch_rank", "priority", "trace_id"])
    db["label_queue"].create_index(["claimed_by"])
    db["label_queue"].create_index(["batch_id", "is_open"])
    db["claims"].create(
        {"id": int, "trace_id": str, "labeler": str, "claimed_at": str, "expires_at": str, "state": str},
        pk="id",
        not_null={"trace_id", "labeler", "claimed_at", "expires_at", "state"},
        foreign_keys=[("trace_id", "traces", "trace_id")],
    )
    db["claims"].create_index(["trace_id"])
    db["labels"].create(
        {
            "id": int,
            "trace_id": str,
            "batch_id": int,
            "labeler": str,
            "kind": str,
            "code": str,
            "original_code": str,
            "expected": str,
            "pass_criterion": str,
            "note": str,
            "adversarial": str,
            "via": str,
            "sibling_of": int,
            "claim_id": int,
            "created_at": str,
            "undone_at": str,
            "undone_by": str,
        },
        pk="id",
        not_null={"trace_id", "labeler", "kind", "adversarial", "via", "created_at"},
        foreign_keys=[("trace_id", "traces", "trace_id"), ("code", "taxonomy", "code")],
    )
    # One live label per labeler and trace, enforced by the database itself.
    db.execute("CREATE UNIQUE INDEX idx_labels_live ON labels(trace_id, labeler) WHERE undone_at IS NULL")
    db["labels"].create_index(["labeler", "id"])
    db["labels"].create_index(["code", "created_at"])
    db["labels"].create_index(["batch_id", "labeler"])
    db["labels"].create_index(["sibling_of"])
    db["embeddings"].create(
        {"text_hash": str, "model": str, "dim": int, "vector": bytes, "created_at": str},
        pk=("text_hash", "model"),
        not_null={"dim", "vector"},
    )
    _enqueue_approved_scrubs(db)


def _enqueue_approved_scrubs(db: Database) -> None:
    db.execute(_ENQUEUE.format(source="(SELECT id, trace_id FROM scrubs WHERE status = 'approved') s"))
    new_row = "(SELECT NEW.id AS id, NEW.trace_id AS trace_id) s"
    db.execute(
        "CREATE TRIGGER label_queue_on_approve AFTER UPDATE OF status ON scrubs"
        " WHEN NEW.status = 'approved' AND OLD.status IS NOT 'approved'"
        f" BEGIN {_ENQUEUE.format(source=new_row)}; END"
    )
    db.execute(
        "CREATE TRIGGER label_queue_on_insert AFTER INSERT ON scrubs WHEN NEW.status = 'approved'"
        f" BEGIN {_ENQUEUE.format(source=new_row)}; END"
    )
    # A trace approved before any batch sampled it joins the first batch that does.
    db.execute(
        """CREATE TRIGGER label_queue_on_batch AFTER INSERT ON batch_items BEGIN
            UPDATE label_queue SET batch_id = NEW.batch_id, batch_rank = NEW.batch_id,
                priority = NEW.priority
            WHERE trace_id = NEW.trace_id AND batch_id IS NULL;
        END"""
    )


@migrations()
def m005_eval_sets(db: Database) -> None:
    # An eval row's content is frozen once written: an edit is a new row that ``replaces`` the old one.
    db["eval_rows"].create(
        {
            "id": str,
            "external_id": str,
            "input": str,
            "messages": str,
            "expected": str,
            "criterion": str,
            "code": str,
            "adversarial": int,
            "adversarial_kind": str,
            "tags": str,
            "source": str,
            "trace_id": str,
            "scrub_id": int,
            "source_file": str,
            "source_line": int,
            "labeled_by": str,
            "labeled_at": str,
            "replaces": str,
            "content_hash": str,
            "created_at": str,
        },
        pk="id",
        not_null={"input", "source", "adversarial", "content_hash", "created_at"},
    )
    db["eval_rows"].create_index(["trace_id"])
    db["eval_rows"].create_index(["content_hash"])
    db["eval_versions"].create(
        {
            "version": int,
            "kind": str,
            "note": str,
            "created_by": str,
            "created_at": str,
            "added": int,
            "retired": int,
            "carried": int,
            "rows": int,
        },
        pk="version",
        not_null={"kind", "created_by", "created_at"},
    )
    # Membership of each version: ``active`` rows are what a normal export and a run read; ``archived``
    # rows were retired (kept, never deleted) and are exported only on request.
    db["eval_version_rows"].create(
        {"version": int, "row_id": str, "state": str},
        pk=("version", "row_id"),
        not_null={"state"},
        foreign_keys=[("version", "eval_versions", "version"), ("row_id", "eval_rows", "id")],
    )
    db["eval_version_rows"].create_index(["row_id"])


@migrations()
def m006_eval_results(db: Database) -> None:
    # A regression run of one system on one eval-set version, imported from a results file or graded
    # by the judge; ``passed`` is NULL while a row has an output but no verdict yet.
    db["eval_runs"].create(
        {
            "id": int,
            "version": int,
            "system": str,
            "run_label": str,
            "source_file": str,
            "format": str,
            "imported_by": str,
            "imported_at": str,
        },
        pk="id",
        not_null={"version", "system", "imported_by", "imported_at"},
        foreign_keys=[("version", "eval_versions", "version")],
    )
    db["eval_runs"].create_index(["version", "system"])
    db["eval_results"].create(
        {
            "id": int,
            "run_id": int,
            "row_id": str,
            "repeat": int,
            "passed": int,
            "score": float,
            "output": str,
            "graded_by": str,
        },
        pk="id",
        not_null={"run_id", "row_id", "repeat"},
        foreign_keys=[("run_id", "eval_runs", "id"), ("row_id", "eval_rows", "id")],
    )
    db.execute("CREATE UNIQUE INDEX idx_eval_results_run_row ON eval_results(run_id, row_id, repeat)")
    db["eval_results"].create_index(["row_id"])


@migrations()
def m080_judge(db: Database) -> None:
    # A rubric is never edited in place: saving it again writes the next version.
    db["rubrics"].create(
        {"id": int, "name": str, "version": int, "body": str, "created_by": str, "created_at": str},
        pk="id",
        not_null={"name", "version", "body", "created_by", "created_at"},
    )
    db.execute("CREATE UNIQUE INDEX idx_rubrics_name_version ON rubrics(name, version)")
    db["judge_runs"].create(
        {
            "id": int,
            "rubric_id": int,
            "target": str,
            "model": str,
            "base_url": str,
            "status": str,
            "started_by": str,
            "started_at": str,
            "finished_at": str,
            "requested": int,
            "judged": int,
            "errors": int,
            "failed": int,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
        },
        pk="id",
        not_null={"rubric_id", "target", "model", "status", "started_by", "started_at"},
        foreign_keys=[("rubric_id", "rubrics", "id")],
    )
    # One judgment per rubric version, subject and position (pairs are judged in both orders), so an
    # interrupted run that is started again cannot grade anything twice.
    db["judgments"].create(
        {
            "id": int,
            "run_id": int,
            "rubric_id": int,
            "subject_kind": str,
            "subject_id": str,
            "position": str,
            "status": str,
            "verdict": str,
            "score": float,
            "reason": str,
            "metrics": str,
            "error": str,
            "model": str,
            "prompt_hash": str,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "attempts": int,
            "created_at": str,
        },
        pk="id",
        not_null={"run_id", "rubric_id", "subject_kind", "subject_id", "position", "status", "created_at"},
        foreign_keys=[("run_id", "judge_runs", "id"), ("rubric_id", "rubrics", "id")],
    )
    db.execute(
        "CREATE UNIQUE INDEX idx_judgments_subject"
        " ON judgments(rubric_id, subject_kind, subject_id, position)"
    )
    db["judgments"].create_index(["run_id"])
    db["judgments"].create_index(["subject_kind", "subject_id"])
    db["quality_settings"].create(
        {"name": str, "value": float, "updated_by": str, "updated_at": str}, pk="name", not_null={"value"}
    )
