"""The failure taxonomy: codes that grow from the data, with their definitions, history and status.

A code is *active* (labels may use it), *merged* (its labels moved to another code, which it points
to) or *retired* (kept for history, no new labels). Labelers create codes inline when they label a
new failure mode; editing, merging and retiring are for leads only. Every change keeps a row in
``taxonomy_history`` and an audit entry, written in the same transaction.
"""

from __future__ import annotations

import re

import pandas as pd
from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.errors import BadInput, CodeExists, CodeNotFound
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import query_one, query_rows, write
from flywheel.vectors.embeddings import exchange

STATUSES = ("active", "merged", "retired")
CODE_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{2,39}$")
# A sentence ends at . ! or ? followed by the end or a capital letter, so "e.g. a fee" is one sentence.
SENTENCE_END = re.compile(r"[.!?]+(?=\s+[A-Z0-9\"'(]|\s*$)")
MAX_DEFINITION = 600


def check_code(code: str) -> str:
    """A code as stored: upper case letters, digits and underscores, 3..40 characters."""
    cleaned = (code or "").strip().upper().replace(" ", "_").replace("-", "_")
    if not CODE_PATTERN.match(cleaned):
        raise BadInput(f"code {code!r}: expected 3-40 letters, digits or underscores, starting with a letter")
    return cleaned


def check_definition(definition: str) -> str:
    """A definition as stored: two (at most three) sentences saying what the failure is and how to tell."""
    text = " ".join((definition or "").split())
    sentences = len(SENTENCE_END.findall(text))
    if not 2 <= sentences <= 3 or len(text) > MAX_DEFINITION:
        raise BadInput(
            f"definition {text[:60]!r}: expected two sentences (at most three, {MAX_DEFINITION} characters)"
            f" — what the failure is, and how to recognise it; got {sentences} sentence(s)"
        )
    return text


def _check_name(name: str) -> str:
    text = " ".join((name or "").split())
    if not 3 <= len(text) <= 80:
        raise BadInput(f"name {name!r}: expected 3..80 characters")
    return text


def add_entry(db: Database, actor: str, code: str, name: str, definition: str) -> str:
    """Insert an active entry; call inside the write transaction of the change that needs it."""
    code, name, definition = check_code(code), _check_name(name), check_definition(definition)
    if db.execute("SELECT 1 FROM taxonomy WHERE code = ?", [code]).fetchone():
        raise CodeExists(f"code {code!r} already exists; pick it as a known failure mode or choose another")
    stamp = now()
    db.table("taxonomy").insert(
        {
            "code": code,
            "name": name,
            "definition": definition,
            "status": "active",
            "created_by": actor,
            "created_at": stamp,
            "updated_at": stamp,
        }
    )
    _history(db, code, "created", name, definition, actor)
    audit(db, actor, "create_code", "taxonomy", code, name=name)
    return code


def create_entry(db: Database, user: User, code: str, name: str, definition: str) -> str:
    """Add a taxonomy entry from the taxonomy page (leads only); labelers add theirs while labeling."""
    require_role(user, "lead")
    with write(db):
        return add_entry(db, user.name, code, name, definition)


def entry(db: Database, code: str) -> dict:
    """One taxonomy entry."""
    row = query_one(db, "SELECT * FROM taxonomy WHERE code = ?", [check_code(code)])
    if row is None:
        raise CodeNotFound(f"no taxonomy code {code!r}")
    return row


def resolve_code(db: Database, code: str) -> str:
    """The active code a label should carry: a merged code resolves to where it was merged."""
    seen = []
    row = entry(db, code)
    while row["status"] == "merged" and row["code"] not in seen:
        seen.append(row["code"])
        row = entry(db, row["merged_into"])
    if row["status"] != "active":
        raise BadInput(f"code {code!r} is {row['status']}; pick an active code")
    return row["code"]


def taxonomy_entries(db: Database, status: str | None = None) -> list[dict]:
    """Entries with how many live labels carry each, active first, then by code."""
    if status is not None and status not in STATUSES:
        raise BadInput(f"status {status!r}: expected one of {', '.join(STATUSES)}")
    where = "WHERE t.status = ?" if status else ""
    sql = f"""
        SELECT t.*, (SELECT count(*) FROM labels l
                     WHERE l.code = t.code AND l.undone_at IS NULL) AS labels
        FROM taxonomy t {where}
        ORDER BY t.status != 'active', t.code"""
    return query_rows(db, sql, [status] if status else [])


def code_names(db: Database) -> dict[str, str]:
    """Every code, whatever its status, and its name: how a table names the codes it shows."""
    return dict(db.execute("SELECT code, name FROM taxonomy").fetchall())


