"""CSV files, read one way everywhere: starter suites, results, trace files.

The reader follows RFC 4180 to the letter, because a lenient reader loses rows without a word: a
quote that opens a field and never closes swallows every later record into that field. So a quote
may only open a field (and then the field ends at its closing quote, followed by a comma or the end
of the line) or stand doubled inside a quoted field; anything else is a stray quote and refuses the
record by its line number. A quoted field may hold line breaks (``\\n``, ``\\r\\n`` or ``\\r``,
mixed), but a record never reads past ``max_bytes`` nor past the end of the file, and a record that
joined several lines yet has the wrong number of fields, or that holds a line which reads as a record
of its own (its id column names another row), is a stray quote too: its first line is refused and
reading goes on with the next one.

Strict files (suites, results) are refused whole when any record is bad; trace ingest instead
quarantines each bad record with its line number (``flywheel.ingest.run``). Either way every physical
line is accounted for: header + records + blank lines + lines inside multi-line fields.
"""

from __future__ import annotations

import io
import re
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

from flywheel.errors import BadInput

MAX_FIELD = 131_072  # the csv module's own default limit; a bigger field is refused with its line
MAX_RECORD = 64 << 20
_FIELD = re.compile(r'"([^"]*(?:""[^"]*)*)"|([^",\r\n]*)')
_BREAK = re.compile(r"\r\n|\r|\n")


class BadRows(BadInput):
    """A file with bad rows, refused whole; ``problems`` lists (line, reason)."""

    def __init__(self, name: str, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        listed = "; ".join(f"line {line}: {reason}" for line, reason in problems[:50])
        more = f"; and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{name}: {len(problems)} bad rows, nothing imported: {listed}{more}")


class PhysicalLines:
    """Physical lines of a text stream with their numbers; lines can be pushed back to be read again."""

    def __init__(self, text: io.TextIOBase, max_bytes: int, on_line: Callable[[], None] | None = None):
        self.text, self.max_bytes, self.on_line = text, max_bytes, on_line
        self.line_no = 0
        self.back: deque[tuple[int, str]] = deque()

    def next(self) -> tuple[int, str] | None:
        if self.back:
            return self.back.popleft()
        text = self.text.readline(self.max_bytes + 2)
        if not text:
            return None
        self.line_no += 1
        if self.on_line:
            self.on_line()
        if len(text) > self.max_bytes and not text.endswith(("\n", "\r")):
            while (more := self.text.readline(1 << 20)) and not more.endswith(("\n", "\r")):
                pass
            return self.line_no, text[: self.max_bytes + 1]  # over the bound: its record is refused
        return self.line_no, text

    def push_back(self, parts: list[tuple[int, str]]) -> None:
        self.back.extendleft(reversed(parts))


@dataclass
class Record:
    """One record: its first line, its physical lines, and its cells or why it cannot be read."""

    line: int
    parts: list[tuple[int, str]]
    cells: list[str] | None = None
    problem: str | None = None

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.parts)

    @property
    def blank(self) -> bool:
        return self.cells is not None and not any(cell.strip() for cell in self.cells)


def split_record(text: str) -> tuple[list[str] | None, int]:
    """The cells of one record's text (its line ending included), or None and where it breaks the rules."""
    body = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith(("\n", "\r")) else text
    cells, position = [], 0
    while True:
        match = _FIELD.match(body, position)
        assert match is not None  # the plain branch matches the empty string
        quoted, plain = match.groups()
        cells.append(quoted.replace('""', '"') if quoted is not None else plain)
        position = match.end()
        if position == len(body):
            return cells, -1
        if body[position] != ",":
            return None, position
        position += 1


def records(lines: PhysicalLines, width: int | None = None) -> Iterator[Record]:
    """Records of the lines; ``width`` (the header's field count) tells a joined record from a stray quote."""
    while (group := _record_lines(lines)) is not None:
        parts, closed = group
        first_no, raw = parts[0][0], "".join(text for _, text in parts)
        if not closed:
            lines.push_back(parts[1:])
            where = "the end of the file" if len(raw) <= lines.max_bytes else f"{lines.max_bytes} bytes"
            yield Record(
                first_no,
                parts[:1],
                problem=f"quoted field opened on line {first_no} is not closed within {where}",
            )
            continue
        if not raw.strip():
            yield Record(first_no, parts, [])
            continue
        cells, broken = split_record(raw)
        if len(parts) > 1 and (cells is None or (width is not None and len(cells) != width)):
            # A quote that closes only on a later line joined lines that are records of their own.
            lines.push_back(parts[1:])
            yield Record(
                first_no,
                parts[:1],
                problem=f"unbalanced quote: the quote opened on line {first_no} closes only on a later line",
            )
            continue
        if cells is None:
            at = first_no + len(_BREAK.findall(raw, 0, broken))
            yield Record(
                first_no,
                parts,
                problem=f"stray quote on line {at}: quote a field with a quote whole, its quotes doubled",
            )
        elif width is not None and len(cells) != width:
            yield Record(first_no, parts, cells, f"record has {len(cells)} fields, the header has {width}")
        else:
            yield Record(first_no, parts, cells)


