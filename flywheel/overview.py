"""What the overview page shows: how much is at each station of the loop, week by week."""

from __future__ import annotations

import pandas as pd
from sqlite_utils import Database

ANOMALY_SIGNALS = {
    "thumbs down": "thumbs = 'down'",
    "regenerated or retried": "regenerated = 1 OR retried = 1",
    "escalated": "escalated = 1",
    "guardrail tripped": "guardrail_tripped = 1",
    "schema invalid": "schema_valid = 0",
}


def loop_counts(db: Database) -> dict[str, int]:
    """Counts at each station that holds data."""
    one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    return {
        "traces": one("SELECT count(*) FROM traces"),
        "weeks": one("SELECT count(DISTINCT week) FROM traces"),
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
    """Traces per ISO week and cohort."""
    sql = (
        "SELECT week, coalesce(cohort, '(none)') AS cohort, count(*) AS traces"
        " FROM traces GROUP BY week, cohort ORDER BY week, cohort"
    )
    return pd.DataFrame(db.execute(sql).fetchall(), columns=["week", "cohort", "traces"])


def weekly_signal_rates(db: Database) -> pd.DataFrame:
    """Per ISO week, the share of traces carrying each anomaly signal (long format)."""
    sums = ", ".join(f"avg(CASE WHEN {sql} THEN 1.0 ELSE 0 END)" for sql in ANOMALY_SIGNALS.values())
    rows = db.execute(f"SELECT week, {sums} FROM traces GROUP BY week ORDER BY week").fetchall()
    wide = pd.DataFrame(rows, columns=["week", *ANOMALY_SIGNALS])
    return wide.melt(id_vars="week", var_name="signal", value_name="share")


def intent_mix(db: Database, limit: int = 12) -> pd.DataFrame:
    """The intents that gained most share in the last four weeks against the time before."""
    cutoff = db.execute(
        "SELECT strftime('%Y-%m-%dT%H:%M:%S.000Z', max(ts), '-28 days') FROM traces"
    ).fetchone()[0]
    if cutoff is None:
        return pd.DataFrame(columns=["intent", "recent_share", "earlier_share"])
    sql = """
        SELECT intent,
               sum(ts >= :cutoff) * 1.0 / max(1, (SELECT count(*) FROM traces WHERE ts >= :cutoff)) AS recent,
               sum(ts < :cutoff) * 1.0 / max(1, (SELECT count(*) FROM traces WHERE ts < :cutoff)) AS earlier
        FROM traces WHERE intent IS NOT NULL GROUP BY intent ORDER BY recent - earlier DESC LIMIT :limit"""
    rows = db.execute(sql, {"cutoff": cutoff, "limit": limit}).fetchall()
    return pd.DataFrame(rows, columns=["intent", "recent_share", "earlier_share"])
