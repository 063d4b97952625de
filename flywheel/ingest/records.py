"""Trace records: the size policy, one line's record, the JSONL and CSV line readers, shared validation."""

from __future__ import annotations

import io
import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from flywheel.config import Config
from flywheel.csvfiles import PhysicalLines, Record
from flywheel.csvfiles import records as csv_records
from flywheel.errors import BadInput
from flywheel.formats import INGEST_FORMATS
from flywheel.traces.queries import TimeRange, normalize_trace

FORMATS = INGEST_FORMATS


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
    physical_lines: int = 0
    sources: list[str] = field(default_factory=list)
    # each changed duplicate as (file, line, trace id): "2 differ" alone leaves a lead nothing to look up
    conflicts: list[dict] = field(default_factory=list)

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


@dataclass(frozen=True)
class SizePolicy:
    """How large one record may be, and one text of it: every reader applies it before storage.

    A record is measured as stored (input, output, messages and metadata, in UTF-8 bytes), so a trace
    assembled from spans is held to the same bound as a JSONL line; a text is the input, the output or
    one message, in characters, the unit the scrubber's NER counts.
    """

    max_record_bytes: int
    max_text_chars: int

    @classmethod
    def of(cls, config: Config) -> SizePolicy:
        """The policy the settings ask for (FLYWHEEL_MAX_LINE_BYTES, FLYWHEEL_MAX_TEXT_CHARS)."""
        if config.max_text_chars > SCRUBBABLE_CHARS:
            raise BadInput(
                f"FLYWHEEL_MAX_TEXT_CHARS={config.max_text_chars}: expected at most {SCRUBBABLE_CHARS:,}"
                " (the longest text the scrubber's NER reads)"
            )
        return cls(config.max_line_bytes, config.max_text_chars)

    def fault(self, row: dict, obj: dict) -> str | None:
        """Why a normalized trace row is too large to store, or None."""
        for key in ("input", "output"):
            if row[key] is not None and len(row[key]) > self.max_text_chars:
                return f"oversized text: '{key}' is {len(row[key]):,} characters > {self.max_text_chars:,}"
        if row["messages"] is not None and len(row["messages"]) > self.max_text_chars:
            for i, message in enumerate(obj["messages"]):
                if len(message["content"]) > self.max_text_chars:
                    size = len(message["content"])
                    return f"oversized text: 'messages[{i}]' is {size:,} characters > {self.max_text_chars:,}"
        texts = [t for t in (row["input"], row["output"], row["messages"], row["metadata"]) if t]
        if sum(map(len, texts)) * 4 > self.max_record_bytes:  # else no UTF-8 encoding of them can exceed it
            size = sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
            if size > self.max_record_bytes:
                return f"oversized record: {size:,} bytes > {self.max_record_bytes:,}"
        return None


@dataclass(slots=True)
class Line:
    line_no: int
    raw: bytes
    row: dict | None = None
    reason: str | None = None
    part: int = 0  # which record of its line, when one line holds several (span exports)


def jsonl_lines(
    stream: ByteStream, sizes: SizePolicy, ts_range: TimeRange, report: IngestReport
) -> Generator[Line, None, None]:
    """Records of a JSONL stream, one per non-blank physical line."""
    max_bytes = sizes.max_record_bytes
    line_no = 0
    while True:
        raw = stream.readline(max_bytes + 2)
        if not raw:
            return
        line_no += 1
        report.physical_lines += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            size = len(raw) + _skip_rest_of_line(stream)
            yield Line(line_no, raw[:max_bytes], reason=f"oversized line: {size} bytes > {max_bytes}")
            continue
        content = raw.rstrip(b"\r\n")
        if line_no == 1:
            content = content.removeprefix(b"\xef\xbb\xbf")
        if not content.strip():
            report.blank_lines += 1
            continue
        if len(content) > max_bytes:
            yield Line(line_no, content, reason=f"oversized line: {len(content)} bytes > {max_bytes}")
            continue
        yield parse_json_line(line_no, content, ts_range, sizes)


def reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def validated(line: Line, obj: object, ts_range: TimeRange | None, sizes: SizePolicy | None = None) -> Line:
    """Fill in the line's row from a decoded object, or its reason when the object is not a trace
    (or is larger than ``sizes`` allows)."""
    try:
        line.row = normalize_trace(obj, ts_range)
    except BadInput as error:
        line.reason = str(error)
        return line
    assert isinstance(obj, dict)  # normalize_trace refuses anything else
    reason = sizes.fault(line.row, obj) if sizes else None
    if reason:
        line.row, line.reason = None, reason
    return line


def csv_lines(
    stream: ByteStream, sizes: SizePolicy, ts_range: TimeRange, report: IngestReport
) -> Generator[Line, None, None]:
    """Records of a CSV stream (``flywheel.csvfiles``); a bad record is quarantined by its first line.

    A quoted field may span lines, up to ``max_bytes`` and never past the end; a record whose quote is
    not closed within that bound costs its first physical line, not every line after it.
    """
    # typeshed asks the bytes for a name, which TextIOWrapper only passes on when asked for its own
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")  # type: ignore[type-var]
    try:
        lines = PhysicalLines(text, sizes.max_record_bytes, on_line=lambda: _count_line(report))
        header = _csv_header(lines)
        if header is None:
            return
        yield from _csv_records(lines, header, ts_range, report, sizes)
    finally:
        text.detach()  # the byte stream stays open: it belongs to the caller


