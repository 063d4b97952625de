"""A labeler keeps labeling while a lead imports the largest starter suite and 1.5M results.

The imports run in other processes, as they would from the CLI; the labeler loop runs here and records
every error it would have been shown. Long writes commit in chunks, and a writer waits for the lock
in short polls, so the labeler sees no error and nothing is lost on either side.
"""

import csv
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.errors import StoreBusy
from flywheel.evals.runs import import_results
from flywheel.evals.versions import import_evalset
from flywheel.labeling.labels import claim_next, record_label
from flywheel.review import label_queue
from flywheel.store.db import open_db, write, write_chunks

ROOT = Path(__file__).resolve().parent.parent
LENA = User("lena", "labeler")
SUITE_ROWS = 100_000  # the documented maximum of a starter suite
REPEATS = 15  # 1.5M results on the suite's rows


def _queue(db, traces: int) -> None:
    """``traces`` traces with approved scrubs, queued for labeling."""
    db.conn.executemany(
        "INSERT INTO traces (trace_id, ts, week, input, content_hash) VALUES (?, ?, '2026-W18', ?, ?)",
        [
            (f"t-{n:05d}", "2026-05-01T10:00:00.000Z", f"card {n} has not arrived", f"h{n}")
            for n in range(traces)
        ],
    )
    db.conn.executemany(
        "INSERT INTO scrubs (trace_id, scrubber_version, status, input, created_at)"
        " VALUES (?, 'test', 'approved', ?, '2026-05-01T10:00:00.000Z')",
        [(f"t-{n:05d}", f"card {n} has not arrived") for n in range(traces)],
    )
    with write(db):
        label_queue.enqueue_approved(db)


def _suite(path: Path) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "input", "expected", "criterion", "code", "adversarial", "tags"])
        for n in range(SUITE_ROWS):
            question = f"How do I top up my card, case {n}?"
            writer.writerow(
                [f"s-{n}", question, "Explain the steps.", "Names the steps.", "", "false", "bulk"]
            )
    return path


def _results(path: Path) -> Path:
    # Row ids r-000001.. are the ids the suite's rows get in an empty eval set.
    with path.open("w") as out:
        for repeat in range(REPEATS):
            for n in range(1, SUITE_ROWS + 1):
                out.write(
                    json.dumps({"row_id": f"r-{n:06d}", "passed": (n + repeat) % 3 > 0, "repeat": repeat})
                )
                out.write("\n")
    return path


