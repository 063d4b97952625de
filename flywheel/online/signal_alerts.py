"""Live signal rates per day or week and cohort, with alerts when a rate leaves its control band.

Implicit signals move before scores do. For each period, cohort (and all traffic), the rates of
regenerations/retries, thumbs down, escalations, guardrail trips and schema failures are compared
with a binomial control band of the trailing periods: the pooled rate p of the trailing window,
p ± 3·sqrt(p(1-p)/n) for the current period's n. The p95 latency and the mean cost per trace have
no binomial model: their band is the trailing periods' mean ± 3 standard deviations (a Shewhart
individuals chart). The judge's fail rate joins the signals only once the judge is calibrated.
"""

from __future__ import annotations

import hashlib
import math
from statistics import mean, stdev

import numpy as np
import pandas as pd
from sqlite_utils import Database

from flywheel.errors import BadInput
from flywheel.online.calibration import judge_trusted
from flywheel.online.rubrics import rubric
from flywheel.store.db import query_rows
from flywheel.traces.rollups import advance_watermark, cached, pending_rowids
from flywheel.traces.signals import Declared, declared_signals, signal_presence

RATE_SIGNALS = {
    "regenerated or retried": "(regenerated = 1 OR retried = 1)",
    "thumbs down": "thumbs = 'down'",
    "escalated": "escalated = 1",
    "guardrail tripped": "guardrail_tripped = 1",
    "schema failure": "schema_valid = 0",
}
VALUE_SIGNALS = ("p95 latency ms", "cost per trace usd")
SUMS = tuple(f"s{i}" for i in range(len(RATE_SIGNALS)))  # events per rate signal, in its order
STAT_COLUMNS = ("period", "cohort", "n", *SUMS, "cost", "p95")
PERIODS = {"week": "week", "day": "substr(ts, 1, 10)"}
ALL = "(all)"


def _period(period: str) -> str:
    if period not in PERIODS:
        raise BadInput(f"period {period!r}: expected one of {', '.join(PERIODS)}")
    return PERIODS[period]


def signal_counts(db: Database, period: str = "week", last: int | None = None) -> list[dict]:
    """Per period and cohort (and ``(all)``): traces, events per rate signal, p95 latency, mean cost;
    only the ``last`` periods when given. Read from ``signal_rollup``, brought up to date first."""
    refresh_signal_rollup(db, period)
    where, params = "WHERE kind = ?", [period]
    if last is not None:
        periods = [
            r[0]
            for r in db.execute(
                "SELECT DISTINCT period FROM signal_rollup WHERE kind = ? ORDER BY period DESC LIMIT ?",
                [period, last],
            )
        ]
        if periods:
            where, params = where + " AND period >= ?", [period, periods[-1]]
    return query_rows(
        db,
        f"SELECT {', '.join(STAT_COLUMNS)} FROM signal_rollup {where} ORDER BY period, cohort",
        params,
    )


def signal_definition() -> str:
    """A hash of the rate signals' definitions: a rollup counted under other definitions is rebuilt."""
    text = "|".join(f"{name}={sql}" for name, sql in RATE_SIGNALS.items()) + "|p95 nearest rank|mean cost"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def refresh_signal_rollup(db: Database, period: str = "week") -> int:
    """Bring ``signal_rollup`` for ``period`` up to the newest trace; return how many periods were
    (re)computed.

    Traces are only appended: the periods the traces past the watermark fall in are recomputed whole
    (through the week or time index), the others are kept. The first refresh computes every period in
    one pass. As with the trace rollup, the work is done outside the write lock and applied only if no
    one else moved the watermark meanwhile.
    """
    p = _period(period)
    name, definition = f"signals:{period}", signal_definition()
    start, upto = pending_rowids(db, name, definition)
    if start >= upto:
        return 0
    if start == 0:
        touched, rows = None, _period_stats(db, p, "", [])
    else:
        new = f"SELECT DISTINCT {p} FROM traces WHERE rowid > ? AND rowid <= ?"
        touched = [r[0] for r in db.execute(new, [start, upto])]
        rows = []
        for value in touched:
            rows += _period_stats(db, p, *_one_period(period, value))

    def apply() -> None:
        if touched is None:
            db.execute("DELETE FROM signal_rollup WHERE kind = ?", [period])
        else:
            db.execute(
                f"DELETE FROM signal_rollup WHERE kind = ? AND period IN ({','.join('?' * len(touched))})",
                [period, *touched],
            )
        db.conn.executemany(
            f"INSERT INTO signal_rollup (kind, {', '.join(STAT_COLUMNS)})"
            f" VALUES (?, {', '.join('?' * len(STAT_COLUMNS))})",
            [(period, *(row[c] for c in STAT_COLUMNS)) for row in rows],
        )

    if not advance_watermark(db, name, definition, start, upto, apply):
        return 0
    return len({row["period"] for row in rows})


def _one_period(period: str, value: str) -> tuple[str, list]:
    """The WHERE clause that reads one period's traces through an index."""
    if period == "week":
        return "WHERE week = ?", [value]
    return "WHERE ts >= ? AND ts < date(?, '+1 day')", [value, value]


