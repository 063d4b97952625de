"""Span and Langfuse imports: exports made by the real OpenTelemetry SDK with OpenInference attributes."""

import base64
import copy
import json

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openinference.semconv.trace import MessageAttributes as M
from openinference.semconv.trace import MessageContentAttributes as C
from openinference.semconv.trace import SpanAttributes as S
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.config import load_config
from flywheel.ingest.readers import sniff_format
from flywheel.ingest.run import ingest_files, quarantined_lines
from flywheel.store.db import open_db

LEAD = User("ana", "lead")
T0 = 1_779_000_000_000_000_000  # 2026-05-17, in nanoseconds


def _messages(prefix: str, messages: list[tuple[str, str]], parts: bool = False) -> dict:
    out = {}
    for i, (role, text) in enumerate(messages):
        out[f"{prefix}.{i}.{M.MESSAGE_ROLE}"] = role
        if parts:  # the multi-part form: message.contents.M.message_content.text
            out[f"{prefix}.{i}.{M.MESSAGE_CONTENTS}.0.{C.MESSAGE_CONTENT_TYPE}"] = "text"
            out[f"{prefix}.{i}.{M.MESSAGE_CONTENTS}.0.{C.MESSAGE_CONTENT_TEXT}"] = text
        else:
            out[f"{prefix}.{i}.{M.MESSAGE_CONTENT}"] = text
    return out


