"""Import production traces from JSONL or CSV: idempotent by trace_id, nothing lost.

Every line read ends as exactly one of: ingested, duplicate (the trace_id is already stored; a
duplicate whose content changed is recorded as a conflict, never written over), or quarantined
(kept with file, line number, reason and the raw bytes). Blank lines are not records and are not
counted. Lines are committed in batches, each batch one transaction together with the run's
counters, so an interrupted import leaves every committed batch intact and re-running it
completes the rest.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sqlite_utils import Database

from flywheel.config import Config, load_config
from flywheel.errors import BadInput
from flywheel.store import audit, now, write
from flywheel.traces import iso_week, normalize_trace

Progress = Callable[[int], None]


@dataclass
class IngestReport:
    """What an import did; always ``lines_read == ingested + duplicates + quarantined``."""

    run_id: int
    lines_read: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    changed: int = 0
    blank_lines: int = 0
    sources: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        """The report's contract for scripts: the four counts and the run id."""
        return {
            "run_id": self.run_id,
            "lines_read": self.lines_read,
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
        }

    def summary(self) -> str:
        """One human-readable line."""
        text = (
            f"run {self.run_id}: {self.lines_read} lines read = {self.ingested} ingested"
            f" + {self.duplicates} duplicates + {self.quarantined} quarantined"
        )
        if self.changed:
            text += f" ({self.changed} duplicates differ from the stored trace and were not applied)"
        return text


@dataclass
class _Line:
    line_no: int
    raw: bytes
    row: dict | None = None
    reason: str | None = None


