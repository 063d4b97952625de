"""Sampling at the source: run a plan where the traces live, bring only the sample into the store.

DuckDB (embedded) reads Parquet, JSONL or CSV files and globs; Spark SQL runs the same statements on a
cluster or in local mode. Both compile the plan exactly as the store does (``flywheel.sampling.sql``),
so the same traces give the same picks and the same ledger. The picked rows then go through
``ingest`` like any file (a bad row is quarantined, never crashes the run), the batch and its ledger
are written with populations counted at the source, and the batch goes to the scrubber.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from sqlite_utils import Database

from flywheel.config import Config
from flywheel.errors import BadInput
from flywheel.ingest.run import ingest_lines
from flywheel.sampling.batches import (
    Progress,
    SampleRun,
    existing_batch,
    record_batch,
    run_compiled,
    scrub_batch,
)
from flywheel.sampling.plans import Plan, parse_week, week_bounds
from flywheel.sampling.sql import RULE_COLUMNS, DuckDBDialect, PlanSQL, SparkDialect, compile_plan
from flywheel.traces.queries import BOOL_SIGNALS, SIGNALS
from flywheel.traces.signals import declared_signals

FIELDS = ("trace_id", "timestamp", "input", "output", "messages", "cohort", "intent", *SIGNALS, "metadata")
ENGINES = ("duckdb", "spark")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_ \-]*(\.[A-Za-z_][A-Za-z0-9_ \-]*)*$")
_TYPES = {"text": 0, "int": 1, "real": 2}
_RULE_TYPES = {
    "trace_id": "text",
    "cohort": "text",
    "intent": "text",
    "thumbs": "text",
    "judge_score": "real",
    "latency_ms": "real",
    "cost_usd": "real",
    "turns": "int",
    **dict.fromkeys(BOOL_SIGNALS, "int"),
}


# Dialects at the source ------------------------------------------------------------------------------


class DuckDBSource(DuckDBDialect):
    types = ("VARCHAR", "BIGINT", "DOUBLE")

    def setup(self, source: str, fmt: str) -> list[str]:
        reader = {
            "parquet": f"read_parquet({self.quote(source)}, union_by_name = true)",
            "json": f"read_json_auto({self.quote(source)}, format = 'newline_delimited',"
            " union_by_name = true)",
            "csv": f"read_csv_auto({self.quote(source)}, header = true, union_by_name = true)",
        }[fmt]
        return ["SET TimeZone = 'UTC'", f"CREATE OR REPLACE VIEW fw_source AS SELECT * FROM {reader}"]

    def cast(self, expr: str, kind: str) -> str:
        return f"TRY_CAST({expr} AS {kind})"

    def timestamp(self, expr: str) -> str:
        return self.cast(expr, "TIMESTAMPTZ")

    def instant(self, moment: dt.datetime) -> str:
        return f"TIMESTAMPTZ '{moment:%Y-%m-%d %H:%M:%S}+00'"


class SparkSource(SparkDialect):
    types = ("STRING", "BIGINT", "DOUBLE")

    def setup(self, source: str, fmt: str) -> list[str]:
        options = f"path {self.quote(source)}"
        if fmt == "csv":
            options += ", header 'true', inferSchema 'true'"
        return [
            "SET spark.sql.session.timeZone = UTC",
            f"CREATE OR REPLACE TEMPORARY VIEW fw_source USING {fmt} OPTIONS ({options})",
        ]

    def cast(self, expr: str, kind: str) -> str:
        return f"try_cast({expr} AS {kind})"

    def timestamp(self, expr: str) -> str:
        return self.cast(expr, "TIMESTAMP")

    def instant(self, moment: dt.datetime) -> str:
        return f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S}'"


SOURCE_DIALECTS: dict[str, DuckDBSource | SparkSource] = {"duckdb": DuckDBSource(), "spark": SparkSource()}


def source_format(source: str) -> str:
    """'parquet', 'json' or 'csv', from the file name or glob."""
    name = source.lower().removesuffix(".gz")
    for fmt, suffixes in (
        ("parquet", (".parquet", ".pq")),
        ("json", (".jsonl", ".ndjson", ".json")),
        ("csv", (".csv",)),
    ):
        if name.endswith(suffixes):
            return fmt
    raise BadInput(
        f"source {source!r}: expected Parquet, JSONL or CSV files (.parquet, .jsonl, .csv, or a glob)"
    )


# Column mapping --------------------------------------------------------------------------------------


def parse_columns(pairs: list[str]) -> dict[str, str]:
    """``["trace_id=id", "signals.thumbs=feedback"]`` as a mapping from our field to the source's column."""
    mapping = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep:
            raise BadInput(f"column mapping {pair!r}: expected OURS=THEIRS, e.g. trace_id=request_id")
        mapping[ours.strip().removeprefix("signals.")] = theirs.strip()
    return check_columns(mapping)


