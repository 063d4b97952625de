"""The sampling station: plans that pick production traces for the eval loop, and the batches they make.

A plan combines three kinds of rule, each pick recorded with its reason:

    anomaly      every trace in the window carrying a switched-on signal (priority 0)
    stratified   up to ``quota`` traces per stratum: cohort, intent, judge-score band, long
                 conversations, cost or latency tail (priority 1)
    random       a share of the window chosen by a hash of seed and trace_id (priority 2)

The window is one ISO week (the latest week with traces unless the plan or the caller names one).
A trace picked by several rules appears once in the batch with all its reasons; a cap on the batch
size drops the lowest priority first. Every choice is a pure function of seed and data: the random
predicate is an MD5 prefix comparison a warehouse can run as plain SQL (``random_predicate_sql``),
and quota picks take the traces that come first in a seeded MD5 order. Running a plan only writes
the batch; the page and the CLI hand its traces to the scrubber.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from flywheel import label_queue
from flywheel.errors import BadInput, NotFound
from flywheel.store import audit, now, query_rows, write

ANOMALY_SIGNALS = {
    "guardrail_tripped": "guardrail_tripped = 1",
    "regenerated": "regenerated = 1",
    "retried": "retried = 1",
    "thumbs_down": "thumbs = 'down'",
    "schema_invalid": "schema_valid = 0",
    "escalated": "escalated = 1",
}
STRATUM_KEYS = ("cohort", "intent", "judge_band", "long_conversation", "cost_tail", "latency_tail")
# The parameters each stratum key takes, with their defaults.
STRATUM_PARAMS = {
    "cohort": {"values": ()},
    "intent": {"values": (), "rare_share": None},
    "judge_band": {"low": 0.4, "high": 0.7},
    "long_conversation": {"min_turns": 5},
    "cost_tail": {"top_share": 0.05},
    "latency_tail": {"top_share": 0.05},
}
_PARAM_DEFAULTS = {name: d for params in STRATUM_PARAMS.values() for name, d in params.items()}
PRIORITY = {"anomaly": 0, "stratified": 1, "random": 2}
PLAN_KEYS = ("name", "seed", "week", "cap", "random", "anomaly", "strata")
WEEK_PATTERN = re.compile(r"^(\d{4})-W(\d{2})$")
HASH_SPACE = 16**8  # the random predicate compares the first 8 hex digits of an MD5


@dataclass(frozen=True)
class Stratum:
    """A stratified rule: up to ``quota`` traces from each stratum the key defines."""

    key: str
    quota: int = 10
    values: tuple[str, ...] = ()
    rare_share: float | None = None
    low: float = 0.4
    high: float = 0.7
    min_turns: int = 5
    top_share: float = 0.05

    def __post_init__(self) -> None:
        if self.key not in STRATUM_KEYS:
            raise BadInput(f"unknown stratum key {self.key!r}; expected one of {', '.join(STRATUM_KEYS)}")
        _check_int(self.quota, f"stratum {self.key!r} quota", 1)
        object.__setattr__(self, "values", _labels(self.values, f"stratum {self.key!r} values"))
        if self.rare_share is not None:
            _check_share(self.rare_share, f"stratum {self.key!r} rare_share")
        _check_share(self.top_share, f"stratum {self.key!r} top_share")
        _check_int(self.min_turns, f"stratum {self.key!r} min_turns", 1)
        for bound in (self.low, self.high):
            if _not_number(bound) or not 0 <= bound <= 1:
                raise BadInput(f"stratum {self.key!r} judge band bound {bound!r}: expected 0..1")
        if self.low > self.high:
            raise BadInput(f"stratum {self.key!r} judge band {self.low}-{self.high}: low is above high")
        foreign = [
            n
            for n, default in _PARAM_DEFAULTS.items()
            if n not in STRATUM_PARAMS[self.key] and getattr(self, n) != default
        ]
        if foreign:
            raise BadInput(f"stratum {self.key!r} does not take {', '.join(foreign)}")

    @property
    def label(self) -> str:
        """How the ledger names this rule's stratum (cohort and intent strata are named by value)."""
        if self.key == "judge_band":
            return f"judge_score {self.low:g}-{self.high:g}"
        if self.key == "long_conversation":
            return f"turns >= {self.min_turns}"
        if self.key.endswith("_tail"):
            return f"{_TAIL_COLUMNS[self.key]} top {self.top_share:.0%}"
        return self.key

    def as_dict(self) -> dict:
        """The stratum as a plan file writes it: key, quota and the parameters of its key."""
        params = {name: getattr(self, name) for name in STRATUM_PARAMS[self.key]}
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if v not in ((), None)}
        return {"key": self.key, "quota": self.quota, **params}


