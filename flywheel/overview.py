"""What the overview page shows: how much is at each station of the loop, week by week.

Per-week figures come from the trace rollup (``flywheel.rollups``), never from a walk over every trace.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
from sqlite_utils import Database

from flywheel.rollups import ALL, cached, refresh_rollups
from flywheel.signals import ANOMALIES
from flywheel.traces import iso_week


def loop_counts(db: Database) -> dict[str, int]:
    """Counts at each station that holds data."""
    refresh_rollups(db)
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    return {
        "traces": one("SELECT coalesce(sum(traces), 0) FROM trace_rollup WHERE signal = ''"),
        "weeks": one("SELECT count(DISTINCT week) FROM trace_rollup"),
        "ingest_runs": one("SELECT count(*) FROM ingest_runs"),
        "quarantined": one("SELECT count(*) FROM quarantine"),
        "changed_duplicates": one("SELECT count(*) FROM ingest_conflicts"),
        "batches": one("SELECT count(*) FROM sample_batches"),
        "sampled": one("SELECT count(DISTINCT trace_id) FROM batch_items"),
        "scrub_pending": one("SELECT count(*) FROM scrubs WHERE status = 'pending'"),
        "scrub_approved": one("SELECT count(*) FROM scrubs WHERE status = 'approved'"),
        "scrub_rejected": one("SELECT count(*) FROM scrubs WHERE status = 'rejected'"),
        "labeled": one("SELECT count(DISTINCT trace_id) FROM labels WHERE undone_at IS NULL"),
        "failures": one(
            "SELECT count(DISTINCT trace_id) FROM labels WHERE undone_at IS NULL AND kind != 'not_a_bug'"
        ),
    }


def weekly_traffic(db: Database) -> pd.DataFrame:
    """Traces per ISO week and cohort ('(none)' for traces without one)."""
    return cached(db, "weekly_traffic", lambda: _weekly_traffic(db))


def _weekly_traffic(db: Database) -> pd.DataFrame:
    sql = (
        "SELECT week, CASE cohort WHEN '' THEN '(none)' ELSE cohort END AS cohort, sum(traces)"
        " FROM trace_rollup WHERE signal = '' GROUP BY week, cohort ORDER BY week, cohort"
    )
    return pd.DataFrame(db.execute(sql).fetchall(), columns=["week", "cohort", "traces"])


def weekly_signal_rates(db: Database) -> pd.DataFrame:
    """Per ISO week, the share of traces carrying each anomaly signal (long format)."""
    return cached(db, "weekly_signal_rates", lambda: _weekly_signal_rates(db))


def _weekly_signal_rates(db: Database) -> pd.DataFrame:
    rows = db.execute(
        "SELECT week, signal, sum(traces) FROM trace_rollup GROUP BY week, signal ORDER BY week"
    ).fetchall()
    totals = {week: n for week, signal, n in rows if signal == ALL}
    counts = {(week, signal): n for week, signal, n in rows}
    data = [
        (week, s.label, counts.get((week, s.name), 0) / total)
        for week, total in totals.items()
        for s in ANOMALIES
    ]
    return pd.DataFrame(data, columns=["week", "signal", "share"])


def intent_mix(db: Database, limit: int = 12, recent_weeks: int = 4) -> pd.DataFrame:
    """The intents that gained most share in the last ``recent_weeks`` ISO weeks against the weeks before."""
    return cached(db, f"intent_mix:{limit}:{recent_weeks}", lambda: _intent_mix(db, limit, recent_weeks))


def _intent_mix(db: Database, limit: int, recent_weeks: int) -> pd.DataFrame:
    latest = db.execute("SELECT max(week) FROM trace_rollup").fetchone()[0]
    if latest is None:
        return pd.DataFrame(columns=["intent", "recent_share", "earlier_share"])
    monday = datetime.strptime(latest + "-1", "%G-W%V-%u")
    cutoff = iso_week((monday - timedelta(weeks=recent_weeks - 1)).strftime("%Y-%m-%d"))
    sql = """
        WITH per AS (SELECT intent, sum(CASE WHEN week >= :cutoff THEN traces END) AS recent,
                            sum(CASE WHEN week < :cutoff THEN traces END) AS earlier
                     FROM trace_rollup WHERE signal = '' GROUP BY intent),
             total AS (SELECT max(1, sum(recent)) AS recent, max(1, sum(earlier)) AS earlier FROM per)
        SELECT per.intent, coalesce(per.recent, 0) * 1.0 / total.recent AS recent_share,
               coalesce(per.earlier, 0) * 1.0 / total.earlier AS earlier_share
        FROM per, total WHERE per.intent != ''
        ORDER BY recent_share - earlier_share DESC, per.intent LIMIT :limit"""
    rows = db.execute(sql, {"cutoff": cutoff, "limit": limit}).fetchall()
    return pd.DataFrame(rows, columns=["intent", "recent_share", "earlier_share"])
