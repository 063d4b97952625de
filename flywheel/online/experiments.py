"""Online experiments: A/B and canary comparisons of releases, the sample-size planner, shadow preference.

Traces carry their release or variant in a ``metadata`` key the lead names (``release``, ``variant``).
Per arm, each signal rate (and the judge's fail rate where the judge graded the arm) gets a Wilson
interval. A verdict comes only from a declared experiment: before its data is read a lead fixes the
randomization unit, the planned split, the primary metric, the minimum duration and the test's
parameters. The verdict is withheld while the design does not hold in the data (a unit in both arms,
a sample-ratio mismatch, too few days) and is given on the primary metric only; the other rates are
secondary, their p-values Holm-corrected. A comparison whose arms are smaller than the planner says
the minimum effect needs is refused rather than called. Two arms with no declaration are described,
never called.

Arm values are raw metadata (a release name, a user id): only reviewers and leads read them.

A shadow system's reply (in another metadata key) is judged pairwise against production, each pair
in both orders, so a judge that always prefers the first answer scores 0.5, not 1.0. That measures
what the judge prefers; where users left signals on the same traces, the page shows how often the
judge's preference agrees with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from sqlite_utils import Database

from flywheel.auth import RAW_TEXT_ROLES, User, require_role
from flywheel.errors import BadInput, NotFound
from flywheel.online.judge import json_path, metadata_key
from flywheel.online.signal_alerts import RATE_SIGNALS, SUMS, signal_definition
from flywheel.stats import NO_TRIALS, wilson
from flywheel.store.audit import audit
from flywheel.store.clock import format_ts, now, parse_ts
from flywheel.store.db import query_one, query_rows, write
from flywheel.traces.rollups import advance_watermark, cached, pending_rowids
from flywheel.traces.signals import Declared, declared_signals

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


def arm_values(db: Database, user: User, key: str, hours: int | None = None) -> list[dict]:
    """The values a metadata key takes (in the last ``hours`` when given), with how many traces carry
    each, most common first; raw metadata, so reviewers and leads only."""
    require_role(user, *RAW_TEXT_ROLES)
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
    user: User,
    key: str,
    arms: tuple[str, ...],
    weeks: tuple[str, ...] = (),
    hours: int | None = None,
    rubric_id: int | None = None,
) -> list[dict]:
    """Per arm and metric: trials, events, rate and Wilson interval (long format). Answering for any
    value asked tells whether the value occurs, so this too is for reviewers and leads only."""
    require_role(user, *RAW_TEXT_ROLES)
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
    out += _declared_rates(db, where, params, arm_sql, arms)
    if rubric_id is not None:  # judged traces are few: walk the judgments, look each trace up
        judged = db.execute(
            f"SELECT {arm_sql} AS arm, count(*), sum(j.verdict = 'fail') FROM judgments j CROSS JOIN traces t"
            " ON t.trace_id = j.subject_id WHERE j.subject_kind = 'trace' AND j.status = 'ok'"
            f" AND j.rubric_id = ? AND {where} AND {arm_sql} IN ({marks}) GROUP BY arm",
            [params[0], rubric_id, *params, params[0], *arms],
        ).fetchall()
        out += [_rate(arm, "judge fail", x, n) for arm, n, x in judged]
    return sorted(out, key=lambda r: (arms.index(r["arm"]), r["metric"]))


def _trials_sql(signal: Declared) -> str:
    """Per trace, 1 when it is a trial of the signal: it carries a value, or any trace for an event."""
    return "1" if signal.over_all_traces else f"CASE WHEN {signal.value_sql()} IS NOT NULL THEN 1 ELSE 0 END"


def _declared_rates(
    db: Database, where: str, params: list, arm_sql: str, arms: tuple[str, ...]
) -> list[dict]:
    """Per arm, each declared signal's rate; a signal no trace of the arms carries is left out."""
    signals = declared_signals()
    if not signals:
        return []
    terms = ", ".join(
        f"sum({_trials_sql(s)}), count({s.value_sql()}),"
        f" sum(CASE WHEN {s.fires(s.value_sql())} THEN 1 ELSE 0 END)"
        for s in signals
    )
    marks = ",".join("?" * len(arms))
    sql = (
        f"SELECT {arm_sql} AS arm, {terms} FROM traces WHERE {where} AND {arm_sql} IN ({marks}) GROUP BY arm"
    )
    values = [params[0], *params, params[0], *arms]
    rows = cached(
        db,
        f"declared_rates:{values}:{[s.describe() for s in signals]}",
        lambda: db.execute(sql, values).fetchall(),
    )
    out = []
    for arm, *counts in rows:
        for i, signal in enumerate(signals):
            trials, known, fired = counts[3 * i : 3 * i + 3]
            if known:
                out.append(_rate(arm, signal.name, fired or 0, trials))
    return out


