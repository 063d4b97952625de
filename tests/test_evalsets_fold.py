"""Fold-in preview, leave-out, stale previews, withdrawal and the content diff."""

import json

import pytest
from evalset_helpers import LEAD, add_traces, label, undo

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.errors import BadInput, NotFound, PermissionDenied
from flywheel.evals.versions import (
    StalePreview,
    current_version,
    diff_versions,
    edit_row,
    fold_in,
    fold_preview,
    import_evalset,
    settle_disagreement,
    version_rows,
    withdraw_row,
)
from flywheel.store.db import open_db

SUITE = b'{"input": "How do I top up?", "expected": "Explain top-up.", "criterion": "Names the steps."}\n'


def _audit(db, action: str) -> list[tuple]:
    return db.execute(
        "SELECT actor, entity, entity_id, detail FROM audit_log WHERE action = ? ORDER BY id", [action]
    ).fetchall()


def _confirm_retirement(db, row_id: str) -> None:
    db["eval_retirements"].insert(
        {"row_id": row_id, "reason": "passed every run", "confirmed_by": "ana", "confirmed_at": "2026-05-01"}
    )


def test_the_fold_writes_exactly_what_the_preview_showed(db):
    import_evalset(db, LEAD, SUITE + b'{"input": "Saturated?"}\n', "suite.jsonl")  # r-000001, r-000002
    ids = add_traces(db, 4)
    label(db, ids[0], "lena")
    label(db, ids[0], "tom")
    changed = label(db, ids[1], "lena")
    withdrawn = label(db, ids[2], "lena")
    fold_in(db, LEAD)  # version 2: the three traces' rows
    old_rows = {r["trace_id"]: r["id"] for r in version_rows(db, 2)}
    undo(db, changed)
    label(db, ids[1], "lena", code="HALLUCINATED_FEE", adversarial="jailbreak")
    undo(db, withdrawn)
    label(db, ids[3], "tom", kind="new", code="MISSED_ESCALATION")
    _confirm_retirement(db, "r-000002")
    edited = edit_row(db, LEAD, "r-000001", criterion="Names every step.")

    preview = fold_preview(db)
    assert {i.key: i.action for i in preview.items} == {
        f"add {ids[3]}": "add",
        f"change {ids[1]}": "change",
        f"withdraw {old_rows[ids[2]]}": "withdraw",
        "retire r-000002": "retire",
        f"edit {edited}": "change",
    }
    assert all(i.foldable for i in preview.items) and preview.after == 2
    change = fold_in(db, LEAD, fingerprint=preview.fingerprint)
    assert (change.version, change.added, change.changed, change.retired, change.withdrawn) == (3, 3, 2, 1, 1)
    assert (change.carried, change.rows) == (1, 4)  # the agreed trace's row; r-000001 was edited

    rows = {r["id"]: r for r in version_rows(db, 3, include_archive=True)}
    by_trace = {r["trace_id"]: r for r in rows.values() if r["trace_id"]}
    for item in preview.items:
        if item.action == "add" or (item.action == "change" and item.trace_id):
            row = by_trace[item.trace_id]
            shown = (item.input, item.expected, item.criterion, item.code, item.adversarial, item.labeled_by)
            written = (row["input"], row["expected"], row["criterion"], row["code"], row["labeled_by"])
            assert shown[:4] + shown[5:] == written
            assert item.adversarial == (row["adversarial_kind"] or "none")
            assert row["replaces"] == item.replaces
    assert rows["r-000002"]["state"] == "archived" and rows[edited]["state"] == "active"
    assert old_rows[ids[2]] not in rows and "r-000001" not in rows
    # the next preview is empty: everything previewed was folded
    assert fold_preview(db).items == ()


