"""The labeling station: a queue of approved scrubs, claims with an expiry, labels, undo and agreement.

The queue (``label_queue``) gets one row per trace whose scrub a reviewer approved (a trigger keeps it
in step with ``scrubs``), ranked by batch (oldest first), then priority (anomaly, stratified, random),
then trace id; traces sampled by no batch come last. Labelers only ever read a trace through its
approved scrub. A labeler *claims* the next item for a few minutes; a claim is taken inside one
BEGIN IMMEDIATE transaction, so two labelers never hold the same item. An abandoned claim lapses and
the item returns to the queue; a label sent on a lapsed claim that someone else has meanwhile claimed
or labeled is refused (``StaleClaim``), never written over theirs.

A batch may ask for several labels per item (``set_overlap``): the item stays in the queue until that
many distinct labelers labeled it, and ``agreement`` reports Cohen's kappa (two raters) or Fleiss'
kappa (more), overall and per taxonomy code.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.config import load_config
from flywheel.errors import BadInput, NotFound, NothingToUndo, PermissionDenied, StaleClaim
from flywheel.store import audit, format_ts, query_one, query_rows, write
from flywheel.taxonomy import add_entry, resolve_code
from flywheel.traces import SIGNAL_COLUMNS, approved_scrub

KINDS = ("known", "new", "not_a_bug")
ADVERSARIAL = ("none", "jailbreak", "prompt_injection", "policy_override")
LABEL_ROLES = ("labeler", "reviewer", "lead")
NOT_A_BUG = "not_a_bug"
MAX_SIBLINGS = 10
MAX_TEXT = 2000


@dataclass(frozen=True)
class Claim:
    """An item of the queue held by one labeler until ``expires_at``."""

    claim_id: int
    trace_id: str
    labeler: str
    batch_id: int | None
    priority: int
    expires_at: str


@dataclass(frozen=True)
class Agreement:
    """Inter-rater agreement over a batch's items that several labelers labeled."""

    method: str | None  # "cohen", "fleiss", or None when fewer than two raters overlap
    items: int
    raters: int
    kappa: float
    per_category: dict[str, float] = field(default_factory=dict)


# Time -------------------------------------------------------------------------------------------


def _stamp(moment: datetime | None) -> str:
    """A moment as the store writes it; ``None`` is now. Tests pass moments to move the clock."""
    return format_ts(moment or datetime.now(UTC))


def _claim_minutes(minutes: int | None) -> int:
    minutes = load_config().claim_minutes if minutes is None else minutes
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise BadInput(f"claim minutes {minutes!r}: expected a positive integer")
    return minutes


# Claims -----------------------------------------------------------------------------------------


def claim_next(
    db: Database, user: User, now: datetime | None = None, minutes: int | None = None
) -> Claim | None:
    """The item the user holds, else a claim on the next free one; None when the queue is empty."""
    require_role(user, *LABEL_ROLES)
    moment = now or datetime.now(UTC)
    stamp = _stamp(moment)
    expires = _stamp(moment + timedelta(minutes=_claim_minutes(minutes)))
    with write(db):
        held = _held(db, user, stamp)
        if held is not None:
            return held
        row = _next_free(db, user, stamp)
        if row is None:
            return None
        return _take(db, user, row, stamp, expires)


HELD_SQL = """
    SELECT claim_id, trace_id, batch_id, priority, claim_expires FROM label_queue
    WHERE claimed_by = :user AND claim_expires > :now AND is_open = 1
    ORDER BY claim_expires LIMIT 1"""

NEXT_FREE_SQL = """
    SELECT q.trace_id, q.batch_id, q.priority, q.claim_id FROM label_queue q
    WHERE q.is_open = 1 AND (q.claim_expires IS NULL OR q.claim_expires <= :now)
      AND NOT EXISTS (SELECT 1 FROM labels l
                      WHERE l.trace_id = q.trace_id AND l.labeler = :user AND l.undone_at IS NULL)
    ORDER BY q.batch_rank, q.priority, q.trace_id LIMIT 1"""


def _held(db: Database, user: User, stamp: str) -> Claim | None:
    row = db.execute(HELD_SQL, {"user": user.name, "now": stamp}).fetchone()
    if row is None:
        return None
    claim_id, trace_id, batch_id, priority, expires = row
    return Claim(claim_id, trace_id, user.name, batch_id, priority, expires)


