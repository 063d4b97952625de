import gzip
import json
import multiprocessing
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import jsonl, trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.config import load_config
from flywheel.errors import BadInput
from flywheel.ingest.run import ingest_files, ingest_lines, quarantined_lines
from flywheel.store.db import open_db
from flywheel.traces.queries import normalize_trace

LEAD = User("ana", "lead")
PLUS_2 = timezone(timedelta(hours=2))
BAD_LINES = {
    b"this is not json": "not JSON",
    b"[1, 2, 3]": "not a JSON object (got array)",
    b'"just a string"': "not a JSON object (got string)",
    b'{"input": "no id"}': "missing required field 'trace_id'",
    b'{"trace_id": "t-x1"}': "missing required field 'input'",
    b'{"trace_id": ["a"], "input": "x"}': "'trace_id' must be a string",
    b'{"trace_id": "t-x2", "input": 42}': "'input' must be a string",
    b'{"trace_id": "t-x3", "input": "x", "signals": {"thumbs": "sideways"}}': "'signals.thumbs'",
    b'{"trace_id": "t-x4", "input": "x", "signals": {"judge_score": 1.5}}': "outside 0..1",
    b'{"trace_id": "t-x5", "input": "x", "signals": {"retried": "yes"}}': "'signals.retried'",
    b'{"trace_id": "t-x6", "input": "x", "timestamp": "last tuesday"}': "not ISO 8601",
    b'{"trace_id": "t-x7", "input": "x", "messages": [{"role": "user"}]}': "'messages[0].content'",
    b'{"trace_id": "t-x8", "input": "caf\xe9"}': "invalid UTF-8",
    b'{"trace_id": "t-x9", "input": "x", "signals": {"cost_usd": NaN}}': "not JSON",
    b'{"trace_id": "t-y1", "input": "\\ud800"}': "invalid UTF-8",
}


def mixed_file(path: Path, good: int = 30) -> Path:
    items = [trace(n) for n in range(good)]
    for i, bad in enumerate(BAD_LINES):
        items.insert(2 * i + 1, bad)
    return jsonl(path, items)


def test_mixed_file_reconciles_and_quarantines_every_bad_line(db, tmp_path):
    report = ingest_files(db, [mixed_file(tmp_path / "mixed.jsonl")], config=load_config())
    assert (report.lines_read, report.ingested, report.duplicates, report.quarantined) == (45, 30, 0, 15)
    assert db["traces"].count == 30
    kept = quarantined_lines(db, LEAD, report.run_id)
    assert len(kept) == 15
    by_raw = {row["raw"].encode("utf-8", "replace"): row["reason"] for row in kept}
    for raw, reason in BAD_LINES.items():
        key = raw.decode("utf-8", "replace").encode("utf-8", "replace")
        assert reason in by_raw[key], (raw, by_raw[key])
    assert [row["line_no"] for row in kept] == [2 * i + 2 for i in range(15)]


def test_reimport_is_a_no_op(db, tmp_path):
    path = mixed_file(tmp_path / "mixed.jsonl")
    ingest_files(db, [path], config=load_config())
    before = list(db["traces"].rows_where(order_by="trace_id"))
    again = ingest_files(db, [path], config=load_config())
    assert (again.ingested, again.duplicates, again.quarantined, again.changed) == (0, 30, 15, 0)
    assert list(db["traces"].rows_where(order_by="trace_id")) == before


def test_changed_duplicate_is_reported_not_applied(db, tmp_path):
    ingest_files(db, [jsonl(tmp_path / "a.jsonl", [trace(1), trace(2)])], config=load_config())
    report = ingest_files(
        db, [jsonl(tmp_path / "b.jsonl", [trace(1, input="edited"), trace(2)])], config=load_config()
    )
    assert (report.duplicates, report.changed, report.ingested) == (2, 1, 0)
    assert db["traces"].get("t-000001")["input"] == "question number 1"
    assert [r["trace_id"] for r in db["ingest_conflicts"].rows] == ["t-000001"]


def test_duplicate_inside_one_file_counts_once(db, tmp_path):
    report = ingest_files(
        db, [jsonl(tmp_path / "a.jsonl", [trace(1), trace(1), trace(1, input="other")])], config=load_config()
    )
    assert (report.ingested, report.duplicates, report.changed) == (1, 2, 1)


def test_fields_are_normalized(db, tmp_path):
    item = trace(
        5,
        timestamp="2026-05-03T12:22:00+02:00",
        messages=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        signals={"regenerated": True, "schema_valid": False},
        team="payments",
    )
    ingest_files(db, [jsonl(tmp_path / "a.jsonl", [item])], config=load_config())
    row = db["traces"].get("t-000005")
    assert row["ts"] == "2026-05-03T10:22:00.000Z" and row["week"] == "2026-W18"
    assert (row["regenerated"], row["schema_valid"], row["turns"]) == (1, 0, 2)
    assert json.loads(row["metadata"]) == {"team": "payments"}


