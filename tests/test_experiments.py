import json
import math

import pytest

from flywheel.auth import User
from flywheel.errors import BadInput
from flywheel.online.experiments import (
    arm_rates,
    arm_values,
    canary_alarms,
    compare_arms,
    declare_experiment,
    experiment_verdict,
    plan_test,
    sample_size_per_arm,
    shadow_preference,
    two_proportion_test,
)
from flywheel.online.judge import Target, load_judge_settings, make_client, run_judge
from flywheel.stats import NO_TRIALS, wilson
from flywheel.store.db import open_db, write
from tests.fake_anthropic import FakeAnthropic
from tests.judge_data import add_traces, starter_rubric

LEAD = User("ana", "lead")


def test_sample_size_planner_matches_textbook_tables():
    # Fleiss (1981), two-sided alpha 0.05, power 0.8, no continuity correction.
    assert sample_size_per_arm(0.10, 0.05) == 686
    assert sample_size_per_arm(0.20, 0.10) == 294
    assert sample_size_per_arm(0.50, 0.10) == 388
    # Hand-computed: p=.05->.06, pbar=.055: (1.95996*sqrt(2*.055*.945) + 0.84162*sqrt(.0475+.0564))^2/.0001
    assert sample_size_per_arm(0.05, 0.01) == 8158
    assert sample_size_per_arm(0.10, 0.05, alpha=0.01, power=0.9) > 686


def test_planner_turns_traces_into_days_at_the_current_traffic():
    plan = plan_test(0.10, 0.05, 0.05, 0.8, daily_traffic=200, arm_share=0.5)
    assert plan == {"per_arm": 686, "total": 1372, "days": 7, "arm_traffic_per_day": 100}
    canary = plan_test(0.10, 0.05, 0.05, 0.8, daily_traffic=200, arm_share=0.05)
    assert canary["days"] == 69
    with pytest.raises(BadInput, match="arm share"):
        plan_test(0.1, 0.05, 0.05, 0.8, 200, arm_share=0.7)
    with pytest.raises(BadInput, match="power"):
        sample_size_per_arm(0.1, 0.05, power=1.2)


def test_two_proportion_test_against_hand_computed_values():
    # 45/100 vs 60/100: pooled .525, se = sqrt(.525*.475*.02) = .070622, z = .15/.070622 = 2.1240
    result = two_proportion_test(45, 100, 60, 100)
    assert result["z"] == pytest.approx(2.1240, abs=1e-4)
    assert result["p_value"] == pytest.approx(0.0337, abs=1e-4)
    # unpooled se = sqrt(.45*.55/100 + .6*.4/100) = .069101; .15 -/+ 1.95996 * .069101
    assert (result["low"], result["high"]) == (
        pytest.approx(0.01457 - 0.00142, abs=1e-4),
        pytest.approx(0.28685, abs=1e-4),
    )
    assert two_proportion_test(10, 100, 10, 100)["p_value"] == pytest.approx(1.0)
    with pytest.raises(BadInput):
        two_proportion_test(5, 0, 1, 10)


def test_wilson_interval_textbook_values():
    assert wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson(5, 10) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert all(math.isnan(x) for x in wilson(0, 0, no_data=NO_TRIALS))


def _traffic(db, arms: dict[str, tuple[int, int]], signal: str = "thumbs", start: str = "2026-11-16") -> None:
    """Per arm, ``n`` traces of which ``bad`` carry the signal, on one day."""
    rows = []
    for arm, (n, bad) in arms.items():
        for i in range(n):
            row = {
                "trace_id": f"{arm}-{i}",
                "ts": f"{start}T{i % 24:02d}:00:00.000Z",
                "week": "2026-W47",
                "input": "x",
                "content_hash": f"{arm}{i}",
                "metadata": json.dumps({"release": arm}),
                "schema_valid": 1,
            }
            if signal == "thumbs":
                row["thumbs"] = "down" if i < bad else "up"
            else:
                row[signal] = int(i < bad)
            rows.append(row)
    with write(db):
        db["traces"].insert_all(rows)


def test_arm_values_count_traces_and_a_day_short_of_the_declared_duration_gets_no_verdict(db):
    _traffic(db, {"r1": (1000, 100), "r2": (1000, 150), "s1": (80, 8), "s2": (80, 16)})
    assert {v["arm"]: v["traces"] for v in arm_values(db, LEAD, "release")} == {
        "r1": 1000,
        "r2": 1000,
        "s1": 80,
        "s2": 80,
    }
    for name, control, treatment in (("big", "r1", "r2"), ("small", "s1", "s2")):
        declare_experiment(
            db,
            LEAD,
            name,
            "release",
            control,
            treatment,
            "trace_id",
            0.5,
            "thumbs down",
            min_days=1,
            min_effect=0.05,
            start="2026-11-16",
        )
    # one day of traffic, 00:00 to 23:00: not yet the declared day
    assert experiment_verdict(db, LEAD, "big")["withheld"] == [
        "ran 1.0 of the declared minimum 1 days since 2026-11-16T00:00:00.000Z"
    ]
    with pytest.raises(BadInput, match="metadata key"):
        compare_arms(db, LEAD, "rel'ease", "r1", "r2")


