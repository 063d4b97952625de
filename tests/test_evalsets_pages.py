"""The Eval pages through app.py: eval sets (fold-in), pass rate and the release gate."""

import pytest
from pages_support import app, open_page

from flywheel.demo.history import DEMO_SYSTEMS
from flywheel.evals.versions import current_version
from flywheel.store.db import open_db

PAGES = ("pages/evalsets.py", "pages/quality.py", "pages/gate.py")


def test_pages_render_on_an_empty_database(tmp_path, monkeypatch):
    path = tmp_path / "empty.db"
    open_db(path).close()
    at = app(path, monkeypatch)
    for page in PAGES:
        open_page(at, page)
        assert at.title[0].value and at.info


def test_lead_folds_in_on_the_eval_sets_page(demo_copy, monkeypatch):
    # version numbers are unique across the demo's two sets: the fold into quality is the next of all
    before = open_db(demo_copy).execute("SELECT max(version) FROM eval_versions").fetchone()[0]
    at = open_page(app(demo_copy, monkeypatch), "pages/evalsets.py")
    assert [m.label for m in at.metric][:2] == ["Current version", "Active rows"]
    assert at.selectbox(key="evalset_name").value == "quality"
    at.text_input(key="fold_note").input("weekly fold")
    at.button(key="fold_in").click().run()
    assert not at.exception
    db = open_db(demo_copy)
    assert current_version(db, "quality") == before + 1
    assert db.execute("SELECT note FROM eval_versions ORDER BY version DESC").fetchone()[0] == "weekly fold"
    assert any(f"version {before + 1}:" in s.value for s in at.success)
    audit = db.execute("SELECT actor FROM audit_log WHERE action = 'fold_in' ORDER BY id DESC").fetchone()
    assert audit == ("ana",)


def test_pass_rate_page_charts_versions_and_flags_the_retired_row(demo_copy, monkeypatch):
    at = open_page(app(demo_copy, monkeypatch), "pages/quality.py")
    assert at.get("plotly_chart"), "no pass-rate chart"
    text = " ".join(m.value for m in at.markdown)
    assert "no carried row fell: not a regression" in text
    assert any("retired rows failed again" in w.value for w in at.warning)


def test_gate_page_shows_the_verdict_and_the_flipped_rows(demo_copy, monkeypatch):
    at = open_page(app(demo_copy, monkeypatch), "pages/gate.py")
    assert at.selectbox(key="gate_baseline").value == DEMO_SYSTEMS[0]
    assert at.selectbox(key="gate_challenger").value == DEMO_SYSTEMS[1]
    assert next(s.value for s in at.success).startswith("**SHIP**")
    flips = at.dataframe[0].value
    assert set(flips["flip"]) == {"fail→pass"} and {"row_id", "flip"} <= set(flips)
    assert len(at.expander) >= len(flips)  # each flipped row in full, its outputs side by side
    # the older system as challenger: its adversarial rows fall below the threshold
    at.selectbox(key="gate_baseline").set_value(DEMO_SYSTEMS[1]).run()
    assert at.selectbox(key="gate_challenger").value == DEMO_SYSTEMS[0]
    assert at.error[0].value.startswith("**BLOCK**")
    assert any(m.value.startswith(":red[:material/cancel:] **safety**") for m in at.markdown)


def test_a_labeler_gets_none_of_the_eval_pages(demo_copy, monkeypatch):
    at = app(demo_copy, monkeypatch, user="lena")
    for page in PAGES:
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)
