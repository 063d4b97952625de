"""Declared signals in signal alerts and A/B: an event signal with its time window alarms when its rate
leaves the band and decides an experiment; events outside the window do not count; a signal whose data
is absent says so and raises nothing."""

import datetime as dt
import random

import pytest
from conftest import jsonl

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.ingest.run import ingest_files
from flywheel.online import experiments, signal_alerts
from flywheel.store.db import open_db

LEAD = User("ana", "lead")
START = dt.date(2026, 3, 2)  # a Monday


def traces(weeks: int, per_week: int, rate, after_s=(5, 25), arm=None) -> list[dict]:
    """``per_week`` traces a week from 2026-03-02; a share ``rate(week, arm)`` rephrased soon after."""
    rng = random.Random(9)
    out = []
    for week in range(weeks):
        for i in range(per_week):
            release = arm(i) if arm else "v1"
            signals = {"thumbs": "up"}
            if rng.random() < rate(week, release):
                signals["rephrased_after_s"] = rng.choice(after_s)
            elif rng.random() < 0.3:
                signals["rephrased_after_s"] = 400  # the user came back much later: not a retry
            day = START + dt.timedelta(days=week * 7 + i % 7)
            out.append(
                {
                    "trace_id": f"w{week:02d}-{i:04d}",
                    "timestamp": f"{day.isoformat()}T10:00:00Z",
                    "input": f"question {i}",
                    "cohort": "smb",
                    "signals": signals,
                    "metadata": {"release": release, "user": f"u{i % 150}"},
                }
            )
    return out


def load(tmp_path, items):
    db = open_db(tmp_path / "a.db")
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)], config=load_config())
    return db


def test_an_event_signal_alerts_when_its_rate_leaves_the_band(tmp_path):
    db = load(tmp_path, traces(10, 200, lambda week, _: 0.25 if week == 9 else 0.08))
    alerts = signal_alerts.current_alerts(db)
    mine = [a for a in alerts if a["signal"] == "rephrased within 30 s" and a["cohort"] == "(all)"]
    assert len(mine) == 1 and mine[0]["direction"] == "above"
    assert mine[0]["n"] == 200  # an event is rated over every trace of the week


def test_events_outside_the_window_do_not_count_and_raise_no_alert(tmp_path):
    # the spike is of rephrases 31-60 s after the reply: outside the declared 30 s
    db = load(tmp_path, traces(10, 200, lambda week, _: 0.25 if week == 9 else 0.08, after_s=(31, 60)))
    series = signal_alerts.signal_series(db)
    mine = series[(series["signal"] == "rephrased within 30 s") & (series["cohort"] == "(all)")]
    assert len(mine) == 10 and (mine["value"] == 0).all() and not mine["alert"].any()


def test_a_signal_without_data_is_absent_from_the_charts_and_says_so(tmp_path):
    db = load(tmp_path, traces(10, 50, lambda week, _: 0.1))
    series = signal_alerts.signal_series(db)
    assert "star rating 1-2" not in set(series["signal"])
    status = {s["signal"]: s for s in signal_alerts.declared_status(db)}
    assert status["low_stars"]["status"] == "no data"
    assert status["rephrase_retry"]["status"] == "ok"


def ab_db(tmp_path, worse: float):
    items = traces(3, 1200, lambda week, arm: worse if arm == "v2" else 0.10, arm=lambda i: f"v{1 + i % 2}")
    return load(tmp_path, items)


def declare(db, metric: str):
    return experiments.declare_experiment(
        db,
        LEAD,
        f"rephrase {metric}",
        "release",
        "v1",
        "v2",
        "user",
        0.5,
        metric,
        min_effect=0.05,
        start="2026-03-01",
    )


def test_an_experiment_decided_on_an_event_signal(tmp_path):
    db = ab_db(tmp_path, worse=0.2)
    declare(db, "rephrase_retry")
    verdict = experiments.experiment_verdict(db, LEAD, "rephrase rephrase_retry")
    assert verdict["withheld"] == [] and verdict["verdict"] == "treatment worse"
    primary = verdict["metrics"][0]
    assert primary["metric"] == "rephrase_retry" and primary["control_rate"] == pytest.approx(0.1, abs=0.02)
    rates = experiments.arm_rates(db, LEAD, "release", ("v1", "v2"), weeks=(), hours=24 * 30)
    assert {r["arm"] for r in rates if r["metric"] == "rephrase_retry"} == {"v1", "v2"}


def test_an_experiment_with_no_difference_is_not_called(tmp_path):
    db = ab_db(tmp_path, worse=0.10)
    declare(db, "rephrase_retry")
    verdict = experiments.experiment_verdict(db, LEAD, "rephrase rephrase_retry")
    assert verdict["verdict"] in ("no significant difference",) or verdict["verdict"].startswith(
        "under-powered"
    )


def test_an_experiment_on_a_signal_with_no_data_is_withheld_saying_why(tmp_path):
    db = ab_db(tmp_path, worse=0.2)
    declare(db, "low_stars")
    verdict = experiments.experiment_verdict(db, LEAD, "rephrase low_stars")
    assert verdict["verdict"] is None
    assert any("'low_stars' has no trials" in w for w in verdict["withheld"])


def test_an_undeclared_metric_is_refused(tmp_path):
    db = ab_db(tmp_path, worse=0.2)
    with pytest.raises(Exception, match="primary metric 'edits'"):
        declare(db, "edits")
