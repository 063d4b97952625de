"""Plan schema: what a sampling plan says, validated when it is made, with its file and stored forms.

A plan combines three kinds of rule, each pick recorded with its reason:

    anomaly      every trace in the window carrying a switched-on signal (priority 0)
    stratified   up to ``quota`` traces per stratum; one small class per stratum kind (priority 1)
    random       a share of the window chosen by a hash of seed and trace_id (priority 2)

How a plan runs (in SQLite, DuckDB or Spark) lives in ``flywheel.sampling.sql`` and ``.batches``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sqlite_utils import Database

from flywheel.errors import BadInput, NotFound
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import write
from flywheel.traces.signals import Declared, declared, signal_names

ANOMALY_SIGNALS = {
    "guardrail_tripped": "guardrail_tripped = 1",
    "regenerated": "regenerated = 1",
    "retried": "retried = 1",
    "thumbs_down": "thumbs = 'down'",
    "schema_invalid": "schema_valid = 0",
    "escalated": "escalated = 1",
}
PRIORITY = {"anomaly": 0, "stratified": 1, "random": 2}
PLAN_KEYS = ("name", "seed", "week", "cap", "random", "anomaly", "strata")
WEEK_PATTERN = re.compile(r"^(\d{4})-W(\d{2})$")
MAX_INTEGER = 2**63 - 1  # the largest integer SQLite (and the SQL a plan compiles to) holds
# Control characters (NUL included) and lone surrogates cannot travel in SQL text or into the store.
UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


class Dialect:
    """How one SQL engine spells what the plan's SQL needs; SQLite, DuckDB and Spark agree on the rest."""

    name = "sqlite"
    window = "fw_window"

    def quote(self, value: str) -> str:
        """A string literal."""
        return "'" + value.replace("'", "''") + "'"

    def materialize(self, name: str, select: str) -> list[str]:
        """The statements that keep the rows of ``select`` as the temporary table ``name``."""
        raise NotImplementedError

    def ident(self, name: str) -> str:
        """A quoted identifier."""
        raise NotImplementedError


# Strata: one class per kind ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stratum:
    """A stratified rule: up to ``quota`` traces from each stratum its kind defines.

    A kind declares its ``key``, validates its parameters, names its stratum for the ledger and
    writes its population as SQL over the window (columns ``trace_id, stratum``).
    """

    quota: int = 10
    key: ClassVar[str] = ""
    help: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check_int(self.quota, f"stratum {self.key!r} quota", 1)
        self.check()

    def check(self) -> None:
        """Refuse bad parameters, naming the bad value."""

    @property
    def label(self) -> str:
        """How the ledger names this rule's stratum."""
        return self.key

    def population(self, d: Dialect) -> str:
        """SELECT trace_id, stratum FROM ``window``: the traces this rule draws its quota from."""
        raise NotImplementedError

    def as_dict(self) -> dict:
        """The stratum as a plan file writes it: key, quota and the parameters of its kind."""
        params = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "quota"}
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if v not in ((), None)}
        return {"key": self.key, "quota": self.quota, **params}

    @staticmethod
    def of(key: str, **fields: Any) -> Stratum:
        """The stratum of kind ``key`` with these fields."""
        kind = STRATA.get(key)
        if kind is None:
            raise BadInput(f"unknown stratum key {key!r}; expected one of {', '.join(STRATUM_KEYS)}")
        allowed = {f.name for f in dataclasses.fields(kind)}
        unknown = set(fields) - allowed
        if unknown:
            raise BadInput(
                f"stratum {key!r} has unknown field(s) {sorted(unknown)};"
                f" expected {sorted(allowed | {'key'})}"
            )
        for name in ("values", "names"):
            if name in fields:
                fields[name] = _labels(fields[name], f"stratum {key!r} {name}")
        return kind(**fields)


@dataclass(frozen=True)
class _ByValue(Stratum):
    """One stratum per value of a column (optionally only the listed values)."""

    values: tuple[str, ...] = ()

    def check(self) -> None:
        object.__setattr__(self, "values", _labels(self.values, f"stratum {self.key!r} values"))

    def population(self, d: Dialect) -> str:
        sql = (
            f"SELECT trace_id, '{self.key}=' || {self.key} AS stratum FROM {d.window}"
            f" WHERE {self.key} IS NOT NULL"
        )
        if self.values:
            sql += f" AND {self.key} IN ({', '.join(d.quote(v) for v in self.values)})"
        return sql


@dataclass(frozen=True)
class CohortStratum(_ByValue):
    key: ClassVar[str] = "cohort"
    help: ClassVar[str] = "up to the quota from every cohort (or only those listed)"


