"""Online experiments: A/B and canary comparisons of releases, the sample-size planner, shadow preference.

Traces carry their release or variant in a ``metadata`` key the lead names (``release``, ``variant``).
Per arm, each signal rate (and the judge's fail rate where the judge graded the arm) gets a Wilson
interval; two arms are compared with the two-proportion z-test, and a comparison whose arms are
smaller than the planner says the lead's minimum effect needs is refused rather than called.

A shadow system's reply (in another metadata key) is judged pairwise against production, each pair
in both orders, so a judge that always prefers the first answer scores 0.5, not 1.0. That measures
what the judge prefers; where users left signals on the same traces, the page shows how often the
judge's preference agrees with them.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from sqlite_utils import Database

from flywheel.errors import BadInput
from flywheel.judge import json_path, metadata_key
from flywheel.rollups import advance_watermark, cached, pending_rowids
from flywheel.signal_alerts import RATE_SIGNALS, SUMS, signal_definition
from flywheel.stats import NO_TRIALS, wilson
from flywheel.store import query_rows

NORMAL = NormalDist()
LOWER_IS_BETTER = True  # every rate compared here counts something going wrong
ARM_KEY = "release"  # the metadata key the Online page compares arms by until the lead names another


def two_proportion_test(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> dict:
    """Two-sided z-test of p2 - p1 (pooled standard error) with an unpooled interval of the difference."""
    if n1 <= 0 or n2 <= 0 or not 0 <= x1 <= n1 or not 0 <= x2 <= n2:
        raise BadInput(f"two-proportion test of {x1}/{n1} and {x2}/{n2}: expected 0 <= x <= n and n > 0")
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (p2 - p1) / se_pooled if se_pooled else 0.0
    p_value = 2 * (1 - NORMAL.cdf(abs(z)))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    margin = NORMAL.inv_cdf(0.5 + confidence / 2) * se
    return {
        "p1": p1,
        "p2": p2,
        "diff": p2 - p1,
        "z": z,
        "p_value": p_value,
        "low": p2 - p1 - margin,
        "high": p2 - p1 + margin,
    }


def sample_size_per_arm(baseline: float, min_effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Traces per arm to detect ``baseline`` -> ``baseline + min_effect`` with a two-sided test
    (the textbook normal-approximation formula without continuity correction, Fleiss 1981)."""
    _check(0 <= baseline < 1, f"baseline rate {baseline!r}: expected 0 <= rate < 1")
    _check(
        min_effect != 0 and 0 <= baseline + min_effect <= 1,
        f"minimum effect {min_effect!r}: out of range",
    )
    _check(0 < alpha < 1, f"alpha {alpha!r}: expected 0 < alpha < 1")
    _check(0 < power < 1, f"power {power!r}: expected 0 < power < 1")
    p1, p2 = baseline, baseline + min_effect
    mean = (p1 + p2) / 2
    z_alpha, z_beta = NORMAL.inv_cdf(1 - alpha / 2), NORMAL.inv_cdf(power)
    root = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root * root / (min_effect * min_effect))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise BadInput(message)


def plan_test(
    baseline: float,
    min_effect: float,
    alpha: float,
    power: float,
    daily_traffic: float,
    arm_share: float = 0.5,
) -> dict:
    """The planner: traces per arm and days at the current traffic when each arm gets ``arm_share`` of it."""
    _check(0 < arm_share <= 0.5, f"arm share {arm_share!r}: expected 0 < share <= 0.5")
    per_arm = sample_size_per_arm(baseline, min_effect, alpha, power)
    per_day = daily_traffic * arm_share
    days = math.ceil(per_arm / per_day) if per_day > 0 else None
    return {"per_arm": per_arm, "total": 2 * per_arm, "days": days, "arm_traffic_per_day": per_day}


