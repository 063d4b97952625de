"""The sampling station on real SQLite files: plans, batches, ledger, the SQL predicate and the CLI."""

import json
import math
import random
import shutil
import threading

import pytest
from conftest import jsonl
from sampling_support import ALL_ANOMALIES, EVERYTHING, OTHER_WEEK, WEEK, N, make_traces

from flywheel.__main__ import main
from flywheel.config import load_config
from flywheel.errors import BadInput, NotFound
from flywheel.ingest.run import ingest_files
from flywheel.sampling.batches import (
    NothingSampled,
    batch_items,
    batch_ledger,
    batch_rule_counts,
    batch_trace_ids,
    cohort_values,
    load_batch,
    preview_plan,
    register_md5,
    resolve_week,
    run_plan,
    sample_and_scrub,
    sample_batches,
    sample_weeks,
    unscrubbed_count,
    week_order,
)
from flywheel.sampling.plans import (
    DEMO_PLAN,
    STRATUM_KEYS,
    Plan,
    Stratum,
    delete_plan,
    load_plan_file,
    save_plan,
    saved_plan,
    saved_plans,
)
from flywheel.sampling.random import in_random_sample
from flywheel.sampling.sql import random_predicate_sql
from flywheel.store.db import open_db
from flywheel.store.db import write as store_write

FLAGS = {
    "thumbs_down": lambda s: s["thumbs"] == "down",
    "regenerated": lambda s: s["regenerated"],
    "retried": lambda s: s["retried"],
    "escalated": lambda s: s["escalated"],
    "guardrail_tripped": lambda s: s["guardrail_tripped"],
    "schema_invalid": lambda s: not s["schema_valid"],
}


def load(tmp_path, traces: list[dict], name: str = "s.db"):
    db = open_db(tmp_path / name)
    ingest_files(db, [jsonl(tmp_path / f"{name}.jsonl", traces)], config=load_config())
    return db


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    return make_traces()


@pytest.fixture(scope="module")
def template(tmp_path_factory, traces):
    path = tmp_path_factory.mktemp("sampling")
    db = load(path, traces)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file alone then holds everything
    db.close()
    return path / "s.db"


@pytest.fixture
def sdb(tmp_path, template):
    shutil.copy(template, tmp_path / "s.db")
    db = open_db(tmp_path / "s.db")
    yield db
    db.close()


def in_week(traces: list[dict]) -> list[dict]:
    return [t for t in traces if t["timestamp"] < "2026-05-11"]


def items(db, batch_id: int) -> dict[str, dict]:
    return {item["trace_id"]: item for item in batch_items(db, batch_id)}


def audit_entries(db) -> list[dict]:
    """The audit log as written (detail still JSON), newest first."""
    return list(db["audit_log"].rows_where(order_by="id desc"))


def picked_by(found: dict[str, dict], prefix: str) -> set[str]:
    return {tid for tid, item in found.items() if any(r.startswith(prefix) for r in item["reasons"])}


# Anomaly ------------------------------------------------------------------------------------------


def test_every_anomaly_flagged_trace_in_the_window_is_sampled(sdb, traces):
    batch = run_plan(sdb, Plan(anomaly=ALL_ANOMALIES), "ana", week=WEEK)
    found = items(sdb, batch.id)
    for signal, flagged in FLAGS.items():
        expected = {t["trace_id"] for t in in_week(traces) if flagged(t["signals"])}
        assert expected, f"the fixture has no {signal} traces"
        assert picked_by(found, f"anomaly:{signal}") == expected, signal
    anything = {t["trace_id"] for t in in_week(traces) if any(f(t["signals"]) for f in FLAGS.values())}
    assert set(found) == anything
    assert all(item["priority"] == 0 for item in found.values())


def test_anomaly_signals_are_switchable(sdb, traces):
    batch = run_plan(sdb, Plan(anomaly=("escalated",)), "ana", week=WEEK)
    expected = {t["trace_id"] for t in in_week(traces) if t["signals"]["escalated"]}
    assert set(items(sdb, batch.id)) == expected
    assert batch.reasons == {"anomaly:escalated": len(expected)}