def test_arm_counts_kept_between_imports_equal_a_walk_over_the_traces(db):
    _traffic(db, {"r1": (300, 30), "r2": (200, 40)})
    assert {v["arm"]: v["traces"] for v in arm_values(db, LEAD, "release")} == {"r1": 300, "r2": 200}
    more = [
        {
            "trace_id": f"late-{i}",
            "ts": "2026-11-30T10:00:00.000Z",
            "week": "2026-W49",
            "input": "x",
            "content_hash": f"late{i}",
            "metadata": json.dumps({"release": "r2"}),
            "thumbs": "down",
        }
        for i in range(50)
    ]
    with write(db):
        db["traces"].insert_all(more)
    values = {
        v["arm"]: (v["traces"], v["first_week"], v["last_week"]) for v in arm_values(db, LEAD, "release")
    }
    assert values == {"r1": (300, "2026-W47", "2026-W47"), "r2": (250, "2026-W47", "2026-W49")}
    rates = {
        (r["arm"], r["metric"]): (r["events"], r["n"]) for r in arm_rates(db, LEAD, "release", ("r1", "r2"))
    }
    walked = db.execute(
        "SELECT json_extract(metadata, '$.release'), sum(thumbs = 'down'), count(*) FROM traces GROUP BY 1"
    ).fetchall()
    assert {(arm, "thumbs down"): (x, n) for arm, x, n in walked} == {
        k: v for k, v in rates.items() if k[1] == "thumbs down"
    }
    only = arm_rates(db, LEAD, "release", ("r2",), weeks=("2026-W49",))
    assert {(r["metric"], r["n"], r["events"]) for r in only if r["metric"] == "thumbs down"} == {
        ("thumbs down", 50, 50)
    }


def test_canary_alarm_fires_only_for_a_rate_worse_than_the_control_interval(db, tmp_path):
    _traffic(db, {"stable": (2000, 100), "canary": (300, 45)}, signal="escalated")
    alarms = canary_alarms(db, LEAD, "release", "stable", "canary", hours=72)
    assert [a["metric"] for a in alarms] == ["escalated"]
    assert (alarms[0]["canary_rate"], alarms[0]["control_rate"]) == (0.15, 0.05)
    assert alarms[0]["canary_low"] == pytest.approx(0.1140, abs=1e-4)  # Wilson 45/300, by hand
    same_rate = open_db(tmp_path / "same.db")  # the canary escalates as often as the stable release
    _traffic(same_rate, {"stable": (2000, 100), "canary": (300, 15)}, signal="escalated")
    assert canary_alarms(same_rate, LEAD, "release", "stable", "canary", hours=72) == []
    with pytest.raises(BadInput, match="canary window"):
        canary_alarms(db, LEAD, "release", "stable", "canary", hours=2)


def test_a_canary_as_clean_as_its_control_raises_no_alarm(db):
    # no escalation on either arm: both rates 0, the canary's interval starts exactly at 0
    _traffic(db, {"stable": (70, 0), "canary": (5, 0)}, signal="escalated")
    assert canary_alarms(db, LEAD, "release", "stable", "canary", hours=72) == []


@pytest.fixture
def shadow_db(db):
    add_traces(db, 6, metadata=lambda n: {"shadow": "BETTER answer" if n < 4 else "worse answer"})
    return db


def _shadow_rate(db, prefer):
    rubric = starter_rubric(db)
    settings = load_judge_settings({}).replace(model="fake", max_retries=0)
    with FakeAnthropic() as fake:
        fake.prefer = prefer
        client = make_client(settings, api_key="k", base_url=fake.url)
        run_judge(db, "ana", Target("shadow", "shadow"), client=client, settings=settings)
    return shadow_preference(db, "shadow", rubric.id), fake


def test_shadow_pairs_are_judged_in_both_orders_so_position_bias_cancels(shadow_db):
    result, fake = _shadow_rate(shadow_db, "A")
    assert len(fake.bodies) == 12 and result["pairs"] == 6
    assert result["rate"] == 0.5 and result["even"] == 6
    orders = {(json.loads(b)["messages"][0]["content"].split("<reply_a>\n")[1][:6]) for b in fake.bodies}
    assert len(orders) > 1  # the shadow reply came first in some requests, production in others


def test_shadow_preference_rate_and_agreement_with_user_signals(shadow_db):
    result, _ = _shadow_rate(shadow_db, "content")
    assert result["rate"] == pytest.approx(4 / 6)
    assert (result["shadow_preferred"], result["production_preferred"]) == (4, 2)
    assert result["low"] < 4 / 6 < result["high"]
    # thumbs down on n % 3 == 0 (users disliked production: 0 and 3), thumbs up elsewhere.
    # Judge prefers shadow on 0..3: agrees on 0, 3 (down) and on 4, 5 (up -> production); not on 1, 2.
    assert (result["with_user_signal"], result["agree_with_users"]) == (6, pytest.approx(4 / 6))
