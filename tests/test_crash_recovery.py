"""Killed work: each long command is killed (SIGKILL) mid-way as a subprocess; the store then shows it
interrupted, every committed scrub has its audit entry, and a retry finishes the work without doing
anything twice. Imports are idempotent by file content."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import jsonl, trace
from pages_support import app, open_page

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.evals.runs import import_results
from flywheel.evals.versions import import_evalset
from flywheel.review.scrubs import scrub_traces
from flywheel.store.clock import now
from flywheel.store.db import open_db, process_mark, query_rows, sweep_interrupted, write
from flywheel.store.migrations import _audit_old_scrubs

ROOT = Path(__file__).resolve().parent.parent
LEAD = User("ana", "lead")
PLAN = 'name = "all"\nseed = 1\n\n[random]\nrate = 1.0\n'


def week_of_traces(n: int) -> list[dict]:
    """``n`` traces in one ISO week (2026-W19), so a plan at rate 1.0 samples them all."""
    return [trace(i, timestamp=f"2026-05-{4 + i % 5:02d}T10:{i % 60:02d}:00Z") for i in range(n)]


def run_until(args: list[str], db_path: Path, sql: str, env: dict | None = None) -> int:
    """Start ``python -m flywheel ARGS``, SIGKILL it once ``sql`` counts more than 0 rows; its return code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flywheel", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if db_path.exists() and _count(db_path, sql) > 0:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    return process.wait()


