"""Every reader of a file a user can hand us, fed arbitrary bytes, truncations, nesting, sizes and encodings:
it imports with reconciled counts, or refuses with one FlywheelError line; no other exception escapes."""

import csv
import gzip
import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel.auth import load_users
from flywheel.config import load_config
from flywheel.errors import FlywheelError
from flywheel.evals import runs
from flywheel.ingest.run import ingest_upload
from flywheel.online.rubrics import Rubric
from flywheel.sampling.plans import load_plan_file

# Small bounds so that generated inputs cross them: a record of 4 KB, a text of 300 characters.
SMALL = {"max_line_bytes": 4000, "max_text_chars": 300}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
KEYS = [
    "trace_id", "input", "output", "messages", "signals", "metadata", "timestamp", "cohort", "intent",
    "turns", "thumbs", "role", "content", "resourceSpans", "scopeSpans", "spans", "traceId", "spanId",
    "parentSpanId", "attributes", "key", "value", "stringValue", "intValue", "kvlistValue", "arrayValue",
    "values", "startTimeUnixNano", "endTimeUnixNano", "status", "code", "resource", "context", "span_id",
    "span_kind", "start_time", "end_time", "parent_id", "status_code", "id", "observations", "scores",
    "sessionId", "type", "name", "level", "startTime", "totalCost", "latency", "data", "input.value",
]  # fmt: skip
ODD_TEXT = [
    "GENERATION", "LLM", "ERROR", "2", "user", "assistant", "2026-05-03T10:22:00Z", "1779000000000000000",
    "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "\ud800", "a\x00b", "x" * 350, "é" * 1500,
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(ODD_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=6),
    ),
    max_leaves=30,
)


def _dumps(value: object, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _nested(depth: int, opener: bytes, closer: bytes) -> bytes:
    return b'{"trace_id": "deep", "input": "x", "metadata": ' + opener * depth + b"1" + closer * depth + b"}"


documents = st.one_of(
    st.binary(max_size=400),
    st.builds(_dumps, json_values, st.booleans()),
    st.lists(st.builds(_dumps, json_values, st.booleans()), max_size=6).map(b"\n".join),
    st.builds(
        lambda v, i: json.dumps(v, indent=i).encode("utf-8", "surrogatepass"), json_values, st.integers(1, 4)
    ),
    st.builds(lambda n: _nested(n, b"[", b"]"), st.integers(0, 3000)),
    st.builds(lambda n: _nested(n, b'{"a": ', b"}"), st.integers(0, 3000)),
)


def _encoded(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "utf-16":
        return data.decode("utf-8", "replace").encode("utf-16")
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    return data


inputs = st.tuples(
    documents, st.sampled_from(["plain", "plain", "gzip", "utf-16", "bom"]), st.integers(0, 600)
)


def _import(db, data: bytes, name: str, fmt: str | None) -> None:
    """One import: reconciled counts and nothing stored beyond the size policy, or one FlywheelError line."""
    config = load_config().replace(**SMALL)
    try:
        report = ingest_upload(db, io.BytesIO(data), name, "fuzz", config=config, fmt=fmt)
    except FlywheelError as error:
        assert "\n" not in str(error), str(error)
        return
    assert report.lines_read == report.ingested + report.duplicates + report.quarantined
    longest = db.execute("SELECT max(length(input)), max(length(output)) FROM traces").fetchone()
    assert all(size is None or size <= SMALL["max_text_chars"] for size in longest)


def _check_ingest(db, case: tuple, name: str, fmt: str | None) -> None:
    data, how, cut = case
    data = _encoded(data, how)
    for part in (data, data[:cut], data[cut:]):
        _import(db, part, name + (".gz" if how == "gzip" else ""), fmt)


@FUZZ
@given(inputs)
def test_jsonl_reader(db, case):
    _check_ingest(db, case, "t.jsonl", "jsonl")


@FUZZ
@given(inputs)
def test_detected_format(db, case):
    _check_ingest(db, case, "t.json", None)


@FUZZ
@given(inputs)
def test_otlp_json_reader(db, case):
    _check_ingest(db, case, "t.json", "otlp-json")


@FUZZ
@given(inputs)
def test_openinference_reader(db, case):
    _check_ingest(db, case, "t.jsonl", "openinference")


@FUZZ
@given(inputs)
def test_langfuse_reader(db, case):
    _check_ingest(db, case, "t.json", "langfuse")


def _csv_text(rows: list[list[str]], header: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass")


cells = st.one_of(
    st.text(max_size=20), st.sampled_from(ODD_TEXT), st.builds(lambda v: json.dumps(v), json_values)
)
csv_inputs = st.one_of(
    st.binary(max_size=400),
    st.builds(
        _csv_text,
        st.lists(st.lists(cells, min_size=0, max_size=6), max_size=6),
        st.sampled_from(
            [
                ["trace_id", "input", "output", "signals", "metadata", "messages"],
                ["trace_id", "input", "signals.turns", "signals.thumbs", "timestamp"],
                ["id", "timestamp", "input", "output", "sessionId", "latency", "totalCost", "observations"],
                ["trace_id", "trace_id"],
            ]
        ),
    ),
)


@FUZZ
@given(st.tuples(csv_inputs, st.sampled_from(["plain", "gzip", "utf-16", "bom"]), st.integers(0, 600)))
def test_csv_readers(db, case):
    _check_ingest(db, case, "t.csv", None)


# Runner results, plans, users, rubrics, settings -------------------------------------------------------

shallow = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "row_id",
                    "metadata",
                    "vars",
                    "testCase",
                    "response",
                    "output",
                    "completion",
                    "success",
                    "score",
                    "id",
                    "scores",
                    "value",
                    "epoch",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


def _results_document(kind: str, items: list) -> bytes:
    document = {"results": {"results": items}} if kind == "promptfoo" else {"eval": {}, "samples": items}
    return json.dumps(document).encode("utf-8", "surrogatepass")


def _check_results(data: bytes) -> None:
    try:
        runs.parse_results(data, "results.json")
    except FlywheelError as error:
        assert "\n" not in str(error), str(error)


@FUZZ
@given(st.lists(shallow, max_size=5), st.integers(0, 400))
def test_promptfoo_results_reader(items, cut):
    data = _results_document("promptfoo", items)
    for part in (data, data[:cut]):
        _check_results(part)


@FUZZ
@given(st.lists(shallow, max_size=5), st.integers(0, 400))
def test_inspect_results_reader(items, cut):
    data = _results_document("inspect", items)
    for part in (data, data[:cut]):
        _check_results(part)


plan_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "seed",
                    "week",
                    "cap",
                    "random",
                    "rate",
                    "anomaly",
                    "strata",
                    "key",
                    "quota",
                    "values",
                    "low",
                    "high",
                    "min_turns",
                    "top_share",
                    "rare_share",
                ]
            ),
            inner,
            max_size=6,
        ),
    ),
    max_leaves=25,
)