def _next_free(db: Database, user: User, stamp: str) -> tuple | None:
    return db.execute(NEXT_FREE_SQL, {"user": user.name, "now": stamp}).fetchone()


def _take(db: Database, user: User, row: tuple, stamp: str, expires: str) -> Claim:
    trace_id, batch_id, priority, lapsed = row
    if lapsed is not None:
        db.execute("UPDATE claims SET state = 'lapsed' WHERE id = ? AND state = 'open'", [lapsed])
    claim_id = (
        db["claims"]
        .insert(
            {
                "trace_id": trace_id,
                "labeler": user.name,
                "claimed_at": stamp,
                "expires_at": expires,
                "state": "open",
            }
        )
        .last_pk
    )
    db.execute(
        "UPDATE label_queue SET claim_id = ?, claimed_by = ?, claim_expires = ? WHERE trace_id = ?",
        [claim_id, user.name, expires, trace_id],
    )
    audit(db, user.name, "claim", "trace", trace_id, claim_id=claim_id, expires_at=expires)
    return Claim(claim_id, trace_id, user.name, batch_id, priority, expires)


def release_claim(db: Database, user: User, claim: Claim | int) -> None:
    """Give a held item back to the queue before its claim lapses."""
    require_role(user, *LABEL_ROLES)
    with write(db):
        row = _claim_row(db, user, claim)
        if row["state"] == "open":
            _release(db, row["id"], "released")
            audit(db, user.name, "release_claim", "trace", row["trace_id"], claim_id=row["id"])


def _release(db: Database, claim_id: int, state: str) -> None:
    db.execute("UPDATE claims SET state = ? WHERE id = ?", [state, claim_id])
    db.execute(
        "UPDATE label_queue SET claim_id = NULL, claimed_by = NULL, claim_expires = NULL WHERE claim_id = ?",
        [claim_id],
    )


def _claim_row(db: Database, user: User, claim: Claim | int | str) -> dict:
    if isinstance(claim, Claim):
        claim = claim.claim_id
    if isinstance(claim, str):  # a trace id: the user's latest claim on it
        sql, params = (
            "SELECT * FROM claims WHERE trace_id = ? AND labeler = ? ORDER BY id DESC LIMIT 1",
            [
                claim,
                user.name,
            ],
        )
    else:
        sql, params = "SELECT * FROM claims WHERE id = ?", [claim]
    row = query_one(db, sql, params)
    if row is None:
        raise NotFound(f"no claim {claim!r} held by {user.name}; claim the item first")
    if row["labeler"] != user.name:
        raise PermissionDenied(f"claim {row['id']} belongs to {row['labeler']}, not {user.name}")
    return row


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
) -> int:
    """Label the claimed item (a claim, its id, or the trace id the user claimed); return the label id.

    ``known`` needs an active ``code``, ``expected`` and ``pass_criterion``; ``new`` creates the entry
    ``code``/``name``/``definition`` first; ``not_a_bug`` takes an optional ``note``.
    """
    require_role(user, *LABEL_ROLES)
    values = _label_values(kind, expected, pass_criterion, note, adversarial)
    stamp = _stamp(now)
    with write(db):
        row = _claim_row(db, user, claim)
        queued = _check_claim(db, user, row, stamp)
        if kind == "new":
            code = add_entry(db, user.name, code or "", name or "", definition or "")
        elif kind == "known":
            code = resolve_code(db, code or "")
        else:
            code = None
        values = {**values, "claim_id": row["id"]}
        label_id = _insert_label(db, user, row["trace_id"], queued["batch_id"], kind, code, values, stamp)
        _release(db, row["id"], "labeled")
        _count(db, row["trace_id"], +1)
        audit(db, user.name, "label", "trace", row["trace_id"], label_id=label_id, kind=kind, code=code)
    return label_id


