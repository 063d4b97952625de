"""The anonymization station's store side: scrub traces, queue them for review, let a reviewer fix
and sign off, and keep every fix as residue per PII class and detector.

A trace's scrub holds the scrubbed input, output and messages, and every redaction as a span into
the raw field (``input``, ``output`` or ``messages[i]``). Reviewer fixes change the spans; the scrubbed
text is always rendered again from the raw text and the active spans, so the two never disagree.

Scrubs are versioned: one row per trace and scrubber version, of which one is *current*; a newer scrubber
can scrub a trace again (``rescrub=True``), superseding the old row. Reviewers *claim* the scrub they are
shown (like labelers claim items), and every action names the scrub it was shown for: an action on a
scrub someone else holds, or that was decided meanwhile, is refused. A decided scrub (approved or
rejected) can be reopened by a lead or by the reviewer who decided it: it returns to review, and an
approved one leaves the label queue.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import pandas as pd
from sqlite_utils import Database

from flywheel.auth import RAW_TEXT_ROLES, User, require_role
from flywheel.errors import (
    AlreadyReviewed,
    BadInput,
    NeedsConfirmation,
    NotFound,
    PermissionDenied,
    ScrubClaimed,
)
from flywheel.review import label_queue
from flywheel.scrub import LABELS, MARKED, SCRUBBER_VERSION, Scrubber, ScrubResult, Span, marked_name, render
from flywheel.scrub.normalise import normalise, to_original
from flywheel.store.audit import audit
from flywheel.store.clock import format_ts, now, now_utc
from flywheel.store.db import query_one, query_rows, write

CHUNK = 200
STATUSES = ("pending", "approved", "rejected")
DECISIONS = {"approved": "approve_scrub", "rejected": "reject_scrub"}
# Redactions a format or checksum verified: dropping one is rarely right, so it asks for confirmation.
VERIFIED_DETECTORS = frozenset({"email", "credit_card", "phone", "iban"})
VERIFIED_LABELS = frozenset({"EMAIL", "CREDIT_CARD", "PHONE"})
RESIDUE_KINDS = {
    "missed": "missed by the scrubber",
    "false": "redacted by mistake",
    "relabelled": "wrong class",
}


@dataclass(frozen=True)
class FieldView:
    """One scrubbed field for the reviewer: raw text, scrubbed text and active redactions."""

    name: str
    raw: str
    scrubbed: str
    redactions: tuple[dict, ...]
    role: str | None = None


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
def _scrubber(names: tuple[str, ...], never: tuple[str, ...] = ()) -> Scrubber:
    # Shared by every session of the process: Scrubber calls never change it, and spaCy calls take turns.
    return Scrubber(known_names=names, never_redact=never)


def scrub_traces(
    db: Database,
    trace_ids: Iterable[str],
    actor: str,
    progress: Callable[[int, int], None] | None = None,
    rescrub: bool = False,
) -> int:
    """Scrub traces that have no current scrub (with ``rescrub``, also those scrubbed by another scrubber
    version) and queue them for review; return how many were scrubbed.

    Each chunk is stored with its audit entry in one transaction, so a run killed midway leaves every
    stored scrub accounted for, and running it again scrubs the rest. A trace that cannot be scrubbed is
    set aside with the reason in that entry (it stays unscrubbed), and the others go on.
    """
    version = scrubber_version(db)
    ids = _to_scrub(db, list(dict.fromkeys(trace_ids)), rescrub, version)
    scrubber = machine_scrubber(db)
    stored = 0
    for done in range(0, len(ids), CHUNK):
        stored += _scrub_chunk(db, scrubber, ids[done : done + CHUNK], rescrub, actor, version)
        if progress:
            progress(min(done + CHUNK, len(ids)), len(ids))
    return stored


def _to_scrub(db: Database, ids: list[str], rescrub: bool, version: str = SCRUBBER_VERSION) -> list[str]:
    current: dict[str, str | None] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        sql = f"SELECT trace_id, scrubber_version FROM scrubs WHERE is_current = 1 AND trace_id IN ({marks})"
        current.update(db.execute(sql, part).fetchall())
    return [i for i in ids if i not in current or (rescrub and current[i] != version)]


def _scrub_chunk(
    db: Database,
    scrubber: Scrubber,
    ids: list[str],
    rescrub: bool,
    actor: str,
    version: str = SCRUBBER_VERSION,
) -> int:
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT trace_id, input, output, messages FROM traces WHERE trace_id IN ({marks})", ids
    ).fetchall()
    scrubbed, set_aside = _scrub_rows(scrubber, rows)
    stored = []
    with write(db):
        for trace_id, raw_messages, results in scrubbed:
            # Checked again under the write lock: a concurrent scrub of the same trace may have won.
            if _replace_current(db, trace_id, rescrub, version):
                stored.append(_store_scrub(db, trace_id, raw_messages, results, version))
        if stored or set_aside:
            detail = {"scrubber_version": version, "rescrub": rescrub, "scrub_ids": stored}
            audit(db, actor, "scrub", "traces", len(stored), **detail, set_aside=set_aside)
            audit_id = db.execute("SELECT last_insert_rowid()").fetchone()[0]
            db.conn.executemany(
                "UPDATE scrubs SET audit_id = ? WHERE id = ?", [(audit_id, i) for i in stored]
            )
    return len(stored)


def _scrub_rows(scrubber: Scrubber, rows: list[tuple]) -> tuple[list[tuple], dict[str, str]]:
    """Each trace's scrubbed fields, all in one scrubber call; when that fails, trace by trace, so one
    trace that cannot be scrubbed is set aside (with the kind of error: its message may quote the text)."""
    try:
        return _scrub_together(scrubber, rows), {}
    except Exception:
        scrubbed, set_aside = [], {}
        for row in rows:
            try:
                scrubbed += _scrub_together(scrubber, [row])
            except Exception as error:
                set_aside[row[0]] = f"cannot be scrubbed: {type(error).__name__}"
        return scrubbed, set_aside


def _scrub_together(scrubber: Scrubber, rows: list[tuple]) -> list[tuple]:
    traces = [(tid, msgs, _fields(inp, out, msgs)) for tid, inp, out, msgs in rows]
    results = iter(scrubber.scrub_many([text for _, _, fields in traces for _, text in fields]))
    return [(tid, msgs, {name: next(results) for name, _ in fields}) for tid, msgs, fields in traces]


def _replace_current(db: Database, trace_id: str, rescrub: bool, version: str = SCRUBBER_VERSION) -> bool:
    """Whether a new scrub of the trace should be stored; supersedes an older-version current scrub."""
    row = query_one(
        db,
        "SELECT id, status, scrubber_version FROM scrubs WHERE trace_id = ? AND is_current = 1",
        [trace_id],
    )
    if row is None:
        return True
    if not rescrub or row["scrubber_version"] == version:
        return False
    db.execute(
        "UPDATE scrubs SET is_current = 0, status = 'superseded', claimed_by = NULL, claim_expires = NULL"
        " WHERE id = ?",
        [row["id"]],
    )
    if row["status"] == "approved":
        _withdraw_from_labeling(db, trace_id)
    return True


def _fields(input_text: str, output: str | None, messages: str | None) -> list[tuple[str, str]]:
    fields = [("input", input_text)]
    if output is not None:
        fields.append(("output", output))
    for i, message in enumerate(json.loads(messages) if messages else []):
        fields.append((f"messages[{i}]", message["content"]))
    return fields


def _reading_order(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Fields as the conversation went: the messages in order, then the input, then the reply being judged
    (the output), so a reviewer reads the reply after what it answers."""
    rank = {"input": 1, "output": 2}
    return sorted(fields, key=lambda field: rank.get(field[0], 0))