def refresh_arm_rollup(db: Database, key: str) -> None:
    """Bring the arm rollup of ``key`` up to the newest trace; it warms, it reads nothing out."""
    _refresh_arms(db, key)


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


# Declared experiments --------------------------------------------------------------------------------

METRICS = (*RATE_SIGNALS, "judge fail")
UNIT_FIELDS = ("trace_id", "cohort")  # trace columns a unit may be; any other unit is a metadata key
SRM_ALPHA = 0.001
DEFAULT_MIN_DAYS = 7
NO_EXPERIMENT = (
    "no experiment is declared for these arms: the rates are descriptive only. Declare one (unit, split,"
    " primary metric, minimum duration) to get a verdict."
)
SECONDARY = "secondary: no verdict"


@dataclass(frozen=True)
class Experiment:
    """An A/B experiment as declared before its data was read."""

    id: int
    name: str
    key: str
    control: str
    treatment: str
    unit: str
    treatment_share: float
    primary_metric: str
    min_days: int
    min_effect: float
    alpha: float
    power: float
    start: str
    declared_by: str
    declared_at: str


def declare_experiment(
    db: Database,
    user: User,
    name: str,
    key: str,
    control: str,
    treatment: str,
    unit: str,
    treatment_share: float,
    primary_metric: str,
    *,
    min_days: int = DEFAULT_MIN_DAYS,
    min_effect: float = 0.02,
    alpha: float = 0.05,
    power: float = 0.8,
    start: str | None = None,
) -> Experiment:
    """Record an experiment's design (leads only); it cannot be changed afterwards, only declared anew."""
    require_role(user, "lead")
    name, control, treatment = (
        _label(v, what) for v, what in ((name, "name"), (control, "control"), (treatment, "treatment"))
    )
    _check(control != treatment, f"control and treatment are both {control!r}; pick two different arms")
    metadata_key(key)
    _check(
        unit in UNIT_FIELDS or unit == metadata_key(unit),
        f"unit {unit!r}: expected trace_id or a metadata key",
    )
    _check(
        unit != key,
        f"unit {unit!r} is the arm field itself; name the field that identifies a user or session",
    )
    _check(
        _number(treatment_share) and 0 < treatment_share < 1,
        f"treatment share {treatment_share!r}: expected 0 < share < 1",
    )
    metrics = (*METRICS, *(d.name for d in declared_signals()))
    _check(
        primary_metric in metrics, f"primary metric {primary_metric!r}: expected one of {', '.join(metrics)}"
    )
    _check(
        isinstance(min_days, int) and 1 <= min_days <= 365,
        f"minimum duration {min_days!r} days: expected 1..365",
    )
    _check(
        _number(min_effect) and 0 < min_effect < 1, f"minimum effect {min_effect!r}: expected 0 < effect < 1"
    )
    _check(_number(alpha) and 0 < alpha < 0.5, f"alpha {alpha!r}: expected 0 < alpha < 0.5")
    _check(_number(power) and 0.5 <= power < 1, f"power {power!r}: expected 0.5 <= power < 1")
    row: dict[str, Any] = {
        "name": name,
        "key": key,
        "control": control,
        "treatment": treatment,
        "unit": unit,
        "treatment_share": float(treatment_share),
        "primary_metric": primary_metric,
        "min_days": min_days,
        "min_effect": float(min_effect),
        "alpha": float(alpha),
        "power": float(power),
        "start": _start(start),
        "declared_by": user.name,
        "declared_at": now(),
    }
    with write(db):
        if db.execute("SELECT 1 FROM experiments WHERE name = ?", [name]).fetchone():
            raise BadInput(f"an experiment named {name!r} is already declared; declare it under a new name")
        experiment_id = db.table("experiments").insert(row).last_pk
        assert experiment_id is not None  # every insert into a rowid table has one
        audit(db, user.name, "declare experiment", "experiment", experiment_id, **row)
    return Experiment(id=experiment_id, **row)


