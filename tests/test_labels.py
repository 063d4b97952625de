"""The labeling station's library: queue, claims, labels, undo, siblings, overlap and kappa."""

import math
import multiprocessing
import sqlite3
from datetime import timedelta

import pytest
from labels_support import ANA, DEFINITION, LENA, RAVI, RAW_ONLY, T0, TOM, UMA, add_code, known, seed_queue

from flywheel.auth import User
from flywheel.errors import FlywheelError, PermissionDenied
from flywheel.labeling import labels
from flywheel.labeling.labels import (
    Claim,
    StaleClaim,
    add_siblings,
    agreement,
    claim_next,
    cohen_kappa,
    fleiss_category_kappa,
    fleiss_kappa,
    label_card,
    progress,
    record_label,
    release_claim,
    set_overlap,
    undo_last_label,
)
from flywheel.review import claims, label_queue
from flywheel.review.scrubs import approve_scrub
from flywheel.store.db import open_db, write

FIELDS = {"expected": "Quote the fee schedule.", "pass_criterion": "Names only fees in the schedule."}


@pytest.fixture
def queue_db(db):
    seed_queue(db, 12, batches={1: [0, 1, 2, 3, 4, 5], 2: [6, 7, 8]}, approve=lambda n: n != 3)
    return db


def test_queue_holds_approved_scrubs_ranked_by_batch_then_priority(queue_db):
    order = []
    for _ in range(20):
        claim = claim_next(queue_db, LENA, now=T0, minutes=10)
        if claim is None:
            break
        order.append(claim.trace_id)
        record_label(queue_db, LENA, claim, "not_a_bug", now=T0)
    # batch 1 (t-3 unapproved) by priority n % 3, then batch 2, then the traces in no batch
    assert order == [
        *["t-00000", "t-00001", "t-00004", "t-00002", "t-00005"],
        *["t-00006", "t-00007", "t-00008"],
        *["t-00009", "t-00010", "t-00011"],
    ]


def test_claim_is_kept_until_labeled_and_two_labelers_get_different_items(queue_db):
    first = claim_next(queue_db, LENA, now=T0, minutes=10)
    assert claim_next(queue_db, LENA, now=T0 + timedelta(minutes=1), minutes=10) == first
    assert claim_next(queue_db, TOM, now=T0, minutes=10).trace_id != first.trace_id
    assert queue_db["audit_log"].count_where("action = 'claim'") == 2


def test_an_abandoned_claim_returns_to_the_queue_after_it_expires(queue_db):
    first = claim_next(queue_db, LENA, now=T0, minutes=10)
    assert claim_next(queue_db, TOM, now=T0 + timedelta(minutes=9), minutes=10).trace_id != first.trace_id
    later = claim_next(queue_db, UMA, now=T0 + timedelta(minutes=11), minutes=10)
    assert later.trace_id == first.trace_id
    assert queue_db["claims"].get(first.claim_id)["state"] == "lapsed"


def test_a_lapsed_claim_is_refused_once_someone_else_labeled_the_item(queue_db):
    stale = claim_next(queue_db, LENA, now=T0, minutes=10)
    taken = claim_next(queue_db, TOM, now=T0 + timedelta(minutes=11), minutes=10)
    assert taken.trace_id == stale.trace_id
    with pytest.raises(StaleClaim, match="someone else is labeling this trace now"):
        record_label(queue_db, LENA, stale, "not_a_bug", now=T0 + timedelta(minutes=12))
    known(queue_db, TOM, taken, code=add_code(queue_db), now=T0 + timedelta(minutes=13))
    with pytest.raises(StaleClaim, match="someone else labeled this trace while it was away from you"):
        record_label(queue_db, LENA, stale, "not_a_bug", now=T0 + timedelta(minutes=14))
    rows = list(queue_db["labels"].rows_where("trace_id = ?", [stale.trace_id]))
    assert [(r["labeler"], r["kind"]) for r in rows] == [("tom", "known")]


