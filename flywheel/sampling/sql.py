"""A plan compiled to SQL: the same statements, spelled for SQLite, DuckDB or Spark SQL.

Every choice is a pure function of seed and data, written with what the three engines share:
``md5`` (SQLite gets it as a registered function), string comparison of fixed-width hex, window
functions and ``ceil`` over doubles. So the same plan on the same traces picks exactly the same
traces and counts the same ledger wherever it runs.

The statements build four relations and read three results:

    fw_window   the week's traces (only the columns rules read)
    fw_pool     one row per (rule, stratum, trace) with ``picked`` set for the rule's picks
    fw_items    one row per picked trace with its highest priority and its seeded order key
    fw_batch    the batch: anomalies first, then strata, then random picks up to the cap; every anomaly
                stays even past the cap (``over_cap`` marks those beyond it)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flywheel.errors import BadInput
from flywheel.sampling.plans import PRIORITY, Dialect, Plan, signal_predicate
from flywheel.traces.signals import SIGNAL_KEYS

HASH_SPACE = 16**8  # the random predicate compares the first 8 hex digits of an MD5
RULE_COLUMNS = ("trace_id", "cohort", "intent", *SIGNAL_KEYS)  # what a plan's rules read


class SQLiteDialect(Dialect):
    """SQLite: temp tables, ``md5`` registered on the connection."""

    name = "sqlite"

    def materialize(self, name: str, select: str) -> list[str]:
        return [f"DROP TABLE IF EXISTS temp.{name}", f"CREATE TEMP TABLE {name} AS {select}"]

    def ident(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'


class DuckDBDialect(Dialect):
    name = "duckdb"

    def materialize(self, name: str, select: str) -> list[str]:
        return [f"CREATE OR REPLACE TEMP TABLE {name} AS {select}"]

    def ident(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'


class SparkDialect(Dialect):
    """Spark SQL: backslashes escape in string literals, identifiers take backticks, CACHE TABLE."""

    name = "spark"

    def quote(self, value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def materialize(self, name: str, select: str) -> list[str]:
        return [f"DROP VIEW IF EXISTS {name}", f"CACHE TABLE {name} AS {select}"]

    def ident(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"


DIALECTS = {d.name: d for d in (SQLiteDialect(), DuckDBDialect(), SparkDialect())}


@dataclass(frozen=True)
class PlanSQL:
    """The statements one engine runs for a plan and week, then the queries it reads results with."""

    engine: str
    statements: list[str]
    queries: dict[str, str]

    def text(self) -> str:
        """Everything as one script, in the order it runs."""
        parts = [*self.statements, *(f"-- {name}\n{sql}" for name, sql in self.queries.items())]
        return ";\n\n".join(parts) + ";"


def threshold(rate: float) -> int:
    return round(rate * HASH_SPACE)


def random_predicate_sql(plan: Plan, column: str = "trace_id") -> str:
    """The random rule as a SQL predicate over ``md5``, portable to warehouses (Postgres, Snowflake,
    DuckDB, Spark; BigQuery spells the hash ``TO_HEX(MD5(...))``).

    Fixed-width lowercase hex compares as text exactly as the number it spells, so no dialect's
    hex-to-integer conversion is needed.
    """

    if plan.random_rate is None:
        raise BadInput(f"plan {plan.name!r} has no random rule")
    bound = threshold(plan.random_rate)
    digest = f"substr(lower(md5('{plan.seed}:' || {column})), 1, 8)"
    if bound >= HASH_SPACE:
        return f"{digest} <= 'ffffffff'"
    return f"{digest} < '{bound:08x}'"


def order_key(plan: Plan, column: str = "trace_id") -> str:
    # Quota picks and the cap use an order independent of the random predicate, so a stratum's
    # picks are not mostly traces the random rule took already.
    return f"md5('{plan.seed}:order:' || {column})"


def _rule(kind: str, rule: str, stratum: str, reason: str, quota: str, picked: str, source: str) -> str:
    return (
        f"SELECT trace_id, '{kind}' AS kind, '{rule}' AS rule, {stratum} AS stratum, {reason} AS reason,"
        f" {PRIORITY[kind]} AS priority, {quota} AS quota, {picked} AS picked FROM {source}"
    )


def pool_select(plan: Plan, d: Dialect) -> str:
    """Every rule's population as rows of fw_pool, with the rule's picks marked."""
    no_quota = "CAST(NULL AS INTEGER)"
    parts = [
        _rule(
            "anomaly",
            f"anomaly:{signal}",
            f"'{signal}'",
            f"'anomaly:{signal}'",
            no_quota,
            "1",
            f"{d.window} WHERE {signal_predicate(signal)}",
        )
        for signal in plan.anomaly
    ]
    for stratum in plan.strata:
        ranked = (
            f"(SELECT trace_id, stratum, row_number() OVER (PARTITION BY stratum ORDER BY"
            f" {order_key(plan)}, trace_id) AS n FROM ({stratum.population(d)}) s) q"
        )
        picked = f"CASE WHEN n <= {stratum.quota} THEN 1 ELSE 0 END"
        parts.append(
            _rule(
                "stratified",
                f"stratified:{stratum.key}",
                "stratum",
                "'stratified:' || stratum",
                str(stratum.quota),
                picked,
                ranked,
            )
        )
    if plan.random_rate is not None:
        picked = f"CASE WHEN {random_predicate_sql(plan)} THEN 1 ELSE 0 END"
        parts.append(_rule("random", "random", "'all traces'", "'random'", no_quota, picked, d.window))
    return "\nUNION ALL\n".join(parts)


def compile_plan(plan: Plan, d: Dialect, window: str, setup: Sequence[str] = ()) -> PlanSQL:
    """The plan's statements and result queries for one engine; ``window`` selects the week's traces."""
    items = (
        f"SELECT trace_id, min(priority) AS priority, {order_key(plan)} AS okey"
        " FROM fw_pool WHERE picked = 1 GROUP BY trace_id"
    )
    # The cap limits stratified and random picks only: every anomaly stays, even past the cap.
    anomaly = PRIORITY["anomaly"]
    if plan.cap:
        over = f"CASE WHEN n > {plan.cap} THEN 1 ELSE 0 END"
        cap = f" WHERE n <= {plan.cap} OR priority = {anomaly}"
    else:
        over, cap = "0", ""
    batch = (
        f"SELECT trace_id, {over} AS over_cap FROM (SELECT trace_id, priority,"
        f" row_number() OVER (ORDER BY priority, okey, trace_id) AS n FROM fw_items) ranked{cap}"
    )
    statements = [
        *setup,
        *d.materialize("fw_window", window),
        *d.materialize("fw_pool", pool_select(plan, d)),
        *d.materialize("fw_items", items),
        *d.materialize("fw_batch", batch),
    ]
    queries = {
        "counts": "SELECT (SELECT count(*) FROM fw_window) AS window_size,"
        " (SELECT count(*) FROM fw_items) AS selected,"
        f" (SELECT count(*) FROM fw_items WHERE priority = {anomaly}) AS anomalies",
        "ledger": "SELECT kind, rule, stratum, max(quota) AS quota, count(*) AS population,"
        " sum(picked) AS selected FROM fw_pool GROUP BY kind, rule, stratum",
        "members": "SELECT p.trace_id, p.kind, p.rule, p.stratum, p.reason, p.priority, p.picked, b.over_cap"
        " FROM fw_pool p JOIN fw_batch b ON b.trace_id = p.trace_id",
    }
    if plan.declared:  # how many traces carry each declared signal: absent data is said, not read as 0
        queries["known"] = " UNION ALL ".join(
            f"SELECT '{s.name}' AS signal, count({s.column}) AS known FROM fw_window" for s in plan.declared
        )
    return PlanSQL(d.name, statements, queries)


def store_window(week: str, plan: Plan | None = None) -> str:
    """The week's traces in the store (the SQLite engine's window), with the value of every declared
    signal the plan reads."""
    values = [f"{s.value_sql()} AS {s.column}" for s in (plan.declared if plan else ())]
    return f"SELECT {', '.join([*RULE_COLUMNS, *values])} FROM traces WHERE week = '{week}'"