def _roles(messages: str | None) -> dict[str, str]:
    roles = {f"messages[{i}]": m["role"] for i, m in enumerate(json.loads(messages) if messages else [])}
    return {"input": "user", "output": "assistant", **roles}


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
    db: Database,
    trace_id: str,
    raw_messages: str | None,
    scrubbed: dict[str, ScrubResult],
    version: str = SCRUBBER_VERSION,
) -> int:
    texts = {name: result.text for name, result in scrubbed.items()}
    row = {
        "trace_id": trace_id,
        "scrubber_version": version,
        "status": "pending",
        "created_at": now(),
        "is_current": 1,
    }
    scrub_id = db.table("scrubs").insert({**row, **_scrubbed_columns(raw_messages, texts)}).last_pk
    assert scrub_id is not None  # a rowid table always reports the new row's key
    db.table("redactions").insert_all(
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
    return scrub_id


# Masking what reviewers redacted, in text no reviewer read -----------------------------------------

# A redacted value this short is masked only as a whole word: "Li" must not blank "Limit".
WHOLE_WORD_BELOW = 4


def _redaction_text(trace: dict, field: str, start: int, end: int) -> str:
    """The raw text a stored redaction covers in ``trace`` (a row of ``traces``), for any field it names:
    ``input``, ``output``, ``messages[i]`` (offsets into message i's content) or ``messages`` (offsets
    into the stored messages column); an empty string when the field or span is not there."""
    if field == "messages":
        covered = (trace.get("messages") or "")[start:end]
        try:  # a span of the JSON column: the value as written, escapes undone
            return json.loads(f'"{covered}"')
        except ValueError:
            return covered
    return dict(_fields(trace["input"], trace.get("output"), trace.get("messages"))).get(field, "")[start:end]


def mask_redacted(
    db: Database, trace_id: str, texts: Sequence[str], spans: Sequence[Sequence[Span]] | None = None
) -> list[str]:
    """``texts`` with every value a redaction of this trace covers (in any field, from any scrub of it,
    machine or reviewer) replaced by its placeholder, whatever its case or spacing there; ``spans``
    (say, the scrubber's on each text) are replaced too.

    For text about the trace that no reviewer read (a shadow reply, a regression output, or an approved
    scrub that kept a second occurrence of a value the reviewer redacted once) before it leaves the
    machine. Returns only the masked texts, never the raw values."""
    values = _redacted_values(db, trace_id)
    spans = spans or [()] * len(texts)
    return [mask_values(text, values, extra) for text, extra in zip(texts, spans, strict=True)]


def _redacted_values(db: Database, trace_id: str) -> dict[str, str]:
    trace = query_one(db, "SELECT input, output, messages FROM traces WHERE trace_id = ?", [trace_id])
    if trace is None:
        return {}
    rows = db.execute(
        'SELECT r.field, r.start, r."end", r.label FROM redactions r JOIN scrubs s ON s.id = r.scrub_id'
        " WHERE s.trace_id = ? AND r.removed_by IS NULL ORDER BY r.id",
        [trace_id],
    )
    values: dict[str, str] = {}
    for field, start, end, label in rows:
        value = " ".join(normalise(_redaction_text(trace, field, start, end))[0].split())
        if len(value) >= 2 and any(c.isalnum() for c in value):
            values.setdefault(value, label)
    return values


def mask_values(text: str, values: dict[str, str], spans: Iterable[Span] = ()) -> str:
    """``text`` with each value (case and spacing aside, invisible characters ignored as the scrubber
    ignores them) and each of ``spans`` replaced by a placeholder; overlapping ones merge."""
    view, origin = normalise(text)
    found = list(spans)
    for value, label in values.items():
        for match in _value_pattern(value).finditer(view):
            found.append(Span(*to_original(origin, match.start(), match.end()), label, "redacted"))
    return render(text, _merged(found))


def _merged(spans: list[Span]) -> list[Span]:
    """Sorted spans with overlapping ones joined; the longer of two keeps its label."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        last = out[-1] if out else None
        if last is None or span.start >= last.end:
            out.append(span)
        elif span.end > last.end:
            longer = span if span.end - span.start > last.end - last.start else last
            out[-1] = Span(last.start, span.end, longer.label, longer.detector)
    return out


@lru_cache(maxsize=1024)
def _value_pattern(value: str) -> re.Pattern:
    words = value.split()
    pattern = r"\s*".join(re.escape(word) for word in words)
    if len(value) < WHOLE_WORD_BELOW:
        pattern = rf"(?<!\w){pattern}(?!\w)"
    return re.compile(pattern, re.IGNORECASE)


# Claims: which reviewer holds which scrub -------------------------------------------------------


def _stamp(moment: datetime | None = None) -> str:
    return format_ts(moment or now_utc())


def claim_scrub(
    db: Database,
    user: User,
    scrub_id: int | None = None,
    moment: datetime | None = None,
    *,
    minutes: int,
) -> int | None:
    """The scrub the reviewer holds (its claim renewed), else a claim on the next free pending scrub
    they did not skip; or a claim on ``scrub_id``. Returns the scrub id, or None when nothing is free."""
    require_role(user, *RAW_TEXT_ROLES)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise BadInput(f"claim minutes {minutes!r}: expected a positive integer")
    moment = moment or now_utc()
    stamp, expires = _stamp(moment), _stamp(moment + timedelta(minutes=minutes))
    with write(db):
        if scrub_id is not None:
            _check_free(db, user, scrub_id, stamp)
            db.execute(
                "UPDATE scrubs SET claimed_by = NULL, claim_expires = NULL WHERE claimed_by = ? AND id != ?",
                [user.name, scrub_id],
            )
            chosen: int | None = scrub_id
        else:
            chosen = _held_scrub(db, user, stamp) or _next_free_scrub(db, user, stamp)
            if chosen is None:
                return None
        held_before = db.execute("SELECT claimed_by FROM scrubs WHERE id = ?", [chosen]).fetchone()[0]
        db.execute(
            "UPDATE scrubs SET claimed_by = ?, claim_expires = ? WHERE id = ?", [user.name, expires, chosen]
        )
        if held_before != user.name:
            audit(db, user.name, "claim_scrub", "scrub", chosen, expires_at=expires)
    return chosen


def _held_scrub(db: Database, user: User, stamp: str) -> int | None:
    row = db.execute(
        "SELECT id FROM scrubs WHERE claimed_by = ? AND claim_expires > ? AND status = 'pending'"
        " ORDER BY id LIMIT 1",
        [user.name, stamp],
    ).fetchone()
    return row[0] if row else None


def _next_free_scrub(db: Database, user: User, stamp: str) -> int | None:
    row = db.execute(
        """SELECT s.id FROM scrubs s
           WHERE s.status = 'pending' AND (s.claim_expires IS NULL OR s.claim_expires <= ?)
             AND NOT EXISTS (SELECT 1 FROM review_skips k WHERE k.reviewer = ? AND k.scrub_id = s.id)
           ORDER BY s.id LIMIT 1""",
        [stamp, user.name],
    ).fetchone()
    return row[0] if row else None


def _check_free(db: Database, user: User, scrub_id: int, stamp: str) -> dict:
    """The pending scrub, when no other reviewer holds a live claim on it."""
    row = _pending(db, scrub_id)
    if row["claimed_by"] not in (None, user.name) and row["claim_expires"] > stamp:
        raise ScrubClaimed(
            f"{row['claimed_by']} is reviewing scrub {scrub_id} (trace {row['trace_id']!r}) until"
            f" {row['claim_expires'][11:16]} UTC; nothing was changed"
        )
    return row


def skip_scrub(db: Database, user: User, scrub_id: int) -> None:
    """Put a scrub aside for this reviewer (kept across sessions) and give it back to the queue."""
    require_role(user, *RAW_TEXT_ROLES)
    with write(db):
        _scrub(db, scrub_id)
        db.execute(
            "INSERT OR REPLACE INTO review_skips (reviewer, scrub_id, skipped_at) VALUES (?, ?, ?)",
            [user.name, scrub_id, now()],
        )
        db.execute(
            "UPDATE scrubs SET claimed_by = NULL, claim_expires = NULL WHERE id = ? AND claimed_by = ?",
            [scrub_id, user.name],
        )
        audit(db, user.name, "skip_scrub", "scrub", scrub_id)


def clear_skips(db: Database, user: User) -> int:
    """Bring back every scrub this reviewer skipped; return how many."""
    require_role(user, *RAW_TEXT_ROLES)
    with write(db):
        cleared = db.execute("DELETE FROM review_skips WHERE reviewer = ?", [user.name]).rowcount
        if cleared:
            audit(db, user.name, "clear_skips", "review_skips", user.name, scrubs=cleared)
    return cleared


# Reviewing --------------------------------------------------------------------------------------


def review_queue(db: Database, user: User, limit: int = 100, free_only: bool = False) -> list[dict]:
    """Pending scrubs, oldest first, with how many redactions each has and who holds it; with
    ``free_only``, none that another reviewer holds."""
    require_role(user, *RAW_TEXT_ROLES)
    free = " AND (s.claimed_by IS NULL OR s.claimed_by = :user OR s.claim_expires <= :now)"
    sql = f"""
        SELECT s.id AS scrub_id, s.trace_id, s.created_at, s.claimed_by, s.claim_expires,
               (SELECT count(*) FROM redactions r
                WHERE r.scrub_id = s.id AND r.removed_by IS NULL) AS redactions
        FROM scrubs s WHERE s.status = 'pending'{free if free_only else ""} ORDER BY s.id LIMIT :limit"""
    return query_rows(db, sql, {"user": user.name, "now": _stamp(), "limit": limit})


def scrub_counts(db: Database) -> dict[str, int]:
    """How many current scrubs are pending, approved and rejected."""
    counts = dict(db.execute("SELECT status, count(*) FROM scrubs GROUP BY status").fetchall())
    return {status: counts.get(status, 0) for status in STATUSES}


def review_progress(db: Database, user: User) -> dict[str, int]:
    """Where the reviewer stands: ``position`` of ``total`` current scrubs (decided ones plus the one in
    hand), how many are ``pending``, and how many of those this reviewer ``skipped``."""
    require_role(user, *RAW_TEXT_ROLES)
    counts = scrub_counts(db)
    skipped = db.execute(
        "SELECT count(*) FROM review_skips k JOIN scrubs s ON s.id = k.scrub_id"
        " WHERE k.reviewer = ? AND s.status = 'pending'",
        [user.name],
    ).fetchone()[0]
    decided = counts["approved"] + counts["rejected"]
    total = decided + counts["pending"]
    return {
        "position": min(decided + 1, total),
        "total": total,
        "pending": counts["pending"],
        "skipped": skipped,
    }


def scrub_view(db: Database, user: User, scrub_id: int) -> ScrubView:
    """Raw and scrubbed text of every field with its redactions; reviewers and leads only."""
    require_role(user, *RAW_TEXT_ROLES)
    scrub = _scrub(db, scrub_id)
    trace = db.table("traces").get(scrub["trace_id"])
    spans = _active_spans(db, scrub_id)
    roles = _roles(trace["messages"])
    fields = tuple(
        FieldView(
            name,
            raw,
            render(raw, [_span(r) for r in spans.get(name, [])]),
            tuple(spans.get(name, [])),
            roles.get(name),
        )
        for name, raw in _reading_order(_fields(trace["input"], trace["output"], trace["messages"]))
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
        _check_free(db, user, scrub_id, _stamp())
        new_id = _add_span(db, user, scrub_id, field, start, end, label)
        _rerender(db, scrub_id)
    return new_id


def _add_span(db: Database, user: User, scrub_id: int, field: str, start: int, end: int, label: str) -> int:
    _check_label(label)
    raw = _raw_field(db, _pending(db, scrub_id), field)
    if not 0 <= start < end <= len(raw) or not raw[start:end].strip():
        raise BadInput(f"span {start}..{end} is not a non-blank part of {field} (length {len(raw)})")
    for other in _active_spans(db, scrub_id).get(field, []):
        if other["start"] < end and start < other["end"]:
            start, end = min(start, other["start"]), max(end, other["end"])
            db.table("redactions").update(other["id"], {"removed_by": user.name})
    new_id = _insert_redaction(db, scrub_id, field, start, end, label)
    _record_fix(db, user, scrub_id, "missed", label, "reviewer")
    audit(db, user.name, "add_redaction", "scrub", scrub_id, field=field, start=start, end=end, label=label)
    return new_id


def _insert_redaction(db: Database, scrub_id: int, field: str, start: int, end: int, label: str) -> int:
    row = {"scrub_id": scrub_id, "field": field, "start": start, "end": end, "label": label}
    redaction_id = db.table("redactions").insert({**row, "detector": "reviewer"}).last_pk
    assert redaction_id is not None  # a rowid table always reports the new row's key
    return redaction_id


def _check_label(label: str) -> None:
    if label not in LABELS:
        raise BadInput(f"label {label!r}: expected one of {', '.join(LABELS)}")


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
        _check_free(db, user, scrub_id, _stamp())
        for name, start in hits:
            _add_span(db, user, scrub_id, name, start, start + len(needle), label)
        _rerender(db, scrub_id)
    return len(hits)


def remove_redaction(
    db: Database, user: User, scrub_id: int, redaction_id: int, confirmed: bool = False
) -> None:
    """Drop a false redaction of the scrub; the fix is kept as residue of its detector."""
    remove_redactions(db, user, scrub_id, [redaction_id], confirmed)


def remove_redactions(
    db: Database, user: User, scrub_id: int, redaction_ids: Iterable[int], confirmed: bool = False
) -> int:
    """Drop redactions of one scrub, all or none. A verified e-mail, card, phone or IBAN redaction is
    dropped only with ``confirmed``. Returns how many were dropped."""
    require_role(user, *RAW_TEXT_ROLES)
    ids = list(dict.fromkeys(redaction_ids))
    with write(db):
        _check_free(db, user, scrub_id, _stamp())
        rows = [_active_redaction(db, scrub_id, rid) for rid in ids]
        verified = [r for r in rows if r["detector"] in VERIFIED_DETECTORS or r["label"] in VERIFIED_LABELS]
        if verified and not confirmed:
            names = ", ".join(f"#{r['id']} {r['label']}" for r in verified)
            raise NeedsConfirmation(f"{names}: a verified redaction; confirm to remove it")
        for row in rows:
            db.table("redactions").update(row["id"], {"removed_by": user.name})
            _record_fix(db, user, scrub_id, "false", row["label"], row["detector"])
            audit(
                db,
                user.name,
                "remove_redaction",
                "scrub",
                scrub_id,
                redaction_id=row["id"],
                label=row["label"],
            )
        _rerender(db, scrub_id)
    return len(rows)


def change_redaction_label(db: Database, user: User, scrub_id: int, redaction_id: int, label: str) -> int:
    """Give a redaction of the scrub another class; returns the id of the redaction that replaces it."""
    require_role(user, *RAW_TEXT_ROLES)
    _check_label(label)
    with write(db):
        _check_free(db, user, scrub_id, _stamp())
        row = _active_redaction(db, scrub_id, redaction_id)
        if row["label"] == label:
            return redaction_id
        db.table("redactions").update(redaction_id, {"removed_by": user.name})
        new_id = _insert_redaction(db, scrub_id, row["field"], row["start"], row["end"], label)
        _record_fix(db, user, scrub_id, "relabelled", row["label"], row["detector"])
        audit(
            db,
            user.name,
            "relabel_redaction",
            "scrub",
            scrub_id,
            redaction_id=redaction_id,
            replaced_by=new_id,
            label=row["label"],
            new_label=label,
        )
        _rerender(db, scrub_id)
    return new_id


def _active_redaction(db: Database, scrub_id: int, redaction_id: int) -> dict:
    row = query_one(db, "SELECT * FROM redactions WHERE id = ? AND removed_by IS NULL", [redaction_id])
    if row is None:
        raise NotFound(f"no active redaction with id {redaction_id}")
    if row["scrub_id"] != scrub_id:
        raise BadInput(f"redaction {redaction_id} belongs to scrub {row['scrub_id']}, not scrub {scrub_id}")
    return row


def approve_scrub(db: Database, user: User, scrub_id: int, note: str | None = None) -> None:
    """Sign the scrub off: the trace may now reach labelers."""
    _decide(db, user, scrub_id, "approved", note)


def reject_scrub(db: Database, user: User, scrub_id: int, note: str | None = None) -> None:
    """Reject the scrub: the trace never reaches labelers."""
    _decide(db, user, scrub_id, "rejected", note)


def _decide(db: Database, user: User, scrub_id: int, status: str, note: str | None) -> None:
    require_role(user, *RAW_TEXT_ROLES)
    with write(db):
        _check_free(db, user, scrub_id, _stamp())
        db.table("scrubs").update(
            scrub_id,
            {
                "status": status,
                "reviewed_by": user.name,
                "reviewed_at": now(),
                "note": note or None,
                "claimed_by": None,
                "claim_expires": None,
            },
        )
        audit(db, user.name, DECISIONS[status], "scrub", scrub_id, note=note)
        label_queue.enqueue_scrub(db, scrub_id)  # a no-op unless approved


def reopen_scrub(db: Database, user: User, scrub_id: int, reason: str) -> None:
    """Take a decision back (a lead, or the reviewer who decided): the scrub returns to review, free for
    any reviewer to claim. An approved scrub's trace leaves the label queue, so its labels cannot be
    folded in until it is approved again; a rejected one gets a second look."""
    require_role(user, *RAW_TEXT_ROLES)
    reason = (reason or "").strip()
    if not reason:
        raise BadInput("say why the scrub is reopened")
    with write(db):
        row = _scrub(db, scrub_id)
        if row["status"] not in DECISIONS or not row["is_current"]:
            raise BadInput(
                f"scrub {scrub_id} is {row['status']}: only an approved or rejected scrub can be reopened"
            )
        if user.role != "lead" and row["reviewed_by"] != user.name:
            raise PermissionDenied(
                f"{user.name} did not {DECISIONS[row['status']].removesuffix('_scrub')} scrub {scrub_id}:"
                f" only {row['reviewed_by']} or a lead can reopen it"
            )
        db.table("scrubs").update(
            scrub_id,
            {
                "status": "pending",
                "reviewed_by": None,
                "reviewed_at": None,
                "note": reason,
                "claimed_by": None,
                "claim_expires": None,
            },
        )
        labels = _withdraw_from_labeling(db, row["trace_id"])
        audit(
            db,
            user.name,
            "reopen_scrub",
            "scrub",
            scrub_id,
            trace_id=row["trace_id"],
            was=row["status"],
            decided_by=row["reviewed_by"],
            live_labels=labels,
            reason=reason,
        )


def _withdraw_from_labeling(db: Database, trace_id: str) -> int:
    """Take a trace out of the label queue and end open claims on it; return its live labels, which stay
    recorded but reach no eval set while its scrub is not approved."""
    db.execute("UPDATE claims SET state = 'withdrawn' WHERE trace_id = ? AND state = 'open'", [trace_id])
    db.execute("DELETE FROM label_queue WHERE trace_id = ?", [trace_id])
    sql = "SELECT count(*) FROM labels WHERE trace_id = ? AND undone_at IS NULL"
    return db.execute(sql, [trace_id]).fetchone()[0]


def reopenable_scrubs(db: Database, user: User, limit: int = 200) -> list[dict]:
    """Approved and rejected scrubs this user may reopen (a lead: any; a reviewer: those they decided),
    newest decision first."""
    require_role(user, *RAW_TEXT_ROLES)
    mine = "" if user.role == "lead" else " AND reviewed_by = :user"
    sql = f"""SELECT id AS scrub_id, trace_id, status, reviewed_by, reviewed_at FROM scrubs
              WHERE status IN ('approved', 'rejected') AND is_current = 1{mine}
              ORDER BY reviewed_at DESC, id DESC LIMIT :limit"""
    return query_rows(db, sql, {"user": user.name, "limit": limit})


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
_MARKED_RE = re.compile("([" + "".join(re.escape(c) for c in MARKED) + "])")
_MARK_STYLE = (
    "unicode-bidi:isolate;background:#ffe3e3;color:#c92a2a;border:1px dashed #c92a2a;border-radius:3px;"
    "font-size:0.7em;padding:0 2px;margin:0 1px"
)


def literal_html(text: str) -> str:
    """Escaped text in which invisible characters and odd spaces stay in place but are boxed and named,
    so a reviewer sees them; nothing in the text can become markup."""
    parts = []
    for piece in _MARKED_RE.split(text):
        if piece in MARKED:
            title = html.escape(marked_name(piece))
            parts.append(
                f'<span class="fw-invisible" title="{title}" style="{_MARK_STYLE}">'
                f'<span class="fw-mark-label" aria-hidden="true">{MARKED[piece]}</span>{piece}</span>'
            )
        elif piece:
            parts.append(html.escape(piece))
    return "".join(parts)


def invisible_counts(text: str) -> dict[str, int]:
    """How many of each invisible or odd-space character the text holds, by short name."""
    counts: dict[str, int] = {}
    for char in _MARKED_RE.findall(text):
        counts[MARKED[char]] = counts.get(MARKED[char], 0) + 1
    return counts


def highlight_html(raw: str, redactions: Iterable[dict], scrubbed: bool = False) -> str:
    """HTML of a field with each redaction marked by class: the raw words, or their placeholders.

    Trace text is untrusted: every piece of it is escaped before it meets markup, and the result is
    meant for ``st.html`` (no Markdown pass), so it renders character for character.
    """
    parts, at = [], 0
    for r in sorted(redactions, key=lambda r: r["start"]):
        parts.append(literal_html(raw[at : r["start"]]))
        inner = html.escape(f"[{r['label']}]") if scrubbed else literal_html(raw[r["start"] : r["end"]])
        title = f"{r['label']} · {r['detector']} · #{r['id']}"
        colour = LABEL_COLOURS.get(r["label"], "#e9ecef")
        parts.append(
            f'<mark class="pii pii-{r["label"].lower()}" data-redaction="{int(r["id"])}" '
            f'title="{html.escape(title)}" '
            f'style="background:{colour};padding:0 2px;border-radius:3px">{inner}</mark>'
        )
        at = r["end"]
    parts.append(literal_html(raw[at:]))
    side = "scrubbed" if scrubbed else "raw"
    return (
        f'<div class="fw-text fw-{side}" style="white-space:pre-wrap;overflow-wrap:anywhere;'
        f'font-family:inherit">{"".join(parts)}</div>'
    )


# Residue and the lookup list ---------------------------------------------------------------------


def residue(db: Database) -> pd.DataFrame:
    """Reviewer fixes per ISO week ('2026-W47'), kind (missed / false / relabelled), class and detector."""
    sql = """
        SELECT iso_week(at) AS week, kind, label, detector, count(*) AS fixes
        FROM scrub_fixes GROUP BY week, kind, label, detector ORDER BY week, kind, label"""
    return pd.DataFrame(db.execute(sql).fetchall(), columns=["week", "kind", "label", "detector", "fixes"])


def _known_names(db: Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM known_names ORDER BY name COLLATE NOCASE")]


def machine_scrubber(db: Database) -> Scrubber:
    """The shared scrubber with this database's known names and never-redact list, for stations that
    scrub without showing."""
    return _scrubber(tuple(_known_names(db)), tuple(_never_redact(db)))


def known_names(db: Database, user: User) -> list[str]:
    """The lookup layer's customer and organisation names (customer vocabulary: reviewers and leads)."""
    require_role(user, *RAW_TEXT_ROLES)
    return _known_names(db)


def known_name_history(db: Database, user: User) -> list[dict]:
    """Names removed from the lookup list, newest first (customer vocabulary: reviewers and leads)."""
    require_role(user, *RAW_TEXT_ROLES)
    return query_rows(db, "SELECT id, name, change, actor, at FROM known_name_history ORDER BY id DESC")


def add_known_names(db: Database, user: User, names: Iterable[str]) -> int:
    """Add names to the lookup list (leads only); return how many were new."""
    require_role(user, "lead")
    cleaned = list(dict.fromkeys(" ".join(n.split()) for n in names if n.strip()))
    with write(db):
        before = db["known_names"].count
        db.table("known_names").insert_all(
            ({"name": n, "added_by": user.name, "added_at": now()} for n in cleaned), ignore=True
        )
        added = db["known_names"].count - before
        audit(db, user.name, "add_known_names", "known_names", added, names=len(cleaned))
    _scrubber.cache_clear()
    return added


def remove_known_name(db: Database, user: User, name: str) -> None:
    """Remove a name from the lookup list (leads only); the audit entry points at the history row, so
    the audit log never holds the name itself."""
    require_role(user, "lead")
    with write(db):
        row = query_one(db, "SELECT name FROM known_names WHERE name = ? COLLATE NOCASE", [name])
        if row is None:
            raise NotFound(f"{name!r} is not on the known-names list")
        db.execute("DELETE FROM known_names WHERE name = ? COLLATE NOCASE", [name])
        history_id = (
            db.table("known_name_history")
            .insert({"name": row["name"], "change": "removed", "actor": user.name, "at": now()})
            .last_pk
        )
        audit(db, user.name, "remove_known_name", "known_name_history", history_id)
    _scrubber.cache_clear()


# The never-redact list --------------------------------------------------------------------------


def _never_redact(db: Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT phrase FROM never_redact ORDER BY phrase COLLATE NOCASE")]


def scrubber_version(db: Database) -> str:
    """The version new scrubs are stored with: the scrubber's own, marked with the never-redact list
    in force, so a changed list is a new scrubber and pending scrubs can be scrubbed again with it."""
    phrases = sorted({" ".join(p.casefold().split()) for p in _never_redact(db)})
    if not phrases:
        return SCRUBBER_VERSION
    digest = hashlib.blake2b("\n".join(phrases).encode(), digest_size=4).hexdigest()
    return f"{SCRUBBER_VERSION}+keep.{digest}"


def never_redact(db: Database, user: User) -> list[dict]:
    """Phrases the scrubber leaves alone, with who added them (reviewers and leads)."""
    require_role(user, *RAW_TEXT_ROLES)
    return query_rows(
        db, "SELECT id, phrase, added_by, added_at FROM never_redact ORDER BY phrase COLLATE NOCASE"
    )


def add_never_redact(db: Database, user: User, phrases: Iterable[str]) -> int:
    """Add phrases the scrubber must leave alone (leads only); return how many were new. New scrubs use
    them at once; pending ones on request (``rescrub_pending``)."""
    require_role(user, "lead")
    cleaned = list(dict.fromkeys(" ".join(p.split()) for p in phrases if p and p.strip()))
    too_short = [p for p in cleaned if len(p) < 3]
    if too_short:
        raise BadInput(f"{too_short[0]!r} is too short to leave alone everywhere: give at least 3 characters")
    with write(db):
        before = db["never_redact"].count
        db.table("never_redact").insert_all(
            ({"phrase": p, "added_by": user.name, "added_at": now()} for p in cleaned), ignore=True
        )
        added = db["never_redact"].count - before
        audit(db, user.name, "add_never_redact", "never_redact", added, phrases=cleaned)
    _scrubber.cache_clear()
    return added


def remove_never_redact(db: Database, user: User, phrase: str) -> None:
    """Take a phrase off the never-redact list (leads only): it may be redacted again."""
    require_role(user, "lead")
    with write(db):
        row = query_one(db, "SELECT id, phrase FROM never_redact WHERE phrase = ? COLLATE NOCASE", [phrase])
        if row is None:
            raise NotFound(f"{phrase!r} is not on the never-redact list")
        db.execute("DELETE FROM never_redact WHERE id = ?", [row["id"]])
        audit(db, user.name, "remove_never_redact", "never_redact", row["id"], phrase=row["phrase"])
    _scrubber.cache_clear()


def rescrub_pending(db: Database, user: User, progress: Callable[[int, int], None] | None = None) -> int:
    """Scrub pending scrubs again with the current scrubber and lists (leads only): each new scrub
    supersedes the old one and is reviewed like any other. Returns how many were scrubbed again."""
    require_role(user, "lead")
    version = scrubber_version(db)
    ids = [
        r[0]
        for r in db.execute(
            "SELECT s.trace_id FROM scrubs s WHERE s.status = 'pending' AND s.is_current = 1"
            " AND s.scrubber_version <> ?"
            " AND NOT EXISTS (SELECT 1 FROM raw_purges p WHERE p.trace_id = s.trace_id) ORDER BY s.id",
            [version],
        )
    ]
    done = scrub_traces(db, ids, user.name, progress, rescrub=True)
    with write(db):
        audit(db, user.name, "rescrub_pending", "scrubs", done, scrubber_version=version)
    return done


# Helpers ----------------------------------------------------------------------------------------


def _scrub(db: Database, scrub_id: int) -> dict:
    row = query_one(db, "SELECT * FROM scrubs WHERE id = ?", [scrub_id])
    if row is None:
        raise NotFound(f"no scrub with id {scrub_id}")
    return row


def _pending(db: Database, scrub_id: int) -> dict:
    row = _scrub(db, scrub_id)
    if row["status"] == "superseded":
        raise AlreadyReviewed(f"scrub {scrub_id} was replaced by a newer scrub of trace {row['trace_id']!r}")
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
    trace = db.table("traces").get(scrub["trace_id"])
    fields = dict(_fields(trace["input"], trace["output"], trace["messages"]))
    if field not in fields:
        raise BadInput(f"field {field!r}: expected one of {', '.join(fields)}")
    return fields[field]


def _rerender(db: Database, scrub_id: int) -> None:
    scrub = _scrub(db, scrub_id)
    trace = db.table("traces").get(scrub["trace_id"])
    spans = _active_spans(db, scrub_id)
    texts = {
        name: render(raw, [_span(r) for r in spans.get(name, [])])
        for name, raw in _fields(trace["input"], trace["output"], trace["messages"])
    }
    db.table("scrubs").update(scrub_id, _scrubbed_columns(trace["messages"], texts))


def _record_fix(db: Database, user: User, scrub_id: int, kind: str, label: str, detector: str) -> None:
    db.table("scrub_fixes").insert(
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


def set_aside_unapproved(db: Database, trace_ids: list[str], reason: str, marker: str) -> None:
    """The raw text of these traces is gone: a pending scrub is set aside with ``reason`` (nobody can
    review it without the raw text) and every unapproved scrub's text becomes ``marker``; call inside
    the purging transaction."""
    db.conn.executemany(
        "UPDATE scrubs SET status = CASE status WHEN 'pending' THEN 'set_aside' ELSE status END,"
        " note = CASE status WHEN 'pending' THEN ? ELSE note END, claimed_by = NULL, claim_expires = NULL,"
        " input = ?, output = NULL, messages = NULL WHERE trace_id = ? AND status <> 'approved'",
        [(f"set aside: {reason}", marker, trace_id) for trace_id in trace_ids],
    )


def erase_scrubs(db: Database, trace_ids: list[str], marker: str) -> None:
    """Every scrub of these traces becomes an erased one reading ``marker``, and leaves the label queue;
    call inside the erasing transaction."""
    marks = ",".join("?" * len(trace_ids))
    db.execute(
        f"UPDATE scrubs SET status = 'erased', input = ?, output = NULL, messages = NULL, note = NULL,"
        f" claimed_by = NULL, claim_expires = NULL WHERE trace_id IN ({marks})",
        [marker, *trace_ids],
    )
    label_queue.withdraw_traces(db, trace_ids)
