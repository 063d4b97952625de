"""The named faults of the readers, one by one: one size policy, a named import format, one-line refusals."""

import gzip
import io
import json

import pytest
from conftest import jsonl, trace
from streamlit.testing.v1 import AppTest

from flywheel.__main__ import main
from flywheel.auth import load_users
from flywheel.config import load_config
from flywheel.errors import BadInput
from flywheel.evals import runs
from flywheel.ingest.readers import sniff_format
from flywheel.ingest.records import SizePolicy
from flywheel.ingest.run import ingest_files, ingest_upload
from flywheel.online.rubrics import Rubric
from flywheel.sampling.plans import load_plan_file
from flywheel.store.db import open_db

LONG = 1_560_000  # the span that broke scrubbing of its week


def _import(db, data: bytes, name: str, fmt: str | None = None, **settings):
    return ingest_upload(db, io.BytesIO(data), name, "ana", config=load_config().replace(**settings), fmt=fmt)


def _reasons(db) -> list[str]:
    return [reason for (reason,) in db.execute("SELECT reason FROM quarantine ORDER BY id")]


def _span(trace_id: str, text: str) -> dict:
    return {
        "context": {"trace_id": trace_id, "span_id": "s1"},
        "span_kind": "LLM",
        "start_time": "2026-05-03T10:00:00Z",
        "attributes": {"input.value": text, "output.value": "ok"},
    }


def _otlp(text: str) -> dict:
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "startTimeUnixNano": "1779000000000000000",
        "attributes": [{"key": "input.value", "value": {"stringValue": text}}],
    }
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


def _langfuse(trace_id: str, text: str) -> dict:
    return {
        "id": trace_id,
        "timestamp": "2026-05-03T10:00:00Z",
        "input": text,
        "output": "ok",
        "sessionId": "s-1",
        "observations": [],
        "scores": [],
    }


# One size policy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "fmt"),
    [
        ("spans.jsonl", json.dumps(_span("t1", "y" * LONG)).encode(), None),
        ("spans.jsonl", json.dumps(_span("t1", "y" * LONG)).encode(), "openinference"),
        ("otlp.json", json.dumps(_otlp("y" * LONG)).encode(), "otlp-json"),
        ("lf.json", json.dumps([_langfuse("l1", "y" * LONG)]).encode(), "langfuse"),
    ],
)
def test_a_span_or_langfuse_trace_longer_than_the_text_bound_is_quarantined_not_stored(db, name, data, fmt):
    report = _import(db, data, name, fmt)
    assert (report.lines_read, report.ingested, report.quarantined) == (1, 0, 1)
    assert _reasons(db) == [f"oversized text: 'input' is {LONG:,} characters > 200,000"]
    assert db["traces"].count == 0


