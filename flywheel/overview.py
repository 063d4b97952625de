"""What the overview page shows: whether the suite keeps up with production, what waits at each
station of the loop, and how much traffic arrives week by week.

Per-week figures come from the trace rollup (``flywheel.traces.rollups``), never from a walk over every trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.cycle import cycles
from flywheel.drift.run import drift_series
from flywheel.evals.runs import live_system, release_decisions, retirement_proposals
from flywheel.evals.versions import current_version, fold_preview, version_members, version_set
from flywheel.online.signal_alerts import ALL as SIGNALS_ALL
from flywheel.online.signal_alerts import RATE_SIGNALS, signal_counts
from flywheel.review.claims import LABEL_ROLES, stamp
from flywheel.stats import NO_TRIALS, wilson
from flywheel.store.clock import iso_week, now_utc, parse_ts
from flywheel.store.db import query_one, query_rows
from flywheel.traces.rollups import ALL, cached, refresh_rollups
from flywheel.traces.signals import ANOMALIES


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


# The flywheel's health: is the suite keeping up with production? ------------------------------------

RECENT_WEEKS = 4  # production weeks read as "now"
EARLIER_WEEKS = 8  # the weeks before them, read as "before"
MIN_EARLIER_WEEKS = 2


@dataclass(frozen=True)
class Limits:
    """How much a measure must move to count as moving (shares and scores are fractions)."""

    pass_drop: float = 0.05  # the pass rate fell: newest measurement this much below the one before
    drift_rise: float = 0.05  # the share of traffic beyond τ rose this much, recent weeks against earlier
    rate_rise: float = 0.015  # thumbs-down or escalation share rose this much ...
    z: float = 2.0  # ... and by this many standard errors of the difference
    judge_drop: float = 0.05  # the mean judge score fell this much
    judge_min: int = 20  # judged traces needed on each side


def divergence(
    version: int | None,
    suite: list[dict],
    weeks: list[dict],
    drift: list[dict],
    limits: Limits = Limits(),
    recent: int = RECENT_WEEKS,
) -> dict:
    """Whether the suite has fallen behind production: a verdict with its reasons in words.

    ``suite``: the live system's pass-rate measurements, oldest first (``week``, ``version``, ``rate``,
    ``n``); ``weeks``: production weeks, oldest first (``week``, ``n``, ``thumbs_down``, ``escalated``,
    ``judge_n``, ``judge_mean``); ``drift``: drift windows (``week``, ``share``, ``alarm``). The status is
    one of no_eval_set, no_results, too_few_weeks (nothing to judge), healthy, incomplete (nothing got
    worse, but drift is unmeasured), diverging (production worse, pass rate held: the alarm this screen
    exists for), both_falling, suite_falling.
    """
    if version is None:
        return _verdict("no_eval_set", "There is no eval set yet: nothing to hold production against.")
    current = [p for p in suite if p["version"] == version and p["n"]]
    if not current:
        return _verdict("no_results", f"Eval-set v{version} has no graded results yet: no pass rate to read.")
    if len(weeks) < recent + MIN_EARLIER_WEEKS:
        return _verdict(
            "too_few_weeks",
            f"{len(weeks)} week(s) of production traffic: a trend needs"
            f" at least {recent + MIN_EARLIER_WEEKS}.",
        )
    now_weeks = weeks[-recent:]
    before = weeks[-recent - EARLIER_WEEKS : -recent]
    span = f"weeks {now_weeks[0]['week']} to {now_weeks[-1]['week']} against the {len(before)} weeks before"
    worse = _production_worse(now_weeks, before, drift, limits)
    missing = [] if drift else ["drift (no drift run yet)"]
    if drift and not worse.get("drift_measured"):
        missing = ["drift (no window in the recent weeks)"]
    moved = worse["moved"]
    newest = current[-1]
    earlier = [p for p in suite[: suite.index(newest)] if p["n"]]
    fell = bool(earlier) and newest["rate"] < earlier[-1]["rate"] - limits.pass_drop
    rate_words = f"pass rate {_pct(newest['rate'])} on v{version}"
    if fell:
        rate_words = f"pass rate fell from {_pct(earlier[-1]['rate'])} to {_pct(newest['rate'])} (v{version})"
    if moved and not fell:
        return _verdict(
            "diverging",
            f"The suite has fallen behind production: the {rate_words} held while "
            f"{'; '.join(moved)} ({span}). Sample the new traffic and fold it in.",
            alarm=True,
            moved=moved,
            missing=missing,
        )
    if moved:
        return _verdict(
            "both_falling",
            f"Production got worse and the suite sees it: {rate_words}; {'; '.join(moved)} ({span}).",
            alarm=True,
            moved=moved,
            missing=missing,
        )
    if fell:
        return _verdict(
            "suite_falling",
            f"The {rate_words} while production held steady ({span}): a harder version reads lower; "
            "a regression shows on carried rows (Pass rate page).",
            alarm=True,
            missing=missing,
        )
    if missing:
        return _verdict(
            "incomplete",
            f"No production signal got worse ({span}) and the {rate_words} held, but "
            f"{', '.join(missing)}: run drift before calling the suite current.",
            missing=missing,
        )
    return _verdict(
        "healthy",
        f"The suite keeps up: {rate_words}; drift and production signals steady ({span}).",
    )


def _verdict(status: str, words: str, alarm: bool = False, moved=(), missing=()) -> dict:
    return {"status": status, "alarm": alarm, "words": words, "moved": list(moved), "missing": list(missing)}


def _production_worse(now: list[dict], before: list[dict], drift: list[dict], limits: Limits) -> dict:
    moved = []
    for key, name in (("thumbs_down", "thumbs-down"), ("escalated", "escalation")):
        k1, n1 = sum(w[key] for w in now), sum(w["n"] for w in now)
        k0, n0 = sum(w[key] for w in before), sum(w["n"] for w in before)
        if _rose(k0, n0, k1, n1, limits):
            moved.append(f"{name} rose from {_pct(k0 / n0)} to {_pct(k1 / n1)}")
    judged_now, judged_before = _judge_mean(now), _judge_mean(before)
    enough = min(judged_now[1], judged_before[1]) >= limits.judge_min
    if enough and judged_before[0] - judged_now[0] >= limits.judge_drop:
        moved.append(f"mean judge score fell from {judged_before[0]:.2f} to {judged_now[0]:.2f}")
    recent = {w["week"] for w in now}
    windows_now = [d for d in drift if d["week"] in recent]
    windows_before = [d for d in drift if d["week"] not in recent and d["week"] < min(recent)]
    if windows_now:
        share_now = sum(d["share"] for d in windows_now) / len(windows_now)
        share_before = (
            sum(d["share"] for d in windows_before) / len(windows_before) if windows_before else None
        )
        alarms = [d["week"] for d in windows_now if d["alarm"]]
        risen = share_before is not None and share_now - share_before >= limits.drift_rise
        if alarms or risen:
            since = f"from {_pct(share_before)} " if share_before is not None else ""
            alarm_words = f", alarm in {len(alarms)} of {len(windows_now)} recent weeks" if alarms else ""
            moved.insert(0, f"the share of traffic beyond τ rose {since}to {_pct(share_now)}{alarm_words}")
    return {"moved": moved, "drift_measured": bool(windows_now)}


def _rose(k0: int, n0: int, k1: int, n1: int, limits: Limits) -> bool:
    if not n0 or not n1:
        return False
    p0, p1 = k0 / n0, k1 / n1
    pooled = (k0 + k1) / (n0 + n1)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    return p1 - p0 >= limits.rate_rise and (se == 0 or (p1 - p0) / se >= limits.z)


def _judge_mean(weeks: list[dict]) -> tuple[float, int]:
    n = sum(w["judge_n"] for w in weeks)
    total = sum(w["judge_mean"] * w["judge_n"] for w in weeks if w["judge_n"])
    return (total / n if n else math.nan), n


def _pct(value: float | None) -> str:
    # One decimal below 10% (4.1% against 7.9% matters), whole points above; rounded first so that a
    # mean of 0.1 held as 0.0999... reads 10%.
    return "–" if value is None else f"{value:.1%}" if round(value, 4) < 0.1 else f"{value:.0%}"


# What the health verdict reads -------------------------------------------------------------------------


def suite_points(db: Database, system: str) -> list[dict]:
    """Each run of ``system``: its week, version and pass rate over that version's active rows (a row
    passes a run when most of its repeats pass), with the Wilson interval; oldest first."""
    runs = query_rows(
        db,
        "SELECT r.id, r.version, v.eval_set, coalesce(r.ran_at, r.imported_at) AS at FROM eval_runs r"
        " JOIN eval_versions v ON v.version = r.version WHERE r.system = ?"
        " ORDER BY coalesce(r.ran_at, r.imported_at), r.id",
        [system],
    )
    points = []
    for run in runs:
        active = {r for r, s in version_members(db, run["version"]).items() if s == "active"}
        graded = db.execute(
            "SELECT row_id, sum(passed = 1) * 2 > count(passed) FROM eval_results"
            " WHERE run_id = ? AND passed IS NOT NULL GROUP BY row_id",
            [run["id"]],
        ).fetchall()
        results = [bool(p) for row, p in graded if row in active]
        n, passed = len(results), sum(results)
        low, high = wilson(passed, n, no_data=NO_TRIALS)
        points.append(
            {
                "week": iso_week(run["at"][:10]),
                "at": run["at"],
                "run": run["id"],
                "version": run["version"],
                "eval_set": run["eval_set"],
                "n": n,
                "passed": passed,
                "rate": passed / n if n else None,
                "low": low,
                "high": high,
            }
        )
    return points


def production_weeks(db: Database) -> list[dict]:
    """Per ISO week of production traffic: traces, thumbs-down and escalation counts (signal rollup) and
    the judged traces' count and mean score."""
    counts = signal_counts(db, "week")
    keys = {name: f"s{i}" for i, name in enumerate(RATE_SIGNALS)}
    judge = cached(db, "judge_by_week", lambda: _judge_by_week(db))
    return [
        {
            "week": row["period"],
            "n": row["n"],
            "thumbs_down": row[keys["thumbs down"]],
            "escalated": row[keys["escalated"]],
            "judge_n": judge.get(row["period"], (0, None))[0],
            "judge_mean": judge.get(row["period"], (0, None))[1],
        }
        for row in counts
        if row["cohort"] == SIGNALS_ALL
    ]