def test_a_left_out_row_stays_waiting_and_comes_back_with_its_reason(db):
    ids = add_traces(db, 3)
    for trace_id in ids:
        label(db, trace_id, "lena")
    preview = fold_preview(db)
    assert all(i.left_out is None for i in preview.items)
    left = f"add {ids[1]}"
    change = fold_in(db, LEAD, fingerprint=preview.fingerprint, leave_out={left: "  expected reads wrong  "})
    assert (change.added, change.left_out) == (2, 1) and "1 left out" in change.summary()
    assert {r["trace_id"] for r in version_rows(db, 1)} == {ids[0], ids[2]}

    stored = db.execute("SELECT item, action, trace_id, reason, left_by, fold_version FROM eval_leave_outs")
    assert stored.fetchall() == [(left, "add", ids[1], "expected reads wrong", "ana", 1)]
    [(actor, entity, entity_id, detail)] = _audit(db, "leave_out")
    assert (actor, entity, entity_id) == ("ana", "trace", ids[1])
    assert json.loads(detail)["reason"] == "expected reads wrong"

    again = fold_preview(db)
    assert [i.key for i in again.items] == [left]
    assert again.items[0].left_out["reason"] == "expected reads wrong"
    assert again.items[0].as_dict()["left_out_by"] == "ana"
    fold_in(db, LEAD, fingerprint=again.fingerprint)
    assert {r["trace_id"] for r in version_rows(db, 2)} == set(ids)


def test_leaving_everything_out_records_it_and_writes_no_version(db):
    ids = add_traces(db, 1)
    label(db, ids[0], "lena")
    preview = fold_preview(db)
    change = fold_in(db, LEAD, fingerprint=preview.fingerprint, leave_out={f"add {ids[0]}": "not yet"})
    assert not change.created and current_version(db) is None
    assert db["eval_leave_outs"].count == 1 and len(_audit(db, "leave_out")) == 1
    assert fold_preview(db).items[0].left_out["reason"] == "not yet"


@pytest.mark.parametrize(
    ("leave_out", "message"),
    [
        ({"add t-999999": "typo"}, "not in the fold-in preview"),
        ({"add t-000001": "   "}, "needs a reason"),
        ({"add t-000001": None}, "needs a reason"),
    ],
)
def test_a_bad_leave_out_refuses_the_whole_fold(db, leave_out, message):
    ids = add_traces(db, 2)
    for trace_id in ids:
        label(db, trace_id, "lena")
    with pytest.raises(BadInput, match=message):
        fold_in(db, LEAD, leave_out=leave_out)
    assert current_version(db) is None and db["eval_leave_outs"].count == 0


@pytest.mark.parametrize(
    ("expected", "criterion", "why"),
    [
        (None, "States the policy.", "the label has no expected behaviour"),
        ("Quote the policy.", None, "the label has no pass criterion"),
        ("   ", "States the policy.", "the label has no expected behaviour"),
        ("Quote the policy.", "", "the label has no pass criterion"),
        (None, None, "the label has no expected behaviour and no pass criterion"),
    ],
)
def test_a_label_without_expected_or_criterion_is_shown_but_never_folds(db, expected, criterion, why):
    ids = add_traces(db, 1)
    label(db, ids[0], "lena", kind="new", expected=expected, pass_criterion=criterion)
    preview = fold_preview(db)
    [item] = preview.items
    assert (item.foldable, item.blocked, item.action) == (False, why, "add")
    assert preview.foldable == [] and "nothing to fold in" in preview.summary()
    change = fold_in(db, LEAD, fingerprint=preview.fingerprint)
    assert not change.created and change.blocked == 1 and "1 not foldable" in change.summary()
    assert current_version(db) is None and db["eval_rows"].count == 0


def test_a_complete_label_is_preferred_and_an_incomplete_change_keeps_the_old_row(db):
    ids = add_traces(db, 2)
    label(db, ids[0], "lena", expected=None)
    label(db, ids[0], "tom")  # agrees on the code and wrote everything out
    first = label(db, ids[1], "lena")
    fold_in(db, LEAD)
    [row0] = [r for r in version_rows(db, 1) if r["trace_id"] == ids[0]]
    assert (row0["expected"], row0["labeled_by"]) == ("Quote the policy.", "lena,tom")
    undo(db, first)
    label(db, ids[1], "lena", code="HALLUCINATED_FEE", pass_criterion=None)
    [item] = fold_preview(db).items
    assert (item.action, item.foldable) == ("change", False)
    assert not fold_in(db, LEAD).created
    assert {r["code"] for r in version_rows(db, 1) if r["trace_id"] == ids[1]} == {"WRONG_POLICY"}