# spaCy refuses a longer text (its nlp.max_length): a stored trace longer than this could never be scrubbed.
SCRUBBABLE_CHARS = 1_000_000


def _skip_rest_of_line(stream: ByteStream) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(1 << 20)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def parse_json_line(
    line_no: int, content: bytes, ts_range: TimeRange | None = None, sizes: SizePolicy | None = None
) -> Line:
    """One JSONL line as a record: a trace row, or the reason it is quarantined."""
    line = Line(line_no, content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        line.reason = f"invalid UTF-8 at byte {error.start}"
        return line
    try:
        obj = _decode_json(text)
    except RecursionError:
        line.reason = "not JSON: nested too deeply"
        return line
    except ValueError as error:
        line.reason = f"not JSON: {str(error)[:120] or type(error).__name__}"
        return line
    return validated(line, obj, ts_range, sizes)


def _count_line(report: IngestReport) -> None:
    report.physical_lines += 1


def _csv_header(lines: PhysicalLines) -> list[str] | None:
    for record in csv_records(lines):
        if record.problem:
            raise BadInput(f"CSV header cannot be read: {record.problem}")
        if not record.blank:
            assert record.cells is not None  # a record without a problem has its cells
            return csv_header_of(record.cells)
    return None


def _csv_records(
    lines: PhysicalLines, header: list[str], ts_range: TimeRange, report: IngestReport, sizes: SizePolicy
) -> Iterator[Line]:
    for record in csv_records(lines, len(header)):
        if record.problem is None and record.blank:
            report.blank_lines += len(record.parts)
            continue
        yield _csv_record(record, header, ts_range, sizes)


def _decode_json(text: str) -> object:
    """``json.loads(text, parse_constant=reject_constant)``, with the decoder built once."""
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _JSON.decode(text)


def csv_header_of(cells: list[str]) -> list[str]:
    """The checked header of a CSV trace file."""
    header = [h.strip() for h in cells]
    if "trace_id" not in header or "input" not in header:
        raise BadInput(f"CSV header {header[:12]!r} lacks the required columns 'trace_id' and 'input'")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise BadInput(f"CSV header repeats the column(s) {repeated!r}")
    return header


def _csv_record(record: Record, header: list[str], ts_range: TimeRange, sizes: SizePolicy) -> Line:
    line = _csv_line(record.line, record.text, None)
    if record.problem:
        line.reason = f"CSV {record.problem}"
        return line
    assert record.cells is not None  # a record without a problem has its cells
    if any("\udc80" <= ch <= "\udcff" for cell in record.cells for ch in cell):
        line.reason = "invalid UTF-8"
    else:
        try:
            obj = csv_object(dict(zip(header, record.cells, strict=True)))
        except BadInput as error:
            line.reason = str(error)
            return line
        return validated(line, obj, ts_range, sizes)
    return line


_JSON = json.JSONDecoder(parse_constant=reject_constant)  # built once: json.loads builds one per call


def _csv_line(line_no: int, text: str, reason: str | None) -> Line:
    return Line(line_no, text.rstrip("\r\n").encode("utf-8", "surrogateescape"), reason=reason)


def csv_object(record: dict[str, str]) -> dict:
    """A trace object from one CSV record: ``signals.x`` columns and JSON columns folded in."""
    obj: dict = {}
    signals = _json_cell(record.pop("signals", ""), "signals")
    if signals is None:
        signals = {}
    if not isinstance(signals, dict):
        raise BadInput("column 'signals' must hold a JSON object")
    for key, cell in record.items():
        if key.startswith("signals."):
            _set_signal(signals, key.removeprefix("signals."), _csv_scalar(cell))
        elif key in ("messages", "metadata"):
            obj[key] = _json_cell(cell, key)
        elif key in ("trace_id", "input") or cell != "":
            obj[key] = cell
    if signals:
        obj["signals"] = signals
    return obj


def _set_signal(signals: dict, name: str, value: object) -> None:
    if value is None:
        return
    if name in signals and signals[name] != value:
        raise BadInput(f"signal {name!r} is given twice, differently: in 'signals' and in 'signals.{name}'")
    signals[name] = value


def _json_cell(cell: str, key: str) -> object:
    if not cell.strip():
        return None
    try:
        return json.loads(cell, parse_constant=reject_constant)
    except RecursionError:
        raise BadInput(f"column '{key}' is nested too deeply") from None
    except ValueError as error:
        raise BadInput(f"column '{key}' is not JSON: {str(error)[:120]}") from None


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


class ByteStream(Protocol):
    """What an import reads from: a file, an upload, a gzip stream or lines generated in memory."""

    @property
    def closed(self) -> bool: ...
    def read(self, size: int = -1, /) -> bytes: ...
    def readline(self, size: int = -1, /) -> bytes: ...
    def readable(self) -> bool: ...
    def seekable(self) -> bool: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def tell(self) -> int: ...
    # What io.TextIOWrapper asks of the bytes it decodes (CSV is read as text); never called to write.
    def writable(self) -> bool: ...
    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> object: ...
    def close(self) -> object: ...
    def truncate(self, size: int, /) -> int: ...
    def fileno(self) -> int: ...
    def isatty(self) -> bool: ...