def check_columns(mapping: dict[str, str]) -> dict[str, str]:
    """Refuse a mapping to a field we do not have or from a name that is not a column path."""
    for ours, theirs in mapping.items():
        if ours not in FIELDS:
            raise BadInput(f"column mapping for {ours!r}: expected one of {', '.join(FIELDS)}")
        if not _PATH.match(theirs):
            raise BadInput(f"column mapping {ours}={theirs!r}: expected a column name (or struct.field)")
    return mapping


def resolve_columns(
    described: dict[str, list[str]], mapping: dict[str, str] | None = None
) -> dict[str, tuple | None]:
    """Each of our fields as a column path at the source (None: the source has no such column).

    ``described`` maps each source column to its struct fields. Our own names are found by default,
    signals also as ``signals.x`` columns (CSV) or fields of a ``signals`` struct (JSON, Parquet).
    """
    mapping = check_columns(dict(mapping or {}))
    paths: dict[str, tuple | None] = {}
    for field in FIELDS:
        paths[field] = _path(described, mapping[field]) if field in mapping else _default(described, field)
    for signal in declared_signals():  # found by their field; absent ones stay NULL and say so
        head, _, key = signal.field.partition(".")
        if f"{head}.{key}" in described:
            paths[f"signal:{signal.name}"] = (f"{head}.{key}",)
        elif key in described.get(head, []):
            paths[f"signal:{signal.name}"] = (head, key)
    for required in ("trace_id", "input"):
        if paths[required] is None:
            raise BadInput(
                f"the source has no column for {required!r} (columns: {', '.join(described) or 'none'});"
                f" map one with --column {required}=NAME"
            )
    return paths


def _path(described: dict[str, list[str]], name: str) -> tuple:
    if name in described:
        return (name,)
    head, _, rest = name.partition(".")
    if rest and head in described and rest in described[head]:
        return (head, rest)
    raise BadInput(f"the source has no column {name!r} (columns: {', '.join(described)})")


def _default(described: dict[str, list[str]], field: str) -> tuple | None:
    if field in described:
        return (field,)
    if field == "timestamp" and "ts" in described:
        return ("ts",)
    if field in SIGNALS:
        if f"signals.{field}" in described:
            return (f"signals.{field}",)
        if field in described.get("signals", []):
            return ("signals", field)
    return None


def _struct_fields(type_name: str) -> list[str]:
    if type_name.upper().startswith("STRUCT("):  # DuckDB: STRUCT(thumbs VARCHAR, turns BIGINT)
        return re.findall(r'[(,]\s*"?([A-Za-z_]\w*)"?\s+[A-Za-z]', type_name)
    if type_name.lower().startswith("struct<"):  # Spark: struct<thumbs:string,turns:bigint>
        return re.findall(r"[<,]\s*`?([A-Za-z_]\w*)`?\s*:", type_name)
    return []


# The SQL at the source ---------------------------------------------------------------------------------


def source_sql(
    plan: Plan, week: str, engine: str, source: str, paths: dict[str, tuple | None] | None = None
) -> PlanSQL:
    """The statements ``engine`` runs to sample ``week`` of ``source`` with ``plan``, then the queries it
    reads the results with and the picked rows. Without ``paths`` they are read from the source's schema."""
    d = SOURCE_DIALECTS[engine]
    paths = paths or source_paths(source)
    start, end = week_bounds(parse_week(week))
    column = {field: _expr(d, path) for field, path in paths.items()}
    ts = d.timestamp(column["timestamp"])
    in_week = f"{ts} >= {d.instant(start)} AND {ts} < {d.instant(end)}"
    trace_id = f"trim({d.cast(column['trace_id'], d.types[0])})"
    selected = [f"{_cast(d, name, column[name])} AS {name}" for name in RULE_COLUMNS]
    selected += [
        f"{d.cast(column.get('signal:' + s.name, 'NULL'), d.types[2])} AS {s.column}" for s in plan.declared
    ]
    window = f"SELECT {', '.join(selected)} FROM fw_source WHERE {in_week} AND {trace_id} IS NOT NULL"
    compiled = compile_plan(plan, d, window, d.setup(source, source_format(source)))
    rows = ", ".join(f"{column[name]} AS {d.ident(name)}" for name in row_fields(paths))
    compiled.queries["rows"] = (
        f"SELECT {rows} FROM fw_source WHERE {in_week} AND {trace_id} IN (SELECT trace_id FROM fw_batch)"
    )
    return compiled


