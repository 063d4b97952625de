"""Coverage rows: a trace the model handled well, proposed by a labeler, folded in like a failure."""

import json
from datetime import UTC, datetime

import pytest
from evalset_helpers import LEAD, add_traces, label, results_file, undo

from flywheel.auth import User
from flywheel.errors import BadInput
from flywheel.evals.exports import export_text
from flywheel.evals.runs import import_results, pass_rate_slices, pass_rates
from flywheel.evals.versions import disagreements, fold_in, fold_preview, import_evalset, version_rows
from flywheel.labeling.labels import claim_next, label_card, record_label
from flywheel.review import label_queue
from flywheel.store.db import write

LENA, TOM = User("lena", "labeler"), User("tom", "labeler")
COVER = {"expected": "Gives the delivery window.", "pass_criterion": "States 3-5 business days."}


def cover(db, trace_id, labeler, **extra):
    """A not-a-bug label that proposes the trace as coverage."""
    return label(db, trace_id, labeler, kind="not_a_bug", coverage=1, **COVER, **extra)


def test_a_coverage_label_folds_in_as_a_row_with_the_same_preview_and_provenance(db):
    ids = add_traces(db, 3)
    cover(db, ids[0], "lena", pass_check=json.dumps({"type": "regex", "value": "\\d+"}))
    label(db, ids[1], "lena")  # a failure
    label(db, ids[2], "lena", kind="not_a_bug")  # handled well, not proposed: no row
    preview = fold_preview(db)
    assert [(i.key, i.action, i.coverage, i.foldable) for i in preview.items] == [
        (f"add {ids[0]}", "add", True, True),
        (f"add {ids[1]}", "add", False, True),
    ]
    item = preview.as_json()["items"][0]
    assert (item["expected"], item["criterion"], item["code"]) == (
        COVER["expected"],
        COVER["pass_criterion"],
        None,
    )
    assert (item["labeled_by"], item["agreement"], item["check"]) == ("lena", "1 labeler", "regex: \\d+")
    change = fold_in(db, LEAD, fingerprint=preview.fingerprint)
    assert change.as_json() == {"version": 1, "added": 2, "retired": 0, "carried": 0, "rows": 2}
    rows = {r["trace_id"]: r for r in version_rows(db, 1)}
    covered, failed = rows[ids[0]], rows[ids[1]]
    assert (covered["coverage"], covered["source"], covered["code"]) == (1, "trace", None)
    assert covered["scrub_id"] is not None and covered["input"] == "[PERSON] asks question 1"
    assert json.loads(covered["tags"]) == ["label:coverage"]
    assert failed["coverage"] is None and failed["code"] == "WRONG_POLICY"
    plain = {r["trace_id"]: r for r in map(json.loads, export_text(db, 1, "jsonl").splitlines())}
    assert (plain[ids[0]]["coverage"], plain[ids[1]]["coverage"]) == (True, False)
    cases = [json.loads(line) for line in export_text(db, 1, "promptfoo").splitlines()]
    assert cases[0]["description"] == f"{covered['id']} coverage"
    assert cases[0]["metadata"]["coverage"] is True
    assert cases[0]["assert"][1] == {"type": "regex", "value": "\\d+"}


# the labels on one trace -> who the coverage row is labeled by (None: no row), the labelers disagree
AGREEMENT = [
    ([("lena", "cover")], "lena", False),
    ([("lena", "not_a_bug")], None, False),
    ([("lena", "cover"), ("tom", "not_a_bug")], "lena", False),  # both say handled well
    ([("lena", "cover"), ("tom", "cover")], "lena,tom", False),
    ([("lena", "cover"), ("tom", "known")], None, True),  # a failure against handled well
    ([("lena", "not_a_bug"), ("tom", "not_a_bug")], None, False),
]


@pytest.mark.parametrize(("labels", "labeled_by", "disputed"), AGREEMENT)
def test_whether_labels_make_a_coverage_row(db, labels, labeled_by, disputed):
    (trace_id,) = add_traces(db, 1)
    for labeler, kind in labels:
        if kind == "cover":
            cover(db, trace_id, labeler)
        else:
            label(db, trace_id, labeler, kind=kind)
    adds = [i for i in fold_preview(db).items if i.action == "add" and i.foldable]
    assert [(i.labeled_by, i.coverage) for i in adds] == ([(labeled_by, True)] if labeled_by else [])
    assert bool(disagreements(db)) is disputed


