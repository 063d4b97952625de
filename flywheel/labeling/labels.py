"""Labels: what a labeler decides about a claimed item, undo, siblings, and what the card shows.

The queue (``flywheel.review.label_queue``) holds every trace whose scrub a reviewer approved; a
labeler claims one item at a time (``flywheel.review.claims``). A label sent on a lapsed claim that
someone else has meanwhile claimed or labeled is refused (``StaleClaim``), never written over theirs.
Labelers only ever read a trace through its approved scrub. Agreement maths live in
``flywheel.labeling.agreement`` and stay importable from here; demo seeding lives in
``flywheel.demo.labels``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.errors import BadInput, NotFound, NothingToUndo, PermissionDenied, StaleClaim
from flywheel.labeling.agreement import (
    Agreement,
    agreement,
    agreement_of,
    cohen_kappa,
    fleiss_category_kappa,
    fleiss_kappa,
    overlap,
    set_overlap,
)
from flywheel.labeling.checks import dump_check, parse_check
from flywheel.labeling.taxonomy import add_entry, resolve_code
from flywheel.review import label_queue
from flywheel.review.claims import (
    LABEL_ROLES,
    Claim,
    check_minutes,
    claim_next,
    claim_row,
    end_claim,
    held_claim,
    lapse_claim,
    release_claim,
    skip_claim,
    stamp,
    take,
)
from flywheel.store.audit import audit
from flywheel.store.clock import now_utc, parse_ts
from flywheel.store.db import query_one, query_rows, write
from flywheel.traces.queries import SIGNAL_COLUMNS, approved_scrub

__all__ = [
    "ADVERSARIAL",
    "KINDS",
    "NOT_A_BUG",
    "Agreement",
    "Claim",
    "NothingToUndo",
    "StaleClaim",
    "Undone",
    "accept_labels",
    "add_siblings",
    "agreement",
    "agreement_of",
    "annotator_stats",
    "claim_next",
    "cohen_kappa",
    "edit_label",
    "fleiss_category_kappa",
    "fleiss_kappa",
    "label_card",
    "labels_to_review",
    "most_used_codes",
    "my_labels",
    "overlap",
    "progress",
    "record_label",
    "release_claim",
    "review_step",
    "set_overlap",
    "set_review_step",
    "skip_claim",
    "undo_last_label",
    "unreviewed_traces",
]

KINDS = ("known", "new", "not_a_bug")
FAILURE_KINDS = ("known", "new")
ADVERSARIAL = ("none", "jailbreak", "prompt_injection", "policy_override")
NOT_A_BUG = "not_a_bug"
# A trace drift sent to sampling is traffic the eval set does not cover yet: its card proposes coverage.
COVERAGE_REASON = re.compile(r"drift:cluster-[0-9]+")
MAX_SIBLINGS = 10
MAX_TEXT = 2000


@dataclass(frozen=True)
class Undone:
    """What ``undo_last_label`` took back, and the claim on its item again (None if someone holds it)."""

    label_id: int
    trace_id: str
    kind: str
    code: str | None
    siblings: int
    claim: Claim | None
    coverage: bool = False

    def describe(self) -> str:
        """One plain sentence for the labeler."""
        what = {"known": "known failure", "new": "new failure", NOT_A_BUG: "not a bug"}[self.kind]
        what += " (coverage)" if self.coverage else ""
        what += f" {self.code}" if self.code else ""
        extra = f" and its {self.siblings} sibling label(s)" if self.siblings else ""
        back = "" if self.claim else "; someone else holds the trace now"
        return f"Undid your label on trace {self.trace_id}: {what}{extra}{back}"


# Labels -----------------------------------------------------------------------------------------


def record_label(
    db: Database,
    user: User,
    claim: Claim | int | str,
    kind: str,
    *,
    code: str | None = None,
    name: str | None = None,
    definition: str | None = None,
    expected: str | None = None,
    pass_criterion: str | None = None,
    note: str | None = None,
    adversarial: str = "none",
    now: datetime | None = None,
    coverage: bool = False,
    pass_check: str | dict | None = None,
) -> int:
    """Label the claimed item (a claim, its id, or the trace id the user claimed); return the label id.

    Both failure kinds need ``expected`` and ``pass_criterion``: ``known`` an active ``code``, ``new`` the
    entry ``code``/``name``/``definition`` it creates first; ``not_a_bug`` takes an optional ``note``.
    ``coverage`` (not a bug only): the trace was handled well and should stay covered, so it becomes an
    eval row at the next fold-in; it needs ``expected`` and ``pass_criterion`` like a failure.
    ``pass_check``: a code check for the pass criterion (``flywheel.labeling.checks``), on a label that
    makes a row.
    """
    require_role(user, *LABEL_ROLES)
    values = _label_values(kind, expected, pass_criterion, note, adversarial, coverage, pass_check)
    at = stamp(now)
    with write(db):
        row = claim_row(db, user, claim)
        queued = _check_claim(db, user, row, at)
        if kind == "new":
            code = add_entry(db, user.name, code or "", name or "", definition or "")
        elif kind == "known":
            if not code:
                raise BadInput("a known failure needs a failure code: pick one, or use New failure")
            code = resolve_code(db, code)
        else:
            code = None
        values = {**values, "claim_id": row["id"]}
        label_id = _insert_label(db, user, row["trace_id"], queued["batch_id"], kind, code, values, at)
        end_claim(db, row["id"], "labeled")
        _count(db, row["trace_id"], +1)
        audit(
            db,
            user.name,
            "label",
            "trace",
            row["trace_id"],
            label_id=label_id,
            kind=kind,
            code=code,
            coverage=bool(coverage),
            pass_check=values["pass_check"],
        )
    return label_id


def _label_values(
    kind: str,
    expected: str | None,
    pass_criterion: str | None,
    note: str | None,
    adversarial: str,
    coverage: bool = False,
    pass_check: str | dict | None = None,
) -> dict:
    if kind not in KINDS:
        raise BadInput(f"label kind {kind!r}: expected one of {', '.join(KINDS)}")
    if adversarial not in ADVERSARIAL:
        raise BadInput(f"adversarial tag {adversarial!r}: expected one of {', '.join(ADVERSARIAL)}")
    if coverage and kind != NOT_A_BUG:
        raise BadInput(f"coverage is for a trace handled well (not a bug), not for a {kind} failure")
    values = {
        "expected": _text(expected, "expected behaviour"),
        "pass_criterion": _text(pass_criterion, "pass criterion"),
        "note": _text(note, "note"),
        "adversarial": adversarial,
        "coverage": 1 if coverage else None,
        "pass_check": dump_check(parse_check(pass_check)),
    }
    if kind in FAILURE_KINDS or coverage:  # it becomes an eval row: it must say what a correct answer does
        what_kind = {"known": "a known failure", "new": "a new failure"}.get(kind, "a coverage row")
        for key, what in (("expected", "expected behaviour"), ("pass_criterion", "pass criterion")):
            if not values[key]:
                raise BadInput(f"{what_kind} needs the {what}: what a correct answer must do")
    elif values["pass_check"]:
        raise BadInput("a code check belongs to an eval row: label a failure, or add the trace as coverage")
    return values


def _text(value: str | None, what: str) -> str | None:
    text = (value or "").strip()
    if len(text) > MAX_TEXT:
        raise BadInput(f"{what} is {len(text)} characters; expected at most {MAX_TEXT}")
    return text or None


def _check_claim(db: Database, user: User, claim: dict, at: str) -> dict:
    """The queue row of a claim that may still be labeled; raise StaleClaim when it may not."""
    trace_id = claim["trace_id"]
    if claim["state"] == "labeled":
        raise StaleClaim(f"Not saved: you already sent a label for trace {trace_id!r} from this card.")
    if _live_label(db, trace_id, user.name):
        raise StaleClaim(f"Not saved: you already labeled trace {trace_id!r}; undo that label to change it.")
    queued = query_one(db, "SELECT * FROM label_queue WHERE trace_id = ?", [trace_id])
    if queued is None:
        raise NotFound(f"Not saved: trace {trace_id!r} is no longer in the labeling queue.")
    away = f"(it went back to the queue at {claim['expires_at'][11:16]} UTC)"
    if not queued["is_open"]:
        raise StaleClaim(
            f"Not saved: someone else labeled this trace while it was away from you {away}."
            f" Trace {trace_id!r}; your label was not written over theirs."
        )
    taken = queued["claim_id"] not in (None, claim["id"])
    if taken and queued["claim_expires"] > at:
        raise StaleClaim(
            f"Not saved: someone else is labeling this trace now; it was handed on while it was away"
            f" from you {away}. Trace {trace_id!r}."
        )
    if taken:  # the other claim lapsed too: this label stands, and theirs is over
        lapse_claim(db, queued["claim_id"])
    return queued


def _live_label(db: Database, trace_id: str, labeler: str) -> bool:
    sql = "SELECT 1 FROM labels WHERE trace_id = ? AND labeler = ? AND undone_at IS NULL"
    return db.execute(sql, [trace_id, labeler]).fetchone() is not None


def _insert_label(
    db: Database,
    user: User,
    trace_id: str,
    batch_id: int | None,
    kind: str,
    code: str | None,
    values: dict,
    at: str,
    via: str = "card",
    sibling_of: int | None = None,
) -> int:
    row = {
        "trace_id": trace_id,
        "batch_id": batch_id,
        "labeler": user.name,
        "kind": kind,
        "code": code,
        **values,
        "via": via,
        "sibling_of": sibling_of,
        "created_at": at,
    }
    label_id = db.table("labels").insert(row).last_pk
    assert label_id is not None  # a rowid table always reports the new row's key
    return label_id


def _count(db: Database, trace_id: str, step: int) -> None:
    label_queue.count_label(db, trace_id, step)


def add_siblings(
    db: Database, user: User, label_id: int, trace_ids: Sequence[str], now: datetime | None = None
) -> list[int]:
    """Label similar traces with the code of the user's label ``label_id``; return the new label ids.

    Each sibling copies the expected behaviour and pass criterion; traces the user already labeled
    or another labeler holds right now are skipped.
    """
    require_role(user, *LABEL_ROLES)
    if len(trace_ids) > MAX_SIBLINGS:
        raise BadInput(f"{len(trace_ids)} siblings at once: expected at most {MAX_SIBLINGS}")
    at = stamp(now)
    with write(db):
        parent = query_one(db, "SELECT * FROM labels WHERE id = ? AND undone_at IS NULL", [label_id])
        if parent is None or parent["labeler"] != user.name or not parent["code"]:
            raise NotFound(f"no live failure label {label_id} of {user.name} to add siblings to")
        added = [
            _add_sibling(db, user, parent, trace_id, at)
            for trace_id in dict.fromkeys(trace_ids)
            if trace_id != parent["trace_id"] and _free_for(db, user, trace_id, at)
        ]
        audit(db, user.name, "add_siblings", "label", label_id, code=parent["code"], traces=len(added))
    return added


def _free_for(db: Database, user: User, trace_id: str, at: str) -> bool:
    queued = query_one(db, "SELECT claimed_by, claim_expires FROM label_queue WHERE trace_id = ?", [trace_id])
    if queued is None:
        raise NotFound(f"trace {trace_id!r} has no approved scrub; only approved traces can be labeled")
    held_by_other = queued["claimed_by"] not in (None, user.name) and queued["claim_expires"] > at
    return not held_by_other and not _live_label(db, trace_id, user.name)


def _add_sibling(db: Database, user: User, parent: dict, trace_id: str, at: str) -> int:
    batch_id = db.execute("SELECT batch_id FROM label_queue WHERE trace_id = ?", [trace_id]).fetchone()[0]
    values = {k: parent[k] for k in ("expected", "pass_criterion", "adversarial", "pass_check")}
    label_id = _insert_label(
        db, user, trace_id, batch_id, "known", parent["code"], values, at, "sibling", parent["id"]
    )
    _count(db, trace_id, +1)
    return label_id


def undo_last_label(db: Database, user: User, now: datetime | None = None, *, minutes: int) -> Undone:
    """Undo the user's last label (with the siblings added from it) and hand its item back to them.

    Asks nothing: returns what was undone, so the page can say so, with the claim on the item again
    (None if another labeler holds it meanwhile). A code the label created stays in the taxonomy.
    """
    require_role(user, *LABEL_ROLES)
    moment = now or now_utc()
    expires = stamp(moment + timedelta(minutes=check_minutes(minutes)))
    with write(db):
        last = query_one(
            db,
            # an edit writes a new row but keeps when the label was made: the last label stays last
            "SELECT id, trace_id, kind, code, coverage FROM labels WHERE labeler = ? AND via = 'card'"
            " AND undone_at IS NULL ORDER BY created_at DESC, id DESC LIMIT 1",
            [user.name],
        )
        if last is None:
            raise NothingToUndo(f"{user.name} has no label to undo")
        undone = _undo(db, user, last["id"], stamp(moment))
        audit(db, user.name, "undo_label", "trace", last["trace_id"], label_id=last["id"], undone=undone)
        claim = _reclaim(db, user, last["trace_id"], stamp(moment), expires)
    return Undone(
        last["id"], last["trace_id"], last["kind"], last["code"], undone - 1, claim, bool(last["coverage"])
    )


def _undo(db: Database, user: User, label_id: int, at: str) -> int:
    rows = db.execute(
        "SELECT id, trace_id FROM labels WHERE (id = ? OR sibling_of = ?) AND undone_at IS NULL",
        [label_id, label_id],
    ).fetchall()
    for row_id, trace_id in rows:
        db.table("labels").update(row_id, {"undone_at": at, "undone_by": user.name})
        _count(db, trace_id, -1)
    return len(rows)


def _reclaim(db: Database, user: User, trace_id: str, at: str, expires: str) -> Claim | None:
    held = held_claim(db, user, at)
    if held is not None:  # the item the user moved on to goes back, so the undone one comes first
        end_claim(db, held.claim_id, "released")
    queued = query_one(db, "SELECT * FROM label_queue WHERE trace_id = ?", [trace_id])
    if queued is None or (queued["claim_id"] is not None and queued["claim_expires"] > at):
        return None
    row = (trace_id, queued["batch_id"], queued["priority"], queued["claim_id"])
    return take(db, user, row, at, expires)


# What a labeler reads ---------------------------------------------------------------------------


def label_card(db: Database, user: User, claim: Claim) -> dict:
    """Everything the label card shows: scrubbed text, signals and sampling reasons; never raw text."""
    require_role(user, *LABEL_ROLES)
    scrub = approved_scrub(db, claim.trace_id)
    cursor = db.execute(f"SELECT {SIGNAL_COLUMNS} FROM traces WHERE trace_id = ?", [claim.trace_id])
    signals = dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True))
    reasons = db.execute(
        "SELECT reasons FROM batch_items WHERE trace_id = ? AND batch_id IS ?",
        [claim.trace_id, claim.batch_id],
    ).fetchone()
    # A drift reason once carried its cluster's name, words of scrubs no reviewer had signed off: only
    # the numbered form reaches a labeler, older ones are withheld.
    reasons = list(
        dict.fromkeys(
            "drift (name withheld)"
            if r.startswith("drift:") and not re.fullmatch(r"drift:cluster-[0-9]+", r)
            else r
            for r in (json.loads(reasons[0]) if reasons else [])
        )
    )
    return {
        "trace_id": claim.trace_id,
        "batch_id": claim.batch_id,
        "input": scrub["input"],
        "output": scrub["output"],
        "messages": scrub["messages"],
        "signals": signals,
        "reasons": reasons,
        "expires_at": claim.expires_at,
        "proposed": "coverage" if any(COVERAGE_REASON.fullmatch(r) for r in reasons) else None,
    }


def progress(db: Database, user: User, batch_id: int | None) -> dict:
    """Done and left in a batch (None: traces in no batch), with live labels per labeler."""
    require_role(user, *LABEL_ROLES)
    left, items = db.execute(
        "SELECT coalesce(sum(is_open), 0), count(*) FROM label_queue WHERE batch_id IS ?", [batch_id]
    ).fetchone()
    per_labeler = dict(
        db.execute(
            "SELECT labeler, count(*) FROM labels WHERE batch_id IS ? AND undone_at IS NULL"
            " GROUP BY labeler ORDER BY labeler",
            [batch_id],
        ).fetchall()
    )
    return {
        "batch_id": batch_id,
        "items": items,
        "left": left,
        "done": items - left,
        "mine": per_labeler.get(user.name, 0),
        "per_labeler": per_labeler,
    }


def my_labels(db: Database, user: User, limit: int = 20) -> list[dict]:
    """The user's latest live labels (ids, kinds and codes; no trace text)."""
    require_role(user, *LABEL_ROLES)
    sql = """
        SELECT id, trace_id, kind, code, coverage, expected, pass_criterion, note, adversarial, via,
               created_at, edited_by, edited_at, reviewed_by, reviewed_at
        FROM labels WHERE labeler = ? AND undone_at IS NULL ORDER BY created_at DESC, id DESC LIMIT ?"""
    return query_rows(db, sql, [user.name, limit])