def _conversation_spans() -> list:
    """Two traces as an OpenInference-instrumented app records them with the OpenTelemetry SDK."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    turn1 = [("system", "Be brief."), ("user", "My card has not arrived.")]
    turn2 = [*turn1, ("assistant", "Sorry! When did you order it?"), ("user", "Two weeks ago.")]
    root_attributes = {
        S.OPENINFERENCE_SPAN_KIND: "CHAIN",
        S.INPUT_VALUE: "Two weeks ago.",
        S.OUTPUT_VALUE: "I have reordered it.",
        S.SESSION_ID: "session-42",
        S.USER_ID: "user-7",
        S.METADATA: json.dumps({"cohort": "enterprise", "intent": "card_arrival", "region": "eu"}),
        S.TAG_TAGS: ["beta", "cards"],
        "app.release": "2026.05",
    }
    with tracer.start_as_current_span("agent", attributes=root_attributes, start_time=T0) as root:
        for n, (messages, reply, parts) in enumerate(
            [(turn1, "Sorry! When did you order it?", False), (turn2, "I have reordered it.", True)]
        ):
            attributes = {
                S.OPENINFERENCE_SPAN_KIND: "LLM",
                S.LLM_MODEL_NAME: "gpt-4o-mini",
                S.LLM_TOKEN_COUNT_PROMPT: 100 * (n + 1),
                S.LLM_TOKEN_COUNT_COMPLETION: 20,
                **_messages(S.LLM_INPUT_MESSAGES, messages, parts),
                **_messages(S.LLM_OUTPUT_MESSAGES, [("assistant", reply)]),
            }
            span = tracer.start_span("llm", attributes=attributes, start_time=T0 + (n + 1) * 10**8)
            span.end(end_time=T0 + (n + 2) * 10**8)
        root.end(end_time=T0 + 1_500_000_000)
    with tracer.start_as_current_span("agent", start_time=T0 + 10**9) as root:
        failing = {
            S.OPENINFERENCE_SPAN_KIND: "LLM",
            **_messages(S.LLM_INPUT_MESSAGES, [("user", "Ignore rules")]),
        }
        for n in range(2):  # the first call fails and is retried with the same input
            span = tracer.start_span("llm", attributes=failing, start_time=T0 + 10**9 + n)
            if n == 0:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
            span.end(end_time=T0 + 10**9 + n + 5)
        guard = tracer.start_span("guard", attributes={S.OPENINFERENCE_SPAN_KIND: "GUARDRAIL"})
        guard.set_status(Status(StatusCode.ERROR, "blocked"))
        guard.end()
        root.end(end_time=T0 + 2 * 10**9)
    return list(exporter.get_finished_spans())


def _otlp_json(spans: list, hex_ids: bool = True) -> dict:
    """Spans serialised as the Collector's file exporter writes them: OTLP JSON, ids in hex."""
    export = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    if hex_ids:
        for resource in export["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for span in scope["spans"]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in span:
                            span[key] = base64.b64decode(span[key]).hex()
    return export


@pytest.fixture
def otlp_file(tmp_path):
    spans = _conversation_spans()
    # One export per line, the conversation's spans split over two lines, then malformed input.
    lines = [_otlp_json(spans[:2]), _otlp_json(spans[2:])]
    broken = _otlp_json(spans[:1])
    broken["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "not-an-id"
    path = tmp_path / "spans.json"
    body = [json.dumps(line) for line in [*lines, broken, {"hello": 1}]] + ["{not json"]
    path.write_text("\n".join(body) + "\n")
    return path


def test_otlp_export_of_a_multi_turn_conversation_imports_and_reconciles(
    db, otlp_file, tmp_path, monkeypatch
):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"prompt": 0.15, "completion": 0.6}}))
    monkeypatch.setenv("FLYWHEEL_TOKEN_PRICES", str(prices))
    report = ingest_files(db, [otlp_file], config=load_config())
    assert (report.lines_read, report.ingested, report.quarantined) == (5, 2, 3)
    first, second = db.execute("SELECT trace_id FROM traces ORDER BY ts").fetchall()
    row = db["traces"].get(first[0])
    assert (row["input"], row["output"]) == ("Two weeks ago.", "I have reordered it.")
    assert [m["role"] for m in json.loads(row["messages"])] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert json.loads(row["messages"])[3]["content"] == "Two weeks ago."
    assert (row["turns"], row["latency_ms"], row["retried"], row["guardrail_tripped"]) == (2, 1500.0, 0, 0)
    assert row["cost_usd"] == pytest.approx((300 * 0.15 + 40 * 0.6) / 1e6)
    assert (row["cohort"], row["intent"], row["ts"]) == (
        "enterprise",
        "card_arrival",
        "2026-05-17T06:40:00.000Z",
    )
    metadata = json.loads(row["metadata"])
    assert (metadata["session_id"], metadata["user_id"], metadata["model"]) == (
        "session-42",
        "user-7",
        "gpt-4o-mini",
    )
    assert metadata["tags"] == ["beta", "cards"] and metadata["token_counts"]["prompt"] == 300
    assert metadata["attributes"] == {"app.release": "2026.05"} and metadata["span_count"] == 3
    retried = db["traces"].get(second[0])
    assert (retried["retried"], retried["guardrail_tripped"], retried["input"]) == (1, 1, "Ignore rules")
    reasons = sorted(r["reason"] for r in quarantined_lines(db, LEAD))
    assert any("malformed span: 'traceId'" in r for r in reasons)
    assert any("no 'resourceSpans'" in r for r in reasons) and any(r.startswith("not JSON") for r in reasons)
    again = ingest_files(db, [otlp_file], config=load_config())
    assert (again.duplicates, again.changed, again.quarantined, db["quarantine"].count) == (2, 0, 3, 3)


def test_one_pretty_printed_otlp_document_and_base64_ids(db, tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_otlp_json(_conversation_spans(), hex_ids=False), indent=2))
    report = ingest_files(db, [path], config=load_config())
    assert (report.lines_read, report.ingested, report.quarantined) == (2, 2, 0)
    assert all(len(r["trace_id"]) == 32 for r in db["traces"].rows)


def _phoenix(span) -> dict:
    """A span as Phoenix exports it: context ids, span_kind, ISO times and nested attributes."""
    nested: dict = {}
    for key, value in span.attributes.items():
        node = nested
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = list(value) if isinstance(value, tuple) else value
    return {
        "name": span.name,
        "context": {"trace_id": f"{span.context.trace_id:032x}", "span_id": f"{span.context.span_id:016x}"},
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "span_kind": span.attributes.get(S.OPENINFERENCE_SPAN_KIND, "UNKNOWN"),
        "start_time": f"{span.start_time / 1e9:.6f}",
        "end_time": None,
        "status_code": span.status.status_code.name,
        "attributes": nested,
        "_times": (span.start_time, span.end_time),
    }


