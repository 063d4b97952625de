"""The SQLite store: opening a database, its schema migrations, transactions and the audit log.

Raw trace text lives only in the ``traces`` table (and, for lines that could not be read, in
``quarantine``); every other station stores ids and scrubbed text.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database, Migrations

from flywheel.config import Config, load_config
from flywheel.errors import ForeignDatabase, NewerDatabase, StoreBusy, StoreError

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


def open_db(
    path: str | Path | None = None, config: Config | None = None, any_thread: bool = False
) -> Database:
    """Open (creating if needed) the database at ``path`` with WAL, a busy timeout, foreign keys
    and every pending migration applied.

    A file that is read-only, a non-empty SQLite database of another application, or a database a
    newer Flywheel upgraded is refused with a StoreError before anything is written to it.
    ``any_thread``: the connection may be used from other threads than the one that opened it, by one
    thread at a time.
    """
    config = config or load_config()
    path = Path(path or config.db)
    check_location(path)
    try:
        conn = sqlite3.connect(
            str(path),
            isolation_level=None,
            timeout=config.busy_timeout_ms / 1000,
            check_same_thread=not any_thread,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")
        _check_ours(conn, path)
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.create_function("iso_week", 1, _sql_iso_week, deterministic=True)
        db = Database(conn)
        if migrations.pending(db):
            with write(db):  # under the write lock, so two processes never migrate at once
                if migrations.pending(db):
                    migrations.apply(db)
        sweep_interrupted(db, config.run_stale_seconds)
    except sqlite3.DatabaseError as error:
        raise StoreError(f"cannot open database {str(path)!r}: {error}") from None
    return db


def check_location(path: str | Path) -> None:
    """Raise StoreError unless a database can live at ``path``: its folder exists and is writable, and
    the path is not a folder or a read-only file."""
    path = Path(path)
    if not path.parent.is_dir():
        raise StoreError(f"cannot open database {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise StoreError(f"cannot open database {str(path)!r}: it is a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreError(f"cannot open database {str(path)!r}: the file is read-only")
    if not os.access(path.parent, os.W_OK):
        raise StoreError(f"cannot open database {str(path)!r}: folder {str(path.parent)!r} is read-only")


def _check_ours(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a SQLite file that holds tables but was never migrated by flywheel, or that a newer
    flywheel migrated past the migrations this code knows (its tables may mean something else now)."""
    tables = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
    }
    if not tables:
        return
    if Migrations.migrations_table in tables:
        applied = [
            row[0]
            for row in conn.execute(
                f"SELECT name FROM [{Migrations.migrations_table}] WHERE migration_set = ?",
                [migrations.name],
            )
        ]
        if applied:
            _check_not_newer(conn, path, applied)
            return
    conn.close()
    raise ForeignDatabase(
        f"cannot open database {str(path)!r}: it holds tables of another application"
        f" ({', '.join(sorted(tables)[:5])}); flywheel never migrates a database it did not create"
    )


def _check_not_newer(conn: sqlite3.Connection, path: Path, applied: list[str]) -> None:
    known = {migration.name for migration in migrations._migrations}
    unknown = sorted(set(applied) - known)
    if not unknown:
        return
    conn.close()
    raise NewerDatabase(
        f"cannot open database {str(path)!r}: a newer Flywheel upgraded it to {unknown[-1]}"
        f" ({len(unknown)} migration(s) this version does not know: {', '.join(unknown[:5])}); this"
        f" version knows up to {max(known)}. Open it with the newer Flywheel; nothing was changed"
    )


@contextlib.contextmanager
def write(db: Database) -> Iterator[Database]:
    """A write transaction: all or nothing, one writer at a time.

    The outermost ``write`` takes the lock with BEGIN IMMEDIATE, waiting for it up to the connection's
    busy timeout (then StoreBusy); a ``write`` inside another is a SAVEPOINT, so a helper that writes
    can be called alone or as part of a larger change.
    """
    if db.conn.in_transaction:
        with _savepoint(db):
            yield db
        return
    _begin(db.conn)
    try:
        yield db
        db.conn.execute("COMMIT")
    except BaseException as error:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        if isinstance(error, sqlite3.OperationalError) and _is_store_fault(error):
            raise store_error(error) from None
        raise


# A waiting writer tries for the lock this often (SQLite's own wait backs off to a try every 100 ms).
_POLL_SECONDS = 0.005
# How long a long import, between two chunks, lets writers that wait for the lock go first.
_MOST_YIELD_SECONDS = 2.0


