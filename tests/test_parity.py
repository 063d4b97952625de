"""Prod-lab parity: the lab is the live system (from the release decision), production the judge's
estimate on the random part of a sample, and only while the judge is calibrated."""

import json

import pytest

from flywheel.evals.runs import gate, import_results, live_system, record_decision
from flywheel.evals.versions import import_evalset
from flywheel.online.calibration import set_threshold
from flywheel.online.judge import Target, load_judge_settings, make_client, run_judge
from flywheel.online.parity import parity
from flywheel.store.db import write
from tests.fake_anthropic import FakeAnthropic
from tests.judge_data import LEAD, add_traces, label, starter_rubric

SETTINGS = load_judge_settings({}).replace(model="fake", max_retries=0)
ROWS = [f"r-{n:06d}" for n in range(1, 11)]


def _results(passing: int) -> bytes:
    return "\n".join(json.dumps({"row_id": r, "passed": i < passing}) for i, r in enumerate(ROWS)).encode()


def _world(db, labels_agree: bool) -> None:
    """12 traces, 9 randomly sampled; the judge fails 0, 3, 6, 9. Labelers agree with it, or do not.
    Version 1: 10 rows (2 adversarial); 'v1' passes 9, 'v2' passes 10 and ships; 'v3' passes 5."""
    ids = add_traces(db, 12)
    starter_rubric(db)
    with write(db):
        db["sample_batches"].insert({"id": 1, "plan": "{}", "seed": 7, "week": "2026-W45"})
        for n, trace_id in enumerate(ids):
            reasons = ["random"] if n < 9 else ["anomaly:thumbs_down"]
            db["batch_items"].insert(
                {"batch_id": 1, "trace_id": trace_id, "reasons": json.dumps(reasons), "priority": 2}
            )
    for n, trace_id in enumerate(ids):
        fails = n % 3 == 0
        label(db, trace_id, "known" if fails == labels_agree else "not_a_bug")
    with FakeAnthropic() as fake:
        client = make_client(SETTINGS, api_key="k", base_url=fake.url)
        run_judge(db, "ana", Target("week", "2026-W45"), client=client, settings=SETTINGS)
    suite = "\n".join(json.dumps({"input": f"q{n}", "adversarial": n >= 8}) for n in range(10))
    import_evalset(db, LEAD, suite.encode(), "s.jsonl")
    for system, passing in (("v1", 9), ("v2", 10), ("v3", 5)):
        import_results(db, LEAD, 1, system, _results(passing), f"{system}.jsonl")


def test_parity_compares_the_live_system_with_a_calibrated_judge(db):
    _world(db, labels_agree=True)
    record_decision(db, LEAD, gate(db, 1, "v1", "v2", adversarial_min=0.5, default_adversarial_pct=90))
    result = parity(db)
    assert result["assessable"] and result["lab"]["system"] == "v2" and result["lab"]["rate"] == 1.0
    (week,) = result["weeks"]
    # random part: traces 0..8, the judge fails 0, 3, 6 -> 6/9
    assert (week["week"], week["n"], week["rate"]) == ("2026-W45", 9, pytest.approx(6 / 9))
    assert week["gap"] == pytest.approx(6 / 9 - 1.0) and week["flagged"] is True
    set_threshold(db, LEAD, "parity_gap", 0.4)
    assert parity(db)["weeks"][0]["flagged"] is False


def test_after_a_blocked_challenger_the_lab_is_still_the_old_live_system(db):
    _world(db, labels_agree=True)
    record_decision(db, LEAD, gate(db, 1, "v1", "v2", adversarial_min=0.5, default_adversarial_pct=90))
    blocked = gate(db, 1, "v2", "v3", adversarial_min=0.5, default_adversarial_pct=90)
    assert blocked["verdict"] == "block"
    record_decision(db, LEAD, blocked)  # v3's results were imported last: the old parity measured them
    assert live_system(db)["system"] == "v2"
    assert parity(db)["lab"]["system"] == "v2"


def test_an_uncalibrated_judge_gives_no_figure_and_no_alert(db):
    _world(db, labels_agree=False)  # the labelers contradict the judge: kappa below zero
    record_decision(db, LEAD, gate(db, 1, "v1", "v2", adversarial_min=0.5, default_adversarial_pct=90))
    result = parity(db)
    assert not result["assessable"] and "not calibrated" in result["why"] and "kappa -" in result["why"]
    assert result["weeks"] == [] and result["lab"]["system"] == "v2"


def test_without_a_shipped_decision_there_is_no_lab_figure(db):
    _world(db, labels_agree=True)
    result = parity(db)
    assert result["lab"] is None and not result["assessable"]
    assert "no release decision has shipped" in result["why"]
    assert all(not week["flagged"] and week["gap"] is None for week in result["weeks"])
