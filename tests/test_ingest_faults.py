"""Bad input and faults: every line accounted for, runs say how they ended, foreign files refused."""

import gzip
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import jsonl, trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.config import load_config
from flywheel.demo.build import ensure_demo_db
from flywheel.errors import BadInput, ForeignDatabase, PermissionDenied, StoreError
from flywheel.ingest.run import ingest_files, ingest_runs, ingest_upload, quarantined_lines
from flywheel.overview import loop_counts
from flywheel.store.clock import iso_week
from flywheel.store.db import open_db, write

LEAD = User("ana", "lead")
ROOT = Path(__file__).resolve().parent.parent

CRASHERS = {
    b'{"trace_id": "n1", "input": "x", "signals": {"turns": 99999999999999999999}}': "too large",
    b'{"trace_id": "n2", "input": "x", "signals": {"turns": 1e300}}': "too large",
    b'{"trace_id": "n3", "input": "x", "signals": {"latency_ms": 1e400}}': "finite number",
    b'{"trace_id": "n4", "input": "x", "signals": {"cost_usd": 1' + b"0" * 400 + b"}}": "cannot be stored",
    b'{"trace_id": "n5", "input": "x", "timestamp": "0001-01-01T00:00:00+01:00"}': "outside the calendar",
    b'{"trace_id": "n6", "input": "x", "timestamp": "9999-12-31T23:59:59-01:00"}': "outside the calendar",
    b'{"trace_id": "n7", "input": "x", "timestamp": "0999-06-01T00:00:00Z"}': "plausible range",
    b'{"trace_id": "n8", "input": "x", "timestamp": "2999-06-01T00:00:00Z"}': "plausible range",
    b'{"trace_id": "n9", "input": "x", "metadata": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001: "nested",
    b"[" * 100_000 + b"]" * 100_000: "nested too deeply",
}


def test_lines_that_crashed_imports_are_quarantined_with_their_reason(db, tmp_path):
    path = jsonl(tmp_path / "c.jsonl", [trace(1), *CRASHERS, trace(2)])
    report = ingest_files(db, [path], config=load_config())
    assert (report.lines_read, report.ingested, report.quarantined) == (len(CRASHERS) + 2, 2, len(CRASHERS))
    by_line = {row["line_no"]: row["reason"] for row in quarantined_lines(db, LEAD)}
    for line_no, reason in enumerate(CRASHERS.values(), start=2):
        assert reason in by_line[line_no], (line_no, by_line[line_no])
    assert db["ingest_runs"].get(report.run_id)["status"] == "done"


def test_a_number_column_takes_any_finite_float(db, tmp_path):
    ingest_files(
        db, [jsonl(tmp_path / "a.jsonl", [trace(1, signals={"latency_ms": 1e300})])], config=load_config()
    )
    assert db["traces"].get("t-000001")["latency_ms"] == 1e300


def test_week_keys_sort_as_time(db):
    assert iso_week("0999-06-01T00:00:00.000Z") == "0999-W22" < iso_week("2026-01-01T00:00:00.000Z")
    assert iso_week("2026-01-01T00:00:00.000Z") == "2026-W01" and iso_week("2027-01-01T00:00Z") == "2026-W53"


