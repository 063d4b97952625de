"""Running a plan: the engine-independent results, batches written in short transactions, the preview.

An engine (SQLite here; DuckDB and Spark in ``flywheel.sampling.source``) runs a plan's compiled
statements and answers three queries; ``Outcome`` turns the answers into the batch's items and ledger
the same way for every engine. Only the final write takes the store's write lock, and only for as long
as it takes to insert the batch (the pool is built in temp tables beforehand, outside any transaction),
so a labeler never waits behind a sampling run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlite_utils import Database

from flywheel.errors import BadInput
from flywheel.review import label_queue
from flywheel.review.scrubs import scrub_traces
from flywheel.sampling.plans import Plan, parse_week
from flywheel.sampling.sql import DIALECTS, PlanSQL, compile_plan, store_window
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import query_rows, write

Progress = Callable[[int, int], None]


class NothingSampled(BadInput):
    """A plan picked no trace: no batch is written, and nobody is told it succeeded."""


class Engine(Protocol):
    """Where a compiled plan runs."""

    name: str

    def execute(self, sql: str) -> None: ...

    def fetch(self, sql: str) -> list[tuple]: ...


# The window ----------------------------------------------------------------------------------------


_ANY_WEEK = re.compile(r"^(-?\d+)-W(\d+)$")


def week_order(week: str) -> tuple[int, int]:
    """A sort key that orders ISO weeks by time, whatever the year's width ('999-W01' < '2026-W01')."""
    match = _ANY_WEEK.match(week)
    return (int(match[1]), int(match[2])) if match else (-(10**9), 0)


def sample_weeks(db: Database) -> list[str]:
    """The ISO weeks that hold traces, newest first (an index skip-scan: one probe per week)."""
    rows = db.execute(
        "WITH RECURSIVE w(week) AS (SELECT min(week) FROM traces UNION ALL"
        " SELECT (SELECT min(week) FROM traces WHERE week > w.week) FROM w WHERE w.week IS NOT NULL)"
        " SELECT week FROM w WHERE week IS NOT NULL"
    )
    return sorted((r[0] for r in rows), key=week_order, reverse=True)


def cohort_values(db: Database) -> list[str]:
    """The cohorts present, in order (an index skip-scan, as for weeks)."""
    rows = db.execute(
        "WITH RECURSIVE c(cohort) AS (SELECT min(cohort) FROM traces UNION ALL"
        " SELECT (SELECT min(cohort) FROM traces WHERE cohort > c.cohort) FROM c WHERE c.cohort IS NOT NULL)"
        " SELECT cohort FROM c WHERE cohort IS NOT NULL"
    )
    return [r[0] for r in rows]


def resolve_week(db: Database, week: str | None) -> str:
    """The week to sample: the one given (which must hold traces), else the latest with traces."""
    weeks = sample_weeks(db)
    if not weeks:
        raise BadInput("there are no traces to sample; import some first")
    if week is None:
        return weeks[0]
    parse_week(week)
    if week not in weeks:
        raise BadInput(f"week {week!r} has no traces; traces span {weeks[-1]}..{weeks[0]}")
    return week


