"""Import production traces from JSONL, CSV or span exports: idempotent by trace_id, nothing lost.

Every record read ends as exactly one of: ingested, duplicate (the trace_id is already stored; a
duplicate whose content changed is recorded as a conflict, never written over), or quarantined
(kept with file, line number, reason and the raw bytes; once per source line, however often the
file is imported). Blank lines are not records and are not counted. Records are committed in
batches, each batch one transaction together with the run's counters, its heartbeat and an audit
entry, so an interrupted import leaves every committed batch intact and accounted for, and
re-running it completes the rest. A run that stops on any exception is marked failed with the
reason; one killed outright stops beating and is shown as interrupted.

A record is one line of JSONL, one CSV record (which may span physical lines inside quotes), or,
for span exports (see ``flywheel.ingest.readers``), one trace assembled from its spans.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import operator
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sqlite_utils import Database

from flywheel.auth import RAW_TEXT_ROLES, User, require_role
from flywheel.config import Config
from flywheel.errors import BadInput
from flywheel.ingest.readers import open_records
from flywheel.ingest.records import FORMATS, ByteStream, IngestReport, Line, SizePolicy
from flywheel.store.audit import audit
from flywheel.store.clock import format_ts, iso_week, now, now_utc
from flywheel.store.db import process_mark, write
from flywheel.store.migrations import quarantine_hash
from flywheel.traces.queries import TimeRange

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12 on

# Called after each committed batch with (records read, bytes of input consumed, input size or 0).
Progress = Callable[[int, int, int], None]
_GZIP_FAULTS = (gzip.BadGzipFile, EOFError, zlib.error)


# Errors of one row's values at insert time (a type or size SQLite cannot hold), not of the store.
_ROW_FAULTS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    OverflowError,
    ValueError,
    TypeError,
)


@dataclass
class _Run:
    """One import in progress: where it writes, by what rules, and its running report."""

    db: Database
    report: IngestReport
    actor: str
    config: Config
    max_bad: int
    ts_range: TimeRange
    sizes: SizePolicy
    prices: dict = field(default_factory=dict)
    progress: Progress | None = None
    total_bytes: int = 0
    done_bytes: int = 0


def ingest_files(
    db: Database,
    paths: Iterable[str | Path],
    actor: str = "cli",
    *,
    config: Config,
    progress: Progress | None = None,
    max_bad: int | None = None,
    fmt: str | None = None,
) -> IngestReport:
    """Import trace files (.jsonl/.ndjson/.json, .csv, span exports; optionally .gz) in one run."""
    files = [Path(p) for p in paths]
    for path in files:
        if not path.is_file():
            raise BadInput(f"no such file: {str(path)!r}")
    run = _start_run(db, actor, [str(p) for p in files], config, max_bad, fmt)
    run.progress, run.total_bytes = progress, sum(p.stat().st_size for p in files)
    with _failing_run(run), _import_pragmas(db):
        for path in files:
            with _opened(path) as stream:
                _ingest_stream(run, stream, path.name, fmt)
            run.done_bytes += path.stat().st_size
    return _finish_run(run)


def ingest_upload(
    db: Database,
    stream: ByteStream,
    name: str,
    actor: str,
    *,
    config: Config,
    progress: Progress | None = None,
    max_bad: int | None = None,
    fmt: str | None = None,
) -> IngestReport:
    """Import one uploaded file-like object; the format comes from its name (or ``fmt``) and content.

    The stream is read but not closed: it stays the caller's.
    """
    run = _start_run(db, actor, [name], config, max_bad, fmt)
    run.progress, run.total_bytes = progress, _size_of(stream)
    with _failing_run(run), _import_pragmas(db):
        _ingest_stream(run, stream, name, fmt)
    return _finish_run(run)


def ingest_lines(
    db: Database, lines: Iterable[bytes], name: str, actor: str, *, config: Config
) -> IngestReport:
    """Import JSONL lines given as bytes, each ending in a newline or not (generated traffic comes here)."""
    ended = (line if line.endswith(b"\n") else line + b"\n" for line in lines)
    return ingest_upload(db, _LineStream(ended), name, actor, config=config)


def _opened(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as error:
        raise BadInput(f"cannot read {str(path)!r}: {error.strerror or error}") from None


def _size_of(stream: ByteStream) -> int:
    size = getattr(stream, "size", None)
    if isinstance(size, int):
        return size
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if stream.seekable():
            here = stream.tell()
            end = stream.seek(0, io.SEEK_END)
            stream.seek(here)
            return end
    return 0


@contextlib.contextmanager
def _failing_run(run: _Run) -> Iterator[None]:
    """Mark the run failed with the reason, keeping what it committed, whatever stops it."""
    try:
        yield
    except _GZIP_FAULTS as error:
        _mark_failed(run, f"not a readable gzip file: {error}")
        raise BadInput(f"run {run.report.run_id}: not a readable gzip file ({error})") from None
    except BadInput as error:
        _mark_failed(run, str(error))
        raise
    except KeyboardInterrupt:
        _mark_failed(run, "interrupted")
        raise
    except BaseException as error:
        _mark_failed(run, f"{type(error).__name__}: {error}")
        raise


# Connection settings while an import runs (restored after it): a page cache that holds the hot
# pages of the traces indexes across a batch, so they are neither read back from the file nor written
# twice, temporary b-trees in memory, and a WAL that is checkpointed every ~40 MB instead of every
# ~4 MB, so a hot index page is copied into the database once per checkpoint, not once per batch or
# two. Bounded (64 MB of cache), so an import still runs in constant memory.
_IMPORT_PRAGMAS = {"cache_size": -65536, "temp_store": 2, "wal_autocheckpoint": 10000}


@contextlib.contextmanager
def _import_pragmas(db: Database) -> Iterator[None]:
    before = {name: db.conn.execute(f"PRAGMA {name}").fetchone()[0] for name in _IMPORT_PRAGMAS}
    for name, value in _IMPORT_PRAGMAS.items():
        db.conn.execute(f"PRAGMA {name} = {int(value)}")
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):  # a closed or broken connection keeps its own error
            for name, value in before.items():
                db.conn.execute(f"PRAGMA {name} = {int(value)}")


def _mark_failed(run: _Run, reason: str) -> None:
    # The store itself may be what failed; the original error matters more than this mark.
    with contextlib.suppress(Exception), write(run.db):
        stamp = now()
        failed = {"status": f"failed: {reason}"[:500], "finished_at": stamp, "heartbeat_at": stamp}
        run.db.table("ingest_runs").update(run.report.run_id, failed)
        audit(run.db, run.actor, "ingest_failed", "ingest_run", run.report.run_id, reason=reason[:500])


def _ingest_stream(run: _Run, stream: ByteStream, name: str, fmt: str | None) -> None:
    """Import one input; an error that stops it names the input."""
    try:
        _read_stream(run, stream, name, fmt)
    except _GZIP_FAULTS as error:
        raise BadInput(f"{name}: not a readable gzip file ({error})") from None


def _named(records: Iterator[Line], name: str) -> Iterator[Line]:
    """A reader's records; a reader that gives up on the whole input says which input it was."""
    try:
        yield from records
    except BadInput as error:
        raise BadInput(f"{name}: {error}") from None