def _begin(conn: sqlite3.Connection) -> None:
    (timeout_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
    deadline = time.monotonic() + timeout_ms / 1000
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        with _waiting(conn) as announce:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as error:
                    if not is_busy(error) or time.monotonic() >= deadline:
                        raise store_error(error, timeout_ms) from None
                announce()
                time.sleep(_POLL_SECONDS)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")


def _waiting_file(conn: sqlite3.Connection) -> Path | None:
    """The file beside the database on which writers waiting for its lock hold a shared flock."""
    name = conn.execute("PRAGMA database_list").fetchone()[2]
    return Path(f"{name}-waiting") if name else None


@contextlib.contextmanager
def _waiting(conn: sqlite3.Connection) -> Iterator[Callable[[], None]]:
    """Yield ``announce``: once called, this writer is known to wait until the block ends, so a long
    import lets it in between two chunks instead of racing it for the lock (SQLite is not fair)."""
    held: list = []

    def announce() -> None:
        if held:
            return
        held.append(None)
        path = _waiting_file(conn)
        if path is not None:
            with contextlib.suppress(OSError):  # a folder we cannot write: the race stays, nothing breaks
                held[0] = path.open("a")
                fcntl.flock(held[0], fcntl.LOCK_SH)

    try:
        yield announce
    finally:
        if held and held[0] is not None:
            held[0].close()  # releases the flock


def _let_waiting_writers_in(conn: sqlite3.Connection) -> None:
    """Between two chunks of a long import: wait (a bounded time) until no writer waits for the lock."""
    path = _waiting_file(conn)
    if path is None or not path.exists():
        return
    deadline = time.monotonic() + _MOST_YIELD_SECONDS
    with contextlib.suppress(OSError), path.open("a") as handle:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                time.sleep(_POLL_SECONDS)
                continue
            fcntl.flock(handle, fcntl.LOCK_UN)
            return


def write_chunks(
    db: Database,
    rows: Sequence,
    write_rows: Callable[[Database, list], object],
    size: int | None = None,
) -> None:
    """Write ``rows`` in transactions of ``size`` rows (the ``write_chunk`` setting), letting writers
    that wait for the lock in between, so a long import never holds it long enough to turn a user away.

    Readers must not see the rows before a last, short write links them in (a version, a run); inside an
    open transaction the caller holds the lock already and it all stays one write.
    """
    size = size or load_config().write_chunk
    for start in range(0, len(rows), size):
        if start and not db.conn.in_transaction:
            _let_waiting_writers_in(db.conn)
        with write(db):
            write_rows(db, list(rows[start : start + size]))


@contextlib.contextmanager
def parents_written_last(db: Database) -> Iterator[None]:
    """Rows written inside may name a parent row (their foreign key) that a later write adds.

    Across chunked transactions foreign keys are off until the block ends (the caller checks the
    parent's key itself); inside an open transaction they are checked at its commit instead.
    """
    if db.conn.in_transaction:
        db.conn.execute("PRAGMA defer_foreign_keys = ON")  # switches itself off at the commit
        yield
        return
    db.conn.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        db.conn.execute("PRAGMA foreign_keys = ON")


def delete_chunks(db: Database, table: str, where: str, params: list) -> None:
    """Delete the rows of ``table`` that match ``where``, a chunk per transaction (see write_chunks)."""
    size = load_config().write_chunk
    sql = f"DELETE FROM [{table}] WHERE rowid IN (SELECT rowid FROM [{table}] WHERE {where} LIMIT {size})"
    while True:
        with write(db):
            if db.execute(sql, params).rowcount < size:
                return
        _let_waiting_writers_in(db.conn)


@contextlib.contextmanager
def _savepoint(db: Database) -> Iterator[None]:
    name = f"write_{next(_savepoints)}"
    db.conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        if db.conn.in_transaction:  # an error can end the whole transaction, savepoints included
            db.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            db.conn.execute(f"RELEASE SAVEPOINT {name}")
        raise
    db.conn.execute(f"RELEASE SAVEPOINT {name}")


_savepoints = itertools.count(1)
_STORE_FAULTS = ("readonly", "read-only", "locked", "disk i/o", "database or disk is full")


def _is_store_fault(error: sqlite3.OperationalError) -> bool:
    """Faults of the file or the lock, as opposed to a wrong statement (which stays a bug)."""
    return any(fault in str(error).lower() for fault in _STORE_FAULTS)


def is_busy(error: BaseException) -> bool:
    """Whether a SQLite error means another connection holds the lock."""
    return isinstance(error, sqlite3.OperationalError) and (
        "database is locked" in str(error) or "database is busy" in str(error)
    )


def store_error(error: sqlite3.OperationalError, waited_ms: int | None = None) -> StoreError:
    """The StoreError for a fault of the file or the lock: StoreBusy, in plain words, for a lock."""
    if is_busy(error):
        waited = "" if waited_ms is None else f" for {waited_ms / 1000:g} s"
        return StoreBusy(
            f"the database is not writable right now: another change (a large import, perhaps) kept it"
            f" busy{waited}. Nothing was saved; try again in a moment"
        )
    return StoreError(f"database is not writable: {error}")


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
    """The current UTC time as the store writes it: ``2026-05-03T10:22:00.000Z``."""
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    """A moment as the store writes every timestamp (UTC, milliseconds, ``Z``), so text order is time order.

    The same shape as SQLite's ``strftime('%Y-%m-%dT%H:%M:%fZ')``; a naive moment is taken as UTC.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def iso_week(ts: str) -> str:
    """The ISO 8601 week (``2026-W18``) of a stored timestamp; the one week key of the whole store."""
    return _week_of_day(ts[:10])


@functools.lru_cache(maxsize=4096)
def _week_of_day(day: str) -> str:
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year:04d}-W{week:02d}"


def _sql_iso_week(ts: object) -> str | None:
    """``iso_week(ts)`` in SQL (SQLite before 3.46 has no ``%G``/``%V``)."""
    if not isinstance(ts, str) or len(ts) < 10:
        return None
    try:
        return iso_week(ts)
    except ValueError:
        return None


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
    # The queue policy as this migration first wrote it, frozen here (m030 drops the triggers; the live
    # policy is flywheel.label_queue): approved scrubs join the queue in the first batch that sampled
    # them; traces in no batch rank after every batch.
    db.execute(
        """
    INSERT OR IGNORE INTO label_queue
        (trace_id, scrub_id, batch_id, batch_rank, priority, needed, done, is_open, queued_at)
    SELECT s.trace_id, s.id, b.batch_id, coalesce(b.batch_id, 9223372036854775807), coalesce(b.priority, 3),
           coalesce(o.labels_per_item, 1), 0, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM (SELECT id, trace_id FROM scrubs WHERE status = 'approved') s
    LEFT JOIN batch_items b ON b.trace_id = s.trace_id
         AND b.batch_id = (SELECT min(batch_id) FROM batch_items WHERE trace_id = s.trace_id)
    LEFT JOIN batch_overlap o ON o.batch_id = b.batch_id"""
    )
    db.execute(
        """CREATE TRIGGER label_queue_on_approve AFTER UPDATE OF status ON scrubs
    WHEN NEW.status = 'approved' AND OLD.status IS NOT 'approved' BEGIN
    INSERT OR IGNORE INTO label_queue
        (trace_id, scrub_id, batch_id, batch_rank, priority, needed, done, is_open, queued_at)
    SELECT s.trace_id, s.id, b.batch_id, coalesce(b.batch_id, 9223372036854775807), coalesce(b.priority, 3),
           coalesce(o.labels_per_item, 1), 0, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM (SELECT NEW.id AS id, NEW.trace_id AS trace_id) s
    LEFT JOIN batch_items b ON b.trace_id = s.trace_id
         AND b.batch_id = (SELECT min(batch_id) FROM batch_items WHERE trace_id = s.trace_id)
    LEFT JOIN batch_overlap o ON o.batch_id = b.batch_id; END"""
    )
    db.execute(
        """CREATE TRIGGER label_queue_on_insert AFTER INSERT ON scrubs WHEN NEW.status = 'approved' BEGIN
    INSERT OR IGNORE INTO label_queue
        (trace_id, scrub_id, batch_id, batch_rank, priority, needed, done, is_open, queued_at)
    SELECT s.trace_id, s.id, b.batch_id, coalesce(b.batch_id, 9223372036854775807), coalesce(b.priority, 3),
           coalesce(o.labels_per_item, 1), 0, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM (SELECT NEW.id AS id, NEW.trace_id AS trace_id) s
    LEFT JOIN batch_items b ON b.trace_id = s.trace_id
         AND b.batch_id = (SELECT min(batch_id) FROM batch_items WHERE trace_id = s.trace_id)
    LEFT JOIN batch_overlap o ON o.batch_id = b.batch_id; END"""
    )
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
def m010_ingest_heartbeat_and_quarantine_per_line(db: Database) -> None:
    # A run that stops beating while "running" was killed; the page shows it as interrupted.
    db.execute("ALTER TABLE ingest_runs ADD COLUMN heartbeat_at TEXT")
    db.execute("UPDATE ingest_runs SET heartbeat_at = coalesce(finished_at, started_at)")
    # One quarantine row per source line (file, line number, content): a re-run or a concurrent
    # import of the same file updates ``last_run_id`` instead of adding a copy.
    db.execute("ALTER TABLE quarantine ADD COLUMN raw_hash TEXT")
    db.execute("ALTER TABLE quarantine ADD COLUMN last_run_id INTEGER")
    rows = db.execute("SELECT id, raw FROM quarantine").fetchall()
    db.conn.executemany(
        "UPDATE quarantine SET raw_hash = ?, last_run_id = run_id WHERE id = ?",
        [(quarantine_hash(raw), row_id) for row_id, raw in rows],
    )
    db.execute(
        """DELETE FROM quarantine WHERE id NOT IN
           (SELECT min(id) FROM quarantine GROUP BY file, line_no, raw_hash)"""
    )
    db.execute("CREATE UNIQUE INDEX idx_quarantine_line ON quarantine(file, line_no, raw_hash)")
    db.execute("CREATE INDEX idx_quarantine_last_run ON quarantine(last_run_id, line_no)")


def quarantine_hash(raw: bytes | None) -> str:
    """The content key of a quarantined line."""
    return hashlib.blake2b(raw or b"", digest_size=16).hexdigest()


@migrations()
def m020_scrub_versions_review_claims(db: Database) -> None:
    # A trace may be scrubbed again by a newer scrubber: one row per (trace, scrubber version), of which
    # exactly one is current. Reviewers claim a scrub like labelers claim an item; skips are kept.
    db.execute("ALTER TABLE scrubs ADD COLUMN is_current INTEGER NOT NULL DEFAULT 1")
    db.execute("ALTER TABLE scrubs ADD COLUMN claimed_by TEXT")
    db.execute("ALTER TABLE scrubs ADD COLUMN claim_expires TEXT")
    db.execute("DROP INDEX idx_scrubs_trace_id")
    db.execute("CREATE UNIQUE INDEX idx_scrubs_current ON scrubs(trace_id) WHERE is_current = 1")
    db.execute("CREATE UNIQUE INDEX idx_scrubs_trace_version ON scrubs(trace_id, scrubber_version)")
    db.execute(
        """CREATE TABLE review_skips (
            reviewer TEXT NOT NULL,
            scrub_id INTEGER NOT NULL REFERENCES scrubs(id),
            skipped_at TEXT NOT NULL,
            PRIMARY KEY (reviewer, scrub_id))"""
    )


@migrations()
def m021_known_name_history(db: Database) -> None:
    # Removed customer names live here, readable by role, not in the audit log that names every action.
    db.execute(
        """CREATE TABLE known_name_history (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL, change TEXT NOT NULL, actor TEXT, at TEXT)"""
    )
    moved = db.execute(
        "SELECT id, actor, at, entity_id FROM audit_log WHERE action = 'remove_known_name'"
    ).fetchall()
    for audit_id, actor, at, name in moved:
        history_id = db.execute(
            "INSERT INTO known_name_history (name, change, actor, at) VALUES (?, 'removed', ?, ?)",
            [name, actor, at],
        ).lastrowid
        db.execute("UPDATE audit_log SET entity_id = ? WHERE id = ?", [str(history_id), audit_id])


@migrations()
def m030_label_queue_without_triggers(db: Database) -> None:
    # Enqueueing is an explicit library call now (flywheel.label_queue), made in the approving transaction.
    for name in ("label_queue_on_approve", "label_queue_on_insert", "label_queue_on_batch"):
        db.execute(f"DROP TRIGGER IF EXISTS {name}")


@migrations()
def m031_scrub_vectors(db: Database) -> None:
    # Which cached embedding holds each part of an approved scrub, so siblings read vectors by scrub.
    db["scrub_vectors"].create(
        {"scrub_id": int, "part": str, "model": str, "text_hash": str},
        pk=("scrub_id", "part", "model"),
        not_null={"text_hash"},
        foreign_keys=[("scrub_id", "scrubs", "id")],
    )
    db["label_queue"].create_index(["scrub_id"])


@migrations()
def m040_trace_rollups_and_listing_indexes(db: Database) -> None:
    # Counts per week, cohort, intent and signal ('' for all traces), kept up to a rowid watermark so
    # the overview reads a few thousand rows instead of every trace; rebuilt when the signal table changes.
    db["trace_rollup"].create(
        {"week": str, "cohort": str, "intent": str, "signal": str, "traces": int},
        pk=("week", "cohort", "intent", "signal"),
        not_null={"traces"},
    )
    db["rollup_state"].create({"name": str, "definition": str, "upto_rowid": int}, pk="name")
    # Listing indexes end in trace_id, the tie-break of keyset pagination; they replace the narrower
    # ones so an import maintains no more indexes than before.
    for old, columns in (("ts", "ts"), ("cohort", "cohort, ts"), ("intent", "intent, ts")):
        db.execute(f"DROP INDEX IF EXISTS idx_traces_{old}")
        db.execute(f"CREATE INDEX idx_traces_{old}_list ON traces({columns}, trace_id)")
    db.execute("CREATE INDEX idx_traces_judge_list ON traces(judge_score, trace_id)")
    db.execute("CREATE INDEX idx_traces_cost_list ON traces(cost_usd, trace_id)")
    # Anomalies are a few percent of traffic: small partial indexes list and count them by time.
    for name, predicate in (
        ("thumbs_down", "thumbs = 'down'"),
        ("regenerated", "regenerated = 1"),
        ("retried", "retried = 1"),
        ("escalated", "escalated = 1"),
        ("guardrail_tripped", "guardrail_tripped = 1"),
        ("schema_invalid", "schema_valid = 0"),
    ):
        db.execute(f"CREATE INDEX idx_traces_{name} ON traces(ts, trace_id) WHERE {predicate}")
    for name, columns in (("actor", "actor, id"), ("action", "action, id"), ("entity", "entity, entity_id")):
        db.execute(f"CREATE INDEX idx_audit_log_{name} ON audit_log({columns})")


@migrations()
def m050_batch_source_and_sql(db: Database) -> None:
    # Where a batch was sampled (NULL: the store itself), by which engine, the SQL that ran, and how
    # many picked rows a source sent that failed validation.
    for column, kind in (("source", str), ("engine", str), ("sql", str), ("quarantined", int)):
        db["sample_batches"].add_column(column, kind)
    db["sample_batches"].create_index(["plan_name", "week"])


@migrations()
def m060_eval_lifecycle(db: Database) -> None:
    # When a run ran (an injected clock in tests and the demo) and the row ids its file named that the
    # version does not hold; how many rows a version changed or withdrew.
    db["eval_runs"].add_column("ran_at", str)
    db["eval_runs"].add_column("unknown_ids", str)
    db["eval_versions"].add_column("changed", int)
    db["eval_versions"].add_column("withdrawn", int)
    # A retirement a lead confirmed; ``left_version`` is the version whose archive took the row.
    db["eval_retirements"].create(
        {"row_id": str, "reason": str, "confirmed_by": str, "confirmed_at": str, "left_version": int},
        pk="row_id",
        not_null={"confirmed_by", "confirmed_at"},
        foreign_keys=[("row_id", "eval_rows", "id")],
    )
    # A lead's decision on a trace its labelers disagree on: the label to fold (NULL: keep it out).
    db["eval_settlements"].create(
        {"trace_id": str, "label_id": int, "settled_by": str, "settled_at": str},
        pk="trace_id",
        not_null={"settled_by", "settled_at"},
        foreign_keys=[("trace_id", "traces", "trace_id"), ("label_id", "labels", "id")],
    )
    db["eval_gate_settings"].create(
        {"id": int, "adversarial_min": float, "set_by": str, "set_at": str},
        pk="id",
        not_null={"adversarial_min"},
    )
    # A version, its membership and a row's content never change once written.
    for table in ("eval_versions", "eval_version_rows"):
        for event in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_immutable_{event.lower()} BEFORE {event} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{table} is immutable: make a new version'); END"
            )
    content = "input, messages, expected, criterion, code, adversarial, adversarial_kind, tags, content_hash"
    db.execute(
        f"CREATE TRIGGER eval_rows_frozen BEFORE UPDATE OF {content} ON eval_rows"
        " BEGIN SELECT RAISE(ABORT, 'eval rows are frozen: an edit makes a new row'); END"
    )
    db.execute(
        "CREATE TRIGGER eval_rows_kept BEFORE DELETE ON eval_rows"
        " BEGIN SELECT RAISE(ABORT, 'eval rows are never deleted: retire them'); END"
    )


@migrations()
def m070_drift(db: Database) -> None:
    # Vectors keyed by text hash, model name and model revision: a new model starts a new baseline.
    db["drift_vectors"].create(
        {"text_hash": str, "model": str, "revision": str, "dim": int, "vector": bytes, "created_at": str},
        pk=("text_hash", "model", "revision"),
        not_null={"dim", "vector"},
    )
    # Machine scrubs of traces no batch sampled: scrubbed once, embedded by drift, shown to leads only.
    db["drift_texts"].create(
        {"trace_id": str, "scrubber_version": str, "text": str, "created_at": str},
        pk="trace_id",
        not_null={"scrubber_version", "text"},
        foreign_keys=[("trace_id", "traces", "trace_id")],
    )
    db["drift_references"].create(
        {"version": int, "from_week": str, "to_week": str, "set_by": str, "set_at": str},
        pk="version",
        not_null={"from_week", "to_week"},
        foreign_keys=[("version", "eval_versions", "version")],
    )
    db["drift_runs"].create(
        {
            "id": int,
            "at": str,
            "actor": str,
            "scope": str,
            "eval_version": int,
            "model": str,
            "revision": str,
            "tau": float,
            "ref_from": str,
            "ref_to": str,
            "ref_n": int,
            "ref_share": float,
            "alpha": float,
            "min_excess": float,
            "max_traces": int,
            "embedded": int,
            "scrubbed": int,
        },
        pk="id",
        not_null={"eval_version", "model", "tau"},
    )
    db["drift_windows"].create(
        {
            "run_id": int,
            "window": str,
            "n": int,
            "mean_distance": float,
            "mean_lo": float,
            "mean_hi": float,
            "share_beyond": float,
            "share_lo": float,
            "share_hi": float,
            "tau": float,
            "p_value": float,
            "alarm": int,
            "eval_version": int,
            "in_reference": int,
        },
        pk=("run_id", "window"),
        foreign_keys=[("run_id", "drift_runs", "id")],
    )
    db["drift_windows"].create_index(["window", "run_id"])
    db["drift_clusters"].create(
        {"run_id": int, "window": str, "cluster": int, "name": str, "terms": str, "size": int},
        pk=("run_id", "window", "cluster"),
        foreign_keys=[("run_id", "drift_runs", "id")],
    )
    # Far traces only: what clusters and the drift-driven batch need.
    db["drift_members"].create(
        {
            "run_id": int,
            "window": str,
            "trace_id": str,
            "distance": float,
            "cluster": int,
            "nearest_row": str,
        },
        pk=("run_id", "trace_id"),
        foreign_keys=[("run_id", "drift_runs", "id"), ("trace_id", "traces", "trace_id")],
    )
    db["drift_members"].create_index(["run_id", "window", "cluster", "distance"])


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


@migrations()
def m090_weekly_cycle(db: Database) -> None:
    # Each inbox file is ingested once, known by its content hash (a renamed copy is not new).
    db["inbox_files"].create(
        {"content_hash": str, "name": str, "run_id": int, "ingested_at": str},
        pk="content_hash",
        not_null={"name", "ingested_at"},
    )
    db["cycles"].create(
        {
            "id": int,
            "started_at": str,
            "finished_at": str,
            "actor": str,
            "status": str,
            "week": str,
            "needs_attention": int,
            "report": str,
        },
        pk="id",
        not_null={"started_at", "actor", "status"},
    )
    db["cycle_settings"].create(
        {"id": int, "fold_in": int, "baseline": str, "set_by": str, "set_at": str}, pk="id"
    )


@migrations()
def m100_fewer_week_indexes(db: Database) -> None:
    # Every per-week query reads (week, cohort, intent): no query plan chose (week, ts), and (week,
    # cost_usd) served only week filters. Each index an import keeps current costs it CPU at scale.
    for name in ("idx_traces_week_ts", "idx_traces_week_cost_usd"):
        db.execute(f"DROP INDEX IF EXISTS {name}")


@migrations()
def m110_signal_rollup(db: Database) -> None:
    # Per period (week or day) and cohort: traces, rate-signal events, mean cost and p95 latency, kept
    # up to a rowid watermark in rollup_state; a period that gains traces is recomputed whole.
    db["signal_rollup"].create(
        {
            "kind": str,
            "period": str,
            "cohort": str,
            "n": int,
            "s0": int,
            "s1": int,
            "s2": int,
            "s3": int,
            "s4": int,
            "cost": float,
            "p95": float,
        },
        pk=("kind", "period", "cohort"),
        not_null={"n"},
    )


@migrations()
def m120_arm_rollup(db: Database) -> None:
    # Per metadata key (a release or variant field), value and ISO week: traces and rate-signal events,
    # kept up to a rowid watermark per key ('arms:<key>' in rollup_state).
    db["arm_rollup"].create(
        {
            "key": str,
            "arm": str,
            "week": str,
            "n": int,
            "s0": int,
            "s1": int,
            "s2": int,
            "s3": int,
            "s4": int,
        },
        pk=("key", "arm", "week"),
        not_null={"n"},
    )


@migrations()
def m130_drift_far_point(db: Database) -> None:
    # Per window: the reweighted reference's share beyond τ, and the far point's τ and shares; the
    # alarm tests both points, so a lead can see which one moved.
    for column in ("ref_share", "far_tau", "far_share", "far_ref_share"):
        db["drift_windows"].add_column(column, float)


@migrations()
def m140_fold_leave_outs_and_withdrawals(db: Database) -> None:
    # A row a lead left out of one fold-in, with the reason: it keeps waiting and the next preview shows
    # it; ``item`` names what the preview proposed ("add t-000123", "retire r-000045").
    db["eval_leave_outs"].create(
        {
            "id": int,
            "item": str,
            "action": str,
            "trace_id": str,
            "row_id": str,
            "reason": str,
            "left_by": str,
            "left_at": str,
            "after_version": int,
            "fold_version": int,
        },
        pk="id",
        not_null={"item", "action", "reason", "left_by", "left_at"},
    )
    db["eval_leave_outs"].create_index(["item"])
    # Why a row left the set without being retired: a lead's withdrawal (``source`` 'withdraw') or a
    # fold-in that found its labels undone or its scrub reopened ('fold_in'); ``version`` is the first
    # version without it.
    db["eval_withdrawals"].create(
        {
            "row_id": str,
            "trace_id": str,
            "reason": str,
            "source": str,
            "withdrawn_by": str,
            "withdrawn_at": str,
            "version": int,
        },
        pk="row_id",
        not_null={"reason", "source", "withdrawn_by", "withdrawn_at", "version"},
        foreign_keys=[("row_id", "eval_rows", "id"), ("version", "eval_versions", "version")],
    )
    db["eval_withdrawals"].create_index(["trace_id"])


@migrations()
def m150_anomalies_over_the_cap(db: Database) -> None:
    # The cap limits stratified and random picks only: a batch keeps every anomaly even when they alone
    # exceed it. The batch records its cap and how many anomalies its plan picked, and each ledger row
    # how many of its batch traces are held beyond the cap.
    db["sample_batches"].add_column("cap", int)
    db["sample_batches"].add_column("anomalies", int)
    db["batch_strata"].add_column("over_cap", int)


@migrations()
def m180_experiments(db: Database) -> None:
    # A declared A/B experiment: what decides it is fixed before its data is read, so a verdict cannot
    # be shopped for by changing the unit, the split, the metric or the test's parameters afterwards.
    db["experiments"].create(
        {
            "id": int,
            "name": str,
            "key": str,
            "control": str,
            "treatment": str,
            "unit": str,
            "treatment_share": float,
            "primary_metric": str,
            "min_days": int,
            "min_effect": float,
            "alpha": float,
            "power": float,
            "start": str,
            "declared_by": str,
            "declared_at": str,
        },
        pk="id",
        not_null={
            "name",
            "key",
            "control",
            "treatment",
            "unit",
            "treatment_share",
            "primary_metric",
            "start",
        },
    )
    db["experiments"].create_index(["name"], unique=True)


@migrations()
def m170_release_decisions(db: Database) -> None:
    # A lead's release decision on one version: the verdict, every criterion and the waived rows with
    # their reasons, as the gate stated them then. The newest shipped decision names the live system.
    db["release_decisions"].create(
        {
            "id": int,
            "version": int,
            "baseline": str,
            "challenger": str,
            "verdict": str,
            "criteria": str,
            "waived": str,
            "unpaired": str,
            "flaky": str,
            "adversarial_min": float,
            "require_improvement": int,
            "decided_by": str,
            "decided_at": str,
        },
        pk="id",
        not_null={"version", "baseline", "challenger", "verdict", "criteria", "decided_by", "decided_at"},
    )
    db["release_decisions"].create_index(["verdict", "decided_at"])
    for event in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER release_decisions_immutable_{event.lower()} BEFORE {event} ON release_decisions"
            " BEGIN SELECT RAISE(ABORT, 'release_decisions is immutable: record a new decision'); END"
        )


@migrations()
def m200_interrupted_work_and_import_hashes(db: Database) -> None:
    # Work that records a "running" state also records the process doing it (host, pid and the pid's
    # start time, so a reused pid is not taken for the dead one) and a heartbeat: a row whose process is
    # gone, or that stopped beating, is marked interrupted when the store is next opened.
    for table in ("cycles", "ingest_runs", "judge_runs"):
        for column, kind in (("host", str), ("pid", int), ("pid_started", str), ("heartbeat_at", str)):
            if column not in db[table].columns_dict:
                db[table].add_column(column, kind)
    # Each scrub names the audit entry written in the transaction that stored it.
    db["scrubs"].add_column("audit_id", int)
    _audit_old_scrubs(db)
    # The SHA-256 of the file a version or a run was imported from: the same file is imported once.
    db["eval_versions"].add_column("source_sha256", str)
    db["eval_runs"].add_column("source_sha256", str)
    db["eval_versions"].create_index(["source_sha256"])
    db["eval_runs"].create_index(["version", "system", "source_sha256"])


def _audit_old_scrubs(db: Database) -> None:
    """Tie each earlier scrub to the run entry that counted it; scrubs a killed run committed without
    one (the entry came only after the last chunk) get an entry of their own."""
    unclaimed = [tuple(r) for r in db.execute("SELECT id, created_at FROM scrubs ORDER BY id")]
    entries = db.execute(
        "SELECT id, at, entity_id FROM audit_log WHERE action = 'scrub' AND entity = 'traces' ORDER BY id"
    ).fetchall()
    for audit_id, at, count in entries:
        before = [s for s in unclaimed if s[1] <= at]
        taken = before[-int(count) :] if count.isdigit() and int(count) else []
        db.conn.executemany("UPDATE scrubs SET audit_id = ? WHERE id = ?", [(audit_id, s[0]) for s in taken])
        taken_ids = {s[0] for s in taken}
        unclaimed = [s for s in unclaimed if s[0] not in taken_ids]
    if unclaimed:
        ids = [s[0] for s in unclaimed]
        audit(db, "flywheel", "scrub_recovered", "scrubs", len(ids), scrub_ids=ids)
        audit_id = db.execute("SELECT max(id) FROM audit_log").fetchone()[0]
        db.conn.executemany("UPDATE scrubs SET audit_id = ? WHERE id = ?", [(audit_id, i) for i in ids])


# Interrupted work ------------------------------------------------------------------------------------

# Tables of work that records a "running" state, and the column naming who started it.
RUNNING_WORK = {"cycles": "actor", "ingest_runs": "actor", "judge_runs": "started_by"}


def process_mark() -> dict:
    """The columns that name this process as the one doing a piece of work."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_started": _pid_started(pid), "heartbeat_at": now()}


