"""The lead's Overview: the divergence verdict (a decision table), the figures behind it on hand-built
databases, and the page that shows them."""

import json
from datetime import datetime, timedelta

import pytest
from conftest import jsonl
from streamlit.testing.v1 import AppTest

from flywheel import overview
from flywheel.auth import User
from flywheel.config import load_config
from flywheel.evals.runs import gate, import_results, record_decision
from flywheel.evals.versions import import_evalset
from flywheel.ingest.run import ingest_files
from flywheel.store.db import open_db

LEAD = User("ana", "lead")
MONDAY = datetime(2026, 3, 2, 10)


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


def _traces(tmp_path, weeks_count: int, thumbs_late: float) -> list[dict]:
    """100 traces a week from 2026-03-02 (a Monday); the last four weeks get ``thumbs_late`` thumbs-down."""
    items = []
    for week in range(weeks_count):
        late = week >= weeks_count - 4
        for i in range(100):
            share = thumbs_late if late else 0.04
            items.append(
                {
                    "trace_id": f"t-{week:02d}-{i:03d}",
                    "timestamp": (MONDAY + timedelta(weeks=week, minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "input": f"question {i} of week {week}",
                    "cohort": "enterprise",
                    "signals": {"thumbs": "down" if i < share * 100 else "up", "judge_score": 0.8},
                }
            )
    return items


def _hand_built(tmp_path, thumbs_late: float):
    """Ten weeks of traffic, a ten-row eval set whose live system passes 9 of 10 rows, no drift run."""
    path = tmp_path / "hand.db"
    db = open_db(path)
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", _traces(tmp_path, 10, thumbs_late))], config=load_config())
    suite_csv = "id,input,expected\n" + "".join(f"r{i},question {i},a good answer\n" for i in range(10))
    import_evalset(db, LEAD, suite_csv.encode(), "suite.csv")
    rows = [r[0] for r in db.execute("SELECT id FROM eval_rows ORDER BY rowid")]
    for system, passing in (("bot-a", 8), ("bot-b", 9)):
        lines = [json.dumps({"row_id": row, "passed": i < passing}) for i, row in enumerate(rows)]
        import_results(db, LEAD, 1, system, ("\n".join(lines) + "\n").encode(), f"{system}.jsonl")
    record_decision(db, LEAD, gate(db, 1, "bot-a", "bot-b", default_adversarial_pct=90))
    return path, db


def test_the_health_figures_follow_a_hand_built_database(tmp_path):
    _, db = _hand_built(tmp_path, thumbs_late=0.20)
    health = overview.flywheel_health(db)
    assert health["system"] == "bot-b" and health["version"] == 1
    (point,) = health["suite"]
    assert (point["passed"], point["n"], point["rate"]) == (9, 10, 0.9)
    assert point["low"] < 0.9 < point["high"]
    assert len(health["weeks"]) == 10 and [w["n"] for w in health["weeks"]] == [100] * 10
    assert [w["thumbs_down"] for w in health["weeks"]] == [4] * 6 + [20] * 4
    assert health["drift"] == []
    verdict = health["verdict"]
    assert verdict["status"] == "diverging" and "thumbs-down rose from 4.0% to 20%" in verdict["words"]


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


def test_the_overview_shows_the_divergence_on_a_hand_built_database(tmp_path, monkeypatch):
    path, db = _hand_built(tmp_path, thumbs_late=0.20)
    db.close()
    at = _page(path, monkeypatch)
    (alarm,) = at.warning
    assert (
        "fallen behind production" in alarm.value and "thumbs\\-down rose from 4\\.0% to 20%" in alarm.value
    )
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pass rate, v1"] == "90.0%"
    assert metrics["Thumbs-down, last 4 weeks"] == "20.0%"
    spec = _health_spec(at)
    thumbs = next(t for t in spec["data"] if t.get("name") == "thumbs-down")
    assert thumbs["y"] == [0.04] * 6 + [0.2] * 4
    rate = next(t for t in spec["data"] if t.get("name") == "pass rate, bot-b")
    assert rate["y"] == [0.9]
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


def test_the_overview_reads_healthy_when_production_holds_and_drift_is_absent(tmp_path, monkeypatch):
    path, db = _hand_built(tmp_path, thumbs_late=0.04)
    db.close()
    at = _page(path, monkeypatch)
    assert not at.error and not at.warning
    (note,) = [i for i in at.info if "run drift" in i.value]
    assert "No production signal got worse" in note.value
    spec = _health_spec(at)
    thumbs = next(t for t in spec["data"] if t.get("name") == "thumbs-down")
    assert thumbs["y"] == [0.04] * 10


@pytest.mark.parametrize(
    "user, extra", [("lena", set()), ("ravi", {"Scrubs awaiting review", "Scrubs decided"})]
)
def test_labelers_and_reviewers_see_their_queue_not_the_lead_cockpit(tmp_path, monkeypatch, user, extra):
    path, db = _hand_built(tmp_path, thumbs_late=0.20)
    db.close()
    at = _page(path, monkeypatch, user)
    assert not at.error and not at.warning and any(s.value == "Your queue" for s in at.subheader)
    shown = {m.label for m in at.metric}
    assert {"Traces awaiting labels", "Labeled by you"} | extra <= shown
    assert "Pass rate, v1" not in shown and "Signal alerts, last four weeks" not in {
        s.value for s in at.subheader
    }
