"""Live signal rates per day or week and cohort, with alerts when a rate leaves its control band.

Implicit signals move before scores do. For each period, cohort (and all traffic), the rates of
regenerations/retries, thumbs down, escalations, guardrail trips and schema failures are compared
with a binomial control band of the trailing periods: the pooled rate p of the trailing window,
p ± 3·sqrt(p(1-p)/n) for the current period's n. The p95 latency and the mean cost per trace have
no binomial model: their band is the trailing periods' mean ± 3 standard deviations (a Shewhart
individuals chart). The judge's fail rate joins the signals only once the judge is calibrated.
"""

from __future__ import annotations

import math
from statistics import mean, stdev

import pandas as pd
from sqlite_utils import Database

from flywheel.errors import BadInput
from flywheel.store import query_rows

RATE_SIGNALS = {
    "regenerated or retried": "(regenerated = 1 OR retried = 1)",
    "thumbs down": "thumbs = 'down'",
    "escalated": "escalated = 1",
    "guardrail tripped": "guardrail_tripped = 1",
    "schema failure": "schema_valid = 0",
}
VALUE_SIGNALS = ("p95 latency ms", "cost per trace usd")
PERIODS = {"week": "week", "day": "substr(ts, 1, 10)"}
ALL = "(all)"


def _period(period: str) -> str:
    if period not in PERIODS:
        raise BadInput(f"period {period!r}: expected one of {', '.join(PERIODS)}")
    return PERIODS[period]


def signal_counts(db: Database, period: str = "week", last: int | None = None) -> list[dict]:
    """Per period and cohort (and ``(all)``): traces, events per rate signal, p95 latency, mean cost;
    only the ``last`` periods when given (read through the week/ts indexes)."""
    p = _period(period)
    where, params = _recent(db, period, last)
    sums = ", ".join(
        f"sum(CASE WHEN {sql} THEN 1 ELSE 0 END) AS s{i}" for i, sql in enumerate(RATE_SIGNALS.values())
    )
    rows = []
    for cohort in (f"'{ALL}'", "coalesce(cohort, '(none)')"):
        rows += query_rows(
            db,
            f"SELECT {p} AS period, {cohort} AS cohort, count(*) AS n, {sums}, avg(cost_usd) AS cost"
            f" FROM traces {where} GROUP BY 1, 2 ORDER BY 1, 2",
            params,
        )
    p95 = _p95_latency(db, p, where, params)
    for row in rows:
        row["p95"] = p95.get((row["period"], row["cohort"]))
    return rows


def _recent(db: Database, period: str, last: int | None) -> tuple[str, list]:
    if last is None:
        return "", []
    if period == "week":
        weeks = [
            r[0] for r in db.execute("SELECT DISTINCT week FROM traces ORDER BY week DESC LIMIT ?", [last])
        ]
        return ("WHERE week >= ?", [weeks[-1]]) if weeks else ("", [])
    latest = db.execute("SELECT max(ts) FROM traces").fetchone()[0]
    if latest is None:
        return "", []
    return "WHERE ts >= date(?, ?)", [latest[:10], f"-{last - 1} days"]


def _p95_latency(db: Database, p: str, where: str = "", params: list = ()) -> dict[tuple[str, str], float]:
    """Nearest-rank p95 of latency per period and cohort, and per period over all cohorts."""
    out = {}
    known = "WHERE latency_ms IS NOT NULL" + (f" AND {where.removeprefix('WHERE ')}" if where else "")
    for cohort in (f"'{ALL}'", "coalesce(cohort, '(none)')"):
        sql = f"""SELECT period, cohort, latency_ms FROM (
                SELECT {p} AS period, {cohort} AS cohort, latency_ms,
                       row_number() OVER (PARTITION BY {p}, {cohort} ORDER BY latency_ms) AS rank,
                       count(*) OVER (PARTITION BY {p}, {cohort}) AS total
                FROM traces {known})
              WHERE rank = (95 * total + 99) / 100"""
        out.update({(period, c): value for period, c, value in db.execute(sql, list(params))})
    return out


def binomial_band(history: list[tuple[int, int]], n: int, sigmas: float = 3.0) -> tuple[float, float, float]:
    """Centre and control limits for a rate with ``n`` trials, from (events, trials) of earlier periods."""
    events, trials = sum(x for x, _ in history), sum(t for _, t in history)
    if trials == 0 or n == 0:
        return math.nan, math.nan, math.nan
    p = events / trials
    half = sigmas * math.sqrt(p * (1 - p) / n)
    return p, max(0.0, p - half), min(1.0, p + half)