def _pid_started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot); None when no such process is alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is dead, only not yet reaped


def _process_gone(row: dict) -> bool | None:
    """Whether the process a row names is gone; None when this host cannot tell (another host, no pid,
    no /proc): the heartbeat decides then."""
    if row.get("pid") is None or row.get("host") != socket.gethostname() or not Path("/proc").is_dir():
        return None
    return _pid_started(row["pid"]) != row.get("pid_started")


def sweep_interrupted(db: Database, stale_after: int | None = None) -> list[dict]:
    """Mark "running" work whose process is gone (or, when that cannot be told, that stopped beating for
    ``stale_after`` seconds) as interrupted, audited; return what was marked, as ``{kind, id}``."""
    stale_after = load_config().run_stale_seconds if stale_after is None else stale_after
    cutoff = format_ts(datetime.now(UTC) - timedelta(seconds=stale_after))
    found = []
    for table, actor in RUNNING_WORK.items():
        rows = query_rows(
            db,
            f"SELECT id, {actor} AS actor, host, pid, pid_started, coalesce(heartbeat_at, started_at) AS beat"
            f" FROM {table} WHERE status = 'running'",
        )
        for row in rows:
            gone = _process_gone(row)
            if gone or (gone is None and (row["beat"] or "") < cutoff):
                found.append((table, row))
    if found:
        with write(db):
            for table, row in found:
                _mark_interrupted(db, table, row)
    return [{"kind": table, "id": row["id"]} for table, row in found]


