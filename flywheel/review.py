"""The anonymization station's store side: scrub traces, queue them for review, let a reviewer fix
and sign off, and keep every fix as residue per PII class and detector.

A trace's scrub holds the scrubbed input, output and messages, and every redaction as a span into
the raw field (``input``, ``output`` or ``messages[i]``). Reviewer fixes change the spans; the scrubbed
text is always rendered again from the raw text and the active spans, so the two never disagree.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import pandas as pd
from sqlite_utils import Database

from flywheel import label_queue
from flywheel.auth import RAW_TEXT_ROLES, User, require_role
from flywheel.errors import BadInput, FlywheelError, NotFound
from flywheel.scrub import LABELS, SCRUBBER_VERSION, Scrubber, ScrubResult, Span, render
from flywheel.store import audit, now, query_one, query_rows, write

CHUNK = 200
STATUSES = ("pending", "approved", "rejected")
DECISIONS = {"approved": "approve_scrub", "rejected": "reject_scrub"}


class AlreadyReviewed(FlywheelError):
    """Another reviewer decided on this scrub first."""


@dataclass(frozen=True)
class FieldView:
    """One scrubbed field for the reviewer: raw text, scrubbed text and active redactions."""

    name: str
    raw: str
    scrubbed: str
    redactions: tuple[dict, ...]


@dataclass(frozen=True)
class ScrubView:
    scrub_id: int
    trace_id: str
    status: str
    scrubber_version: str
    reviewed_by: str | None
    fields: tuple[FieldView, ...]


# Scrubbing ------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _scrubber(names: tuple[str, ...]) -> Scrubber:
    return Scrubber(known_names=names)


def scrub_traces(
    db: Database,
    trace_ids: Iterable[str],
    actor: str,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Scrub traces not scrubbed yet and queue them for review; return how many were scrubbed."""
    ids = _unscrubbed(db, list(dict.fromkeys(trace_ids)))
    scrubber = _scrubber(tuple(known_names(db)))
    for done in range(0, len(ids), CHUNK):
        _scrub_chunk(db, scrubber, ids[done : done + CHUNK])
        if progress:
            progress(min(done + CHUNK, len(ids)), len(ids))
    if ids:
        with write(db):
            audit(db, actor, "scrub", "traces", len(ids), scrubber_version=SCRUBBER_VERSION)
    return len(ids)


def _unscrubbed(db: Database, ids: list[str]) -> list[str]:
    done: set[str] = set()
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        done.update(
            r[0] for r in db.execute(f"SELECT trace_id FROM scrubs WHERE trace_id IN ({marks})", part)
        )
    return [i for i in ids if i not in done]


def _scrub_chunk(db: Database, scrubber: Scrubber, ids: list[str]) -> None:
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT trace_id, input, output, messages FROM traces WHERE trace_id IN ({marks})", ids
    )
    traces = [(tid, msgs, _fields(inp, out, msgs)) for tid, inp, out, msgs in rows]
    texts = [text for _, _, fields in traces for _, text in fields]
    results = iter(scrubber.scrub_many(texts))
    with write(db):
        for trace_id, raw_messages, fields in traces:
            scrubbed = {name: next(results) for name, _ in fields}
            _store_scrub(db, trace_id, raw_messages, scrubbed)


def _fields(input_text: str, output: str | None, messages: str | None) -> list[tuple[str, str]]:
    fields = [("input", input_text)]
    if output is not None:
        fields.append(("output", output))
    for i, message in enumerate(json.loads(messages) if messages else []):
        fields.append((f"messages[{i}]", message["content"]))
    return fields


def _scrubbed_columns(raw_messages: str | None, texts: dict[str, str]) -> dict:
    """The scrubs row's text columns; messages keep their roles."""
    roles = [m["role"] for m in json.loads(raw_messages)] if raw_messages else []
    messages = [{"role": role, "content": texts[f"messages[{i}]"]} for i, role in enumerate(roles)]
    return {
        "input": texts["input"],
        "output": texts.get("output"),
        "messages": json.dumps(messages, ensure_ascii=False) if messages else None,
    }