@dataclass(frozen=True)
class IntentStratum(_ByValue):
    """Per intent; with ``rare_share``, only the rarest intents that together make up at most that
    share of the week's traffic (a lead's "rare": the long tail, not every intent under a cut-off)."""

    key: ClassVar[str] = "intent"
    help: ClassVar[str] = (
        "up to the quota from every intent; a rare share keeps only the rarest intents that together"
        " make up at most that share of the week"
    )
    rare_share: float | None = None

    def check(self) -> None:
        super().check()
        if self.rare_share is not None:
            _check_share(self.rare_share, f"stratum {self.key!r} rare_share")

    def population(self, d: Dialect) -> str:
        sql = super().population(d)
        if self.rare_share is None:
            return sql
        counts = f"SELECT intent, count(*) AS n FROM {d.window} WHERE intent IS NOT NULL GROUP BY intent"
        running = (
            "SELECT intent, sum(n) OVER (ORDER BY n, intent"
            " ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
            f" AS upto FROM ({counts}) c"
        )
        share = f"CAST({self.rare_share!r} AS DOUBLE) * (SELECT count(*) FROM {d.window})"
        return f"{sql} AND intent IN (SELECT intent FROM ({running}) r WHERE upto <= {share})"


@dataclass(frozen=True)
class JudgeBandStratum(Stratum):
    key: ClassVar[str] = "judge_band"
    help: ClassVar[str] = "borderline judge confidence"
    low: float = 0.4
    high: float = 0.7

    def check(self) -> None:
        for bound in (self.low, self.high):
            if _not_number(bound) or not 0 <= bound <= 1:
                raise BadInput(f"stratum {self.key!r} judge band bound {bound!r}: expected 0..1")
        if self.low > self.high:
            raise BadInput(f"stratum {self.key!r} judge band {self.low}-{self.high}: low is above high")

    @property
    def label(self) -> str:
        return f"judge_score {self.low:g}-{self.high:g}"

    def population(self, d: Dialect) -> str:
        return (
            f"SELECT trace_id, {d.quote(self.label)} AS stratum FROM {d.window} WHERE judge_score"
            f" BETWEEN CAST({float(self.low)!r} AS DOUBLE) AND CAST({float(self.high)!r} AS DOUBLE)"
        )


@dataclass(frozen=True)
class LongConversationStratum(Stratum):
    key: ClassVar[str] = "long_conversation"
    help: ClassVar[str] = "many user turns"
    min_turns: int = 5

    def check(self) -> None:
        _check_int(self.min_turns, f"stratum {self.key!r} min_turns", 1)

    @property
    def label(self) -> str:
        return f"turns >= {self.min_turns}"

    def population(self, d: Dialect) -> str:
        label = d.quote(self.label)
        return f"SELECT trace_id, {label} AS stratum FROM {d.window} WHERE turns >= {self.min_turns}"


@dataclass(frozen=True)
class _Tail(Stratum):
    """The top share of the week by a column; ties broken by trace_id so the size is exact."""

    top_share: float = 0.05
    column: ClassVar[str] = ""

    def check(self) -> None:
        _check_share(self.top_share, f"stratum {self.key!r} top_share")

    @property
    def label(self) -> str:
        return f"{self.column} top {self.top_share:.0%}"

    def population(self, d: Dialect) -> str:
        ranked = (
            f"SELECT trace_id, row_number() OVER (ORDER BY {self.column} DESC, trace_id) AS r,"
            f" count(*) OVER () AS known FROM {d.window} WHERE {self.column} IS NOT NULL"
        )
        return (
            f"SELECT trace_id, {d.quote(self.label)} AS stratum FROM ({ranked}) t"
            f" WHERE r <= ceil(CAST({float(self.top_share)!r} AS DOUBLE) * known)"
        )


@dataclass(frozen=True)
class CostTailStratum(_Tail):
    key: ClassVar[str] = "cost_tail"
    help: ClassVar[str] = "the most expensive share of the week"
    column: ClassVar[str] = "cost_usd"


@dataclass(frozen=True)
class LatencyTailStratum(_Tail):
    key: ClassVar[str] = "latency_tail"
    help: ClassVar[str] = "the slowest share of the week"
    column: ClassVar[str] = "latency_ms"


@dataclass(frozen=True)
class SignalStratum(Stratum):
    """One stratum per named signal: up to the quota of the traces where it fires (a declared signal
    too frequent to take whole, or a built-in one taken as a quota instead of every trace)."""

    key: ClassVar[str] = "signal"
    help: ClassVar[str] = "up to the quota from the traces where each named signal fires"
    names: tuple[str, ...] = ()

    def check(self) -> None:
        names = _labels(self.names, f"stratum {self.key!r} names")
        object.__setattr__(self, "names", _anomaly_signals(names))

    def population(self, d: Dialect) -> str:
        if not self.names:
            raise BadInput(f"stratum {self.key!r} names no signal: name at least one")
        return "\nUNION ALL\n".join(
            f"SELECT trace_id, {d.quote('signal=' + name)} AS stratum FROM {d.window}"
            f" WHERE {signal_predicate(name)}"
            for name in self.names
        )


def signal_predicate(name: str) -> str:
    """The SQL predicate (any engine) over the window that says the signal ``name`` fires."""
    if name in ANOMALY_SIGNALS:
        return ANOMALY_SIGNALS[name]
    found = declared(name)
    if found is None:
        raise BadInput(f"unknown anomaly signal {name!r}; expected one of {', '.join(signal_names())}")
    return found.fires(found.column)


