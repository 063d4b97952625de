"""Export an eval-set version for a regression runner: ours (JSONL, CSV) and the runners' own formats.

Every format carries the row id (``r-000123``) so results come back by id. Rows are streamed from a
cursor and written one at a time, so memory stays flat however large the version. Archived (retired)
rows are written only when asked for.

- ``jsonl``/``csv``: every field of the row. CSV is for spreadsheets: a text cell that starts with
  ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` so a spreadsheet shows it
  as text instead of running it as a formula (OWASP's rule for CSV injection); JSONL is written as is.
- ``inspect``: Inspect ``Sample`` JSONL (``id``, ``input`` as text or chat messages, ``target``,
  ``metadata``), read by ``inspect_ai.dataset.json_dataset`` as is. A row's code check is in
  ``metadata["check"]``, graded by ``flywheel.labeling.checks.inspect_scorer``.
- ``promptfoo``: test cases, one JSON object per line (``description``, ``vars``, ``assert``,
  ``metadata``), for ``tests: file://cases.jsonl``; the prompt reads ``{{input}}``. A row with a code
  check is asserted natively (``contains``, ``regex``, ``is-json`` ...), the others by ``llm-rubric``.
- ``openai-evals``: JSONL with ``input`` chat messages and ``ideal``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from sqlite_utils import Database

from flywheel.auth import User
from flywheel.errors import BadInput
from flywheel.evals.versions import iter_version_rows
from flywheel.formats import EXPORT_FORMATS
from flywheel.labeling.checks import describe_check, load_check, promptfoo_asserts
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import write

FORMATS = EXPORT_FORMATS
CSV_COLUMNS = (
    "row_id",
    "input",
    "messages",
    "expected",
    "criterion",
    "code",
    "adversarial",
    "adversarial_kind",
    "tags",
    "state",
    "source",
    "trace_id",
    "external_id",
    "coverage",
    "check",
    "eval_set",
)
SYSTEM_PROMPT = "You are the support assistant being evaluated."
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as written: text that it would read as a formula gets a leading
    single quote (customer text reaches eval rows and the audit log); other values are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def spreadsheet_row(row: Iterable[object]) -> list[object]:
    """Every cell of a CSV row through ``spreadsheet_cell``."""
    return [spreadsheet_cell(value) for value in row]


def export_version(
    db: Database,
    version: int,
    fmt: str,
    out: str | Path,
    include_archive: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write version ``version`` as ``fmt`` to the file ``out`` (atomically); return the rows written."""
    if fmt not in FORMATS:
        raise BadInput(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if not out.parent.is_dir():
        raise BadInput(f"folder {str(out.parent)!r} does not exist")
    rows = iter_version_rows(db, version, include_archive)
    scratch = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with scratch.open("w", encoding="utf-8", newline="") as stream:
            written = write_rows(rows, fmt, stream, version, progress)
        os.replace(scratch, out)
    finally:
        scratch.unlink(missing_ok=True)
    return written


def record_export(db: Database, user: User, version: int, fmt: str, out: str | Path, rows: int) -> int:
    """Record a written export (version, format, absolute path, time), so a data subject's rows can be
    followed to the files that hold them; return its id."""
    path = str(Path(out).resolve())
    with write(db):
        export_id = (
            db.table("exports")
            .insert(
                {
                    "version": version,
                    "format": fmt,
                    "path": path,
                    "rows": rows,
                    "actor": user.name,
                    "at": now(),
                }
            )
            .last_pk
        )
        assert export_id is not None  # every insert into a rowid table has one
        audit(db, user.name, "export", "eval_version", version, format=fmt, path=path, rows=rows)
    return export_id


def write_rows(
    rows: Iterable[dict],
    fmt: str,
    stream: TextIO,
    version: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write rows to an open text stream in ``fmt``; return how many."""
    if fmt == "csv":
        writer = csv.writer(stream)
        writer.writerow(CSV_COLUMNS)
        lines: Iterator = (_csv_line(row) for row in rows)
        write: Callable[[Any], object] = writer.writerow
    else:
        shape = {
            "jsonl": _plain,
            "inspect": _inspect,
            "promptfoo": _promptfoo,
            "openai-evals": _openai_evals,
        }[fmt]
        lines = (json.dumps(shape(row, version), ensure_ascii=False) + "\n" for row in rows)
        write = stream.write
    written = 0
    for line in lines:
        write(line)
        written += 1
        if progress and written % 500 == 0:
            progress(written)
    return written


def _messages(row: dict) -> list[dict]:
    """The conversation up to its last user turn: what the system under test must answer."""
    messages = json.loads(row["messages"]) if row["messages"] else []
    messages = [
        {"role": m["role"], "content": m["content"]} for m in messages if m["role"] in ("user", "assistant")
    ]
    while messages and messages[-1]["role"] != "user":
        messages.pop()
    return messages or [{"role": "user", "content": row["input"]}]


def _target(row: dict) -> str:
    return row["criterion"] or row["expected"] or ""


def _metadata(row: dict, version: int) -> dict:
    return {
        "row_id": row["id"],
        "version": version,
        "code": row["code"],
        "adversarial": bool(row["adversarial"]),
        "adversarial_kind": row["adversarial_kind"],
        "expected": row["expected"],
        "criterion": row["criterion"],
        "tags": json.loads(row["tags"] or "[]"),
        "state": row["state"],
        "coverage": bool(row["coverage"]),
        "check": load_check(row["pass_check"]),
    }


def _plain(row: dict, version: int) -> dict:
    return {
        "row_id": row["id"],
        "input": row["input"],
        "messages": json.loads(row["messages"]) if row["messages"] else None,
        "expected": row["expected"],
        "criterion": row["criterion"],
        "code": row["code"],
        "adversarial": bool(row["adversarial"]),
        "adversarial_kind": row["adversarial_kind"],
        "tags": json.loads(row["tags"] or "[]"),
        "state": row["state"],
        "source": row["source"],
        "trace_id": row["trace_id"],
        "external_id": row["external_id"],
        "version": version,
        "coverage": bool(row["coverage"]),
        "check": load_check(row["pass_check"]),
        "eval_set": row["eval_set"],
    }


def _csv_line(row: dict) -> list:
    plain = {**_plain(row, 0), "adversarial": int(row["adversarial"])}
    plain["messages"] = row["messages"] or ""
    plain["tags"] = ",".join(plain["tags"])
    plain["coverage"] = int(plain["coverage"])
    plain["check"] = describe_check(plain["check"])
    return spreadsheet_row("" if plain[c] is None else plain[c] for c in CSV_COLUMNS)


def _inspect(row: dict, version: int) -> dict:
    messages = _messages(row)
    return {
        "id": row["id"],
        "input": messages[0]["content"] if len(messages) == 1 else messages,
        "target": _target(row),
        "metadata": _metadata(row, version),
    }


def _promptfoo(row: dict, version: int) -> dict:
    label = row["code"] or "starter"
    label = "coverage" if row["coverage"] and not row["code"] else label
    criterion = _target(row) or "Answers the customer's question correctly."
    check = load_check(row["pass_check"])
    return {
        "description": f"{row['id']} {label}",
        "vars": {"input": row["input"], "row_id": row["id"]},
        "assert": promptfoo_asserts(check) if check else [{"type": "llm-rubric", "value": criterion}],
        "metadata": {k: v for k, v in _metadata(row, version).items() if v is not None and v != []},
    }


def _openai_evals(row: dict, version: int) -> dict:
    return {
        "input": [{"role": "system", "content": SYSTEM_PROMPT}, *_messages(row)],
        "ideal": row["expected"] or _target(row),
        "row_id": row["id"],
    }


def export_text(db: Database, version: int, fmt: str, include_archive: bool = False) -> str:
    """A version in ``fmt`` as one string, for a download button (files go through ``export_version``)."""
    if fmt not in FORMATS:
        raise BadInput(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    buffer = io.StringIO(newline="")
    write_rows(iter_version_rows(db, version, include_archive), fmt, buffer, version)
    return buffer.getvalue()