# Engine-independent results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What an engine answered for a plan: window size, picks, per-stratum counts, the batch's rows."""

    window: int
    selected: int
    strata: list[tuple]  # kind, rule, stratum, quota, population, selected
    members: list[tuple]  # trace_id, kind, rule, stratum, reason, priority, picked, over_cap (batch only)
    anomalies: int = 0  # traces the anomaly rules picked (all of them are in the batch, cap or not)
    known: dict[str, int] = dataclasses.field(default_factory=dict)  # declared signal: traces with data

    @property
    def absent(self) -> list[str]:
        """The declared signals the plan reads that no trace of the window carries."""
        return [name for name, count in self.known.items() if not count]

    @property
    def trace_ids(self) -> set[str]:
        return {m[0] for m in self.members}

    def items(self, kept: set[str] | None = None) -> list[dict]:
        """One item per batch trace (``kept`` only, when given) with all its reasons, best first."""
        picks = defaultdict(list)
        for trace_id, _, _, stratum, reason, priority, picked, _ in self.members:
            if picked and (kept is None or trace_id in kept):
                picks[trace_id].append((priority, reason, stratum))
        out = []
        for trace_id, found in sorted(picks.items()):
            found.sort(key=lambda p: (p[0], p[1]))
            reasons = list(dict.fromkeys(reason for _, reason, _ in found))
            out.append(
                {"trace_id": trace_id, "reasons": reasons, "stratum": found[0][2], "priority": found[0][0]}
            )
        return out

    def ledger(self, kept: set[str] | None = None) -> list[dict]:
        """Per rule and stratum: population, picks, picks the cap dropped, traces in the batch, and for
        an anomaly rule how many of those are held beyond the cap (the cap never drops an anomaly)."""
        picked_in: defaultdict[tuple, int] = defaultdict(int)
        in_batch: defaultdict[tuple, int] = defaultdict(int)
        over_cap: defaultdict[tuple, int] = defaultdict(int)
        for trace_id, kind, rule, stratum, _, _, picked, over in self.members:
            picked_in[rule, stratum] += int(picked)
            if kept is None or trace_id in kept:
                in_batch[rule, stratum] += 1
                over_cap[rule, stratum] += int(over) if kind == "anomaly" else 0
        return [
            {
                "kind": kind,
                "rule": rule,
                "stratum": stratum,
                "quota": quota,
                "population": int(population),
                "selected": int(selected),
                "dropped": int(selected) - picked_in[rule, stratum],
                "in_batch": in_batch[rule, stratum],
                "over_cap": over_cap[rule, stratum],
            }
            for kind, rule, stratum, quota, population, selected in sorted(self.strata, key=lambda r: r[1:3])
        ] + [
            {
                "kind": "no data",
                "rule": f"signal:{name}",
                "stratum": f"{name}: no trace of the week carries it",
                "quota": None,
                "population": 0,
                "selected": 0,
                "dropped": 0,
                "in_batch": 0,
                "over_cap": 0,
            }
            for name in self.absent
        ]


def run_compiled(engine: Engine, compiled: PlanSQL, progress: Progress | None = None) -> Outcome:
    """Run the statements, then read the results; ``progress`` hears of each statement."""
    total = len(compiled.statements) + len(compiled.queries)
    for done, sql in enumerate(compiled.statements, 1):
        engine.execute(sql)
        if progress:
            progress(done, total)
    answers = {name: engine.fetch(sql) for name, sql in compiled.queries.items()}
    if progress:
        progress(total, total)
    (window, selected, anomalies), *_ = answers["counts"]
    known = {str(name): int(count or 0) for name, count in answers.get("known", [])}
    members = answers["members"]
    return Outcome(int(window), int(selected), answers["ledger"], members, int(anomalies), known)


# The SQLite engine -----------------------------------------------------------------------------------


class SQLiteEngine:
    """The store itself; every statement runs in autocommit (temp tables), never under the write lock."""

    name = "sqlite"

    def __init__(self, db: Database) -> None:
        self.db = db
        register_md5(db)

    def execute(self, sql: str) -> None:
        self.db.execute(sql)

    def fetch(self, sql: str) -> list[tuple]:
        return self.db.execute(sql).fetchall()


def register_md5(db: Database) -> None:
    """Give this connection the ``md5(text)`` SQL function warehouses have built in (and ``ceil``
    where SQLite was built without its math functions)."""
    db.conn.create_function("md5", 1, _md5_hex, deterministic=True)
    try:
        db.execute("SELECT ceil(0.5)")
    except sqlite3.OperationalError:
        db.conn.create_function("ceil", 1, _ceil, deterministic=True)


def _md5_hex(text: object) -> str | None:
    return None if text is None else hashlib.md5(str(text).encode("utf-8", "surrogatepass")).hexdigest()


