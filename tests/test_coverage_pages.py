"""Coverage, code checks and named sets through app.py: the label card, Eval sets, Pass rate, Gate."""

import json

import pytest
from evalset_helpers import LEAD
from labels_support import seed_queue
from pages_support import app, button, open_page, widget

from flywheel.evals.runs import import_results
from flywheel.evals.versions import create_eval_set, freeze_eval_set, import_evalset
from flywheel.store.db import open_db

SUITE = b'{"input": "Fees?", "criterion": "Names the schedule.", "check": "contains: schedule"}\n'


@pytest.fixture
def label_db(tmp_path):
    path = tmp_path / "label.db"
    db = open_db(path)
    seed_queue(db, 4, batches={1: list(range(4))})
    db.close()
    return path


def test_a_labeler_adds_a_trace_handled_well_as_coverage_with_a_code_check(label_db, monkeypatch):
    at = open_page(app(label_db, monkeypatch, "lena"), "pages/label.py")
    trace_id = at.subheader[0].value.replace("\\", "").removeprefix("Trace ")
    widget(at.text_input, "Expected behaviour").input("Gives the delivery window")
    widget(at.text_input, "Pass criterion").input("States 3-5 days")
    widget(at.text_input, "Code check (optional)").input("regex: (")
    button(at, "Handled well — add as coverage").click().run()
    assert "does not compile" in at.error[0].value  # refused at the door, nothing written
    assert open_db(label_db).execute("SELECT count(*) FROM labels").fetchone()[0] == 0
    widget(at.text_input, "Code check (optional)").input("regex: \\d+ days")
    button(at, "Handled well — add as coverage").click().run()
    assert not at.exception and not at.error
    stored = open_db(label_db).execute("SELECT trace_id, kind, coverage, pass_check FROM labels").fetchall()
    assert stored == [(trace_id, "not_a_bug", 1, json.dumps({"type": "regex", "value": "\\d+ days"}))]


@pytest.fixture
def sets_db(tmp_path):
    path = tmp_path / "sets.db"
    db = open_db(path)
    create_eval_set(db, LEAD, "regression")
    import_evalset(db, LEAD, SUITE, "suite.jsonl", eval_set="regression")
    freeze_eval_set(db, LEAD, "regression")
    create_eval_set(db, LEAD, "quality")
    import_evalset(db, LEAD, SUITE, "suite.jsonl", eval_set="quality")
    for system, output in (("old", "See the schedule."), ("new", "Ask a branch.")):
        for version, row in ((1, "r-000001"), (2, "r-000002")):
            data = json.dumps({"row_id": row, "output": output}).encode()
            import_results(db, LEAD, version, system, data, "out.jsonl")
    db.close()
    return path


def test_eval_sets_page_picks_a_set_and_a_frozen_one_takes_no_fold(sets_db, monkeypatch):
    at = open_page(app(sets_db, monkeypatch), "pages/evalsets.py")
    assert at.selectbox(key="evalset_name").value == "quality"  # the refreshed set first
    assert at.metric[0].value == "2"
    at.selectbox(key="evalset_name").set_value("regression").run()
    assert not at.exception
    assert at.metric[0].value == "1"
    assert any("regression is frozen: it takes no new rows" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "fold_in"]
    assert not [b for b in at.button if b.key == "freeze_set"]


def _checked_slice(at):
    (frame,) = [d.value for d in at.dataframe if "slice" in d.value.columns]
    row = frame.set_index("slice").loc["code-checked rows"]
    return row["rows"], row["passed"], row["total"]


def test_pass_rate_page_shows_the_slices_of_a_run_graded_by_its_checks(sets_db, monkeypatch):
    at = open_page(app(sets_db, monkeypatch), "pages/quality.py")
    assert at.selectbox(key="split_system").value == "new"
    assert _checked_slice(at) == (1, 0, 1)  # "Ask a branch." has no "schedule"
    at.selectbox(key="split_system").set_value("old").run()
    assert _checked_slice(at) == (1, 1, 1)


def test_gate_page_picks_the_set_first(sets_db, monkeypatch):
    at = app(sets_db, monkeypatch)
    at.switch_page("pages/gate.py").run()
    assert not at.exception
    assert at.selectbox(key="gate_set").value == "quality"
    assert at.selectbox(key="gate_version").options == ["2"]
    at.selectbox(key="gate_set").set_value("regression").run()
    assert at.selectbox(key="gate_version").options == ["1"]