@pytest.mark.parametrize(
    ("field", "row"),
    [
        ("input", {"input": "x" * 301}),
        ("output", {"output": "x" * 301}),
        (
            "messages[1]",
            {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x" * 301}]},
        ),
    ],
)
def test_each_text_field_is_held_to_the_text_bound_by_jsonl_and_csv(db, tmp_path, field, row):
    line = json.dumps({**trace(1), **row}).encode()
    report = _import(db, line + b"\n", "t.jsonl", max_text_chars=300)
    assert report.quarantined == 1
    assert _reasons(db) == [f"oversized text: '{field}' is 301 characters > 300"]


def test_csv_records_meet_the_same_text_bound(db):
    data = b"trace_id,input\nc1," + b"x" * 300 + b"\nc2," + b"x" * 301 + b"\n"
    report = _import(db, data, "t.csv", max_text_chars=300)
    assert (report.lines_read, report.ingested, report.quarantined) == (2, 1, 1)
    assert _reasons(db) == ["oversized text: 'input' is 301 characters > 300"]


def test_the_record_bound_counts_stored_utf8_bytes_for_assembled_traces(db):
    """Two texts within the text bound, together over the record bound (é is two bytes)."""
    fits = _span("fits", "é" * 250)
    over = _span("over", "é" * 300)
    over["attributes"]["output.value"] = "é" * 300
    data = b"\n".join(json.dumps(s).encode() for s in (fits, over)) + b"\n"
    report = _import(db, data, "s.jsonl", "openinference", max_line_bytes=1100, max_text_chars=300)
    assert (report.ingested, report.quarantined) == (1, 1)
    (reason,) = _reasons(db)
    assert reason.startswith("oversized record: ") and reason.endswith(" bytes > 1,100")
    assert [tid for (tid,) in db.execute("SELECT trace_id FROM traces")] == ["fits"]


def test_the_size_policy_decides_at_its_bounds():
    policy = SizePolicy(max_record_bytes=100, max_text_chars=10)
    row = {"input": "x" * 10, "output": None, "messages": None, "metadata": None}
    assert policy.fault(row, {}) is None
    assert policy.fault({**row, "output": "x" * 11}, {}) == "oversized text: 'output' is 11 characters > 10"
    assert policy.fault({**row, "metadata": "m" * 90}, {}) is None  # 100 bytes: at the bound
    assert policy.fault({**row, "metadata": "m" * 91}, {}) == "oversized record: 101 bytes > 100"
    assert policy.fault({**row, "metadata": "é" * 46}, {}) == "oversized record: 102 bytes > 100"
    empty = {"input": "", "output": None, "messages": None, "metadata": None}
    assert policy.fault(empty, {}) is None


def test_a_text_bound_beyond_what_the_scrubber_reads_is_refused():
    with pytest.raises(BadInput, match="FLYWHEEL_MAX_TEXT_CHARS=1000001: expected at most 1,000,000"):
        SizePolicy.of(load_config({"FLYWHEEL_MAX_TEXT_CHARS": "1000001"}))
    assert SizePolicy.of(load_config({"FLYWHEEL_MAX_TEXT_CHARS": "1000000"})).max_text_chars == 1_000_000


# A named import format, and detection that reads enough ---------------------------------------------------


def _langfuse_export(first_input: int) -> bytes:
    traces = [_langfuse(f"lf-{n}", "x" * (first_input if n == 0 else 20)) for n in range(3)]
    return b"\n".join(json.dumps(t).encode() for t in traces) + b"\n"


def test_a_langfuse_export_with_a_first_input_over_8kb_is_detected(db):
    data = _langfuse_export(9000)
    assert sniff_format(data[:8192], complete=False) is None  # 8 KB do not say yet
    assert sniff_format(data) == "langfuse"
    report = _import(db, data, "export.jsonl")
    assert (report.lines_read, report.ingested, report.quarantined) == (3, 3, 0)


def test_a_langfuse_export_imports_when_its_format_is_named(db):
    report = _import(db, _langfuse_export(9000), "export.jsonl", "langfuse")
    assert (report.ingested, report.quarantined) == (3, 0)


def test_the_cli_takes_the_format_by_name(tmp_path, capsys):
    path = tmp_path / "export.jsonl"
    path.write_bytes(_langfuse_export(9000))
    assert main(["ingest", "--db", str(tmp_path / "x.db"), str(path), "--format", "langfuse", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ingested"] == 3


def test_a_pretty_printed_langfuse_document_is_detected_past_its_long_first_input(db):
    data = json.dumps([_langfuse("lf-9", "x" * 30_000), _langfuse("lf-8", "y")], indent=2).encode()
    assert _import(db, data, "export.json").ingested == 2


def test_detection_says_when_it_cannot_tell_and_naming_the_format_imports(db):
    data = b"{\n" + b'  "x": "' + b"y" * 10_000 + b'"\n}\n'  # more than the first read; no key decides
    with pytest.raises(BadInput, match=r"^doc\.json: cannot tell the format .*name it with --format"):
        _import(db, data, "doc.json", max_line_bytes=4000)
    report = _import(db, data, "doc.json", "jsonl", max_line_bytes=4000)
    assert report.lines_read == report.quarantined == 3  # read as JSONL, every line is quarantined


def test_an_oversized_first_line_is_read_as_jsonl_and_quarantined(db):
    data = b'{"trace_id": "big", "input": "' + b"y" * 5000 + b'"}\n' + json.dumps(trace(2)).encode() + b"\n"
    report = _import(db, data, "t.jsonl", max_line_bytes=4000)
    assert (report.ingested, report.quarantined) == (1, 1)
    assert _reasons(db)[0].startswith("oversized line")


def test_the_import_page_offers_detect_and_every_named_format(tmp_path, monkeypatch):
    path = tmp_path / "x.db"
    open_db(path).close()
    monkeypatch.setenv("FLYWHEEL_DB", str(path))
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.session_state["user_name"] = "ana"
    at.run()
    at.switch_page("pages/ingest.py")
    at.run()
    assert not at.exception
    picker = next(box for box in at.selectbox if box.label == "Format")
    assert picker.options == ["detect", "jsonl", "csv", "otlp-json", "openinference", "langfuse"]
    assert picker.value == "detect"


# Named faults: one line, never a traceback ------------------------------------------------------------------


def _deep(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


SPAN = json.dumps(_span("d", "x"))


@pytest.mark.parametrize(
    ("name", "fmt", "data"),
    [
        ("t.jsonl", None, f'{{"trace_id": "d", "input": "x", "metadata": {_deep(5000)}}}'),
        ("s.jsonl", "openinference", SPAN.replace('"ok"', f'"ok", "deep": {_deep(5000)}')),
        ("o.json", "otlp-json", json.dumps(_otlp("x")).replace('{"stringValue": "x"}', _deep(5000))),
        ("l.json", "langfuse", f'{{"id": "d", "input": {_deep(5000)}, "observations": []}}'),
        ("t.jsonl", None, '{"trace_id": "d\\ud800", "input": "lone surrogate"}'),
        ("t.jsonl", None, '{"trace_id": "d", "input": "x", "signals": {"turns": %s}}' % ("9" * 30)),
        ("l.json", "langfuse", '{"id": "d", "input": "x", "latency": %s, "observations": []}' % ("9" * 400)),
    ],
)
def test_nesting_surrogates_and_huge_integers_are_quarantined(db, name, fmt, data):
    report = _import(db, data.encode("utf-8", "surrogatepass"), name, fmt)
    assert (report.lines_read, report.ingested, report.quarantined) == (1, 0, 1)


def _plan(tmp_path, body, suffix=".json"):
    path = tmp_path / f"plan{suffix}"
    path.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode("utf-8", "surrogatepass"))
    return path


@pytest.mark.parametrize(
    ("body", "suffix", "reason"),
    [
        (
            b'name = "a\\u0000b"\n[random]\nrate = 0.1\n',
            ".toml",
            "plan name 'a\\\\x00b': holds the character",
        ),
        ({"random": {"rate": 0.1}, "strata": [{"key": "cohort", "values": ["a\x00b"]}]}, ".json", "values"),
        ({"name": "\ud800", "random": {"rate": 0.1}}, ".json", "holds the character '\\\\ud800'"),
        (
            {"seed": 10**30, "random": {"rate": 0.1}},
            ".json",
            "seed 1000000000000000000000000000000: expected",
        ),
        ({"cap": 2**63, "random": {"rate": 0.1}}, ".json", "cap 9223372036854775808: expected an integer"),
        ({"anomaly": 5}, ".json", "anomaly 5: expected a list"),
        ({"anomaly": [["retried"]]}, ".json", "unknown anomaly signal"),
        ({"strata": [{"key": ["cohort"]}]}, ".json", "expected a table with a 'key'"),
        (b"[" * 100_000, ".json", "nested too deeply"),
        (b"\xff\xfe{}", ".json", "is not UTF-8"),
    ],
)
def test_a_plan_file_is_refused_in_one_line_naming_it(tmp_path, body, suffix, reason):
    path = _plan(tmp_path, body, suffix)
    with pytest.raises(BadInput, match=reason) as refused:
        load_plan_file(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_a_plan_within_bounds_still_loads(tmp_path):
    plan = load_plan_file(_plan(tmp_path, {"seed": 2**63 - 1, "random": {"rate": 0.1}, "name": "wéekly"}))
    assert (plan.seed, plan.name) == (2**63 - 1, "wéekly")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff", "is not UTF-8"),
        (b'[users.a]\nrole = "lead"\nemail = 5\n', "email 5: expected text"),
        (b'[users.""]\nrole = "lead"\n', "user name '': expected printable text"),
        (b"\x00", "is not valid TOML"),
    ],
)
def test_a_users_file_is_refused_in_one_line(tmp_path, data, reason):
    path = tmp_path / "users.toml"
    path.write_bytes(data)
    with pytest.raises(BadInput, match=reason):
        load_users(path)
    with pytest.raises(BadInput, match="is a folder"):
        load_users(tmp_path)


def promptfoo_binary(items: list) -> bytes:
    return json.dumps({"results": {"results": items}}).encode("utf-8", "surrogatepass")


def _inspect(samples: list) -> bytes:
    return json.dumps({"eval": {}, "samples": samples}).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (promptfoo_binary([{"testCase": {"metadata": ["row"]}}]), "result 1: 'metadata' is not an object"),
        (promptfoo_binary(["a result"]), "result 1: 'result' is not an object"),
        (promptfoo_binary([{"testCase": "x"}]), "'testCase' is not an object"),
        (
            promptfoo_binary([{"testCase": {"vars": {"row_id": "r"}}, "response": "x"}]),
            "'response' is not an object",
        ),
        (promptfoo_binary([{"testCase": {"vars": {"row_id": "r"}}, "score": 10**400}]), "cannot be stored"),
        (promptfoo_binary([{"testCase": {"vars": {"row_id": "r\ud800"}}}]), "cannot be stored"),
        (_inspect([{"id": "r", "scores": ["C"]}]), "sample 1: 'scores' is not an object"),
        (_inspect([{"id": "r", "output": "text"}]), "'output' is not an object"),
        (_inspect([{"id": "r", "epoch": 10**30}]), "'epoch' 1000000000000000000000000000000: expected"),
        (_inspect([{"id": "r", "epoch": 0}]), "'epoch' 0: expected"),
        (_inspect([{"id": "r\ud800"}]), "cannot be stored"),
        (
            _inspect([{"id": "ok", "scores": {"s": {"value": "C"}}}, {"id": 5}]),
            "line 2: sample 2: sample without",
        ),
    ],
)
def test_malformed_runner_results_are_refused_naming_the_record(data, reason):
    with pytest.raises(BadInput, match=reason) as refused:
        runs.parse_results(data, "results.json")
    assert str(refused.value).startswith("results.json") and "\n" not in str(refused.value)