def _ceil(value: float | None) -> int | None:
    return None if value is None else -int(-value // 1)


def store_sql(plan: Plan, week: str) -> PlanSQL:
    """The statements the SQLite engine runs for ``plan`` on ``week`` of the store."""
    return compile_plan(plan, DIALECTS["sqlite"], store_window(parse_week(week), plan))


# Preview ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """What a plan would pick in a week, before it runs; ``over_cap`` anomalies past the cap stay."""

    week: str
    window: int
    rules: list[dict]
    selected: int
    capped: int
    over_cap: int = 0
    absent: tuple[str, ...] = ()  # declared signals the plan reads that no trace of the week carries


_PREVIEWS: dict[tuple, Preview] = {}


def data_version(db: Database) -> tuple:
    """Changes whenever traces are added (ingest only ever appends): a cache key for week-level results."""
    return tuple(
        db.execute("SELECT (SELECT max(rowid) FROM traces), (SELECT max(id) FROM ingest_runs)").fetchone()
    )


def preview_plan(db: Database, plan: Plan, week: str | None = None) -> Preview:
    """Per rule, how many traces it covers and would pick; the batch size with and without the cap.

    Cached by database, plan, week and data version, so a page rerun does not scan the week again.
    """
    week = resolve_week(db, week or plan.week)
    key = (_db_file(db), plan.as_json(), week, data_version(db))
    if key not in _PREVIEWS:
        outcome = run_compiled(SQLiteEngine(db), store_sql(plan, week))
        if len(_PREVIEWS) >= 64:
            _PREVIEWS.clear()
        _PREVIEWS[key] = _preview(plan, week, outcome)
    return _PREVIEWS[key]


def _preview(plan: Plan, week: str, outcome: Outcome) -> Preview:
    rules: dict[str, dict] = {}
    for _, rule, _, _, population, selected in sorted(outcome.strata, key=lambda r: (_kind_rank(r[0]), r[1])):
        row = rules.setdefault(rule, {"rule": rule, "strata": 0, "population": 0, "picks": 0})
        row["strata"] += 1
        row["population"] += int(population)
        row["picks"] += int(selected)
    over = over_cap(plan.cap, outcome.anomalies)
    capped = min(outcome.selected, plan.cap + over) if plan.cap else outcome.selected
    return Preview(
        week, outcome.window, list(rules.values()), outcome.selected, capped, over, tuple(outcome.absent)
    )


def over_cap(cap: int | None, anomalies: int) -> int:
    """How many anomalies a batch holds beyond its cap (the cap never drops an anomaly)."""
    return max(0, anomalies - cap) if cap else 0


def _kind_rank(kind: str) -> int:
    return {"anomaly": 0, "stratified": 1}.get(kind, 2)


def _db_file(db: Database) -> str:
    return next((r[2] for r in db.execute("PRAGMA database_list") if r[1] == "main"), "")


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
    source: str | None = None
    engine: str = "sqlite"
    quarantined: int = 0
    cap: int | None = None
    anomalies: int = 0

    @property
    def over_cap(self) -> int:
        """Anomalies held beyond the cap: when they alone exceed it, the batch is all anomalies."""
        return over_cap(self.cap, self.anomalies)

    def as_json(self) -> dict:
        """The batch's contract for scripts."""
        out = {
            "batch_id": self.id,
            "plan": self.plan,
            "week": self.week,
            "seed": self.seed,
            "window": self.window,
            "sampled": self.sampled,
            "dropped": self.dropped,
            "reasons": self.reasons,
            "cap": self.cap,
            "anomalies": self.anomalies,
            "over_cap": self.over_cap,
        }
        if self.source is not None:
            out.update(source=self.source, engine=self.engine, quarantined=self.quarantined)
        return out

    def summary(self) -> str:
        """One human-readable line per reason under a headline."""
        where = f" at {self.source} ({self.engine})" if self.source else ""
        lines = [
            f"batch {self.id}: {self.sampled} of {self.window} traces in {self.week}{where} sampled"
            f" (plan {self.plan!r}, seed {self.seed}, {self.dropped} dropped by the cap)"
        ]
        if self.over_cap:
            lines.append(f"  {self.cap_note()}")
        if self.quarantined:
            lines.append(f"  {self.quarantined} picked rows failed validation and were quarantined")
        lines += [f"  {count:6d}  {reason}" for reason, count in self.reasons.items()]
        return "\n".join(lines)

    def cap_note(self) -> str:
        """What the cap did when the anomalies alone exceed it ('' when they do not)."""
        if not self.over_cap:
            return ""
        return (
            f"the {self.anomalies} anomalies alone exceed the cap of {self.cap}: all are kept"
            f" ({self.over_cap} over the cap), and no stratified or random pick is"
        )


def run_plan(db: Database, plan: Plan, actor: str, week: str | None = None) -> Batch:
    """Sample one week of the store with ``plan`` into a new batch (audited).

    The pool is built in temp tables without the write lock; the batch is written in one short
    transaction. A plan that picks nothing raises ``NothingSampled`` and writes nothing.
    """
    week = resolve_week(db, week or plan.week)
    compiled = store_sql(plan, week)
    outcome = run_compiled(SQLiteEngine(db), compiled)
    return record_batch(db, plan, week, outcome, actor, "sqlite", compiled.text())


def record_batch(
    db: Database,
    plan: Plan,
    week: str,
    outcome: Outcome,
    actor: str,
    engine: str,
    sql: str,
    source: str | None = None,
    kept: set[str] | None = None,
    quarantined: int = 0,
) -> Batch:
    """Write the batch, its items and its ledger in one short transaction; audit it."""
    items = outcome.items(kept)
    if not items:
        where = f" at {source}" if source else ""
        lost = f"; {quarantined} picked rows were quarantined" if quarantined else ""
        if outcome.absent:
            lost += f"; no trace carries the signal(s) {', '.join(outcome.absent)}"
        raise NothingSampled(
            f"plan {plan.name!r} picked no trace among the {outcome.window} traces of {week}{where}{lost};"
            " no batch was written"
        )
    with write(db):
        header = {
            "plan_name": plan.name,
            "plan": plan.as_json(),
            "seed": plan.seed,
            "week": week,
            "created_by": actor,
            "created_at": now(),
            "source": source,
            "engine": engine,
            "sql": sql,
            "quarantined": quarantined,
            "cap": plan.cap,
            "anomalies": outcome.anomalies,
        }
        batch_id = write_batch(db, header, items, outcome.ledger(kept))
        batch = _count_batch(db, batch_id, plan, week, outcome, len(items))
        db.table("sample_batches").update(batch_id, {"reasons": json.dumps(batch.reasons)})
        batch = dataclasses.replace(
            batch,
            source=source,
            engine=engine,
            quarantined=quarantined,
            cap=plan.cap,
            anomalies=outcome.anomalies,
        )
        audit(db, actor, "sample", "sample_batch", batch_id, **batch.as_json())
    return batch


def write_batch(db: Database, header: dict, items: list[dict], ledger: list[dict]) -> int:
    """Write a batch row, its items (``reasons`` a list) and its ledger rows; return the batch id.

    The one writer of the batch tables, for plans, drift and siblings alike: queued traces the batch
    picks join it here, so the label queue ranks every sampled trace the same way. Call inside ``write``.
    """
    batch_id = db.table("sample_batches").insert(header).last_pk
    assert batch_id is not None  # a rowid table always reports the new row's key
    db.table("batch_items").insert_all(
        {**item, "batch_id": batch_id, "reasons": json.dumps(item["reasons"])} for item in items
    )
    label_queue.join_batch(db, batch_id)
    db.table("batch_strata").insert_all({**row, "batch_id": batch_id} for row in ledger)
    return batch_id


def _count_batch(db: Database, batch_id: int, plan: Plan, week: str, outcome: Outcome, sampled: int) -> Batch:
    counts = {"window": outcome.window, "selected": outcome.selected, "sampled": sampled}
    counts["dropped"] = outcome.selected - len(outcome.trace_ids)
    db.table("sample_batches").update(batch_id, counts)
    return Batch(
        batch_id,
        plan.name,
        week,
        plan.seed,
        window=counts["window"],
        selected=counts["selected"],
        sampled=counts["sampled"],
        dropped=counts["dropped"],
        reasons=batch_reasons(db, batch_id),
    )


# Sample, then scrub -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRun:
    """A batch handed to the scrubber; ``repeated`` when the plan had already sampled that week."""

    batch: Batch
    scrubbed: int
    repeated: bool = False

    def as_json(self) -> dict:
        return {**self.batch.as_json(), "scrubbed": self.scrubbed, "repeated": self.repeated}

    def summary(self) -> str:
        if self.repeated:
            head = (
                f"plan {self.batch.plan!r} with seed {self.batch.seed} already sampled {self.batch.week}"
                f" into batch {self.batch.id}; no new batch (ask for one with --again).\n"
            )
        else:
            head = ""
        return f"{head}{self.batch.summary()}\n{self.scrubbed} traces sent to the scrubber"


def existing_batch(db: Database, plan: Plan, week: str, source: str | None = None) -> Batch | None:
    """The latest batch this plan (same rules and seed) made of ``week`` (of ``source``), if any."""
    row = db.execute(
        "SELECT id FROM sample_batches WHERE plan = ? AND week = ? AND source IS ? ORDER BY id DESC LIMIT 1",
        [plan.as_json(), week, source],
    ).fetchone()
    return None if row is None else load_batch(db, row[0])


def load_batch(db: Database, batch_id: int) -> Batch:
    """A stored batch as ``run_plan`` reported it."""
    row = db.table("sample_batches").get(batch_id)
    return Batch(
        row["id"],
        row["plan_name"],
        row["week"],
        row["seed"],
        row["window"],
        row["selected"],
        row["sampled"],
        row["dropped"],
        json.loads(row["reasons"] or "{}"),
        row["source"],
        row["engine"] or "sqlite",
        row["quarantined"] or 0,
        row["cap"],
        row["anomalies"] or 0,
    )


def sample_and_scrub(
    db: Database,
    plan: Plan,
    actor: str,
    week: str | None = None,
    again: bool = False,
    progress: Progress | None = None,
) -> SampleRun:
    """Sample a week of the store into a batch and scrub it: the one path the page, CLI and demo take.

    When the same plan and seed already sampled that week, its batch is reused (its scrubbing resumes
    where it stopped) unless ``again`` asks for a new one.
    """
    week = resolve_week(db, week or plan.week)
    batch = None if again else existing_batch(db, plan, week)
    repeated = batch is not None
    if batch is None:
        batch = run_plan(db, plan, actor, week)
    return SampleRun(batch, scrub_batch(db, batch.id, actor, progress), repeated)


def scrub_batch(db: Database, batch_id: int, actor: str, progress: Progress | None = None) -> int:
    """Scrub the batch's traces that have no scrub yet (so a stopped run resumes); how many were scrubbed."""

    return scrub_traces(db, batch_trace_ids(db, batch_id), actor, progress=progress)


def unscrubbed_count(db: Database, batch_id: int) -> int:
    """How many of the batch's traces still wait for the scrubber."""
    return db.execute(
        "SELECT count(*) FROM batch_items b WHERE b.batch_id = ?"
        " AND NOT EXISTS (SELECT 1 FROM scrubs s WHERE s.trace_id = b.trace_id)",
        [batch_id],
    ).fetchone()[0]


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
    """Per rule and stratum: population, picks, dropped by the cap, in the batch, held beyond the cap
    (anomalies, which the cap never drops), and the coverage rate."""
    return query_rows(
        db,
        "SELECT kind, rule, stratum, quota, population, selected, dropped, in_batch,"
        " coalesce(over_cap, 0) AS over_cap, round(in_batch * 1.0 / max(population, 1), 4) AS rate"
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


def batch_sql(db: Database, batch_id: int) -> tuple[str, str]:
    """The engine that made a batch and the SQL it ran."""
    row = db.execute("SELECT engine, sql FROM sample_batches WHERE id = ?", [batch_id]).fetchone()
    return (row[0] or "sqlite", row[1] or "") if row else ("", "")


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
