"""Code checks: validated at the door, graded here on imported outputs, carried by every export."""

import json

import pytest
from evalset_helpers import LEAD

from flywheel.csvfiles import BadRows
from flywheel.errors import BadInput
from flywheel.evals.exports import export_text
from flywheel.evals.runs import import_results, outcomes
from flywheel.evals.versions import edit_row, fold_in, import_evalset, version_rows
from flywheel.labeling.checks import describe_check, grade, parse_check, promptfoo_asserts

SCHEMA = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}
TOOL = {"type": "tool_use", "name": "lookup_fee", "input": {"fee": "atm"}}

# written form -> stored form
ACCEPTED = [
    ("contains: fee schedule", {"type": "contains", "value": "fee schedule"}),
    ("not-contains:guaranteed", {"type": "not-contains", "value": "guaranteed"}),
    ("regex: \\d+ (business )?days", {"type": "regex", "value": "\\d+ (business )?days"}),
    ("equals: yes", {"type": "equals", "value": "yes"}),
    ("is-json", {"type": "is-json"}),
    ("IS-JSON", {"type": "is-json"}),
    (f"json-schema: {json.dumps(SCHEMA)}", {"type": "json-schema", "value": SCHEMA}),
    ("tool-call: lookup_fee", {"type": "tool-call", "value": "lookup_fee"}),
    ('{"type": "contains", "value": "IBAN"}', {"type": "contains", "value": "IBAN"}),
    ({"type": "equals", "value": "no"}, {"type": "equals", "value": "no"}),
    ("", None),
    ("   ", None),
    (None, None),
]

# written form -> a word the refusal must name
REFUSED = [
    ("regex: [unclosed", "does not compile"),
    ("regex: (?P<n>\\d+)", "only Python reads"),
    ("regex: (?i)fee", "only Python reads"),
    ("regex: fee\\Z", "only Python reads"),
    ("contains", "needs a value"),
    ("contains:   ", "needs a value"),
    ("sounds-polite: yes", "expected one of"),
    ("is-json: {}", "takes no value"),
    ('json-schema: {"type": 12}', "not a valid schema"),
    ("json-schema: [1, 2]", "expected a JSON Schema object"),
    ("json-schema: {oops", "not JSON"),
    ("tool-call: look up fee", "tool name"),
    ('{"type": "contains", "value": "x", "flags": "i"}', "expected only"),
    ("{not json", "not JSON"),
    ("[1]", "expected"),
    (f"contains: {'x' * 2001}", "at most"),
]


@pytest.mark.parametrize(("written", "stored"), ACCEPTED)
def test_a_check_is_read_from_its_written_form(written, stored):
    assert parse_check(written) == stored


@pytest.mark.parametrize(("written", "word"), REFUSED)
def test_a_bad_check_is_refused_at_the_door_naming_what_is_wrong(written, word):
    with pytest.raises(BadInput) as error:
        parse_check(written)
    assert word in str(error.value)


def test_the_written_form_reads_back_as_the_same_check():
    for _, stored in ACCEPTED:
        if stored is not None:
            assert parse_check(describe_check(stored)) == stored


# check, output, verdict: True passes, False fails, None no verdict
GRADES = [
    ("contains: fee schedule", "See our fee schedule online.", True),
    ("contains: fee schedule", "See our Fee Schedule online.", False),  # case counts
    ("contains: fee schedule", "", False),
    ("contains: fee schedule", None, None),
    ("not-contains: guaranteed", "Refunds take 5 days.", True),
    ("not-contains: guaranteed", "A refund is guaranteed.", False),
    ("not-contains: guaranteed", "", False),  # an empty reply passes no check
    ("not-contains: guaranteed", "  \n ", False),
    ("regex: \\d+ days", "Refunds take 5 days.", True),
    ("regex: \\d+ days", "Refunds take a few days.", False),
    ("regex: x*", "", False),
    ("equals: yes", "yes", True),
    ("equals: yes", "yes\n", False),
    ("equals: yes", "Yes", False),
    ("is-json", '{"a": 1}', True),
    ("is-json", "[1, 2]", True),
    ("is-json", "{'a': 1}", False),
    ("is-json", "Here you go: {}", False),
    ("is-json", "", False),
    (f"json-schema: {json.dumps(SCHEMA)}", '{"amount": 5}', True),
    (f"json-schema: {json.dumps(SCHEMA)}", '{"amount": "five"}', False),  # schema mismatch
    (f"json-schema: {json.dumps(SCHEMA)}", '{"fee": 5}', False),
    (f"json-schema: {json.dumps(SCHEMA)}", "amount: 5", False),  # invalid JSON
    ("tool-call: lookup_fee", json.dumps(TOOL), True),
    ("tool-call: lookup_fee", json.dumps([{"function": {"name": "lookup_fee", "arguments": "{}"}}]), True),
    ("tool-call: lookup_fee", json.dumps({"tool_calls": [{"name": "lookup_fee", "arguments": {}}]}), True),
    ("tool-call: lookup_fee", json.dumps({**TOOL, "name": "block_card"}), False),
    ("tool-call: lookup_fee", json.dumps({"name": "lookup_fee"}), False),  # a name, not a call
    ("tool-call: lookup_fee", "I called lookup_fee for you", False),
]


@pytest.mark.parametrize(("written", "output", "verdict"), GRADES)
def test_each_check_grades_an_output(written, output, verdict):
    assert grade(parse_check(written), output) is verdict