def _label(value: object, what: str) -> str:
    if not (isinstance(value, str) and 0 < len(value.strip()) <= 200):
        raise BadInput(f"{what} {value!r}: expected 1..200 characters")
    return value.strip()


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _start(start: str | None) -> str:
    if start is None:
        return now()
    try:
        return format_ts(parse_ts(str(start)))
    except ValueError:
        raise BadInput(
            f"start {start!r}: expected a date or time such as 2026-11-02 or 2026-11-02T09:00Z"
        ) from None


def declared_experiments(db: Database, user: User) -> list[Experiment]:
    """Every declared experiment, newest first (their arms are metadata values: reviewers and leads)."""
    require_role(user, *RAW_TEXT_ROLES)
    return [Experiment(**row) for row in query_rows(db, "SELECT * FROM experiments ORDER BY id DESC")]


def experiment(db: Database, user: User, name: str) -> Experiment:
    """The declared experiment called ``name``."""
    require_role(user, *RAW_TEXT_ROLES)
    row = query_one(db, "SELECT * FROM experiments WHERE name = ?", [name])
    if row is None:
        raise NotFound(f"no experiment named {name!r} is declared")
    return Experiment(**row)


def compare_arms(
    db: Database,
    user: User,
    key: str,
    control: str,
    treatment: str,
    weeks: tuple[str, ...] = (),
    rubric_id: int | None = None,
) -> dict:
    """Two arms side by side with no declared design behind them: rates only, the verdict withheld."""
    _check(control != treatment, f"control and treatment are both {control!r}; pick two different arms")
    rates = arm_rates(db, user, key, (control, treatment), weeks, rubric_id=rubric_id)
    by = {(r["arm"], r["metric"]): r for r in rates}
    metrics = []
    for metric in dict.fromkeys(r["metric"] for r in rates):
        c, t = by.get((control, metric)), by.get((treatment, metric))
        if c and t and c["n"] and t["n"]:
            metrics.append(_described(metric, "", c["events"], c["n"], t["events"], t["n"]))
    return {
        "experiment": None,
        "primary_metric": None,
        "verdict": None,
        "withheld": [NO_EXPERIMENT],
        "design": None,
        "metrics": metrics,
    }


