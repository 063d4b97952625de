"""The loop closes on the demo: a lead answers a drift alarm with the library alone, and the alarmed
week's share of traffic beyond tau falls once its far clusters are covered.

The demo's drift run measured every week on a seeded sample of ``max_traces`` per week; the second run
uses the same sample size, so it measures the same traces against the new eval-set version."""

import pytest

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.drift import run as drift
from flywheel.evals.versions import current_version, fold_in, fold_preview, version_rows
from flywheel.labeling.labels import record_label
from flywheel.review.claims import claim_next, skip_claim
from flywheel.review.scrubs import approve_scrub
from flywheel.store.db import open_db

pytestmark = pytest.mark.slow

ANA, RAVI, LENA = User("ana", "lead"), User("ravi", "reviewer"), User("lena", "labeler")
COVER = {"expected": "Answers the question the customer asked.", "pass_criterion": "Addresses the request."}


def latest_alarm(db) -> tuple[dict, dict]:
    run = drift.latest_run(db)
    alarmed = [w for w in drift.run_windows(db, run["id"]) if w["alarm"]]
    assert alarmed, "the demo's drift run raises no alarm to answer"
    return run, alarmed[-1]


def approve_batch(db, batch_id: int) -> None:
    scrubs = db.execute(
        "SELECT s.id FROM scrubs s JOIN batch_items b ON b.trace_id = s.trace_id"
        " WHERE b.batch_id = ? AND s.is_current = 1 AND s.status = 'pending'",
        [batch_id],
    ).fetchall()
    for (scrub_id,) in scrubs:
        approve_scrub(db, RAVI, scrub_id, note="checked: no personal data left")


def label_as_coverage(db, trace_ids: set[str]) -> set[str]:
    """Walk the queue as a labeler: the sent traces are handled well, proposed as coverage; others wait."""
    labeled = set()
    while labeled != trace_ids:
        claim = claim_next(db, LENA, minutes=10)
        if claim is None or claim.trace_id in labeled:
            break
        if claim.trace_id in trace_ids:
            record_label(db, LENA, claim, "not_a_bug", coverage=True, **COVER)
            labeled.add(claim.trace_id)
        else:
            skip_claim(db, LENA, claim)
    return labeled


def fold_coverage(db, trace_ids: set[str]):
    """Fold the coverage rows in; a trace an older demo batch held carries that batch, and that batch's
    other waiting labels are left out with a reason, so the new version adds exactly these rows."""
    marks = ",".join("?" * len(trace_ids))
    batches = [
        r[0]
        for r in db.execute(f"SELECT DISTINCT batch_id FROM labels WHERE trace_id IN ({marks})", [*trace_ids])
    ]
    preview = fold_preview(db, batches, "quality")
    ours = {f"add {t}" for t in trace_ids}
    assert ours <= {i.key for i in preview.foldable}
    others = {
        i.key: "not part of the answer to the drift alarm" for i in preview.foldable if i.key not in ours
    }
    return fold_in(
        db,
        ANA,
        note="coverage for the drift alarm",
        batches=batches,
        fingerprint=preview.fingerprint,
        leave_out=others,
        eval_set="quality",
    )


def test_a_lead_answers_a_drift_alarm_and_the_alarmed_weeks_share_beyond_tau_falls(demo_copy):
    db = open_db(demo_copy)
    run, before = latest_alarm(db)
    week = before["window"]
    batch = drift.send_to_sampling(db, ANA, run["id"], week, clusters_sent=10, per_cluster=10)
    sent = {
        r[0]
        for r in db.execute(
            "SELECT trace_id FROM batch_items WHERE batch_id = ? AND stratum LIKE 'cluster-%'", [batch.id]
        )
    }
    far = {r[0] for r in db.execute("SELECT trace_id FROM drift_members WHERE run_id = ?", [run["id"]])}
    assert sent and sent <= far

    approve_batch(db, batch.id)
    assert label_as_coverage(db, sent) == sent
    old_version = current_version(db, "quality")
    change = fold_coverage(db, sent)
    assert change.version > old_version and change.added == len(sent)
    rows = version_rows(db, change.version)
    assert sent <= {r["trace_id"] for r in rows if r["coverage"]}

    config = load_config().replace(drift_max_traces=run["max_traces"])
    again = drift.run_drift(db, "ana", drift.ALL_WEEKS, config=config)
    after = next(w for w in again.windows if w["window"] == week)
    assert again.eval_version == change.version and after["n"] == before["n"]
    print(
        f"\n{week}: share beyond tau {before['share_beyond']:.3f} -> {after['share_beyond']:.3f}"
        f" (tau {run['tau']:.3f} -> {again.calibration.tau:.3f},"
        f" alarm {before['alarm']} -> {after['alarm']});"
        f" {len(sent)} coverage rows folded in, quality v{old_version} -> v{change.version}, {len(rows)} rows"
    )
    assert after["share_beyond"] < before["share_beyond"]
    # the sent traces are rows now, at distance ~0: the fall must reach traffic that was not sent too
    beyond_before, beyond_after = (round(w["share_beyond"] * w["n"]) for w in (before, after))
    assert beyond_after < beyond_before - len(sent)
