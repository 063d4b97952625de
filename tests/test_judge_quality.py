import math

import pytest

from flywheel.auth import User
from flywheel.errors import BadInput, PermissionDenied
from flywheel.online.calibration import (
    adopt_judge,
    calibrate,
    calibration_of,
    judge_trusted,
    set_threshold,
    threshold,
)
from flywheel.online.judge import Target, load_judge_settings, make_client, run_judge
from flywheel.online.rubrics import STARTER_RUBRIC, Metric, Rubric, rubric_versions, save_rubric
from flywheel.online.signal_alerts import (
    binomial_band,
    current_alerts,
    individuals_band,
    refresh_signal_rollup,
    signal_counts,
    signal_series,
)
from flywheel.sampling.plans import DEMO_PLAN, save_plan, saved_plan
from flywheel.store.db import write
from tests.fake_anthropic import FakeAnthropic
from tests.judge_data import LEAD, add_traces, label, starter_rubric

SETTINGS = load_judge_settings({}).replace(model="fake", max_retries=0)


WEEK = Target("week", "2026-W45")


def _grade(db, target=WEEK):
    with FakeAnthropic() as fake:
        return run_judge(
            db, "ana", target, client=make_client(SETTINGS, api_key="k", base_url=fake.url), settings=SETTINGS
        )


def test_calibration_metrics_against_hand_computed_values():
    pairs = [("fail", "fail")] * 8 + [("fail", "pass")] * 2 + [("pass", "fail")] * 4 + [("pass", "pass")] * 36
    result = calibration_of(pairs)
    assert result.confusion == {"tp": 8, "fn": 2, "fp": 4, "tn": 36}
    assert (result.tpr, result.tnr, result.accuracy) == (0.8, 0.9, 0.88)
    # chance agreement (10*12 + 40*38) / 2500 = .656; kappa = (.88 - .656) / .344
    assert result.kappa == pytest.approx(0.651163, abs=1e-6)
    assert (result.base_rate, result.constant_accuracy, result.constant_kappa) == (0.2, 0.8, 0.0)


@pytest.fixture
def calibrated(db):
    """12 traces; the judge fails 0, 3, 6, 9; humans fail 0, 3, 6, 1; trace 2 is a few-shot example."""
    add_traces(db, 12)
    for n in range(12):
        label(db, f"t-{n:04d}", "known" if n in (0, 3, 6, 1) else "not_a_bug")
    label(db, "t-0005", "new", labeler="tom")  # a tie between two labelers counts nowhere
    example = Rubric.from_body("support-reply", {**STARTER_RUBRIC.as_body(), "examples": ["t-0002"]})
    save_rubric(db, LEAD, example)
    _grade(db)
    return db


def test_calibration_from_the_database_leaves_out_few_shot_examples_and_ties(calibrated):
    result = calibrate(calibrated)
    assert result.rubric == "support-reply v1" and result.excluded_examples == 1
    assert result.n == 10 and result.confusion == {"tp": 3, "fn": 1, "fp": 1, "tn": 5}
    # p_o = 8/10; chance = (4*4 + 6*6)/100 = .52; kappa = .28/.48
    assert result.kappa == pytest.approx(0.28 / 0.48)
    assert result.base_rate == 0.4 and result.constant_accuracy == 0.6 and result.constant_kappa == 0
    assert {(d["trace_id"], d["human"], d["judge"]) for d in result.disagreements} == {
        ("t-0001", "fail", "pass"),
        ("t-0009", "pass", "fail"),
    }


def test_the_judge_feeds_strata_only_once_its_agreement_passes_the_threshold(calibrated):
    db = calibrated
    save_plan(db, DEMO_PLAN, actor="ana")
    assert threshold(db, "kappa_threshold") == 0.6
    assert judge_trusted(db)[0] is False
    with pytest.raises(BadInput, match="not calibrated well enough"):
        adopt_judge(db, LEAD, "weekly")
    set_threshold(db, LEAD, "kappa_threshold", 0.5)
    set_threshold(db, LEAD, "borderline_low", 0.3)
    with pytest.raises(PermissionDenied):
        set_threshold(db, User("lena", "labeler"), "kappa_threshold", 0.1)
    with pytest.raises(BadInput, match=r"expected a number in 0\.0\.\.1\.0"):
        set_threshold(db, LEAD, "parity_gap", 3)
    result = adopt_judge(db, LEAD, "weekly", quota=5)
    assert result["scores_written"] == 12
    scores = dict(db.execute("SELECT trace_id, judge_score FROM traces"))
    assert scores["t-0000"] == 0.2 and scores["t-0001"] == 0.9
    band = [s for s in saved_plan(db, "weekly").strata if s.key == "judge_band"]
    assert [(s.low, s.high, s.quota) for s in band] == [(0.3, 0.7, 5)]
    assert db.execute("SELECT count(*) FROM audit_log WHERE action = 'adopt_judge'").fetchone()[0] == 1


