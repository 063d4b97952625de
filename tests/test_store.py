"""The store's foundations: nested writes, one clock format, one week key, settings, errors, upgrades."""

import random
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from sqlite_utils import Database

from flywheel import errors
from flywheel.config import load_config
from flywheel.errors import BadInput, FlywheelError, StoreError
from flywheel.store.clock import format_ts, iso_week, now
from flywheel.store.db import open_db, write
from flywheel.store.migrations import migrations


def test_a_write_inside_a_write_is_a_savepoint(db):
    with write(db):
        db.execute("INSERT INTO audit_log (actor) VALUES ('outer')")
        with pytest.raises(RuntimeError), write(db):
            db.execute("INSERT INTO audit_log (actor) VALUES ('inner, undone')")
            raise RuntimeError
        with write(db):
            db.execute("INSERT INTO audit_log (actor) VALUES ('inner, kept')")
    assert [r["actor"] for r in db["audit_log"].rows] == ["outer", "inner, kept"]
    with pytest.raises(RuntimeError), write(db):
        with write(db):
            db.execute("INSERT INTO audit_log (actor) VALUES ('released, then undone with the outer')")
        raise RuntimeError
    assert db["audit_log"].count == 2 and not db.conn.in_transaction


def test_a_failed_statement_is_not_dressed_up_as_a_store_error(db):
    with pytest.raises(sqlite3.OperationalError, match="no such table"), write(db):
        db.execute("INSERT INTO nowhere VALUES (1)")
    assert not db.conn.in_transaction


def test_a_held_lock_is_a_store_error(tmp_path):
    path = tmp_path / "l.db"
    first, second = open_db(path), open_db(path, load_config().replace(busy_timeout_ms=50))
    with write(first), pytest.raises(StoreError, match="not writable"), write(second):
        pass


def test_one_timestamp_format_the_same_as_sqlite_writes():
    moment = datetime(2026, 5, 3, 12, 22, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_ts(moment) == "2026-05-03T10:22:00.123Z"
    assert format_ts(datetime(1, 1, 1)) == "0001-01-01T00:00:00.000Z"
    stamp = now()
    assert len(stamp) == 24 and stamp.endswith("Z")
    sqlite_now = (
        sqlite3.connect(":memory:").execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0]
    )
    assert len(sqlite_now) == len(stamp) and abs(
        datetime.fromisoformat(sqlite_now) - datetime.fromisoformat(stamp)
    ) < timedelta(seconds=5)


@pytest.mark.parametrize(
    "ts, week",
    [
        ("2026-11-22T12:00:00.000Z", "2026-W47"),  # SQLite's %W says W46
        ("2026-01-01T00:00:00.000Z", "2026-W01"),  # %W says W00
        ("2027-01-01T00:00:00.000Z", "2026-W53"),
        ("2024-12-30T00:00:00.000Z", "2025-W01"),
    ],
)
def test_iso_weeks_in_python_and_in_sql(db, ts, week):
    assert iso_week(ts) == week
    assert db.execute("SELECT iso_week(?)", [ts]).fetchone()[0] == week
    assert db.execute("SELECT iso_week(NULL), iso_week('garbage')").fetchone() == (None, None)


def test_zero_is_a_valid_seed_and_bounds_are_named():
    assert load_config({"FLYWHEEL_DEMO_SEED": "0"}).demo_seed == 0
    assert load_config({"FLYWHEEL_MAX_BAD_LINES": "0"}).max_bad_lines == 0
    with pytest.raises(BadInput, match=r"FLYWHEEL_INGEST_BATCH='0': expected an integer >= 1"):
        load_config({"FLYWHEEL_INGEST_BATCH": "0"})
    with pytest.raises(BadInput, match="FLYWHEEL_DEMO_SEED='-1'"):
        load_config({"FLYWHEEL_DEMO_SEED": "-1"})


def test_every_error_class_lives_in_errors_and_old_names_still_import():
    from flywheel.labeling.labels import NothingToUndo, StaleClaim
    from flywheel.labeling.taxonomy import CodeExists, CodeNotFound
    from flywheel.review.scrubs import AlreadyReviewed

    for cls in (NothingToUndo, StaleClaim, AlreadyReviewed, CodeExists, CodeNotFound):
        assert cls.__module__ == "flywheel.errors" and issubclass(cls, FlywheelError)
        assert getattr(errors, cls.__name__) is cls
        assert cls.__name__ in errors.__doc__


def _oldest_schema_with_data(path):
    conn = sqlite3.connect(path, isolation_level=None)
    db = Database(conn)
    migrations.apply(db, stop_before=migrations.pending(db)[1].name)
    assert [m.name for m in migrations.applied(db)] == ["m001_traces_ingest_audit"]
    db["ingest_runs"].insert({"id": 1, "started_at": "2026-05-01T00:00:00.000000Z", "status": "done"})
    db["traces"].insert(
        {
            "trace_id": "t-1",
            "ts": "2026-05-03T10:22:00.000Z",
            "week": "2026-W18",
            "input": "hi",
            "content_hash": "h",
        }
    )
    for _ in range(3):  # the same bad line, quarantined by three re-runs before quarantine was per line
        db["quarantine"].insert(
            {"run_id": 1, "file": "a.jsonl", "line_no": 2, "reason": "not JSON", "raw": b"x"}
        )
    db["quarantine"].insert({"run_id": 1, "file": "a.jsonl", "line_no": 3, "reason": "not JSON", "raw": b"y"})
    db["audit_log"].insert({"at": "2026-05-01T00:00:00.000000Z", "actor": "cli", "action": "ingest"})
    conn.close()