STRATA: dict[str, type[Stratum]] = {
    kind.key: kind
    for kind in (
        CohortStratum,
        IntentStratum,
        JudgeBandStratum,
        LongConversationStratum,
        CostTailStratum,
        LatencyTailStratum,
        SignalStratum,
    )
}
STRATUM_KEYS = tuple(STRATA)


# The plan ----------------------------------------------------------------------------------------


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
        _check_text(self.name, "plan name")
        object.__setattr__(self, "name", self.name.strip())
        _check_int(self.seed, "seed", 0)
        if self.random_rate is not None and (_not_number(self.random_rate) or not 0 < self.random_rate <= 1):
            raise BadInput(f"random rate {self.random_rate!r}: expected a number with 0 < rate <= 1")
        object.__setattr__(self, "anomaly", _anomaly_signals(self.anomaly))
        object.__setattr__(self, "strata", tuple(self.strata))
        keys = [s.key for s in self.strata]
        if any(isinstance(s, SignalStratum) and not s.names for s in self.strata):
            raise BadInput("stratum 'signal' names no signal: name at least one")
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
            anomaly=tuple(_list(body.get("anomaly", []), "anomaly")),
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

    @property
    def declared(self) -> tuple[Declared, ...]:
        """The declared signals the plan's rules read (their values join the window)."""
        names = [*self.anomaly, *(n for s in self.strata if isinstance(s, SignalStratum) for n in s.names)]
        found = [declared(name) for name in dict.fromkeys(names) if name not in ANOMALY_SIGNALS]
        return tuple(d for d in found if d is not None)

    def as_json(self) -> str:
        """The plan as one canonical JSON text (a batch stores it; equal plans give equal text)."""
        return json.dumps(self.as_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> Plan:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _stratum(body: object) -> Stratum:
    if not isinstance(body, dict) or not isinstance(body.get("key"), str):
        raise BadInput(f"stratum {body!r}: expected a table with a 'key'")
    fields = dict(body)
    return Stratum.of(fields.pop("key"), **fields)


def _list(value: object, what: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise BadInput(f"{what} {value!r}: expected a list")
    return list(value)


def _labels(values: object, what: str) -> tuple[str, ...]:
    values = tuple(_list(values, what))
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise BadInput(f"{what} {list(values)!r}: expected non-empty strings")
    for value in values:
        _check_text(value, what)
    return values


def _check_text(value: str, what: str) -> None:
    bad = UNSAFE_TEXT.search(value)
    if bad:
        raise BadInput(f"{what} {value[:80]!r}: holds the character {bad.group()!r}; expected printable text")


def _anomaly_signals(signals: object) -> tuple[str, ...]:
    signals = tuple(_list(signals, "anomaly"))
    known = signal_names()
    for signal in signals:
        if signal not in known:
            raise BadInput(f"unknown anomaly signal {signal!r}; expected one of {', '.join(known)}")
    return tuple(s for s in known if s in signals)  # canonical order, no repeats


def _not_number(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)


def _check_int(value: object, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INTEGER:
        raise BadInput(f"{what} {value!r}: expected an integer from {minimum} to {MAX_INTEGER}")


def _check_share(value: object, what: str) -> None:
    if _not_number(value) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise BadInput(f"{what} {value!r}: expected a number with 0 < share <= 1")


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


def week_bounds(week: str) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants an ISO week starts and ends (Monday 00:00 to the next Monday 00:00)."""
    match = WEEK_PATTERN.match(parse_week(week))
    assert match is not None  # parse_week refuses any other text
    monday = dt.date.fromisocalendar(int(match[1]), int(match[2]), 1)
    start = dt.datetime.combine(monday, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=7)


# The plan the demo database runs every week; data/plans/weekly.toml is the same plan as a file.
DEMO_PLAN = Plan(
    name="weekly",
    seed=7,
    random_rate=0.02,
    anomaly=tuple(ANOMALY_SIGNALS),
    strata=(CohortStratum(quota=4), JudgeBandStratum(quota=8, low=0.4, high=0.7), CostTailStratum(quota=4)),
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
    except OSError as error:
        raise BadInput(f"plan file {str(path)!r} cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise BadInput(f"plan file {str(path)!r} is not UTF-8 (byte {error.start})") from None
    try:
        body = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except RecursionError:
        raise BadInput(f"plan file {str(path)!r} cannot be read: nested too deeply") from None
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise BadInput(f"plan file {str(path)!r} cannot be read: {error}") from None
    try:
        return Plan.from_dict(body)
    except BadInput as error:
        raise BadInput(f"plan file {str(path)!r}: {error}") from None


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
        store_plan(db, plan, actor)
        audit(db, actor, "save_plan", "sampling_plan", plan.name, plan=plan.as_dict())


def store_plan(db: Database, plan: Plan, actor: str) -> None:
    """Write a plan under its name, replacing an earlier version; the caller audits, inside ``write``."""
    db.table("sampling_plans").upsert(
        {"name": plan.name, "body": json.dumps(plan.as_dict()), "updated_at": now(), "updated_by": actor},
        pk="name",
    )


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