@dataclass(frozen=True)
class Plan:
    """A named sampling plan, validated when it is made."""

    name: str = "weekly"
    seed: int = 7
    random_rate: float | None = None
    anomaly: tuple[str, ...] = ()
    strata: tuple[Stratum, ...] = ()
    week: str | None = None
    cap: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 80:
            raise BadInput(f"plan name {self.name!r}: expected 1..80 characters")
        object.__setattr__(self, "name", self.name.strip())
        _check_int(self.seed, "seed", 0)
        if self.random_rate is not None and (_not_number(self.random_rate) or not 0 < self.random_rate <= 1):
            raise BadInput(f"random rate {self.random_rate!r}: expected a number with 0 < rate <= 1")
        object.__setattr__(self, "anomaly", _anomaly_signals(self.anomaly))
        object.__setattr__(self, "strata", tuple(self.strata))
        keys = [s.key for s in self.strata]
        if len(set(keys)) < len(keys):
            raise BadInput(f"stratum keys {keys!r}: each key may appear once")
        if self.week is not None:
            parse_week(self.week)
        if self.cap is not None:
            _check_int(self.cap, "cap", 1)
        if self.random_rate is None and not self.anomaly and not self.strata:
            raise BadInput(
                f"plan {self.name!r} samples nothing: set a random rate, anomaly signals or strata"
            )

    @classmethod
    def from_dict(cls, body: dict) -> Plan:
        """A plan from its file/JSON form (the form ``as_dict`` writes)."""
        if not isinstance(body, dict):
            raise BadInput(f"a plan must be an object/table, got {type(body).__name__}")
        unknown = set(body) - set(PLAN_KEYS)
        if unknown:
            raise BadInput(f"unknown plan field(s) {sorted(unknown)}; expected {', '.join(PLAN_KEYS)}")
        random = body.get("random") or {}
        if not isinstance(random, dict) or set(random) - {"rate"}:
            raise BadInput(f"plan field 'random' {random!r}: expected a table with 'rate'")
        return cls(
            name=body.get("name", "weekly"),
            seed=body.get("seed", 7),
            random_rate=random.get("rate"),
            anomaly=tuple(body.get("anomaly", ())),
            strata=tuple(_stratum(s) for s in _list(body.get("strata", []), "strata")),
            week=body.get("week"),
            cap=body.get("cap"),
        )

    def as_dict(self) -> dict:
        """The plan's file/JSON form."""
        body: dict = {"name": self.name, "seed": self.seed}
        if self.week is not None:
            body["week"] = self.week
        if self.cap is not None:
            body["cap"] = self.cap
        if self.random_rate is not None:
            body["random"] = {"rate": self.random_rate}
        body["anomaly"] = list(self.anomaly)
        body["strata"] = [s.as_dict() for s in self.strata]
        return body

    def replace(self, **changes: object) -> Plan:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _stratum(body: object) -> Stratum:
    if not isinstance(body, dict) or "key" not in body:
        raise BadInput(f"stratum {body!r}: expected a table with a 'key'")
    key = body["key"]
    if key not in STRATUM_PARAMS:
        raise BadInput(f"unknown stratum key {key!r}; expected one of {', '.join(STRATUM_KEYS)}")
    allowed = {"key", "quota", *STRATUM_PARAMS[key]}
    unknown = set(body) - allowed
    if unknown:
        raise BadInput(f"stratum {key!r} has unknown field(s) {sorted(unknown)}; expected {sorted(allowed)}")
    values = body.get("values", ())
    return Stratum(**{**body, "values": tuple(_list(values, f"stratum {key!r} values"))})


