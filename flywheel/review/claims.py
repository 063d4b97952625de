"""Claims: a labeler holds one queued item at a time, for a window of minutes.

A claim is taken inside one BEGIN IMMEDIATE transaction, so two labelers never hold the same item. An
abandoned claim lapses and the item returns to the queue. A labeler may give an item back early
(``release_claim``) or skip it (``skip_claim``): a skipped item goes to the others and comes back to
the one who skipped it only when nothing else is left for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.errors import BadInput, NotFound, PermissionDenied
from flywheel.store.audit import audit
from flywheel.store.clock import format_ts, now_utc
from flywheel.store.db import query_one, write

LABEL_ROLES = ("labeler", "reviewer", "lead")


@dataclass(frozen=True)
class Claim:
    """An item of the queue held by one labeler until ``expires_at``."""

    claim_id: int
    trace_id: str
    labeler: str
    batch_id: int | None
    priority: int
    expires_at: str


def stamp(moment: datetime | None) -> str:
    """A moment as the store writes it; ``None`` is now. Tests pass moments to move the clock."""
    return format_ts(moment or now_utc())


def check_minutes(minutes: int) -> int:
    """A claim window: a positive number of minutes."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise BadInput(f"claim minutes {minutes!r}: expected a positive integer")
    return minutes


def claim_next(db: Database, user: User, now: datetime | None = None, *, minutes: int) -> Claim | None:
    """The item the user holds, else a claim on the next free one; None when the queue is empty.

    Items the user skipped come last: they are served again only when nothing else is free.
    """
    require_role(user, *LABEL_ROLES)
    moment = now or now_utc()
    at = stamp(moment)
    expires = stamp(moment + timedelta(minutes=check_minutes(minutes)))
    with write(db):
        held = held_claim(db, user, at)
        if held is not None:
            return held
        row = _next_free(db, user, at, NEXT_FREE_SQL) or _next_free(db, user, at, NEXT_SKIPPED_SQL)
        if row is None:
            return None
        return take(db, user, row, at, expires)


HELD_SQL = """
    SELECT claim_id, trace_id, batch_id, priority, claim_expires FROM label_queue
    WHERE claimed_by = :user AND claim_expires > :now AND is_open = 1
    ORDER BY claim_expires LIMIT 1"""

_FREE = """
    SELECT q.trace_id, q.batch_id, q.priority, q.claim_id FROM label_queue q
    WHERE q.is_open = 1 AND (q.claim_expires IS NULL OR q.claim_expires <= :now)
      AND NOT EXISTS (SELECT 1 FROM labels l
                      WHERE l.trace_id = q.trace_id AND l.labeler = :user AND l.undone_at IS NULL)
      AND {skipped} EXISTS (SELECT 1 FROM claims c
                      WHERE c.trace_id = q.trace_id AND c.labeler = :user AND c.state = 'skipped')
    ORDER BY q.batch_rank, q.priority, q.trace_id LIMIT 1"""
NEXT_FREE_SQL = _FREE.format(skipped="NOT")
NEXT_SKIPPED_SQL = _FREE.format(skipped="")


def held_claim(db: Database, user: User, at: str) -> Claim | None:
    """The live claim the user holds at ``at``, if any."""
    row = db.execute(HELD_SQL, {"user": user.name, "now": at}).fetchone()
    if row is None:
        return None
    claim_id, trace_id, batch_id, priority, expires = row
    return Claim(claim_id, trace_id, user.name, batch_id, priority, expires)


def _next_free(db: Database, user: User, at: str, sql: str) -> tuple | None:
    return db.execute(sql, {"user": user.name, "now": at}).fetchone()


def take(db: Database, user: User, row: tuple, at: str, expires: str) -> Claim:
    """Claim a queue row ``(trace_id, batch_id, priority, lapsed claim id)``; inside a transaction."""
    trace_id, batch_id, priority, lapsed = row
    if lapsed is not None:
        db.execute("UPDATE claims SET state = 'lapsed' WHERE id = ? AND state = 'open'", [lapsed])
    claim = {"trace_id": trace_id, "labeler": user.name, "claimed_at": at, "expires_at": expires}
    claim_id = db.table("claims").insert({**claim, "state": "open"}).last_pk
    assert claim_id is not None  # a rowid table always reports the new row's key
    db.execute(
        "UPDATE label_queue SET claim_id = ?, claimed_by = ?, claim_expires = ? WHERE trace_id = ?",
        [claim_id, user.name, expires, trace_id],
    )
    audit(db, user.name, "claim", "trace", trace_id, claim_id=claim_id, expires_at=expires)
    return Claim(claim_id, trace_id, user.name, batch_id, priority, expires)


def release_claim(db: Database, user: User, claim: Claim | int) -> None:
    """Give a held item back to the queue before its claim lapses."""
    _give_back(db, user, claim, "released", "release_claim")


def skip_claim(db: Database, user: User, claim: Claim | int) -> None:
    """Give a held item back and move on: others get it; the user gets it again only at the very end."""
    _give_back(db, user, claim, "skipped", "skip")


def _give_back(db: Database, user: User, claim: Claim | int, state: str, action: str) -> None:
    require_role(user, *LABEL_ROLES)
    with write(db):
        row = claim_row(db, user, claim)
        if row["state"] == "open":
            end_claim(db, row["id"], state)
            audit(db, user.name, action, "trace", row["trace_id"], claim_id=row["id"])


def end_claim(db: Database, claim_id: int, state: str) -> None:
    """Close a claim with ``state`` and free its queue row; inside a transaction."""
    db.execute("UPDATE claims SET state = ? WHERE id = ?", [state, claim_id])
    db.execute(
        "UPDATE label_queue SET claim_id = NULL, claimed_by = NULL, claim_expires = NULL WHERE claim_id = ?",
        [claim_id],
    )


def claim_row(db: Database, user: User, claim: Claim | int | str) -> dict:
    """The stored claim (a Claim, its id, or a trace id: the user's latest claim on it) the user holds."""
    if isinstance(claim, Claim):
        claim = claim.claim_id
    if isinstance(claim, str):
        sql = "SELECT * FROM claims WHERE trace_id = ? AND labeler = ? ORDER BY id DESC LIMIT 1"
        params: list[object] = [claim, user.name]
    else:
        sql, params = "SELECT * FROM claims WHERE id = ?", [claim]
    row = query_one(db, sql, params)
    if row is None:
        raise NotFound(f"no claim {claim!r} held by {user.name}; claim the item first")
    if row["labeler"] != user.name:
        raise PermissionDenied(f"claim {row['id']} belongs to {row['labeler']}, not {user.name}")
    return row


def lapse_claim(db: Database, claim_id: int) -> None:
    """End a claim that lapsed while another labeler's label on the item stands; call inside the
    labeling transaction."""
    db.execute("UPDATE claims SET state = 'lapsed' WHERE id = ?", [claim_id])