def _period_stats(db: Database, p: str, where: str, params: list) -> list[dict]:
    """Traces, rate-signal events, mean cost and nearest-rank p95 latency per period and cohort (and
    ``(all)``), from one pass over the traces."""
    flags = ", ".join(f"coalesce({sql}, 0)" for sql in RATE_SIGNALS.values())
    frame = pd.DataFrame(
        db.execute(
            f"SELECT {p}, coalesce(cohort, '(none)'), {flags}, latency_ms, cost_usd FROM traces {where}",
            params,
        ).fetchall(),
        columns=["period", "cohort", *SUMS, "latency", "cost"],
    )
    if frame.empty:
        return []
    frame[["latency", "cost"]] = frame[["latency", "cost"]].astype(float)
    rows = []
    for keys, group in (
        *frame.assign(cohort=ALL).groupby(["period", "cohort"], sort=True),
        *frame.groupby(["period", "cohort"], sort=True),
    ):
        latency, cost = group["latency"].dropna().to_numpy(), group["cost"].dropna()
        rows.append(
            {
                "period": keys[0],
                "cohort": keys[1],
                "n": len(group),
                **{name: int(group[name].sum()) for name in SUMS},
                "cost": float(cost.mean()) if len(cost) else None,
                "p95": _nearest_rank(latency, 95),
            }
        )
    return sorted(rows, key=lambda r: (r["period"], r["cohort"]))


def _nearest_rank(values: np.ndarray, percent: int) -> float | None:
    """The nearest-rank percentile: the smallest value with at least ``percent``% of values at or below."""
    if len(values) == 0:
        return None
    k = (percent * len(values) + 99) // 100 - 1
    return float(np.partition(values, k)[k])


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
    periods = sorted({row["period"] for row in rows})
    for (cohort, label), series in _declared_series(db, period).items():
        series = [r for r in series if not periods or r["period"] >= periods[0]]
        for i, row in enumerate(series):
            history = series[max(0, i - trailing) : i]
            past = [(h["x"], h["n"]) for h in history]
            band = binomial_band(past, row["n"], sigmas) if len(history) >= min_history else (math.nan,) * 3
            out.append(_point(row, cohort, label, row["x"] / row["n"], band))
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


def declared_counts(
    db: Database, period: str = "week", signals: tuple[Declared, ...] | None = None
) -> list[dict]:
    """Per period, cohort (and ``(all)``) and declared signal: traces, traces carrying a value and
    traces where it fires. Kept per data version (traces are only appended)."""
    p, signals = _period(period), declared_signals() if signals is None else signals
    if not signals:
        return []
    terms = ", ".join(
        f"count({s.value_sql()}), coalesce(sum(CASE WHEN {s.fires(s.value_sql())} THEN 1 ELSE 0 END), 0)"
        for s in signals
    )
    sql = f"SELECT {p}, coalesce(cohort, '(none)'), count(*), {terms} FROM traces GROUP BY 1, 2"
    key = f"declared_counts:{period}:" + "|".join(f"{s.name}={s.describe()}" for s in signals)
    rows = cached(db, key, lambda: db.execute(sql).fetchall())
    totals: dict[tuple, list] = {}
    for period_value, cohort, n, *counts in rows:
        for key_ in ((period_value, cohort), (period_value, ALL)):
            acc = totals.setdefault(key_, [0] * (1 + len(counts)))
            for i, value in enumerate((n, *counts)):
                acc[i] += value
    out = []
    for (period_value, cohort), (n, *counts) in sorted(totals.items()):
        for i, s in enumerate(signals):
            known, fired = counts[2 * i], counts[2 * i + 1]
            out.append(
                {
                    "period": period_value,
                    "cohort": cohort,
                    "signal": s.name,
                    "label": s.label,
                    "traces": n,
                    "known": known,
                    "fired": fired,
                    # events count over every trace (no value: no event), once the signal is logged at all
                    "n": (n if s.over_all_traces else known) if known else 0,
                }
            )
    return out


def declared_status(db: Database) -> list[dict]:
    """Each declared signal over all traffic: traces with data, traces where it fires, or "no data"."""

    signals = declared_signals()
    key = "declared_status:" + "|".join(f"{s.name}={s.describe()}" for s in signals)
    return cached(db, key, lambda: signal_presence(db, signals))


def _declared_series(db: Database, period: str) -> dict[tuple[str, str], list[dict]]:
    """Each declared signal's rate per cohort as a series of periods; a period without data is left
    out, so a missing signal is absent from the chart rather than drawn as zero."""
    series: dict[tuple[str, str], list[dict]] = {}
    for row in declared_counts(db, period):
        if row["n"]:
            series.setdefault((row["cohort"], row["label"]), []).append(
                {"period": row["period"], "n": row["n"], "x": row["fired"]}
            )
    return series


def _judge_counts(db: Database, period: str) -> list[dict]:
    """Judge fail counts per period and cohort, only while the judge is trusted."""

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


def current_alerts(
    db: Database,
    period: str = "week",
    periods: int = 1,
    *,
    trailing: int = 8,
    min_history: int = 4,
    sigmas: float = 3.0,
) -> list[dict]:
    """The signals outside their band in the latest ``periods`` periods, newest and worst first."""
    series = signal_series(db, period, trailing, min_history, sigmas, last=trailing + periods)
    if series.empty:
        return []
    recent = sorted(series["period"].unique())[-periods:]
    alerts = series[series["period"].isin(recent) & series["alert"]].copy()
    alerts["distance"] = (alerts["value"] - alerts["centre"]).abs() / (
        alerts["high"] - alerts["centre"]
    ).where(lambda s: s > 0)
    alerts = alerts.sort_values(["period", "distance", "signal"], ascending=[False, False, True])
    return alerts.drop(columns=["distance", "alert"]).to_dict("records")