def test_agreement_is_shown_and_a_disagreement_does_not_fold(db):
    ids = add_traces(db, 4)
    label(db, ids[0], "lena")
    label(db, ids[0], "tom")
    label(db, ids[1], "lena")
    label(db, ids[2], "lena")
    label(db, ids[2], "tom", code="MISSED_ESCALATION")
    chosen = label(db, ids[3], "lena")
    label(db, ids[3], "tom", kind="not_a_bug")
    settle_disagreement(db, LEAD, ids[3], chosen)
    items = {i.trace_id: i for i in fold_preview(db).items}
    assert (items[ids[0]].labelers, items[ids[0]].agreement) == (2, "2 labelers agree")
    assert (items[ids[1]].labelers, items[ids[1]].agreement) == (1, "1 labeler")
    assert items[ids[2]].agreement == "2 labelers disagree" and not items[ids[2]].foldable
    assert items[ids[2]].blocked == "its labelers disagree: settle it first"
    assert items[ids[3]].agreement == "settled by ana" and items[ids[3]].foldable
    fold_in(db, LEAD)
    assert {r["trace_id"] for r in version_rows(db, 1)} == {ids[0], ids[1], ids[3]}


def test_a_stale_preview_is_refused_and_writes_nothing(db):
    ids = add_traces(db, 3)
    label(db, ids[0], "lena")
    read = fold_preview(db)
    label(db, ids[1], "lena")  # a row arrives after the lead read the preview
    with pytest.raises(StalePreview, match="out of date"):
        fold_in(db, LEAD, fingerprint=read.fingerprint)
    assert current_version(db) is None and db["eval_rows"].count == 0
    assert fold_preview(db).fingerprint != read.fingerprint
    fresh = fold_preview(db)
    fold_in(db, LEAD, fingerprint=fresh.fingerprint)
    assert len(version_rows(db, 1)) == 2
    # someone else folded meanwhile: the preview read before is stale too
    label(db, ids[2], "lena")
    before_other = fold_preview(db)
    fold_in(db, User("bo", "lead"))
    with pytest.raises(StalePreview):
        fold_in(db, LEAD, fingerprint=before_other.fingerprint)
    assert current_version(db) == 2


def test_a_label_fixed_after_the_preview_makes_it_stale(db):
    ids = add_traces(db, 1)
    first = label(db, ids[0], "lena", expected=None)
    read = fold_preview(db)
    undo(db, first)
    label(db, ids[0], "lena")  # now foldable: not what the lead read
    with pytest.raises(StalePreview):
        fold_in(db, LEAD, fingerprint=read.fingerprint)


def test_an_empty_preview_says_so_and_the_fold_writes_no_version(db):
    ids = add_traces(db, 1)
    label(db, ids[0], "lena", kind="not_a_bug")
    preview = fold_preview(db)
    assert preview.items == () and preview.after is None
    assert preview.summary().startswith("nothing to fold in")
    change = fold_in(db, LEAD, fingerprint=preview.fingerprint)
    assert (change.created, change.version) == (False, None)
    assert db["eval_versions"].count == 0 and _audit(db, "fold_in") == []


def test_a_fold_records_why_it_withdrew_rows(db):
    ids = add_traces(db, 3)
    undone = label(db, ids[0], "lena")
    label(db, ids[1], "lena")
    label(db, ids[2], "lena")
    fold_in(db, LEAD)
    rows = {r["trace_id"]: r["id"] for r in version_rows(db, 1)}
    undo(db, undone)
    db.execute("UPDATE scrubs SET status = 'pending' WHERE trace_id = ?", [ids[1]])
    reasons = {i.row_id: i.reason for i in fold_preview(db).items}
    assert reasons == {
        rows[ids[0]]: "its labels were undone",
        rows[ids[1]]: "its scrub is no longer approved",
    }
    fold_in(db, LEAD)
    withdrawn = {w["id"]: w for w in diff_versions(db, 1, 2)["content"]["withdrawn"]}
    assert {k: (w["reason"], w["withdrawn_by"], w["withdrawn_in"]) for k, w in withdrawn.items()} == {
        rows[ids[0]]: ("its labels were undone", "ana", 2),
        rows[ids[1]]: ("its scrub is no longer approved", "ana", 2),
    }