def test_a_lapsed_claim_nobody_took_still_counts(queue_db):
    claim = claim_next(queue_db, LENA, now=T0, minutes=10)
    record_label(queue_db, LENA, claim.trace_id, "not_a_bug", note="fine", now=T0 + timedelta(hours=1))
    assert queue_db["labels"].count == 1


def test_a_claim_is_used_once_and_only_by_its_holder(queue_db):
    claim = claim_next(queue_db, LENA, now=T0, minutes=10)
    with pytest.raises(PermissionDenied):
        record_label(queue_db, TOM, claim.claim_id, "not_a_bug", now=T0)
    record_label(queue_db, LENA, claim, "not_a_bug", now=T0)
    with pytest.raises(StaleClaim, match="already"):
        record_label(queue_db, LENA, claim, "not_a_bug", now=T0)


def test_each_kind_writes_its_row_and_audit_entry_in_one_transaction(queue_db):
    add_code(queue_db)
    known(queue_db, LENA, claim_next(queue_db, LENA, now=T0, minutes=10), adversarial="jailbreak", now=T0)
    new_id = record_label(
        queue_db,
        LENA,
        claim_next(queue_db, LENA, now=T0, minutes=10),
        "new",
        code="missed escalation",
        name="Missed escalation",
        definition="The assistant keeps a fraud case to itself. It must offer a human agent.",
        expected="Offer a human agent.",
        pass_criterion="Names the way to reach a human.",
        now=T0,
    )
    record_label(
        queue_db, LENA, claim_next(queue_db, LENA, now=T0, minutes=10), "not_a_bug", note="ok", now=T0
    )
    rows = list(queue_db["labels"].rows_where(order_by="id"))
    assert [(r["kind"], r["code"], r["adversarial"]) for r in rows] == [
        ("known", "HALLUCINATED_FEE", "jailbreak"),
        ("new", "MISSED_ESCALATION", "none"),
        ("not_a_bug", None, "none"),
    ]
    assert queue_db["taxonomy"].get("MISSED_ESCALATION")["created_by"] == "lena"
    assert queue_db["labels"].get(new_id)["claim_id"] is not None
    assert queue_db["audit_log"].count_where("action = 'label' AND actor = 'lena'") == 3
    # a fault after the label row and the new code are written takes both back, and the claim stays
    claim = claim_next(queue_db, LENA, now=T0, minutes=10)
    _fail_inserts_into(queue_db, "audit_log")
    with pytest.raises(sqlite3.IntegrityError, match="injected fault"):
        record_label(
            queue_db,
            LENA,
            claim,
            "new",
            code="SLOW_REFUND",
            name="Slow refund",
            definition=DEFINITION,
            **FIELDS,
            now=T0,
        )
    queue_db.execute("DROP TRIGGER temp.fail_insert")
    assert queue_db["labels"].count == 3
    assert queue_db.execute("SELECT count(*) FROM taxonomy WHERE code = 'SLOW_REFUND'").fetchone() == (0,)
    assert queue_db["claims"].get(claim.claim_id)["state"] == "open"
    assert claim_next(queue_db, LENA, now=T0, minutes=10) == claim


