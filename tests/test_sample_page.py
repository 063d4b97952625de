"""The Sample page through app.py on a demo database: plans saved, batches run, ledger shown."""

import pytest
from streamlit.testing.v1 import AppTest

from flywheel.store import open_db


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
    assert (ledger.loc[ledger["rule"].str.startswith("anomaly:"), "rate"] == 1.0).all()
    assert "md5('7:' || trace_id)" in at.code[0].value
    assert len(at.get("plotly_chart")) == 1


def test_saving_a_plan_writes_the_plans_table(demo_db, monkeypatch):
    at = sample_page(demo_db, monkeypatch)
    at.selectbox(key="plan_choice").set_value("(new plan)").run()
    at.text_input[0].set_value("nightly")
    at.number_input[0].set_value(42)
    next(c for c in at.checkbox if c.label == "long conversation").check()
    at.button[0].click().run()  # the form's "Save plan"
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
