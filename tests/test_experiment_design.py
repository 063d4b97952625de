"""Declared A/B experiments: the verdict comes only from a sound design, on the primary metric only."""

import json
from datetime import datetime, timedelta

import pytest

from flywheel.auth import User
from flywheel.errors import BadInput, NotFound, PermissionDenied
from flywheel.online.experiments import (
    NO_EXPERIMENT,
    SECONDARY,
    UnitCounts,
    arm_rates,
    arm_values,
    canary_alarms,
    clustered_proportion_test,
    compare_arms,
    declare_experiment,
    declared_experiments,
    experiment_verdict,
    holm,
    srm_test,
)
from flywheel.store.db import write

LEAD, REVIEWER, LABELER = User("ana", "lead"), User("ravi", "reviewer"), User("lena", "labeler")
START = datetime(2026, 11, 2)


def _traffic(db, arm: str, n: int, days: float = 10, user=lambda i: f"u-{i}", **events: int) -> None:
    """``n`` traces of ``arm`` spread evenly over ``days`` from START; the first ``events[signal]``
    traces carry that signal (thumbs down, escalated, guardrail tripped); ``user(i)`` is the unit."""
    rows = []
    for i in range(n):
        metadata = {"release": arm}
        if user(i) is not None:
            metadata["user_id"] = user(i)
        moment = START + timedelta(days=days * i / n)
        rows.append(
            {
                "trace_id": f"{arm}-{i}",
                "ts": moment.isoformat(timespec="milliseconds") + "Z",
                "week": "2026-W45",
                "input": "x",
                "content_hash": f"{arm}{i}",
                "metadata": json.dumps(metadata),
                "thumbs": "down" if i < events.get("thumbs", 0) else "up",
                "escalated": int(i < events.get("escalated", 0)),
                "guardrail_tripped": int(i < events.get("guardrail", 0)),
                "schema_valid": 1,
            }
        )
    with write(db):
        db["traces"].insert_all(rows, batch_size=2000)


def _declare(db, name="test", unit="trace_id", share=0.5, min_days=7, min_effect=0.05, **more):
    return declare_experiment(
        db,
        LEAD,
        name,
        "release",
        "a",
        "b",
        unit,
        share,
        "thumbs down",
        min_days=min_days,
        min_effect=min_effect,
        start="2026-11-02",
        **more,
    )


def _unique_users(arm):
    return lambda i: f"{arm}-user-{i}"


# The decision table --------------------------------------------------------------------------------


def test_sound_design_gives_a_verdict_on_the_primary_metric_only(db):
    _traffic(db, "a", 1000, user=_unique_users("a"), thumbs=100, escalated=100, guardrail=50)
    _traffic(db, "b", 1000, user=_unique_users("b"), thumbs=150, escalated=130, guardrail=70)
    _declare(db, unit="user_id")
    result = experiment_verdict(db, LEAD, "test")
    assert result["withheld"] == [] and result["verdict"] == "treatment worse"
    primary, *secondary = result["metrics"]
    assert (primary["metric"], primary["role"], primary["verdict"]) == (
        "thumbs down",
        "primary",
        "treatment worse",
    )
    assert primary["needed_per_arm"] == 686 and primary["p_holm"] is None
    assert {r["role"] for r in secondary} == {"secondary"}
    assert {r["verdict"] for r in secondary} == {SECONDARY}
    # Hand-computed two-proportion p-values: escalated 100 vs 130 of 1000: pooled .115,
    # z = .03 / sqrt(.115 * .885 * .002) = 2.10274, p = .035488; guardrail 50 vs 70: pooled .06,
    # z = .02 / sqrt(.06 * .94 * .002) = 1.88311, p = .059686; regenerations and schema failures p = 1.
    # Holm over the four secondaries: .035488 * 4 = .141954, .059686 * 3 = .179057, then 1 and 1.
    by = {r["metric"]: r for r in secondary}
    assert by["escalated"]["p_value"] == pytest.approx(0.035488, abs=1e-5)
    assert by["escalated"]["p_holm"] == pytest.approx(0.141954, abs=1e-5)
    assert by["guardrail tripped"]["p_holm"] == pytest.approx(0.179057, abs=1e-5)
    assert by["schema failure"]["p_holm"] == by["regenerated or retried"]["p_holm"] == 1.0
    design = result["design"]
    assert (design["control_units"], design["treatment_units"], design["shared_units"]) == (1000, 1000, 0)
    assert design["days"] == pytest.approx(9.99, abs=0.01) and design["srm_p_value"] == 1.0