def _fail_inserts_into(db, table: str) -> None:
    """A database fault: every insert into ``table`` aborts (a temporary trigger; the code is untouched)."""
    db.execute(
        f"CREATE TEMP TRIGGER fail_insert BEFORE INSERT ON {table}"
        " BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
    )


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        ("known", {"code": "HALLUCINATED_FEE", "expected": "x"}, "pass criterion"),
        ("known", {"code": "NO_SUCH_CODE", "expected": "x", "pass_criterion": "y"}, "no taxonomy code"),
        ("new", {"code": "X1", "name": "Short", "definition": DEFINITION, **FIELDS}, "code 'X1'"),
        (
            "new",
            {"code": "ONE_SENTENCE", "name": "One", "definition": "Just one.", **FIELDS},
            "two sentences",
        ),
        (
            "new",
            {"code": "HALLUCINATED_FEE", "name": "Dup", "definition": DEFINITION, **FIELDS},
            "already exists",
        ),
        # a new failure becomes an eval row like a known one: it needs the same fields
        (
            "new",
            {"code": "FEE_Y", "name": "Fee y", "definition": DEFINITION},
            "new failure needs the expected",
        ),
        (
            "new",
            {
                "code": "FEE_Y",
                "name": "Fee y",
                "definition": DEFINITION,
                "expected": "x",
                "pass_criterion": " ",
            },
            "new failure needs the pass criterion",
        ),
        ("known", {"code": "HALLUCINATED_FEE", "pass_criterion": "y"}, "known failure needs the expected"),
        ("not_a_bug", {"adversarial": "rude"}, "adversarial tag 'rude'"),
        ("maybe", {}, "label kind 'maybe'"),
    ],
)
def test_bad_labels_are_refused_and_leave_the_claim_open(queue_db, kind, fields, message):
    add_code(queue_db)
    claim = claim_next(queue_db, LENA, now=T0, minutes=10)
    with pytest.raises(FlywheelError, match=message):
        record_label(queue_db, LENA, claim, kind, now=T0, **fields)
    assert queue_db["labels"].count == 0
    assert claim_next(queue_db, LENA, now=T0, minutes=10) == claim


def test_undo_takes_back_the_last_label_and_returns_its_item(queue_db):
    first = claim_next(queue_db, LENA, now=T0, minutes=10)
    record_label(queue_db, LENA, first, "not_a_bug", now=T0)
    second = claim_next(queue_db, LENA, now=T0, minutes=10)
    undone = undo_last_label(queue_db, LENA, now=T0, minutes=10)
    again = undone.claim
    assert again.trace_id == first.trace_id
    assert undone.describe() == "Undid your label on trace t-00000: not a bug"
    assert claim_next(queue_db, LENA, now=T0, minutes=10) == again
    assert queue_db["claims"].get(second.claim_id)["state"] == "released"
    assert queue_db["labels"].get(1)["undone_by"] == "lena"
    known(queue_db, LENA, again, code=add_code(queue_db), now=T0)
    assert [r["kind"] for r in queue_db["labels"].rows_where("undone_at IS NULL")] == ["known"]
    undo_last_label(queue_db, LENA, now=T0, minutes=10)
    with pytest.raises(labels.NothingToUndo):
        undo_last_label(queue_db, LENA, now=T0, minutes=10)
    assert queue_db["audit_log"].count_where("action = 'undo_label'") == 2


def test_siblings_get_the_code_and_leave_the_queue(queue_db):
    claim = claim_next(queue_db, LENA, now=T0, minutes=10)
    label_id = record_label(
        queue_db,
        LENA,
        claim,
        "new",
        code="FEE_MADE_UP",
        name="Made-up fee",
        definition=DEFINITION,
        **FIELDS,
        now=T0,
    )
    held = claim_next(queue_db, TOM, now=T0, minutes=10)
    added = add_siblings(queue_db, LENA, label_id, ["t-00004", held.trace_id, "t-00002", "t-00004"], now=T0)
    rows = [queue_db["labels"].get(i) for i in added]
    assert held.trace_id == "t-00001"
    assert [r["trace_id"] for r in rows] == ["t-00004", "t-00002"]  # tom holds t-00001
    assert {(r["kind"], r["code"], r["via"], r["labeler"], r["sibling_of"]) for r in rows} == {
        ("known", "FEE_MADE_UP", "sibling", "lena", label_id)
    }
    queued = claim_next(queue_db, UMA, now=T0, minutes=10)
    assert queued.trace_id == "t-00005"
    undo_last_label(queue_db, LENA, now=T0, minutes=10)
    assert queue_db["labels"].count_where("undone_at IS NULL") == 0