def experiment_verdict(db: Database, user: User, name: str, rubric_id: int | None = None) -> dict:
    """A declared experiment read from its start: the design checks, and a verdict on the primary
    metric with Holm-corrected secondaries, or the reasons the verdict is withheld."""
    exp = experiment(db, user, name)
    counts = cached(db, f"experiment:{exp.id}:{rubric_id}", lambda: _experiment_counts(db, exp, rubric_id))
    design = _design(exp, counts)
    withheld = design.pop("problems")
    primary = counts["metrics"].get(exp.primary_metric)
    if primary is None or not all(primary[arm].n for arm in (exp.control, exp.treatment)):
        withheld.append(f"the primary metric {exp.primary_metric!r} has no trials in one of the arms")
    elif not _testable(primary[exp.control], primary[exp.treatment]):
        withheld.append(
            f"the primary metric {exp.primary_metric!r} has trials from a single {exp.unit} in an arm:"
            " nothing to compare"
        )
    if withheld:
        metrics = [
            _described(m, _role(exp, m), *_totals(c[exp.control]), *_totals(c[exp.treatment]))
            for m, c in counts["metrics"].items()
            if c[exp.control].n and c[exp.treatment].n
        ]
        metrics.sort(key=lambda r: r["role"] != "primary")
        return {
            "experiment": exp.name,
            "primary_metric": exp.primary_metric,
            "verdict": None,
            "withheld": withheld,
            "design": design,
            "metrics": metrics,
        }
    metrics = _tested(exp, counts)
    return {
        "experiment": exp.name,
        "primary_metric": exp.primary_metric,
        "verdict": metrics[0]["verdict"],
        "withheld": [],
        "design": design,
        "metrics": metrics,
    }


def _role(exp: Experiment, metric: str) -> str:
    return "primary" if metric == exp.primary_metric else "secondary"


def _totals(counts: UnitCounts) -> tuple[int, int]:
    return counts.x, counts.n


def _described(metric: str, role: str, x1: int, n1: int, x2: int, n2: int) -> dict:
    row: dict[str, object] = {"metric": metric, "role": role} if role else {"metric": metric}
    row.update(
        control_rate=x1 / n1,
        control_n=n1,
        treatment_rate=x2 / n2,
        treatment_n=n2,
        diff=x2 / n2 - x1 / n1,
        verdict="withheld",
    )
    return row


@dataclass(frozen=True)
class UnitCounts:
    """One arm's counts for one metric, summed over randomization units: units, trials, events and
    the sums of squares the cluster-robust variance needs (per unit: events², events·trials, trials²)."""

    units: int = 0
    n: int = 0
    x: int = 0
    xx: float = 0.0
    xn: float = 0.0
    nn: float = 0.0


def _unit_sql(unit: str, table: str = "") -> tuple[str, list]:
    if unit in UNIT_FIELDS:
        return f"{table}{unit}", []
    return f"CAST(json_extract({table}metadata, ?) AS TEXT)", [json_path(metadata_key(unit))]


def _experiment_counts(db: Database, exp: Experiment, rubric_id: int | None) -> dict:
    """One pass over the experiment's traces since its start: per arm the units, shared units, traces
    without a unit and the last trace; per arm and metric the unit sums."""
    arm_sql, path = "CAST(json_extract(metadata, ?) AS TEXT)", json_path(metadata_key(exp.key))
    unit_sql, unit_params = _unit_sql(exp.unit)
    flags = ", ".join(f"coalesce({sql}, 0) AS f{i}" for i, sql in enumerate(RATE_SIGNALS.values()))
    inner = (
        f"SELECT {arm_sql} AS arm, {unit_sql} AS unit, ts, {flags} FROM traces"
        f" WHERE {arm_sql} IN (?, ?) AND ts >= ?"
    )
    inner_params = [path, *unit_params, path, exp.control, exp.treatment, exp.start]
    per_unit = ", ".join(f"sum(f{i}) AS x{i}" for i in range(len(RATE_SIGNALS)))
    sums = ", ".join(f"sum(x{i}), sum(x{i} * x{i}), sum(x{i} * n)" for i in range(len(RATE_SIGNALS)))
    rows = db.execute(
        f"WITH u AS (SELECT arm, unit, count(*) AS n, max(ts) AS last, {per_unit} FROM ({inner})"
        " GROUP BY arm, unit), s AS (SELECT *, count(*) OVER (PARTITION BY unit) AS arms FROM u)"
        " SELECT arm, sum(unit IS NOT NULL), sum(CASE WHEN unit IS NULL THEN n ELSE 0 END),"
        f" sum(unit IS NOT NULL AND arms > 1), max(last), count(*), sum(n), sum(n * n), {sums}"
        " FROM s GROUP BY arm",
        inner_params,
    ).fetchall()
    arms = {
        arm: {"units": 0, "missing": 0, "shared": 0, "last": None} for arm in (exp.control, exp.treatment)
    }
    metrics = {m: {arm: UnitCounts() for arm in arms} for m in RATE_SIGNALS}
    for arm, units, missing, shared, last, groups, n, nn, *per_metric in rows:
        arms[arm] = {"units": units, "missing": missing, "shared": shared, "last": last}
        for i, metric in enumerate(RATE_SIGNALS):
            x, xx, xn = per_metric[3 * i : 3 * i + 3]
            metrics[metric][arm] = UnitCounts(groups, n, x, xx, xn, nn)
    if rubric_id is not None:
        metrics["judge fail"] = _judged_counts(db, exp, rubric_id, arms)
    for signal in declared_signals():
        metrics[signal.name] = _declared_unit_counts(db, exp, signal, arms)
    return {"arms": arms, "metrics": metrics}


