"""Counts of traces per ISO week, cohort, intent and signal, kept in ``trace_rollup``.

Traces are only ever appended, so the rollup is kept up to a rowid watermark: a reader first adds the
traces that arrived since the last refresh (an index range on rowid) and then reads a few thousand rollup
rows instead of walking every trace. The watermark, with the signal definitions, is the data version of
everything computed from the rollup; changing a signal's predicate rebuilds it.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlite_utils import Database

from flywheel.store.db import write
from flywheel.traces.signals import ANOMALIES, Signal

T = TypeVar("T")
ROLLUP = "traces"
CACHE_SIZE = 256
_cache: dict[tuple, Any] = {}  # each name's own type of figure
ALL = ""  # the rollup's signal name for "every trace"; also its stand-in for a missing cohort or intent


def _definition() -> str:
    text = "|".join(f"{s.name}={s.predicate}" for s in ANOMALIES)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def data_version(db: Database) -> tuple[int, str]:
    """What the rollup must cover: the newest trace's rowid and the signal definitions."""
    upto = db.execute("SELECT coalesce(max(rowid), 0) FROM traces").fetchone()[0]
    return upto, _definition()


def refresh_rollups(db: Database) -> int:
    """Bring ``trace_rollup`` up to the newest trace; return how many traces were added to it.

    The new traces are counted outside any write lock; the short write applies the counts only if no
    one else moved the watermark meanwhile, so a first visit at 1M traces never blocks a labeler.
    """
    start, upto = pending_rowids(db, ROLLUP, _definition())
    if start >= upto:
        return 0
    counts = _counts_between(db, start, upto)

    def apply() -> None:
        if start == 0:
            db.execute("DELETE FROM trace_rollup")
        db.conn.executemany(
            "INSERT INTO trace_rollup (week, cohort, intent, signal, traces) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (week, cohort, intent, signal) DO UPDATE SET traces = traces + excluded.traces",
            counts,
        )

    if not advance_watermark(db, ROLLUP, _definition(), start, upto, apply):
        return 0
    return sum(row[4] for row in counts if row[3] == ALL)


def pending_rowids(db: Database, name: str, definition: str) -> tuple[int, int]:
    """``(start, upto)``: the rowids of traces the rollup ``name`` has not taken in yet, ``start``
    exclusive; ``start`` is 0 (rebuild) when there is no watermark or its definition changed."""
    upto = db.execute("SELECT coalesce(max(rowid), 0) FROM traces").fetchone()[0]
    return _watermark(db, name, definition), upto


def advance_watermark(
    db: Database, name: str, definition: str, start: int, upto: int, apply: Callable[[], None]
) -> bool:
    """In one short write: ``apply()`` and move the watermark of ``name`` to ``upto``, unless another
    session moved it from ``start`` meanwhile (then nothing is written and False is returned)."""
    with write(db):
        if _watermark(db, name, definition) != start:
            return False
        apply()
        db.execute(
            "INSERT OR REPLACE INTO rollup_state (name, definition, upto_rowid) VALUES (?, ?, ?)",
            [name, definition, upto],
        )
    return True


def _watermark(db: Database, name: str, definition: str) -> int:
    state = db.execute("SELECT definition, upto_rowid FROM rollup_state WHERE name = ?", [name]).fetchone()
    return state[1] if state and state[0] == definition else 0


def _counts_between(db: Database, start: int, upto: int) -> list[tuple]:
    sums = "".join(f", sum(coalesce({s.predicate}, 0))" for s in ANOMALIES)
    sql = (
        f"SELECT week, coalesce(cohort, ''), coalesce(intent, ''), count(*){sums} FROM traces"
        " WHERE rowid > ? AND rowid <= ? GROUP BY 1, 2, 3"
    )
    rows = []
    for week, cohort, intent, total, *flagged in db.execute(sql, [start, upto]):
        rows.append((week, cohort, intent, ALL, total))
        rows += [(week, cohort, intent, s.name, n) for s, n in zip(ANOMALIES, flagged, strict=True) if n]
    return rows


def rollup_count(
    db: Database,
    weeks: tuple[str, ...] = (),
    cohorts: tuple[str, ...] = (),
    intents: tuple[str, ...] = (),
    signal: Signal | None = None,
) -> int:
    """How many traces match these weeks, cohorts and intents (any, when empty) and carry ``signal``."""
    refresh_rollups(db)
    clauses, params = ["signal = ?"], [signal.name if signal else ALL]
    for column, values in (("week", weeks), ("cohort", cohorts), ("intent", intents)):
        if values:
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
    sql = f"SELECT coalesce(sum(traces), 0) FROM trace_rollup WHERE {' AND '.join(clauses)}"
    return db.execute(sql, params).fetchone()[0]


def rollup_values(db: Database) -> dict[str, list[str]]:
    """The weeks, cohorts and intents present, for filter widgets."""
    sql = "SELECT DISTINCT {0} FROM trace_rollup WHERE {0} != '' ORDER BY 1"
    return cached(
        db,
        "values",
        lambda: {
            column + "s": [r[0] for r in db.execute(sql.format(column))]
            for column in ("week", "cohort", "intent")
        },
    )


def cached(db: Database, name: str, compute: Callable[[], T]) -> T:
    """``compute()`` (a figure read from the rollup) once per database file, data version and ``name``;
    callers get their own copy."""
    refresh_rollups(db)
    key = (db.conn.execute("PRAGMA database_list").fetchone()[2], *data_version(db), name)
    if key not in _cache:
        if len(_cache) >= CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[key] = compute()
    return copy.deepcopy(_cache[key])