def test_well_formed_runner_results_still_read():
    fmt, results = runs.parse_results(
        _inspect([{"id": "r1", "epoch": 2, "scores": {"s": {"value": "C"}}, "output": {"completion": "hi"}}]),
        "log.json",
    )
    assert (fmt, results) == ("inspect", [runs.Result("r1", 1, None, "hi", 1)])
    fmt, results = runs.parse_results(
        promptfoo_binary(
            [{"testCase": {"metadata": {"row_id": "r1"}}, "success": False, "response": {"output": "o"}}]
        ),
        "pf.json",
    )
    assert (fmt, results) == ("promptfoo", [runs.Result("r1", 0, None, "o", None)])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {"metrics": [{"name": "m", "levels": {"pass": "a", "fail": "b"}}], "label_map": ["known"]},
            "label map",
        ),
        ({"metrics": [{"name": "m", "levels": {"pass": "a", "fail": "b"}}], "examples": [["t"]]}, "examples"),
        ({"metrics": [{"name": "m", "levels": {"pass": "a", "fail": "b"}}], "examples": 5}, "examples 5"),
        (
            {"metrics": [{"name": "m", "levels": {"pass": "a\ud800", "fail": "b"}}]},
            "level 'pass': expected text",
        ),
    ],
)
def test_a_malformed_rubric_is_refused_in_one_line(body, reason):
    with pytest.raises(BadInput, match=reason):
        Rubric.from_body("r", body)