def test_a_lead_withdraws_a_bad_row_in_a_new_version(db):
    ids = add_traces(db, 2)
    first = label(db, ids[0], "lena")
    label(db, ids[1], "lena")
    fold_in(db, LEAD)
    bad = next(r["id"] for r in version_rows(db, 1) if r["trace_id"] == ids[0])
    change = withdraw_row(db, LEAD, bad, "  asks about a product we dropped ")
    assert (change.version, change.withdrawn, change.rows, change.carried) == (2, 1, 1, 1)
    assert [r["trace_id"] for r in version_rows(db, 2)] == [ids[1]]
    assert len(version_rows(db, 1)) == 2  # the old version is as it was
    diff = diff_versions(db, 1, 2)
    assert diff["withdrawn"] == [bad]
    [shown] = diff["content"]["withdrawn"]
    assert (shown["reason"], shown["withdrawn_by"], shown["withdrawn_in"]) == (
        "asks about a product we dropped",
        "ana",
        2,
    )
    [(actor, entity, entity_id, detail)] = _audit(db, "withdraw_eval_row")
    assert (actor, entity, entity_id, json.loads(detail)["reason"]) == (
        "ana",
        "eval_row",
        bad,
        "asks about a product we dropped",
    )
    assert db.execute("SELECT kind FROM eval_versions WHERE version = 2").fetchone() == ("withdraw",)
    # the same labels do not bring it back; a label that says something new does
    assert fold_preview(db).items == ()
    undo(db, first)
    label(db, ids[0], "lena", expected="Quote the new policy.")
    assert [i.key for i in fold_preview(db).items] == [f"add {ids[0]}"]


@pytest.mark.parametrize(
    ("row_id", "user", "reason", "error", "message"),
    [
        ("r-000099", LEAD, "bad", NotFound, "no eval row 'r-000099'"),
        ("r-000001", LEAD, "again", BadInput, "already withdrawn in version 2: first"),
        ("r-000002", User("lena", "labeler"), "bad", PermissionDenied, "lena is a labeler"),
        ("r-000002", User("ravi", "reviewer"), "bad", PermissionDenied, "ravi is a reviewer"),
        ("r-000002", LEAD, "   ", BadInput, "needs a reason"),
        ("r-000003", LEAD, "bad", BadInput, "retired"),
    ],
)
def test_a_withdrawal_that_cannot_be_done_is_refused(db, row_id, user, reason, error, message):
    import_evalset(db, LEAD, SUITE * 3, "suite.jsonl")  # r-000001..3
    withdraw_row(db, LEAD, "r-000001", "first")  # version 2
    _confirm_retirement(db, "r-000003")
    fold_in(db, LEAD)  # version 3 archives r-000003
    with pytest.raises(error, match=message):
        withdraw_row(db, user, row_id, reason)
    assert current_version(db) == 3


def test_the_diff_of_a_version_with_itself_is_empty(db):
    import_evalset(db, LEAD, SUITE, "suite.jsonl")
    diff = diff_versions(db, 1, 1)
    assert diff["added"] == diff["retired"] == diff["changed"] == diff["withdrawn"] == []
    assert diff["content"] == {"added": [], "retired": [], "changed": [], "withdrawn": []}


