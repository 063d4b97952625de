"""Code checks: a pass criterion that is objective is graded by code, not by a judge.

A check is data, ``{"type": ..., "value": ...}``, validated when it is written (a bad regex or schema is
refused there, never found while grading). Types:

==============  =====================================  =========================================
type            value                                  passes when the output ...
==============  =====================================  =========================================
contains        text                                   contains the text (case-sensitive)
not-contains    text                                   does not contain it
regex           a regular expression                   has a match anywhere (``re.search``)
equals          text                                   is exactly the text
is-json         (none)                                 parses as JSON
json-schema     a JSON Schema (an object)              parses as JSON and matches the schema
tool-call       a tool name                            is JSON naming a call of that tool
==============  =====================================  =========================================

An output that is empty or only whitespace passes no check: no answer is not a pass, even for
``not-contains``. An output that is missing (None) gets no verdict. Exports carry the same rules to
promptfoo (native assertions) and Inspect (``inspect_scorer``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flywheel.errors import BadInput

CHECK_TYPES = ("contains", "not-contains", "regex", "equals", "is-json", "json-schema", "tool-call")
TEXT_TYPES = ("contains", "not-contains", "regex", "equals")
MAX_VALUE = 2_000
TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
# promptfoo reads regexes with JavaScript's RegExp: Python-only syntax would pass here and break there.
PYTHON_ONLY = re.compile(r"\(\?P|\(\?#|\\[AZz]|\(\?[aiLmsux-]+[):]")
EXAMPLES = "e.g. 'contains: fee schedule', 'regex: \\d+ days', 'is-json', 'tool-call: lookup_fee'"


def parse_check(text: str | dict | None) -> dict | None:
    """A check from its written form (``TYPE: VALUE``, ``TYPE`` alone, or a JSON object); None when
    blank. Raises BadInput naming what is wrong."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, dict):
        return validate_check(text)
    if not isinstance(text, str):
        raise BadInput(f"code check {str(text)[:40]!r}: expected text such as {EXAMPLES}")
    written = text.strip()
    if written.startswith("{"):
        try:
            spec = json.loads(written)
        except json.JSONDecodeError as error:
            raise BadInput(f"code check {written[:60]!r} is not JSON: {error.msg}") from None
        if not isinstance(spec, dict):
            raise BadInput(f"code check {written[:60]!r}: expected a JSON object")
        return validate_check(spec)
    kind, sep, value = written.partition(":")
    kind = kind.strip().lower()
    if kind == "json-schema" and sep:
        try:
            schema = json.loads(value)
        except json.JSONDecodeError as error:
            raise BadInput(f"json-schema {value.strip()[:60]!r} is not JSON: {error.msg}") from None
        return validate_check({"type": kind, "value": schema})
    # A text value keeps its inner spaces but not the one after the colon.
    value = value[1:] if value.startswith(" ") else value
    return validate_check({"type": kind, "value": value if sep else None})


def validate_check(spec: dict) -> dict:
    """The canonical form of a check, or BadInput naming the bad part."""
    unknown = sorted(set(spec) - {"type", "value"})
    if unknown:
        raise BadInput(f"code check fields {unknown!r}: expected only 'type' and 'value'")
    kind = spec.get("type")
    if kind not in CHECK_TYPES:
        raise BadInput(f"code check type {str(kind)[:40]!r}: expected one of {', '.join(CHECK_TYPES)}")
    value = spec.get("value")
    if kind == "is-json":
        if value not in (None, ""):
            raise BadInput(f"is-json takes no value, got {str(value)[:40]!r}")
        return {"type": kind}
    if kind == "json-schema":
        return {"type": kind, "value": _schema(value)}
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"code check {kind!r} needs a value: {EXAMPLES}")
    if len(value) > MAX_VALUE:
        raise BadInput(
            f"code check {kind!r} value is {len(value):,} characters; expected at most {MAX_VALUE:,}"
        )
    if kind == "regex":
        _regex(value)
    if kind == "tool-call" and not TOOL_NAME.fullmatch(value.strip()):
        raise BadInput(f"tool name {value[:40]!r}: expected letters, digits, '_', '.' or '-'")
    return {"type": kind, "value": value.strip() if kind == "tool-call" else value}


def _regex(value: str) -> None:
    try:
        re.compile(value)
    except re.error as error:
        raise BadInput(f"regex {value[:60]!r} does not compile: {error}") from None
    if PYTHON_ONLY.search(value):
        raise BadInput(
            f"regex {value[:60]!r} uses syntax only Python reads (named groups (?P, inline flags,"
            " \\A/\\Z): runners read it as JavaScript"
        )