@pytest.mark.parametrize("shared", [1, 50])
def test_a_unit_in_both_arms_withholds_the_verdict(db, shared):
    _traffic(db, "a", 1000, user=_unique_users("a"), thumbs=100)
    # the first ``shared`` users of b are users of a as well
    _traffic(db, "b", 1000, user=lambda i: f"a-user-{i}" if i < shared else f"b-user-{i}", thumbs=150)
    _declare(db, unit="user_id")
    result = experiment_verdict(db, LEAD, "test")
    assert result["verdict"] is None
    assert result["withheld"] == [
        f"{shared:,} user_id value(s) appear in both arms: the arms are not independent"
    ]
    assert result["design"]["shared_units"] == shared
    assert all("p_value" not in row and row["verdict"] == "withheld" for row in result["metrics"])


def test_the_same_users_in_both_arms_over_two_days_is_no_experiment(db):
    _traffic(db, "a", 500, days=2, user=lambda i: f"user-{i % 50}", thumbs=100)
    _traffic(db, "b", 500, days=2, user=lambda i: f"user-{i % 50}", thumbs=20)
    _declare(db, unit="user_id")
    result = experiment_verdict(db, LEAD, "test")
    assert result["verdict"] is None
    assert result["withheld"] == [
        "50 user_id value(s) appear in both arms: the arms are not independent",
        "ran 2.0 of the declared minimum 7 days since 2026-11-02T00:00:00.000Z",
    ]