def _judge_by_week(db: Database) -> dict[str, tuple[int, float | None]]:
    sql = "SELECT week, count(judge_score), avg(judge_score) FROM traces GROUP BY week"
    return {week: (n, mean) for week, n, mean in db.execute(sql)}


def drift_points(db: Database) -> list[dict]:
    """The latest measurement of each drift window: week, share beyond τ with its interval, alarm."""
    return [
        {
            "week": w["window"],
            "share": w["share_beyond"],
            "low": w["share_lo"],
            "high": w["share_hi"],
            "alarm": bool(w["alarm"]),
            "n": w["n"],
            "version": w["eval_version"],
        }
        for w in drift_series(db)
        if w["share_beyond"] is not None
    ]


def flywheel_health(db: Database, limits: Limits = Limits()) -> dict:
    """The lead's one screen: the pass rate of the live system (the newest system run, until a release
    ships one) on the eval set refreshed from production (the one drift reads), production weeks, drift
    windows, the verdict on whether they diverge; ``other_sets``: the live system's runs on every other
    set (a frozen regression set, say), by set, for the page to show beside it."""
    version, live = current_version(db), live_system(db)
    system = live["system"] if live else _newest_system(db)
    points = suite_points(db, system) if system else []
    eval_set = version_set(db, version) if version is not None else None
    weeks, drift = production_weeks(db), drift_points(db)
    suite = [p for p in points if p["eval_set"] == eval_set]
    others: dict[str, list[dict]] = {}
    for point in points:
        if point["eval_set"] != eval_set:
            others.setdefault(point["eval_set"], []).append(point)
    return {
        "version": version,
        "eval_set": eval_set,
        "system": system,
        "live": live,
        "suite": suite,
        "other_sets": others,
        "weeks": weeks,
        "drift": drift,
        "verdict": divergence(version, suite, weeks, drift, limits),
    }


