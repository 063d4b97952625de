"""The trace record: validation of one incoming object into a row of the ``traces`` table."""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from flywheel.auth import RAW_TEXT_ROLES, User, require_role
from flywheel.errors import BadInput, PermissionDenied, TraceNotFound
from flywheel.store.clock import format_ts, now, now_utc
from flywheel.store.db import query_one, query_rows
from flywheel.traces.rollups import rollup_count, rollup_values
from flywheel.traces.signals import ANOMALIES, flag_columns, flags, signal
from flywheel.traces.signals import SIGNALS as SIGNALS_TABLE

BOOL_SIGNALS = ("regenerated", "retried", "escalated", "guardrail_tripped", "schema_valid")
NUMBER_SIGNALS = ("judge_score", "latency_ms", "cost_usd")
SIGNALS = ("thumbs", *BOOL_SIGNALS, "judge_score", "turns", "latency_ms", "cost_usd")
SIGNAL_KEYS = frozenset(SIGNALS)
KNOWN_KEYS = frozenset(
    {"trace_id", "timestamp", "input", "output", "messages", "cohort", "intent", "signals", "metadata"}
)
MAX_ID_LENGTH = 200
MAX_INTEGER = 2**63 - 1  # the largest integer SQLite stores
_FLOAT_MAX = sys.float_info.max
_NO_SIGNALS = dict.fromkeys(("thumbs", *BOOL_SIGNALS, *NUMBER_SIGNALS, "turns"))


@dataclass(frozen=True)
class TimeRange:
    """The plausible span of trace timestamps (stored-format strings); a trace outside it is refused."""

    earliest: str
    latest: str

    @classmethod
    def around(cls, earliest_day: str, days_ahead: int, moment: datetime | None = None) -> TimeRange:
        """From ``earliest_day`` (YYYY-MM-DD) until ``days_ahead`` days after ``moment`` (default now)."""
        start = datetime.fromisoformat(earliest_day).replace(tzinfo=UTC)
        end = (moment or now_utc()) + timedelta(days=days_ahead)
        return cls(format_ts(start), format_ts(end))


def normalize_trace(obj: object, ts_range: TimeRange | None = None) -> dict:
    """Validate one decoded trace object and return its ``traces`` row; raise BadInput naming the fault.

    The row carries a content hash of the record as given, so an identical re-import is a duplicate
    and a changed one can be told apart from it. Whatever the object holds, the only exception is
    BadInput: a value too deep, too large or off the calendar is a fault of the record.
    """
    try:
        return _normalized(obj, ts_range)
    except RecursionError:
        raise BadInput("nested too deeply") from None
    except (OverflowError, ValueError, TypeError) as error:
        raise BadInput(f"value cannot be stored: {str(error)[:120]}") from None


def _normalized(obj: object, ts_range: TimeRange | None) -> dict:
    if not isinstance(obj, dict):
        raise BadInput(f"not a JSON object (got {_type_name(obj)})")
    get = obj.get
    row: dict = {
        "trace_id": _trace_id(obj),
        "input": _required_text(obj, "input"),
        "output": _optional_text(obj, "output"),
        "messages": _messages(get("messages")),
        "cohort": _optional_label(obj, "cohort"),
        "intent": _optional_label(obj, "intent"),
        "ts": _timestamp(get("timestamp"), ts_range),
    }
    signals = get("signals")
    _add_signals(row, signals)
    if row["turns"] is None and row["messages"] is not None:
        row["turns"] = sum(1 for m in obj["messages"] if m["role"] == "user")
    row["metadata"] = _metadata(obj, signals)
    row["content_hash"] = content_hash(row, get("timestamp"))
    return row


HASHED_COLUMNS = ("trace_id", "input", "output", "messages", "cohort", "intent", *SIGNALS, "metadata")
_hashed_values = operator.itemgetter(*HASHED_COLUMNS)