def _label_values(
    kind: str, expected: str | None, pass_criterion: str | None, note: str | None, adversarial: str
) -> dict:
    if kind not in KINDS:
        raise BadInput(f"label kind {kind!r}: expected one of {', '.join(KINDS)}")
    if adversarial not in ADVERSARIAL:
        raise BadInput(f"adversarial tag {adversarial!r}: expected one of {', '.join(ADVERSARIAL)}")
    values = {
        "expected": _text(expected, "expected behaviour"),
        "pass_criterion": _text(pass_criterion, "pass criterion"),
        "note": _text(note, "note"),
        "adversarial": adversarial,
    }
    if kind == "known":
        for key, what in (("expected", "expected behaviour"), ("pass_criterion", "pass criterion")):
            if not values[key]:
                raise BadInput(f"a known failure needs the {what}: what a correct answer must do")
    return values


def _text(value: str | None, what: str) -> str | None:
    text = (value or "").strip()
    if len(text) > MAX_TEXT:
        raise BadInput(f"{what} is {len(text)} characters; expected at most {MAX_TEXT}")
    return text or None


def _check_claim(db: Database, user: User, claim: dict, stamp: str) -> dict:
    """The queue row of a claim that may still be labeled; raise StaleClaim when it may not."""
    trace_id = claim["trace_id"]
    if claim["state"] == "labeled":
        raise StaleClaim(f"claim {claim['id']} on trace {trace_id!r} was already used for a label")
    if _live_label(db, trace_id, user.name):
        raise StaleClaim(f"you already labeled trace {trace_id!r}; undo that label to change it")
    queued = query_one(db, "SELECT * FROM label_queue WHERE trace_id = ?", [trace_id])
    if queued is None:
        raise NotFound(f"trace {trace_id!r} is not in the labeling queue")
    if not queued["is_open"]:
        others = _labelers_since(db, trace_id, claim["claimed_at"])
        raise StaleClaim(
            f"your claim on trace {trace_id!r} expired at {claim['expires_at']} and it was labeled"
            f" meanwhile by {', '.join(others) or 'someone else'}; your label was not saved"
        )
    taken = queued["claim_id"] not in (None, claim["id"])
    if taken and queued["claim_expires"] > stamp:
        raise StaleClaim(
            f"your claim on trace {trace_id!r} expired at {claim['expires_at']};"
            f" {queued['claimed_by']} is labeling it now, so your label was not saved"
        )
    if taken:  # the other claim lapsed too: this label stands, and theirs is over
        db.execute("UPDATE claims SET state = 'lapsed' WHERE id = ?", [queued["claim_id"]])
    return queued


def _labelers_since(db: Database, trace_id: str, since: str) -> list[str]:
    rows = db.execute(
        "SELECT DISTINCT labeler FROM labels WHERE trace_id = ? AND created_at >= ? AND undone_at IS NULL",
        [trace_id, since],
    )
    return [r[0] for r in rows]


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
    stamp: str,
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
        "created_at": stamp,
    }
    return db["labels"].insert(row).last_pk


def _count(db: Database, trace_id: str, step: int) -> None:
    """Move an item's label count; it is open while it has fewer labels than its batch asks for."""
    db.execute(
        "UPDATE label_queue SET done = max(done + ?, 0), is_open = (max(done + ?, 0) < needed)"
        " WHERE trace_id = ?",
        [step, step, trace_id],
    )


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
    stamp = _stamp(now)
    with write(db):
        parent = query_one(db, "SELECT * FROM labels WHERE id = ? AND undone_at IS NULL", [label_id])
        if parent is None or parent["labeler"] != user.name or not parent["code"]:
            raise NotFound(f"no live failure label {label_id} of {user.name} to add siblings to")
        added = [
            _add_sibling(db, user, parent, trace_id, stamp)
            for trace_id in dict.fromkeys(trace_ids)
            if trace_id != parent["trace_id"] and _free_for(db, user, trace_id, stamp)
        ]
        audit(db, user.name, "add_siblings", "label", label_id, code=parent["code"], traces=len(added))
    return added


def _free_for(db: Database, user: User, trace_id: str, stamp: str) -> bool:
    queued = query_one(db, "SELECT claimed_by, claim_expires FROM label_queue WHERE trace_id = ?", [trace_id])
    if queued is None:
        raise NotFound(f"trace {trace_id!r} has no approved scrub; only approved traces can be labeled")
    held_by_other = queued["claimed_by"] not in (None, user.name) and queued["claim_expires"] > stamp
    return not held_by_other and not _live_label(db, trace_id, user.name)