def _newest_system(db: Database) -> str | None:
    row = query_one(db, "SELECT system FROM eval_runs ORDER BY coalesce(ran_at, imported_at) DESC, id DESC")
    return row["system"] if row else None


# Each station's backlog ------------------------------------------------------------------------------


def station_backlog(db: Database, now: datetime | None = None, *, retire_months: int) -> list[dict]:
    """What waits at each station, how long the oldest has waited, and the page that resolves it."""
    moment = now or now_utc()
    one = lambda sql: tuple(db.execute(sql).fetchone())  # noqa: E731
    review = one("SELECT count(*), min(created_at) FROM scrubs WHERE status = 'pending'")
    labels = one(
        "SELECT count(*), min(s.reviewed_at) FROM label_queue q JOIN scrubs s ON s.id = q.scrub_id"
        " WHERE q.is_open = 1"
    )
    preview = fold_preview(db)
    traces = [i.trace_id for i in preview.foldable if i.action in ("add", "change") and i.trace_id]
    folds = (len(traces), _oldest_label(db, traces))
    proposals = retirement_proposals(db, now=moment, months=retire_months)
    retire = (len(proposals), min((p["passing_since"] for p in proposals), default=None))
    rows = [
        ("Traces awaiting scrub review", review, "pages/review.py", "Review scrubs", "oldest scrub made"),
        ("Approved scrubs awaiting labels", labels, "pages/label.py", "Label", "oldest approval"),
        ("Labeled failures awaiting fold-in", folds, "pages/evalsets.py", "Eval sets", "oldest label"),
        ("Rows proposed for retirement", retire, "pages/evalsets.py", "Eval sets", "passing since"),
    ]
    return [
        {
            "station": name,
            "waiting": n,
            "oldest": oldest if n else None,
            "age_days": _age(oldest, moment) if n else None,
            "page": page,
            "page_title": title,
            "oldest_means": means,
        }
        for name, (n, oldest), page, title, means in rows
    ]