def _mark_interrupted(db: Database, table: str, row: dict) -> None:
    changed = db.execute(
        f"UPDATE {table} SET status = 'interrupted', finished_at = ? WHERE id = ? AND status = 'running'",
        [row["beat"], row["id"]],
    ).rowcount
    if changed:  # another process may have swept it first
        where = f"process {row['pid']} on {row['host']} is gone" if row["pid"] else "no heartbeat"
        audit(
            db,
            row["actor"] or "flywheel",
            "interrupted",
            table,
            row["id"],
            reason=where,
            last_beat=row["beat"],
        )


def beat(db: Database, table: str, row_id: int) -> None:
    """Record that the work in ``table`` row ``row_id`` is still alive."""
    with write(db):
        db.execute(f"UPDATE {table} SET heartbeat_at = ? WHERE id = ?", [now(), row_id])


@migrations()
def m220_data_subjects_retention_never_redact(db: Database) -> None:
    # Raw text that is gone (retention or a data subject's erasure): the trace keeps its id, time,
    # signals and approved scrub; ``reason`` says why and when, for every page that shows the trace.
    db["raw_purges"].create(
        {"trace_id": str, "reason": str, "purged_by": str, "purged_at": str},
        pk="trace_id",
        not_null={"reason", "purged_at"},
    )
    # Keyed hashes of normalised tokens of raw text (never the text), so a data subject is found fast.
    db.execute(
        "CREATE TABLE subject_index (token INTEGER NOT NULL, trace_rowid INTEGER NOT NULL,"
        " PRIMARY KEY (token, trace_rowid)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX idx_subject_index_trace ON subject_index(trace_rowid)")
    db["subject_keys"].create({"name": str, "secret": bytes}, pk="name", not_null={"secret"})
    db["exports"].create(
        {"id": int, "version": int, "format": str, "path": str, "rows": int, "actor": str, "at": str},
        pk="id",
        not_null={"version", "format", "path", "at"},
    )
    db["exports"].create_index(["version"])
    db["never_redact"].create(
        {"id": int, "phrase": str, "added_by": str, "added_at": str}, pk="id", not_null={"phrase"}
    )
    db.execute("CREATE UNIQUE INDEX idx_never_redact_phrase ON never_redact(phrase COLLATE NOCASE)")
    # An erased row's content is replaced by its tombstone, the one change a frozen row accepts: the
    # tombstone is written first (never changed afterwards) and the update must put exactly its text in.
    db["eval_row_tombstones"].create(
        {"row_id": str, "text": str, "reason": str, "erased_by": str, "erased_at": str},
        pk="row_id",
        not_null={"text", "erased_at"},
    )
    for event in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER eval_row_tombstones_immutable_{event.lower()} BEFORE {event}"
            " ON eval_row_tombstones BEGIN SELECT RAISE(ABORT, 'tombstones are never changed'); END"
        )
    content = "input, messages, expected, criterion, code, adversarial, adversarial_kind, tags, content_hash"
    db.execute("DROP TRIGGER eval_rows_frozen")
    db.execute(
        f"CREATE TRIGGER eval_rows_frozen BEFORE UPDATE OF {content} ON eval_rows"
        " WHEN NOT EXISTS (SELECT 1 FROM eval_row_tombstones t WHERE t.row_id = OLD.id"
        " AND NEW.input = t.text AND NEW.messages IS NULL AND NEW.expected IS NULL"
        " AND NEW.criterion IS NULL AND NEW.tags IS NULL)"
        " BEGIN SELECT RAISE(ABORT, 'eval rows are frozen: an edit makes a new row'); END"
    )