def test_a_labeler_reads_only_scrubbed_text(queue_db):
    claim = claim_next(queue_db, LENA, now=T0, minutes=10)
    card = label_card(queue_db, LENA, claim)
    assert "[PERSON]" in card["input"] and card["reasons"] == ["anomaly: thumbs_down"]
    label_id = record_label(
        queue_db, LENA, claim, "new", code="FEE_X", name="Fee x", definition=DEFINITION, **FIELDS
    )
    outputs = [
        card,
        progress(queue_db, LENA, 1),
        labels.my_labels(queue_db, LENA),
        add_siblings(queue_db, LENA, label_id, ["t-00001"]),
        undo_last_label(queue_db, LENA, minutes=10),
    ]
    assert RAW_ONLY not in repr(outputs)


def test_a_labeler_never_gets_an_unapproved_trace(queue_db):
    with pytest.raises(PermissionDenied):
        label_card(queue_db, LENA, Claim(0, "t-00003", "lena", 1, 0, "2030-01-01"))
    with pytest.raises(labels.NotFound):
        add_siblings(queue_db, LENA, 99, ["t-00003"])


def test_overlap_keeps_an_item_until_enough_labelers_labeled_it(queue_db):
    set_overlap(queue_db, ANA, 2, 2)
    seen = {}
    for user in (LENA, TOM, LENA, TOM, LENA, TOM):
        claim = claim_next(queue_db, user, now=T0, minutes=10)
        while claim.batch_id == 1:
            record_label(queue_db, user, claim, "not_a_bug", now=T0)
            claim = claim_next(queue_db, user, now=T0, minutes=10)
        seen.setdefault(claim.trace_id, []).append(user.name)
        if claim.trace_id == "t-00007" and user is TOM:
            known(queue_db, user, claim, code=add_code(queue_db), now=T0)
        else:
            record_label(queue_db, user, claim, "not_a_bug", now=T0)
    assert seen == {t: ["lena", "tom"] for t in ("t-00006", "t-00007", "t-00008")}
    assert progress(queue_db, LENA, 2) | {"per_labeler": None} == {
        "batch_id": 2,
        "items": 3,
        "left": 0,
        "done": 3,
        "mine": 3,
        "per_labeler": None,
    }
    result = agreement(queue_db, ANA, 2)
    assert (result.method, result.items, result.raters) == ("cohen", 3, 2)
    assert result.kappa == pytest.approx(0.0)  # observed 2/3 = chance 2/3 (tom 2 of 3 not a bug)
    with pytest.raises(PermissionDenied):
        agreement(queue_db, LENA, 2)


def test_release_gives_the_item_back(queue_db):
    claim = claim_next(queue_db, LENA, now=T0, minutes=10)
    release_claim(queue_db, LENA, claim)
    assert claim_next(queue_db, TOM, now=T0, minutes=10).trace_id == claim.trace_id


def test_cohen_kappa_matches_the_hand_computed_value():
    # 50 items: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> po 0.7, pe 0.5, kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["x", "y"], ["x", "y"]) == 1.0
    assert math.isnan(cohen_kappa(["x", "x"], ["x", "x"]))


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as in the Wikipedia worked example: 10 items, 14 raters, 5 categories -> 0.210
    rows = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    table = [{str(j): n for j, n in enumerate(row) if n} for row in rows]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    # first category by hand: p = 20/140; sum of n(m - n) = 2*12 + 7*7 + 3*11 + 2*12 + 6*8 = 178
    p = 20 / 140
    assert fleiss_category_kappa(table, "0") == pytest.approx(1 - 178 / (10 * 14 * 13 * p * (1 - p)))