def _store_scrub(
    db: Database, trace_id: str, raw_messages: str | None, scrubbed: dict[str, ScrubResult]
) -> None:
    texts = {name: result.text for name, result in scrubbed.items()}
    row = {
        "trace_id": trace_id,
        "scrubber_version": SCRUBBER_VERSION,
        "status": "pending",
        "created_at": now(),
    }
    scrub_id = db["scrubs"].insert({**row, **_scrubbed_columns(raw_messages, texts)}).last_pk
    db["redactions"].insert_all(
        {
            "scrub_id": scrub_id,
            "field": name,
            "start": s.start,
            "end": s.end,
            "label": s.label,
            "detector": s.detector,
        }
        for name, result in scrubbed.items()
        for s in result.spans
    )


# Reviewing --------------------------------------------------------------------------------------


def review_queue(db: Database, user: User, limit: int = 100) -> list[dict]:
    """Pending scrubs, oldest first, with how many redactions each has."""
    require_role(user, *RAW_TEXT_ROLES)
    sql = """
        SELECT s.id AS scrub_id, s.trace_id, s.created_at,
               (SELECT count(*) FROM redactions r
                WHERE r.scrub_id = s.id AND r.removed_by IS NULL) AS redactions
        FROM scrubs s WHERE s.status = 'pending' ORDER BY s.id LIMIT ?"""
    return query_rows(db, sql, [limit])


def scrub_counts(db: Database) -> dict[str, int]:
    """How many scrubs are pending, approved and rejected."""
    counts = dict(db.execute("SELECT status, count(*) FROM scrubs GROUP BY status").fetchall())
    return {status: counts.get(status, 0) for status in STATUSES}


def scrub_view(db: Database, user: User, scrub_id: int) -> ScrubView:
    """Raw and scrubbed text of every field with its redactions; reviewers and leads only."""
    require_role(user, *RAW_TEXT_ROLES)
    scrub = _scrub(db, scrub_id)
    trace = db["traces"].get(scrub["trace_id"])
    spans = _active_spans(db, scrub_id)
    fields = tuple(
        FieldView(name, raw, render(raw, [_span(r) for r in spans.get(name, [])]), tuple(spans.get(name, [])))
        for name, raw in _fields(trace["input"], trace["output"], trace["messages"])
    )
    return ScrubView(
        scrub_id, scrub["trace_id"], scrub["status"], scrub["scrubber_version"], scrub["reviewed_by"], fields
    )


def add_redaction(
    db: Database, user: User, scrub_id: int, field: str, start: int, end: int, label: str
) -> int:
    """Redact a span the scrubber missed; overlapping redactions merge into it. Returns the new id."""
    require_role(user, *RAW_TEXT_ROLES)
    with write(db):
        new_id = _add_span(db, user, scrub_id, field, start, end, label)
        _rerender(db, scrub_id)
    return new_id


def _add_span(db: Database, user: User, scrub_id: int, field: str, start: int, end: int, label: str) -> int:
    if label not in LABELS:
        raise BadInput(f"label {label!r}: expected one of {', '.join(LABELS)}")
    raw = _raw_field(db, _pending(db, scrub_id), field)
    if not 0 <= start < end <= len(raw) or not raw[start:end].strip():
        raise BadInput(f"span {start}..{end} is not a non-blank part of {field} (length {len(raw)})")
    for other in _active_spans(db, scrub_id).get(field, []):
        if other["start"] < end and start < other["end"]:
            start, end = min(start, other["start"]), max(end, other["end"])
            db["redactions"].update(other["id"], {"removed_by": user.name})
    new_id = (
        db["redactions"]
        .insert(
            {
                "scrub_id": scrub_id,
                "field": field,
                "start": start,
                "end": end,
                "label": label,
                "detector": "reviewer",
            }
        )
        .last_pk
    )
    _record_fix(db, user, scrub_id, "missed", label, "reviewer")
    audit(db, user.name, "add_redaction", "scrub", scrub_id, field=field, start=start, end=end, label=label)
    return new_id