@pytest.mark.parametrize("value", [str(2**63), "9" * 30, "1" * 5000])
def test_an_integer_setting_beyond_sqlite_is_refused(value):
    with pytest.raises(BadInput, match="FLYWHEEL_BUSY_TIMEOUT_MS="):
        load_config({"FLYWHEEL_BUSY_TIMEOUT_MS": value})
    assert load_config({"FLYWHEEL_BUSY_TIMEOUT_MS": str(2**63 - 1)}).busy_timeout_ms == 2**63 - 1


# The CLI: exit 2 and one line on stderr ---------------------------------------------------------------------


def _cli_files(tmp_path) -> dict:
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(json.dumps(trace(1)).encode() * 20)[:-10])
    header = tmp_path / "header.csv"
    header.write_text("id,text\n1,x\n")
    doc = tmp_path / "doc.json"
    doc.write_bytes(b"{\n" + b" " * 1_100_000 + b"\n}\n")
    plan = _plan(tmp_path, {"random": {"rate": 0.1}, "strata": [{"key": "cohort", "values": ["a\x00b"]}]})
    return {"broken": broken, "header": header, "doc": doc, "plan": plan}


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["ingest", "--db", "{db}", "{broken}"], "broken.jsonl.gz: not a readable gzip file"),
        (["ingest", "--db", "{db}", "{header}"], "header.csv: CSV header"),
        (["ingest", "--db", "{db}", "{doc}"], "doc.json: cannot tell the format"),
        (["sample", "--db", "{db}", "--plan", "{plan}"], "holds the character '\\x00'"),
    ],
)
def test_the_cli_refuses_bad_files_with_exit_2_and_one_line(tmp_path, capsys, args, reason):
    files = {**{k: str(v) for k, v in _cli_files(tmp_path).items()}, "db": str(tmp_path / "x.db")}
    ingest_files(open_db(files["db"]), [jsonl(tmp_path / "ok.jsonl", [trace(1)])], config=load_config())
    assert main([a.format(**files) for a in args]) == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("\n") == 1, err