def test_undoing_the_coverage_proposal_withdraws_its_row_with_the_reason(db):
    (trace_id,) = add_traces(db, 1)
    cover_id = cover(db, trace_id, "lena")
    label(db, trace_id, "tom", kind="not_a_bug")
    fold_in(db, LEAD)
    undo(db, cover_id)
    (item,) = fold_preview(db).items
    assert (item.action, item.reason, item.coverage) == (
        "withdraw",
        "its labels now say not a bug, and none proposes it as coverage",
        True,
    )
    assert fold_in(db, LEAD).as_json()["rows"] == 0


def test_pass_rates_slice_coverage_rows_apart(db):
    import_evalset(db, LEAD, b'{"input": "Starter?"}\n', "suite.jsonl")
    ids = add_traces(db, 3)
    cover(db, ids[0], "lena")
    cover(db, ids[1], "lena")
    label(db, ids[2], "lena")
    version = fold_in(db, LEAD).version
    data = results_file(None, {"r-000001": True, "r-000002": True, "r-000003": False, "r-000004": False})
    import_results(db, LEAD, version, "bot", data, "r.jsonl")
    slices = {s["slice"]: (s["rows"], s["passed"], s["total"]) for s in pass_rate_slices(db, version, "bot")}
    assert slices == {
        "all rows": (4, 2, 4),
        "starter rows": (1, 1, 1),
        "failure rows": (1, 0, 1),
        "coverage rows": (2, 1, 2),
        "adversarial rows": (0, 0, 0),
        "code-checked rows": (0, 0, 0),
    }
    (summary,) = [r for r in pass_rates(db) if r["version"] == version]
    assert (summary["eval_set"], summary["coverage"]["passed"], summary["coverage"]["total"]) == (
        "default",
        1,
        2,
    )


def _queue(db, reasons: list[str]):
    ids = add_traces(db, len(reasons))
    with write(db):
        db["sample_batches"].insert({"id": 1, "plan": "{}", "seed": 7, "week": "2026-W18"})
        db["batch_items"].insert_all(
            {"batch_id": 1, "trace_id": t, "reasons": json.dumps([r]), "priority": 1}
            for t, r in zip(ids, reasons, strict=True)
        )
        label_queue.enqueue_approved(db)
    return ids


def test_a_trace_drift_sent_is_proposed_as_coverage_and_a_control_is_not(db):
    ids = _queue(db, ["drift:cluster-2", "random:drift-control", "anomaly: thumbs_down"])
    proposed = {}
    for _ in ids:
        claim = claim_next(db, LENA, minutes=10)
        proposed[claim.trace_id] = label_card(db, LENA, claim)["proposed"]
        record_label(db, LENA, claim, "not_a_bug")
    assert proposed == {ids[0]: "coverage", ids[1]: None, ids[2]: None}


# record_label arguments -> the refusal's words (None: accepted)
RECORD = [
    ({"kind": "not_a_bug", "coverage": True, **COVER}, None),
    ({"kind": "not_a_bug", "coverage": True, **COVER, "pass_check": "contains: days"}, None),
    ({"kind": "not_a_bug", "coverage": True, "expected": "Gives the window."}, "coverage row needs the pass"),
    ({"kind": "not_a_bug", "coverage": True}, "coverage row needs the expected"),
    ({"kind": "known", "code": "WRONG_POLICY", "coverage": True, **COVER}, "not for a known failure"),
    ({"kind": "not_a_bug", "pass_check": "is-json"}, "a code check belongs to an eval row"),
    ({"kind": "not_a_bug", "coverage": True, **COVER, "pass_check": "regex: ("}, "does not compile"),
]


@pytest.mark.parametrize(("arguments", "refused"), RECORD)
def test_what_a_coverage_label_needs(db, arguments, refused):
    _queue(db, ["drift:cluster-1"])
    claim = claim_next(db, LENA, now=datetime.now(UTC), minutes=10)
    if refused is None:
        label_id = record_label(db, LENA, claim, **arguments)
        stored = db["labels"].get(label_id)
        assert (stored["coverage"], stored["kind"]) == (1, "not_a_bug")
        assert (stored["pass_check"] is None) is ("pass_check" not in arguments)
        return
    with pytest.raises(BadInput) as error:
        record_label(db, LENA, claim, **arguments)
    assert refused in str(error.value)
    assert db.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