def most_used_codes(db: Database, limit: int = 9) -> list[str]:
    """The active codes with the most live labels (ties by code): the card's number keys 1-9."""
    sql = """
        SELECT t.code FROM taxonomy t LEFT JOIN labels l ON l.code = t.code AND l.undone_at IS NULL
        WHERE t.status = 'active' GROUP BY t.code ORDER BY count(l.id) DESC, t.code LIMIT ?"""
    return [code for (code,) in db.execute(sql, [limit])]


# Edits and the lead's review ----------------------------------------------------------------------


def edit_label(
    db: Database,
    user: User,
    label_id: int,
    kind: str,
    *,
    code: str | None = None,
    expected: str | None = None,
    pass_criterion: str | None = None,
    note: str | None = None,
    adversarial: str = "none",
    now: datetime | None = None,
) -> int:
    """Correct a live label: a labeler their own, a lead anyone's (which also accepts it). Return the new id.

    The label is replaced by a new row under the same labeler and date (the old one is kept, undone), so
    a folded row's change reaches the next eval-set version like any other change of its labels. A code
    must already exist: an edit creates no taxonomy entry.
    """
    require_role(user, *LABEL_ROLES)
    kind = "known" if kind == "new" else kind
    values = _label_values(kind, expected, pass_criterion, note, adversarial)
    at = stamp(now)
    with write(db):
        old = query_one(db, "SELECT * FROM labels WHERE id = ? AND undone_at IS NULL", [label_id])
        if old is None:
            raise NotFound(f"no live label {label_id}: it was undone or edited meanwhile")
        correcting = old["labeler"] != user.name
        if correcting and user.role != "lead":
            raise PermissionDenied(
                f"label {label_id} is {old['labeler']}'s: only a lead corrects others' labels"
            )
        if kind == "known":
            if not code:
                raise BadInput("a known failure needs a failure code")
            code = resolve_code(db, code)
        else:
            code = None
        db.table("labels").update(label_id, {"undone_at": at, "undone_by": user.name})
        keep = (
            "trace_id",
            "batch_id",
            "labeler",
            "via",
            "sibling_of",
            "claim_id",
            "created_at",
            "original_code",
        )
        reviewed = {"reviewed_by": user.name, "reviewed_at": at} if user.role == "lead" else {}
        row = {k: old[k] for k in keep} | values | {"kind": kind, "code": code}
        new_id = db.table("labels").insert(row | {"edited_by": user.name, "edited_at": at} | reviewed).last_pk
        assert new_id is not None  # a rowid table always reports the new row's key
        db.table("labels").update(label_id, {"replaced_by": new_id})
        db.execute("UPDATE labels SET sibling_of = ? WHERE sibling_of = ?", [new_id, label_id])
        changed = {k: [old[k], row[k]] for k in ("kind", "code", *values) if old[k] != row[k]}
        action = "correct_label" if correcting else "edit_label"
        audit(
            db,
            user.name,
            action,
            "trace",
            old["trace_id"],
            label_id=new_id,
            replaces=label_id,
            changed=changed,
        )
    return new_id


