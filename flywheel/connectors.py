"""Input formats of an import: which reader turns a byte stream into trace records.

``open_records`` is the one dispatch point: the format is named (``--format``), or told by the file
name (``.csv``), or by the first bytes of the content.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import BinaryIO

from flywheel import ingest
from flywheel.errors import BadInput
from flywheel.traces import TimeRange

SNIFF_BYTES = 8192


@contextlib.contextmanager
def open_records(
    stream: BinaryIO,
    name: str,
    fmt: str | None,
    max_bytes: int,
    ts_range: TimeRange,
    report: ingest.IngestReport,
) -> Iterator[Iterator[ingest._Line]]:
    """The records of one input stream, read by the reader its format calls for."""
    base = name[:-3] if name.lower().endswith(".gz") else name
    if fmt is None and base.lower().endswith(".csv"):
        fmt = "csv"
    if fmt is None:
        head, stream = _head(stream)
        fmt = sniff_format(head)
    reader = _READERS.get(fmt)
    if reader is None:
        raise BadInput(f"format {fmt!r}: expected one of {', '.join(_READERS)}")
    records = reader(stream, max_bytes, ts_range, report)
    try:
        yield records
    finally:
        records.close()


def sniff_format(head: bytes) -> str:
    """The format the first bytes of a JSON input look like."""
    return "jsonl"


_READERS = {"jsonl": ingest.jsonl_lines, "csv": ingest.csv_lines}


def _head(stream: BinaryIO) -> tuple[bytes, BinaryIO]:
    """The first bytes of a stream, and a stream that still yields them."""
    peek = getattr(stream, "peek", None)
    if peek is not None:
        with contextlib.suppress(OSError, ValueError):
            return peek(SNIFF_BYTES)[:SNIFF_BYTES], stream
    head = stream.read(SNIFF_BYTES) or b""
    return head, _Prefixed(head, stream)


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read: they are served again before the rest."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._head, self._stream = head, stream

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        if not self._head:
            return self._stream.readline(size)
        end = self._head.find(b"\n") + 1
        if end and (size < 0 or end <= size):
            out, self._head = self._head[:end], self._head[end:]
            return out
        if 0 <= size <= len(self._head):
            out, self._head = self._head[:size], self._head[size:]
            return out
        out, self._head = self._head, b""
        return out + self._stream.readline(size - len(out) if size >= 0 else -1)

    def readinto(self, buffer: bytearray) -> int:
        if self._head:
            data, self._head = self._head[: len(buffer)], self._head[len(buffer) :]
        else:
            data = self._stream.read(len(buffer)) or b""
        buffer[: len(data)] = data
        return len(data)
