"""Input formats of an import: which reader turns a byte stream into trace records.

``open_records`` is the one dispatch point: the format is named (``--format``), or told by the file
name (``.csv``), or by the first bytes of the content. Besides our own JSONL and CSV it reads:

- ``otlp-json``: OpenTelemetry's OTLP JSON as the Collector's file exporter writes it (one
  ``{"resourceSpans": ...}`` export per line, or one document), attributes as ``{"stringValue": ...}``;
- ``openinference``: spans as Arize Phoenix exports them (one span object per line, with
  ``context.trace_id``/``span_id``, ``parent_id``, ``span_kind``, ``status_code`` and nested or dotted
  OpenInference ``attributes``);
- ``langfuse``: Langfuse trace exports (``id``, ``timestamp``, ``input``, ``output``, ``sessionId``, ...,
  with ``observations`` and ``scores``) as a JSON array, one JSON document or JSONL, and the traces
  table export as CSV.

Spans are grouped into one trace per trace id and mapped with the OpenInference semantic conventions
(the mapping is documented in the README). A record of a span format is one assembled trace, or one
line or span that could not be read; every record is ingested, a duplicate, or quarantined.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import io
import json
from collections.abc import Generator, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flywheel.errors import BadInput
from flywheel.ingest import records
from flywheel.store.clock import format_ts
from flywheel.traces.queries import TimeRange

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12 on

SNIFF_BYTES = 8192  # enough for a CSV header line; JSON inputs are read until their first record decides
LANGFUSE_KEYS = ("observations", "sessionId", "projectId", "scores", "totalCost", "userId", "latency")
STATUS_ERROR = "ERROR"
THUMBS_SCORES = ("thumbs", "user-feedback", "user_feedback", "userfeedback", "feedback", "user feedback")
Line = records.Line
# What a record's own content can raise while it is mapped: it is quarantined, never a crash.
_RECORD_FAULTS = (BadInput, RecursionError, ValueError, TypeError, OverflowError)


@contextlib.contextmanager
def open_records(
    stream: records.ByteStream,
    name: str,
    fmt: str | None,
    sizes: records.SizePolicy,
    ts_range: TimeRange,
    report: records.IngestReport,
    prices: dict | None = None,
) -> Iterator[Iterator[Line]]:
    """The records of one input stream, read by the reader its format calls for."""
    base = name[:-3] if name.lower().endswith(".gz") else name
    is_csv = base.lower().endswith(".csv")
    if fmt is None and is_csv:
        head, stream = _head(stream, SNIFF_BYTES)
        fmt = "langfuse" if _langfuse_csv_header(head) else "csv"
    if fmt is None:
        fmt, stream = _sniffed(stream, name, sizes.max_record_bytes)
    context = _Context(sizes, ts_range, report, prices or {})
    if fmt == "csv":
        reader = records.csv_lines(stream, sizes, ts_range, report)
    elif fmt == "langfuse" and is_csv:
        reader = _langfuse_csv(stream, context)
    elif fmt == "jsonl":
        reader = records.jsonl_lines(stream, sizes, ts_range, report)
    elif fmt in ("otlp-json", "openinference", "langfuse"):
        reader = _documents(stream, context, fmt)
    else:
        raise BadInput(f"format {fmt!r}: expected one of {', '.join(records.FORMATS)}")
    try:
        yield reader
    finally:
        reader.close()


def sniff_format(head: bytes, complete: bool = True) -> str | None:
    """The format the first bytes of a JSON input say it is; None when they do not say yet.

    The first whole record decides (a line holding one JSON object); else keys that only one format
    uses (a pretty-printed document). ``complete`` says ``head`` is the whole input: then anything
    undecided is read as our own JSONL, whose reader quarantines what it cannot read, line by line.
    """
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if text[:1] not in ("{", "["):
        return "jsonl" if text or complete else None
    lines = text.split("\n")
    for line in lines if complete else lines[:-1]:
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value)):
            return _format_of(value)
    found = _format_by_keys(text)
    if found or complete:
        return found or "jsonl"
    return None


def _undecidable(head: bytes) -> bool:
    """Whether an undecided head opens a pretty-printed document (a line of only '{' or '[')."""
    first = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n").partition("\n")
    return bool(first[1]) and first[0].strip() in ("{", "[")


def _format_of(value: object) -> str:
    """The format one decoded record (or an array or API page of them) belongs to."""
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, dict)), None)
    if not isinstance(value, dict):
        return "jsonl"
    if isinstance(value.get("data"), list) and "trace_id" not in value:
        return _format_of(value["data"])
    if "resourceSpans" in value or "scopeSpans" in value:
        return "otlp-json"
    if "span_kind" in value and "context" in value:
        return "openinference"
    if "trace_id" not in value and "id" in value and any(key in value for key in LANGFUSE_KEYS):
        return "langfuse"
    return "jsonl"


def _format_by_keys(text: str) -> str | None:
    if '"resourceSpans"' in text or '"scopeSpans"' in text:
        return "otlp-json"
    if '"span_kind"' in text and '"context"' in text:
        return "openinference"
    if '"trace_id"' in text:
        return "jsonl"
    if '"id"' in text and any(f'"{key}"' in text for key in LANGFUSE_KEYS):
        return "langfuse"
    return None


class _Context:
    def __init__(
        self, sizes: records.SizePolicy, ts_range: TimeRange, report: records.IngestReport, prices: dict
    ):
        self.sizes, self.ts_range, self.report, self.prices = sizes, ts_range, report, prices
        self.max_bytes = sizes.max_record_bytes

    def record(self, line_no: int, obj: object, raw: object) -> Line:
        """A record from an assembled trace object (validated like a JSONL line, sizes included)."""
        return records.validated(Line(line_no, self.raw(raw)), obj, self.ts_range, self.sizes)

    def bad(self, line_no: int, raw: object, reason: str) -> Line:
        return Line(line_no, self.raw(raw), reason=reason)

    def raw(self, value: object) -> bytes:
        if isinstance(value, bytes):
            return value[: self.max_bytes]
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (ValueError, RecursionError):
            text = repr(value)[: self.max_bytes]
        return text.encode("utf-8", "replace")[: self.max_bytes]


# Documents: a whole JSON document, or one JSON value per line ---------------------------------------


def _documents(stream: records.ByteStream, context: _Context, fmt: str) -> Generator[Line, None, None]:
    """Parse the input as a whole document or as JSON lines, then hand the values to the format."""
    values, bad = _json_values(stream, context)
    read = _langfuse_records if fmt == "langfuse" else _span_records
    records = read(values, context, fmt)
    previous, part = None, 0
    for line in sorted([*bad, *records], key=lambda line: line.line_no):
        part = part + 1 if line.line_no == previous else 0
        line.part, previous = part, line.line_no
        yield line


def _json_values(
    stream: records.ByteStream, context: _Context
) -> tuple[list[tuple[int, object]], list[Line]]:
    data = stream.read()
    context.report.physical_lines += data.count(b"\n") + (bool(data) and not data.endswith(b"\n"))
    with contextlib.suppress(ValueError, RecursionError):  # one document, perhaps over many lines
        whole = json.loads(data.decode("utf-8-sig"), parse_constant=records.reject_constant)
        if isinstance(whole, (dict, list)) and b"\n" in data.strip():
            return [(1, item) for item in (whole if isinstance(whole, list) else [whole])], []
    values: list[tuple[int, object]] = []
    bad: list[Line] = []
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        content = raw.rstrip(b"\r")
        if not content.strip():
            context.report.blank_lines += line_no <= data.count(b"\n")
            continue
        try:
            value = json.loads(content.decode("utf-8"), parse_constant=records.reject_constant)
        except UnicodeDecodeError as error:
            bad.append(context.bad(line_no, content, f"invalid UTF-8 at byte {error.start}"))
        except RecursionError:
            bad.append(context.bad(line_no, content, "not JSON: nested too deeply"))
        except ValueError as error:
            bad.append(context.bad(line_no, content, f"not JSON: {str(error)[:120]}"))
        else:
            values.extend((line_no, item) for item in (value if isinstance(value, list) else [value]))
    return values, bad


# Spans (OTLP JSON and OpenInference) ---------------------------------------------------------------


def _span_records(values: list[tuple[int, object]], context: _Context, fmt: str) -> list[Line]:
    traces: dict[str, list[dict]] = {}
    bad: list[Line] = []
    spans = _otlp_spans(values, context, bad) if fmt == "otlp-json" else _phoenix_spans(values, context, bad)
    for span in spans:
        traces.setdefault(span["trace_id"], []).append(span)
    records = []
    for trace_id, members in traces.items():
        first_line = min(span["line_no"] for span in members)
        raw = [span["raw"] for span in members]
        try:
            obj = trace_from_spans(trace_id, members, context.prices)
        except _RECORD_FAULTS as error:
            records.append(context.bad(first_line, raw, f"trace {trace_id[:40]!r}: {error}"))
            continue
        records.append(context.record(first_line, obj, raw))
    return bad + records


def _otlp_spans(values: list[tuple[int, object]], context: _Context, bad: list[Line]) -> Iterator[dict]:
    for line_no, export in values:
        if not isinstance(export, dict) or not isinstance(export.get("resourceSpans"), list):
            bad.append(context.bad(line_no, export, "not an OTLP export: no 'resourceSpans' array"))
            continue
        for resource_spans in export["resourceSpans"]:
            try:
                described = _object(_object(resource_spans).get("resource") or {})
                resource = _attributes(described.get("attributes"))
                scopes = _list(
                    resource_spans.get("scopeSpans", resource_spans.get("instrumentationLibrarySpans"))
                )
            except BadInput as error:
                bad.append(context.bad(line_no, resource_spans, f"malformed resourceSpans: {error}"))
                continue
            for scope in scopes:
                try:
                    members = _list(_object(scope).get("spans"))
                except BadInput as error:
                    bad.append(context.bad(line_no, scope, f"malformed scopeSpans: {error}"))
                    continue
                for span in members:
                    try:
                        yield {**_otlp_span(span), "resource": resource, "line_no": line_no, "raw": span}
                    except BadInput as error:
                        bad.append(context.bad(line_no, span, f"malformed span: {error}"))


def _otlp_span(span: object) -> dict:
    span = _object(span)
    status = span.get("status") or {}
    code = _object(status).get("code", 0)
    return {
        "trace_id": _span_id(span.get("traceId"), "traceId", 16),
        "span_id": _span_id(span.get("spanId"), "spanId", 8),
        "parent_id": _span_id(span["parentSpanId"], "parentSpanId", 8) if span.get("parentSpanId") else None,
        "name": str(span.get("name") or ""),
        "start_ns": _nanos(span.get("startTimeUnixNano"), "startTimeUnixNano"),
        "end_ns": _nanos(span.get("endTimeUnixNano", span.get("startTimeUnixNano")), "endTimeUnixNano"),
        "status": STATUS_ERROR if code in (2, "2", "STATUS_CODE_ERROR") else "OK",
        "attributes": _attributes(span.get("attributes")),
    }


def _phoenix_spans(values: list[tuple[int, object]], context: _Context, bad: list[Line]) -> Iterator[dict]:
    for line_no, span in values:
        try:
            yield {**_phoenix_span(span), "resource": {}, "line_no": line_no, "raw": span}
        except BadInput as error:
            bad.append(context.bad(line_no, span, f"malformed span: {error}"))


def _phoenix_span(span: object) -> dict:
    span = _object(span)
    ids = _object(span.get("context") or {})
    attributes = span.get("attributes") or {}
    if isinstance(attributes, str):
        attributes = _json_text(attributes, "attributes")
    flat = dict(_flatten(_object(attributes)))
    if span.get("span_kind") and "openinference.span.kind" not in flat:
        flat["openinference.span.kind"] = str(span["span_kind"])
    return {
        "trace_id": _text_id(ids.get("trace_id", span.get("trace_id")), "context.trace_id"),
        "span_id": _text_id(ids.get("span_id", span.get("span_id")), "context.span_id"),
        "parent_id": str(span["parent_id"]) if span.get("parent_id") else None,
        "name": str(span.get("name") or ""),
        "start_ns": _iso_nanos(span.get("start_time"), "start_time"),
        "end_ns": _iso_nanos(span.get("end_time") or span.get("start_time"), "end_time"),
        "status": STATUS_ERROR if str(span.get("status_code", "")).upper() == STATUS_ERROR else "OK",
        "attributes": flat,
    }


def trace_from_spans(trace_id: str, spans: list[dict], prices: dict | None = None) -> dict:
    """One trace object (our JSONL format) from the spans of one trace, by OpenInference conventions."""
    spans = sorted(spans, key=lambda span: (span["start_ns"], span["span_id"]))
    ids = {span["span_id"] for span in spans}
    root = next((s for s in spans if not s["parent_id"] or s["parent_id"] not in ids), spans[0])
    llms = [s for s in spans if _kind(s) == "LLM" or _has_prefix(s["attributes"], "llm.input_messages.")]
    last_llm = max(llms, key=lambda s: (s["end_ns"], s["start_ns"])) if llms else None
    messages = _messages(last_llm, "llm.input_messages") + _messages(last_llm, "llm.output_messages")
    attributes = {**(last_llm["attributes"] if last_llm else {}), **root["attributes"]}
    user_turns = [m["content"] for m in messages if m["role"] == "user"]
    obj: dict[str, Any] = {
        "trace_id": trace_id,
        "timestamp": _ns_iso(root["start_ns"]),
        "input": _first_text(root, last_llm, "input.value") or (user_turns[-1] if user_turns else None),
        "output": _first_text(root, last_llm, "output.value")
        or next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), None),
        "messages": messages or None,
        "signals": _span_signals(root, spans, llms, prices or {}),
        "metadata": _span_metadata(root, spans, llms, attributes),
    }
    for key in ("cohort", "intent"):
        value = (
            obj["metadata"].get("metadata", {}).get(key)
            if isinstance(obj["metadata"].get("metadata"), dict)
            else None
        )
        if isinstance(value, str):
            obj[key] = value
    return obj


def _span_signals(root: dict, spans: list[dict], llms: list[dict], prices: dict) -> dict:
    inputs = [
        json.dumps(_messages(s, "llm.input_messages")) for s in llms if _messages(s, "llm.input_messages")
    ]
    failed_then_retried = any(s["status"] == STATUS_ERROR for s in llms[:-1])
    signals = {
        "latency_ms": max(0, root["end_ns"] - root["start_ns"]) / 1e6,
        "retried": failed_then_retried or len(inputs) != len(set(inputs)),
        "guardrail_tripped": any(_kind(s) == "GUARDRAIL" and s["status"] == STATUS_ERROR for s in spans),
    }
    cost = _cost(llms, prices)
    if cost is not None:
        signals["cost_usd"] = cost
    return signals


def _cost(llms: list[dict], prices: dict) -> float | None:
    """Cost from token counts and the configured price table (USD per 1M tokens); None when unpriced."""
    total, priced = 0.0, False
    for span in llms:
        price = prices.get(str(span["attributes"].get("llm.model_name", "")))
        if not isinstance(price, dict):
            continue
        for count_key, price_key in (
            ("llm.token_count.prompt", "prompt"),
            ("llm.token_count.completion", "completion"),
        ):
            tokens = span["attributes"].get(count_key)
            if isinstance(tokens, (int, float)) and not isinstance(tokens, bool):
                total += tokens * float(price.get(price_key, 0)) / 1e6
                priced = True
    return round(total, 8) if priced else None


_CONSUMED = (
    "input.value",
    "output.value",
    "llm.input_messages.",
    "llm.output_messages.",
    "openinference.span.kind",
)


def _span_metadata(root: dict, spans: list[dict], llms: list[dict], attributes: dict) -> dict:
    tokens = {
        key.removeprefix("llm.token_count."): sum(
            s["attributes"][key] for s in llms if isinstance(s["attributes"].get(key), (int, float))
        )
        for key in ("llm.token_count.prompt", "llm.token_count.completion", "llm.token_count.total")
        if any(key in s["attributes"] for s in llms)
    }
    metadata = {
        "source": "spans",
        "root_span": root["name"],
        "span_count": len(spans),
        "error_spans": sum(s["status"] == STATUS_ERROR for s in spans),
        "status": root["status"],
        "session_id": attributes.get("session.id"),
        "user_id": attributes.get("user.id"),
        "model": next(
            (
                s["attributes"]["llm.model_name"]
                for s in reversed(llms)
                if "llm.model_name" in s["attributes"]
            ),
            None,
        ),
        "tags": attributes.get("tag.tags"),
        "token_counts": tokens or None,
        "resource": root.get("resource") or None,
    }
    if isinstance(attributes.get("metadata"), str):
        with contextlib.suppress(ValueError, RecursionError):
            metadata["metadata"] = json.loads(attributes["metadata"])
    known = {
        "session.id",
        "user.id",
        "llm.model_name",
        "tag.tags",
        "metadata",
        "input.mime_type",
        "output.mime_type",
    }
    unknown = {
        key: value
        for key, value in attributes.items()
        if key not in known and not key.startswith(_CONSUMED) and not key.startswith("llm.token_count.")
    }
    if unknown:
        metadata["attributes"] = unknown
    return {key: value for key, value in metadata.items() if value is not None}


def _messages(span: dict | None, prefix: str) -> list[dict]:
    """``prefix.N.message.role`` / ``.content`` (or ``.contents.M.message_content.text``) as messages."""
    if span is None:
        return []
    found: dict[int, dict] = {}
    for key, value in span["attributes"].items():
        if not key.startswith(prefix + "."):
            continue
        index, _, rest = key[len(prefix) + 1 :].partition(".")
        if not index.isdigit():
            continue
        message = found.setdefault(int(index), {"parts": {}})
        if rest == "message.role":
            message["role"] = str(value)
        elif rest == "message.content":
            message["content"] = str(value)
        elif rest.startswith("message.contents.") and rest.endswith(".message_content.text"):
            part = rest.removeprefix("message.contents.").partition(".")[0]
            if part.isdigit():
                message["parts"][int(part)] = str(value)
    out = []
    for _, message in sorted(found.items()):
        content = message.get("content")
        if content is None and message["parts"]:
            content = "\n".join(text for _, text in sorted(message["parts"].items()))
        if content is not None:
            out.append({"role": message.get("role", "user"), "content": content})
    return out


def _first_text(root: dict, llm: dict | None, key: str) -> str | None:
    for span in (root, llm):
        value = span["attributes"].get(key) if span else None
        if isinstance(value, str) and value.strip():
            return value
    return None


def _kind(span: dict) -> str:
    return str(span["attributes"].get("openinference.span.kind", "")).upper()


def _has_prefix(attributes: dict, prefix: str) -> bool:
    return any(key.startswith(prefix) for key in attributes)


# OTLP value decoding ----------------------------------------------------------------------------------


def _attributes(items: object) -> dict:
    """OTLP ``[{"key": ..., "value": {"stringValue": ...}}]`` as a flat dict."""
    out = {}
    for item in _list(items or []):
        item = _object(item)
        if not isinstance(item.get("key"), str):
            raise BadInput("an attribute has no string 'key'")
        out[item["key"]] = _any_value(item.get("value"))
    return out


def _any_value(value: object) -> object:
    value = _object(value if value is not None else {})
    if not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind == "stringValue":
        return str(inner)
    if kind == "boolValue":
        return bool(inner)
    if kind == "intValue":
        return _int(inner, "intValue")
    if kind == "doubleValue":
        try:
            return float(inner)
        except (TypeError, ValueError):
            raise BadInput(f"doubleValue {str(inner)[:20]!r} is not a number") from None
    if kind == "arrayValue":
        return [_any_value(v) for v in _list(_object(inner).get("values", []))]
    if kind == "kvlistValue":
        return _attributes(_object(inner).get("values", []))
    if kind == "bytesValue":
        return str(inner)
    raise BadInput(f"unknown attribute value type {kind!r}")


def _span_id(value: object, name: str, size: int) -> str:
    """A hex id (OTLP JSON); base64 (protobuf's own JSON mapping) is accepted and turned into hex."""
    if not isinstance(value, str) or not value:
        raise BadInput(f"'{name}' is missing")
    if len(value) == 2 * size and all(ch in "0123456789abcdefABCDEF" for ch in value):
        text = value.lower()
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput(f"'{name}' {value[:40]!r} is neither hex nor base64") from None
        if len(raw) != size:
            raise BadInput(f"'{name}' {value[:40]!r} is not {size} bytes")
        text = raw.hex()
    if text.strip("0") == "":
        raise BadInput(f"'{name}' is all zeros")
    return text


def _text_id(value: object, name: str) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
        raise BadInput(f"'{name}' is missing")
    return str(value).strip()


def _nanos(value: object, name: str) -> int:
    number = _int(value, name)
    if not 0 < number < 32503680000 * 10**9:
        raise BadInput(f"'{name}' {number} is not a plausible time")
    return number


def _int(value: Any, name: str) -> int:  # any JSON value: int() refuses what it cannot convert
    if isinstance(value, bool):
        raise BadInput(f"'{name}' is not an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadInput(f"'{name}' {str(value)[:30]!r} is not an integer") from None


def _iso_nanos(value: object, name: str) -> int:
    if not isinstance(value, str):
        raise BadInput(f"'{name}' must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadInput(f"'{name}' {value[:40]!r} is not ISO 8601") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp() * 1e9)
    except (OverflowError, ValueError):
        raise BadInput(f"'{name}' {value[:40]!r} is outside the calendar") from None


def _ns_iso(nanos: int) -> str:
    return format_ts(datetime.fromtimestamp(nanos / 1e9, UTC))


def _flatten(value: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    """Nested attributes (``{"llm": {"input_messages": [...]}}``) as dotted keys; dotted keys stay."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}{key}.")
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        for index, inner in enumerate(value):
            yield from _flatten(inner, f"{prefix}{index}.")
    else:
        yield prefix[:-1], value


def _object(value: object) -> dict:
    if not isinstance(value, dict):
        raise BadInput(f"expected an object, got {type(value).__name__}")
    return value


def _list(value: object) -> list:
    if not isinstance(value, list):
        raise BadInput(f"expected an array, got {type(value).__name__}")
    return value


def _json_text(text: str, name: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadInput(f"'{name}' is not JSON") from None


# Langfuse -----------------------------------------------------------------------------------------


def _langfuse_records(values: list[tuple[int, object]], context: _Context, fmt: str) -> Iterator[Line]:
    for line_no, value in values:
        if isinstance(value, dict) and isinstance(value.get("data"), list):  # an API page: {"data": [...]}
            for item in value["data"]:
                yield _langfuse_record(line_no, item, context)
        else:
            yield _langfuse_record(line_no, value, context)


def _langfuse_record(line_no: int, value: object, context: _Context) -> Line:
    try:
        obj = trace_from_langfuse(value)
    except _RECORD_FAULTS as error:
        return context.bad(line_no, value, f"Langfuse trace: {error}")
    return context.record(line_no, obj, value)


def trace_from_langfuse(trace: object) -> dict:
    """One trace object (our JSONL format) from a Langfuse trace export with observations and scores."""
    trace = _object(trace)
    observations = [_object(o) for o in _list(trace.get("observations") or [])]
    scores = [_object(s) for s in _list(trace.get("scores") or [])]
    generations = sorted(
        (o for o in observations if str(o.get("type", "")).upper() == "GENERATION"),
        key=lambda o: str(o.get("startTime", "")),
    )
    source_input = trace.get("input")
    if source_input is None and generations:
        source_input = generations[-1].get("input")
    messages = _chat(source_input)
    output = _text_of(
        trace.get("output")
        if trace.get("output") is not None
        else (generations[-1].get("output") if generations else None)
    )
    if messages and output is not None:
        messages = [*messages, {"role": "assistant", "content": output}]
    user_turns = [m["content"] for m in messages if m["role"] == "user"]
    metadata = trace.get("metadata")
    if isinstance(metadata, str):
        with contextlib.suppress(ValueError, RecursionError):
            metadata = json.loads(metadata)
    obj: dict[str, Any] = {
        "trace_id": trace.get("id"),
        "timestamp": trace.get("timestamp"),
        "input": user_turns[-1] if user_turns else _text_of(source_input),
        "output": output,
        "messages": messages or None,
        "signals": _langfuse_signals(trace, generations, scores),
        "metadata": {
            "source": "langfuse",
            "name": trace.get("name"),
            "session_id": trace.get("sessionId"),
            "user_id": trace.get("userId"),
            "tags": trace.get("tags") or None,
            "release": trace.get("release"),
            "version": trace.get("version"),
            "metadata": metadata or None,
            "observation_count": len(observations) or None,
            "error_observations": sum(str(o.get("level", "")).upper() == "ERROR" for o in observations)
            or None,
            "model": next((g.get("model") for g in reversed(generations) if g.get("model")), None),
            "scores": {str(s.get("name")): s.get("value", s.get("stringValue")) for s in scores} or None,
        },
    }
    obj["metadata"] = {key: value for key, value in obj["metadata"].items() if value is not None}
    for key in ("cohort", "intent"):
        if isinstance(metadata, dict) and isinstance(metadata.get(key), str):
            obj[key] = metadata[key]
    return obj


def _langfuse_signals(trace: dict, generations: list[dict], scores: list[dict]) -> dict:
    signals: dict = {}
    latency = trace.get("latency")
    if isinstance(latency, (int, float)) and not isinstance(latency, bool) and latency >= 0:
        signals["latency_ms"] = latency * 1000
    cost = trace.get("totalCost", trace.get("calculatedTotalCost"))
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0:
        signals["cost_usd"] = cost
    inputs = [json.dumps(g.get("input"), sort_keys=True, default=str) for g in generations]
    failed = any(str(g.get("level", "")).upper() == "ERROR" for g in generations[:-1])
    if generations:
        signals["retried"] = failed or len(inputs) != len(set(inputs))
    for score in scores:
        thumbs = _thumbs(score)
        if thumbs:
            signals["thumbs"] = thumbs
    return signals


def _thumbs(score: dict) -> str | None:
    """A thumbs/user-feedback score as 'up' or 'down'; other scores are kept in metadata only."""
    name = str(score.get("name", "")).strip().lower()
    if not any(word in name for word in THUMBS_SCORES):
        return None
    value = score.get("value", score.get("stringValue"))
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("up", "thumbs_up", "thumbs up", "positive", "good", "true", "1", "👍"):
            return "up"
        if lowered in ("down", "thumbs_down", "thumbs down", "negative", "bad", "false", "0", "-1", "👎"):
            return "down"
        return None
    if isinstance(value, (int, float)):
        return "up" if value > 0 else "down"
    return None


def _chat(value: object) -> list[dict]:
    """A chat message list found in a Langfuse input (a list, or an object with ``messages``)."""
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        value = value["messages"]
    if not isinstance(value, list):
        return []
    out = []
    for message in value:
        if isinstance(message, dict) and isinstance(message.get("role"), str):
            content = _text_of(message.get("content"))
            if content is not None:
                out.append({"role": message["role"], "content": content})
    return out


def _text_of(value: object) -> str | None:
    """Text of a Langfuse input/output: a string, a message's content, or the JSON of anything else."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, list) and all(
        isinstance(part, dict) and part.get("type") == "text" for part in value
    ):
        return "\n".join(str(part.get("text", "")) for part in value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return None


LANGFUSE_COLUMNS = {
    "id": "id", "timestamp": "timestamp", "name": "name", "input": "input", "output": "output",
    "sessionid": "sessionId", "session_id": "sessionId", "userid": "userId", "user_id": "userId",
    "metadata": "metadata", "tags": "tags", "release": "release", "version": "version",
    "latency": "latency", "totalcost": "totalCost", "total_cost": "totalCost", "scores": "scores",
    "observations": "observations",
}  # fmt: skip


def _langfuse_csv_header(head: bytes) -> bool:
    first = head.decode("utf-8-sig", "replace").splitlines()[:1]
    cells = {c.strip().strip('"').lower() for c in first[0].split(",")} if first else set()
    return (
        "trace_id" not in cells
        and "id" in cells
        and bool(cells & {"sessionid", "userid", "totalcost", "latency"})
    )


def _langfuse_csv(stream: records.ByteStream, context: _Context) -> Generator[Line, None, None]:
    """The Langfuse traces table export as CSV: one trace per record; JSON cells are decoded."""
    # typeshed asks the bytes for a name, which TextIOWrapper only passes on when asked for its own
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")  # type: ignore[type-var]
    csv.field_size_limit(context.max_bytes + 1)
    try:
        reader = csv.reader(text)
        header = [LANGFUSE_COLUMNS.get(h.strip().lower(), h.strip()) for h in next(reader, [])]
        line_no = reader.line_num
        for cells in _csv_rows(reader, context):
            if isinstance(cells, Line):
                yield cells
                continue
            start, line_no = line_no + 1, reader.line_num
            context.report.physical_lines = line_no
            if not any(cell.strip() for cell in cells):
                context.report.blank_lines += 1
                continue
            if len(cells) != len(header):
                yield context.bad(
                    start,
                    ",".join(cells),
                    f"CSV record has {len(cells)} fields, the header has {len(header)}",
                )
                continue
            record = {key: _cell(key, value) for key, value in zip(header, cells, strict=True)}
            yield _langfuse_record(start, record, context)
    finally:
        text.detach()


def _csv_rows(reader: Iterable[list[str]], context: _Context) -> Iterator[list[str] | Line]:
    iterator = iter(reader)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except csv.Error as error:
            yield context.bad(getattr(reader, "line_num", 0), b"", f"CSV record cannot be read: {error}")


def _cell(key: str, value: str) -> object:
    if value == "":
        return None
    if key in ("latency", "totalCost"):
        with contextlib.suppress(ValueError):
            return float(value)
    if (
        key in ("input", "output", "metadata", "tags", "scores", "observations")
        and value.strip()[:1] in '[{"'
    ):
        with contextlib.suppress(ValueError, RecursionError):
            return json.loads(value)
    return value


# Sniffing -----------------------------------------------------------------------------------------


def _head(stream: records.ByteStream, size: int) -> tuple[bytes, records.ByteStream]:
    """The first ``size`` bytes of a stream (fewer at its end), and a stream that still yields them."""
    head = _read(stream, size)
    return head, _Prefixed(head, stream)


def _sniffed(stream: records.ByteStream, name: str, limit: int) -> tuple[str, records.ByteStream]:
    """The format the content says, read in growing steps until it decides, at most ``limit`` bytes."""
    head, want = b"", SNIFF_BYTES
    while True:
        head += _read(stream, want - len(head))
        complete = len(head) < want
        fmt = sniff_format(head, complete)
        if fmt is not None:
            return fmt, _Prefixed(head, stream)
        if want >= limit and not _undecidable(head):  # one oversized line: the JSONL reader says so
            return "jsonl", _Prefixed(head, stream)
        if want >= limit:
            raise BadInput(
                f"{name}: cannot tell the format from its first {len(head):,} bytes (no whole first record);"
                f" name it with --format ({', '.join(records.FORMATS)})"
            )
        want = min(want * 8, max(limit, SNIFF_BYTES))


def _read(stream: records.ByteStream, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end (a raw stream may return less per read)."""
    parts, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read: they are served again before the rest."""

    def __init__(self, head: bytes, stream: records.ByteStream):
        self._head, self._at, self._stream = head, 0, stream

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._stream.tell() - (len(self._head) - self._at)

    def readline(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        left = len(self._head) - self._at
        if not left:
            return self._stream.readline(size)
        end = self._head.find(b"\n", self._at) + 1
        take = end - self._at if end else left
        if 0 <= size < take:
            take = size
        out = self._head[self._at : self._at + take]
        self._at += take
        if end or (0 <= size <= len(out)) or self._at < len(self._head):
            return out
        return out + self._stream.readline(size - len(out) if size >= 0 else -1)

    def readall(self) -> bytes:
        rest, self._at = self._head[self._at :], len(self._head)
        return rest + (self._stream.read() or b"")

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer)
        left = len(self._head) - self._at
        if left:
            data = self._head[self._at : self._at + min(left, len(view))]
            self._at += len(data)
        else:
            data = self._stream.read(len(view)) or b""
        view[: len(data)] = data
        return len(data)