def _read_stream(run: _Run, stream: ByteStream, name: str, fmt: str | None) -> None:

    position = _position_of(stream)
    stream = _decompressed(stream, name)
    batch: list[Line] = []
    bad = run.report.quarantined
    with open_records(stream, name, fmt, run.sizes, run.ts_range, run.report, run.prices) as records:
        for line in _named(records, name):
            if line.row is None:
                bad += 1
                if bad > run.max_bad:
                    _commit_batch(run, batch, name)
                    raise BadInput(
                        f"run {run.report.run_id}: more than {run.max_bad} bad lines; stopped at {name}"
                        f" line {line.line_no} ({line.reason}); raise --max-bad or FLYWHEEL_MAX_BAD_LINES"
                        " to import the rest"
                    )
            batch.append(line)
            if len(batch) >= run.config.ingest_batch:
                _commit_batch(run, batch, name)
                batch = []
                _report_progress(run, position)
    _commit_batch(run, batch, name)
    _report_progress(run, position)


def _position_of(stream: ByteStream) -> Callable[[], int]:
    def position() -> int:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            return stream.tell()
        return 0

    return position


def _report_progress(run: _Run, position: Callable[[], int]) -> None:
    if run.progress:
        run.progress(run.report.lines_read, run.done_bytes + position(), run.total_bytes)