@migrations()
def m230_named_eval_sets_coverage_and_checks(db: Database) -> None:
    # Several eval-set lineages in one store (e.g. a frozen ``regression`` set beside a ``quality`` set
    # refreshed from production). Version numbers stay unique across the store, so every table that
    # names a version keeps naming it alone. A frozen set takes no new version, ever: no fold-in, edit,
    # withdrawal or retirement. A store that had versions keeps them in one set, "default".
    db["eval_sets"].create(
        {
            "name": str,
            "frozen": int,
            "note": str,
            "created_by": str,
            "created_at": str,
            "frozen_by": str,
            "frozen_at": str,
        },
        pk="name",
        not_null={"frozen", "created_by", "created_at"},
    )
    db["eval_versions"].add_column("eval_set", str)
    db["eval_rows"].add_column("eval_set", str)
    db["eval_leave_outs"].add_column("eval_set", str)
    # A labeler's "handled well: add as coverage" (on a not-a-bug label) and the row it makes; a pass
    # criterion's code check (JSON, validated when written), graded here instead of by a judge.
    db["labels"].add_column("coverage", int)
    db["labels"].add_column("pass_check", str)
    db["eval_rows"].add_column("coverage", int)
    db["eval_rows"].add_column("pass_check", str)
    db["eval_rows"].create_index(["eval_set"])
    db["eval_versions"].create_index(["eval_set", "version"])
    if db.execute("SELECT 1 FROM eval_versions LIMIT 1").fetchone():
        first = db.execute(
            "SELECT created_by, created_at FROM eval_versions ORDER BY version LIMIT 1"
        ).fetchone()
        db["eval_sets"].insert(
            {"name": "default", "frozen": 0, "created_by": first[0], "created_at": first[1]}
        )
        db.execute("DROP TRIGGER eval_versions_immutable_update")
        db.execute("UPDATE eval_versions SET eval_set = 'default'")
        db.execute(
            "CREATE TRIGGER eval_versions_immutable_update BEFORE UPDATE ON eval_versions"
            " BEGIN SELECT RAISE(ABORT, 'eval_versions is immutable: make a new version'); END"
        )
        db.execute("UPDATE eval_rows SET eval_set = 'default'")
        db.execute("UPDATE eval_leave_outs SET eval_set = 'default'")
    content = (
        "input, messages, expected, criterion, code, adversarial, adversarial_kind, tags, content_hash,"
        " coverage, pass_check, eval_set"
    )
    db.execute("DROP TRIGGER eval_rows_frozen")
    db.execute(
        f"CREATE TRIGGER eval_rows_frozen BEFORE UPDATE OF {content} ON eval_rows"
        # the one update allowed: a data subject's erasure replacing the content by its tombstone
        " WHEN NOT EXISTS (SELECT 1 FROM eval_row_tombstones t WHERE t.row_id = OLD.id"
        " AND NEW.input = t.text AND NEW.messages IS NULL AND NEW.expected IS NULL"
        " AND NEW.criterion IS NULL AND NEW.tags IS NULL AND NEW.pass_check IS NULL"
        " AND NEW.coverage IS OLD.coverage AND NEW.eval_set IS OLD.eval_set)"
        " BEGIN SELECT RAISE(ABORT, 'eval rows are frozen: an edit makes a new row'); END"
    )
    db.execute(
        "CREATE TRIGGER eval_versions_of_frozen_set BEFORE INSERT ON eval_versions"
        " WHEN (SELECT frozen FROM eval_sets WHERE name = NEW.eval_set) = 1"
        " BEGIN SELECT RAISE(ABORT, 'a frozen eval set takes no new version'); END"
    )
    db.execute(
        "CREATE TRIGGER eval_sets_stay_frozen BEFORE UPDATE OF frozen ON eval_sets WHEN OLD.frozen = 1"
        " BEGIN SELECT RAISE(ABORT, 'a frozen eval set stays frozen'); END"
    )
    db.execute(
        "CREATE TRIGGER eval_sets_kept BEFORE DELETE ON eval_sets"
        " BEGIN SELECT RAISE(ABORT, 'eval sets are never deleted'); END"
    )