@pytest.mark.parametrize(
    ("control", "treatment", "withheld"),
    [
        (6000, 4000, True),  # 60/40 on 10k against 50/50: chi-square 400
        (5050, 4950, False),  # chi-square 1.0, p = .317: chance, not a mismatch
    ],
)
def test_a_sample_ratio_mismatch_withholds_the_verdict_and_chance_imbalance_does_not(
    db, control, treatment, withheld
):
    _traffic(db, "a", control, thumbs=control // 10)
    _traffic(db, "b", treatment, thumbs=treatment // 10)
    _declare(db)
    result = experiment_verdict(db, LEAD, "test")
    srm = [r for r in result["withheld"] if r.startswith("sample-ratio mismatch")]
    assert bool(srm) is withheld and (result["verdict"] is None) is withheld
    if not withheld:
        assert result["verdict"] == "no significant difference"
        assert result["design"]["srm_p_value"] == pytest.approx(0.3173, abs=1e-4)
    else:
        assert srm == [
            "sample-ratio mismatch: 6,000 / 4,000 trace_id values against the planned 50% / 50%"
            " (chi-square p = 5.5e-89 < 0.001)"
        ]


def test_the_plan_is_the_declared_split_not_fifty_fifty(db):
    _traffic(db, "a", 900, thumbs=90)
    _traffic(db, "b", 100, thumbs=10)
    _declare(db, share=0.1, min_effect=0.2)
    assert experiment_verdict(db, LEAD, "test")["withheld"] == []
    _declare(db, name="wrong plan", share=0.5, min_effect=0.2)
    assert experiment_verdict(db, LEAD, "wrong plan")["withheld"][0].startswith("sample-ratio mismatch")


def test_srm_and_holm_against_hand_computed_values():
    # 6000/4000 against 5000/5000: (1000² / 5000) * 2 = 400, p = erfc(sqrt(200)) = 5.5e-89
    assert srm_test(6000, 4000, 0.5)["chi2"] == pytest.approx(400)
    # 5050/4950: (50² / 5000) * 2 = 1.0, p = P(chi2_1 > 1) = .3173
    assert srm_test(5050, 4950, 0.5)["p_value"] == pytest.approx(0.3173, abs=1e-4)
    # 900/100 against 90/10 fits exactly
    assert srm_test(900, 100, 0.1)["chi2"] == pytest.approx(0.0)
    # sorted .005 * 4 = .02, .01 * 3 = .03, .03 * 2 = .06, .04 * 1 = .04 -> raised to the running .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([]) == []


def test_before_the_minimum_duration_the_verdict_is_withheld(db):
    _traffic(db, "a", 1000, days=3, thumbs=100)
    _traffic(db, "b", 1000, days=3, thumbs=150)
    _declare(db, min_days=7)
    result = experiment_verdict(db, LEAD, "test")
    assert result["verdict"] is None
    assert result["withheld"] == ["ran 3.0 of the declared minimum 7 days since 2026-11-02T00:00:00.000Z"]
    _declare(db, name="two days", min_days=2)  # the same traces, read against a shorter plan
    assert experiment_verdict(db, LEAD, "two days")["verdict"] == "treatment worse"


def test_traces_before_the_declared_start_do_not_count(db):
    _traffic(db, "a", 1000, thumbs=100)
    _traffic(db, "b", 1000, thumbs=150)
    declare_experiment(
        db,
        LEAD,
        "late",
        "release",
        "a",
        "b",
        "trace_id",
        0.5,
        "thumbs down",
        min_effect=0.05,
        start="2026-11-08",
    )
    result = experiment_verdict(db, LEAD, "late")
    assert result["design"]["control_units"] == 400  # the last 4 of the 10 days
    assert result["withheld"] == ["ran 4.0 of the declared minimum 7 days since 2026-11-08T00:00:00.000Z"]


def test_without_a_declared_experiment_the_arms_are_described_only(db):
    _traffic(db, "a", 1000, thumbs=100)
    _traffic(db, "b", 1000, thumbs=150)
    result = compare_arms(db, LEAD, "release", "a", "b")
    assert result["verdict"] is None and result["withheld"] == [NO_EXPERIMENT]
    (thumbs,) = [r for r in result["metrics"] if r["metric"] == "thumbs down"]
    assert (thumbs["control_rate"], thumbs["treatment_rate"], thumbs["verdict"]) == (0.10, 0.15, "withheld")
    assert not any("p_value" in row for row in result["metrics"])
    with pytest.raises(NotFound, match="no experiment named 'nope'"):
        experiment_verdict(db, LEAD, "nope")


def test_missing_units_and_an_empty_arm_withhold_the_verdict(db):
    _traffic(db, "a", 1000, user=lambda i: None if i == 7 else f"a-{i}", thumbs=100)
    _traffic(db, "b", 1000, user=_unique_users("b"), thumbs=150)
    _declare(db, unit="user_id")
    assert experiment_verdict(db, LEAD, "test")["withheld"] == [
        "1 traces of the arms carry no 'user_id': which arm a unit sat in cannot be checked"
    ]
    declare_experiment(
        db, LEAD, "empty", "release", "a", "c", "trace_id", 0.5, "thumbs down", start="2026-11-02"
    )
    result = experiment_verdict(db, LEAD, "empty")
    assert result["verdict"] is None
    assert "arm 'c' has no traces since 2026-11-02T00:00:00.000Z" in result["withheld"]
    assert "the primary metric 'thumbs down' has no trials in one of the arms" in result["withheld"]


def test_an_under_powered_primary_is_still_refused(db):
    _traffic(db, "a", 80, thumbs=8)
    _traffic(db, "b", 80, thumbs=16)
    _declare(db)
    result = experiment_verdict(db, LEAD, "test")
    assert result["withheld"] == []
    assert result["verdict"].startswith("under-powered: needs 686 traces per arm to detect 5.0%, has 80")


def test_units_with_many_traces_count_as_units_not_traces(db):
    # 200 users per arm, 20 traces each, and a user's traces all fail or all pass: 4,000 traces per arm
    # but only 200 independent observations. The trace-level test would call 10% vs 15% (p < .001);
    # the clustered one has the effective trials of 199 users and refuses it as under-powered.
    _traffic(db, "a", 4000, user=lambda i: f"a-{i // 20}", thumbs=400)
    _traffic(db, "b", 4000, user=lambda i: f"b-{i // 20}", thumbs=600)
    _declare(db, unit="user_id")
    result = experiment_verdict(db, LEAD, "test")
    assert result["design"]["control_units"] == 200
    assert result["verdict"] == "under-powered: needs 686 traces per arm to detect 5.0%, has 199"


def test_clustered_test_reduces_to_units_for_all_or_nothing_clusters():
    # 100 units of 10 traces, 20 units all failing: x = 200, n = 1000; sums over units of x², x·n, n²
    c = UnitCounts(units=100, n=1000, x=200, xx=20 * 100, xn=20 * 100, nn=100 * 100)
    t = UnitCounts(units=100, n=1000, x=300, xx=30 * 100, xn=30 * 100, nn=100 * 100)
    test = clustered_proportion_test(c, t)
    # var = q(1 - q) / (K - 1): .2 * .8 / 99 and .3 * .7 / 99; z = .1 / sqrt(.37 / 99) = 1.63575
    assert test["z"] == pytest.approx(1.63575, abs=1e-5)
    assert (test["control_effective_n"], test["treatment_effective_n"]) == (
        pytest.approx(99),
        pytest.approx(99),
    )
    with pytest.raises(BadInput, match="1 and 100 units"):
        clustered_proportion_test(UnitCounts(1, 10, 2, 4, 20, 100), t)


# Declaring ---------------------------------------------------------------------------------------------


def test_declaring_records_the_design_with_an_audit_entry(db):
    exp = _declare(db, unit="user_id", share=0.2, min_days=14)
    assert (exp.unit, exp.treatment_share, exp.primary_metric, exp.min_days) == (
        "user_id",
        0.2,
        "thumbs down",
        14,
    )
    assert exp.start == "2026-11-02T00:00:00.000Z" and exp.declared_by == "ana"
    (entry,) = db["audit_log"].rows_where("action = 'declare experiment'")
    detail = json.loads(entry["detail"])
    assert (entry["actor"], entry["entity_id"], detail["unit"], detail["primary_metric"]) == (
        "ana",
        str(exp.id),
        "user_id",
        "thumbs down",
    )
    assert (
        declare_experiment(db, LEAD, "default", "release", "a", "b", "trace_id", 0.5, "escalated").min_days
        == 7
    )
    assert [e.name for e in declared_experiments(db, LEAD)] == ["default", "test"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "test"}, "already declared"),
        ({"name": " "}, "name ' '"),
        ({"unit": "rel'ease"}, "metadata key"),
        ({"unit": "release"}, "unit 'release' is the arm field itself"),
        ({"treatment": "a"}, "both 'a'"),
        ({"treatment_share": 1.0}, "treatment share 1.0"),
        ({"primary_metric": "vibes"}, "primary metric 'vibes'"),
        ({"min_days": 0}, "minimum duration 0"),
        ({"min_effect": 0}, "minimum effect 0"),
        ({"alpha": 1.5}, "alpha 1.5"),
        ({"start": "last tuesday"}, "start 'last tuesday'"),
    ],
)
def test_a_bad_declaration_is_refused_and_names_the_value(db, change, message):
    _declare(db)
    fields = {
        "name": "other",
        "key": "release",
        "control": "a",
        "treatment": "b",
        "unit": "trace_id",
        "treatment_share": 0.5,
        "primary_metric": "thumbs down",
    } | change
    with pytest.raises(BadInput, match=message):
        declare_experiment(db, LEAD, **fields)
    assert db["experiments"].count == 1
    assert db.execute("SELECT count(*) FROM audit_log WHERE action = 'declare experiment'").fetchone()[0] == 1