def review_step(db: Database) -> bool:
    """Whether labels wait for a lead's review before they fold."""
    row = db.execute("SELECT value FROM label_settings WHERE name = 'review_step'").fetchone()
    return bool(row and row[0])


def set_review_step(db: Database, user: User, on: bool) -> None:
    """A lead turns the review step on or off (audited)."""
    require_role(user, "lead")
    with write(db):
        row = {"name": "review_step", "value": int(on), "set_by": user.name, "set_at": stamp(None)}
        db.table("label_settings").upsert(row, pk="name")
        audit(db, user.name, "set_review_step", "setting", "review_step", on=bool(on))


def unreviewed_traces(db: Database) -> set[str]:
    """Traces with a live label no lead has accepted yet: while the review step is on, they do not fold."""
    sql = "SELECT DISTINCT trace_id FROM labels WHERE undone_at IS NULL AND reviewed_at IS NULL"
    return {trace_id for (trace_id,) in db.execute(sql)}


def labels_to_review(db: Database, user: User, limit: int = 50) -> list[dict]:
    """Live labels waiting for a lead's review, oldest first, with the trace's approved scrub."""
    require_role(user, "lead")
    sql = """
        SELECT id, trace_id, batch_id, labeler, kind, code, expected, pass_criterion, note, adversarial,
               created_at, edited_by
        FROM labels WHERE undone_at IS NULL AND reviewed_at IS NULL ORDER BY created_at, id LIMIT ?"""
    rows = query_rows(db, sql, [limit])
    for row in rows:
        scrub = approved_scrub(db, row["trace_id"])
        row["scrub"] = {k: scrub[k] for k in ("input", "output", "messages")} if scrub else None
    return rows