def row_fields(paths: dict[str, tuple | None]) -> list[str]:
    """The fields a picked row brings along: ours, then the declared signals the source carries."""
    return [*FIELDS, *(name for name in paths if name.startswith("signal:"))]


def source_paths(source: str, columns: dict[str, str] | None = None) -> dict[str, tuple | None]:
    """Our fields as the source's column paths, read from the files' schema by DuckDB; columns named
    as ours when no file matches yet (the SQL is then a template for such a source)."""
    runner = DuckDBEngine()
    try:
        for sql in SOURCE_DIALECTS["duckdb"].setup(source, source_format(source)):
            runner.execute(sql)
        described = runner.describe()
    except BadInput:
        described = {field: [] for field in FIELDS}
    finally:
        runner.close()
    return resolve_columns(described, columns)


def _expr(d, path: tuple | None) -> str:
    return "NULL" if path is None else ".".join(d.ident(part) for part in path)


def _cast(d, name: str, expr: str) -> str:
    kind = d.types[_TYPES[_RULE_TYPES[name]]]
    if name in ("trace_id", "cohort", "intent"):
        return f"NULLIF(trim({d.cast(expr, kind)}), '')"
    if name in BOOL_SIGNALS:
        return d.cast(d.cast(expr, "BOOLEAN"), kind)
    return d.cast(expr, kind)


# Engines -------------------------------------------------------------------------------------------


class DuckDBEngine:
    """An in-process DuckDB connection that keeps the log of every statement it ran."""

    name = "duckdb"

    def __init__(self, master: str | None = None) -> None:
        import duckdb

        self.con = duckdb.connect()
        self.log: list[str] = []

    def execute(self, sql: str) -> None:
        self.log.append(sql)
        try:
            self.con.execute(sql)
        except Exception as error:  # duckdb.Error: a missing file, an unreadable row type
            raise BadInput(f"DuckDB could not run the plan: {_first_line(error)}") from None

    def fetch(self, sql: str) -> list[tuple]:
        self.execute(sql)
        return self.con.fetchall()

    def describe(self) -> dict[str, list[str]]:
        return {name: _struct_fields(kind) for name, kind, *_ in self.fetch("DESCRIBE fw_source")}

    def close(self) -> None:
        self.con.close()


class SparkEngine:
    """Spark SQL on ``master`` (default local mode); keeps the log of every statement it ran."""

    name = "spark"

    def __init__(self, master: str | None = None) -> None:
        self.spark = spark_session(master)
        self.log: list[str] = []

    def execute(self, sql: str) -> None:
        self.log.append(sql)
        try:
            self.spark.sql(sql)
        except Exception as error:  # pyspark's AnalysisException and friends
            raise BadInput(f"Spark could not run the plan: {_first_line(error)}") from None

    def fetch(self, sql: str) -> list[tuple]:
        self.log.append(sql)
        try:
            return [tuple(_plain(v) for v in row) for row in self.spark.sql(sql).collect()]
        except Exception as error:
            raise BadInput(f"Spark could not run the plan: {_first_line(error)}") from None

    def describe(self) -> dict[str, list[str]]:
        rows = self.fetch("DESCRIBE fw_source")
        return {name: _struct_fields(kind) for name, kind, *_ in rows if name and not name.startswith("#")}

    def close(self) -> None:
        for name in ("fw_batch", "fw_items", "fw_pool", "fw_window"):
            self.spark.sql(f"DROP VIEW IF EXISTS {name}")