def test_fleiss_is_used_for_three_raters(queue_db):
    ratings = [{"a": "X", "b": "X", "c": "X"}, {"a": "Y", "b": "Y", "c": "X"}, {"a": "Y", "b": "Y", "c": "Y"}]
    result = labels.agreement_of(ratings)
    assert result.method == "fleiss" and result.raters == 3
    assert result.kappa == pytest.approx(fleiss_kappa([{"X": 3}, {"Y": 2, "X": 1}, {"Y": 3}]))
    # by hand: P_i = 1, 1/3, 1 -> 7/9; p_X = 4/9, p_Y = 5/9 -> Pe = 41/81; kappa = 22/40
    assert result.kappa == pytest.approx(0.55)


def test_claim_next_walks_indexes_only(queue_db):
    plans = {
        name: " | ".join(
            r[3] for r in queue_db.execute(f"EXPLAIN QUERY PLAN {sql}", {"user": "x", "now": "z"})
        )
        for name, sql in (("held", claims.HELD_SQL), ("next", claims.NEXT_FREE_SQL))
    }
    assert "USING INDEX idx_label_queue_claimed_by" in plans["held"]
    assert "USING INDEX idx_label_queue_is_open_batch_rank_priority_trace_id" in plans["next"]
    assert "idx_labels_live" in plans["next"]
    assert "TEMP B-TREE" not in plans["next"]  # no sort: the index gives the queue order


def _claim_and_label(path: str, name: str, count: int) -> list[tuple[str, int]]:
    db = open_db(path)
    user, done = User(name, "labeler"), []
    for _ in range(count):
        claim = claim_next(db, user, minutes=10)
        if claim is None:
            break
        record_label(db, user, claim, "not_a_bug")
        done.append((claim.trace_id, claim.claim_id))
    db.close()
    return done


@pytest.mark.slow
def test_four_processes_claiming_at_once_never_share_an_item_or_lose_a_label(tmp_path):
    path = tmp_path / "busy.db"
    db = open_db(path)
    seed_queue(db, 1200, batches={1: list(range(0, 1200, 2))})
    db.close()
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(_claim_and_label, [(str(path), f"p{i}", 300) for i in range(4)])
    items = [trace_id for result in results for trace_id, _ in result]
    assert len(items) == 1200 and len(set(items)) == 1200
    db = open_db(path)
    assert db["labels"].count == 1200
    assert db.execute("SELECT count(DISTINCT trace_id) FROM labels").fetchone()[0] == 1200
    assert db.execute("SELECT count(*) FROM label_queue WHERE is_open").fetchone()[0] == 0
    assert db["claims"].count_where("state = 'labeled'") == 1200


def test_approving_a_scrub_queues_its_trace_in_the_same_transaction(queue_db):
    scrub_id = queue_db.execute("SELECT id FROM scrubs WHERE trace_id = 't-00003'").fetchone()[0]
    _fail_inserts_into(queue_db, "label_queue")
    with pytest.raises(sqlite3.IntegrityError, match="injected fault"):
        approve_scrub(queue_db, RAVI, scrub_id)
    queue_db.execute("DROP TRIGGER temp.fail_insert")
    assert queue_db["scrubs"].get(scrub_id)["status"] == "pending"
    assert queue_db["label_queue"].count_where("trace_id = 't-00003'") == 0
    approve_scrub(queue_db, RAVI, scrub_id)
    queued = queue_db["label_queue"].get("t-00003")
    assert (queued["scrub_id"], queued["batch_id"], queued["priority"], queued["is_open"]) == (
        scrub_id,
        1,
        0,
        1,
    )
    assert claim_next(queue_db, LENA, now=T0, minutes=10).trace_id == "t-00000"
    assert (
        claim_next(queue_db, TOM, now=T0, minutes=10).trace_id == "t-00003"
    )  # priority 0 of batch 1, before t-00001


def test_a_trace_queued_in_no_batch_joins_the_first_batch_that_samples_it(queue_db):
    assert queue_db["label_queue"].get("t-00010")["batch_id"] is None
    with write(queue_db):
        queue_db["sample_batches"].insert({"id": 3, "plan": "{}", "seed": 7, "week": "2026-W18"})
        queue_db["batch_items"].insert({"batch_id": 3, "trace_id": "t-00010", "reasons": "[]", "priority": 0})
        assert label_queue.join_batch(queue_db, 3) == 1
    row = queue_db["label_queue"].get("t-00010")
    assert (row["batch_id"], row["batch_rank"], row["priority"]) == (3, 3, 0)