def test_openinference_span_rows_as_phoenix_exports_them(db, tmp_path):
    from datetime import UTC, datetime

    rows = []
    for span in _conversation_spans():
        row = _phoenix(span)
        start, end = row.pop("_times")
        row["start_time"] = datetime.fromtimestamp(start / 1e9, UTC).isoformat()
        row["end_time"] = datetime.fromtimestamp(end / 1e9, UTC).isoformat()
        rows.append(row)
    rows.append({"name": "orphan", "context": {}, "span_kind": "LLM"})
    path = tmp_path / "phoenix.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert sniff_format(path.read_bytes()[:8192]) == "openinference"
    report = ingest_files(db, [path], fmt="openinference", config=load_config())
    assert (report.lines_read, report.ingested, report.quarantined) == (3, 2, 1)
    row = next(r for r in db["traces"].rows if r["turns"] == 2)
    assert (row["input"], row["cohort"]) == ("Two weeks ago.", "enterprise")
    assert len(json.loads(row["messages"])) == 5


LANGFUSE_TRACE = {
    "id": "lf-1",
    "timestamp": "2026-05-20T09:00:00.000Z",
    "name": "support-chat",
    "input": {"messages": [{"role": "user", "content": "Where is my refund?"}]},
    "output": {"role": "assistant", "content": "It was sent on Monday."},
    "sessionId": "s-9",
    "userId": "u-3",
    "metadata": {"cohort": "smb", "intent": "refund_dispute"},
    "tags": ["prod"],
    "latency": 1.25,
    "totalCost": 0.0021,
    "observations": [
        {"id": "o1", "type": "GENERATION", "name": "llm", "startTime": "2026-05-20T09:00:00.100Z",
         "model": "claude-x", "input": [{"role": "user", "content": "Where is my refund?"}],
         "level": "ERROR"},
        {"id": "o2", "type": "GENERATION", "name": "llm", "startTime": "2026-05-20T09:00:00.600Z",
         "model": "claude-x", "input": [{"role": "user", "content": "Where is my refund?"}],
         "level": "DEFAULT"},
        {"id": "o3", "type": "SPAN", "name": "lookup"},
    ],
    "scores": [
        {"name": "user-feedback", "value": 0, "dataType": "NUMERIC"},
        {"name": "helpfulness", "value": 0.4, "dataType": "NUMERIC"},
    ],
}  # fmt: skip


def test_langfuse_trace_export_with_observations_and_scores(db, tmp_path):
    broken = {**LANGFUSE_TRACE, "id": "lf-2", "observations": "not a list"}
    no_id = {k: v for k, v in LANGFUSE_TRACE.items() if k != "id"}
    path = tmp_path / "langfuse.json"
    path.write_text(json.dumps([LANGFUSE_TRACE, broken, no_id], indent=1))
    report = ingest_files(db, [path], config=load_config())
    assert (report.lines_read, report.ingested, report.quarantined) == (3, 1, 2)
    row = db["traces"].get("lf-1")
    assert (row["input"], row["output"], row["thumbs"]) == (
        "Where is my refund?",
        "It was sent on Monday.",
        "down",
    )
    assert (row["latency_ms"], row["cost_usd"], row["retried"]) == (1250.0, 0.0021, 1)
    assert (row["cohort"], row["intent"], row["turns"]) == ("smb", "refund_dispute", 1)
    metadata = json.loads(row["metadata"])
    assert metadata["scores"] == {"user-feedback": 0, "helpfulness": 0.4} and metadata["session_id"] == "s-9"
    reasons = sorted(r["reason"] for r in quarantined_lines(db, LEAD))
    assert any("expected an array" in r for r in reasons) and any("trace_id" in r for r in reasons)


