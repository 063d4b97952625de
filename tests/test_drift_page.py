"""The Drift page through app.py: the demo's series, clusters, a run with progress, send to sampling."""

import json

import pytest
from pages_support import app, open_page

from flywheel.demo.drift import DEMO_MAX_TRACES
from flywheel.drift import run as drift
from flywheel.store.db import open_db
from pages._ui import md


def statistics(at) -> list[str]:
    """The statistics behind the verdict, one click away under its sentence."""
    (box,) = [e for e in at.expander if e.label == "The statistics behind it"]
    return [m.value for m in box.markdown]


def test_the_demo_series_alarms_after_its_shift_and_never_before(demo_copy):
    # the demo's traffic shifts in its last four weeks (new cohort, intents rare before)
    series = drift.drift_series(open_db(demo_copy))
    assert len(series) == 12
    early, late = series[:8], series[8:]
    assert not any(w["alarm"] for w in early), [(w["window"], w["p_value"]) for w in early]
    assert late[-1]["alarm"] and late[-1]["share_beyond"] > max(w["share_beyond"] for w in early)


def test_the_demo_shows_a_series_and_named_clusters_a_lead_sends_to_sampling(demo_copy, monkeypatch):
    at = open_page(app(demo_copy, monkeypatch, "ana"), "pages/drift.py")
    assert at.title[0].value == "Drift"
    assert at.get("plotly_chart") and at.dataframe[1].value["traces"].sum() > 0
    assert any("beyond the far point" in s for s in statistics(at))
    clusters = at.dataframe[1].value
    at.button(key="FormSubmitter:send-Send to sampling").click().run()
    assert not at.exception
    db = open_db(demo_copy)
    batch = db.execute(
        "SELECT id, plan_name, reasons FROM sample_batches ORDER BY id DESC LIMIT 1"
    ).fetchone()
    reasons = json.loads(batch[2])
    assert batch[1] == "drift" and clusters["reason"].iloc[0] in reasons
    assert not any(name in reason for name in clusters["cluster"] for reason in reasons)
    assert (
        db.execute(
            "SELECT count(*) FROM scrubs WHERE trace_id IN"
            " (SELECT trace_id FROM batch_items WHERE batch_id = ?)",
            [batch[0]],
        ).fetchone()[0]
        > 0
    )


def test_the_page_says_why_for_a_run_stored_before_windows_kept_the_far_point(demo_copy, monkeypatch):
    db = open_db(demo_copy)
    last = drift.drift_series(db)[-1]
    with db.conn:
        db.execute("UPDATE drift_windows SET ref_share = NULL, far_tau = NULL, far_share = NULL")
    db.close()
    at = open_page(app(demo_copy, monkeypatch, "ana"), "pages/drift.py")
    said = statistics(at)
    assert not at.exception and len(said) == 1 and "far point" not in said[0]
    assert f"against {last['run_ref_share']:.1%} of the reference window" in said[0]


def test_stored_weeks_render_literally(demo_copy, monkeypatch):
    db = open_db(demo_copy)
    with db.conn:
        db.execute("UPDATE drift_runs SET ref_from = '![x](http://e/x.png)'")
    db.close()
    at = open_page(app(demo_copy, monkeypatch, "ana"), "pages/drift.py")
    said = statistics(at)
    assert not at.exception and md("![x](http://e/x.png)") in said[0] and "![" not in said[0]


def test_a_lead_runs_drift_on_a_week_from_the_page_and_a_warm_run_embeds_nothing(demo_copy, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DRIFT_MAX_TRACES", str(DEMO_MAX_TRACES))  # the demo's sample: cached
    db = open_db(demo_copy)
    runs = db["drift_runs"].count
    at = open_page(app(demo_copy, monkeypatch, "ana"), "pages/drift.py")
    week = at.selectbox(key="drift_window").options[2]
    at.selectbox(key="drift_window").select(week)
    at.button(key="FormSubmitter:run-Run drift").click().run()
    assert not at.exception and any("Drift run" in s.value for s in at.success)
    assert db["drift_runs"].count == runs + 1
    assert drift.latest_run(db)["scope"] == week and drift.latest_run(db)["embedded"] == 0


def test_without_a_run_the_page_says_what_it_needs(tmp_path, monkeypatch):
    path = tmp_path / "empty.db"
    open_db(path).close()
    at = open_page(app(path, monkeypatch, "ana"), "pages/drift.py")
    assert "No drift run yet" in at.info[0].value


def test_only_leads_open_the_drift_page(demo_copy, monkeypatch):
    at = app(demo_copy, monkeypatch, "ravi")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/drift.py")