def _schema(value: object) -> dict:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(value, dict):
        raise BadInput(f"json-schema {str(value)[:60]!r}: expected a JSON Schema object")
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as error:
        raise BadInput(f"json-schema is not a valid schema: {error.message[:200]}") from None
    return value


def dump_check(spec: dict | None) -> str | None:
    """The stored form of a check (canonical JSON), or None."""
    return json.dumps(spec, sort_keys=True, ensure_ascii=False) if spec else None


def load_check(stored: str | None) -> dict | None:
    """A stored check back as a dict, or None."""
    return json.loads(stored) if stored else None


def describe_check(spec: dict | None) -> str:
    """A check in its written form, ``TYPE: VALUE``."""
    if not spec:
        return ""
    if spec["type"] == "is-json":
        return "is-json"
    value = spec["value"]
    shown = json.dumps(value, sort_keys=True) if spec["type"] == "json-schema" else value
    return f"{spec['type']}: {shown}"


def grade(spec: dict, output: str | None) -> bool | None:
    """Whether ``output`` passes the check; None when there is no output to grade."""
    if output is None:
        return None
    if not output.strip():
        return False
    kind = spec["type"]
    value: Any = spec.get("value")  # the kind's: text, a pattern, a schema or a tool name
    if kind == "contains":
        return value in output
    if kind == "not-contains":
        return value not in output
    if kind == "regex":
        return re.search(value, output) is not None
    if kind == "equals":
        return output == value
    try:
        document = json.loads(output)
    except json.JSONDecodeError:
        return False
    if kind == "is-json":
        return True
    if kind == "json-schema":
        from jsonschema import Draft202012Validator

        return Draft202012Validator(value).is_valid(document)
    return _calls_tool(document, value)


def _calls_tool(document: object, name: str) -> bool:
    """Whether a JSON reply holds a call of tool ``name``, in the shapes model APIs write:
    ``{"type": "tool_use", "name": ...}``, ``{"function": {"name": ...}}``, ``{"name": .., "arguments": ..}``.
    """
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            function = item.get("function")
            if isinstance(function, dict) and function.get("name") == name:
                return True
            if item.get("name") == name and (
                "arguments" in item or "input" in item or item.get("type") in ("tool_use", "function")
            ):
                return True
            stack.extend(item.values())
    return False


# Exports ---------------------------------------------------------------------------------------------

NOT_EMPTY = {"type": "regex", "value": "\\S"}
TOOL_CALL_JS = (
    "(() => {{ let o = output; if (typeof o === 'string') {{ try {{ o = JSON.parse(o); }} catch (e) {{"
    " return false; }} }} const want = {name}; const seen = [o]; while (seen.length) {{ const x = seen.pop();"
    " if (Array.isArray(x)) {{ seen.push(...x); continue; }} if (!x || typeof x !== 'object') continue;"
    " if (x.function && x.function.name === want) return true; if (x.name === want && ('arguments' in x"
    " || 'input' in x || x.type === 'tool_use' || x.type === 'function')) return true;"
    " seen.push(...Object.values(x)); }} return false; }})()"
)


def promptfoo_asserts(spec: dict) -> list[dict]:
    """A check as promptfoo assertions: a native one for each type (a schema is ``is-json`` with a
    value; a tool call, which promptfoo has no native assertion for, a JavaScript expression), after a
    ``regex \\S`` so an empty reply fails as it does here."""
    kind = spec["type"]
    value: Any = spec.get("value")  # the kind's: text, a pattern, a schema or a tool name
    if kind == "is-json":
        native = {"type": "is-json"}
    elif kind == "json-schema":
        native = {"type": "is-json", "value": value}
    elif kind == "tool-call":
        native = {"type": "javascript", "value": TOOL_CALL_JS.format(name=json.dumps(value))}
    else:
        native = {"type": kind, "value": value}
    return [dict(NOT_EMPTY), native]


def inspect_scorer():
    """An Inspect scorer that grades each sample by the code check in its metadata (``check``), by the
    same rules as the product; a sample without a check gets no answer ("N"), left for a judge.

    Use it in a task over the Inspect export: ``Task(dataset=json_dataset(path), solver=...,
    scorer=inspect_scorer())``."""
    from inspect_ai.scorer import CORRECT, INCORRECT, NOANSWER, Score, accuracy, scorer

    @scorer(metrics=[accuracy()])
    def flywheel_check():
        async def score(state, target):
            spec = (state.metadata or {}).get("check")
            if not spec:
                return Score(value=NOANSWER, explanation="no code check: the judge grades this row")
            verdict = grade(spec, state.output.completion)
            return Score(
                value=CORRECT if verdict else INCORRECT,
                answer=state.output.completion,
                explanation=describe_check(spec),
            )

        return score

    return flywheel_check()