def test_the_diff_shows_old_and_new_text_of_each_changed_field(db):
    import_evalset(db, LEAD, SUITE + b'{"input": "Untouched"}\n', "suite.jsonl")
    ids = add_traces(db, 1)
    first = label(db, ids[0], "lena")
    fold_in(db, LEAD)  # version 2
    edit_row(db, LEAD, "r-000001", expected="Explain <b>top-up</b> $x$.", adversarial=1)
    undo(db, first)
    label(db, ids[0], "lena", code="HALLUCINATED_FEE", pass_criterion="Names the fee.")
    fold_in(db, LEAD)  # version 3
    changed = {c["from"]: c for c in diff_versions(db, 2, 3)["content"]["changed"]}
    assert changed["r-000001"]["fields"] == [
        {"field": "expected", "old": "Explain top-up.", "new": "Explain <b>top-up</b> $x$."},
        {"field": "adversarial", "old": "none", "new": "yes"},
    ]
    [by_label] = [c for k, c in changed.items() if k != "r-000001"]
    assert by_label["trace_id"] == ids[0]
    assert by_label["fields"] == [
        {"field": "criterion", "old": "States the policy.", "new": "Names the fee."},
        {"field": "code", "old": "WRONG_POLICY", "new": "HALLUCINATED_FEE"},
    ]
    assert diff_versions(db, 2, 3)["added"] == []  # a changed row is not also "added"


def test_the_retired_list_carries_the_retirement_reason(db):
    import_evalset(db, LEAD, SUITE * 2, "suite.jsonl")
    _confirm_retirement(db, "r-000002")
    fold_in(db, LEAD)
    [retired] = diff_versions(db, 1, 2)["content"]["retired"]
    assert (retired["id"], retired["reason"]) == ("r-000002", "passed every run")


# The command line ---------------------------------------------------------------------------------------


@pytest.fixture
def folded(tmp_path):
    path = tmp_path / "f.db"
    db = open_db(path)
    ids = add_traces(db, 2)
    for trace_id in ids:
        label(db, trace_id, "lena")
    return path, db, ids


def test_cli_preview_then_fold_with_the_fingerprint_and_a_leave_out(folded, capsys):
    path, db, ids = folded
    assert main(["fold-in", "--db", str(path), "--preview", "--json"]) == 0
    preview = json.loads(capsys.readouterr().out)
    assert [i["key"] for i in preview["items"]] == [f"add {ids[0]}", f"add {ids[1]}"]
    assert preview["items"][0]["input"] == "[PERSON] asks question 1" and preview["after_version"] is None
    assert current_version(db) is None  # a preview writes nothing
    assert main(["fold-in", "--db", str(path), "--preview"]) == 0
    assert '    input: "[PERSON] asks question 1"' in capsys.readouterr().out.splitlines()

    args = ["fold-in", "--db", str(path), "--fingerprint", preview["fingerprint"], "--json"]
    assert main([*args, "--leave-out", f"add {ids[1]}"]) == 2
    assert "--reason" in capsys.readouterr().err
    assert main([*args, "--leave-out", f"add {ids[1]}", "--reason", "check it"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "version": 1,
        "added": 1,
        "retired": 0,
        "carried": 0,
        "rows": 1,
    }
    assert main(args) == 2  # the same fingerprint again: the set of rows changed
    err = capsys.readouterr().err
    assert "out of date" in err and len(err.strip().splitlines()) == 1
    assert current_version(db) == 1


def test_cli_withdraw(folded, capsys):
    path, db, _ = folded
    fold_in(db, LEAD)
    args = ["withdraw", "--db", str(path), "r-000001", "--reason", "wrong expectation", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "version": 2,
        "added": 0,
        "retired": 0,
        "carried": 1,
        "rows": 1,
        "withdrawn": ["r-000001"],
        "reason": "wrong expectation",
    }
    assert main(args) == 2
    assert "already withdrawn in version 2" in capsys.readouterr().err
    assert main(["withdraw", "--db", str(path), "r-000404", "--reason", "x"]) == 2
    assert "no eval row 'r-000404'" in capsys.readouterr().err
    assert main(["diff", "--db", str(path), "1", "2"]) == 0
    text = capsys.readouterr().out
    assert "withdrawn (1): r-000001" in text and '    reason: "wrong expectation"' in text