def test_sampling_a_week_moves_queued_traces_into_the_new_batch(queue_db):
    from flywheel.sampling.batches import run_plan
    from flywheel.sampling.plans import Plan

    batch = run_plan(queue_db, Plan(name="all", random_rate=1.0), actor="ana", week="2026-W18")
    loose = queue_db.execute("SELECT count(*) FROM label_queue WHERE batch_id IS NULL").fetchone()[0]
    assert loose == 0
    assert queue_db["label_queue"].get("t-00011")["batch_id"] == batch.id
    assert queue_db["label_queue"].get("t-00000")["batch_id"] == 1  # already in an earlier batch


def test_an_upgraded_database_loses_the_queue_triggers_and_keeps_its_queue(tmp_path):
    from sqlite_utils import Database

    from flywheel.store.migrations import migrations

    path = tmp_path / "old.db"
    old = Database(sqlite3.connect(path, isolation_level=None))
    migrations.apply(old, stop_before="m030_label_queue_without_triggers")
    seed_queue(old, 4, batches={1: [0, 1]})
    triggers = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'label_queue_%'"
    assert old.execute(triggers).fetchone() == (3,)
    old.close()
    db = open_db(path)
    assert db.execute(triggers).fetchone() == (0,)
    assert db["label_queue"].count == 4
    assert claim_next(db, LENA, now=T0, minutes=10).trace_id == "t-00000"


def test_skip_hands_the_item_to_others_and_brings_it_back_last(queue_db):
    skipped = claim_next(queue_db, LENA, now=T0, minutes=10)
    claims.skip_claim(queue_db, LENA, skipped)
    assert claim_next(queue_db, TOM, now=T0, minutes=10).trace_id == skipped.trace_id
    release_claim(queue_db, TOM, claim_next(queue_db, TOM, now=T0, minutes=10))
    seen = []
    while (claim := claim_next(queue_db, LENA, now=T0, minutes=10)) is not None:
        seen.append(claim.trace_id)
        record_label(queue_db, LENA, claim, "not_a_bug", now=T0)
    assert seen[-1] == skipped.trace_id and seen.count(skipped.trace_id) == 1
    assert queue_db["audit_log"].count_where("action = 'skip'") == 1


def test_the_claim_window_is_the_argument_not_the_environment(queue_db, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_CLAIM_MINUTES", "1")
    claim = claim_next(queue_db, LENA, now=T0, minutes=30)
    assert claim.expires_at.startswith("2026-05-04T09:30")
    record_label(queue_db, LENA, claim, "not_a_bug", now=T0)
    undone = undo_last_label(queue_db, LENA, now=T0, minutes=45)
    assert undone.claim.expires_at.startswith("2026-05-04T09:45")
    with pytest.raises(FlywheelError, match="claim minutes 0"):
        claim_next(queue_db, TOM, now=T0, minutes=0)


def test_the_split_modules_are_still_importable_from_labels():
    from flywheel.labeling import agreement

    assert labels.agreement_of is agreement.agreement_of
    assert labels.claim_next is claims.claim_next
    assert set(labels.__all__) <= set(dir(labels))


def test_no_claim_window_is_frozen_at_import_time(queue_db, monkeypatch):
    # the configured minutes reach a claim only by the caller passing them: no default read at import
    monkeypatch.setenv("FLYWHEEL_CLAIM_MINUTES", "3")
    with pytest.raises(TypeError, match="minutes"):
        claim_next(queue_db, LENA, now=T0)
    with pytest.raises(TypeError, match="minutes"):
        undo_last_label(queue_db, LENA, now=T0)
    assert not hasattr(claims, "CLAIM_MINUTES")