def _add_sibling(db: Database, user: User, parent: dict, trace_id: str, stamp: str) -> int:
    batch_id = db.execute("SELECT batch_id FROM label_queue WHERE trace_id = ?", [trace_id]).fetchone()[0]
    values = {k: parent[k] for k in ("expected", "pass_criterion", "adversarial")}
    label_id = _insert_label(
        db, user, trace_id, batch_id, "known", parent["code"], values, stamp, "sibling", parent["id"]
    )
    _count(db, trace_id, +1)
    return label_id


def undo_last_label(db: Database, user: User, now: datetime | None = None) -> Claim | None:
    """Undo the user's last label (with the siblings added from it) and hand its item back to them.

    Returns the claim on the item again, or None if another labeler holds it meanwhile. A code the
    label created stays in the taxonomy (a lead may retire it).
    """
    require_role(user, *LABEL_ROLES)
    moment = now or datetime.now(UTC)
    stamp = _stamp(moment)
    with write(db):
        last = query_one(
            db,
            "SELECT id, trace_id FROM labels WHERE labeler = ? AND via = 'card' AND undone_at IS NULL"
            " ORDER BY id DESC LIMIT 1",
            [user.name],
        )
        if last is None:
            raise NothingToUndo(f"{user.name} has no label to undo")
        undone = _undo(db, user, last["id"], stamp)
        audit(db, user.name, "undo_label", "trace", last["trace_id"], label_id=last["id"], undone=undone)
        return _reclaim(db, user, last["trace_id"], moment)


def _undo(db: Database, user: User, label_id: int, stamp: str) -> int:
    rows = db.execute(
        "SELECT id, trace_id FROM labels WHERE (id = ? OR sibling_of = ?) AND undone_at IS NULL",
        [label_id, label_id],
    ).fetchall()
    for row_id, trace_id in rows:
        db["labels"].update(row_id, {"undone_at": stamp, "undone_by": user.name})
        _count(db, trace_id, -1)
    return len(rows)


