"""Editing one's earlier labels, the lead's review step before labels fold, annotator throughput."""

from datetime import timedelta

import pytest
from labels_support import ANA, LENA, T0, TOM, add_code, known, seed_queue

from flywheel.errors import BadInput, NotFound, PermissionDenied
from flywheel.evals.versions import fold_in, fold_preview, version_rows
from flywheel.labeling.labels import (
    accept_labels,
    annotator_stats,
    claim_next,
    edit_label,
    labels_to_review,
    most_used_codes,
    my_labels,
    review_step,
    set_review_step,
    undo_last_label,
)
from flywheel.labeling.taxonomy import add_entry
from flywheel.store.db import write

FIX = {"expected": "Quote the real schedule", "pass_criterion": "Only fees in the schedule"}


@pytest.fixture
def qdb(db):
    seed_queue(db, 6, batches={1: list(range(6))})
    add_code(db)
    with write(db):
        add_entry(db, "ana", "WRONG_POLICY", "Wrong policy", "States a policy we do not have. Any rule.")
    return db


def _label(db, user, n_minutes: int = 0, **kw) -> int:
    at = T0 + timedelta(minutes=n_minutes)
    return known(db, user, claim_next(db, user, now=at, minutes=10), now=at, **kw)


def _live(db, trace_id: str) -> list[tuple]:
    sql = "SELECT labeler, kind, code, expected FROM labels WHERE trace_id = ? AND undone_at IS NULL"
    return db.execute(sql, [trace_id]).fetchall()


def test_a_labeler_edits_an_earlier_label_and_undo_still_takes_back_the_last(qdb):
    first = _label(qdb, LENA)
    trace = qdb.execute("SELECT trace_id FROM labels WHERE id = ?", [first]).fetchone()[0]
    last = _label(qdb, LENA, 2)
    new_id = edit_label(qdb, LENA, first, "known", code="WRONG_POLICY", **FIX, now=T0 + timedelta(minutes=3))
    assert _live(qdb, trace) == [("lena", "known", "WRONG_POLICY", FIX["expected"])]
    assert [row["id"] for row in my_labels(qdb, LENA)] == [last, new_id]  # order kept by when labeled
    undone = undo_last_label(qdb, LENA, now=T0 + timedelta(minutes=4), minutes=10)
    assert undone.label_id == last, "undo took back the edited label instead of the last one"
    detail = qdb.execute("SELECT actor, detail FROM audit_log WHERE action = 'edit_label'").fetchall()
    assert len(detail) == 1 and "WRONG_POLICY" in detail[0][1]
    assert qdb.execute("SELECT done FROM label_queue WHERE trace_id = ?", [trace]).fetchone()[0] == 1


@pytest.mark.parametrize(
    ("who", "label_of", "kind", "values", "error", "message"),
    [
        (TOM, "lena", "known", {"code": "WRONG_POLICY", **FIX}, PermissionDenied, "only a lead"),
        (LENA, "lena", "known", {"code": "NO_SUCH", **FIX}, NotFound, "NO_SUCH"),
        (LENA, "lena", "known", {"code": "WRONG_POLICY"}, BadInput, "expected behaviour"),
        (LENA, "lena", "known", {**FIX}, BadInput, "failure code"),
        (LENA, "lena", "maybe", {}, BadInput, "'maybe'"),
        (LENA, "lena", "not_a_bug", {"adversarial": "evil"}, BadInput, "'evil'"),
    ],
)
def test_a_bad_edit_is_refused_and_changes_nothing(qdb, who, label_of, kind, values, error, message):
    label_id = _label(qdb, LENA)
    before = qdb.execute("SELECT * FROM labels").fetchall()
    with pytest.raises(error, match=message):
        edit_label(qdb, who, label_id, kind, **values)
    assert qdb.execute("SELECT * FROM labels").fetchall() == before


def test_an_undone_or_already_edited_label_cannot_be_edited(qdb):
    label_id = _label(qdb, LENA)
    edit_label(qdb, LENA, label_id, "not_a_bug")
    with pytest.raises(NotFound, match=f"no live label {label_id}"):
        edit_label(qdb, LENA, label_id, "not_a_bug")


def test_an_edit_of_a_folded_label_is_a_change_in_the_next_version(qdb):
    label_id = _label(qdb, LENA)
    assert fold_in(qdb, ANA).added == 1
    edit_label(qdb, LENA, label_id, "known", code="WRONG_POLICY", **FIX)
    preview = fold_preview(qdb)
    assert [item.action for item in preview.items] == ["change"]
    fold_in(qdb, ANA)
    assert [row["code"] for row in version_rows(qdb, 2)] == ["WRONG_POLICY"]