plausible_moments = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.sampled_from([UTC, PLUS_2])
)
ISO_SHAPES = (
    lambda m: m.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    lambda m: m.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    lambda m: m.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
    lambda m: m.isoformat(),
    lambda m: m.isoformat(sep=" ", timespec="seconds"),
    lambda m: m.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
)


@settings(max_examples=300, deadline=None)
@given(plausible_moments, st.sampled_from(ISO_SHAPES))
def test_any_iso_timestamp_is_stored_as_utc_to_the_millisecond(moment, shape):
    text = shape(moment)
    given_moment = datetime.fromisoformat(text)
    utc = (given_moment if given_moment.tzinfo else given_moment.replace(tzinfo=UTC)).astimezone(UTC)
    expected = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    assert normalize_trace(trace(1, timestamp=text))["ts"] == expected, text


def test_unknown_keys_and_signals_are_kept_in_metadata_and_hashed_as_before():
    item = trace(7, team="ops", signals={"thumbs": "down", "judge_score": 0.5, "turns": 2, "tokens": 12})
    row = normalize_trace({**item, "metadata": {"model": "m1"}})
    assert json.loads(row["metadata"]) == {"model": "m1", "team": "ops", "extra_signals": {"tokens": 12}}
    assert list(json.loads(row["metadata"])) == ["model", "team", "extra_signals"]
    # Pinned: a stored trace's hash must not change between releases, or re-imports turn into conflicts.
    assert row["content_hash"] == "e821d8e0020486a653654fe662975259"
    plain = normalize_trace(trace(7))
    assert (plain["metadata"], plain["content_hash"]) == ("{}", "a66c0d44fc73428faba7e4ff3de989e0")
    assert plain["thumbs"] is None and plain["turns"] == 1


@pytest.mark.parametrize(
    "signals, expected",
    [
        ({"retried": True, "escalated": False, "schema_valid": None}, {"retried": 1, "escalated": 0}),
        ({"latency_ms": 1126, "judge_score": 1}, {"latency_ms": 1126.0, "judge_score": 1.0}),
        ({"cost_usd": -0.0, "latency_ms": 0, "turns": 3.0}, {"cost_usd": 0.0, "turns": 3}),
        ({"retried": 1}, "'signals.retried' must be true, false or null, got number"),
        ({"escalated": "false"}, "'signals.escalated' must be true, false or null, got string"),
        ({"latency_ms": True}, "'signals.latency_ms' must be a finite number, got 'True'"),
        ({"latency_ms": -1.5}, "'signals.latency_ms' must not be negative, got -1.5"),
        ({"cost_usd": float("inf")}, "'signals.cost_usd' must be a finite number, got 'inf'"),
        ({"cost_usd": float("nan")}, "'signals.cost_usd' must be a finite number, got 'nan'"),
        ({"judge_score": 1.25}, "'signals.judge_score' 1.25 is outside 0..1"),
    ],
)
def test_signal_values_are_stored_or_refused_by_name(signals, expected):
    if isinstance(expected, str):
        with pytest.raises(BadInput) as refused:
            normalize_trace(trace(1, signals=signals))
        assert str(refused.value) == expected
    else:
        row = normalize_trace(trace(1, signals=signals))
        assert {key: row[key] for key in expected} == expected
        assert all(type(row[key]) is type(value) for key, value in expected.items())


def test_an_import_commits_five_thousand_lines_per_batch_by_default(db, tmp_path):
    # Each commit writes every index page it touched once more, so the batch size sets the index cost
    # per trace; it also bounds how long a label click may wait for the write lock during an import.
    ingest_files(db, [jsonl(tmp_path / "a.jsonl", [trace(n) for n in range(12_000)])], config=load_config())
    audited = db.execute("SELECT detail FROM audit_log WHERE action = 'ingest_batch' ORDER BY id")
    batches = [json.loads(detail)["lines"] for (detail,) in audited]
    assert batches == [[1, 5000], [5001, 10000], [10001, 12000]]


def test_blank_lines_are_not_records(db, tmp_path):
    report = ingest_files(
        db, [jsonl(tmp_path / "a.jsonl", [trace(1), b"", b"   ", trace(2)])], config=load_config()
    )
    assert (report.lines_read, report.ingested, report.blank_lines) == (2, 2, 2)


