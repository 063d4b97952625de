"""The Sample page through app.py on a demo database: plans saved, batches run, ledger shown."""

import pytest
from streamlit.testing.v1 import AppTest

from flywheel.sampling.batches import batch_sql, load_batch, preview_plan, sample_weeks
from flywheel.sampling.plans import DEMO_PLAN, Plan, Stratum, save_plan
from flywheel.store.db import open_db


@pytest.fixture
def demo_db(demo_copy):
    return demo_copy


def sample_page(db_path, monkeypatch) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DB", str(db_path))
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.session_state["user_name"] = "ana"
    at.run()
    at.switch_page("pages/sample.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_demo_shows_batches_with_their_ledger_and_reasons(demo_db, monkeypatch):
    at = sample_page(demo_db, monkeypatch)
    assert at.title[0].value == "Sampling"
    assert at.selectbox(key="plan_choice").value == "weekly"
    batches = at.dataframe[1].value
    assert len(batches) == 6 and batches["sampled"].gt(0).all()
    ledger = at.dataframe[2].value
    assert {"stratum", "population", "selected", "dropped", "in_batch", "rate"} <= set(ledger.columns)
    assert (ledger.loc[ledger["rule"].str.startswith("anomaly:"), "rate"] == 100.0).all()  # drawn as 100.0%
    assert "md5('7:' || trace_id)" in at.code[0].value
    assert len(at.get("plotly_chart")) == 1
    for table in (batches, ledger):  # no literal None for a missing value
        assert not table.isna().any().any() and "None" not in table.astype(str).to_numpy()
    assert set(ledger.loc[ledger["rule"].str.startswith("anomaly:"), "quota"]) == {"all"}


def test_saving_a_plan_writes_the_plans_table(demo_db, monkeypatch):
    at = sample_page(demo_db, monkeypatch)
    at.selectbox(key="plan_choice").set_value("(new plan)").run()
    at.text_input[0].set_value("nightly")
    at.number_input[0].set_value(42)
    next(c for c in at.checkbox if c.label == "long conversation").check()
    next(b for b in at.button if b.label == "Save plan").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    body = open_db(demo_db).execute("SELECT body FROM sampling_plans WHERE name = 'nightly'").fetchone()
    assert body is not None and '"seed": 42' in body[0] and '"long_conversation"' in body[0]
    assert at.selectbox(key="plan_choice").value == "nightly"


def test_running_the_plan_creates_a_batch_and_scrubs_it(demo_db, monkeypatch):
    at = sample_page(demo_db, monkeypatch)
    # an early week the demo did not sample
    next(s for s in at.selectbox if s.label == "Week").set_value("2026-W36").run()
    next(b for b in at.button if b.label == "Run plan").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    db = open_db(demo_db)
    batch_id, week, sampled = db.execute(
        "SELECT id, week, sampled FROM sample_batches ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert (batch_id, week) == (7, "2026-W36") and sampled > 0
    scrubbed = db.execute(
        "SELECT count(*) FROM scrubs WHERE trace_id IN (SELECT trace_id FROM batch_items WHERE batch_id = ?)",
        [batch_id],
    ).fetchone()[0]
    assert scrubbed == sampled
    assert any(f"Batch {batch_id}" in s.value for s in at.success)
    assert at.selectbox(key="batch_choice").value == batch_id
    assert at.code[-1].value == batch_sql(db, batch_id)[1]  # the SQL that ran
    assert "FROM traces WHERE week = '2026-W36'" in at.code[-1].value
    next(b for b in at.button if b.label == "Run plan").click().run()  # the same plan and week again
    assert any(f"already sampled 2026-W36 with seed 7: batch {batch_id}" in i.value for i in at.info)
    assert db.execute("SELECT count(*) FROM sample_batches").fetchone()[0] == batch_id


def test_a_new_plan_previews_before_it_is_saved_and_the_preview_is_cached(demo_db, monkeypatch):
    at = sample_page(demo_db, monkeypatch)
    at.selectbox(key="plan_choice").set_value("(new plan)").run()
    assert any("Press Preview" in i.value for i in at.info)
    at.text_input[0].set_value("draft")
    next(c for c in at.checkbox if c.label == "intent").check()
    next(b for b in at.button if b.label == "Preview").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.subheader[0].value == "Preview (not saved): draft"
    rules = at.dataframe[0].value
    assert "stratified:intent" in set(rules["rule"]) and rules["picks"].gt(0).all()
    assert any("Save the plan to run it" in i.value for i in at.info)
    assert not any(b.label == "Run plan" for b in at.button)
    db = open_db(demo_db)
    assert db.execute("SELECT count(*) FROM sampling_plans WHERE name = 'draft'").fetchone()[0] == 0
    seen = []
    db.conn.set_trace_callback(seen.append)
    plan = Plan.from_dict(at.session_state["draft-(new plan)"].as_dict())
    week = next(s for s in at.selectbox if s.label == "Week").value
    preview_plan(db, plan, week)  # the page's run computed it: cached by plan, week and data
    assert not any(sql.startswith("CREATE TEMP TABLE fw_pool") for sql in seen)
    preview_plan(db, plan.replace(seed=99), week)
    preview_plan(db, plan.replace(seed=99), week)
    assert sum(sql.startswith("CREATE TEMP TABLE fw_pool") for sql in seen) == 1


def test_the_rare_intent_share_is_the_long_tail_and_the_page_says_so(demo_db, monkeypatch):
    db = open_db(demo_db)
    week = sample_weeks(db)[0]
    counts = [n for (n,) in db.execute("SELECT count(*) FROM traces WHERE week = ? GROUP BY intent", [week])]
    window = sum(counts)
    rare = Plan(strata=(Stratum.of("intent", quota=1, rare_share=0.02),))
    picked = preview_plan(db, rare, week).rules[0]
    assert picked["population"] <= 0.02 * window and picked["strata"] < len(counts) / 2
    save_plan(db, rare.replace(name="rare"), "ana")
    at = sample_page(demo_db, monkeypatch)
    at.selectbox(key="plan_choice").set_value("rare").run()
    assert any("together make up at most 2.0%" in c.value for c in at.caption)


def test_a_batch_whose_anomalies_exceed_the_cap_says_so_on_the_page(demo_db, monkeypatch):
    db = open_db(demo_db)
    week = "2026-W36"  # a week the demo did not sample
    tight = DEMO_PLAN.replace(name="tight", cap=3)
    preview = preview_plan(db, tight, week)
    assert preview.over_cap > 0, "the demo week needs more anomalies than the cap"
    save_plan(db, tight, "ana")
    at = sample_page(demo_db, monkeypatch)
    at.selectbox(key="plan_choice").set_value("tight").run()
    next(s for s in at.selectbox if s.label == "Week").set_value(week).run()
    assert any("alone exceed the cap of 3: the batch would hold all of them" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Run plan").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    batch = load_batch(db, at.selectbox(key="batch_choice").value)
    assert (batch.week, batch.cap, batch.over_cap) == (week, 3, preview.over_cap)
    assert batch.sampled == batch.anomalies == preview.capped
    note = f"the {batch.anomalies} anomalies alone exceed the cap of 3: all are kept"
    assert sum(note in w.value for w in at.warning) == 2  # the run's message and the ledger's
    ledger = at.dataframe[-1].value
    anomaly_rows = ledger["rule"].str.startswith("anomaly:")
    assert ledger.loc[anomaly_rows, "over_cap"].sum() >= batch.over_cap
    assert (ledger.loc[~anomaly_rows, "over_cap"] == 0).all()
    assert (ledger.loc[anomaly_rows, "dropped"] == 0).all()
