"""The trace signals, declared once: name, SQL predicate over the ``traces`` columns, and the words a
user reads. Sampling, the overview charts, the trace filters and the flags column all read this table,
so a signal is defined in one place and means the same thing everywhere.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from flywheel.config import load_config
from flywheel.errors import BadInput


@dataclass(frozen=True)
class Signal:
    name: str
    predicate: str
    label: str
    anomaly: bool  # sampling's anomaly rule takes every trace carrying it

    @property
    def column(self) -> str:
        """The result column that holds this signal's 0/1 flag in ``flag_columns()``."""
        return f"flag_{self.name}"


SIGNALS = (
    Signal("thumbs_down", "thumbs = 'down'", "thumbs down", True),
    Signal("regenerated", "regenerated = 1", "regenerated", True),
    Signal("retried", "retried = 1", "retried", True),
    Signal("escalated", "escalated = 1", "escalated", True),
    Signal("guardrail_tripped", "guardrail_tripped = 1", "guardrail tripped", True),
    Signal("schema_invalid", "schema_valid = 0", "schema invalid", True),
    Signal("borderline_judge", "judge_score BETWEEN 0.4 AND 0.7", "borderline judge (0.4-0.7)", False),
    Signal("long_conversation", "turns >= 5", "long conversation (5+ turns)", False),
)
ANOMALIES = tuple(signal for signal in SIGNALS if signal.anomaly)


def signal(key: str) -> Signal:
    """The signal with this name or label; BadInput naming the choices otherwise."""
    for candidate in SIGNALS:
        if key in (candidate.name, candidate.label):
            return candidate
    raise BadInput(f"unknown signal {key!r}; expected one of {', '.join(s.label for s in SIGNALS)}")


def flag_columns(signals: tuple[Signal, ...] = ANOMALIES) -> str:
    """SQL select terms giving each signal's flag (1 when the trace carries it, else 0)."""
    return ", ".join(f"coalesce({s.predicate}, 0) AS {s.column}" for s in signals)


def flags(row: dict, signals: tuple[Signal, ...] = ANOMALIES) -> list[str]:
    """The labels of the signals a row selected with ``flag_columns()`` carries."""
    return [s.label for s in signals if row.get(s.column)]


# Declared signals ----------------------------------------------------------------------------------
#
# Beyond the built-in columns, a product logs its own signals (edits, abandonment, star ratings, copy,
# session continuation, a rephrase soon after the reply, time to completion). Import keeps them in the
# trace's metadata (``signals.x`` under ``extra_signals``, unknown top-level keys as they are); a
# declaration names where a signal's value lives and when it is bad, and from then on sampling plans,
# signal alerts, A/B and the Online page read it by name.

KINDS = ("boolean", "number", "event")
FIELD_PREFIXES = ("signals.", "metadata.")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,79}$")
SIGNAL_KEYS = (
    "thumbs",
    "regenerated",
    "retried",
    "escalated",
    "guardrail_tripped",
    "schema_valid",
    "judge_score",
    "turns",
    "latency_ms",
    "cost_usd",
)