def _oldest_label(db: Database, trace_ids: list[str]) -> str | None:
    if not trace_ids:
        return None
    marks = ",".join("?" * len(trace_ids))
    sql = f"SELECT min(created_at) FROM labels WHERE undone_at IS NULL AND trace_id IN ({marks})"
    return db.execute(sql, trace_ids).fetchone()[0]


def _age(stamp: str | None, moment: datetime) -> float | None:
    if not stamp:
        return None
    then = parse_ts(stamp)
    return max(0.0, (moment - then).total_seconds() / 86400)


def last_cycle(db: Database) -> dict | None:
    """The newest weekly cycle: when, its week, status and what needs attention."""
    found = cycles(db, limit=1)
    if not found:
        return None
    row = found[0]
    report = row["report"] or {}
    return {
        "started_at": row["started_at"],
        "status": row["status"],
        "week": row["week"],
        "needs_attention": bool(row["needs_attention"]),
        "attention": report.get("attention", []),
    }


def last_gate(db: Database) -> dict | None:
    """The newest recorded release decision, with the criteria it failed."""
    found = release_decisions(db, limit=1)
    if not found:
        return None
    row = found[0]
    failed = [c["name"] for c in row["criteria"] if isinstance(c, dict) and not c.get("ok", True)]
    return {
        k: row[k] for k in ("version", "baseline", "challenger", "verdict", "decided_at", "decided_by")
    } | {"failed": failed}


def queue_for(db: Database, user: User, now: datetime | None = None) -> dict:
    """A labeler's (or reviewer's) own view: traces open for labeling, and their labels, all and recent."""
    require_role(user, *LABEL_ROLES)
    since = stamp((now or now_utc()) - timedelta(days=7))
    one = lambda sql, *params: db.execute(sql, params).fetchone()[0]  # noqa: E731
    mine = "SELECT count(*) FROM labels WHERE labeler = ? AND undone_at IS NULL"
    return {
        "open": one("SELECT count(*) FROM label_queue WHERE is_open = 1"),
        "mine": one(mine, user.name),
        "mine_week": one(mine + " AND created_at >= ?", user.name, since),
    }