def daily_traffic(db: Database, days: int = 28) -> float:
    """Mean traces per day over the last ``days`` days of data."""
    sql = (
        "SELECT count(*), min(ts), max(ts) FROM traces WHERE ts >= ("
        " SELECT strftime('%Y-%m-%dT%H:%M:%fZ', max(ts), ?) FROM traces)"
    )
    row = cached(db, f"daily_traffic:{days}", lambda: db.execute(sql, [f"-{days} days"]).fetchone())
    if not row[0]:
        return 0.0
    return row[0] / days


# Arms --------------------------------------------------------------------------------------------


def _window(key: str, weeks: tuple[str, ...] = (), hours: int | None = None) -> tuple[str, list]:
    clauses, params = ["json_extract(metadata, ?) IS NOT NULL"], [json_path(metadata_key(key))]
    if weeks:
        clauses.append(f"week IN ({','.join('?' * len(weeks))})")
        params += list(weeks)
    if hours is not None:
        _check(isinstance(hours, int) and hours > 0, f"hours {hours!r}: expected a positive integer")
        clauses.append("ts >= (SELECT strftime('%Y-%m-%dT%H:%M:%fZ', max(ts), ?) FROM traces)")
        params.append(f"-{hours} hours")
    return " AND ".join(clauses), params


def arm_values(db: Database, key: str, hours: int | None = None) -> list[dict]:
    """The values a metadata key takes (in the last ``hours`` when given), with how many traces carry
    each, most common first."""
    if hours is None:
        path = _refresh_arms(db, key)
        return query_rows(
            db,
            "SELECT arm, sum(n) AS traces, min(week) AS first_week, max(week) AS last_week FROM arm_rollup"
            " WHERE key = ? GROUP BY arm ORDER BY traces DESC, arm",
            [path],
        )
    where, params = _window(key, hours=hours)
    sql = (
        f"SELECT CAST(json_extract(metadata, ?) AS TEXT) AS arm, count(*) AS traces, min(week) AS first_week,"
        f" max(week) AS last_week FROM traces WHERE {where} GROUP BY arm ORDER BY traces DESC, arm"
    )
    # the last hours of data change only when traces arrive: kept per data version
    return cached(db, f"arm_values:{params}", lambda: query_rows(db, sql, [params[0], *params]))


def arm_rates(
    db: Database,
    key: str,
    arms: tuple[str, ...],
    weeks: tuple[str, ...] = (),
    hours: int | None = None,
    rubric_id: int | None = None,
) -> list[dict]:
    """Per arm and metric: trials, events, rate and Wilson interval (long format)."""
    where, params = _window(key, weeks, hours)
    arm_sql = "CAST(json_extract(metadata, ?) AS TEXT)"
    marks = ",".join("?" * len(arms))
    if hours is None:  # whole weeks: the arm rollup
        path = _refresh_arms(db, key)
        in_weeks = f" AND week IN ({','.join('?' * len(weeks))})" if weeks else ""
        sums = ", ".join(f"sum({name})" for name in SUMS)
        rows = db.execute(
            f"SELECT arm, sum(n), {sums} FROM arm_rollup WHERE key = ? AND arm IN ({marks}){in_weeks}"
            " GROUP BY arm",
            [path, *arms, *weeks],
        ).fetchall()
    else:
        sums = ", ".join(f"sum(CASE WHEN {sql} THEN 1 ELSE 0 END)" for sql in RATE_SIGNALS.values())
        sql = (
            f"SELECT {arm_sql} AS arm, count(*), {sums} FROM traces WHERE {where} AND {arm_sql} IN ({marks})"
            " GROUP BY arm"
        )
        values = [params[0], *params, params[0], *arms]
        rows = cached(db, f"arm_rates:{values}", lambda: db.execute(sql, values).fetchall())
    out = []
    for arm, n, *counts in rows:
        out += [_rate(arm, name, x, n) for name, x in zip(RATE_SIGNALS, counts, strict=True)]
    if rubric_id is not None:  # judged traces are few: walk the judgments, look each trace up
        judged = db.execute(
            f"SELECT {arm_sql} AS arm, count(*), sum(j.verdict = 'fail') FROM judgments j CROSS JOIN traces t"
            " ON t.trace_id = j.subject_id WHERE j.subject_kind = 'trace' AND j.status = 'ok'"
            f" AND j.rubric_id = ? AND {where} AND {arm_sql} IN ({marks}) GROUP BY arm",
            [params[0], rubric_id, *params, params[0], *arms],
        ).fetchall()
        out += [_rate(arm, "judge fail", x, n) for arm, n, x in judged]
    return sorted(out, key=lambda r: (arms.index(r["arm"]), r["metric"]))