def test_the_window_is_one_week_and_defaults_to_the_latest(sdb, traces):
    batch = run_plan(sdb, Plan(anomaly=ALL_ANOMALIES), "ana")
    assert batch.week == OTHER_WEEK and batch.window == 200
    assert all(tid >= f"t-{N:05d}" for tid in items(sdb, batch.id))


# Random --------------------------------------------------------------------------------------------


def test_random_rate_stays_within_binomial_bounds_over_many_seeds(sdb):
    rate, counts = 0.05, []
    for seed in range(40):
        counts.append(run_plan(sdb, Plan(seed=seed, random_rate=rate), "ana", week=WEEK).sampled)
    mean, sd = N * rate, math.sqrt(N * rate * (1 - rate))
    assert all(abs(c - mean) < 4.5 * sd for c in counts), counts
    assert abs(sum(counts) / len(counts) - mean) < 3 * sd / math.sqrt(len(counts)), counts


def test_the_sql_predicate_selects_exactly_what_the_python_path_selects(sdb, traces):
    register_md5(sdb)
    ids = [t["trace_id"] for t in traces]
    for seed, rate in [(0, 0.01), (7, 0.05), (123, 0.5), (9, 1.0)]:
        plan = Plan(seed=seed, random_rate=rate)
        sql = random_predicate_sql(plan)
        by_sql = {r[0] for r in sdb.execute(f"SELECT trace_id FROM traces WHERE {sql}")}
        by_python = {i for i in ids if in_random_sample(i, rate, seed)}
        assert by_sql == by_python, (seed, rate)
        assert 0 < len(by_python) <= len(ids)
    assert random_predicate_sql(Plan(seed=7, random_rate=0.02)) == (
        "substr(lower(md5('7:' || trace_id)), 1, 8) < '051eb852'"
    )


def test_the_batch_takes_exactly_the_python_random_picks(sdb, traces):
    batch = run_plan(sdb, Plan(seed=5, random_rate=0.1), "ana", week=WEEK)
    expected = {t["trace_id"] for t in in_week(traces) if in_random_sample(t["trace_id"], 0.1, 5)}
    assert set(items(sdb, batch.id)) == expected


# Determinism -------------------------------------------------------------------------------------


def test_same_seed_and_same_data_give_the_same_batch(tmp_path, sdb, traces):
    first = run_plan(sdb, EVERYTHING, "ana", week=WEEK)
    again = run_plan(sdb, EVERYTHING, "ana", week=WEEK)
    shuffled = traces[:]
    random.Random(3).shuffle(shuffled)  # same data, stored in another order
    other = load(tmp_path, shuffled, "other.db")
    elsewhere = run_plan(other, EVERYTHING, "lena", week=WEEK)
    assert items(sdb, first.id) == items(sdb, again.id) == items(other, elsewhere.id)
    assert batch_ledger(sdb, first.id) == batch_ledger(other, elsewhere.id)


def test_a_different_seed_gives_a_different_batch(sdb):
    first = run_plan(sdb, EVERYTHING, "ana", week=WEEK)
    second = run_plan(sdb, EVERYTHING.replace(seed=12), "ana", week=WEEK)
    one, two = items(sdb, first.id), items(sdb, second.id)
    assert picked_by(one, "anomaly:") == picked_by(two, "anomaly:")  # anomalies do not depend on the seed
    assert picked_by(one, "random") != picked_by(two, "random")
    assert picked_by(one, "stratified:judge_score")
    assert picked_by(one, "stratified:judge_score") != picked_by(two, "stratified:judge_score")


# Strata --------------------------------------------------------------------------------------------


def test_quotas_are_met_in_large_strata_and_small_strata_are_taken_whole(sdb, traces):
    batch = run_plan(sdb, Plan(strata=(Stratum.of("cohort", quota=10),)), "ana", week=WEEK)
    found = items(sdb, batch.id)
    cohort = {t["trace_id"]: t["cohort"] for t in traces}
    assert batch.reasons == {
        "stratified:cohort=free": 10,
        "stratified:cohort=smb": 10,
        "stratified:cohort=tiny": 3,
    }
    assert {tid for tid in found if cohort[tid] == "tiny"} == {"t-00000", "t-00001", "t-00002"}
    ledger = {row["stratum"]: row for row in batch_ledger(sdb, batch.id)}
    population = {c: sum(t["cohort"] == c for t in in_week(traces)) for c in ("free", "smb", "tiny")}
    for c, size in population.items():
        row = ledger[f"cohort={c}"]
        assert (row["population"], row["selected"], row["quota"]) == (size, min(size, 10), 10)
        assert row["rate"] == round(min(size, 10) / size, 4)