def ingest_files(
    db: Database,
    paths: Iterable[str | Path],
    actor: str = "cli",
    config: Config | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Import trace files (.jsonl/.ndjson/.json, .csv, optionally .gz) in one run."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise BadInput(f"no such file: {str(path)!r}")
    report = _start_run(db, actor, [str(p) for p in paths])
    with _failing_run(db, report):
        for path in paths:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rb") as stream:
                _ingest_stream(db, stream, path.name, report, config or load_config(), progress)
    return _finish_run(db, report, actor)


def ingest_upload(
    db: Database,
    stream: BinaryIO,
    name: str,
    actor: str,
    config: Config | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Import one uploaded file-like object; the format comes from its name."""
    report = _start_run(db, actor, [name])
    with _failing_run(db, report):
        _ingest_stream(db, stream, name, report, config or load_config(), progress)
    return _finish_run(db, report, actor)


@contextlib.contextmanager
def _failing_run(db: Database, report: IngestReport) -> Iterator[None]:
    """Mark the run failed, keeping what it committed, when a file cannot be read on."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        _mark_failed(db, report, f"not a readable gzip file: {error}")
        raise BadInput(f"run {report.run_id}: not a readable gzip file ({error})") from None
    except BadInput as error:
        _mark_failed(db, report, str(error))
        raise


def _mark_failed(db: Database, report: IngestReport, reason: str) -> None:
    with write(db):
        db["ingest_runs"].update(report.run_id, {"status": f"failed: {reason}"[:500], "finished_at": now()})


def ingest_lines(
    db: Database, lines: Iterable[bytes], name: str, actor: str, config: Config | None = None
) -> IngestReport:
    """Import JSONL lines given as bytes (the demo builder feeds its generated traffic here)."""
    return ingest_upload(db, _LineStream(lines), name, actor, config)


def _ingest_stream(
    db: Database, stream: BinaryIO, name: str, report: IngestReport, config: Config, progress: Progress | None
) -> None:
    base = name[:-3] if name.endswith(".gz") else name
    reader = _csv_lines if base.lower().endswith(".csv") else _jsonl_lines
    batch: list[_Line] = []
    for line in reader(stream, config.max_line_bytes, report):
        batch.append(line)
        if len(batch) >= config.ingest_batch:
            _commit_batch(db, batch, name, report)
            batch = []
            if progress:
                progress(report.lines_read)
    if batch:
        _commit_batch(db, batch, name, report)
    if progress:
        progress(report.lines_read)


def _jsonl_lines(stream: BinaryIO, max_bytes: int, report: IngestReport) -> Iterator[_Line]:
    line_no = 0
    while True:
        raw = stream.readline(max_bytes + 2)
        if not raw:
            return
        line_no += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            size = len(raw) + _skip_rest_of_line(stream)
            yield _Line(line_no, raw[:max_bytes], reason=f"oversized line: {size} bytes > {max_bytes}")
            continue
        content = raw.rstrip(b"\r\n")
        if line_no == 1:
            content = content.removeprefix(b"\xef\xbb\xbf")
        if not content.strip():
            report.blank_lines += 1
            continue
        if len(content) > max_bytes:
            yield _Line(line_no, content, reason=f"oversized line: {len(content)} bytes > {max_bytes}")
            continue
        yield _parse_json_line(line_no, content)


def _skip_rest_of_line(stream: BinaryIO) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(1 << 20)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _parse_json_line(line_no: int, content: bytes) -> _Line:
    line = _Line(line_no, content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        line.reason = f"invalid UTF-8 at byte {error.start}"
        return line
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        line.reason = f"not JSON: {str(error)[:120] or type(error).__name__}"
        return line
    return _validated(line, obj)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _validated(line: _Line, obj: object) -> _Line:
    try:
        line.row = normalize_trace(obj)
    except BadInput as error:
        line.reason = str(error)
    return line


def _csv_lines(stream: BinaryIO, max_bytes: int, report: IngestReport) -> Iterator[_Line]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(max_bytes + 1)
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        raise BadInput(f"CSV header cannot be read: {error}") from None
    header = [h.strip() for h in header]
    if "trace_id" not in header or "input" not in header:
        raise BadInput(f"CSV header {header[:12]!r} lacks the required columns 'trace_id' and 'input'")
    end_line = reader.line_num
    while True:
        start_line = end_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            end_line = reader.line_num
            yield _Line(start_line, b"", reason=f"CSV record cannot be read: {error}")
            continue
        end_line = reader.line_num
        if not any(cell.strip() for cell in cells):
            report.blank_lines += 1
            continue
        yield _csv_record(start_line, header, cells)


def _csv_record(line_no: int, header: list[str], cells: list[str]) -> _Line:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    line = _Line(line_no, buffer.getvalue().encode("utf-8", "surrogateescape"))
    if any("\udc80" <= ch <= "\udcff" for cell in cells for ch in cell):
        line.reason = "invalid UTF-8"
        return line
    if len(cells) != len(header):
        line.reason = f"CSV record has {len(cells)} fields, the header has {len(header)}"
        return line
    try:
        obj = _csv_object(dict(zip(header, cells, strict=True)))
    except BadInput as error:
        line.reason = str(error)
        return line
    return _validated(line, obj)


def _csv_object(record: dict[str, str]) -> dict:
    obj: dict = {}
    signals = _json_cell(record.pop("signals", ""), "signals") or {}
    for key, cell in record.items():
        if key.startswith("signals."):
            value = _csv_scalar(cell)
            if value is not None:
                signals[key.removeprefix("signals.")] = value
        elif key in ("messages", "metadata"):
            obj[key] = _json_cell(cell, key)
        elif key in ("trace_id", "input") or cell != "":
            obj[key] = cell
    if signals:
        obj["signals"] = signals
    return obj


def _json_cell(cell: str, key: str) -> object:
    if not cell.strip():
        return None
    try:
        return json.loads(cell)
    except ValueError as error:
        raise BadInput(f"column '{key}' is not JSON: {error}") from None


def _csv_scalar(cell: str) -> object:
    value = cell.strip()
    lowered = value.lower()
    if lowered in ("", "null", "none"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            pass
    return value


def _commit_batch(db: Database, batch: list[_Line], source: str, report: IngestReport) -> None:
    ids = [line.row["trace_id"] for line in batch if line.row]
    placeholders = ",".join("?" * len(ids))
    counts = {"ingested": 0, "duplicates": 0, "quarantined": 0, "changed": 0}
    rows, quarantine, conflicts = [], [], []
    with write(db):
        stored = dict(
            db.execute(f"SELECT trace_id, content_hash FROM traces WHERE trace_id IN ({placeholders})", ids)
        )
        for line in batch:
            if line.row is None:
                counts["quarantined"] += 1
                quarantine.append(_quarantine_row(report.run_id, source, line))
            elif line.row["trace_id"] in stored:
                counts["duplicates"] += 1
                if stored[line.row["trace_id"]] != line.row["content_hash"]:
                    counts["changed"] += 1
                    conflicts.append(_conflict_row(report.run_id, source, line))
            else:
                counts["ingested"] += 1
                stored[line.row["trace_id"]] = line.row["content_hash"]
                rows.append(_trace_row(report.run_id, line.row))
        _insert(db, "traces", rows)
        _insert(db, "quarantine", quarantine)
        _insert(db, "ingest_conflicts", conflicts)
        for key, value in counts.items():
            setattr(report, key, getattr(report, key) + value)
        report.lines_read += len(batch)
        _save_counts(db, report)


def _insert(db: Database, table: str, rows: list[dict]) -> None:
    if rows:
        columns = list(rows[0])
        sql = f"INSERT INTO [{table}] ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        db.conn.executemany(sql, [tuple(row[c] for c in columns) for row in rows])


def _trace_row(run_id: int, row: dict) -> dict:
    return {**row, "week": iso_week(row["ts"]), "run_id": run_id}


def _quarantine_row(run_id: int, source: str, line: _Line) -> dict:
    return {"run_id": run_id, "file": source, "line_no": line.line_no, "reason": line.reason, "raw": line.raw}


def _conflict_row(run_id: int, source: str, line: _Line) -> dict:
    return {"run_id": run_id, "file": source, "line_no": line.line_no, "trace_id": line.row["trace_id"]}


def _start_run(db: Database, actor: str, sources: list[str]) -> IngestReport:
    with write(db):
        run_id = (
            db["ingest_runs"]
            .insert(
                {"started_at": now(), "actor": actor, "sources": json.dumps(sources), "status": "running"}
            )
            .last_pk
        )
        report = IngestReport(run_id=run_id, sources=sources)
        _save_counts(db, report)
    return report


def _save_counts(db: Database, report: IngestReport) -> None:
    db["ingest_runs"].update(
        report.run_id,
        {
            "lines_read": report.lines_read,
            "ingested": report.ingested,
            "duplicates": report.duplicates,
            "changed": report.changed,
            "quarantined": report.quarantined,
            "blank_lines": report.blank_lines,
        },
    )


def _finish_run(db: Database, report: IngestReport, actor: str) -> IngestReport:
    with write(db):
        db["ingest_runs"].update(report.run_id, {"status": "done", "finished_at": now()})
        audit(db, actor, "ingest", "ingest_run", report.run_id, **report.as_json(), changed=report.changed)
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


def ingest_runs(db: Database, limit: int = 20) -> list[dict]:
    """Recent import runs, newest first."""
    return list(db["ingest_runs"].rows_where(order_by="id desc", limit=limit))


def quarantined_lines(db: Database, run_id: int | None = None, limit: int = 200) -> list[dict]:
    """Quarantined lines (newest run first), with the raw bytes decoded for display."""
    where, args = ("run_id = ?", [run_id]) if run_id is not None else (None, [])
    rows = db["quarantine"].rows_where(where, args, order_by="run_id desc, line_no", limit=limit)
    return [{**row, "raw": row["raw"].decode("utf-8", "replace") if row["raw"] else ""} for row in rows]
