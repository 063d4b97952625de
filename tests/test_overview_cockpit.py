"""The lead's Overview: the divergence verdict (a decision table), the figures behind it on hand-built
databases, and the page that shows them."""

import json

import pytest
from overview_support import hand_built
from streamlit.testing.v1 import AppTest

from flywheel import overview
from flywheel.store.db import write


def weeks(count: int, n: int = 1000, thumbs=None, escalated=None, judge=None) -> list[dict]:
    """``count`` production weeks, oldest first; per-week lists override the steady defaults."""
    return [
        {
            "week": f"2026-W{10 + i:02d}",
            "n": n,
            "thumbs_down": (thumbs or [40] * count)[i],
            "escalated": (escalated or [20] * count)[i],
            "judge_n": 200,
            "judge_mean": (judge or [0.8] * count)[i],
        }
        for i in range(count)
    ]


def drift(shares: list[float], alarms: list[bool] | None = None) -> list[dict]:
    return [
        {"week": f"2026-W{10 + i:02d}", "share": s, "alarm": (alarms or [False] * len(shares))[i]}
        for i, s in enumerate(shares)
    ]


def suite(*rates: float, version: int = 2) -> list[dict]:
    return [
        {"week": f"2026-W{10 + 3 * i:02d}", "version": version, "rate": r, "n": 100}
        for i, r in enumerate(rates)
    ]


STEADY_DRIFT = drift([0.10] * 10)
RISING_DRIFT = drift([0.10] * 6 + [0.14, 0.22, 0.26, 0.30], [False] * 7 + [True] * 3)
RISING_THUMBS = weeks(10, thumbs=[40] * 6 + [60, 70, 80, 90])
FALLING_JUDGE = weeks(10, judge=[0.8] * 6 + [0.7] * 4)

CASES = [
    # (case, version, suite, weeks, drift, status, alarm, words that must be said)
    ("healthy", 2, suite(0.91, 0.91), weeks(10), STEADY_DRIFT, "healthy", False, "keeps up"),
    (
        "pass flat, drift rises",
        2,
        suite(0.91, 0.91),
        weeks(10),
        RISING_DRIFT,
        "diverging",
        True,
        "beyond τ rose",
    ),
    (
        "pass flat, thumbs rise",
        2,
        suite(0.91, 0.91),
        RISING_THUMBS,
        STEADY_DRIFT,
        "diverging",
        True,
        "thumbs-down",
    ),
    ("pass flat, judge falls", 2, suite(0.91, 0.91), FALLING_JUDGE, STEADY_DRIFT, "diverging", True, "judge"),
    ("one run, drift rises", 2, suite(0.91), weeks(10), RISING_DRIFT, "diverging", True, "fallen behind"),
    ("both fall", 2, suite(0.91, 0.80), RISING_THUMBS, STEADY_DRIFT, "both_falling", True, "fell from"),
    ("suite falls alone", 2, suite(0.91, 0.80), weeks(10), STEADY_DRIFT, "suite_falling", True, "harder"),
    ("no eval set", None, [], weeks(10), STEADY_DRIFT, "no_eval_set", False, "no eval set"),
    ("no results", 2, [], weeks(10), STEADY_DRIFT, "no_results", False, "no graded results"),
    ("results of another version only", 3, suite(0.9), weeks(10), STEADY_DRIFT, "no_results", False, "v3"),
    ("no drift runs", 2, suite(0.91, 0.91), weeks(10), [], "incomplete", False, "no drift run"),
    ("no drift runs, thumbs rise", 2, suite(0.91, 0.91), RISING_THUMBS, [], "diverging", True, "thumbs-down"),
    ("drift only in old weeks", 2, suite(0.91), weeks(10), drift([0.1] * 5), "incomplete", False, "recent"),
    ("too few weeks", 2, suite(0.91, 0.91), weeks(5), RISING_DRIFT, "too_few_weeks", False, "5 week(s)"),
    ("no weeks", 2, suite(0.91), [], [], "too_few_weeks", False, "0 week(s)"),
    (
        "small thumbs rise is noise",
        2,
        suite(0.9, 0.9),
        weeks(10, n=50, thumbs=[2] * 6 + [3] * 4),
        STEADY_DRIFT,
        "healthy",
        False,
        "steady",
    ),
]