def test_band_turns_tail_and_rare_intent_strata_pick_only_their_members(sdb, traces):
    plan = Plan(
        strata=(
            Stratum.of("judge_band", quota=20, low=0.45, high=0.5),
            Stratum.of("long_conversation", quota=20, min_turns=10),
            Stratum.of("cost_tail", quota=5, top_share=0.01),
            Stratum.of("intent", quota=2, rare_share=0.01),
        )
    )
    batch = run_plan(sdb, plan, "ana", week=WEEK)
    found, by_id = items(sdb, batch.id), {t["trace_id"]: t for t in traces}
    band = picked_by(found, "stratified:judge_score 0.45-0.5")
    assert len(band) == 20 and all(0.45 <= by_id[i]["signals"]["judge_score"] <= 0.5 for i in band)
    long = picked_by(found, "stratified:turns >= 10")
    assert len(long) == 20 and all(by_id[i]["signals"]["turns"] >= 10 for i in long)
    costs = sorted((t["signals"]["cost_usd"] for t in in_week(traces)), reverse=True)
    tail = picked_by(found, "stratified:cost_usd top 1%")
    assert len(tail) == 5 and all(by_id[i]["signals"]["cost_usd"] >= costs[14] for i in tail)
    assert picked_by(found, "stratified:intent=") == picked_by(found, "stratified:intent=rare_intent")
    ledger = {row["stratum"]: row for row in batch_ledger(sdb, batch.id)}
    assert ledger["cost_usd top 1%"]["population"] == math.ceil(0.01 * N)
    assert ledger["intent=rare_intent"]["population"] == 5


def test_no_trace_twice_and_every_reason_kept(sdb, traces):
    plan = Plan(random_rate=1.0, anomaly=ALL_ANOMALIES, strata=(Stratum.of("cohort", quota=3),))
    batch = run_plan(sdb, plan, "ana", week=WEEK)
    total, distinct = sdb.execute(
        "SELECT count(*), count(DISTINCT trace_id) FROM batch_items WHERE batch_id = ?", [batch.id]
    ).fetchone()
    assert total == distinct == batch.sampled == N
    found = items(sdb, batch.id)
    for t in in_week(traces):
        flags = [f"anomaly:{name}" for name, flagged in FLAGS.items() if flagged(t["signals"])]
        reasons = found[t["trace_id"]]["reasons"]
        assert set(flags) <= set(reasons) and "random" in reasons
        assert found[t["trace_id"]]["priority"] == (0 if flags else 1 if len(reasons) > 1 else 2)
    assert all(t["trace_id"] in picked_by(found, "stratified:cohort=tiny") for t in traces[:3])


def test_cap_keeps_anomaly_picks_first_then_strata_then_random(sdb, traces):
    anomalous = {t["trace_id"] for t in in_week(traces) if any(f(t["signals"]) for f in FLAGS.values())}
    plan = Plan(
        random_rate=0.5,
        anomaly=ALL_ANOMALIES,
        strata=(Stratum.of("cohort", quota=2),),
        cap=len(anomalous) + 4,
    )
    batch = run_plan(sdb, plan, "ana", week=WEEK)
    found = items(sdb, batch.id)
    assert len(found) == batch.sampled == len(anomalous) + 4
    assert anomalous <= set(found)
    priorities = [item["priority"] for item in found.values()]
    assert (priorities.count(1), priorities.count(2)) == (4, 0)
    ledger = batch_ledger(sdb, batch.id)
    assert sum(r["dropped"] for r in ledger if r["kind"] == "anomaly") == 0
    random_row = next(r for r in ledger if r["rule"] == "random")
    assert random_row["dropped"] > 0 and batch.dropped == batch.selected - batch.sampled > 0


def _anomalous(traces) -> set[str]:
    return {t["trace_id"] for t in in_week(traces) if any(f(t["signals"]) for f in FLAGS.values())}


