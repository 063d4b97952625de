"""The Eval sets page through app.py as a lead: fold-in preview, leave-out, content diff and withdrawal."""

import pytest
from evalset_helpers import LEAD, add_traces, label
from pages_support import app, open_page

from flywheel.evals.versions import current_version, fold_in, import_evalset, version_rows
from flywheel.store.db import open_db

PAGE = "pages/evalsets.py"
SUITE = b'{"input": "How do I top up?", "expected": "Explain top-up.", "criterion": "Names the steps."}\n'


@pytest.fixture
def waiting(tmp_path):
    """Three labeled failures waiting: two foldable, one whose label has no pass criterion."""
    path = tmp_path / "fold.db"
    db = open_db(path)
    ids = add_traces(db, 3)
    label(db, ids[0], "lena")
    label(db, ids[1], "lena", adversarial="jailbreak")
    label(db, ids[2], "tom", kind="new", code="HALLUCINATED_FEE", pass_criterion=None)
    db.close()
    return path, ids


def _frame_with(at, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _metric(at, name: str) -> str:
    return next(str(m.value) for m in at.metric if m.label == name)


def test_the_lead_reads_the_preview_leaves_a_row_out_and_folds_the_rest(waiting, monkeypatch):
    path, ids = waiting
    at = open_page(app(path, monkeypatch), PAGE)
    assert _metric(at, "Current version") == "none"
    preview = _frame_with(at, "blocked").set_index("key")
    assert list(preview.index) == [f"add {i}" for i in ids]
    assert preview.loc[f"add {ids[0]}", "input"] == "[PERSON] asks question 1"
    assert preview.loc[f"add {ids[1]}", "adversarial"] == "jailbreak"
    assert preview.loc[f"add {ids[0]}", "agreement"] == "1 labeler"
    assert preview.loc[f"add {ids[2]}", "foldable"] == "no"
    assert preview.loc[f"add {ids[2]}", "blocked"] == "the label has no pass criterion"
    assert at.multiselect(key="fold_leave_out").options == [f"add {ids[0]}", f"add {ids[1]}"]

    at.multiselect(key="fold_leave_out").set_value([f"add {ids[1]}"]).run()
    at.text_input(key=f"leave_reason_add {ids[1]}").input("check the *jailbreak* tag").run()
    at.text_input(key="fold_note").input("first fold")
    at.button(key="fold_in").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("version 1: 1 active rows") for s in at.success)
    assert _metric(at, "Current version") == "1"  # the header shows the version just made

    db = open_db(path)
    assert [r["trace_id"] for r in version_rows(db, 1)] == [ids[0]]
    stored = db.execute("SELECT item, reason, left_by FROM eval_leave_outs").fetchall()
    assert stored == [(f"add {ids[1]}", "check the *jailbreak* tag", "ana")]
    assert db.execute("SELECT count(*) FROM audit_log WHERE action = 'leave_out'").fetchone() == (1,)
    # proposed again, with the reason it was left out, shown literally
    again = _frame_with(at, "blocked").set_index("key")
    assert list(again.index) == [f"add {ids[1]}", f"add {ids[2]}"]
    assert again.loc[f"add {ids[1]}", "left_out_reason"] == "check the *jailbreak* tag"
    assert at.multiselect(key="fold_leave_out").value == []


def test_a_fold_on_a_preview_that_changed_meanwhile_is_refused(waiting, monkeypatch):
    path, _ = waiting
    at = open_page(app(path, monkeypatch), PAGE)
    db = open_db(path)
    more = add_traces(db, 1, start=4)
    label(db, more[0], "lena")  # arrives while the lead reads the preview
    at.button(key="fold_in").click().run()
    assert any("out of date" in e.value for e in at.error)
    assert current_version(db) is None
    preview = _frame_with(at, "blocked")
    assert f"add {more[0]}" in set(preview["key"])  # the page now shows the rows as they are
    at.button(key="fold_in").click().run()
    assert current_version(db) == 1 and len(version_rows(db, 1)) == 3


def test_nothing_to_fold_is_said_and_the_button_is_off(tmp_path, monkeypatch):
    path = tmp_path / "none.db"
    db = open_db(path)
    import_evalset(db, LEAD, SUITE, "suite.jsonl")
    at = open_page(app(path, monkeypatch), PAGE)
    assert any(i.value.startswith("Nothing to fold in") for i in at.info)
    assert at.button(key="fold_in").disabled


def test_the_lead_withdraws_a_row_and_reads_the_content_diff(tmp_path, monkeypatch):
    path = tmp_path / "diff.db"
    db = open_db(path)
    import_evalset(db, LEAD, SUITE, "suite.jsonl")  # version 1: r-000001
    ids = add_traces(db, 1)
    label(db, ids[0], "lena", expected="Say **no** [here](http://x.test)")
    fold_in(db, LEAD)  # version 2: r-000002 from the trace
    at = open_page(app(path, monkeypatch), PAGE)
    added = _frame_with(at, "labeled_by")
    assert list(added["id"]) == ["r-000002"]
    assert added["expected"][0] == "Say **no** [here](http://x.test)"  # literal, in a table

    at.selectbox(key="withdraw_row").set_value("r-000002")
    at.text_input(key="withdraw_reason").input("the expected behaviour is wrong")
    at.button(key="withdraw").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("withdrew r") for s in at.success)
    assert _metric(at, "Current version") == "3"
    assert [r["id"] for r in version_rows(db, 3)] == ["r-000001"]
    assert db.execute("SELECT reason, source, version FROM eval_withdrawals").fetchall() == [
        ("the expected behaviour is wrong", "withdraw", 3)
    ]

    at.selectbox(key="diff_a").set_value(2).run()
    at.selectbox(key="diff_b").set_value(3).run()
    withdrawn = _frame_with(at, "withdrawn_by")
    assert (withdrawn["id"][0], withdrawn["reason"][0]) == ("r-000002", "the expected behaviour is wrong")
    assert withdrawn["expected"][0] == "Say **no** [here](http://x.test)"

    at.selectbox(key="diff_a").set_value(3).run()
    assert any("No difference" in c.value for c in at.caption)
    assert not any("withdrawn_by" in d.value.columns for d in at.dataframe)