def _declared_unit_counts(db: Database, exp: Experiment, signal: Declared, arms: dict) -> dict:
    """One declared signal's unit sums per arm since the experiment's start; no trials at all when no
    trace of the arms carries the signal (its data is absent, not zero)."""
    arm_sql, path = "CAST(json_extract(metadata, ?) AS TEXT)", json_path(metadata_key(exp.key))
    unit_sql, unit_params = _unit_sql(exp.unit)
    value = signal.value_sql()
    rows = db.execute(
        "SELECT arm, count(*), sum(n), sum(x), sum(x * x), sum(x * n), sum(n * n), sum(k) FROM ("
        f" SELECT {arm_sql} AS arm, {unit_sql} AS unit, sum({_trials_sql(signal)}) AS n,"
        f" sum(CASE WHEN {signal.fires(value)} THEN 1 ELSE 0 END) AS x, count({value}) AS k FROM traces"
        f" WHERE {arm_sql} IN (?, ?) AND ts >= ? GROUP BY arm, unit) WHERE n > 0 GROUP BY arm",
        [path, *unit_params, path, exp.control, exp.treatment, exp.start],
    ).fetchall()
    counts = {arm: UnitCounts() for arm in arms}
    if not sum(row[7] or 0 for row in rows):
        return counts
    for arm, groups, n, x, xx, xn, nn, _ in rows:
        counts[arm] = UnitCounts(groups, n, x, xx, xn, nn)
    return counts


def _judged_counts(db: Database, exp: Experiment, rubric_id: int, arms: dict) -> dict:
    arm_sql, path = "CAST(json_extract(t.metadata, ?) AS TEXT)", json_path(metadata_key(exp.key))
    unit_sql, unit_params = _unit_sql(exp.unit, "t.")
    rows = db.execute(
        "SELECT arm, count(*), sum(n), sum(x), sum(x * x), sum(x * n), sum(n * n) FROM ("
        f" SELECT {arm_sql} AS arm, {unit_sql} AS unit, count(*) AS n, sum(j.verdict = 'fail') AS x"
        " FROM judgments j CROSS JOIN traces t ON t.trace_id = j.subject_id"
        " WHERE j.subject_kind = 'trace' AND j.status = 'ok' AND j.rubric_id = ?"
        f" AND {arm_sql} IN (?, ?) AND t.ts >= ? GROUP BY arm, unit) GROUP BY arm",
        [path, *unit_params, rubric_id, path, exp.control, exp.treatment, exp.start],
    ).fetchall()
    counts = {arm: UnitCounts() for arm in arms}
    for arm, groups, n, x, xx, xn, nn in rows:
        counts[arm] = UnitCounts(groups, n, x, xx, xn, nn)
    return counts