def test_anomalies_beyond_the_cap_are_all_kept_and_nothing_else_and_the_run_says_so(sdb, traces):
    anomalous = _anomalous(traces)
    cap = 20
    assert len(anomalous) > cap + 100, "the fixture week needs far more anomalies than the cap"
    plan = Plan(random_rate=0.5, anomaly=ALL_ANOMALIES, strata=(Stratum.of("cohort", quota=2),), cap=cap)
    preview = preview_plan(sdb, plan, WEEK)
    batch = run_plan(sdb, plan, "ana", week=WEEK)
    found = items(sdb, batch.id)
    assert set(found) == anomalous  # every anomaly, and no stratified or random pick
    assert {item["priority"] for item in found.values()} == {0}
    assert (batch.sampled, batch.cap, batch.anomalies) == (len(anomalous), cap, len(anomalous))
    assert batch.over_cap == len(anomalous) - cap
    assert (preview.capped, preview.over_cap) == (batch.sampled, batch.over_cap)
    assert f"the {len(anomalous)} anomalies alone exceed the cap of 20" in batch.summary()
    assert batch.as_json()["over_cap"] == len(anomalous) - cap
    assert load_batch(sdb, batch.id) == batch  # the stored batch says so too
    ledger = batch_ledger(sdb, batch.id)
    for row in ledger:
        if row["kind"] == "anomaly":
            assert (row["dropped"], row["in_batch"]) == (0, row["selected"]), row["rule"]
    other = [r for r in ledger if r["kind"] != "anomaly"]
    assert all(r["dropped"] > 0 for r in other)  # their own picks all went; overlaps stay as anomalies
    audit = json.loads(audit_entries(sdb)[0]["detail"])
    assert audit["over_cap"] == batch.over_cap


def test_one_anomaly_rule_over_the_cap_shows_in_its_ledger_row(sdb, traces):
    escalated = {t["trace_id"] for t in in_week(traces) if t["signals"]["escalated"]}
    plan = Plan(random_rate=0.2, anomaly=("escalated",), cap=10)
    batch = run_plan(sdb, plan, "ana", week=WEEK)
    assert set(items(sdb, batch.id)) == escalated
    (row,) = [r for r in batch_ledger(sdb, batch.id) if r["kind"] == "anomaly"]
    assert (row["in_batch"], row["dropped"], row["over_cap"]) == (len(escalated), 0, len(escalated) - 10)
    random_row = next(r for r in batch_ledger(sdb, batch.id) if r["rule"] == "random")
    randomly = {t["trace_id"] for t in in_week(traces) if in_random_sample(t["trace_id"], 0.2, 7)}
    assert random_row["selected"] == len(randomly)
    assert (random_row["over_cap"], random_row["dropped"]) == (0, len(randomly - escalated))  # none kept


@pytest.mark.parametrize(
    ("extra", "strata_kept", "random_kept"),
    [
        (0, 0, 0),  # exactly as many anomalies as the cap: nothing else, nothing over
        (3, 3, 0),  # a little room: strata first
        (None, "all", 5),  # room for every stratum pick and five random ones
    ],
)
def test_under_the_cap_random_goes_first_then_strata_and_no_anomaly(
    sdb, traces, extra, strata_kept, random_kept
):
    anomalous = _anomalous(traces)
    base = Plan(random_rate=0.5, anomaly=ALL_ANOMALIES, strata=(Stratum.of("cohort", quota=2),))
    uncapped = items(sdb, run_plan(sdb, base, "ana", week=WEEK).id)
    strata = {t for t, i in uncapped.items() if i["priority"] == 1}
    room = len(strata) + random_kept if extra is None else extra
    batch = run_plan(sdb, base.replace(cap=len(anomalous) + room), "ana", week=WEEK)
    found = items(sdb, batch.id)
    priorities = [item["priority"] for item in found.values()]
    kept_strata = len(strata) if strata_kept == "all" else strata_kept
    assert anomalous <= set(found) and batch.sampled == len(anomalous) + room
    assert (priorities.count(1), priorities.count(2)) == (kept_strata, random_kept)
    assert batch.over_cap == 0 and "exceed the cap" not in batch.summary()
    assert all(r["over_cap"] == 0 for r in batch_ledger(sdb, batch.id))