def add_redaction_text(db: Database, user: User, scrub_id: int, text: str, label: str) -> int:
    """Redact every uncovered occurrence of ``text`` in any field; return how many were added."""
    require_role(user, *RAW_TEXT_ROLES)
    needle = text.strip()
    if not needle:
        raise BadInput("the text to redact is empty")
    view = scrub_view(db, user, scrub_id)
    hits = [
        (field.name, start)
        for field in view.fields
        for start in _occurrences(field.raw, needle)
        if not _covered(field.redactions, start, start + len(needle))
    ]
    if not hits and not any(needle in field.raw for field in view.fields):
        raise BadInput(f"{needle[:40]!r} does not occur in this trace")
    with write(db):
        for name, start in hits:
            _add_span(db, user, scrub_id, name, start, start + len(needle), label)
        _rerender(db, scrub_id)
    return len(hits)


def remove_redaction(db: Database, user: User, redaction_id: int) -> None:
    """Drop a false redaction; the fix is kept as residue of its detector."""
    require_role(user, *RAW_TEXT_ROLES)
    with write(db):
        row = query_one(db, "SELECT * FROM redactions WHERE id = ? AND removed_by IS NULL", [redaction_id])
        if row is None:
            raise NotFound(f"no active redaction with id {redaction_id}")
        _pending(db, row["scrub_id"])
        db["redactions"].update(redaction_id, {"removed_by": user.name})
        _record_fix(db, user, row["scrub_id"], "false", row["label"], row["detector"])
        _rerender(db, row["scrub_id"])
        audit(db, user.name, "remove_redaction", "scrub", row["scrub_id"], redaction_id=redaction_id)


def approve_scrub(db: Database, user: User, scrub_id: int, note: str | None = None) -> None:
    """Sign the scrub off: the trace may now reach labelers."""
    _decide(db, user, scrub_id, "approved", note)


def reject_scrub(db: Database, user: User, scrub_id: int, note: str | None = None) -> None:
    """Reject the scrub: the trace never reaches labelers."""
    _decide(db, user, scrub_id, "rejected", note)


def _decide(db: Database, user: User, scrub_id: int, status: str, note: str | None) -> None:
    require_role(user, *RAW_TEXT_ROLES)
    with write(db):
        _pending(db, scrub_id)
        db["scrubs"].update(
            scrub_id, {"status": status, "reviewed_by": user.name, "reviewed_at": now(), "note": note or None}
        )
        audit(db, user.name, DECISIONS[status], "scrub", scrub_id, note=note)
        label_queue.enqueue_scrub(db, scrub_id)  # a no-op unless approved


LABEL_COLOURS = {
    "PERSON": "#ffd8a8",
    "ORG": "#d0bfff",
    "LOCATION": "#b2f2bb",
    "EMAIL": "#a5d8ff",
    "PHONE": "#ffc9c9",
    "CREDIT_CARD": "#ffa8a8",
    "ID": "#fcc2d7",
    "IP": "#c5f6fa",
    "URL": "#99e9f2",
    "CUSTOMER": "#ffec99",
}


def highlight_html(raw: str, redactions: Iterable[dict], scrubbed: bool = False) -> str:
    """HTML of a field with each redaction marked by class: the raw words, or their placeholders.

    Trace text is untrusted: every piece of it is escaped before it meets markup.
    """
    parts, at = [], 0
    for r in sorted(redactions, key=lambda r: r["start"]):
        parts.append(html.escape(raw[at : r["start"]]))
        inner = f"[{r['label']}]" if scrubbed else raw[r["start"] : r["end"]]
        title = f"{r['label']} · {r['detector']} · #{r['id']}"
        colour = LABEL_COLOURS.get(r["label"], "#e9ecef")
        parts.append(
            f'<mark class="pii pii-{r["label"].lower()}" title="{html.escape(title)}" '
            f'style="background:{colour};padding:0 2px;border-radius:3px">{html.escape(inner)}</mark>'
        )
        at = r["end"]
    parts.append(html.escape(raw[at:]))
    return '<div style="white-space:pre-wrap;font-family:inherit">' + "".join(parts) + "</div>"


# Residue and the lookup list ---------------------------------------------------------------------