def _design(exp: Experiment, counts: dict) -> dict:
    """What the data says about the declared design, with every way it fails (``problems``)."""
    c, t = counts["arms"][exp.control], counts["arms"][exp.treatment]
    problems = [
        f"arm {arm!r} has no traces since {exp.start}"
        for arm, a in counts["arms"].items()
        if not a["units"] and not a["missing"]
    ]
    missing = c["missing"] + t["missing"]
    if missing:
        problems.append(
            f"{missing:,} traces of the arms carry no {exp.unit!r}: which arm a unit sat in cannot be checked"
        )
    if c["shared"]:
        problems.append(
            f"{c['shared']:,} {exp.unit} value(s) appear in both arms: the arms are not independent"
        )
    srm = srm_test(c["units"], t["units"], exp.treatment_share) if c["units"] and t["units"] else None
    if srm and srm["p_value"] < SRM_ALPHA:
        problems.append(
            f"sample-ratio mismatch: {c['units']:,} / {t['units']:,} {exp.unit} values against the planned"
            f" {1 - exp.treatment_share:.0%} / {exp.treatment_share:.0%}"
            f" (chi-square p = {srm['p_value']:.2g} < {SRM_ALPHA})"
        )
    last = max((a["last"] for a in (c, t) if a["last"]), default=None)
    days = _days(exp.start, last) if last else 0.0
    if days < exp.min_days:
        problems.append(f"ran {days:.1f} of the declared minimum {exp.min_days} days since {exp.start}")
    return {
        "unit": exp.unit,
        "control_units": c["units"],
        "treatment_units": t["units"],
        "shared_units": c["shared"],
        "traces_without_unit": missing,
        "planned_treatment_share": exp.treatment_share,
        "observed_treatment_share": t["units"] / (c["units"] + t["units"])
        if c["units"] + t["units"]
        else math.nan,
        "srm_p_value": srm["p_value"] if srm else math.nan,
        "days": days,
        "min_days": exp.min_days,
        "start": exp.start,
        "last_trace": last,
        "problems": problems,
    }


def _days(start: str, last: str) -> float:
    return (parse_ts(last) - parse_ts(start)).total_seconds() / 86400


def srm_test(control_units: int, treatment_units: int, treatment_share: float) -> dict:
    """Sample-ratio mismatch: chi-square goodness of fit (1 df) of the arms' unit counts to the plan."""
    total = control_units + treatment_units
    _check(total > 0, "sample-ratio test of two empty arms")
    expected = (total * (1 - treatment_share), total * treatment_share)
    chi2 = sum((o - e) ** 2 / e for o, e in zip((control_units, treatment_units), expected, strict=True))
    return {"chi2": chi2, "p_value": math.erfc(math.sqrt(chi2 / 2))}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _tested(exp: Experiment, counts: dict) -> list[dict]:
    """The primary metric with its verdict, then the secondaries with Holm-adjusted p-values."""
    rows = []
    for metric, arms in counts["metrics"].items():
        c, t = arms[exp.control], arms[exp.treatment]
        if _testable(c, t):
            rows.append(_test(exp, metric, c, t))
    rows.sort(key=lambda r: r["role"] != "primary")
    secondary = rows[1:]
    for row, adjusted in zip(secondary, holm([r["p_value"] for r in secondary]), strict=True):
        row["p_holm"] = adjusted
    return rows


def _testable(c: UnitCounts, t: UnitCounts) -> bool:
    """Whether both arms have trials from two units or more (a variance over units needs two)."""
    return c.n > 0 and t.n > 0 and min(c.units, t.units) > 1