def test_a_cap_without_anomaly_rules_is_a_plain_cap(sdb):
    batch = run_plan(sdb, Plan(random_rate=0.5, cap=7), "ana", week=WEEK)
    assert (batch.sampled, batch.anomalies, batch.over_cap) == (7, 0, 0)


def test_the_cli_says_when_anomalies_exceed_the_cap(tmp_path, capsys):
    load(tmp_path, make_traces(n=300), "cli.db")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(Plan(random_rate=0.05, anomaly=ALL_ANOMALIES, cap=5).as_dict()))
    args = ["sample", "--db", str(tmp_path / "cli.db"), "--plan", str(plan), "--week", WEEK]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cap"] == 5 and out["anomalies"] == out["sampled"] > 5
    assert out["over_cap"] == out["sampled"] - 5
    assert main([*args, "--again"]) == 0
    text = capsys.readouterr().out
    assert f"the {out['anomalies']} anomalies alone exceed the cap of 5: all are kept" in text


# Bad plans ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"random": {"rate": 0}}, "random rate 0"),
        ({"random": {"rate": 1.5}}, "random rate 1.5"),
        ({"random": {"rate": -0.1}}, "random rate -0.1"),
        ({"random": {"rate": "2%"}}, "random rate '2%'"),
        ({"strata": [{"key": "country", "quota": 3}]}, "unknown stratum key 'country'"),
        ({"strata": [{"key": "cohort", "quota": 0}]}, "quota 0"),
        ({"strata": [{"key": "cohort", "min_turns": 3}]}, "unknown field"),
        ({"strata": [{"key": "judge_band", "low": 0.8, "high": 0.2}]}, "low is above high"),
        ({"strata": [{"key": "cohort"}, {"key": "cohort"}]}, "each key may appear once"),
        ({"anomaly": ["thumbs_up"]}, "unknown anomaly signal 'thumbs_up'"),
        ({"week": "2026-45", "anomaly": ["retried"]}, "week '2026-45'"),
        ({"week": "2026-W54", "anomaly": ["retried"]}, "week '2026-W54'"),
        ({"cap": 0, "anomaly": ["retried"]}, "cap 0"),
        ({"seed": -1, "anomaly": ["retried"]}, "seed -1"),
        ({"name": "weekly"}, "samples nothing"),
        ({"sample": 1}, "unknown plan field"),
    ],
)
def test_bad_plans_are_refused_with_the_bad_value_named(body, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        Plan.from_dict(body)


def test_a_week_without_traces_and_an_empty_store_are_refused(tmp_path, sdb):
    with pytest.raises(BadInput, match=r"week '2026-W30' has no traces; traces span 2026-W19..2026-W20"):
        run_plan(sdb, Plan(anomaly=ALL_ANOMALIES), "ana", week="2026-W30")
    with pytest.raises(BadInput, match="week 'W19'"):
        preview_plan(sdb, Plan(anomaly=ALL_ANOMALIES), week="W19")
    with pytest.raises(BadInput, match="no traces to sample"):
        run_plan(open_db(tmp_path / "empty.db"), Plan(anomaly=ALL_ANOMALIES), "ana")
    assert sdb["sample_batches"].count == 0


# Plans: files, storage, preview ----------------------------------------------------------------------


def test_plan_files_round_trip_and_the_example_is_the_demo_plan(tmp_path):
    assert load_plan_file("data/plans/weekly.toml") == DEMO_PLAN
    every = load_plan_file("data/plans/every-rule.toml")
    assert {s.key for s in every.strata} == set(STRATUM_KEYS)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(EVERYTHING.as_dict()))
    assert load_plan_file(path) == EVERYTHING
    (tmp_path / "bad.toml").write_text("name = ")
    with pytest.raises(BadInput, match="cannot be read"):
        load_plan_file(tmp_path / "bad.toml")
    with pytest.raises(BadInput, match=r"expected a \.toml or \.json"):
        load_plan_file(tmp_path / "plan.yaml")