def spark_session(master: str | None = None):
    """The process's SparkSession (created on first use; quiet, UTC, no UI)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise BadInput("--engine spark needs pyspark (pip install pyspark) and a Java runtime") from None
    spark = (
        SparkSession.builder.master(master or "local[1]")
        .appName("flywheel-sample")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.default.parallelism", "1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def make_engine(engine: str, master: str | None = None) -> DuckDBEngine | SparkEngine:
    if engine not in ENGINES:
        raise BadInput(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    return (DuckDBEngine if engine == "duckdb" else SparkEngine)(master)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _plain(value: object) -> object:
    if hasattr(value, "asDict"):  # a Spark Row (a struct)
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# Sampling a source ---------------------------------------------------------------------------------


def sample_source(
    db: Database,
    plan: Plan,
    source: str,
    actor: str,
    engine: str = "duckdb",
    columns: dict[str, str] | None = None,
    spark_master: str | None = None,
    week: str | None = None,
    again: bool = False,
    progress: Progress | None = None,
    scrub: bool = True,
    *,
    config: Config,
) -> SampleRun:
    """Sample ``week`` of ``source`` with ``plan`` on ``engine``; ingest only the picked rows, record
    the batch and its ledger (populations counted at the source) and scrub it."""
    fmt = source_format(source)
    runner = make_engine(engine, spark_master)
    try:
        d = SOURCE_DIALECTS[engine]
        setup = d.setup(source, fmt)
        for sql in setup:
            runner.execute(sql)
        paths = resolve_columns(runner.describe(), columns)
        week = parse_week(week or plan.week or _latest_week(runner, d, paths))
        found = None if again else existing_batch(db, plan, week, source)
        if found is not None:
            return SampleRun(found, scrub_batch(db, found.id, actor, progress) if scrub else 0, repeated=True)
        compiled = source_sql(plan, week, engine, source, paths)
        rest = PlanSQL(compiled.engine, compiled.statements[len(setup) :], compiled.queries)
        outcome = run_compiled(runner, rest, progress)
        rows = runner.fetch(compiled.queries["rows"])
    finally:
        runner.close()
    report = ingest_lines(db, _trace_lines(rows, row_fields(paths)), source, actor, config=config)
    kept = _stored(db, outcome.trace_ids)
    log = ";\n\n".join(runner.log) + ";"
    batch = record_batch(db, plan, week, outcome, actor, engine, log, source, kept, report.quarantined)
    return SampleRun(batch, scrub_batch(db, batch.id, actor, progress) if scrub else 0)


def _latest_week(runner, d, paths: dict[str, tuple | None]) -> str:
    ts = d.timestamp(_expr(d, paths["timestamp"]))
    latest = runner.fetch(f"SELECT max({ts}) FROM fw_source WHERE {ts} <= current_timestamp")[0][0]
    if latest is None:
        raise BadInput("the source holds no trace with a readable timestamp; name a week with --week")
    year, week, _ = latest.isocalendar()
    return f"{year}-W{week:02d}"


def _trace_lines(rows: list[tuple], fields: Sequence[str] = FIELDS) -> Iterator[bytes]:
    """The picked rows as trace JSON lines, in our format, for ``ingest``."""
    extra = {name: declared_field(name) for name in fields if name.startswith("signal:")}
    for row in rows:
        values = dict(zip(fields, row, strict=True))
        signals = {name: _bool(name, values.pop(name)) for name in SIGNALS}
        parked = {field: values.pop(name) for name, field in extra.items()}
        trace: dict[str, Any] = {k: _json_value(v) for k, v in values.items() if v is not None}
        trace["signals"] = {k: _json_value(v) for k, v in signals.items() if v is not None}
        for name in ("messages", "metadata"):
            if isinstance(trace.get(name), str):
                with contextlib.suppress(ValueError):  # else ingest quarantines it with the reason
                    trace[name] = json.loads(trace[name])
        for field, value in parked.items():
            head, _, key = field.partition(".")
            if value is not None and (head == "signals" or isinstance(trace.get("metadata", {}), dict)):
                trace.setdefault(head, {})[key] = _json_value(value)
        yield json.dumps(trace, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")


def declared_field(name: str) -> str:
    """The field (``signals.KEY`` or ``metadata.KEY``) of the declared signal behind a row column."""
    return next(s.field for s in declared_signals() if f"signal:{s.name}" == name)


def _bool(name: str, value: object) -> object:
    if name in BOOL_SIGNALS and type(value) is int and value in (0, 1):
        return bool(value)
    return value


def _json_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _stored(db: Database, trace_ids: set[str]) -> set[str]:
    ids, found = sorted(trace_ids), set[str]()
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        found.update(
            r[0] for r in db.execute(f"SELECT trace_id FROM traces WHERE trace_id IN ({marks})", part)
        )
    return found