def residue(db: Database) -> pd.DataFrame:
    """Reviewer fixes per ISO week, kind (missed / false), PII class and detector."""
    sql = """
        SELECT strftime('%Y-W%W', at) AS week, kind, label, detector, count(*) AS fixes
        FROM scrub_fixes GROUP BY week, kind, label, detector ORDER BY week, kind, label"""
    return pd.DataFrame(db.execute(sql).fetchall(), columns=["week", "kind", "label", "detector", "fixes"])


def known_names(db: Database) -> list[str]:
    """The lookup layer's customer and organisation names."""
    return [r[0] for r in db.execute("SELECT name FROM known_names ORDER BY name COLLATE NOCASE")]


def add_known_names(db: Database, user: User, names: Iterable[str]) -> int:
    """Add names to the lookup list (leads only); return how many were new."""
    require_role(user, "lead")
    cleaned = list(dict.fromkeys(" ".join(n.split()) for n in names if n.strip()))
    with write(db):
        before = db["known_names"].count
        db["known_names"].insert_all(
            ({"name": n, "added_by": user.name, "added_at": now()} for n in cleaned), ignore=True
        )
        added = db["known_names"].count - before
        audit(db, user.name, "add_known_names", "known_names", added, names=len(cleaned))
    _scrubber.cache_clear()
    return added


def remove_known_name(db: Database, user: User, name: str) -> None:
    """Remove a name from the lookup list (leads only)."""
    require_role(user, "lead")
    with write(db):
        if not db.execute("DELETE FROM known_names WHERE name = ? COLLATE NOCASE", [name]).rowcount:
            raise NotFound(f"{name!r} is not on the known-names list")
        audit(db, user.name, "remove_known_name", "known_names", name)
    _scrubber.cache_clear()


# Helpers ----------------------------------------------------------------------------------------


def _scrub(db: Database, scrub_id: int) -> dict:
    row = query_one(db, "SELECT * FROM scrubs WHERE id = ?", [scrub_id])
    if row is None:
        raise NotFound(f"no scrub with id {scrub_id}")
    return row


def _pending(db: Database, scrub_id: int) -> dict:
    row = _scrub(db, scrub_id)
    if row["status"] != "pending":
        raise AlreadyReviewed(f"scrub {scrub_id} was already {row['status']} by {row['reviewed_by']}")
    return row


def _active_spans(db: Database, scrub_id: int) -> dict[str, list[dict]]:
    rows = query_rows(
        db,
        'SELECT id, field, start, "end", label, detector FROM redactions'
        " WHERE scrub_id = ? AND removed_by IS NULL ORDER BY field, start",
        [scrub_id],
    )
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["field"], []).append(row)
    return grouped


def _span(row: dict) -> Span:
    return Span(row["start"], row["end"], row["label"], row["detector"])


def _raw_field(db: Database, scrub: dict, field: str) -> str:
    trace = db["traces"].get(scrub["trace_id"])
    fields = dict(_fields(trace["input"], trace["output"], trace["messages"]))
    if field not in fields:
        raise BadInput(f"field {field!r}: expected one of {', '.join(fields)}")
    return fields[field]


def _rerender(db: Database, scrub_id: int) -> None:
    scrub = _scrub(db, scrub_id)
    trace = db["traces"].get(scrub["trace_id"])
    spans = _active_spans(db, scrub_id)
    texts = {
        name: render(raw, [_span(r) for r in spans.get(name, [])])
        for name, raw in _fields(trace["input"], trace["output"], trace["messages"])
    }
    db["scrubs"].update(scrub_id, _scrubbed_columns(trace["messages"], texts))


def _record_fix(db: Database, user: User, scrub_id: int, kind: str, label: str, detector: str) -> None:
    db["scrub_fixes"].insert(
        {
            "scrub_id": scrub_id,
            "kind": kind,
            "label": label,
            "detector": detector,
            "actor": user.name,
            "at": now(),
        }
    )


def _occurrences(text: str, needle: str) -> list[int]:
    starts, at = [], text.find(needle)
    while at != -1:
        starts.append(at)
        at = text.find(needle, at + len(needle))
    return starts


def _covered(redactions: Iterable[dict], start: int, end: int) -> bool:
    return any(r["start"] <= start and end <= r["end"] for r in redactions)