def test_saved_plans_are_upserted_by_name_and_audited(sdb):
    save_plan(sdb, EVERYTHING, "ana")
    save_plan(sdb, EVERYTHING.replace(cap=None), "ana")
    assert saved_plans(sdb) == [EVERYTHING.replace(cap=None)]
    assert saved_plan(sdb, "everything").cap is None
    assert [e["action"] for e in audit_entries(sdb)][:2] == ["save_plan", "save_plan"]
    delete_plan(sdb, "everything", "ana")
    with pytest.raises(NotFound, match="'everything'"):
        saved_plan(sdb, "everything")


def test_preview_predicts_the_batch_and_running_writes_batch_ledger_and_audit(sdb):
    preview = preview_plan(sdb, EVERYTHING, WEEK)
    assert sdb["sample_batches"].count == 0
    batch = run_plan(sdb, EVERYTHING, "ana", WEEK)
    assert (preview.window, preview.selected, preview.capped) == (batch.window, batch.selected, batch.sampled)
    kept = batch_rule_counts(sdb, batch.id)
    picks = {r["rule"]: r["picks"] for r in preview.rules}
    assert set(kept) == set(picks) and all(kept[rule] <= picks[rule] for rule in picks)
    stored = sample_batches(sdb)[0]
    assert (stored["id"], stored["created_by"], stored["seed"], stored["week"]) == (batch.id, "ana", 11, WEEK)
    assert stored["plan"] == EVERYTHING.as_dict() and stored["reasons"] == batch.reasons
    entry = audit_entries(sdb)[0]
    assert (entry["actor"], entry["action"], entry["entity_id"]) == ("ana", "sample", str(batch.id))
    assert batch_trace_ids(sdb, batch.id)[0] in picked_by(items(sdb, batch.id), "anomaly:")


# CLI -----------------------------------------------------------------------------------------------