@dataclass(frozen=True)
class Declared:
    """A signal declared in settings: where its value lives, its kind, and when it counts as bad.

    ``boolean``: bad when the value equals ``bad`` (true or false). ``number``: bad when the value is
    ``bad`` ("above" or "below") ``threshold``. ``event``: the value is the seconds from the reply to
    the event (absent: no event); bad when the event came within ``within_s``. Booleans and numbers are
    rated over the traces that carry a value; an event over every trace, once any trace carries it.
    """

    name: str
    kind: str
    field: str
    label: str = ""
    bad: object = True
    threshold: float | None = None
    within_s: float | None = None

    def __post_init__(self) -> None:
        what = f"declared signal {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise BadInput(f"declared signal name {self.name!r}: expected lowercase letters, digits and _")
        if self.kind not in KINDS:
            raise BadInput(f"{what} kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        prefix = next((p for p in FIELD_PREFIXES if str(self.field).startswith(p)), None)
        if prefix is None or not _KEY.match(self.field.removeprefix(prefix)):
            raise BadInput(f"{what} field {self.field!r}: expected signals.KEY or metadata.KEY")
        if self.field.removeprefix("signals.") in SIGNAL_KEYS and prefix == "signals.":
            raise BadInput(f"{what} field {self.field!r} is a built-in signal column, already declared")
        if self.kind == "boolean" and not isinstance(self.bad, bool):
            raise BadInput(f"{what} bad {self.bad!r}: expected true or false")
        if self.kind == "number":
            if self.bad not in ("above", "below"):
                raise BadInput(f"{what} bad {self.bad!r}: expected 'above' or 'below'")
            if not _finite(self.threshold):
                raise BadInput(f"{what} threshold {self.threshold!r}: expected a number")
        if self.kind == "event" and not (_finite(self.within_s) and self.within_s > 0):
            raise BadInput(f"{what} within_s {self.within_s!r}: expected a number of seconds > 0")
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", " "))

    @property
    def key(self) -> str:
        """The key under ``signals`` or ``metadata`` that holds the value."""
        return self.field.partition(".")[2]

    @property
    def column(self) -> str:
        """The window column that holds the signal's value as a number (booleans 0/1)."""
        return f"sig_{self.name}"

    @property
    def json_path(self) -> str:
        """Where the value lives in a stored trace's metadata."""
        return f"$.extra_signals.{self.key}" if self.field.startswith("signals.") else f"$.{self.key}"

    @property
    def over_all_traces(self) -> bool:
        """Whether a trace without a value counts as 'did not happen' (events) rather than unknown."""
        return self.kind == "event"

    def value_sql(self, metadata: str = "metadata") -> str:
        """SQLite: the value of a stored trace as a number, NULL when absent or not a number/boolean."""
        path = "'" + self.json_path + "'"
        return (
            f"(CASE WHEN json_type({metadata}, {path}) IN ('integer', 'real', 'true', 'false')"
            f" THEN CAST(json_extract({metadata}, {path}) AS REAL) END)"
        )

    def fires(self, value: str) -> str:
        """SQL predicate (any engine) over the numeric ``value``: the signal is bad on this trace."""
        if self.kind == "boolean":
            return f"{value} = {1 if self.bad else 0}"
        if self.kind == "number":
            assert self.threshold is not None  # checked on construction
            return f"{value} {'>' if self.bad == 'above' else '<'} {float(self.threshold)!r}"
        assert self.within_s is not None  # checked on construction
        return f"({value} >= 0 AND {value} <= {float(self.within_s)!r})"

    def describe(self) -> str:
        """The declaration in words, for tables and captions."""
        if self.kind == "boolean":
            return f"{self.field} is {str(self.bad).lower()}"
        if self.kind == "number":
            return f"{self.field} {self.bad} {self.threshold:g}"
        return f"{self.field}: event within {self.within_s:g} s of the reply"

    def as_dict(self) -> dict:
        body: dict[str, object] = {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "field": self.field,
        }
        body["bad"] = self.bad
        if self.threshold is not None:
            body["threshold"] = self.threshold
        if self.within_s is not None:
            body["within_s"] = self.within_s
        return body


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


DECLARED_KEYS = ("name", "label", "kind", "field", "bad", "threshold", "within_s")
_declared_cache: dict[tuple, tuple[Declared, ...]] = {}


def parse_declarations(body: object, where: str = "signals") -> tuple[Declared, ...]:
    """Declarations from a settings file's ``[[signal]]`` tables; BadInput names the faulty one."""
    if not isinstance(body, dict) or set(body) - {"signal"}:
        raise BadInput(f"{where}: expected only [[signal]] tables")
    entries = body.get("signal", [])
    if not isinstance(entries, list):
        raise BadInput(f"{where}: 'signal' must be a list of tables")
    out: list[Declared] = []
    builtin = {s.name for s in SIGNALS}
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) - set(DECLARED_KEYS):
            raise BadInput(f"{where}: signal {entry!r}: expected the keys {', '.join(DECLARED_KEYS)}")
        try:
            declared = Declared(**entry)
        except TypeError:
            raise BadInput(f"{where}: signal {entry!r} needs a name, a kind and a field") from None
        if declared.name in builtin or declared.name in {d.name for d in out}:
            raise BadInput(f"{where}: signal name {declared.name!r} is declared twice")
        out.append(declared)
    return tuple(out)


def declared_signals(path: str | Path | None = None) -> tuple[Declared, ...]:
    """The signals declared in the settings file (``FLYWHEEL_SIGNALS``); none when it does not exist.

    Read when used and kept while the file is unchanged, so a page rerun does not parse it again.
    """
    if path is None:
        path = load_config().signals
    if not path:
        return ()
    path = Path(path)
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return ()
    key = (str(path), stamp)
    if key not in _declared_cache:
        try:
            body = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise BadInput(f"signals file {str(path)!r} cannot be read: {error}") from None
        _declared_cache.clear()
        _declared_cache[key] = parse_declarations(body, f"signals file {str(path)!r}")
    return _declared_cache[key]


def declared(name: str, table: tuple[Declared, ...] | None = None) -> Declared | None:
    """The declared signal called ``name`` (or labelled so), None when there is none."""
    for candidate in declared_signals() if table is None else table:
        if name in (candidate.name, candidate.label):
            return candidate
    return None


def signal_names(table: tuple[Declared, ...] | None = None) -> tuple[str, ...]:
    """Every anomaly signal a plan may name: the built-in ones, then the declared ones."""
    table = declared_signals() if table is None else table
    return (*(s.name for s in ANOMALIES), *(d.name for d in table))


def signal_presence(db, signals: tuple[Declared, ...] | None = None, week: str | None = None) -> list[dict]:
    """Per declared signal: traces carrying a value and traces where it fires (in ``week``, or all), so
    a signal whose data is absent says so instead of reading as zero."""
    signals = declared_signals() if signals is None else signals
    if not signals:
        return []
    terms = ", ".join(
        f"count({s.value_sql()}), coalesce(sum(CASE WHEN {s.fires(s.value_sql())} THEN 1 ELSE 0 END), 0)"
        for s in signals
    )
    where, params = ("WHERE week = ?", [week]) if week else ("", [])
    row = db.execute(f"SELECT count(*), {terms} FROM traces {where}", params).fetchone()
    out = []
    for i, s in enumerate(signals):
        known, fired = row[1 + 2 * i], row[2 + 2 * i]
        out.append(
            {
                "signal": s.name,
                "label": s.label,
                "kind": s.kind,
                "definition": s.describe(),
                "traces": row[0],
                "with_data": known,
                "fired": fired,
                "status": "ok" if known else "no data",
            }
        )
    return out
