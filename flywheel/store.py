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