def cli(argv: list[str]) -> int:
    """The exit code of ``python -m flywheel`` with these arguments (argparse errors exit directly)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_cli_json_contract(tmp_path, capsys):
    load(tmp_path, make_traces(n=300), "cli.db")
    args = ["sample", "--db", str(tmp_path / "cli.db"), "--random", "0.05", "--anomaly", "--seed", "4"]
    assert main([*args, "--week", WEEK, "--json", "--actor", "cron"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"batch_id", "week", "sampled", "reasons", "scrubbed"} <= set(out)
    assert out["week"] == WEEK and out["sampled"] > 0 and out["scrubbed"] == out["sampled"]
    db = open_db(tmp_path / "cli.db")
    assert db["batch_items"].count == out["sampled"]
    assert sum(out["reasons"].values()) >= out["sampled"]
    assert db.execute("SELECT count(*) FROM scrubs").fetchone()[0] == out["sampled"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--random", "1.5"], "random rate 1.5"),
        (["--random", "0.1", "--week", "2026-19"], "week '2026-19'"),
        (["--random", "0.1", "--week", "2026-W40"], "week '2026-W40' has no traces"),
        (["--plan", "data/plans/weekly.toml", "--anomaly"], "--anomaly"),
        (["--plan", "nope.toml"], "does not exist"),
        (["--random", "abc"], "invalid float value: 'abc'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    load(tmp_path, make_traces(n=50), "cli.db")
    assert cli(["sample", "--db", str(tmp_path / "cli.db"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_refuses_a_missing_database(tmp_path, capsys):
    assert cli(["sample", "--db", str(tmp_path / "none.db"), "--random", "0.1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


# Faults and load: empty batches, odd weeks, repeats, resumes, the write lock ---------------------------


def test_a_plan_that_picks_nothing_writes_no_batch_and_says_so(sdb, tmp_path, capsys):
    nothing = Plan(strata=(Stratum.of("cohort", quota=3, values=["no-such-cohort"]),))
    with pytest.raises(NothingSampled, match=r"picked no trace among the 1500 traces of 2026-W19"):
        run_plan(sdb, nothing, "ana", week=WEEK)
    assert sdb["sample_batches"].count == 0
    plan = tmp_path / "nothing.json"
    plan.write_text(json.dumps(nothing.as_dict()))
    sdb.close()
    assert cli(["sample", "--db", str(tmp_path / "s.db"), "--plan", str(plan), "--week", WEEK]) == 2
    assert "picked no trace" in capsys.readouterr().err


def test_weeks_sort_by_time_not_as_text(sdb):
    row = {"ts": "0999-01-05T00:00:00.000Z", "input": "x", "content_hash": "h"}
    sdb["traces"].insert_all([{**row, "trace_id": "old", "week": "999-W01"}])
    weeks = sample_weeks(sdb)
    assert weeks == [OTHER_WEEK, WEEK, "999-W01"]
    assert resolve_week(sdb, None) == OTHER_WEEK
    assert sorted(["999-W01", "2026-W02", "2026-W10", "10000-W01"], key=week_order) == [
        "999-W01",
        "2026-W02",
        "2026-W10",
        "10000-W01",
    ]


def test_the_same_plan_week_and_seed_reuse_their_batch_and_resume_its_scrubbing(sdb):
    from flywheel.review.scrubs import scrub_traces

    plan = Plan(name="small", anomaly=("escalated",))
    batch = run_plan(sdb, plan, "ana", week=WEEK)
    ids = batch_trace_ids(sdb, batch.id)
    scrub_traces(sdb, ids[:3], "ana")  # the run was killed after three scrubs
    assert unscrubbed_count(sdb, batch.id) == len(ids) - 3
    resumed = sample_and_scrub(sdb, plan, "ana", week=WEEK)
    assert resumed.repeated and resumed.batch.id == batch.id and resumed.scrubbed == len(ids) - 3
    assert "already sampled 2026-W19 into batch 1" in resumed.summary()
    assert unscrubbed_count(sdb, batch.id) == 0 and sdb["sample_batches"].count == 1
    other_seed = sample_and_scrub(sdb, plan.replace(seed=8, random_rate=0.01), "ana", week=WEEK)
    assert not other_seed.repeated and other_seed.batch.id == 2
    again = sample_and_scrub(sdb, plan, "ana", week=WEEK, again=True)
    assert not again.repeated and again.batch.id == 3 and again.scrubbed == 0  # its traces are scrubbed


def test_the_cli_says_when_it_reuses_a_batch(tmp_path, capsys):
    load(tmp_path, make_traces(n=100), "cli.db")
    args = ["sample", "--db", str(tmp_path / "cli.db"), "--random", "0.02", "--week", WEEK, "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert (first["repeated"], second["repeated"]) == (False, True)
    assert second["batch_id"] == first["batch_id"] and second["scrubbed"] == 0
    assert main([*args, "--again"]) == 0
    assert json.loads(capsys.readouterr().out)["batch_id"] == first["batch_id"] + 1


def test_sampling_holds_the_write_lock_only_to_insert_the_batch(sdb, tmp_path, monkeypatch):
    """The pool is built outside any transaction; a labeler writing meanwhile never meets a lock error."""
    seen = []
    sdb.conn.set_trace_callback(lambda sql: seen.append((sql, sdb.conn.in_transaction)))
    monkeypatch.setenv("FLYWHEEL_BUSY_TIMEOUT_MS", "500")
    stop, errors, writes = threading.Event(), [], []

    def label_meanwhile():
        writer = open_db(tmp_path / "s.db")
        while not stop.is_set():
            try:
                with store_write(writer):
                    writer.execute(
                        "INSERT INTO audit_log (at, actor, action) VALUES ('now', 'lena', 'label')"
                    )
                writes.append(1)
            except Exception as error:  # any error is what this test looks for
                errors.append(error)

    thread = threading.Thread(target=label_meanwhile)
    thread.start()
    try:
        for seed in range(3):
            run_plan(sdb, EVERYTHING.replace(seed=seed), "ana", week=WEEK)
    finally:
        stop.set()
        thread.join()
    assert not errors and writes
    heavy = [(sql, busy) for sql, busy in seen if sql.startswith("CREATE TEMP TABLE fw_pool")]
    assert len(heavy) == 3 and not any(busy for _, busy in heavy)
    locked = [sql.lstrip() for sql, busy in seen if busy]
    assert locked and not any(sql.startswith(("CREATE", "DROP")) or "FROM fw_" in sql[:200] for sql in locked)


def test_cohort_values_are_the_distinct_cohorts(sdb, traces):
    assert cohort_values(sdb) == sorted({t["cohort"] for t in traces})