def individuals_band(history: list[float], sigmas: float = 3.0) -> tuple[float, float, float]:
    """Centre and limits of a continuous measure: the trailing mean ± ``sigmas`` standard deviations."""
    values = [v for v in history if v is not None]
    if len(values) < 2:
        return math.nan, math.nan, math.nan
    centre, spread = mean(values), stdev(values)
    return centre, max(0.0, centre - sigmas * spread), centre + sigmas * spread


def signal_series(
    db: Database,
    period: str = "week",
    trailing: int = 8,
    min_history: int = 4,
    sigmas: float = 3.0,
    last: int | None = None,
) -> pd.DataFrame:
    """Every period (or the ``last`` ones), cohort and signal with its value, control band (from the
    ``trailing`` periods before it, once ``min_history`` exist) and whether it is outside the band."""
    rows = signal_counts(db, period, last) + _judge_counts(db, period)
    by_cohort: dict[tuple[str, bool], list[dict]] = {}
    for row in rows:
        by_cohort.setdefault((row["cohort"], "judge" in row), []).append(row)
    out = []
    for (cohort, _), series in by_cohort.items():
        series.sort(key=lambda r: r["period"])
        for i, row in enumerate(series):
            history = series[max(0, i - trailing) : i]
            enough = len(history) >= min_history
            out += _points(row, history, cohort, enough, sigmas)
    columns = ["period", "cohort", "signal", "value", "n", "centre", "low", "high", "alert", "direction"]
    return pd.DataFrame(out, columns=columns)


def _points(row: dict, history: list[dict], cohort: str, enough: bool, sigmas: float) -> list[dict]:
    points = []
    names = [*RATE_SIGNALS, "judge fail"] if "judge" in row else list(RATE_SIGNALS)
    for i, name in enumerate(names):
        key = "judge" if name == "judge fail" else f"s{i}"
        if key not in row:
            continue
        past = [(h[key], h["n"]) for h in history if key in h]
        band = binomial_band(past, row["n"], sigmas) if enough else (math.nan,) * 3
        points.append(_point(row, cohort, name, row[key] / row["n"] if row["n"] else math.nan, band))
    if "judge" not in row:
        for name, key in zip(VALUE_SIGNALS, ("p95", "cost"), strict=True):
            band = individuals_band([h[key] for h in history], sigmas) if enough else (math.nan,) * 3
            if row[key] is not None:
                points.append(_point(row, cohort, name, row[key], band))
    return points


def _point(row: dict, cohort: str, name: str, value: float, band: tuple[float, float, float]) -> dict:
    centre, low, high = band
    direction = "above" if value > high else "below" if value < low else None
    return {
        "period": row["period"],
        "cohort": cohort,
        "signal": name,
        "value": value,
        "n": row["n"],
        "centre": centre,
        "low": low,
        "high": high,
        "alert": direction is not None,
        "direction": direction,
    }


def _judge_counts(db: Database, period: str) -> list[dict]:
    """Judge fail counts per period and cohort, only while the judge is trusted."""
    from flywheel.calibration import judge_trusted
    from flywheel.rubrics import rubric

    trusted, _ = judge_trusted(db)
    if not trusted:
        return []
    p = "t.week" if _period(period) == "week" else "substr(t.ts, 1, 10)"
    rows = []
    for cohort in (f"'{ALL}'", "coalesce(t.cohort, '(none)')"):
        rows += query_rows(
            db,
            f"""SELECT {p} AS period, {cohort} AS cohort,
                   count(*) AS n, sum(j.verdict = 'fail') AS judge
                FROM judgments j JOIN traces t ON t.trace_id = j.subject_id
                WHERE j.rubric_id = ? AND j.subject_kind = 'trace' AND j.status = 'ok' GROUP BY 1, 2""",
            [rubric(db).id],
        )
    return rows


def current_alerts(db: Database, period: str = "week", periods: int = 1, **band: object) -> list[dict]:
    """The signals outside their band in the latest ``periods`` periods, newest and worst first."""
    trailing = int(band.get("trailing", 8))
    series = signal_series(db, period, **band, last=trailing + periods)
    if series.empty:
        return []
    recent = sorted(series["period"].unique())[-periods:]
    alerts = series[series["period"].isin(recent) & series["alert"]].copy()
    alerts["distance"] = (alerts["value"] - alerts["centre"]).abs() / (
        alerts["high"] - alerts["centre"]
    ).where(lambda s: s > 0)
    alerts = alerts.sort_values(["period", "distance", "signal"], ascending=[False, False, True])
    return alerts.drop(columns=["distance", "alert"]).to_dict("records")