def _test(exp: Experiment, metric: str, c: UnitCounts, t: UnitCounts) -> dict:
    if c.n == c.units and t.n == t.units:  # one trace per unit: the traces are independent observations
        test = two_proportion_test(c.x, c.n, t.x, t.n, 1 - exp.alpha)
        effective = (c.n, t.n)
    else:
        test = clustered_proportion_test(c, t, 1 - exp.alpha)
        effective = (test["control_effective_n"], test["treatment_effective_n"])
    row = {
        "metric": metric,
        "role": _role(exp, metric),
        "control_rate": test["p1"],
        "control_n": c.n,
        "treatment_rate": test["p2"],
        "treatment_n": t.n,
        "diff": test["diff"],
        "diff_low": test["low"],
        "diff_high": test["high"],
        "p_value": test["p_value"],
        "p_holm": None,
    }
    if row["role"] == "secondary":
        return {**row, "verdict": SECONDARY}
    needed = sample_size_per_arm(min(test["p1"], 1 - exp.min_effect), exp.min_effect, exp.alpha, exp.power)
    smaller = math.floor(min(effective))
    if smaller < needed:
        verdict = (
            f"under-powered: needs {needed:,} traces per arm to detect {exp.min_effect:.1%}, has {smaller:,}"
        )
    elif test["p_value"] >= exp.alpha:
        verdict = "no significant difference"
    else:
        verdict = "treatment worse" if test["diff"] > 0 else "treatment better"
    return {**row, "needed_per_arm": needed, "verdict": verdict}


def clustered_proportion_test(c: UnitCounts, t: UnitCounts, confidence: float = 0.95) -> dict:
    """Difference of two rates whose traces come in units (users, sessions): a unit's traces are not
    independent, so each rate's variance is the cluster-robust (delta-method) one over units, and the
    effective trials are what a binomial rate of that variance would need."""
    _check(
        c.units > 1 and t.units > 1,
        f"clustered test of {c.units} and {t.units} units: expected 2 or more each",
    )
    p1, p2 = c.x / c.n, t.x / t.n
    v1, v2 = _cluster_variance(c, p1), _cluster_variance(t, p2)
    se = math.sqrt(v1 + v2)
    z = (p2 - p1) / se if se else 0.0
    margin = NORMAL.inv_cdf(0.5 + confidence / 2) * se
    return {
        "p1": p1,
        "p2": p2,
        "diff": p2 - p1,
        "z": z,
        "p_value": 2 * (1 - NORMAL.cdf(abs(z))) if se else 1.0,
        "low": p2 - p1 - margin,
        "high": p2 - p1 + margin,
        "control_effective_n": p1 * (1 - p1) / v1 if v1 else c.n,
        "treatment_effective_n": p2 * (1 - p2) / v2 if v2 else t.n,
    }


def _cluster_variance(k: UnitCounts, rate: float) -> float:
    residual_squares = k.xx - 2 * rate * k.xn + rate * rate * k.nn  # sum over units of (x - rate * n)²
    return max(0.0, residual_squares) / (k.n * k.n) * k.units / (k.units - 1)


def add_demo_experiment(db: Database, user: User) -> Experiment | None:
    """Declare the demo's canary as the experiment it is: one trace in ten of release v2's traffic,
    assigned trace by trace, thumbs down the primary metric."""
    first = db.execute(
        "SELECT min(ts) FROM traces WHERE json_extract(metadata, '$.release') = 'v2.1-canary'"
    ).fetchone()[0]
    if first is None:
        return None
    return declare_experiment(
        db,
        user,
        "v2.1 canary",
        ARM_KEY,
        "v2",
        "v2.1-canary",
        "trace_id",
        0.1,
        "thumbs down",
        min_effect=DEMO_MIN_EFFECT,
        start=first[:10],
    )


DEMO_MIN_EFFECT = 0.1


def canary_alarms(
    db: Database,
    user: User,
    key: str,
    control: str,
    canary: str,
    hours: int = 72,
    rubric_id: int | None = None,
) -> list[dict]:
    """Over the last ``hours``: every rate where the canary is worse than the control arm beyond its
    interval (the canary's whole Wilson interval above the control's rate), so a handful of canary
    traces cannot raise an alarm on their own."""
    _check(24 <= hours <= 24 * 14, f"canary window {hours!r} hours: expected 24..336")
    rates = arm_rates(db, user, key, (control, canary), hours=hours, rubric_id=rubric_id)
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