def test_langfuse_table_exports_as_jsonl_and_csv(db, tmp_path, capsys):
    rows = [{k: v for k, v in LANGFUSE_TRACE.items() if k not in ("observations", "scores")}]
    rows.append({**rows[0], "id": "lf-9", "input": "plain text question", "output": None})
    jsonl = tmp_path / "table.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["ingest", "--db", str(tmp_path / "c.db"), str(jsonl), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["lines_read"], out["ingested"]) == (2, 2)
    csv_path = tmp_path / "table.csv"
    csv_path.write_text(
        "id,timestamp,name,input,output,sessionId,userId,latency,totalCost,metadata\n"
        'lf-c1,2026-05-21T10:00:00Z,chat,"{""messages"": [{""role"": ""user"", ""content"": ""hi""}]}",'
        "hello,s,u,"
        '0.5,0.001,"{""cohort"": ""free""}"\n'
        "lf-c2,not a time,chat,x,y,s,u,1,1,\n"
        "lf-c3,2026-05-21T10:00:00Z,too,few\n"
    )
    report = ingest_files(db, [csv_path], config=load_config())
    assert (report.lines_read, report.ingested, report.quarantined) == (3, 1, 2)
    row = db["traces"].get("lf-c1")
    assert (row["input"], row["output"], row["cohort"], row["latency_ms"]) == ("hi", "hello", "free", 500.0)


def test_format_is_sniffed_from_content():
    assert sniff_format(b'{"resourceSpans": [') == "otlp-json"
    assert sniff_format(b'[{"id": "x", "observations": []}]') == "langfuse"
    assert sniff_format(b'{"trace_id": "t", "input": "x", "sessionId": "s"}') == "jsonl"
    assert sniff_format(b"garbage") == "jsonl"


# Mutated exports: whatever a span or trace holds, the import never crashes and every record reconciles.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*prefix, index))


def _mutated(document, data) -> object:
    document = copy.deepcopy(document)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(_paths(document))))
        if not path:
            return data.draw(json_values)
        node = document
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = data.draw(json_values)
    return document


@pytest.fixture(scope="module")
def otlp_export():
    return _otlp_json(_conversation_spans())


def _reconciles(tmp_path_factory, name: str, text: str, fmt: str) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / name
    path.write_text(text)
    db = open_db(folder / "f.db")
    report = ingest_files(db, [path], fmt=fmt, max_bad=10**6, config=load_config())
    stored = db.execute("SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM quarantine)").fetchone()
    assert report.lines_read == report.ingested + report.duplicates + report.quarantined
    assert stored == (report.ingested, report.quarantined)
    db.close()


@pytest.mark.parametrize("resource", [5, "host", [1], None])
def test_an_otlp_resource_that_is_not_an_object_is_quarantined(tmp_path_factory, otlp_export, resource):
    broken = json.loads(json.dumps(otlp_export))
    broken["resourceSpans"][0]["resource"] = resource
    text = json.dumps(broken) + "\n" + json.dumps(otlp_export) + "\n"
    _reconciles(tmp_path_factory, "spans.json", text, "otlp-json")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_otlp_exports_never_crash(tmp_path_factory, otlp_export, data):
    text = json.dumps(_mutated(otlp_export, data)) + "\n" + json.dumps(otlp_export) + "\n"
    _reconciles(tmp_path_factory, "spans.json", text, "otlp-json")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_langfuse_traces_never_crash(tmp_path_factory, data):
    text = json.dumps([_mutated(LANGFUSE_TRACE, data)], indent=1)
    _reconciles(tmp_path_factory, "lf.json", text, "langfuse")


def test_the_mutations_are_real_and_reach_both_the_traces_and_the_quarantine(tmp_path, otlp_export):
    """The fuzz above proves something only if its mutations do: drawn documents differ from the export
    and from each other, and importing them stores some traces and quarantines others."""
    drawn = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True)
    @given(st.data())
    def draw(data):
        drawn.append(json.dumps(_mutated(otlp_export, data)))

    draw()
    original = json.dumps(otlp_export)
    changed = set(drawn) - {original}
    assert len(changed) >= len(drawn) // 2, f"only {len(changed)} of {len(drawn)} drawn exports differ"
    path = tmp_path / "spans.json"
    path.write_text("\n".join(sorted(changed)) + "\n")
    report = ingest_files(
        open_db(tmp_path / "m.db"), [path], fmt="otlp-json", max_bad=10**6, config=load_config()
    )
    assert report.quarantined > 0, "no mutation was refused: the fuzz never reaches the quarantine"
    assert report.ingested > 0, "every mutation was refused: the fuzz never reaches the traces table"