def _refuses_in_one_line(read, *args) -> None:
    try:
        read(*args)
    except FlywheelError as error:
        assert "\n" not in str(error), str(error)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.builds(_dumps, plan_values, st.booleans())), st.integers(0, 300))
def test_plan_file_reader_json(tmp_path, data, cut):
    path = tmp_path / "plan.json"
    for part in (data, data[:cut]):
        path.write_bytes(part)
        _refuses_in_one_line(load_plan_file, path)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
    )
)
def test_plan_file_reader_toml(tmp_path, data):
    path = tmp_path / "plan.toml"
    path.write_bytes(data)
    _refuses_in_one_line(load_plan_file, path)


toml_lines = st.lists(
    st.one_of(
        st.sampled_from(['[users.ana]', '[users."a b"]', 'role = "lead"', 'role = "boss"', "role = 1",
                         'email = "a@x.org"', "email = 5", "users = 1", '[users]', 'role = ["lead"]']),
        st.text(max_size=20),
    ),
    max_size=8,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))  # fmt: skip


@FUZZ
@given(st.one_of(st.binary(max_size=300), toml_lines))
def test_users_file_reader(tmp_path, data):
    path = tmp_path / "users.toml"
    path.write_bytes(data)
    _refuses_in_one_line(load_users, path)


@FUZZ
@given(st.text(max_size=30), json_values)
def test_rubric_reader(name, body):
    _refuses_in_one_line(Rubric.from_body, name, body)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["FLYWHEEL_MAX_LINE_BYTES", "FLYWHEEL_MAX_TEXT_CHARS", "FLYWHEEL_BUSY_TIMEOUT_MS",
                         "FLYWHEEL_EARLIEST_TIMESTAMP", "FLYWHEEL_PAGE_SIZE", "FLYWHEEL_DEMO_SEED"]),
        st.one_of(st.text(max_size=30), st.integers(-(2**70), 2**70).map(str)),
    )
)  # fmt: skip
def test_settings_reader(environ):
    _refuses_in_one_line(load_config, environ)