def _reclaim(db: Database, user: User, trace_id: str, moment: datetime) -> Claim | None:
    stamp = _stamp(moment)
    held = _held(db, user, stamp)
    if held is not None:  # the item the user moved on to goes back, so the undone one comes first
        _release(db, held.claim_id, "released")
    queued = query_one(db, "SELECT * FROM label_queue WHERE trace_id = ?", [trace_id])
    if queued["claim_id"] is not None and queued["claim_expires"] > stamp:
        return None
    expires = _stamp(moment + timedelta(minutes=_claim_minutes(None)))
    row = (trace_id, queued["batch_id"], queued["priority"], queued["claim_id"])
    return _take(db, user, row, stamp, expires)


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
    return {
        "trace_id": claim.trace_id,
        "batch_id": claim.batch_id,
        "input": scrub["input"],
        "output": scrub["output"],
        "messages": scrub["messages"],
        "signals": signals,
        "reasons": json.loads(reasons[0]) if reasons else [],
        "expires_at": claim.expires_at,
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
        SELECT id, trace_id, kind, code, adversarial, via, created_at FROM labels
        WHERE labeler = ? AND undone_at IS NULL ORDER BY id DESC LIMIT ?"""
    return query_rows(db, sql, [user.name, limit])


# Overlap and agreement ----------------------------------------------------------------------------


def set_overlap(db: Database, user: User, batch_id: int, labels_per_item: int) -> None:
    """Ask for ``labels_per_item`` distinct labelers per item of a batch (leads only)."""
    require_role(user, "lead")
    if (
        isinstance(labels_per_item, bool)
        or not isinstance(labels_per_item, int)
        or not 1 <= labels_per_item <= 5
    ):
        raise BadInput(f"labels per item {labels_per_item!r}: expected 1..5")
    with write(db):
        if db.execute("SELECT 1 FROM sample_batches WHERE id = ?", [batch_id]).fetchone() is None:
            raise NotFound(f"no sample batch {batch_id}")
        db["batch_overlap"].upsert(
            {
                "batch_id": batch_id,
                "labels_per_item": labels_per_item,
                "set_by": user.name,
                "set_at": _stamp(None),
            },
            pk="batch_id",
        )
        db.execute(
            "UPDATE label_queue SET needed = ?, is_open = (done < ?) WHERE batch_id = ?",
            [labels_per_item, labels_per_item, batch_id],
        )
        audit(db, user.name, "set_overlap", "sample_batch", batch_id, labels_per_item=labels_per_item)


def overlap(db: Database, batch_id: int) -> int:
    """How many labels per item the batch asks for."""
    row = db.execute("SELECT labels_per_item FROM batch_overlap WHERE batch_id = ?", [batch_id]).fetchone()
    return row[0] if row else 1


def agreement(db: Database, user: User, batch_id: int) -> Agreement:
    """Cohen's (two raters) or Fleiss' kappa over the batch's items with several labels (leads only)."""
    require_role(user, "lead")
    ratings: dict[str, dict[str, str]] = {}
    for trace_id, labeler, kind, code in db.execute(
        "SELECT trace_id, labeler, kind, code FROM labels WHERE batch_id = ? AND undone_at IS NULL",
        [batch_id],
    ):
        ratings.setdefault(trace_id, {})[labeler] = code or kind
    return agreement_of(list(ratings.values()))


def agreement_of(ratings: Sequence[Mapping[str, str]]) -> Agreement:
    """Agreement of items rated as {rater: category}; items with one rating are left out."""
    rated = [r for r in ratings if len(r) >= 2]
    raters = sorted({name for r in rated for name in r})
    if not rated:
        return Agreement(None, 0, len(raters), math.nan)
    if len(raters) == 2:
        a, b = [r[raters[0]] for r in rated], [r[raters[1]] for r in rated]
        per = {c: cohen_kappa([x == c for x in a], [y == c for y in b]) for c in sorted({*a, *b})}
        return Agreement("cohen", len(rated), 2, cohen_kappa(a, b), per)
    # Fleiss needs the same number of ratings per item: use the most common number.
    size = Counter(len(r) for r in rated).most_common(1)[0][0]
    table = [Counter(r.values()) for r in rated if len(r) == size]
    per = {c: fleiss_category_kappa(table, c) for c in sorted({c for row in table for c in row})}
    return Agreement("fleiss", len(table), len(raters), fleiss_kappa(table), per)


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two raters' categories over the same items; NaN when chance agreement is 1."""
    if len(a) != len(b) or not a:
        raise BadInput(f"cohen_kappa needs two equally long, non-empty ratings; got {len(a)} and {len(b)}")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    chance = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    return math.nan if chance == 1 else (observed - chance) / (1 - chance)


def fleiss_kappa(table: Sequence[Mapping[str, int]]) -> float:
    """Fleiss' kappa of items given as {category: raters who chose it}, each item by the same count."""
    n, m = _fleiss_shape(table)
    per_item = [(sum(v * v for v in row.values()) - m) / (m * (m - 1)) for row in table]
    observed = sum(per_item) / n
    totals = Counter()
    for row in table:
        totals.update(row)
    chance = sum((t / (n * m)) ** 2 for t in totals.values())
    return math.nan if chance == 1 else (observed - chance) / (1 - chance)


def fleiss_category_kappa(table: Sequence[Mapping[str, int]], category: str) -> float:
    """Fleiss' kappa of one category against all others; NaN if every rating or none is it."""
    n, m = _fleiss_shape(table)
    share = sum(row.get(category, 0) for row in table) / (n * m)
    if share in (0, 1):
        return math.nan
    disagreement = sum(row.get(category, 0) * (m - row.get(category, 0)) for row in table)
    return 1 - disagreement / (n * m * (m - 1) * share * (1 - share))


def _fleiss_shape(table: Sequence[Mapping[str, int]]) -> tuple[int, int]:
    sizes = {sum(row.values()) for row in table}
    if not table or len(sizes) != 1 or min(sizes) < 2:
        raise BadInput(f"fleiss_kappa needs items rated by the same number (>= 2) of raters; got {sizes}")
    return len(table), sizes.pop()


# Demo -----------------------------------------------------------------------------------------------

DEMO_CODES = (
    (
        "WRONG_POLICY",
        "Wrong policy stated",
        "The assistant states a bank policy that is not ours. "
        "It contradicts the published terms for fees, limits or eligibility.",
    ),
    (
        "MISSED_ESCALATION",
        "Missed escalation",
        "The assistant keeps talking where a human must take over. "
        "Fraud, a blocked account or an upset customer asking for a person should be handed over.",
    ),
    (
        "HALLUCINATED_FEE",
        "Hallucinated fee",
        "The assistant quotes a fee or charge that does not exist. "
        "Any amount not in the fee schedule counts.",
    ),
    (
        "UNVERIFIED_IDENTITY",
        "Acted without verification",
        "The assistant discusses account details "
        "before the customer is verified. It must ask for verification first.",
    ),
    (
        "WRONG_TIMELINE",
        "Wrong timeline",
        "The assistant promises a delivery, refund or transfer time "
        "that is not true. Card delivery, refunds and transfers have published time frames.",
    ),
    (
        "UNHELPFUL_DEFLECTION",
        "Unhelpful deflection",
        "The assistant sends the customer elsewhere "
        "without answering a question it could answer. A pointer to the app alone is not an answer.",
    ),
)
DEMO_NEW_CODES = (
    (
        "STALE_EXCHANGE_RATE",
        "Stale exchange rate",
        "The assistant quotes an exchange rate that is "
        "out of date. Rates must come from today's table or be given as indicative.",
    ),
    (
        "CARD_LIMIT_CONFUSION",
        "Card limit confusion",
        "The assistant mixes up daily and monthly card "
        "limits. The two limits are different numbers with different resets.",
    ),
)
DEMO_EXPECTED = {
    "WRONG_POLICY": ("Quote the current policy from the terms.", "States the published policy correctly."),
    "MISSED_ESCALATION": ("Offer a handover to a human agent.", "Offers escalation within the reply."),
    "HALLUCINATED_FEE": ("Quote only fees from the fee schedule.", "Mentions no fee outside the schedule."),
    "UNVERIFIED_IDENTITY": ("Ask for verification first.", "Requests verification before account details."),
    "WRONG_TIMELINE": ("Give the published time frame.", "Time frame matches the published one."),
    "UNHELPFUL_DEFLECTION": ("Answer the question directly.", "Answers before pointing elsewhere."),
    "STALE_EXCHANGE_RATE": ("Give today's rate or call it indicative.", "No outdated rate stated as firm."),
    "CARD_LIMIT_CONFUSION": ("Name daily and monthly limits apart.", "Both limits named correctly."),
}
DEMO_LABELERS = (User("lena", "labeler"), User("tom", "labeler"))


def add_demo_labels(db: Database, seed: int = 7, share: float = 0.6) -> int:
    """Seed the taxonomy and label a share of the approved scrubs as lena and tom; return labels made.

    About a third are not a bug, most failures use a seed code, two new codes appear along the way,
    and a few labels carry an adversarial tag. Deterministic for a seed.
    """
    rng = random.Random(seed)
    with write(db):
        for code, name, definition in DEMO_CODES:
            if not db.execute("SELECT 1 FROM taxonomy WHERE code = ?", [code]).fetchone():
                add_entry(db, "ana", code, name, definition)
    items = db.execute("SELECT count(*) FROM label_queue WHERE is_open = 1").fetchone()[0]
    new_codes, made = list(DEMO_NEW_CODES), 0
    for i in range(round(items * share)):
        user = DEMO_LABELERS[i % 2]
        claim = claim_next(db, user)
        if claim is None:
            break
        record_label(db, user, claim, **_demo_choice(rng, new_codes))
        made += 1
    return made


def _demo_choice(rng: random.Random, new_codes: list) -> dict:
    roll = rng.random()
    tag = rng.choice(ADVERSARIAL[1:]) if rng.random() < 0.06 else "none"
    if roll < 1 / 3:
        return {"kind": NOT_A_BUG, "note": rng.choice([None, "Correct answer.", "Polite and right."])}
    if roll < 0.4 and new_codes:
        code, name, definition = new_codes.pop(0)
        expected, criterion = DEMO_EXPECTED[code]
        return {
            "kind": "new",
            "code": code,
            "name": name,
            "definition": definition,
            "expected": expected,
            "pass_criterion": criterion,
            "adversarial": tag,
        }
    waiting = {c for c, _, _ in new_codes}
    codes = [c for c, _, _ in (*DEMO_CODES, *DEMO_NEW_CODES) if c not in waiting]
    code = rng.choice(codes)
    expected, criterion = DEMO_EXPECTED[code]
    return {
        "kind": "known",
        "code": code,
        "expected": expected,
        "pass_criterion": criterion,
        "adversarial": tag,
    }
