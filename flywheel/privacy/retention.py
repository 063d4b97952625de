"""Retention: raw text is kept ``FLYWHEEL_RETENTION_DAYS`` days, then purged.

A purged trace keeps its id, time, cohort, intent, signals and metadata (online quality reads releases
and variants there), its approved scrub, labels and eval rows, so every station downstream keeps working;
its input reads ``[raw text removed: ...]`` wherever a page shows it. A pending scrub of it is set aside
with the reason, since nobody can review a scrub without the raw text. Quarantined lines are purged by
the time of the import that kept them. Drift keeps its machine scrubs of unsampled traces (scrubbed text
that no labeler reads), so its reference weeks stay measurable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.errors import BadInput
from flywheel.ingest.run import blank_quarantined
from flywheel.privacy.subjects import purge_traces, secure_deletes, wipe_free_space
from flywheel.store.audit import audit
from flywheel.store.clock import format_ts, now_utc
from flywheel.store.db import write

CHUNK = 5000


@dataclass(frozen=True)
class RetentionReport:
    """What retention found (``applied`` False: a dry run) or purged."""

    days: int
    cutoff: str
    traces: int
    quarantined: int
    set_aside: int
    applied: bool
    oldest: str | None = None

    def as_json(self) -> dict:
        return {
            "days": self.days,
            "cutoff": self.cutoff,
            "traces": self.traces,
            "quarantined": self.quarantined,
            "set_aside": self.set_aside,
            "applied": self.applied,
        }

    def summary(self) -> str:
        """One line for people."""
        verb = "purged" if self.applied else "would purge"
        oldest = f" (oldest {self.oldest})" if self.oldest and not self.applied else ""
        return (
            f"retention {self.days} days, before {self.cutoff}: {verb} the raw text of"
            f" {self.traces} trace(s){oldest} and {self.quarantined} quarantined line(s);"
            f" {self.set_aside} pending scrub(s) set aside"
        )


def cutoff(days: int, now: datetime | None = None) -> str:
    """The stored-timestamp form of the moment before which raw text has expired."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise BadInput(
            f"retention days {days!r}: expected a positive number (FLYWHEEL_RETENTION_DAYS; 0 keeps raw text)"
        )
    return format_ts((now or now_utc()) - timedelta(days=days))


_EXPIRED = """FROM traces t WHERE t.ts < ?
    AND NOT EXISTS (SELECT 1 FROM raw_purges p WHERE p.trace_id = t.trace_id)"""
_EXPIRED_LINES = """FROM quarantine q JOIN ingest_runs r ON r.id = q.run_id
    WHERE r.started_at < ? AND length(q.raw) > 0"""


def retention_plan(db: Database, user: User, days: int, now: datetime | None = None) -> RetentionReport:
    """What applying retention would purge (leads only); changes nothing."""
    require_role(user, "lead")
    before = cutoff(days, now)
    traces, oldest = db.execute(f"SELECT count(*), min(t.ts) {_EXPIRED}", [before]).fetchone()
    lines = db.execute(f"SELECT count(*) {_EXPIRED_LINES}", [before]).fetchone()[0]
    pending = db.execute(
        "SELECT count(*) FROM scrubs s JOIN traces t ON t.trace_id = s.trace_id"
        " WHERE s.status = 'pending' AND t.ts < ?"
        " AND NOT EXISTS (SELECT 1 FROM raw_purges p WHERE p.trace_id = t.trace_id)",
        [before],
    ).fetchone()[0]
    return RetentionReport(days, before, traces, lines, pending, False, oldest)


def apply_retention(db: Database, user: User, days: int, now: datetime | None = None) -> RetentionReport:
    """Purge raw text older than ``days`` (leads only), in batches, each committed with its audit entry."""
    plan = retention_plan(db, user, days, now)
    stamp = format_ts(now or now_utc())
    reason = f"expired on {stamp[:10]} (kept {days} days)"
    with secure_deletes(db):
        purged, lines = _purge(db, user, plan, reason, stamp)
        if purged or lines:
            wipe_free_space(db)
    return RetentionReport(days, plan.cutoff, purged, lines, plan.set_aside, True)


def _purge(db: Database, user: User, plan: RetentionReport, reason: str, stamp: str) -> tuple[int, int]:
    purged, days = 0, plan.days
    # Listed once: purged traces stay old, so re-listing per batch would walk them again and again.
    expired = db.execute(f"SELECT t.rowid, t.trace_id {_EXPIRED}", [plan.cutoff]).fetchall()
    for start in range(0, len(expired), CHUNK):
        rows = expired[start : start + CHUNK]
        with write(db):
            purge_traces(db, user.name, rows, reason, stamp, keep_metadata=True)
            audit(db, user.name, "retention_purge", "traces", len(rows), cutoff=plan.cutoff, days=days)
        purged += len(rows)
    with write(db):
        ids = [r[0] for r in db.execute(f"SELECT q.id {_EXPIRED_LINES}", [plan.cutoff]).fetchall()]
        blank_quarantined(db, ids)
        audit(
            db,
            user.name,
            "apply_retention",
            "traces",
            purged,
            cutoff=plan.cutoff,
            days=days,
            quarantined=len(ids),
        )
    return purged, len(ids)


def raw_text_gone(db: Database, trace_id: str) -> str | None:
    """Why a trace's raw text is gone (retention or erasure, with when), or None while it is kept."""
    row = db.execute("SELECT reason FROM raw_purges WHERE trace_id = ?", [trace_id]).fetchone()
    return row[0] if row else None