def test_a_database_at_the_oldest_schema_upgrades_with_its_data(tmp_path):
    path = tmp_path / "old.db"
    _oldest_schema_with_data(path)
    db = open_db(path)
    assert not migrations.pending(db)
    assert db["traces"].get("t-1")["input"] == "hi"
    assert [
        (r["line_no"], r["raw"], r["last_run_id"]) for r in db["quarantine"].rows_where(order_by="id")
    ] == [
        (2, b"x", 1),
        (3, b"y", 1),
    ]
    assert db["ingest_runs"].get(1)["heartbeat_at"] == "2026-05-01T00:00:00.000Z"  # the one stored format
    assert db["audit_log"].count == 1
    for table in ("scrubs", "label_queue", "eval_rows", "eval_results"):
        assert db[table].exists(), table
    db.close()
    assert not migrations.pending(open_db(path))  # opening again changes nothing


PER_WEEK_QUERIES = (
    "SELECT count(*) FROM traces WHERE week = ?",
    "SELECT trace_id, cohort, intent, cost_usd FROM traces WHERE week = ?",
    "SELECT intent, count(*) FROM traces WHERE week = ? GROUP BY intent",
    "SELECT DISTINCT week FROM traces ORDER BY week DESC LIMIT 1",
)


@pytest.mark.parametrize("sql", PER_WEEK_QUERIES)
def test_per_week_queries_search_the_one_week_index(db, sql):
    plan = " / ".join(
        row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", ["2026-W20"][: sql.count("?")])
    )
    assert "idx_traces_week_cohort_intent" in plan, plan


def test_an_import_keeps_no_week_index_a_query_does_not_read(db):
    indexes = {
        row[0]
        for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'traces'")
    }
    assert "idx_traces_week_cohort_intent" in indexes
    assert not indexes & {"idx_traces_week_ts", "idx_traces_week_cost_usd"}


OLD_SHAPES = [  # one moment per shape an older store held, in time order
    "2026-05-01 08:59:59",
    "2026-05-01T09:00:00Z",
    "2026-05-01T09:00:00.123456+00:00",
    "2026-05-01T09:00:00.5Z",
    "2026-05-01T11:30:01+02:00",  # 09:30:01 UTC
    "2026-05-01T09:45:00.000Z",
    "2026-05-03T23:30:00-02:00",  # 2026-05-04T01:30 UTC: Monday, the next ISO week
]


def test_an_older_store_holds_every_timestamp_in_the_one_format_after_opening(tmp_path):
    path = tmp_path / "shapes.db"
    old = Database(path)
    migrations.apply(old, stop_before="m270_one_timestamp_format")
    shuffled = random.Random(5).sample(OLD_SHAPES, len(OLD_SHAPES))
    for n, ts in enumerate(shuffled):
        week = ts[:4] + "-W18"  # as the shape's own first ten characters said
        old["traces"].insert(
            {"trace_id": f"t-{n}", "ts": ts, "week": week, "input": "hi", "content_hash": str(n)}
        )
        old["audit_log"].insert({"at": ts, "actor": "cli", "action": "ingest"})
    old["audit_log"].insert({"at": "not a time", "actor": "cli", "action": "kept as it is"})
    old.close()

    db = open_db(path)
    stamps = [r[0] for r in db.execute("SELECT ts FROM traces")]
    audits = [r[0] for r in db.execute("SELECT at FROM audit_log WHERE action = 'ingest'")]
    for ts in stamps + audits:
        assert ts == format_ts(datetime.fromisoformat(ts)), f"{ts!r} is not in the stored format"
    by_text = [r[0] for r in db.execute("SELECT trace_id FROM traces ORDER BY ts")]
    by_time = [f"t-{shuffled.index(ts)}" for ts in OLD_SHAPES]
    assert by_text == by_time, "ordering by text is ordering by time"
    assert db.execute("SELECT ts, week FROM traces WHERE ts LIKE '2026-05-04%'").fetchall() == [
        ("2026-05-04T01:30:00.000Z", "2026-W19")
    ]
    assert db.execute("SELECT count(*) FROM audit_log WHERE at = 'not a time'").fetchone()[0] == 1
    assert not migrations.pending(db)


def test_the_frozen_clock_reaches_every_module_however_it_imported_now(db, clock):
    from flywheel.review.claims import stamp
    from flywheel.store import audit

    assert now() == stamp(None) == clock.now() == "2026-05-04T09:00:00.000Z"
    clock.advance(hours=1)
    audit.audit(db, "ana", "check", "store", "x")
    assert db.execute("SELECT at FROM audit_log").fetchone()[0] == "2026-05-04T10:00:00.000Z"