def test_with_the_review_step_on_only_reviewed_labels_fold(qdb):
    accepted, corrected, waiting = _label(qdb, LENA), _label(qdb, LENA, 1), _label(qdb, TOM, 2)
    assert not review_step(qdb)
    with pytest.raises(PermissionDenied):
        set_review_step(qdb, LENA, True)
    set_review_step(qdb, ANA, True)
    assert review_step(qdb)
    assert fold_preview(qdb).items == ()  # nothing reviewed yet: nothing folds
    assert [row["id"] for row in labels_to_review(qdb, ANA)] == [accepted, corrected, waiting]
    assert labels_to_review(qdb, ANA)[0]["scrub"]["input"].startswith("I am [PERSON]")
    assert accept_labels(qdb, ANA, [accepted, accepted]) == 1
    fixed = edit_label(qdb, ANA, corrected, "known", code="WRONG_POLICY", **FIX)  # a lead's correction
    assert [row["id"] for row in labels_to_review(qdb, ANA)] == [waiting]
    change = fold_in(qdb, ANA)
    assert change.added == 2
    assert sorted(r["code"] for r in version_rows(qdb, change.version)) == [
        "HALLUCINATED_FEE",
        "WRONG_POLICY",
    ]
    owner = qdb.execute("SELECT labeler, edited_by, reviewed_by FROM labels WHERE id = ?", [fixed]).fetchone()
    assert owner == ("lena", "ana", "ana"), "a correction keeps the label under its labeler"
    actions = [a for (a,) in qdb.execute("SELECT action FROM audit_log WHERE actor = 'ana' ORDER BY id")]
    start = actions.index("set_review_step")
    assert actions[start : start + 3] == ["set_review_step", "accept_label", "correct_label"]
    set_review_step(qdb, ANA, False)
    assert [item.trace_id for item in fold_preview(qdb).items] == [
        qdb.execute("SELECT trace_id FROM labels WHERE id = ?", [waiting]).fetchone()[0]
    ]


def test_a_labelers_edit_of_an_accepted_folded_label_waits_for_review(qdb):
    label_id = _label(qdb, LENA)
    set_review_step(qdb, ANA, True)
    accept_labels(qdb, ANA, [label_id])
    fold_in(qdb, ANA)
    edited = edit_label(qdb, LENA, label_id, "not_a_bug")
    assert fold_preview(qdb).items == (), "an unreviewed edit withdrew the row"
    accept_labels(qdb, ANA, [edited])
    assert [item.action for item in fold_preview(qdb).items] == ["withdraw"]


def test_accepting_an_unknown_label_is_refused_whole(qdb):
    label_id = _label(qdb, LENA)
    with pytest.raises(NotFound, match="no live label 999"):
        accept_labels(qdb, ANA, [label_id, 999])
    assert qdb.execute("SELECT reviewed_at FROM labels WHERE id = ?", [label_id]).fetchone()[0] is None


def test_throughput_counts_labeling_time_and_leaves_out_long_pauses(qdb):
    for minute in (0, 2, 4):
        _label(qdb, LENA, minute)
    _label(qdb, TOM, 0)
    _label(qdb, TOM, 240)  # a pause of four hours counts as ten minutes
    undo_last_label(qdb, TOM, now=T0 + timedelta(minutes=241), minutes=10)
    stats = {row["labeler"]: row for row in annotator_stats(qdb, ANA, now=T0 + timedelta(hours=5))}
    assert stats["lena"]["labels"] == 3 and stats["lena"]["last_7_days"] == 3
    assert stats["lena"]["per_hour"] == pytest.approx(3 / (5 / 60), rel=0.01)  # 4 min + 1 for the first
    assert stats["tom"]["labels"] == 1 and stats["tom"]["undone"] == 1
    assert stats["tom"]["awaiting_review"] == 1
    with pytest.raises(PermissionDenied):
        annotator_stats(qdb, LENA)
    with pytest.raises(BadInput, match="days 0"):
        annotator_stats(qdb, ANA, days=0)


def test_an_empty_store_has_no_throughput_and_number_keys_follow_use(qdb):
    assert annotator_stats(qdb, ANA) == []
    assert most_used_codes(qdb) == ["HALLUCINATED_FEE", "WRONG_POLICY"]  # no labels: by code
    _label(qdb, LENA, code="WRONG_POLICY")
    assert most_used_codes(qdb) == ["WRONG_POLICY", "HALLUCINATED_FEE"]
    assert most_used_codes(qdb, limit=1) == ["WRONG_POLICY"]