@migrations()
def m260_label_edits_and_lead_review(db: Database) -> None:
    # An edit replaces a label with a new row (the old one is kept, undone), so who changed what stays
    # readable; a lead's review marks the label that may fold while the review step is on.
    for column in ("edited_by", "edited_at", "reviewed_by", "reviewed_at"):
        db["labels"].add_column(column, str)
    db["labels"].add_column("replaced_by", int)
    db.execute(
        "CREATE INDEX idx_labels_unreviewed ON labels(trace_id)"
        " WHERE undone_at IS NULL AND reviewed_at IS NULL"
    )
    db["label_settings"].create(
        {"name": str, "value": int, "set_by": str, "set_at": str}, pk="name", not_null={"value"}
    )


@migrations()
def m240_input_drift(db: Database) -> None:
    # Input drift beside coverage drift: per run, week and test (input length, language mix, intent
    # mix) the statistic, the p-value and its Bonferroni adjustment across the three, the effect size
    # and the alarm, with the reference weeks the week was compared with.
    db["input_drift"].create(
        {
            "id": int,
            "run_at": str,
            "actor": str,
            "week": str,
            "test": str,
            "n": int,
            "reference_n": int,
            "reference": str,
            "statistic": float,
            "p_value": float,
            "p_adjusted": float,
            "effect": float,
            "alarm": int,
            "detail": str,
        },
        pk="id",
        not_null={"run_at", "week", "test", "n", "reference_n", "alarm"},
    )
    db["input_drift"].create_index(["week", "test", "id"])
