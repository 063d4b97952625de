"""Code checks through the real runners: export → promptfoo / Inspect → import, verdicts as ours.

Both runners answer with the question itself (promptfoo's ``echo`` provider, an Inspect solver that
repeats the input), so each row's input is the output its check grades. Every verdict must equal the
product's own grading of that output, row by row.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from evalset_helpers import LEAD
from runners_support import promptfoo_binary

from flywheel.evals.exports import export_version
from flywheel.evals.runs import import_results_file, outcomes
from flywheel.evals.versions import import_evalset, version_rows
from flywheel.labeling.checks import grade, load_check

SCHEMA = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}
TOOL_CALL = json.dumps({"input": {"fee": "atm"}, "name": "lookup_fee", "type": "tool_use"})
# input (= the runner's answer), check; one passing and one failing answer per check type
ROWS = [
    ("Our fee schedule is online", "contains: fee schedule"),
    ("Ask at a branch", "contains: fee schedule"),
    ("Refunds take 5 days", "not-contains: guaranteed"),
    ("A refund is guaranteed", "not-contains: guaranteed"),
    ("Delivery takes 3 business days", "regex: \\d+ (business )?days"),
    ("Delivery takes a while", "regex: \\d+ (business )?days"),
    ("yes", "equals: yes"),
    ("yes please", "equals: yes"),
    ('{"amount": 5}', "is-json"),
    ("amount: 5", "is-json"),
    ('{"amount": 5}', f"json-schema: {json.dumps(SCHEMA)}"),
    ('{"amount": "five"}', f"json-schema: {json.dumps(SCHEMA)}"),
    (TOOL_CALL, "tool-call: lookup_fee"),
    (TOOL_CALL.replace("lookup_fee", "block_card"), "tool-call: lookup_fee"),
]

INSPECT_TASK = """
from inspect_ai import Task, task
from inspect_ai.dataset import json_dataset
from inspect_ai.model import ModelOutput
from inspect_ai.solver import solver

from flywheel.labeling.checks import inspect_scorer


@solver
def echo():
    async def solve(state, generate):
        state.output = ModelOutput.from_content(model="echo", content=state.input_text)
        return state

    return solve


@task
def checks():
    return Task(dataset=json_dataset({path!r}), solver=echo(), scorer=inspect_scorer())
"""


@pytest.fixture
def version(db):
    suite = [{"input": text, "criterion": f"passes {check}", "check": check} for text, check in ROWS]
    suite.append({"input": "Be nice to me", "criterion": "Polite."})  # no check: left for the judge
    import_evalset(db, LEAD, "\n".join(json.dumps(r) for r in suite).encode(), "checks.jsonl")
    return 1


def _expected(db, version: int) -> dict[str, bool]:
    verdicts = {
        row["id"]: grade(load_check(row["pass_check"]), row["input"])
        for row in version_rows(db, version)
        if row["pass_check"]
    }
    assert sorted(verdicts.values()) == [False] * 7 + [True] * 7  # the table is what it says
    return verdicts


def test_promptfoo_grades_the_exported_checks_natively_as_the_product_does(db, version, tmp_path):
    binary = promptfoo_binary()
    export_version(db, version, "promptfoo", tmp_path / "cases.jsonl")
    cases = [json.loads(line) for line in (tmp_path / "cases.jsonl").read_text().splitlines()]
    checked = [c for c in cases if c["assert"][0]["type"] != "llm-rubric"]
    (tmp_path / "promptfooconfig.yaml").write_text(
        'prompts:\n  - "{{input}}"\nproviders:\n  - echo\ntests: file://checked.jsonl\n'
    )
    # the judge's row needs an LLM grader, which would leave the machine: only checked rows run here
    (tmp_path / "checked.jsonl").write_text("".join(json.dumps(c) + "\n" for c in checked))
    env = {
        **os.environ,
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_CONFIG_DIR": str(tmp_path / ".promptfoo"),
        "HOME": str(tmp_path),
    }
    command = [str(binary), "eval", "-c", "promptfooconfig.yaml", "-o", "out.json", "--no-cache"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = tmp_path / "out.json"
    assert out.exists(), done.stdout[-2000:] + done.stderr[-2000:]

    report = import_results_file(db, LEAD, version, "promptfoo-echo", out)
    assert (report.format, report.results, report.unknown) == ("promptfoo", 14, [])
    found = outcomes(db, version, "promptfoo-echo")
    assert {row: o.passed for row, o in found.items()} == _expected(db, version)


def test_inspect_grades_the_exported_checks_with_the_scorer_as_the_product_does(db, version, tmp_path):
    export = tmp_path / "rows.jsonl"
    assert export_version(db, version, "inspect", export) == 15
    (tmp_path / "task.py").write_text(INSPECT_TASK.format(path=str(export)))
    inspect = shutil.which("inspect", path=str(Path(sys.executable).parent)) or shutil.which("inspect")
    logs = tmp_path / "logs"
    command = [inspect, "eval", "task.py", "--model", "mockllm/model", "--log-format", "json"]
    command += ["--log-dir", str(logs), "--display", "none"]
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "INSPECT_LOG_DIR": str(logs), "HOME": str(tmp_path), "PYTHONPATH": root}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (log,) = logs.glob("*.json")

    report = import_results_file(db, LEAD, version, "inspect-echo", log)
    assert (report.format, report.results, report.unknown) == ("inspect", 15, [])
    assert report.ungraded == 1  # the row without a check: no answer, left for the judge
    found = outcomes(db, version, "inspect-echo")
    assert {row: o.passed for row, o in found.items()} == _expected(db, version)