def test_the_cli_refuses_an_unknown_format_name(tmp_path, capsys):
    path = jsonl(tmp_path / "ok.jsonl", [trace(1)])
    with pytest.raises(SystemExit) as exited:
        main(["ingest", "--db", str(tmp_path / "x.db"), str(path), "--format", "yaml"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "invalid choice: 'yaml'" in err and err.count("\n") == 1


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"input": ' + DEEP + b"}\n", "nested too deeply"),
        (b'{"input": "a\\ud800b"}\n', "lone surrogate"),
    ],
)
def test_a_suite_with_deep_nesting_or_a_lone_surrogate_is_refused_with_its_line(db, data, reason):
    from flywheel.auth import User
    from flywheel.evals import versions as evalsets

    with pytest.raises(evalsets.BadRows, match=f"line 1: .*{reason}"):
        evalsets.import_evalset(db, User("ana", "lead"), data, "suite.jsonl")
    assert db["eval_versions"].count == 0


@pytest.mark.parametrize("data", [DEEP, b'{"row_id": ' + DEEP + b"}\n"])
def test_deeply_nested_results_are_refused_with_their_line(db, data):
    from flywheel.auth import User
    from flywheel.evals import versions as evalsets

    lead = User("ana", "lead")
    evalsets.import_evalset(db, lead, b'{"input": "a question"}\n', "suite.jsonl")
    with pytest.raises(BadInput, match="line 1: not JSON we read: nested too deeply"):
        runs.import_results(db, lead, 1, "challenger", data, "results.jsonl")
    assert db["eval_results"].count == 0