@pytest.mark.parametrize(
    "version, points, production, windows, status, alarm, words",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_divergence_verdict(version, points, production, windows, status, alarm, words):
    verdict = overview.divergence(version, points, production, windows)
    assert (verdict["status"], verdict["alarm"]) == (status, alarm), verdict["words"]
    assert words in verdict["words"]


def test_a_diverging_verdict_names_every_measure_that_moved_with_its_numbers():
    rising = weeks(10, thumbs=[40] * 6 + [60, 70, 80, 90], escalated=[20] * 6 + [40] * 4)
    verdict = overview.divergence(2, suite(0.91, 0.91), rising, RISING_DRIFT)
    assert len(verdict["moved"]) == 3
    assert "from 10% to 23%" in verdict["words"] and "alarm in 3 of 4 recent weeks" in verdict["words"]
    assert "thumbs-down rose from 4.0% to 7.5%" in verdict["words"]
    assert "escalation rose from 2.0% to 4.0%" in verdict["words"]
    assert "pass rate 91% on v2" in verdict["words"] and "2026-W16 to 2026-W19" in verdict["words"]


# Hand-built databases ---------------------------------------------------------------------------------


def test_the_health_figures_follow_a_hand_built_database(tmp_path):
    _, db = hand_built(tmp_path, thumbs_late=0.20)
    health = overview.flywheel_health(db)
    assert (health["system"], health["version"], health["eval_set"]) == ("bot-b", 1, "default")
    (point,) = health["suite"]
    assert (point["passed"], point["n"], point["rate"], point["eval_set"]) == (9, 10, 0.9, "default")
    assert point["low"] < 0.9 < point["high"]
    # the frozen set is read apart: its 5 of 5 never counts as the refreshed set's pass rate
    assert [(p["version"], p["passed"], p["n"]) for p in health["other_sets"]["regression"]] == [(2, 5, 5)]
    assert len(health["weeks"]) == 10 and [w["n"] for w in health["weeks"]] == [100] * 10
    assert [w["thumbs_down"] for w in health["weeks"]] == [4] * 6 + [20] * 4
    assert health["drift"] == []
    verdict = health["verdict"]
    assert verdict["status"] == "diverging" and "thumbs-down rose from 4.0% to 20%" in verdict["words"]


def test_a_drift_run_on_the_hand_built_database_shows_the_new_traffic(tmp_path):
    _, db = hand_built(tmp_path, thumbs_late=0.04, novel_late=True, drift=True)
    health = overview.flywheel_health(db)
    shares = [round(d["share"], 2) for d in health["drift"]]
    assert len(shares) == 10 and max(shares[:6]) < 0.1 and min(shares[6:]) >= 0.4, shares
    verdict = health["verdict"]
    assert verdict["status"] == "diverging" and verdict["moved"][0].startswith(
        "the share of traffic beyond τ"
    )
    assert "thumbs-down" not in verdict["words"], "thumbs-down did not move"


def _page(path, monkeypatch, user="ana") -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DB", str(path))
    at = AppTest.from_file("../app.py", default_timeout=90)
    at.session_state["user_name"] = user
    at.run()
    at.switch_page("pages/overview.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _health_spec(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def _trace(spec: dict, name: str) -> dict:
    return next(t for t in spec["data"] if t.get("name") == name)


def test_the_overview_shows_the_divergence_on_a_hand_built_database(tmp_path, monkeypatch):
    path, db = hand_built(tmp_path, thumbs_late=0.20, novel_late=True, drift=True)
    db.close()
    at = _page(path, monkeypatch)
    (alarm,) = at.warning
    assert "fallen behind production" in alarm.value
    assert "beyond τ rose" in alarm.value and "thumbs\\-down rose from 4\\.0% to 20%" in alarm.value
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pass rate, default v1"] == "90.0%"
    assert metrics["Thumbs-down, last 4 weeks"] == "20.0%"
    assert {m.label: m.delta for m in at.metric}["Thumbs-down, last 4 weeks"] == "+16.0 pts"
    assert metrics["Beyond τ, 2026-W19"] == "50.0%"
    assert any(c.value == "regression v2\\: 100\\.0% \\(5 of 5\\)" for c in at.caption)
    spec = _health_spec(at)
    assert _trace(spec, "thumbs-down")["y"] == [0.04] * 6 + [0.2] * 4
    drift = _trace(spec, "share beyond τ (drift)")["y"]
    assert max(drift[:6]) < 0.1 and min(drift[6:]) >= 0.4
    assert len(_trace(spec, "drift alarm: beyond τ significantly above the reference")["y"]) >= 3
    held = _trace(spec, "pass rate, default (bot-b)")
    assert set(held["y"]) == {0.9} and held["x"][-1] == "2026-05-10", (
        "the rate is not held to the window's end"
    )
    assert _trace(spec, "pass rate, regression (bot-b)")["line"]["dash"] == "dot"
    assert any(t.get("name", "").endswith("95% interval") for t in spec["data"])
    waiting = {m.label for m in at.metric}
    assert {"Traces awaiting scrub review", "Labeled failures awaiting fold-in"} <= waiting
    assert {link.proto.page for link in at.get("page_link")} >= {
        "review",
        "label",
        "evalsets",
        "cycle",
        "gate",
    }


def test_the_overview_reads_healthy_when_production_and_drift_hold(tmp_path, monkeypatch):
    path, db = hand_built(tmp_path, thumbs_late=0.04, drift=True)
    db.close()
    at = _page(path, monkeypatch)
    assert not at.error and not at.warning
    (good,) = at.success
    assert "The suite keeps up" in good.value and "drift and production signals steady" in good.value
    deltas = {m.label: m.delta for m in at.metric}
    assert deltas["Thumbs-down, last 4 weeks"] == deltas["Escalation, last 4 weeks"] == "no change"
    spec = _health_spec(at)
    assert _trace(spec, "thumbs-down")["y"] == [0.04] * 10
    assert max(_trace(spec, "share beyond τ (drift)")["y"]) < 0.1
    assert not [t for t in spec["data"] if t.get("name", "").startswith("drift alarm")]


def test_the_overview_asks_for_a_drift_run_before_calling_the_suite_current(tmp_path, monkeypatch):
    path, db = hand_built(tmp_path, thumbs_late=0.04)
    db.close()
    at = _page(path, monkeypatch)
    assert not at.error and not at.warning and not at.success
    (note,) = [i for i in at.info if "run drift" in i.value]
    assert "No production signal got worse" in note.value


@pytest.mark.parametrize(
    "user, extra", [("lena", set()), ("ravi", {"Scrubs awaiting review", "Scrubs decided"})]
)
def test_labelers_and_reviewers_see_their_queue_not_the_lead_cockpit(tmp_path, monkeypatch, user, extra):
    path, db = hand_built(tmp_path, thumbs_late=0.20)
    db.close()
    at = _page(path, monkeypatch, user)
    assert not at.error and not at.warning and any(s.value == "Your queue" for s in at.subheader)
    shown = {m.label for m in at.metric}
    assert {"Traces awaiting labels", "Labeled by you"} | extra <= shown
    assert "Pass rate, default v1" not in shown and "Signal alerts, last four weeks" not in {
        s.value for s in at.subheader
    }


def test_a_backlog_without_recorded_times_still_draws(tmp_path, monkeypatch):
    path, db = hand_built(tmp_path, thumbs_late=0.04)
    with write(db):
        db.execute(
            "INSERT INTO scrubs (trace_id, input, status, is_current)"
            " VALUES ('t-00-000', '[PERSON]', 'pending', 1)"
        )
    db.close()
    at = _page(path, monkeypatch)
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Traces awaiting scrub review"] == "1"
    assert "oldest scrub made: not recorded" in [c.value for c in at.caption]
