"""Sampling at the source: DuckDB over Parquet/JSONL/CSV and Spark SQL in local mode pick exactly what
the store picks, quarantine bad rows, and the SQL the page shows is the SQL that ran."""

import json
import os
import shutil

import duckdb
import pytest
from conftest import jsonl
from sampling_support import EVERYTHING, WEEK, N, make_traces
from streamlit.testing.v1 import AppTest

from flywheel.__main__ import main
from flywheel.config import load_config
from flywheel.errors import BadInput
from flywheel.ingest.run import ingest_files
from flywheel.sampling.batches import (
    batch_items,
    batch_ledger,
    batch_sql,
    batch_trace_ids,
    load_batch,
    run_plan,
)
from flywheel.sampling.plans import Plan, save_plan
from flywheel.sampling.source import parse_columns, sample_source, source_sql
from flywheel.store.db import open_db
from flywheel.traces.queries import SIGNALS

# 282 picks in the week, 230 of them anomalies. The cap bites stratified and random picks only: at 250
# it drops 32 of those; at 150 the anomalies alone exceed it and the batch holds all 230, nothing else.
CAPPED = EVERYTHING.replace(cap=250)
OVER = EVERYTHING.replace(cap=150)
PLANS = {"capped": CAPPED, "over": OVER}
FLAT = ", ".join(f"signals.{name} AS {name}" for name in SIGNALS if name != "thumbs")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same traces as JSONL, nested Parquet, flat Parquet with other column names, and the store."""
    path = tmp_path_factory.mktemp("source")
    source = jsonl(path / "traces.jsonl", make_traces())
    duckdb.execute(f"COPY (SELECT * FROM read_json_auto('{source}')) TO '{path}/traces.parquet'")
    duckdb.execute(
        f"COPY (SELECT trace_id, timestamp, input, cohort, intent, signals.thumbs AS thumbs, {FLAT}"
        f" FROM read_json_auto('{source}')) TO '{path}/flat.parquet'"
    )
    (path / "parts").mkdir()
    for part, (low, high) in enumerate([(0, 800), (800, 2000)]):
        duckdb.execute(
            f"COPY (SELECT trace_id AS request_id, timestamp AS created, input AS prompt, cohort, intent,"
            f" {FLAT}, signals.thumbs AS feedback FROM read_json_auto('{source}')"
            f" WHERE CAST(substr(trace_id, 3) AS INTEGER) >= {low} AND CAST(substr(trace_id, 3) AS INTEGER)"
            f" < {high}) TO '{path}/parts/part-{part}.parquet'"
        )
    store = open_db(path / "store.db")
    ingest_files(store, [source], config=load_config())
    expected = {kind: run_plan(store, plan, "ana", week=WEEK) for kind, plan in PLANS.items()}
    return {"dir": path, "store": store, "expected": expected}


def same_batch(files, db, batch_id: int, kind: str = "capped") -> None:
    store, expected = files["store"], files["expected"][kind]
    assert batch_items(db, batch_id) == batch_items(store, expected.id)
    assert batch_ledger(db, batch_id) == batch_ledger(store, expected.id)
    mine = load_batch(db, batch_id).as_json()
    theirs = expected.as_json()
    keys = ("window", "sampled", "dropped", "reasons", "cap", "anomalies", "over_cap")
    assert {k: mine[k] for k in keys} == {k: theirs[k] for k in keys}


def test_the_store_keeps_every_anomaly_and_caps_only_the_other_picks(files):
    store, capped, over = files["store"], files["expected"]["capped"], files["expected"]["over"]
    assert (capped.selected, capped.anomalies, capped.sampled, capped.over_cap) == (282, 230, 250, 0)
    assert (over.selected, over.anomalies, over.sampled, over.over_cap) == (282, 230, 230, 80)
    assert {i["priority"] for i in batch_items(store, over.id)} == {0}
    assert [i["priority"] for i in batch_items(store, capped.id)].count(0) == 230


@pytest.mark.parametrize("kind", PLANS)
@pytest.mark.parametrize("name", ["traces.parquet", "traces.jsonl"])
def test_duckdb_over_files_picks_exactly_what_the_store_picks(files, tmp_path, name, kind):
    db = open_db(tmp_path / "s.db")
    run = sample_source(
        db, PLANS[kind], str(files["dir"] / name), "ana", week=WEEK, scrub=False, config=load_config()
    )
    batch = run.batch
    size = {"capped": 250, "over": 230}[kind]  # the week only; the cap, or every anomaly past it
    assert (batch.window, batch.sampled, batch.quarantined) == (N, size, 0)
    assert batch.dropped == batch.selected - size > 0
    same_batch(files, db, batch.id, kind)
    ledger = {r["stratum"]: r for r in batch_ledger(db, batch.id)}
    assert ledger["cohort=tiny"]["selected"] == 3 and ledger["cohort=free"]["selected"] == 5  # quotas
    assert db["traces"].count == size  # only the sample travelled


def test_a_glob_of_files_with_other_column_names_is_mapped(files, tmp_path):
    db = open_db(tmp_path / "s.db")
    columns = parse_columns(["trace_id=request_id", "timestamp=created", "input=prompt", "thumbs=feedback"])
    glob = str(files["dir"] / "parts" / "*.parquet")
    run = sample_source(
        db, CAPPED, glob, "ana", columns=columns, week=WEEK, scrub=False, config=load_config()
    )
    same_batch(files, db, run.batch.id)
    with pytest.raises(BadInput, match="request_id"):
        sample_source(
            db, CAPPED, glob, "ana", week=WEEK, scrub=False, config=load_config()
        )  # no trace_id column: say which exist


def test_bad_rows_at_the_source_are_quarantined_and_the_rest_sampled(tmp_path):
    traces = make_traces(n=100)
    bad = [
        {**traces[0], "trace_id": "bad-input", "input": None, "signals": {"escalated": True}},
        {**traces[1], "trace_id": "bad-thumbs", "signals": {"escalated": True, "thumbs": "sideways"}},
        {**traces[2], "trace_id": "bad-time", "timestamp": "yesterday", "signals": {"escalated": True}},
    ]
    source = jsonl(tmp_path / "t.jsonl", traces + bad)
    db = open_db(tmp_path / "s.db")
    run = sample_source(
        db,
        Plan(anomaly=("escalated",)),
        str(source),
        "ana",
        week=WEEK,
        scrub=False,
        config=load_config(),
    )
    flagged = {t["trace_id"] for t in traces[:100] if t["signals"]["escalated"]}
    assert run.batch.quarantined == 2 and set(batch_trace_ids(db, run.batch.id)) == flagged
    reasons = [r for (r,) in db.execute("SELECT reason FROM quarantine ORDER BY line_no")]
    assert len(reasons) == 2 and "input" in reasons[0] and "thumbs" in reasons[1]
    row = batch_ledger(db, run.batch.id)[0]
    assert (row["population"], row["in_batch"]) == (len(flagged) + 2, len(flagged))  # counted at the source


def test_cli_samples_a_source_into_a_scrubbed_batch(files, tmp_path, capsys):
    db_path = tmp_path / "cli.db"
    open_db(db_path).close()
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(Plan(random_rate=0.01, seed=3).as_dict()))
    args = ["sample", "--db", str(db_path), "--plan", str(plan), "--week", WEEK, "--json"]
    assert main([*args, "--source", str(files["dir"] / "traces.parquet"), "--engine", "duckdb"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine"] == "duckdb" and out["window"] == N and out["sampled"] == out["scrubbed"] > 0
    assert main([*args, "--source", str(files["dir"] / "nope.csv")]) == 2
    assert "DuckDB could not run the plan" in capsys.readouterr().err


def test_the_sql_on_the_page_is_the_sql_that_ran(files, tmp_path, monkeypatch):
    shutil.copy(files["dir"] / "store.db", tmp_path / "page.db")
    db = open_db(tmp_path / "page.db")
    parquet = str(files["dir"] / "traces.parquet")
    run = sample_source(db, CAPPED, parquet, "ana", week=WEEK, scrub=False, again=True, config=load_config())
    engine, ran = batch_sql(db, run.batch.id)
    assert engine == "duckdb" and f"read_parquet('{parquet}'" in ran
    fresh = duckdb.connect()  # the stored script, pasted into another DuckDB, gives the same batch
    for sql in ran.rstrip(";").split(";\n\n"):
        fresh.execute(sql)
    picked = {r[0] for r in fresh.execute("SELECT trace_id FROM fw_batch").fetchall()}
    assert picked == set(batch_trace_ids(files["store"], files["expected"]["capped"].id))
    save_plan(db, CAPPED, "ana")
    monkeypatch.setenv("FLYWHEEL_DB", str(tmp_path / "page.db"))
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.session_state["user_name"] = "ana"
    at.run()
    at.switch_page("pages/sample.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="batch_choice").value == run.batch.id
    assert at.code[-1].value == ran
    flat = str(files["dir"] / "flat.parquet")  # columns named as ours, as the page's SQL assumes
    at.toggle(key="source_sql").set_value(True).run()
    at.text_input[1].set_value(flat).run()  # the preview's DuckDB tab for these files
    shown = next(c.value for c in at.code if "read_parquet" in c.value and c.value != ran)
    assert shown == source_sql(CAPPED, WEEK, "duckdb", flat).text()
    fresh = duckdb.connect()
    for sql in shown.rstrip(";").split(";\n\n"):
        fresh.execute(sql)
    assert {r[0] for r in fresh.execute("SELECT trace_id FROM fw_batch").fetchall()} == picked


# Spark SQL (local mode) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    """One local SparkSession for the module (it takes seconds to start)."""
    try:
        from flywheel.sampling.source import spark_session

        session = spark_session("local[1]")
    except Exception as error:  # no pyspark or no Java on this machine
        if os.environ.get("CI"):
            pytest.fail(f"Spark cannot run in CI: {error}")
        pytest.skip(f"Spark cannot run here: {error}")
    return session


@pytest.mark.parametrize("kind", PLANS)
def test_spark_local_picks_exactly_what_the_store_picks(files, tmp_path, spark, kind):
    db = open_db(tmp_path / "s.db")
    run = sample_source(
        db,
        PLANS[kind],
        str(files["dir"] / "traces.parquet"),
        "ana",
        "spark",
        week=WEEK,
        scrub=False,
        config=load_config(),
    )
    size = {"capped": 250, "over": 230}[kind]
    assert (run.batch.window, run.batch.sampled, run.batch.engine) == (N, size, "spark")
    same_batch(files, db, run.batch.id, kind)
    engine, ran = batch_sql(db, run.batch.id)
    assert engine == "spark" and "CACHE TABLE fw_pool" in ran and "USING parquet" in ran