def _decompressed(stream: ByteStream, name: str) -> ByteStream:
    """A gzip stream is read through gzip, whether its name says so or only its first bytes do."""
    if name.lower().endswith(".gz") or _starts_with(stream, b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=stream, mode="rb")
    return stream


def _starts_with(stream: ByteStream, magic: bytes) -> bool:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if hasattr(stream, "peek"):
            return stream.peek(len(magic))[: len(magic)] == magic
        if stream.seekable():
            here = stream.tell()
            head = stream.read(len(magic))
            stream.seek(here)
            return head == magic
    return False


# JSONL -------------------------------------------------------------------------------------------


# CSV ---------------------------------------------------------------------------------------------


# Writing -----------------------------------------------------------------------------------------


def _commit_batch(run: _Run, batch: list[Line], source: str) -> None:
    if not batch:
        return
    report, db = run.report, run.db
    ids = [line.row["trace_id"] for line in batch if line.row]
    placeholders = ",".join("?" * len(ids))
    counts = {"ingested": 0, "duplicates": 0, "quarantined": 0, "changed": 0}
    with write(db):
        stored = dict(
            db.execute(f"SELECT trace_id, content_hash FROM traces WHERE trace_id IN ({placeholders})", ids)
        )
        fresh, conflicts = [], []
        for line in batch:
            if line.row is None:
                continue
            if line.row["trace_id"] in stored:
                counts["duplicates"] += 1
                if stored[line.row["trace_id"]] != line.row["content_hash"]:
                    counts["changed"] += 1
                    conflicts.append(_conflict_row(report.run_id, source, line))
            else:
                stored[line.row["trace_id"]] = line.row["content_hash"]
                fresh.append(line)
        counts["ingested"] = _insert_traces(db, report.run_id, fresh)
        quarantine = [_quarantine_row(report.run_id, source, line) for line in batch if line.row is None]
        counts["quarantined"] = len(quarantine)
        _upsert_quarantine(db, quarantine)
        _insert(db, "ingest_conflicts", conflicts)
        for key, value in counts.items():
            setattr(report, key, getattr(report, key) + value)
        report.lines_read += len(batch)
        report.conflicts.extend(_conflict_entry(row) for row in conflicts)
        _save_counts(db, report)
        audit(
            db, run.actor, "ingest_batch", "ingest_run", report.run_id, file=source,
            lines=[batch[0].line_no, batch[-1].line_no], **counts,
        )  # fmt: skip


def _insert_traces(db: Database, run_id: int, lines: list[Line]) -> int:
    """Insert the batch's new traces; a row whose values the store refuses is quarantined instead."""
    rows = [_trace_row(run_id, line.row) for line in lines]  # the lines' own dicts, completed in place
    try:
        with write(db):
            _insert(db, "traces", rows)
        return len(rows)
    except _ROW_FAULTS:
        pass
    stored = 0
    for line, row in zip(lines, rows, strict=True):
        try:
            with write(db):
                _insert(db, "traces", [row])
            stored += 1
        except _ROW_FAULTS as error:
            line.row, line.reason = None, f"cannot be stored: {type(error).__name__}: {str(error)[:120]}"
    return stored


def _insert(db: Database, table: str, rows: list[dict]) -> None:
    if rows:
        columns = list(rows[0])
        sql = f"INSERT INTO [{table}] ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        db.conn.executemany(sql, map(operator.itemgetter(*columns), rows))  # tables of several columns