def test_rubrics_are_versioned_and_an_unchanged_save_keeps_the_version(db):
    first = starter_rubric(db)
    assert starter_rubric(db).version == 1
    changed = Rubric(
        "support-reply", (Metric("tone", {"excellent": "warm", "adequate": "flat", "poor": "rude"}),)
    )
    second = save_rubric(db, LEAD, changed)
    assert (first.version, second.version) == (1, 2)
    assert [r.version for r in rubric_versions(db, "support-reply")] == [2, 1]
    with pytest.raises(BadInput, match="levels"):
        Metric("tone", {"good": "x"})
    with pytest.raises(BadInput, match="no human label"):
        save_rubric(db, LEAD, Rubric("x", changed.metrics, examples=("t-9999",)))
    with pytest.raises(PermissionDenied):
        save_rubric(db, User("lena", "labeler"), changed)


def test_control_bands_on_synthetic_series():
    centre, low, high = binomial_band([(100, 1000)] * 8, 1000)
    # p = .1, 3 * sqrt(.1 * .9 / 1000) = .028460
    assert (centre, low, high) == (0.1, pytest.approx(0.071540, abs=1e-6), pytest.approx(0.128460, abs=1e-6))
    assert binomial_band([(100, 1000)], 250)[2] == pytest.approx(0.1 + 3 * math.sqrt(0.09 / 250))
    centre, low, high = individuals_band([10, 12, 14, 12])
    # mean 12, sample sd sqrt(8/3) = 1.63299
    assert (centre, low, high) == (
        12,
        pytest.approx(12 - 4.89898, abs=1e-5),
        pytest.approx(16.89898, abs=1e-5),
    )


def _weekly_traffic(db, weeks: int, spike: float) -> None:
    """``weeks`` weeks of 500 traces, 4% thumbs down, with the last week at ``spike``."""
    rows = []
    for w in range(weeks):
        rate = spike if w == weeks - 1 else 0.04
        for i in range(500):
            rows.append(
                {
                    "trace_id": f"w{w}-{i}",
                    "ts": f"2026-{w + 1:02d}-05T10:00:00.000Z",
                    "week": f"2026-W{w + 10:02d}",
                    "input": "x",
                    "content_hash": f"{w}{i}",
                    "cohort": "free",
                    "thumbs": "down" if i < rate * 500 else None,
                    "latency_ms": 1000 + i,
                    "cost_usd": 0.001,
                }
            )
    with write(db):
        db["traces"].insert_all(rows)


def test_a_rate_leaving_its_band_is_an_alert_and_a_steady_one_is_not(db):
    _weekly_traffic(db, 10, spike=0.12)
    alerts = current_alerts(db)
    assert {(a["cohort"], a["signal"], a["direction"]) for a in alerts} == {
        ("(all)", "thumbs down", "above"),
        ("free", "thumbs down", "above"),
    }
    assert alerts[0]["value"] == 0.12 and alerts[0]["centre"] == 0.04
    assert sorted(signal_series(db, last=3)["period"].unique()) == ["2026-W17", "2026-W18", "2026-W19"]
    series = signal_series(db)
    early = series[series["period"] == "2026-W12"]
    assert early["alert"].sum() == 0 and early["high"].isna().all()  # fewer than 4 weeks of history


@pytest.mark.parametrize("period", ["week", "day"])
def test_signal_counts_kept_incrementally_equal_a_fresh_count(db, period):
    _weekly_traffic(db, 6, spike=0.04)
    first = signal_counts(db, period)
    assert {r["cohort"] for r in first} == {"(all)", "free"} and len(first) == 12
    assert refresh_signal_rollup(db, period) == 0  # nothing new: nothing recomputed
    late = [
        {
            "trace_id": f"late-{i}",
            "ts": ts,
            "week": week,
            "input": "x",
            "content_hash": f"late{i}",
            "cohort": "smb",
            "thumbs": "down",
            "latency_ms": 9000 + i,
            "cost_usd": 0.5,
        }
        for i, (ts, week) in enumerate(
            [("2026-02-05T11:00:00.000Z", "2026-W11")] * 3 + [("2026-09-01T08:00:00.000Z", "2026-W36")]
        )
    ]
    with write(db):
        db["traces"].insert_all(late)
    assert refresh_signal_rollup(db, period) == 2  # the old period that gained traces, and the new one
    kept = signal_counts(db, period)
    with write(db):
        db.execute("DELETE FROM rollup_state WHERE name LIKE 'signals:%'")
        db.execute("UPDATE signal_rollup SET n = -1")
    assert signal_counts(db, period) == kept  # a rebuild from scratch counts the same
    row = next(r for r in kept if r["cohort"] == "smb" and r["n"] == 3)
    assert (row["s1"], row["p95"], row["cost"]) == (3, 9002, 0.5)
    assert len(signal_counts(db, period, last=2)) == 4  # the new period: all, smb; the one before: all, free


def test_a_steady_series_raises_no_alert(db):
    _weekly_traffic(db, 10, spike=0.04)
    assert current_alerts(db) == []