def active_codes(db: Database) -> dict[str, str]:
    """Active codes and their names, for a searchable select."""
    return dict(
        db.execute("SELECT code, name FROM taxonomy WHERE status = 'active' ORDER BY code").fetchall()
    )


def active_entries(db: Database) -> dict[str, dict]:
    """Active codes with their name and definition: the guideline shown beside the item."""
    rows = db.execute("SELECT code, name, definition FROM taxonomy WHERE status = 'active' ORDER BY code")
    return {code: {"name": name, "definition": definition} for code, name, definition in rows}


def edit_entry(db: Database, user: User, code: str, definition: str, name: str | None = None) -> None:
    """Change a definition (and optionally the name); the earlier version stays in the history."""
    require_role(user, "lead")
    definition = check_definition(definition)
    with write(db):
        row = entry(db, code)
        name = _check_name(name) if name else row["name"]
        db.table("taxonomy").update(code, {"definition": definition, "name": name, "updated_at": now()})
        _history(db, code, "edited", name, definition, user.name)
        audit(db, user.name, "edit_code", "taxonomy", code, before=row["definition"], after=definition)


def merge_codes(db: Database, user: User, source: str, target: str) -> int:
    """Merge ``source`` into ``target``: its labels follow, it points to target. Returns labels moved."""
    require_role(user, "lead")
    with write(db):
        source_row, target_row = entry(db, source), entry(db, target)
        if source_row["code"] == target_row["code"]:
            raise BadInput(f"cannot merge {source!r} into itself")
        for row in (source_row, target_row):
            if row["status"] != "active":
                raise BadInput(f"code {row['code']!r} is {row['status']}; only active codes merge")
        moved = db.execute(
            "UPDATE labels SET original_code = coalesce(original_code, code), code = ? WHERE code = ?",
            [target_row["code"], source_row["code"]],
        ).rowcount
        db.table("taxonomy").update(
            source_row["code"], {"status": "merged", "merged_into": target_row["code"], "updated_at": now()}
        )
        note = f"merged into {target_row['code']}"
        _history(db, source_row["code"], note, source_row["name"], source_row["definition"], user.name)
        audit(
            db, user.name, "merge_code", "taxonomy", source_row["code"], into=target_row["code"], labels=moved
        )
    return moved


def retire_code(db: Database, user: User, code: str) -> None:
    """Retire an active code: its labels stay, new labels may not use it."""
    require_role(user, "lead")
    with write(db):
        row = entry(db, code)
        if row["status"] != "active":
            raise BadInput(f"code {code!r} is {row['status']}; only active codes can be retired")
        db.table("taxonomy").update(code, {"status": "retired", "updated_at": now()})
        _history(db, code, "retired", row["name"], row["definition"], user.name)
        audit(db, user.name, "retire_code", "taxonomy", code)


def entry_history(db: Database, code: str) -> list[dict]:
    """Every version of an entry, oldest first."""
    entry(db, code)
    return query_rows(db, "SELECT * FROM taxonomy_history WHERE code = ? ORDER BY id", [code])


def code_counts(db: Database) -> pd.DataFrame:
    """Live labels per production week of the trace and code (failure codes only)."""
    sql = """
        SELECT t.week, l.code, count(*) AS labels
        FROM labels l JOIN traces t ON t.trace_id = l.trace_id
        WHERE l.undone_at IS NULL AND l.code IS NOT NULL
        GROUP BY t.week, l.code ORDER BY t.week, l.code"""
    return pd.DataFrame(db.execute(sql).fetchall(), columns=["week", "code", "labels"])


def example_rows(db: Database, user: User, code: str, limit: int = 5) -> list[dict]:
    """The newest labels of a code with the scrubbed exchange (``turns``) of their approved traces."""
    require_role(user, "labeler", "reviewer", "lead")
    entry(db, code)
    sql = """
        SELECT l.trace_id, l.labeler, l.via, l.adversarial, l.expected, l.pass_criterion,
               s.input AS scrubbed_input, s.output AS scrubbed_output, s.messages
        FROM labels l JOIN scrubs s ON s.trace_id = l.trace_id AND s.is_current = 1 AND s.status = 'approved'
        WHERE l.code = ? AND l.undone_at IS NULL
        ORDER BY l.id DESC LIMIT ?"""
    rows = query_rows(db, sql, [code, limit])
    for row in rows:  # the failure lives in the reply: every example carries its whole exchange
        row["turns"] = exchange({"input": row["scrubbed_input"], "output": row["scrubbed_output"],
                                 "messages": row.pop("messages")})  # fmt: skip
    return rows


def _history(db: Database, code: str, change: str, name: str, definition: str, actor: str) -> None:
    db.table("taxonomy_history").insert(
        {"code": code, "change": change, "name": name, "definition": definition, "actor": actor, "at": now()}
    )