def content_hash(row: dict, timestamp: object) -> str:
    """A hash of what a trace says once normalized, so top-level key order and formatting do not count.

    The timestamp enters as given: a trace sent without one is stamped at import time, and that stamp
    must not make an identical re-import look changed.
    """
    canonical = "\x1f".join(map(repr, (timestamp, *_hashed_values(row))))
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _trace_id(obj: dict) -> str:
    if "trace_id" not in obj:
        raise BadInput("missing required field 'trace_id'")
    value = obj["trace_id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadInput(f"'trace_id' must be a string, got {_type_name(value)}")
    value = _text(str(value).strip(), "trace_id")
    if not value:
        raise BadInput("'trace_id' is empty")
    if len(value) > MAX_ID_LENGTH:
        raise BadInput(f"'trace_id' is longer than {MAX_ID_LENGTH} characters")
    return value


def _required_text(obj: dict, key: str) -> str:
    if key not in obj or obj[key] is None:
        raise BadInput(f"missing required field '{key}'")
    value = obj[key]
    if not isinstance(value, str):
        raise BadInput(f"'{key}' must be a string, got {_type_name(value)}")
    return _text(value, key)


def _optional_text(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"'{key}' must be a string or null, got {_type_name(value)}")
    return _text(value, key)


def _text(value: str, key: str) -> str:
    if not storable(value):
        raise BadInput(f"'{key}' holds invalid UTF-8 (a lone surrogate)")
    return value


def storable(text: str) -> bool:
    """Whether the text can be stored: a lone surrogate cannot be written as UTF-8."""
    if text.isascii():  # the common case, and no lone surrogate can hide in it
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _optional_label(obj: dict, key: str) -> str | None:
    value = _optional_text(obj, key)
    if value is None or not value.strip():
        return None
    if len(value) > MAX_ID_LENGTH:
        raise BadInput(f"'{key}' is longer than {MAX_ID_LENGTH} characters")
    return value.strip()


def _messages(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadInput(f"'messages' must be an array, got {_type_name(value)}")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise BadInput(f"'messages[{i}]' must be an object, got {_type_name(message)}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise BadInput(f"'messages[{i}].{key}' must be a string")
    return _dumps(value, "messages")


def _timestamp(value: object, ts_range: TimeRange | None) -> str:
    if value is None:
        return now()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value < 32503680000:
            raise BadInput(f"'timestamp' {value!r} is not a plausible Unix time")
        ts = format_ts(datetime.fromtimestamp(value, UTC))
    elif isinstance(value, str):
        ts = _iso_timestamp(value)
    else:
        raise BadInput(f"'timestamp' must be an ISO 8601 string, got {_type_name(value)}")
    if ts_range and not ts_range.earliest <= ts <= ts_range.latest:
        span = f"{ts_range.earliest[:10]}..{ts_range.latest[:10]}"
        raise BadInput(f"'timestamp' {ts} is outside the plausible range {span}")
    return ts


# The shape most producers send, already UTC to the second or millisecond: once the calendar accepts
# it, its stored form is the text itself, with no conversion to run.
_STORED_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{3})?Z")


def _iso_timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadInput(f"'timestamp' {value[:40]!r} is not ISO 8601 (e.g. 2026-05-03T10:22:00Z)") from None
    shape = _STORED_SHAPE.fullmatch(value)
    if shape is not None:
        return value if shape[1] else value[:19] + ".000Z"
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return format_ts(parsed.astimezone(UTC))
    except OverflowError:
        raise BadInput(f"'timestamp' {value[:40]!r} falls outside the calendar once taken to UTC") from None


def _add_signals(row: dict, value: object) -> None:
    """Add the signal columns to ``row`` (all None when the trace has no signals)."""
    if value is None:
        row.update(_NO_SIGNALS)
        return
    if not isinstance(value, dict):
        raise BadInput(f"'signals' must be an object, got {_type_name(value)}")
    get = value.get
    row["thumbs"] = _thumbs(get("thumbs"))
    for key in BOOL_SIGNALS:  # the checks in line for the usual values, the helpers for the rest
        found = get(key)
        row[key] = (1 if found else 0) if found.__class__ is bool else _bool(found, key)
    for key in NUMBER_SIGNALS:
        found = get(key)
        row[key] = found if found.__class__ is float and 0.0 <= found <= _FLOAT_MAX else _number(found, key)
    if row["judge_score"] is not None and not 0 <= row["judge_score"] <= 1:
        raise BadInput(f"'signals.judge_score' {row['judge_score']!r} is outside 0..1")
    row["turns"] = _count(get("turns"))


def _thumbs(value: object) -> str | None:
    if value is None or value == "":
        return None
    if value not in ("up", "down"):
        raise BadInput(f"'signals.thumbs' must be 'up', 'down' or null, got {str(value)[:20]!r}")
    return value


def _bool(value: object, key: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadInput(f"'signals.{key}' must be true, false or null, got {_type_name(value)}")
    return int(value)


def _number(value: object, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInput(f"'signals.{key}' must be a finite number, got {str(value)[:20]!r}")
    if value < 0:
        raise BadInput(f"'signals.{key}' must not be negative, got {value!r}")
    return float(value)


def _count(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"'signals.turns' must be a non-negative integer, got {str(value)[:20]!r}")
    if value > MAX_INTEGER:
        raise BadInput(f"'signals.turns' {str(value)[:24]} is too large to store")
    return value


def _metadata(obj: dict, signals: dict | None) -> str:
    """The metadata object with the trace's unknown keys and unknown signals folded in, as JSON."""
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise BadInput(f"'metadata' must be an object, got {_type_name(metadata)}")
    if obj.keys() <= KNOWN_KEYS and (not signals or signals.keys() <= SIGNAL_KEYS):  # the usual trace
        return _dumps(metadata, "metadata")
    metadata = {**metadata, **{k: v for k, v in obj.items() if k not in KNOWN_KEYS}}
    extra_signals = {k: v for k, v in (signals or {}).items() if k not in SIGNAL_KEYS}
    if extra_signals:
        metadata["extra_signals"] = extra_signals
    return _dumps(metadata, "metadata")


_JSON_TEXT = json.JSONEncoder(ensure_ascii=False)  # built once: json.dumps with options builds one per call


def _dumps(value: object, key: str) -> str:
    return _text(_JSON_TEXT.encode(value), key)


# Queries over stored traces. Raw text only leaves here for roles allowed to read it. Pages are read
# with keyset pagination: a page continues from the sort key of a row, so the last page of a million
# traces costs what the first does.

SIGNAL_FILTERS = {s.label: s.predicate for s in SIGNALS_TABLE}
SIGNAL_COLUMNS = "ts, cohort, intent, " + ", ".join(SIGNALS)
LIST_COLUMNS = "trace_id, week, " + SIGNAL_COLUMNS + ", " + flag_columns()
SORTS = {"time": "ts", "judge score": "judge_score", "cost": "cost_usd"}
MAX_SEARCH = 200


@dataclass(frozen=True)
class TraceFilter:
    """Which traces to list: every non-empty field narrows the selection.

    ``trace_id`` matches ids starting with it; ``text`` matches scrubbed text containing it (approved
    scrubs only, for users who may not read raw text); ``approved_only`` keeps traces whose scrub a
    reviewer approved.
    """

    weeks: tuple[str, ...] = ()
    cohorts: tuple[str, ...] = ()
    intents: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()
    trace_id: str = ""
    text: str = ""
    approved_only: bool = False

    def __post_init__(self) -> None:
        for name in ("trace_id", "text"):
            if len(getattr(self, name)) > MAX_SEARCH:
                raise BadInput(f"search for {name} is longer than {MAX_SEARCH} characters")
        for key in self.signals:
            if key not in SIGNAL_FILTERS:
                raise BadInput(f"unknown signal filter {key!r}; expected one of {', '.join(SIGNAL_FILTERS)}")

    def sql(self, user: User | None = None, walk_sort_index: bool = False) -> tuple[str, list]:
        """The WHERE clause (or '') and its parameters; ``user`` decides which scrubs a text search reads.

        ``walk_sort_index`` keeps the week, cohort and intent terms off their indexes (``+column``), so
        SQLite walks the sort column's index and skips non-matches instead of sorting every match.
        """
        clauses: list[str] = []
        params: list = []
        unindexed = "+" if walk_sort_index else ""
        for column, values in (("week", self.weeks), ("cohort", self.cohorts), ("intent", self.intents)):
            if values:
                clauses.append(f"{unindexed}{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        clauses += [SIGNAL_FILTERS[key] for key in self.signals]
        if self.trace_id.strip():
            prefix = self.trace_id.strip()
            clauses.append("trace_id >= ? AND trace_id < ?")
            params += [prefix, prefix + "\U0010ffff"]
        scrub_clause, scrub_params = self._scrub_sql(user)
        if scrub_clause:
            scrubs = f"SELECT trace_id FROM scrubs WHERE is_current = 1 AND {scrub_clause}"
            clauses.append(f"trace_id IN ({scrubs})")
            params += scrub_params
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _scrub_sql(self, user: User | None) -> tuple[str, list]:
        clauses, params = [], []
        text = self.text.strip().lower()
        if self.approved_only or (text and not (user and user.sees_raw_text)):
            clauses.append("status = 'approved'")
        if text:
            clauses.append("(instr(lower(input), ?) > 0 OR instr(lower(coalesce(output, '')), ?) > 0)")
            params += [text, text]
        return " AND ".join(clauses), params

    @property
    def only_counts(self) -> bool:
        """Whether the rollup can count this selection (weeks, cohorts, intents, one anomaly signal)."""
        simple = not (self.trace_id.strip() or self.text.strip() or self.approved_only)
        anomalies = [key for key in self.signals if signal(key).anomaly]
        return simple and len(self.signals) <= 1 and len(anomalies) == len(self.signals)


@dataclass(frozen=True)
class TraceSort:
    """The order of a trace list: a key of ``SORTS`` and a direction; ties go by trace id."""

    key: str = "time"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.key not in SORTS:
            raise BadInput(f"unknown sort {self.key!r}; expected one of {', '.join(SORTS)}")

    @property
    def column(self) -> str:
        return SORTS[self.key]


def page_key(row: dict, sort: TraceSort = TraceSort()) -> tuple:
    """Where a page continues from: the row's sort value and trace id."""
    return row[sort.column], row["trace_id"]


def find_traces(
    db: Database,
    user: User,
    where: TraceFilter,
    sort: TraceSort = TraceSort(),
    after: tuple | None = None,
    before: tuple | None = None,
    last: bool = False,
    page_size: int = 50,
) -> list[dict]:
    """One page of traces in ``sort`` order: the first page, the page after the key ``after``, the page
    before the key ``before``, or the last page. ``input``/``output`` only for roles that read raw text;
    traces without the sort value come after all others."""
    if not 1 <= page_size <= 1000:
        raise BadInput(f"page size {page_size}: expected 1..1000")
    if sum((after is not None, before is not None, last)) > 1:
        raise BadInput("a page is the first, the last, or one after or before a key; not several")
    clause, params = where.sql(user, walk_sort_index=_walk_sort_index(db, where, sort, page_size))
    columns = LIST_COLUMNS + (", input, output" if user.sees_raw_text else "")
    backwards = before is not None or last
    cursor = before if before is not None else after
    rows: list[dict] = []
    for segment_sql, segment_params, order in _segments(sort, cursor, backwards):
        if len(rows) >= page_size:
            break
        sql = (
            f"SELECT {columns} FROM traces{clause or ' WHERE 1'} AND {segment_sql}"
            f" ORDER BY {order} LIMIT {page_size - len(rows)}"
        )
        rows += query_rows(db, sql, [*params, *segment_params])
    rows = rows[::-1] if backwards else rows
    return _with_scrubs(db, user, [_with_flags(row) for row in rows])


def _walk_sort_index(db: Database, where: TraceFilter, sort: TraceSort, page_size: int) -> bool:
    """Whether walking the sort column's index past non-matches reads fewer rows than sorting every
    match: a page needs about ``page_size * total / matches`` rows walked against ``matches`` sorted.
    (Time has listing indexes per cohort and intent, so it never needs this.)"""
    if sort.column == "ts" or not (where.weeks or where.cohorts or where.intents):
        return False
    matches = rollup_count(db, where.weeks, where.cohorts, where.intents)
    return matches * matches > page_size * rollup_count(db)


def _segments(sort: TraceSort, cursor: tuple | None, backwards: bool) -> list[tuple[str, list, str]]:
    """The parts of the order to read from ``cursor`` on: rows with the sort value, then rows without.

    Each part is one index range (``(value, trace_id) < (?, ?)``), never an OFFSET.
    """
    column = sort.column
    descending = sort.descending != backwards
    op, direction = ("<", "DESC") if descending else (">", "ASC")
    valued: tuple[str, list, str] = (
        f"{column} IS NOT NULL",
        [],
        f"{column} {direction}, trace_id {direction}",
    )
    missing: tuple[str, list, str] = (f"{column} IS NULL", [], f"trace_id {direction}")
    if cursor is not None and cursor[0] is not None:
        valued = (f"{valued[0]} AND ({column}, trace_id) {op} (?, ?)", list(cursor), valued[2])
    elif cursor is not None:
        missing = (f"{missing[0]} AND trace_id {op} ?", [cursor[1]], missing[2])
    if column == "ts":  # never missing
        return [valued]
    if cursor is None:
        return [missing, valued] if backwards else [valued, missing]
    if cursor[0] is None:
        return [missing, valued] if backwards else [missing]
    return [valued] if backwards else [valued, missing]


def _with_scrubs(db: Database, user: User, rows: list[dict]) -> list[dict]:
    """Add each trace's current scrub status and scrubbed input; labelers get approved scrubs only."""
    ids = [row["trace_id"] for row in rows]
    marks = ",".join("?" * len(ids))
    sql = f"SELECT trace_id, status, input FROM scrubs WHERE is_current = 1 AND trace_id IN ({marks})"
    scrubs = {trace_id: (status, text) for trace_id, status, text in db.execute(sql, ids)}
    for row in rows:
        status, text = scrubs.get(row["trace_id"], (None, None))
        row["scrub"] = status
        row["scrubbed_input"] = text if status == "approved" or user.sees_raw_text else None
    return rows


def _with_flags(row: dict) -> dict:
    """Add ``flags``: the labels of the anomaly signals a trace carries, for a compact table column."""
    row["flags"] = flags(row)
    for s in ANOMALIES:
        del row[s.column]
    return row


def count_traces(db: Database, where: TraceFilter = TraceFilter(), user: User | None = None) -> int:
    """How many traces match (from the rollup when the filter allows, else one indexed count)."""
    if where.only_counts:
        one = signal(where.signals[0]) if where.signals else None
        return rollup_count(db, where.weeks, where.cohorts, where.intents, one)
    clause, params = where.sql(user)
    return db.execute(f"SELECT count(*) FROM traces{clause}", params).fetchone()[0]


def filter_options(db: Database) -> dict[str, list[str]]:
    """The weeks, cohorts and intents present, for filter widgets."""
    return rollup_values(db)


def approved_scrub(db: Database, trace_id: str) -> dict:
    """A trace's approved scrub: the only text of it a labeler may read."""
    row = query_one(
        db,
        "SELECT id AS scrub_id, trace_id, status, input, output, messages, reviewed_by FROM scrubs"
        " WHERE trace_id = ? AND is_current = 1",
        [trace_id],
    )
    if row is None or row["status"] != "approved":
        state = row["status"] if row else "not scrubbed"
        raise PermissionDenied(f"trace {trace_id!r} is {state}: labelers read approved scrubs only")
    row["messages"] = json.loads(row["messages"]) if row["messages"] else []
    return row


def raw_trace(db: Database, user: User, trace_id: str) -> dict:
    """The whole stored trace, raw text included; only reviewers and leads may read it."""
    require_role(user, *RAW_TEXT_ROLES)
    try:
        row = db.table("traces").get(trace_id)
    except NotFoundError:
        raise TraceNotFound(f"no trace with id {trace_id!r}") from None
    row["messages"] = json.loads(row["messages"]) if row["messages"] else []
    row["metadata"] = json.loads(row["metadata"] or "{}")
    return row


# The conversation ------------------------------------------------------------------------------

ROLES = {"user": "customer", "human": "customer", "assistant": "assistant", "ai": "assistant"}


def exchange(scrub: dict) -> list[dict]:
    """A trace's or scrub's turns in order as ``{"role", "content", "reply"}``, roles in plain words
    (customer, assistant, tool, ...): the one order every page and sender shows a conversation in.

    The stored messages when there are any (with the final reply appended when they stop before it),
    else the input as the customer's turn; the output, the reply being judged, always ends it and is the
    one turn with ``reply`` true.
    """
    messages = scrub.get("messages") or []
    if isinstance(messages, str):
        messages = json.loads(messages)
    turns: list[dict[str, object]] = [
        {"role": ROLES.get(str(m.get("role", "")).lower(), str(m.get("role") or "message")), "content": text}
        for m in messages
        if isinstance(m, dict) and (text := _content(m.get("content")))
    ] or [{"role": "customer", "content": scrub.get("input") or ""}]
    turns = [{**turn, "reply": False} for turn in turns]
    reply = scrub.get("output")
    if reply and turns[-1]["role"] == "assistant" and turns[-1]["content"] == reply:
        turns[-1]["reply"] = True
    elif reply:
        turns.append({"role": "assistant", "content": reply, "reply": True})
    return turns


def _content(content: object) -> str:
    if isinstance(content, list):  # content parts: keep the text ones
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text"))
    return "" if content is None else str(content)