def _refresh_arms(db: Database, key: str) -> str:
    """Bring the arm rollup of ``key`` up to the newest trace (counts only add up: traces are appended);
    return the key's JSON path, under which its rows are kept."""
    path = json_path(metadata_key(key))
    name = f"arms:{path}"
    start, upto = pending_rowids(db, name, _ARMS_DEFINITION)
    if start >= upto:
        return path
    sums = ", ".join(f"sum(CASE WHEN {sql} THEN 1 ELSE 0 END)" for sql in RATE_SIGNALS.values())
    rows = db.execute(
        f"SELECT ?, CAST(json_extract(metadata, ?) AS TEXT) AS arm, week, count(*), {sums} FROM traces"
        " WHERE rowid > ? AND rowid <= ? AND json_extract(metadata, ?) IS NOT NULL GROUP BY arm, week",
        [path, path, start, upto, path],
    ).fetchall()

    def apply() -> None:
        if start == 0:
            db.execute("DELETE FROM arm_rollup WHERE key = ?", [path])
        adds = ", ".join(f"{name} = {name} + excluded.{name}" for name in ("n", *SUMS))
        db.conn.executemany(
            f"INSERT INTO arm_rollup (key, arm, week, n, {', '.join(SUMS)})"
            f" VALUES ({', '.join('?' * (4 + len(SUMS)))})"
            f" ON CONFLICT (key, arm, week) DO UPDATE SET {adds}",
            rows,
        )

    advance_watermark(db, name, _ARMS_DEFINITION, start, upto, apply)
    return path


_ARMS_DEFINITION = signal_definition()


def _rate(arm: str, metric: str, x: int, n: int) -> dict:
    low, high = wilson(x, n, no_data=NO_TRIALS)
    return {
        "arm": arm,
        "metric": metric,
        "n": n,
        "events": x,
        "rate": x / n if n else math.nan,
        "low": low,
        "high": high,
    }


def compare_arms(
    db: Database,
    key: str,
    control: str,
    treatment: str,
    weeks: tuple[str, ...] = (),
    min_effect: float = 0.02,
    alpha: float = 0.05,
    power: float = 0.8,
    rubric_id: int | None = None,
    hours: int | None = None,
) -> list[dict]:
    """Per metric: both arms' rates, the difference with its interval and p-value, and a verdict that
    refuses to call a test whose arms are smaller than the planner requires."""
    _check(control != treatment, f"control and treatment are both {control!r}; pick two different arms")
    rates = arm_rates(db, key, (control, treatment), weeks, hours, rubric_id)
    by = {(r["arm"], r["metric"]): r for r in rates}
    out = []
    for metric in dict.fromkeys(r["metric"] for r in rates):
        c, t = by.get((control, metric)), by.get((treatment, metric))
        if c is None or t is None or not c["n"] or not t["n"]:
            continue
        out.append(_compare(metric, c, t, min_effect, alpha, power))
    return out


