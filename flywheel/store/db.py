"""The SQLite store: opening a database, transactions, chunked writes, queries and the sweep of
interrupted work.

Raw trace text lives only in the ``traces`` table (and, for lines that could not be read, in
``quarantine``); every other station stores ids and scrubbed text.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

from sqlite_utils import Database, Migrations

from flywheel.config import Config, load_config
from flywheel.errors import ForeignDatabase, NewerDatabase, StoreBusy, StoreError
from flywheel.store.audit import audit
from flywheel.store.clock import format_ts, now, now_utc, sql_iso_week
from flywheel.store.migrations import migrations


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
        conn.create_function("iso_week", 1, sql_iso_week, deterministic=True)
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


def query_rows(db: Database, sql: str, params: Sequence | dict = ()) -> list[dict]:
    """Rows of a query as dicts keyed by column name."""
    cursor = db.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def query_one(db: Database, sql: str, params: Sequence | dict = ()) -> dict | None:
    """The first row of a query as a dict, or None."""
    rows = query_rows(db, sql, params)
    return rows[0] if rows else None


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
    cutoff = format_ts(now_utc() - timedelta(seconds=stale_after))
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