def test_plausible_range_is_a_setting(db, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_EARLIEST_TIMESTAMP", "2026-05-10")
    monkeypatch.setenv("FLYWHEEL_MAX_DAYS_AHEAD", "0")
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    items = [trace(1, timestamp="2026-05-09T23:59:59Z"), trace(2, timestamp="2026-05-10T00:00:00Z")]
    report = ingest_files(
        db, [jsonl(tmp_path / "a.jsonl", [*items, trace(3, timestamp=future)])], config=load_config()
    )
    assert (report.ingested, report.quarantined) == (1, 2)
    monkeypatch.setenv("FLYWHEEL_EARLIEST_TIMESTAMP", "last year")
    with pytest.raises(BadInput, match="FLYWHEEL_EARLIEST_TIMESTAMP"):
        load_config()


def test_csv_signals_column_beside_signal_columns(db, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(
        "trace_id,input,signals,signals.thumbs,signals.turns\n"
        'a,x,"{""retried"": true}",down,3\n'
        'b,x,"[1, 2]",down,\n'
        'c,x,"{""thumbs"": ""up""}",down,\n'
        'd,x,"{""thumbs"": ""down""}",down,\n'
        "e,x,7,,\n"
        'f,x,"' + '{""a"": ' * 3000 + '1}",,\n'
    )
    report = ingest_files(db, [path], config=load_config())
    assert (report.lines_read, report.ingested, report.quarantined) == (6, 2, 4)
    row = db["traces"].get("a")
    assert (row["retried"], row["thumbs"], row["turns"]) == (1, "down", 3)
    reasons = {r["line_no"]: r["reason"] for r in quarantined_lines(db, LEAD)}
    assert "JSON object" in reasons[3] and "given twice" in reasons[4] and "JSON object" in reasons[6]
    assert "nested too deeply" in reasons[7]


def test_csv_unclosed_quote_costs_one_line_not_the_rest(db, tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'trace_id,input\nq1,ok\nq2,"open\nq3,x\nq4,y\n')
    report = ingest_files(db, [path], config=load_config())
    assert (report.lines_read, report.ingested, report.quarantined) == (4, 3, 1)
    assert report.physical_lines == 5
    assert {r["trace_id"]: r["input"] for r in db["traces"].rows} == {"q1": "ok", "q3": "x", "q4": "y"}
    (bad,) = quarantined_lines(db, LEAD)
    assert (bad["line_no"], bad["raw"]) == (3, 'q2,"open') and "not closed" in bad["reason"]


def test_csv_quoted_field_is_bounded_and_real_multiline_fields_still_work(db, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_MAX_LINE_BYTES", "200")
    path = tmp_path / "q.csv"
    filler = "".join(f"f{n},filler line {n}\n" for n in range(30))
    path.write_text(f'trace_id,input\nm1,"two\nlines"\nq2,"never closed\n{filler}q9,"late "" quote"\n')
    report = ingest_files(db, [path], config=load_config())
    assert (report.ingested, report.quarantined) == (32, 1)
    assert db["traces"].get("m1")["input"] == "two\nlines"
    assert db["traces"].get("q9")["input"] == 'late " quote'
    (bad,) = quarantined_lines(db, LEAD)
    assert bad["line_no"] == 4 and "200 bytes" in bad["reason"]


def test_csv_quote_closed_on_a_later_line_does_not_swallow_records(db, tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('trace_id,input\nq1,"open\nq2,x\nq3,"closes" here\nq4,y\n')
    report = ingest_files(db, [path], config=load_config())
    assert report.lines_read == report.ingested + report.quarantined
    assert {"q2", "q4"} <= {r["trace_id"] for r in db["traces"].rows}
    assert report.physical_lines == 5


class Upload(io.BytesIO):
    """What Streamlit hands a page: a BytesIO with a name and a size."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name, self.size = name, len(data)


def test_csv_upload_reports_progress_after_commit_and_leaves_the_stream_open(db):
    upload = Upload(b"trace_id,input\n" + b"".join(b"c%d,hello\n" % n for n in range(50)), "t.csv")
    seen = []
    report = ingest_upload(
        db,
        upload,
        upload.name,
        "ana",
        progress=lambda *a: seen.append((*a, upload.tell())),
        config=load_config(),
    )
    assert report.ingested == 50 and not upload.closed
    assert seen[-1][:3] == (50, upload.size, upload.size)
    assert db["ingest_runs"].get(report.run_id)["status"] == "done"


def test_gzipped_jsonl_upload_is_decompressed(db):
    data = gzip.compress(b"".join(json.dumps(trace(n)).encode() + b"\n" for n in range(20)))
    assert (
        ingest_upload(db, Upload(data, "t.jsonl.gz"), "t.jsonl.gz", "ana", config=load_config()).ingested
        == 20
    )
    assert ingest_upload(db, Upload(data, "t.jsonl"), "t.jsonl", "ana", config=load_config()).duplicates == 20


def test_any_exception_fails_the_run_with_its_reason(db, tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [trace(n) for n in range(10)])

    def broken(*_):
        raise RuntimeError("progress sink gone")

    with pytest.raises(RuntimeError):
        ingest_files(db, [path], progress=broken, config=load_config())
    (run,) = db["ingest_runs"].rows
    assert run["status"] == "failed: RuntimeError: progress sink gone" and run["ingested"] == 10


def test_a_run_without_heartbeat_shows_as_interrupted(db):
    with write(db):
        db["ingest_runs"].insert({"started_at": "2026-01-01T00:00:00.000Z", "status": "running"})
        db["ingest_runs"].insert({"started_at": "2026-01-01T00:00:00.000Z", "status": "done"})
    later = datetime(2026, 1, 1, 0, 4, tzinfo=UTC)
    assert [r["status"] for r in ingest_runs(db, stale_after=300, moment=later)] == ["done", "running"]
    much_later = datetime(2026, 1, 1, 0, 6, tzinfo=UTC)
    assert [r["status"] for r in ingest_runs(db, stale_after=300, moment=much_later)] == [
        "done",
        "interrupted",
    ]


@pytest.mark.slow
def test_a_killed_import_leaves_an_audited_batch_for_every_committed_trace(tmp_path):
    path = jsonl(tmp_path / "big.jsonl", [trace(n) for n in range(40_000)])
    db_path = tmp_path / "k.db"
    open_db(db_path).close()
    env = {**os.environ, "FLYWHEEL_INGEST_BATCH": "200", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "flywheel", "ingest", "--db", str(db_path), str(path)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = open_db(db_path)
    deadline = time.monotonic() + 60
    while db.execute("SELECT coalesce(max(lines_read), 0) FROM ingest_runs").fetchone()[0] < 1000:
        assert time.monotonic() < deadline and process.poll() is None, "the import ended before it was killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    traces = db["traces"].count
    audited = sum(
        json.loads(detail)["ingested"]
        for (detail,) in db.execute("SELECT detail FROM audit_log WHERE action = 'ingest_batch'")
    )
    assert 1000 <= traces < 40_000 and audited == traces
    (run,) = ingest_runs(db, stale_after=0, moment=datetime.now(UTC) + timedelta(seconds=1))
    assert run["status"] == "interrupted" and run["ingested"] == traces


def test_quarantine_is_kept_once_per_source_line(db, tmp_path):
    path = jsonl(tmp_path / "m.jsonl", [trace(1), b"not json", b"{}", trace(2)])
    first = ingest_files(db, [path], config=load_config())
    again = ingest_files(db, [path], config=load_config())
    assert first.quarantined == again.quarantined == 2
    assert db["quarantine"].count == 2 and loop_counts(db)["quarantined"] == 2
    assert len(quarantined_lines(db, LEAD, again.run_id)) == 2
    assert quarantined_lines(db, LEAD, first.run_id) == []
    changed = jsonl(tmp_path / "m.jsonl", [trace(1), b"still not json", b"{}", trace(2)])
    ingest_files(db, [changed], config=load_config())
    assert db["quarantine"].count == 3


def test_labelers_cannot_read_quarantined_bytes(db, tmp_path):
    ingest_files(db, [jsonl(tmp_path / "m.jsonl", [b"secret raw line"])], config=load_config())
    with pytest.raises(PermissionDenied):
        quarantined_lines(db, User("lena", "labeler"))
    assert quarantined_lines(db, User("ravi", "reviewer"))[0]["raw"] == "secret raw line"


def test_bad_lines_past_the_bound_stop_the_run_and_keep_what_it_committed(db, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_INGEST_BATCH", "10")
    items = [trace(n) for n in range(25)] + [b"{}"] * 100 + [trace(99)]
    path = jsonl(tmp_path / "b.jsonl", items)
    with pytest.raises(BadInput, match=r"more than 7 bad lines; stopped at b\.jsonl line 33"):
        ingest_files(db, [path], config=load_config(), max_bad=7)
    (run,) = ingest_runs(db)
    assert run["status"].startswith("failed: run 1: more than 7 bad lines")
    assert (run["ingested"], run["quarantined"], db["traces"].count, db["quarantine"].count) == (25, 7, 25, 7)


def test_max_bad_setting_and_flag(tmp_path, monkeypatch, capsys):
    path = jsonl(tmp_path / "b.jsonl", [trace(1), b"{}", b"{}"])
    monkeypatch.setenv("FLYWHEEL_MAX_BAD_LINES", "0")
    assert main(["ingest", "--db", str(tmp_path / "x.db"), str(path)]) == 2
    err = capsys.readouterr().err
    assert "more than 0 bad lines" in err and err.count("\n") == 1
    assert main(["ingest", "--db", str(tmp_path / "x.db"), str(path), "--max-bad", "2"]) == 0


def _foreign(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.commit()
    conn.close()
    return path


def test_a_database_of_another_application_is_never_migrated(tmp_path, capsys):
    path = _foreign(tmp_path / "other.db")
    before = path.read_bytes()
    with pytest.raises(ForeignDatabase, match="another application"):
        open_db(path)
    assert path.read_bytes() == before and not Path(f"{path}-wal").exists()
    assert main(["ingest", "--db", str(path), str(jsonl(tmp_path / "a.jsonl", [trace(1)]))]) == 2
    err = capsys.readouterr().err
    assert "another application" in err and err.count("\n") == 1
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert open_db(empty)["traces"].count == 0


def test_a_write_on_a_read_only_connection_is_a_store_error(tmp_path):
    path = tmp_path / "r.db"
    open_db(path).close()
    db = Database(sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None))
    with pytest.raises(StoreError, match="not writable"), write(db):
        db.execute("INSERT INTO audit_log (actor) VALUES ('x')")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
@pytest.mark.slow
def test_cli_on_a_read_only_database_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "r.db"
    open_db(path).close()
    path.chmod(0o444)
    data = jsonl(tmp_path / "a.jsonl", [trace(1)])
    # Root without the capability to override file modes: the file is read-only as for any user.
    command = ["setpriv", "--bounding-set=-dac_override", sys.executable, "-m", "flywheel"]
    result = subprocess.run(
        [*command, "ingest", "--db", str(path), str(data)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "read-only" in result.stderr and result.stderr.count("\n") == 1


def test_demo_start_by_two_sessions_at_once_builds_one_database(tmp_path):
    config = load_config().replace(db=str(tmp_path / "demo.db"), demo_traces=120, demo_seed=0)
    errors = []

    def start():
        try:
            ensure_demo_db(config)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert open_db(config.db)["traces"].count == 120
    scratch = [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp" and not p.name.endswith(".lock.tmp")]
    assert scratch == []


# Property tests: generated bad shapes never crash an import and every line is accounted for. ----------

TRIED = {"jsonl lines": 0, "csv records": 0, "unclosed quotes": 0}


@pytest.fixture(scope="module", autouse=True)
def _report_tried():
    yield
    print(f"\nbad shapes tried: {TRIED}")


class _Shared:
    """One database for all examples of a property test; each example checks its own deltas."""

    folder = None
    runs = 0

    @classmethod
    def db(cls):
        if cls.folder is None:
            cls.folder = tempfile.mkdtemp(prefix="fuzz-")
        return open_db(Path(cls.folder) / "fuzz.db")


def _ingest_and_reconcile(data: bytes, suffix: str) -> object:
    _Shared.runs += 1
    db = _Shared.db()
    before = db.execute("SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM quarantine)").fetchone()
    name = f"fuzz-{_Shared.runs}{suffix}"
    report = ingest_upload(db, Upload(data, name), name, "test", max_bad=10**9, config=load_config())
    after = db.execute("SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM quarantine)").fetchone()
    db.close()
    assert report.lines_read == report.ingested + report.duplicates + report.quarantined
    assert (after[0] - before[0], after[1] - before[1]) == (report.ingested, report.quarantined)
    physical = (
        data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n") + (not data.endswith((b"\n", b"\r")))
    )
    assert report.physical_lines == (physical if data else 0)
    return report


huge_ints = st.integers(min_value=2**63, max_value=10**40) | st.integers(
    max_value=-(2**63), min_value=-(10**40)
)
odd_numbers = huge_ints | st.sampled_from([1e300, -1e300, 5e-324, 1.7976931348623157e308, 2**63 - 1, -1])
edge_times = st.builds(
    lambda moment, hours, minutes: moment.isoformat() + (f"{hours:+03d}:{minutes:02d}" if hours else "Z"),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
    | st.sampled_from([datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59), datetime(999, 6, 1)]),
    st.integers(-23, 23),
    st.sampled_from([0, 30, 59]),
)


def _nested(depth: int, kind: str) -> bytes:
    return (b"[" * depth + b"]" * depth) if kind == "list" else (b'{"a": ' * depth + b"1" + b"}" * depth)


@st.composite
def bad_json_line(draw) -> bytes:
    kind = draw(st.sampled_from(["number", "timestamp", "nested", "nested_field", "numeric_ts"]))
    base = {"trace_id": draw(st.text(min_size=1, max_size=6)), "input": "x"}
    if kind == "number":
        key = draw(st.sampled_from(["turns", "latency_ms", "cost_usd", "judge_score", "retried"]))
        number = draw(odd_numbers)
        return json.dumps({**base, "signals": {key: 0}}).replace("0}}", f"{number}}}}}").encode()
    if kind == "timestamp":
        return json.dumps({**base, "timestamp": draw(edge_times)}).encode()
    if kind == "numeric_ts":
        return json.dumps({**base, "timestamp": draw(odd_numbers)}).encode()
    depth = draw(st.integers(min_value=500, max_value=200_000))
    nested = _nested(depth, draw(st.sampled_from(["list", "dict"])))
    if kind == "nested":
        return nested
    field = draw(st.sampled_from(["metadata", "signals", "messages", "input", "cohort"]))
    return json.dumps(base).encode()[:-1] + b', "' + field.encode() + b'": ' + nested + b"}"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(bad_json_line() | st.just(json.dumps(trace(1)).encode()), min_size=1, max_size=12))
def test_generated_bad_json_lines_never_crash_and_always_reconcile(lines):
    TRIED["jsonl lines"] += len(lines)
    report = _ingest_and_reconcile(b"\n".join(lines) + b"\n", ".jsonl")
    assert report.physical_lines == len(lines)


csv_columns = st.lists(
    st.sampled_from(
        ["signals", "signals.thumbs", "signals.turns", "signals.x", "messages", "metadata", "timestamp"]
    ),
    unique=True,
    max_size=5,
)
csv_cells = st.one_of(
    st.text(alphabet='ab,"\n\r {}[]:1', max_size=12),
    odd_numbers.map(str),
    edge_times,
    st.integers(500, 5000).map(lambda depth: _nested(depth, "list").decode()),
    st.sampled_from(['{"thumbs": "up"}', "[1]", "7", '{"turns": 3}', "down", "true", "1e400", '"']),
)


def _csv_field(cell: str) -> str:
    if any(ch in cell for ch in ',"\n\r') and not cell.startswith('"'):
        return '"' + cell.replace('"', '""') + '"'
    return cell  # a bare leading quote stays unbalanced on purpose


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(csv_columns, st.lists(st.lists(csv_cells, min_size=2, max_size=7), min_size=1, max_size=10))
def test_generated_bad_csv_never_crashes_and_always_reconciles(columns, rows):
    TRIED["csv records"] += len(rows)
    header = ["trace_id", "input", *columns]
    lines = [",".join(header)] + [",".join(_csv_field(c) for c in row[: len(header)]) for row in rows]
    _ingest_and_reconcile(("\n".join(lines) + "\n").encode(), ".csv")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(min_value=1, max_value=40), st.data())
def test_an_unclosed_quote_anywhere_costs_exactly_its_line(count, data):
    TRIED["unclosed quotes"] += 1
    at = data.draw(st.integers(min_value=0, max_value=count))
    opened = data.draw(st.sampled_from(['"open', 'x,"y', '"a""b']))
    records = [f"id{n},text {n}" for n in range(count)]
    records.insert(at, f"bad{at},{opened}")
    report = _ingest_and_reconcile(("trace_id,input\n" + "\n".join(records) + "\n").encode(), ".csv")
    assert (report.ingested + report.duplicates, report.quarantined) == (count, 1)