def _record_lines(lines: PhysicalLines) -> tuple[list[tuple[int, str]], bool] | None:
    """The physical lines of the next record, and whether its quotes are closed within the bound."""
    first = lines.next()
    if first is None:
        return None
    parts, size, quotes = [first], len(first[1]), first[1].count('"')
    while quotes % 2 and size <= lines.max_bytes:
        following = lines.next()
        if following is None:
            break
        parts.append(following)
        size += len(following[1])
        quotes += following[1].count('"')
    return parts, quotes % 2 == 0 and size <= lines.max_bytes


# Strict files: refused whole ----------------------------------------------------------------------


@dataclass
class Table:
    """A strict CSV file: its header and its rows, each with the line it starts on."""

    header: list[str]
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    physical_lines: int = 0
    blank_lines: int = 0
    record_lines: int = 0


def read_table(
    text: str,
    name: str,
    key: str | None = None,
    known_keys: Collection[str] = (),
    check_header: Callable[[list[str]], None] | None = None,
) -> Table:
    """Every record of a CSV text as a dict by header name; any bad record refuses the file (BadRows).

    ``key`` names the id column: a line inside a multi-line quoted field whose own id cell names a
    row (one of ``known_keys`` or of the file's ids) is a swallowed record, refused by its line number.
    """
    lines = PhysicalLines(io.StringIO(text, newline=""), MAX_RECORD)
    header_record = next((r for r in records(lines) if r.problem or not r.blank), None)
    if header_record is None:
        raise BadInput(f"{name}: no header line")
    if header_record.problem:
        raise BadInput(f"{name}: line {header_record.line}: header cannot be read: {header_record.problem}")
    assert header_record.cells is not None  # a record without a problem has its cells
    header = [cell.strip() for cell in header_record.cells]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise BadInput(f"{name}: line {header_record.line}: the header repeats the column(s) {repeated!r}")
    if check_header:
        try:
            check_header(header)
        except BadInput as error:
            raise BadInput(f"{name}: line {header_record.line}: {error}") from None
    table, problems, joined = Table(header), [], []
    for record in records(lines, len(header)):
        if record.problem:
            problems.append((record.line, record.problem))
        elif not record.text.strip():
            table.blank_lines += len(record.parts)
        else:
            assert record.cells is not None  # a record without a problem has its cells
            problems.extend(_oversized(record, header))
            table.rows.append((record.line, dict(zip(header, record.cells, strict=True))))
            table.record_lines += len(record.parts)
            if len(record.parts) > 1:
                joined.append(record)
    if key is not None and key in header:
        problems.extend(_swallowed(joined, header, key, {*known_keys, *(r[key] for _, r in table.rows)}))
    if problems:
        raise BadRows(name, sorted(problems))
    table.physical_lines = lines.line_no
    accounted = header_record.parts[-1][0] + table.blank_lines + table.record_lines
    if accounted != table.physical_lines:
        raise BadInput(
            f"{name}: {table.physical_lines} lines but {accounted} accounted for"
            " (header, records and blank lines); nothing imported"
        )
    return table


def _oversized(record: Record, header: list[str]) -> list[tuple[int, str]]:
    assert record.cells is not None
    return [
        (record.line, f"field {column!r} is {len(cell):,} characters; expected at most {MAX_FIELD:,}")
        for column, cell in zip(header, record.cells, strict=True)
        if len(cell) > MAX_FIELD
    ]


def _swallowed(joined: list[Record], header: list[str], key: str, keys: set[str]) -> list[tuple[int, str]]:
    index, problems = header.index(key), []
    shapes = {_shape(k) for k in keys}
    for record in joined:
        for number, text in record.parts[1:]:
            # The cells before any quote on the line: a swallowed row starts like any other row, with
            # an id of its own or one shaped like the file's ids (q7 beside q1..q5).
            head = text.split('"', 1)[0].split(",")
            if len(head) <= index + 1:
                continue
            cell = head[index].strip()
            if cell in keys or (len(head) >= len(header) and cell and _shape(cell) in shapes):
                problems.append(
                    (
                        number,
                        f"reads as a row of its own ({key} {cell!r}) inside the quoted field"
                        f" opened on line {record.line}: a stray quote swallowed it",
                    )
                )
                break
    return problems


def _shape(key: str) -> str:
    return re.sub(r"\d+", "0", key.strip())