def _upsert_quarantine(db: Database, rows: list[dict]) -> None:
    if rows:
        db.conn.executemany(
            """INSERT INTO quarantine (run_id, last_run_id, file, line_no, reason, raw, raw_hash)
               VALUES (:run_id, :run_id, :file, :line_no, :reason, :raw, :raw_hash)
               ON CONFLICT (file, line_no, raw_hash)
               DO UPDATE SET last_run_id = excluded.last_run_id, reason = excluded.reason""",
            rows,
        )


def _trace_row(run_id: int, row: dict | None) -> dict:
    assert row is not None  # only lines that hold a trace are inserted
    row["week"], row["run_id"] = iso_week(row["ts"]), run_id
    return row


def _quarantine_row(run_id: int, source: str, line: Line) -> dict:
    return {
        "run_id": run_id,
        "file": source,
        "line_no": line.line_no,
        "reason": line.reason,
        "raw": line.raw,
        "raw_hash": quarantine_hash(line.raw + (b"#%d" % line.part if line.part else b"")),
    }


def _conflict_row(run_id: int, source: str, line: Line) -> dict:
    assert line.row is not None  # only a read trace can conflict with a stored one
    return {"run_id": run_id, "file": source, "line_no": line.line_no, "trace_id": line.row["trace_id"]}


def _conflict_entry(row: dict) -> dict:
    return {"file": row["file"], "line": row["line_no"], "trace_id": row["trace_id"]}


def _start_run(
    db: Database, actor: str, sources: list[str], config: Config, max_bad: int | None, fmt: str | None
) -> _Run:
    if max_bad is not None and max_bad < 0:
        raise BadInput(f"--max-bad {max_bad}: expected 0 or more")
    if fmt is not None and fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    ts_range = TimeRange.around(config.earliest_timestamp, config.max_days_ahead)
    sizes = SizePolicy.of(config)
    with write(db):
        started = now()
        run_id = (
            db.table("ingest_runs")
            .insert(
                {
                    **process_mark(),  # so a killed import is marked interrupted when the store is opened
                    "started_at": started,
                    "heartbeat_at": started,
                    "actor": actor,
                    "sources": json.dumps(sources),
                    "status": "running",
                }
            )
            .last_pk
        )
        assert run_id is not None  # a rowid table always reports the new row's key
        report = IngestReport(run_id=run_id, sources=sources)
        _save_counts(db, report)
    bound = config.max_bad_lines if max_bad is None else max_bad
    return _Run(db, report, actor, config, bound, ts_range, sizes, token_prices(config))


def token_prices(config: Config) -> dict:
    """The configured price table: ``{model: {"prompt": usd_per_1M_tokens, "completion": ...}}``."""
    if not config.token_prices:
        return {}
    try:
        prices = json.loads(Path(config.token_prices).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BadInput(
            f"FLYWHEEL_TOKEN_PRICES={config.token_prices!r}: cannot be read as JSON ({error})"
        ) from None
    shape = "expected {model: {prompt: number, completion: number}}"
    if not isinstance(prices, dict):
        raise BadInput(f"FLYWHEEL_TOKEN_PRICES={config.token_prices!r}: {shape}")
    for model, price in prices.items():
        if not isinstance(price, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in price.values()
        ):
            raise BadInput(f"FLYWHEEL_TOKEN_PRICES: model {model!r}: {shape}")
    return prices


def _save_counts(db: Database, report: IngestReport) -> None:
    """The run's counters and heartbeat (one plain statement: it runs once per batch)."""
    db.conn.execute(
        """UPDATE ingest_runs SET lines_read = ?, ingested = ?, duplicates = ?, changed = ?,
           quarantined = ?, blank_lines = ?, heartbeat_at = ? WHERE id = ?""",
        (
            report.lines_read,
            report.ingested,
            report.duplicates,
            report.changed,
            report.quarantined,
            report.blank_lines,
            now(),
            report.run_id,
        ),
    )


def _finish_run(run: _Run) -> IngestReport:
    report = run.report
    with write(run.db):
        run.db.table("ingest_runs").update(report.run_id, {"status": "done", "finished_at": now()})
        counts = {**report.as_json(), "changed": report.changed}
        audit(run.db, run.actor, "ingest", "ingest_run", report.run_id, **counts)
    return report


class _LineStream(io.RawIOBase):
    """A read-only binary stream over an iterable of lines, so generated traffic takes the file path."""

    def __init__(self, lines: Iterable[bytes]):
        self._lines = iter(lines)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> bytes:
        if not self._buffer:
            self._buffer = next(self._lines, b"")
        if size is None or size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer)
        data = self.readline(len(view))
        view[: len(data)] = data
        return len(data)