def _imports(db_path: Path, suite: Path, results: Path) -> subprocess.Popen:
    """Both imports, one after the other, as a lead runs them; their output goes to files beside the
    database (a pipe nobody reads while the labeler works would fill up and stop them)."""
    flywheel = f"{sys.executable} -m flywheel"
    script = (
        f"{flywheel} import-evalset --db {db_path} {suite} --json"
        f" && {flywheel} import-results --db {db_path} --version 1 --system sys-a {results} --json"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    out, err = (db_path.with_name(name).open("w") for name in ("imports.out", "imports.err"))
    with out, err:
        return subprocess.Popen(["sh", "-c", script], cwd=ROOT, env=env, stdout=out, stderr=err)


def _label_until_done(db, importing: subprocess.Popen) -> tuple[list[int], list[str], int]:
    """Label the queue like a quick labeler while the import runs; return the label ids saved, every
    error shown, and how many labels were saved while the import's rows were being written."""
    saved, shown, during = [], [], 0
    while importing.poll() is None:
        writing = db.execute("SELECT max(rowid) FROM eval_rows").fetchone()[0] is not None
        try:
            claim = claim_next(db, LENA, minutes=10)
            if claim is None:
                shown.append("the queue ran dry: seed more traces")
                break
            saved.append(record_label(db, LENA, claim, "not_a_bug"))
        except Exception as error:  # anything the page would show: a refusal or a raw sqlite3 error
            shown.append(f"{type(error).__name__}: {error}")
        else:
            during += writing
        time.sleep(0.25)  # a very quick labeler; the imports run meanwhile
    return saved, shown, during


@pytest.mark.slow
def test_a_labeler_sees_no_lock_error_while_a_lead_imports_a_suite_and_results(tmp_path):
    db_path = tmp_path / "flywheel.db"
    db = open_db(db_path)
    _queue(db, 8000)
    importing = _imports(db_path, _suite(tmp_path / "suite.csv"), _results(tmp_path / "results.jsonl"))
    try:
        saved, shown, during = _label_until_done(db, importing)
    finally:
        importing.wait(timeout=600)
    out, err = ((tmp_path / name).read_text() for name in ("imports.out", "imports.err"))
    assert importing.returncode == 0, err
    assert shown == [], f"the labeler was shown {len(shown)} error(s), e.g. {shown[:3]}"
    assert during >= 20, f"only {during} labels were saved while the import wrote: the test proves nothing"
    version, run = (json.loads(line) for line in out.splitlines())
    assert version["version"] == 1 and version["rows"] == SUITE_ROWS
    assert run["stored"] == run["rows_read"] == SUITE_ROWS * REPEATS
    stored = db.execute("SELECT count(*) FROM eval_results WHERE run_id = ?", [run["run_id"]]).fetchone()[0]
    assert stored == SUITE_ROWS * REPEATS
    members = db.execute("SELECT count(*) FROM eval_version_rows WHERE version = 1").fetchone()[0]
    assert members == SUITE_ROWS
    labels = [r[0] for r in db.execute("SELECT id FROM labels WHERE labeler = 'lena' ORDER BY id")]
    assert labels == saved, "a label the labeler saw saved is missing"
    logged = db.execute("SELECT count(*) FROM audit_log WHERE action = 'label'").fetchone()[0]
    assert logged == len(saved)


def test_a_writer_that_waits_past_the_busy_timeout_is_told_in_plain_words(tmp_path):
    path = tmp_path / "l.db"
    first = open_db(path)
    second = open_db(path, load_config().replace(busy_timeout_ms=200))
    started = time.monotonic()
    with write(first), pytest.raises(StoreBusy, match="busy") as refused, write(second):
        pass
    assert time.monotonic() - started >= 0.2, "it gave up before its busy timeout"
    assert "locked" not in str(refused.value) and "Nothing was saved" in str(refused.value)
    with write(second):  # the lock is free again: the same connection writes
        second.execute("INSERT INTO audit_log (actor) VALUES ('after')")
    assert second["audit_log"].count == 1


def test_a_waiting_writer_gets_in_between_two_chunks(tmp_path):
    path = tmp_path / "c.db"
    importer = open_db(path)
    labeler = open_db(path, load_config().replace(busy_timeout_ms=5000), any_thread=True)
    waits, threads = [], []

    def label(asked: float) -> None:
        with write(labeler):
            labeler.execute("INSERT INTO audit_log (actor) VALUES ('lena')")
        waits.append(time.monotonic() - asked)

    def slow_chunk(db, chunk) -> None:
        db.execute("INSERT INTO audit_log (actor) VALUES ('import')")
        if len(threads) < 3:  # the labeler clicks while the chunk holds the lock
            threads.append(threading.Thread(target=label, args=(time.monotonic(),)))
            threads[-1].start()
        time.sleep(0.15)

    write_chunks(importer, list(range(12)), slow_chunk, size=1)
    for thread in threads:
        thread.join()
    # Twelve chunks hold the lock for 1.8 s; a labeler that only got in at the end would wait that long.
    assert len(waits) == 3 and max(waits) < 0.15 + 0.5, waits
    assert importer["audit_log"].count == 12 + 3


def _small_suite(rows: int) -> bytes:
    return "\n".join(json.dumps({"id": f"s-{n}", "input": f"question {n}"}) for n in range(rows)).encode()


def _small_results(rows: int, repeats: int) -> bytes:
    lines = (
        json.dumps({"row_id": f"r-{n:06d}", "passed": n % 2 == 0, "repeat": r})
        for r in range(repeats)
        for n in range(1, rows + 1)
    )
    return "\n".join(lines).encode()


def _counts(db) -> tuple[int, ...]:
    tables = ("eval_versions", "eval_version_rows", "eval_runs", "eval_results", "audit_log")
    return tuple(db[table].count for table in tables)


def test_imports_in_chunks_reconcile_and_name_their_run(db, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_WRITE_CHUNK", "100")  # many chunks on a small file
    lead = User("ana", "lead")
    version = import_evalset(db, lead, _small_suite(450), "suite.jsonl")
    assert (version.version, version.rows) == (1, 450)
    run = import_results(db, lead, 1, "sys-a", _small_results(450, 3), "a.jsonl")
    assert (run.stored, run.rows_read, run.flaky) == (1350, 1350, 0)
    again = import_results(db, lead, 1, "sys-b", _small_results(450, 1), "b.jsonl")
    assert again.run_id == run.run_id + 1
    # audit: the store's first set (made by the first import), the suite and the two runs
    assert _counts(db) == (1, 450, 2, 1350 + 450, 4)
    ids = db.execute("SELECT DISTINCT run_id FROM eval_results ORDER BY 1").fetchall()
    assert ids == [(run.run_id,), (again.run_id,)]


def test_a_results_import_that_fails_at_the_end_leaves_nothing(db, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_WRITE_CHUNK", "100")
    lead = User("ana", "lead")
    import_evalset(db, lead, _small_suite(300), "suite.jsonl")
    before = _counts(db)
    db.execute(  # the run row's write fails as a full disk would, after every chunk was written
        "CREATE TEMP TRIGGER no_run BEFORE INSERT ON eval_runs BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(sqlite3.DatabaseError, match="disk full"):
        import_results(db, lead, 1, "sys-a", _small_results(300, 2), "a.jsonl")
    assert _counts(db) == before, "a failed import left results or a run behind"
    db.execute("DROP TRIGGER no_run")
    assert import_results(db, lead, 1, "sys-a", _small_results(300, 2), "a.jsonl").stored == 600
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_imports_inside_a_larger_write_are_one_transaction(db, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_WRITE_CHUNK", "100")
    lead = User("ana", "lead")
    with pytest.raises(RuntimeError), write(db):
        import_evalset(db, lead, _small_suite(250), "suite.jsonl")
        import_results(db, lead, 1, "sys-a", _small_results(250, 2), "a.jsonl")
        raise RuntimeError("the larger change fails")
    assert _counts(db) == (0, 0, 0, 0, 0) and db["eval_rows"].count == 0
    with write(db):
        import_evalset(db, lead, _small_suite(250), "suite.jsonl")
        import_results(db, lead, 1, "sys-a", _small_results(250, 2), "a.jsonl")
    assert _counts(db) == (1, 250, 1, 500, 3)  # audit: the first set, the suite and the run
    assert db.execute("PRAGMA foreign_keys").fetchone() == (1,)