def _list(value: object, what: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise BadInput(f"{what} {value!r}: expected a list")
    return list(value)


def _labels(values: object, what: str) -> tuple[str, ...]:
    values = tuple(_list(values, what))
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise BadInput(f"{what} {list(values)!r}: expected non-empty strings")
    return values


def _anomaly_signals(signals: object) -> tuple[str, ...]:
    signals = tuple(_list(signals, "anomaly"))
    for signal in signals:
        if signal not in ANOMALY_SIGNALS:
            raise BadInput(f"unknown anomaly signal {signal!r}; expected one of {', '.join(ANOMALY_SIGNALS)}")
    return tuple(s for s in ANOMALY_SIGNALS if s in signals)  # canonical order, no repeats


def _not_number(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)


def _check_int(value: object, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadInput(f"{what} {value!r}: expected an integer >= {minimum}")


def _check_share(value: object, what: str) -> None:
    if _not_number(value) or not 0 < value <= 1:
        raise BadInput(f"{what} {value!r}: expected a number with 0 < share <= 1")


# The plan the demo database runs every week; data/plans/weekly.toml is the same plan as a file.
DEMO_PLAN = Plan(
    name="weekly",
    seed=7,
    random_rate=0.02,
    anomaly=tuple(ANOMALY_SIGNALS),
    strata=(
        Stratum("cohort", quota=4),
        Stratum("judge_band", quota=8, low=0.4, high=0.7),
        Stratum("cost_tail", quota=4, top_share=0.05),
    ),
    cap=100,
)


# Plan files and saved plans -----------------------------------------------------------------------


def load_plan_file(path: str | Path) -> Plan:
    """A plan from a .toml or .json file."""
    path = Path(path)
    if path.suffix.lower() not in (".toml", ".json"):
        raise BadInput(f"plan file {str(path)!r}: expected a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise BadInput(f"plan file {str(path)!r} does not exist") from None
    try:
        body = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise BadInput(f"plan file {str(path)!r} cannot be read: {error}") from None
    return Plan.from_dict(body)


def plan_from_options(
    plan_file: str | Path | None = None,
    random_rate: float | None = None,
    anomaly: bool = False,
    seed: int | None = None,
) -> Plan:
    """The plan the CLI options describe: a plan file, or a random rate with optional anomaly rules."""
    if plan_file is not None:
        if anomaly or random_rate is not None:
            raise BadInput("--anomaly and --random go without --plan; put them in the plan file")
        plan = load_plan_file(plan_file)
    else:
        signals = tuple(ANOMALY_SIGNALS) if anomaly else ()
        plan = Plan(name="cli", random_rate=random_rate, anomaly=signals)
    return plan if seed is None else plan.replace(seed=seed)


def save_plan(db: Database, plan: Plan, actor: str) -> None:
    """Store a plan under its name, replacing an earlier version."""
    with write(db):
        db["sampling_plans"].upsert(
            {"name": plan.name, "body": json.dumps(plan.as_dict()), "updated_at": now(), "updated_by": actor},
            pk="name",
        )
        audit(db, actor, "save_plan", "sampling_plan", plan.name, plan=plan.as_dict())


def delete_plan(db: Database, name: str, actor: str) -> None:
    """Remove a saved plan; batches keep their own snapshot of it."""
    with write(db):
        if not db.execute("DELETE FROM sampling_plans WHERE name = ?", [name]).rowcount:
            raise NotFound(f"no saved sampling plan named {name!r}")
        audit(db, actor, "delete_plan", "sampling_plan", name)


def saved_plans(db: Database) -> list[Plan]:
    """Every saved plan, by name."""
    rows = db.execute("SELECT body FROM sampling_plans ORDER BY name").fetchall()
    return [Plan.from_dict(json.loads(body)) for (body,) in rows]


def saved_plan(db: Database, name: str) -> Plan:
    """The saved plan called ``name``."""
    row = db.execute("SELECT body FROM sampling_plans WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFound(f"no saved sampling plan named {name!r}")
    return Plan.from_dict(json.loads(row[0]))


# The window ----------------------------------------------------------------------------------------


def parse_week(week: str) -> str:
    """Check an ISO week such as '2026-W45' and return it."""
    match = WEEK_PATTERN.match(week) if isinstance(week, str) else None
    try:
        if not match:
            raise ValueError
        dt.date.fromisocalendar(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise BadInput(f"week {week!r}: expected an ISO week such as 2026-W45") from None
    return week


def sample_weeks(db: Database) -> list[str]:
    """The ISO weeks that hold traces, newest first."""
    return [r[0] for r in db.execute("SELECT DISTINCT week FROM traces ORDER BY week DESC")]


def resolve_week(db: Database, week: str | None) -> str:
    """The week to sample: the one given (which must hold traces), else the latest with traces."""
    latest = db.execute("SELECT max(week) FROM traces").fetchone()[0]
    if latest is None:
        raise BadInput("there are no traces to sample; import some first")
    if week is None:
        return latest
    parse_week(week)
    if db.execute("SELECT 1 FROM traces WHERE week = ? LIMIT 1", [week]).fetchone() is None:
        first = db.execute("SELECT min(week) FROM traces").fetchone()[0]
        raise BadInput(f"week {week!r} has no traces; traces span {first}..{latest}")
    return week


# The random predicate ----------------------------------------------------------------------------


def _threshold(rate: float) -> int:
    return round(rate * HASH_SPACE)


def in_random_sample(trace_id: str, rate: float, seed: int) -> bool:
    """Whether the random rule picks this trace: the Python twin of ``random_predicate_sql``."""
    prefix = int(hashlib.md5(f"{seed}:{trace_id}".encode()).hexdigest()[:8], 16)
    return prefix < _threshold(rate)


def random_predicate_sql(plan: Plan, column: str = "trace_id") -> str:
    """The random rule as a SQL predicate over ``md5``, portable to warehouses (Postgres, Snowflake,
    DuckDB, Spark; BigQuery spells the hash ``TO_HEX(MD5(...))``).

    Fixed-width lowercase hex compares as text exactly as the number it spells, so no dialect's
    hex-to-integer conversion is needed.
    """
    if plan.random_rate is None:
        raise BadInput(f"plan {plan.name!r} has no random rule")
    bound = _threshold(plan.random_rate)
    digest = f"substr(lower(md5('{plan.seed}:' || {column})), 1, 8)"
    if bound >= HASH_SPACE:
        return f"{digest} <= 'ffffffff'"
    return f"{digest} < '{bound:08x}'"


def register_md5(db: Database) -> None:
    """Give this connection the ``md5(text)`` SQL function warehouses have built in."""
    db.conn.create_function("md5", 1, _md5_hex, deterministic=True)


def _md5_hex(text: object) -> str | None:
    return None if text is None else hashlib.md5(str(text).encode("utf-8", "surrogatepass")).hexdigest()


# Rules as SQL ------------------------------------------------------------------------------------

_TAIL_COLUMNS = {"cost_tail": "cost_usd", "latency_tail": "latency_ms"}
_IN_WEEK = "FROM traces WHERE week = :week"


@dataclass(frozen=True)
class _Rule:
    """One rule of a plan: the population it covers (trace_id, stratum rows) and what it picks."""

    kind: str
    name: str
    population: str
    params: dict = field(default_factory=dict)
    quota: int | None = None
    pick: str = "1"

    @property
    def priority(self) -> int:
        return PRIORITY[self.kind]


def _rules(db: Database, plan: Plan, week: str) -> list[_Rule]:
    rules = [
        _Rule("anomaly", f"anomaly:{signal}", f"SELECT trace_id, '{signal}' AS stratum {_IN_WEEK} AND {sql}")
        for signal, sql in ANOMALY_SIGNALS.items()
        if signal in plan.anomaly
    ]
    rules += [_stratum_rule(db, s, week) for s in plan.strata]
    if plan.random_rate is not None:
        population = f"SELECT trace_id, 'all traces' AS stratum {_IN_WEEK}"
        rules.append(_Rule("random", "random", population, pick=random_predicate_sql(plan)))
    return rules


def _stratum_rule(db: Database, stratum: Stratum, week: str) -> _Rule:
    name, params = f"stratified:{stratum.key}", {}
    if stratum.key in ("cohort", "intent"):
        sql = f"SELECT trace_id, '{stratum.key}=' || {stratum.key} AS stratum {_IN_WEEK}"
        sql += f" AND {stratum.key} IS NOT NULL"
        if stratum.values:
            marks = ", ".join(f":v{i}" for i in range(len(stratum.values)))
            sql += f" AND {stratum.key} IN ({marks})"
            params = {f"v{i}": v for i, v in enumerate(stratum.values)}
        if stratum.rare_share is not None:
            sql += (
                f" AND intent IN (SELECT intent {_IN_WEEK} AND intent IS NOT NULL GROUP BY intent"
                f" HAVING count(*) < :rare * (SELECT count(*) {_IN_WEEK}))"
            )
            params["rare"] = stratum.rare_share
    elif stratum.key == "judge_band":
        sql = (
            f"SELECT trace_id, '{stratum.label}' AS stratum {_IN_WEEK} AND judge_score BETWEEN :low AND :high"
        )
        params = {"low": stratum.low, "high": stratum.high}
    elif stratum.key == "long_conversation":
        sql = f"SELECT trace_id, '{stratum.label}' AS stratum {_IN_WEEK} AND turns >= :min_turns"
        params = {"min_turns": stratum.min_turns}
    else:
        sql, params = _tail_population(db, stratum, week)
    return _Rule("stratified", name, sql, params, quota=stratum.quota)


def _tail_population(db: Database, stratum: Stratum, week: str) -> tuple[str, dict]:
    """The top share of the week by cost or latency; ties broken by trace_id so the size is exact."""
    column = _TAIL_COLUMNS[stratum.key]
    known = db.execute(f"SELECT count({column}) {_IN_WEEK}", {"week": week}).fetchone()[0]
    sql = (
        f"SELECT trace_id, '{stratum.label}' AS stratum FROM (SELECT trace_id {_IN_WEEK}"
        f" AND {column} IS NOT NULL ORDER BY {column} DESC, trace_id LIMIT :top)"
    )
    return sql, {"top": math.ceil(stratum.top_share * known)}


def _fill_pool(db: Database, plan: Plan, week: str) -> None:
    """Write every rule's population into ``temp.sample_pool``, marking the rows each rule picks."""
    register_md5(db)
    db.execute("DROP TABLE IF EXISTS temp.sample_pool")
    db.execute(
        "CREATE TEMP TABLE sample_pool (trace_id TEXT, kind TEXT, rule TEXT, stratum TEXT,"
        " reason TEXT, priority INTEGER, quota INTEGER, picked INTEGER)"
    )
    for rule in _rules(db, plan, week):
        reason = "'random'" if rule.kind == "random" else f"'{rule.kind}:' || stratum"
        if rule.quota is None:
            picked = rule.pick
            source = f"({rule.population})"
        else:  # the first ``quota`` traces of each stratum in the seeded order
            picked = "n <= :quota"
            source = (
                f"(SELECT *, row_number() OVER (PARTITION BY stratum ORDER BY md5(:order || trace_id)) AS n"
                f" FROM ({rule.population}))"
            )
        db.execute(
            f"INSERT INTO temp.sample_pool SELECT trace_id, '{rule.kind}', '{rule.name}', stratum,"
            f" {reason}, {rule.priority}, :quota, {picked} FROM {source}",
            {**rule.params, "week": week, "quota": rule.quota, "order": _order_salt(plan)},
        )


def _order_salt(plan: Plan) -> str:
    # Quota picks and the cap use an order independent of the random predicate, so a stratum's
    # picks are not mostly traces the random rule took already.
    return f"{plan.seed}:order:"


# Preview ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """What a plan would pick in a week, before it runs."""

    week: str
    window: int
    rules: list[dict]
    selected: int
    capped: int


def preview_plan(db: Database, plan: Plan, week: str | None = None) -> Preview:
    """Per rule, how many traces it covers and would pick; the batch size with and without the cap."""
    week = resolve_week(db, week or plan.week)
    _fill_pool(db, plan, week)
    rows = db.execute(
        "SELECT rule, count(DISTINCT stratum), count(*), sum(picked) FROM temp.sample_pool"
        " GROUP BY rule ORDER BY min(priority), rule"
    ).fetchall()
    rules = [
        {"rule": rule, "strata": strata, "population": population, "picks": picks}
        for rule, strata, population, picks in rows
    ]
    selected = db.execute("SELECT count(DISTINCT trace_id) FROM temp.sample_pool WHERE picked").fetchone()[0]
    return Preview(week, _window_size(db, week), rules, selected, min(selected, plan.cap or selected))


def _window_size(db: Database, week: str) -> int:
    return db.execute(f"SELECT count(*) {_IN_WEEK}", {"week": week}).fetchone()[0]


# Running a plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A batch as the CLI and the page report it."""

    id: int
    plan: str
    week: str
    seed: int
    window: int
    selected: int
    sampled: int
    dropped: int
    reasons: dict[str, int]

    def as_json(self) -> dict:
        """The batch's contract for scripts."""
        return {
            "batch_id": self.id,
            "plan": self.plan,
            "week": self.week,
            "seed": self.seed,
            "window": self.window,
            "sampled": self.sampled,
            "dropped": self.dropped,
            "reasons": self.reasons,
        }

    def summary(self) -> str:
        """One human-readable line per reason under a headline."""
        lines = [
            f"batch {self.id}: {self.sampled} of {self.window} traces in {self.week} sampled"
            f" (plan {self.plan!r}, seed {self.seed}, {self.dropped} dropped by the cap)"
        ]
        lines += [f"  {count:6d}  {reason}" for reason, count in self.reasons.items()]
        return "\n".join(lines)


def run_plan(db: Database, plan: Plan, actor: str, week: str | None = None) -> Batch:
    """Sample one week with ``plan`` into a new batch (one transaction, audited)."""
    week = resolve_week(db, week or plan.week)
    with write(db):
        _fill_pool(db, plan, week)
        batch_id = (
            db["sample_batches"]
            .insert(
                {
                    "plan_name": plan.name,
                    "plan": json.dumps(plan.as_dict()),
                    "seed": plan.seed,
                    "week": week,
                    "created_by": actor,
                    "created_at": now(),
                }
            )
            .last_pk
        )
        _insert_items(db, batch_id, plan)
        label_queue.join_batch(db, batch_id)
        _insert_ledger(db, batch_id)
        batch = _count_batch(db, batch_id, plan, week)
        audit(db, actor, "sample", "sample_batch", batch_id, **batch.as_json())
    return batch


def _insert_items(db: Database, batch_id: int, plan: Plan) -> None:
    """One item per picked trace with all its reasons; the cap keeps the highest priority first."""
    db.execute(
        """
        INSERT INTO batch_items (batch_id, trace_id, reasons, stratum, priority)
        SELECT :batch, trace_id, json_group_array(reason),
               json_extract(json_group_array(stratum), '$[0]'), min(priority)
        FROM (SELECT * FROM temp.sample_pool WHERE picked ORDER BY trace_id, priority, reason)
        GROUP BY trace_id
        ORDER BY min(priority), md5(:order || trace_id)
        LIMIT :cap""",
        {"batch": batch_id, "order": _order_salt(plan), "cap": plan.cap or -1},
    )


def _insert_ledger(db: Database, batch_id: int) -> None:
    """Per rule and stratum: population, picks, picks the cap dropped, and traces in the batch."""
    db.execute(
        """
        INSERT INTO batch_strata
               (batch_id, kind, rule, stratum, quota, population, selected, dropped, in_batch)
        SELECT :batch, p.kind, p.rule, p.stratum, max(p.quota), count(*), sum(p.picked),
               sum(p.picked AND b.trace_id IS NULL), count(b.trace_id)
        FROM temp.sample_pool p
        LEFT JOIN batch_items b ON b.batch_id = :batch AND b.trace_id = p.trace_id
        GROUP BY p.kind, p.rule, p.stratum""",
        {"batch": batch_id},
    )


def _count_batch(db: Database, batch_id: int, plan: Plan, week: str) -> Batch:
    selected = db.execute("SELECT count(DISTINCT trace_id) FROM temp.sample_pool WHERE picked").fetchone()[0]
    sampled = db.execute("SELECT count(*) FROM batch_items WHERE batch_id = ?", [batch_id]).fetchone()[0]
    counts = {"window": _window_size(db, week), "selected": selected, "sampled": sampled}
    counts["dropped"] = selected - sampled
    reasons = batch_reasons(db, batch_id)
    db["sample_batches"].update(batch_id, {**counts, "reasons": json.dumps(reasons)})
    return Batch(batch_id, plan.name, week, plan.seed, reasons=reasons, **counts)


# Reading batches -----------------------------------------------------------------------------------


def batch_reasons(db: Database, batch_id: int) -> dict[str, int]:
    """How many items of the batch carry each reason, most common first."""
    rows = db.execute(
        "SELECT r.value, count(*) FROM batch_items b, json_each(b.reasons) r WHERE b.batch_id = ?"
        " GROUP BY r.value ORDER BY count(*) DESC, r.value",
        [batch_id],
    )
    return dict(rows.fetchall())


def batch_ledger(db: Database, batch_id: int) -> list[dict]:
    """Per rule and stratum: population, picks, dropped by the cap, in the batch, and the coverage rate."""
    return query_rows(
        db,
        "SELECT kind, rule, stratum, quota, population, selected, dropped, in_batch,"
        " round(in_batch * 1.0 / max(population, 1), 4) AS rate"
        " FROM batch_strata WHERE batch_id = ? ORDER BY CASE kind WHEN 'anomaly' THEN 0"
        " WHEN 'stratified' THEN 1 ELSE 2 END, rule, stratum",
        [batch_id],
    )


def batch_rule_counts(db: Database, batch_id: int) -> dict[str, int]:
    """How many items of the batch each rule picked (its strata summed), for the reasons chart."""
    rows = db.execute(
        "SELECT rule, sum(selected - dropped) FROM batch_strata WHERE batch_id = ?"
        " GROUP BY rule ORDER BY 2 DESC, rule",
        [batch_id],
    )
    return dict(rows.fetchall())


def sample_batches(db: Database, limit: int = 50) -> list[dict]:
    """The most recent batches with their plan snapshot and counts, newest first."""
    rows = db["sample_batches"].rows_where(order_by="id DESC", limit=limit)
    return [{**r, "plan": json.loads(r["plan"]), "reasons": json.loads(r["reasons"] or "{}")} for r in rows]


def batch_items(db: Database, batch_id: int) -> list[dict]:
    """The batch's items (ids, reasons, stratum, priority; no trace text), highest priority first."""
    rows = db.execute(
        "SELECT trace_id, reasons, stratum, priority FROM batch_items WHERE batch_id = ?"
        " ORDER BY priority, trace_id",
        [batch_id],
    )
    return [
        {"trace_id": t, "reasons": json.loads(r), "stratum": s, "priority": p}
        for t, r, s, p in rows.fetchall()
    ]


def batch_trace_ids(db: Database, batch_id: int) -> list[str]:
    """The batch's trace ids, highest priority first: the order they go to the scrubber."""
    rows = db.execute(
        "SELECT trace_id FROM batch_items WHERE batch_id = ? ORDER BY priority, trace_id", [batch_id]
    )
    return [r[0] for r in rows]