def test_oversized_line_is_quarantined_with_its_start(db, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_MAX_LINE_BYTES", "1000")
    big = trace(1, input="x" * 5000)
    report = ingest_files(db, [jsonl(tmp_path / "a.jsonl", [big, trace(2)])], config=load_config())
    assert (report.quarantined, report.ingested) == (1, 1)
    (row,) = quarantined_lines(db, LEAD)
    assert row["reason"].startswith("oversized line") and len(row["raw"]) == 1000


def test_csv_with_signal_columns_json_columns_and_bad_records(db, tmp_path):
    path = tmp_path / "traces.csv"
    path.write_text(
        "trace_id,input,output,cohort,signals.thumbs,signals.turns,signals.escalated,messages,team\n"
        'c-1,"hello, world",hi,smb,down,3,true,,ops\n'
        'c-2,"two\nlines",,,,,,"[{""role"": ""user"", ""content"": ""two""}]",\n'
        "c-3,too,few\n"
        "c-4,x,,,sideways,,,,\n"
        "c-5,x,,,,,,not json,\n",
        encoding="utf-8",
    )
    report = ingest_files(db, [path], config=load_config())
    assert (report.lines_read, report.ingested, report.quarantined) == (5, 2, 3)
    one = db["traces"].get("c-1")
    assert (one["thumbs"], one["turns"], one["escalated"], one["cohort"]) == ("down", 3, 1, "smb")
    assert json.loads(one["metadata"]) == {"team": "ops"}
    assert db["traces"].get("c-2")["input"] == "two\nlines"
    reasons = {r["line_no"]: r["reason"] for r in quarantined_lines(db, LEAD)}
    assert set(reasons) == {5, 6, 7}
    assert "3 fields" in reasons[5] and "'signals.thumbs'" in reasons[6] and "not JSON" in reasons[7]


def test_csv_with_a_json_signals_column(db, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('trace_id,input,signals\nc-1,x,"{""thumbs"": ""up"", ""retried"": true}"\n')
    ingest_files(db, [path], config=load_config())
    assert (db["traces"].get("c-1")["thumbs"], db["traces"].get("c-1")["retried"]) == ("up", 1)


def test_csv_without_required_columns_is_refused(db, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text\n1,x\n")
    with pytest.raises(BadInput, match="trace_id"):
        ingest_files(db, [path], config=load_config())


def test_gzipped_jsonl(db, tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wb") as out:
        out.write(b"\n".join(json.dumps(trace(n)).encode() for n in range(10)))
    assert ingest_files(db, [path], config=load_config()).ingested == 10


def _crashing(lines, after):
    for i, line in enumerate(lines):
        if i == after:
            raise KeyboardInterrupt
        yield line


def test_interrupted_import_keeps_committed_batches_and_rerun_completes(db, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_INGEST_BATCH", "100")
    lines = [json.dumps(trace(n)).encode() + b"\n" for n in range(1000)]
    with pytest.raises(KeyboardInterrupt):
        ingest_lines(db, _crashing(lines, 450), "feed.jsonl", "test", config=load_config())
    assert db["traces"].count == 400
    (run,) = db["ingest_runs"].rows
    assert (run["status"], run["lines_read"], run["ingested"]) == ("failed: interrupted", 400, 400)
    report = ingest_lines(db, lines, "feed.jsonl", "test", config=load_config())
    assert (report.ingested, report.duplicates) == (600, 400)
    assert db["traces"].count == 1000


def _ingest_in_process(db_path: str, file_path: str) -> dict:
    return ingest_files(open_db(db_path), [file_path], config=load_config()).as_json()


@pytest.mark.slow
def test_concurrent_imports_of_one_file_store_each_trace_once(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [trace(n) for n in range(3000)] + [b"not json"] * 7)
    db_path = str(tmp_path / "shared.db")
    open_db(db_path).close()
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        reports = pool.starmap(_ingest_in_process, [(db_path, str(path))] * 3)
    assert sum(r["ingested"] for r in reports) == 3000
    assert sum(r["duplicates"] for r in reports) == 6000
    db = open_db(db_path)
    assert db["traces"].count == 3000
    assert [r["quarantined"] for r in reports] == [7, 7, 7] and db["quarantine"].count == 7


def _reconciles(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = open_db(Path(folder) / "h.db")
        report = ingest_lines(
            db, [line + b"\n" for line in lines], "fuzz.jsonl", "test", config=load_config()
        )
        assert report.lines_read == report.ingested + report.duplicates + report.quarantined
        stored = db.execute(
            "SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM quarantine)"
        ).fetchone()
        assert stored == (report.ingested, report.quarantined)
        db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")), max_size=20))
def test_arbitrary_bytes_never_raise_and_always_reconcile(lines):
    _reconciles(lines)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
trace_like = st.fixed_dictionaries(
    {},
    optional={
        "trace_id": st.one_of(st.text(max_size=8), st.integers(), json_values),
        "input": st.one_of(st.text(max_size=30), json_values),
        "timestamp": st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False), json_values),
        "messages": json_values,
        "signals": st.one_of(
            st.dictionaries(st.sampled_from(["thumbs", "turns", "judge_score", "retried", "x"]), json_values),
            json_values,
        ),
        "metadata": json_values,
        "cohort": json_values,
    },
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(trace_like, json_values), max_size=15))
def test_arbitrary_json_never_raises_and_always_reconciles(items):
    _reconciles([json.dumps(item).encode() for item in items])


def test_cli_json_report_has_exactly_the_contract_keys(tmp_path, capsys):
    path = mixed_file(tmp_path / "m.jsonl")
    assert main(["ingest", "--db", str(tmp_path / "c.db"), str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"run_id", "lines_read", "ingested", "duplicates", "quarantined"}
    assert out["lines_read"] == out["ingested"] + out["duplicates"] + out["quarantined"] == 45


@pytest.mark.parametrize(
    "args, reason",
    [
        (["ingest", "--db", "{tmp}/x.db", "{tmp}/missing.jsonl"], "no such file"),
        (["ingest", "--db", "{tmp}/nofolder/x.db", "{tmp}/m.jsonl"], "does not exist"),
        (["ingest", "--db", "{tmp}", "{tmp}/m.jsonl"], "cannot open database"),
    ],
)
def test_cli_refuses_bad_input_with_one_line_and_exit_2(tmp_path, capsys, args, reason):
    jsonl(tmp_path / "m.jsonl", [trace(1)])
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("\n") == 1


def test_reordered_keys_and_a_missing_timestamp_do_not_make_a_duplicate_look_changed(db, tmp_path):
    first = {"trace_id": "t-1", "input": "hi", "signals": {"thumbs": "up", "turns": 2}}
    again = {"signals": {"turns": 2, "thumbs": "up"}, "input": "hi", "trace_id": "t-1"}
    ingest_files(db, [jsonl(tmp_path / "a.jsonl", [first])], config=load_config())
    report = ingest_files(db, [jsonl(tmp_path / "b.jsonl", [again])], config=load_config())
    assert (report.duplicates, report.changed) == (1, 0)
    changed = ingest_files(
        db, [jsonl(tmp_path / "c.jsonl", [{**again, "input": "hello"}])], config=load_config()
    )
    assert (changed.duplicates, changed.changed) == (1, 1)


def test_an_unreadable_file_fails_its_run_with_the_reason_and_keeps_committed_batches(db, tmp_path):
    good = jsonl(tmp_path / "good.jsonl", [trace(1), trace(2)])
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"trace_id": "t-9", "input": "x"}\n' * 50)[:-12])
    with pytest.raises(BadInput, match="not a readable gzip file"):
        ingest_files(db, [good, broken], config=load_config())
    (run,) = db["ingest_runs"].rows
    assert run["status"].startswith("failed: broken.jsonl.gz: not a readable gzip file")
    assert db["traces"].count >= 2
    with pytest.raises(BadInput, match="lacks the required columns"):
        ingest_files(db, [_csv(tmp_path, "id,text\n1,x\n")], config=load_config())
    assert list(db["ingest_runs"].rows)[-1]["status"].startswith("failed: bad.csv: CSV header")


def _csv(tmp_path, text: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


def test_import_settings_hold_while_it_runs_and_are_restored_after_it_and_after_a_failure(db, tmp_path):
    def settings() -> tuple:
        return tuple(db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("cache_size", "temp_store"))

    before, seen = settings(), []
    path = jsonl(tmp_path / "a.jsonl", [trace(n) for n in range(5)])
    ingest_files(db, [path], progress=lambda *_: seen.append(settings()), config=load_config())
    assert seen and set(seen) == {(-65536, 2)}
    assert settings() == before
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"trace_id": "t-9", "input": "x"}\n' * 50)[:-12])
    with pytest.raises(BadInput):
        ingest_files(db, [broken], config=load_config())
    assert settings() == before


def test_a_byte_order_mark_inside_a_jsonl_file_quarantines_its_line(db, tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"trace_id": "t-1", "input": "a"}\n\xef\xbb\xbf{"trace_id": "t-2", "input": "b"}\n'
    )
    report = ingest_files(db, [path], config=load_config())
    assert (report.ingested, report.quarantined) == (1, 1)
    (row,) = quarantined_lines(db, LEAD, report.run_id)
    assert row["line_no"] == 2 and "Unexpected UTF-8 BOM" in row["reason"]