def test_promptfoo_gets_native_assertions_after_a_not_empty_guard():
    native = {
        "contains: fee": {"type": "contains", "value": "fee"},
        "not-contains: fee": {"type": "not-contains", "value": "fee"},
        "regex: \\d+": {"type": "regex", "value": "\\d+"},
        "equals: yes": {"type": "equals", "value": "yes"},
        "is-json": {"type": "is-json"},
        f"json-schema: {json.dumps(SCHEMA)}": {"type": "is-json", "value": SCHEMA},
    }
    for written, assertion in native.items():
        assert promptfoo_asserts(parse_check(written)) == [{"type": "regex", "value": "\\S"}, assertion]
    guard, tool = promptfoo_asserts(parse_check("tool-call: lookup_fee"))
    assert guard == {"type": "regex", "value": "\\S"}
    assert tool["type"] == "javascript" and '"lookup_fee"' in tool["value"]


SUITE = "\n".join(
    json.dumps(row)
    for row in (
        {
            "id": "a",
            "input": "Fees?",
            "criterion": "Mentions the fee schedule.",
            "check": "contains: fee schedule",
        },
        {"id": "b", "input": "JSON please", "criterion": "Valid JSON.", "check": {"type": "is-json"}},
        {"id": "c", "input": "Be nice", "criterion": "Polite and correct."},
    )
).encode()


def test_a_suite_file_carries_checks_and_a_bad_one_refuses_the_file_naming_its_line(db):
    import_evalset(db, LEAD, SUITE, "suite.jsonl")
    rows = {r["external_id"]: r for r in version_rows(db, 1)}
    assert json.loads(rows["a"]["pass_check"]) == {"type": "contains", "value": "fee schedule"}
    assert json.loads(rows["b"]["pass_check"]) == {"type": "is-json"}
    assert rows["c"]["pass_check"] is None
    bad = b'{"input": "x", "check": "regex: (oops"}\n{"input": "y", "check": "is-json"}\n'
    with pytest.raises(BadRows) as error:
        import_evalset(db, LEAD, bad, "bad.jsonl")
    assert [line for line, _ in error.value.problems] == [1]
    assert "does not compile" in error.value.problems[0][1]
    assert db.execute("SELECT count(*) FROM eval_versions").fetchone()[0] == 1


def test_outputs_without_a_verdict_are_graded_by_their_check_and_the_rest_wait_for_the_judge(db):
    import_evalset(db, LEAD, SUITE, "suite.jsonl")
    lines = [
        {"row_id": "r-000001", "output": "Our fee schedule is online."},  # check: pass
        {"row_id": "r-000001", "output": "Ask a branch."},  # check: fail (a repeat)
        {"row_id": "r-000002", "output": "not json"},  # check: fail
        {"row_id": "r-000002", "passed": True, "output": "not json"},  # the runner's verdict stands
        {"row_id": "r-000002"},  # no output: nothing to grade
        {"row_id": "r-000003", "output": "Happy to help."},  # no check: waits for the judge
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    report = import_results(db, LEAD, 1, "bot", data, "out.jsonl")
    assert (report.checked, report.passed, report.failed, report.ungraded) == (3, 2, 2, 2)
    assert "3 graded here by their code checks" in report.summary()
    stored = db.execute("SELECT row_id, passed, graded_by FROM eval_results ORDER BY id").fetchall()
    assert stored == [
        ("r-000001", 1, "check"),
        ("r-000001", 0, "check"),
        ("r-000002", 0, "check"),
        ("r-000002", 1, "runner"),
        ("r-000002", None, None),
        ("r-000003", None, None),
    ]
    found = outcomes(db, 1, "bot")
    assert set(found) == {"r-000001", "r-000002"}


def test_a_lead_edit_sets_or_removes_a_check_and_a_bad_one_is_refused(db):
    import_evalset(db, LEAD, SUITE, "suite.jsonl")
    with pytest.raises(BadInput, match="does not compile"):
        edit_row(db, LEAD, "r-000003", pass_check="regex: (")
    new = edit_row(db, LEAD, "r-000003", pass_check="not-contains: guaranteed")
    cleared = edit_row(db, LEAD, "r-000001", pass_check="")
    assert fold_in(db, LEAD).version == 2
    rows = {r["id"]: r for r in version_rows(db, 2)}
    assert json.loads(rows[new]["pass_check"]) == {"type": "not-contains", "value": "guaranteed"}
    assert rows[cleared]["pass_check"] is None


def test_exports_carry_the_check(db):
    import_evalset(db, LEAD, SUITE, "suite.jsonl")
    plain = [json.loads(line) for line in export_text(db, 1, "jsonl").splitlines()]
    assert [r["check"] for r in plain] == [
        {"type": "contains", "value": "fee schedule"},
        {"type": "is-json"},
        None,
    ]
    cases = [json.loads(line) for line in export_text(db, 1, "promptfoo").splitlines()]
    assert cases[0]["assert"][1] == {"type": "contains", "value": "fee schedule"}
    assert cases[1]["assert"][1] == {"type": "is-json"}
    assert cases[2]["assert"] == [{"type": "llm-rubric", "value": "Polite and correct."}]
    samples = [json.loads(line) for line in export_text(db, 1, "inspect").splitlines()]
    assert samples[0]["metadata"]["check"] == {"type": "contains", "value": "fee schedule"}
    assert samples[2]["metadata"]["check"] is None
    csv_text = export_text(db, 1, "csv")
    assert "contains: fee schedule" in csv_text.splitlines()[1]