def accept_labels(db: Database, user: User, label_ids: Sequence[int], now: datetime | None = None) -> int:
    """A lead accepts live labels as they are, so they may fold; return how many were accepted."""
    require_role(user, "lead")
    at = stamp(now)
    with write(db):
        accepted = []
        for label_id in dict.fromkeys(label_ids):
            found = query_one(
                db,
                "SELECT id, trace_id, reviewed_at FROM labels WHERE id = ? AND undone_at IS NULL",
                [label_id],
            )
            if found is None:
                raise NotFound(f"no live label {label_id}: it was undone or edited meanwhile")
            if found["reviewed_at"] is None:
                db.table("labels").update(label_id, {"reviewed_by": user.name, "reviewed_at": at})
                audit(db, user.name, "accept_label", "trace", found["trace_id"], label_id=label_id)
                accepted.append(label_id)
    return len(accepted)


ACTIVE_GAP = timedelta(minutes=10)


def annotator_stats(db: Database, user: User, days: int = 7, now: datetime | None = None) -> list[dict]:
    """Per labeler, for a lead: live labels in all and in the last ``days``, edits, corrections by a lead,
    undone labels, waiting reviews, and throughput (labels per hour of labeling, a pause over 10 minutes
    ending a session)."""
    require_role(user, "lead")
    if days < 1:
        raise BadInput(f"days {days}: expected at least 1")
    since = stamp((now or now_utc()) - timedelta(days=days))
    sql = """
        SELECT labeler, count(*) FILTER (WHERE undone_at IS NULL),
               count(*) FILTER (WHERE undone_at IS NULL AND created_at >= ?),
               count(*) FILTER (WHERE edited_by = labeler AND undone_at IS NULL),
               count(*) FILTER (WHERE edited_by IS NOT NULL AND edited_by != labeler AND undone_at IS NULL),
               count(*) FILTER (WHERE undone_at IS NOT NULL AND replaced_by IS NULL),
               count(*) FILTER (WHERE undone_at IS NULL AND reviewed_at IS NULL),
               max(created_at)
        FROM labels GROUP BY labeler ORDER BY labeler"""
    out = []
    for labeler, live, recent, edits, corrected, undone, waiting, last in db.execute(sql, [since]):
        hours = _active_hours(db, labeler, since)
        out.append(
            {
                "labeler": labeler,
                "labels": live,
                f"last_{days}_days": recent,
                "per_hour": round(recent / hours, 1) if hours else None,
                "edited": edits,
                "corrected_by_lead": corrected,
                "undone": undone,
                "awaiting_review": waiting,
                "last_label": last,
            }
        )
    return out


def _active_hours(db: Database, labeler: str, since: str) -> float:
    """Hours spent labeling since ``since``: the gaps between card labels, each pause capped at 10 minutes."""
    sql = """
        SELECT created_at FROM labels WHERE labeler = ? AND via = 'card' AND created_at >= ?
        AND replaced_by IS NULL ORDER BY created_at"""
    moments = [parse_ts(t) for (t,) in db.execute(sql, [labeler, since])]
    gaps = [min(b - a, ACTIVE_GAP) for a, b in itertools.pairwise(moments)]
    # the first label of a session took time too: count it as an average label's
    seconds = sum(g.total_seconds() for g in gaps) + (60.0 if moments else 0.0)
    return seconds / 3600


def erase_label_text(db: Database, trace_ids: list[str]) -> None:
    """Blank what labelers wrote about these traces (expected behaviour, criterion, note); the verdicts
    stay. Call inside the erasing transaction."""
    marks = ",".join("?" * len(trace_ids))
    db.execute(
        f"UPDATE labels SET expected = NULL, pass_criterion = NULL, note = NULL WHERE trace_id IN ({marks})",
        trace_ids,
    )