# Reading runs back ---------------------------------------------------------------------------------


def ingest_runs(
    db: Database, limit: int = 20, stale_after: int = 300, moment: datetime | None = None
) -> list[dict]:
    """Recent import runs, newest first; a "running" run with no heartbeat for ``stale_after`` seconds
    is shown as interrupted (its process was killed: what it committed stays, re-running completes it)."""
    stale = format_ts((moment or now_utc()) - timedelta(seconds=stale_after))
    rows = list(db["ingest_runs"].rows_where(order_by="id desc", limit=limit))
    for row in rows:
        if row["status"] == "running" and (row.get("heartbeat_at") or row["started_at"]) < stale:
            row["status"] = "interrupted"
    return rows


def conflicting_traces(db: Database, run_id: int, limit: int = 500) -> list[dict]:
    """The run's changed duplicates as (file, line, trace id), in file and line order."""
    rows = db["ingest_conflicts"].rows_where(
        "run_id = ?", [run_id], select="file, line_no, trace_id", order_by="file, line_no", limit=limit
    )
    return [_conflict_entry(row) for row in rows]


def quarantined_lines(db: Database, user: User, run_id: int | None = None, limit: int = 200) -> list[dict]:
    """Quarantined lines (latest run first) with their raw bytes decoded for display: raw input, so
    only reviewers and leads may read them. ``run_id`` selects the lines a run last met."""
    require_role(user, *RAW_TEXT_ROLES)
    where, args = ("last_run_id = ?", [run_id]) if run_id is not None else (None, [])
    rows = db["quarantine"].rows_where(where, args, order_by="last_run_id desc, file, line_no", limit=limit)
    return [{**row, "raw": row["raw"].decode("utf-8", "replace") if row["raw"] else ""} for row in rows]


def blank_raw_text(db: Database, rows: list[tuple[int, str]], marker: str, keep_metadata: bool) -> None:
    """Replace the raw text of traces given as (rowid, trace_id) by ``marker`` (retention, erasure);
    call inside the caller's ``write``."""
    metadata = "metadata" if keep_metadata else "NULL"
    db.conn.executemany(
        f"UPDATE traces SET input = ?, output = NULL, messages = NULL, metadata = {metadata} WHERE rowid = ?",
        [(marker, rowid) for rowid, _ in rows],
    )


def blank_quarantined(db: Database, ids: list[int]) -> None:
    """Drop the raw bytes of quarantined lines, keeping their line numbers and reasons; call inside
    the caller's ``write``."""
    db.conn.executemany("UPDATE quarantine SET raw = X'' WHERE id = ?", [(i,) for i in ids])


def copy_judge_scores(db: Database, rubric_id: int) -> int:
    """Set ``traces.judge_score`` from the rubric's ok judgments of traces (a calibrated judge was
    adopted); return how many traces changed. Call inside the adopting transaction."""
    return db.execute(
        """UPDATE traces SET judge_score = (
               SELECT score FROM judgments j WHERE j.rubric_id = :rubric AND j.subject_kind = 'trace'
               AND j.status = 'ok' AND j.subject_id = traces.trace_id)
           WHERE trace_id IN (SELECT subject_id FROM judgments WHERE rubric_id = :rubric
               AND subject_kind = 'trace' AND status = 'ok')""",
        {"rubric": rubric_id},
    ).rowcount