# Roles -------------------------------------------------------------------------------------------------


def test_raw_metadata_readers_refuse_a_labeler(db):
    _traffic(db, "a", 100, thumbs=10)
    _traffic(db, "b", 100, thumbs=10)
    _declare(db)
    readers = [
        lambda u: arm_values(db, u, "release"),
        lambda u: arm_values(db, u, "release", hours=48),
        lambda u: arm_rates(db, u, "release", ("a", "b")),
        lambda u: compare_arms(db, u, "release", "a", "b"),
        lambda u: canary_alarms(db, u, "release", "a", "b", hours=48),
        lambda u: declared_experiments(db, u),
        lambda u: experiment_verdict(db, u, "test"),
    ]
    for read in readers:
        with pytest.raises(PermissionDenied, match="lena is a labeler"):
            read(LABELER)
        read(REVIEWER)  # reviewers read raw text already
    assert {v["arm"] for v in arm_values(db, LEAD, "release")} == {"a", "b"}
    exposed = User("ana", "lead", exposed=True)  # picked without sign-in on a reachable server
    with pytest.raises(PermissionDenied):
        arm_values(db, exposed, "release")


def test_only_a_lead_declares(db):
    for user in (LABELER, REVIEWER):
        with pytest.raises(PermissionDenied):
            _declare_as(db, user)
    assert db["experiments"].count == 0


def _declare_as(db, user):
    return declare_experiment(db, user, "x", "release", "a", "b", "trace_id", 0.5, "thumbs down")


def test_the_demo_declares_its_canary_and_the_design_holds(demo_copy):
    from flywheel.store.db import open_db

    db = open_db(demo_copy)
    (exp,) = declared_experiments(db, LEAD)
    assert (exp.control, exp.treatment, exp.unit, exp.treatment_share) == (
        "v2",
        "v2.1-canary",
        "trace_id",
        0.1,
    )
    result = experiment_verdict(db, LEAD, exp.name)
    assert result["withheld"] == [] and result["verdict"]
    assert result["design"]["srm_p_value"] > 0.001 and result["design"]["days"] >= exp.min_days


def test_an_arm_of_a_single_unit_withholds_the_verdict(db):
    _traffic(db, "a", 1000, user=lambda i: "only-user", thumbs=100)  # one user's 1,000 traces
    _traffic(db, "b", 1000, user=_unique_users("b"), thumbs=150)
    _declare(db, unit="user_id", share=0.999)  # a plan under which one user against 1,000 is no mismatch
    result = experiment_verdict(db, LEAD, "test")
    assert result["verdict"] is None
    assert result["withheld"] == [
        "the primary metric 'thumbs down' has trials from a single user_id in an arm: nothing to compare"
    ]