def _compare(metric: str, c: dict, t: dict, min_effect: float, alpha: float, power: float) -> dict:
    test = two_proportion_test(c["events"], c["n"], t["events"], t["n"], 1 - alpha)
    baseline = min(c["rate"], 1 - min_effect)
    needed = sample_size_per_arm(baseline, min_effect, alpha, power)
    if min(c["n"], t["n"]) < needed:
        smaller = min(c["n"], t["n"])
        verdict = (
            f"under-powered: needs {needed:,} traces per arm to detect {min_effect:.1%}, has {smaller:,}"
        )
    elif test["p_value"] >= alpha:
        verdict = "no significant difference"
    else:
        verdict = "treatment worse" if test["diff"] > 0 else "treatment better"
    return {
        "metric": metric,
        "control_rate": c["rate"],
        "control_n": c["n"],
        "treatment_rate": t["rate"],
        "treatment_n": t["n"],
        "diff": test["diff"],
        "diff_low": test["low"],
        "diff_high": test["high"],
        "p_value": test["p_value"],
        "needed_per_arm": needed,
        "verdict": verdict,
    }


def canary_alarms(
    db: Database, key: str, control: str, canary: str, hours: int = 72, rubric_id: int | None = None
) -> list[dict]:
    """Over the last ``hours``: every rate where the canary is worse than the control arm beyond its
    interval (the canary's whole Wilson interval above the control's rate), so a handful of canary
    traces cannot raise an alarm on their own."""
    _check(24 <= hours <= 24 * 14, f"canary window {hours!r} hours: expected 24..336")
    rates = arm_rates(db, key, (control, canary), hours=hours, rubric_id=rubric_id)
    by = {(r["arm"], r["metric"]): r for r in rates}
    alarms = []
    for metric in dict.fromkeys(r["metric"] for r in rates):
        c, k = by.get((control, metric)), by.get((canary, metric))
        if c and k and c["n"] and k["n"] and k["low"] > c["rate"]:
            test = two_proportion_test(c["events"], c["n"], k["events"], k["n"])
            alarms.append(
                {
                    "metric": metric,
                    "control_rate": c["rate"],
                    "control_n": c["n"],
                    "canary_rate": k["rate"],
                    "canary_low": k["low"],
                    "canary_high": k["high"],
                    "canary_n": k["n"],
                    "p_value": test["p_value"],
                }
            )
    return alarms


# Shadow ------------------------------------------------------------------------------------------


def shadow_preference(db: Database, key: str, rubric_id: int) -> dict:
    """The judge's preference for the shadow reply over production: per trace the mean over both orders
    (shadow 1, tie 0.5, production 0), its mean over traces with a 95% interval, and agreement with users."""
    rows = db.execute(
        """SELECT j.subject_id, avg(j.score), count(*), t.thumbs, t.regenerated FROM judgments j
           JOIN traces t ON t.trace_id = j.subject_id
           WHERE j.rubric_id = ? AND j.subject_kind = ? AND j.status = 'ok'
           GROUP BY j.subject_id HAVING count(*) = 2""",
        [rubric_id, f"shadow:{metadata_key(key)}"],
    ).fetchall()
    values = [score for _, score, _, _, _ in rows]
    n = len(values)
    result = {"pairs": n, "rate": math.nan, "low": math.nan, "high": math.nan}
    if n:
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        margin = 1.96 * sd / math.sqrt(n)
        result.update(rate=mean, low=max(0.0, mean - margin), high=min(1.0, mean + margin))
    result["shadow_preferred"] = sum(v > 0.5 for v in values)
    result["production_preferred"] = sum(v < 0.5 for v in values)
    result["even"] = sum(v == 0.5 for v in values)
    result.update(_user_agreement(rows))
    return result


def _user_agreement(rows: list[tuple]) -> dict:
    """How often a decisive judge preference matches what the user's signals say about production."""
    checked = agreed = 0
    for _, score, _, thumbs, regenerated in rows:
        if score == 0.5:
            continue
        if thumbs == "down" or regenerated:
            user_prefers_shadow = True
        elif thumbs == "up":
            user_prefers_shadow = False
        else:
            continue
        checked += 1
        agreed += (score > 0.5) == user_prefers_shadow
    low, high = wilson(agreed, checked, no_data=NO_TRIALS)
    return {
        "with_user_signal": checked,
        "agree_with_users": agreed / checked if checked else math.nan,
        "agree_low": low,
        "agree_high": high,
    }
