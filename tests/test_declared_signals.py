"""Declared signals: read from a trace's signals or metadata, usable by name in sampling plans (anomaly
and stratified) on the store, DuckDB and Spark, and saying so when their data is absent."""

import json
import random
import shutil

import duckdb
import pytest
from conftest import jsonl

from flywheel.config import load_config
from flywheel.errors import BadInput
from flywheel.ingest.run import ingest_files
from flywheel.sampling.batches import (
    NothingSampled,
    batch_items,
    batch_ledger,
    batch_reasons,
    batch_trace_ids,
    preview_plan,
    run_plan,
)
from flywheel.sampling.plans import Plan, Stratum
from flywheel.sampling.source import sample_source
from flywheel.store.db import open_db
from flywheel.traces.signals import Declared, declared_signals, parse_declarations, signal_presence

WEEK = "2026-W19"
N = 600


def signal_traces(seed: int = 3, n: int = N, stars: bool = True) -> list[dict]:
    """A week of traces carrying the seeds' signals beyond the built-in columns."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        signals = {"thumbs": "up", "regenerated": False, "user_edited_chars": rng.choice([0, 5, 120, 300])}
        if rng.random() < 0.5:
            signals["rephrased_after_s"] = rng.choice([4, 12, 29, 31, 90, 600])
        if stars and rng.random() < 0.2:
            signals["stars"] = rng.randint(1, 5)
        signals["copied"] = rng.random() < 0.6
        out.append(
            {
                "trace_id": f"s-{i:05d}",
                "timestamp": f"2026-05-{4 + i % 7:02d}T{i % 24:02d}:00:00Z",
                "input": f"question {i}",
                "cohort": rng.choice(["free", "smb"]),
                "signals": signals,
                "metadata": {"session_continued": rng.random() < 0.7},
            }
        )
    return out


def expected(traces: list[dict], test) -> set[str]:
    return {t["trace_id"] for t in traces if test(t["signals"], t["metadata"])}


@pytest.fixture
def store(tmp_path):
    traces = signal_traces()
    db = open_db(tmp_path / "s.db")
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", traces)], config=load_config())
    return db, traces, tmp_path


def test_the_shipped_declarations_cover_the_seeds_signals():
    names = {d.name for d in declared_signals()}
    assert {
        "heavy_edit",
        "abandoned",
        "low_stars",
        "not_copied",
        "session_ended",
        "rephrase_retry",
        "slow_completion",
    } <= names
    kinds = {d.name: d.kind for d in declared_signals()}
    assert kinds["rephrase_retry"] == "event" and kinds["low_stars"] == "number"


@pytest.mark.parametrize(
    ("entry", "fault"),
    [
        ({"name": "x", "kind": "colour", "field": "signals.x"}, "kind 'colour'"),
        ({"name": "x", "kind": "boolean", "field": "input"}, "field 'input'"),
        ({"name": "x", "kind": "boolean", "field": "signals.thumbs"}, "built-in"),
        ({"name": "x", "kind": "boolean", "field": "signals.x", "bad": "yes"}, "bad 'yes'"),
        ({"name": "x", "kind": "number", "field": "signals.x", "bad": "above"}, "threshold None"),
        ({"name": "x", "kind": "event", "field": "signals.x", "within_s": 0}, "within_s 0"),
        ({"name": "Bad Name", "kind": "event", "field": "signals.x", "within_s": 3}, "'Bad Name'"),
        ({"name": "thumbs_down", "kind": "boolean", "field": "signals.y"}, "declared twice"),
        ({"name": "x", "kind": "boolean", "field": "signals.x", "colour": 1}, "expected the keys"),
    ],
)
def test_a_bad_declaration_is_refused_naming_the_fault(entry, fault):
    with pytest.raises(BadInput, match=fault):
        parse_declarations({"signal": [entry]})


def test_an_undeclared_name_still_fails_a_plan():
    with pytest.raises(BadInput, match="unknown anomaly signal 'edits'"):
        Plan(anomaly=("edits",))
    with pytest.raises(BadInput, match="unknown anomaly signal 'edits'"):
        Stratum.of("signal", names=["edits"], quota=3)


def test_declared_signals_pick_by_name_in_an_anomaly_rule(store):
    db, traces, _ = store
    plan = Plan(name="declared", anomaly=("heavy_edit", "rephrase_retry", "not_copied"))
    batch = run_plan(db, plan, "ana", week=WEEK)
    picked = set(batch_trace_ids(db, batch.id))
    want = expected(
        traces,
        lambda s, m: (
            s["user_edited_chars"] > 80 or 0 <= s.get("rephrased_after_s", -1) <= 30 or not s["copied"]
        ),
    )
    assert picked == want and len(want) > 100
    reasons = batch_reasons(db, batch.id)
    within = expected(traces, lambda s, m: 0 <= s.get("rephrased_after_s", -1) <= 30)
    assert reasons["anomaly:rephrase_retry"] == len(within)  # 29 s counts, 31 s does not


def test_a_signal_stratum_takes_up_to_its_quota_of_each_signal(store):
    db, traces, _ = store
    plan = Plan(name="strata", strata=(Stratum.of("signal", names=["low_stars", "not_copied"], quota=7),))
    batch = run_plan(db, plan, "ana", week=WEEK)
    ledger = {r["stratum"]: r for r in batch_ledger(db, batch.id)}
    low = expected(traces, lambda s, m: s.get("stars", 9) < 3)
    assert ledger["signal=low_stars"]["population"] == len(low)
    assert ledger["signal=low_stars"]["selected"] == 7
    assert ledger["signal=not_copied"]["selected"] == 7
    assert batch.sampled <= 14


def test_a_signal_whose_data_is_absent_says_so_and_does_not_fail_the_plan(tmp_path):
    db = open_db(tmp_path / "s.db")
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", signal_traces(stars=False))], config=load_config())
    plan = Plan(name="absent", anomaly=("low_stars", "heavy_edit"))
    preview = preview_plan(db, plan, WEEK)
    assert preview.absent == ("low_stars",)
    batch = run_plan(db, plan, "ana", week=WEEK)
    ledger = batch_ledger(db, batch.id)
    assert [r["stratum"] for r in ledger if r["kind"] == "no data"] == [
        "low_stars: no trace of the week carries it"
    ]
    alone = Plan(name="alone", anomaly=("low_stars",))
    with pytest.raises(NothingSampled, match=r"no trace carries the signal\(s\) low_stars"):
        run_plan(db, alone, "ana", week=WEEK)
    presence = {p["signal"]: p for p in signal_presence(db)}
    assert presence["low_stars"]["status"] == "no data" and presence["low_stars"]["with_data"] == 0
    assert presence["heavy_edit"]["status"] == "ok" and presence["heavy_edit"]["fired"] > 0
    assert presence["abandoned"]["status"] == "no data"


def test_a_declaration_can_read_metadata_and_the_file_is_read_when_used(store, monkeypatch):
    db, traces, tmp_path = store
    path = tmp_path / "signals.toml"
    path.write_text(
        '[[signal]]\nname = "carried_on"\nkind = "boolean"\nfield = "metadata.session_continued"\n'
    )
    monkeypatch.setenv("FLYWHEEL_SIGNALS", str(path))
    assert [d.name for d in declared_signals()] == ["carried_on"]
    batch = run_plan(db, Plan(name="meta", anomaly=("carried_on",)), "ana", week=WEEK)
    assert set(batch_trace_ids(db, batch.id)) == expected(traces, lambda s, m: m["session_continued"])
    with pytest.raises(BadInput, match="unknown anomaly signal 'heavy_edit'"):
        Plan(anomaly=("heavy_edit",))


DECLARED_PLAN = Plan(
    name="declared-everywhere",
    seed=5,
    cap=60,
    random_rate=0.02,
    anomaly=("heavy_edit", "rephrase_retry", "low_stars"),
    strata=(Stratum.of("signal", names=["not_copied", "abandoned"], quota=9),),
)


def _same(db, store, batch_id, expected_id):
    assert batch_items(db, batch_id) == batch_items(store, expected_id)
    assert batch_ledger(db, batch_id) == batch_ledger(store, expected_id)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("declared")
    traces = signal_traces(seed=8)
    src = jsonl(path / "traces.jsonl", traces)
    duckdb.execute(f"COPY (SELECT * FROM read_json_auto('{src}')) TO '{path}/traces.parquet'")
    store = open_db(path / "store.db")
    ingest_files(store, [src], config=load_config())
    batch = run_plan(store, DECLARED_PLAN, "ana", week=WEEK)
    return {"dir": path, "store": store, "batch": batch}


@pytest.mark.parametrize("name", ["traces.jsonl", "traces.parquet"])
def test_duckdb_picks_declared_signals_exactly_as_the_store(source, tmp_path, name):
    db = open_db(tmp_path / "d.db")
    run = sample_source(
        db, DECLARED_PLAN, str(source["dir"] / name), "ana", week=WEEK, scrub=False, config=load_config()
    )
    _same(db, source["store"], run.batch.id, source["batch"].id)
    kinds = {r["kind"] for r in batch_ledger(db, run.batch.id)}
    assert "no data" in kinds  # 'abandoned' is in no trace: said at the source too
    trace = db.execute("SELECT metadata FROM traces LIMIT 1").fetchone()[0]
    assert "user_edited_chars" in json.loads(trace)["extra_signals"]  # the signal came along


@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a Java runtime")
@pytest.mark.slow
def test_spark_picks_declared_signals_exactly_as_the_store(source, tmp_path):
    pytest.importorskip("pyspark")
    db = open_db(tmp_path / "k.db")
    path = str(source["dir"] / "traces.parquet")
    run = sample_source(
        db, DECLARED_PLAN, path, "ana", engine="spark", week=WEEK, scrub=False, config=load_config()
    )
    _same(db, source["store"], run.batch.id, source["batch"].id)


def test_a_declared_signal_is_a_frozen_validated_record():
    signal = Declared("x", "event", "signals.x_after_s", within_s=30)
    assert signal.json_path == "$.extra_signals.x_after_s"
    assert signal.fires("v") == "(v >= 0 AND v <= 30.0)"