def _count(db_path: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


def assert_scrubs_audited(db) -> None:
    """Every stored scrub names a scrub audit entry that lists it."""
    listed = {}
    for row in query_rows(db, "SELECT id, detail FROM audit_log WHERE action = 'scrub'"):
        for scrub_id in json.loads(row["detail"])["scrub_ids"]:
            listed[scrub_id] = row["id"]
    scrubs = query_rows(db, "SELECT id, audit_id FROM scrubs")
    assert scrubs and all(listed.get(s["id"]) == s["audit_id"] for s in scrubs)
    dupes = db.execute("SELECT count(*) - count(DISTINCT trace_id) FROM scrubs").fetchone()[0]
    assert dupes == 0


# Interrupted work: the decision table -------------------------------------------------------------


def dead_pid() -> tuple[int, str]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid, "1"


@pytest.mark.parametrize(
    ("case", "interrupted"),
    [
        ("this live process", False),
        ("dead process on this host", True),
        ("live pid, another start time (reused)", True),
        ("another host, fresh heartbeat", False),
        ("another host, stale heartbeat", True),
        ("no process recorded, stale", True),
        ("no process recorded, fresh", False),
    ],
)
@pytest.mark.parametrize("table", ["cycles", "ingest_runs", "judge_runs"])
def test_running_work_is_interrupted_only_when_its_process_is_gone(db, table, case, interrupted):
    mark = process_mark()
    long_ago = "2020-01-01T00:00:00.000Z"
    owner = {
        "this live process": mark,
        "dead process on this host": {**mark, "pid": dead_pid()[0]},
        "live pid, another start time (reused)": {**mark, "pid_started": "1"},
        "another host, fresh heartbeat": {**mark, "host": "elsewhere"},
        "another host, stale heartbeat": {**mark, "host": "elsewhere", "heartbeat_at": long_ago},
        "no process recorded, stale": {"heartbeat_at": long_ago},
        "no process recorded, fresh": {"heartbeat_at": now()},
    }[case]
    actor = "started_by" if table == "judge_runs" else "actor"
    row = {"status": "running", "started_at": owner["heartbeat_at"], actor: "ana", **owner}
    if table == "judge_runs":
        row.update(rubric_id=1, target="batch 1", model="m")
    with write(db):
        if table == "judge_runs":
            rubric = {"name": "r", "version": 1, "body": "{}", "created_by": "ana", "created_at": now()}
            db["rubrics"].insert({"id": 1, **rubric})
        db[table].insert(row)
        db[table].insert({**row, "status": "finished"})  # finished work is never touched
    marked = sweep_interrupted(db, stale_after=300)
    statuses = [r[0] for r in db.execute(f"SELECT status FROM {table} ORDER BY id")]
    assert statuses == ["interrupted" if interrupted else "running", "finished"]
    assert marked == ([{"kind": table, "id": 1}] if interrupted else [])
    entries = query_rows(db, "SELECT actor, entity FROM audit_log WHERE action = 'interrupted'")
    assert entries == ([{"actor": "ana", "entity": table}] if interrupted else [])


# Killed commands ------------------------------------------------------------------------------------


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    return path


def test_a_killed_sample_leaves_every_scrub_audited_and_a_retry_finishes_it(tmp_path, plan, capsys):
    db_path = tmp_path / "f.db"
    db = open_db(db_path)
    main(["ingest", "--db", str(db_path), str(jsonl(tmp_path / "t.jsonl", week_of_traces(1200)))])
    args = ["sample", "--db", str(db_path), "--plan", str(plan), "--json"]
    assert run_until(args, db_path, "SELECT count(*) FROM scrubs") == -signal.SIGKILL
    stored = db["scrubs"].count
    assert 0 < stored < 1200, "the kill should land between the first and the last commit"
    assert_scrubs_audited(db)
    capsys.readouterr()
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["repeated"] is True and again["scrubbed"] == 1200 - stored
    assert db["scrubs"].count == 1200 and db["sample_batches"].count == 1
    assert_scrubs_audited(db)


def test_a_killed_cycle_is_shown_interrupted_and_the_next_one_resumes_it(tmp_path, plan, capsys):
    db_path = tmp_path / "f.db"
    open_db(db_path).close()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    jsonl(inbox / "monday.jsonl", week_of_traces(1200))
    args = ["cycle", "--db", str(db_path), "--plan", str(plan), "--inbox", str(inbox), "--json"]
    assert run_until(args, db_path, "SELECT count(*) FROM scrubs") == -signal.SIGKILL
    db = open_db(db_path)  # opening the store marks the dead cycle
    assert query_rows(db, "SELECT id, status FROM cycles") == [{"id": 1, "status": "interrupted"}]
    assert db.execute("SELECT count(*) FROM audit_log WHERE action = 'interrupted'").fetchone()[0] == 1
    assert_scrubs_audited(db)
    capsys.readouterr()
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["resumes"] == [1] and report["steps"]["sample"]["repeated"] is True
    assert db["scrubs"].count == 1200 and db["traces"].count == 1200
    assert [r["status"] for r in query_rows(db, "SELECT status FROM cycles ORDER BY id")] == [
        "interrupted",
        "finished",
    ]
    assert_scrubs_audited(db)
    assert main(args) == 0  # the cycle after a finished one resumes nothing
    assert json.loads(capsys.readouterr().out)["resumes"] == []


def test_a_killed_import_is_shown_interrupted_and_running_it_again_completes_it(tmp_path, capsys):
    db_path = tmp_path / "f.db"
    open_db(db_path).close()
    source = jsonl(tmp_path / "t.jsonl", [trace(i) for i in range(30_000)])
    args = ["ingest", "--db", str(db_path), str(source), "--json"]
    sql = "SELECT coalesce(sum(ingested), 0) FROM ingest_runs"
    assert run_until(args, db_path, sql, {"FLYWHEEL_INGEST_BATCH": "500"}) == -signal.SIGKILL
    db = open_db(db_path)
    run = query_rows(db, "SELECT status, ingested FROM ingest_runs")
    assert run[0]["status"] == "interrupted" and 0 < run[0]["ingested"] < 30_000
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ingested"] + report["duplicates"] == 30_000 and db["traces"].count == 30_000


def suite_file(path: Path, n: int = 3) -> Path:
    return jsonl(path, [{"input": f"question {i}", "code": "X"} for i in range(n)])


def test_a_retried_suite_import_is_reported_as_already_imported(tmp_path, capsys):
    db_path = tmp_path / "f.db"
    open_db(db_path).close()
    suite = suite_file(tmp_path / "suite.jsonl")
    args = ["import-evalset", "--db", str(db_path), str(suite), "--json"]
    run_until(args, db_path, "SELECT count(*) FROM eval_versions")  # killed just after its commit
    assert open_db(db_path)["eval_versions"].count == 1
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == {
        "version": 1,
        "added": 0,
        "retired": 0,
        "carried": 0,
        "rows": 3,
        "already_imported": True,
    }
    assert main(args[:-1]) == 0
    assert "already imported" in capsys.readouterr().out
    db = open_db(db_path)
    assert (db["eval_versions"].count, db["eval_rows"].count) == (1, 3)
    other = suite_file(tmp_path / "other.jsonl", 4)  # another file is a new version
    assert main(["import-evalset", "--db", str(db_path), str(other), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert main(args) == 0  # the first file stays imported once
    assert json.loads(capsys.readouterr().out)["version"] == 1 and db["eval_rows"].count == 7


def test_a_retried_results_import_is_reported_as_already_imported(tmp_path, capsys):
    db_path = tmp_path / "f.db"
    db = open_db(db_path)
    import_evalset(db, LEAD, suite_file(tmp_path / "suite.jsonl").read_bytes(), "suite.jsonl")
    results = jsonl(tmp_path / "r.jsonl", [{"row_id": f"r-00000{i}", "passed": i != 2} for i in (1, 2, 3)])
    args = ["import-results", "--db", str(db_path), "--version", "1", "--system", "a", str(results)]
    run_until([*args, "--json"], db_path, "SELECT count(*) FROM eval_runs")
    assert db["eval_runs"].count == 1  # committed, whether the kill came before its output or not
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["already_imported"] is True and (report["run_id"], report["passed"]) == (1, 2)
    assert main(args) == 0 and "already imported" in capsys.readouterr().out
    assert (db["eval_runs"].count, db["eval_results"].count) == (1, 3)
    # the same file for another system, or on another version, is a run of its own
    other = import_results(db, LEAD, 1, "b", results.read_bytes(), "r.jsonl")
    assert other.already_imported is False and other.run_id == 2
    import_evalset(db, LEAD, suite_file(tmp_path / "more.jsonl", 4).read_bytes(), "more.jsonl")
    assert import_results(db, LEAD, 2, "a", results.read_bytes(), "r.jsonl").already_imported is False
    changed = results.read_bytes().replace(b"true", b"false")
    assert import_results(db, LEAD, 1, "a", changed, "r.jsonl").already_imported is False
    assert db["eval_runs"].count == 4


def test_scrubs_a_killed_run_left_unaudited_get_an_entry_when_the_store_is_upgraded(db, tmp_path):
    ingest_files_ids = week_of_traces(5)
    main(
        ["ingest", "--db", str(tmp_path / "flywheel.db"), str(jsonl(tmp_path / "t.jsonl", ingest_files_ids))]
    )
    scrub_traces(db, [t["trace_id"] for t in ingest_files_ids[:3]], "ana")
    scrub_traces(db, [t["trace_id"] for t in ingest_files_ids[3:]], "ana")
    with write(db):  # as the store was before: one count-only entry per finished run, none for a killed one
        db.execute("UPDATE scrubs SET audit_id = NULL")
        first = db.execute("SELECT min(id) FROM audit_log WHERE action = 'scrub'").fetchone()[0]
        db.execute("DELETE FROM audit_log WHERE action = 'scrub' AND id > ?", [first])
        db.execute("UPDATE audit_log SET detail = '{}' WHERE id = ?", [first])
        _audit_old_scrubs(db)
    rows = query_rows(
        db, "SELECT s.id, a.action FROM scrubs s JOIN audit_log a ON a.id = s.audit_id ORDER BY s.id"
    )
    assert [r["action"] for r in rows] == ["scrub"] * 3 + ["scrub_recovered"] * 2
    recovered = json.loads(
        db.execute("SELECT detail FROM audit_log WHERE action = 'scrub_recovered'").fetchone()[0]
    )
    assert recovered["scrub_ids"] == [4, 5]


def test_the_weekly_cycle_page_shows_an_interrupted_cycle(tmp_path, monkeypatch):
    db_path = tmp_path / "f.db"
    db = open_db(db_path)
    with write(db):
        gone = {**process_mark(), "pid": dead_pid()[0]}
        db["cycles"].insert({"started_at": now(), "actor": "ana", "status": "running", **gone})
    at = open_page(app(db_path, monkeypatch, "ana"), "pages/cycle.py")
    assert any("Cycle(s) 1 stopped before finishing" in w.value for w in at.warning)
    assert list(at.dataframe[0].value["status"]) == ["interrupted"]
