"""Lead pages in plain words: a saved plan says so, the plan's SQL waits in an expander, the weekly cycle
takes the inbox folder, pass rate opens on the live system."""

from pages_support import app, open_page

from flywheel.evals.runs import live_system, systems
from flywheel.store.db import open_db


def test_saving_a_plan_confirms_it_and_the_sql_sits_in_an_expander(demo_copy, monkeypatch):
    at = open_page(app(demo_copy, monkeypatch, "ana"), "pages/sample.py")
    sql = next(e for e in at.expander if e.label.startswith("The plan as SQL"))
    assert any("md5" in c.value for c in sql.code), "the plan's SQL is not in its expander"
    next(b for b in at.button if b.label == "Save plan").click().run()
    assert not at.exception
    assert any(s.value.startswith("Saved plan") for s in at.success)


def test_the_cycle_page_takes_the_inbox_and_shows_it_in_the_crontab_line(demo_copy, monkeypatch, tmp_path):
    at = open_page(app(demo_copy, monkeypatch, "ana"), "pages/cycle.py")
    at.text_input(key="cycle_inbox").input(str(tmp_path / "missing"))
    next(b for b in at.button if b.label == "Run the cycle").click().run()
    assert not at.exception
    shown = [e.value for e in at.error] + [w.value for w in at.warning]
    assert any("missing" in text for text in shown), shown
    assert any(str(tmp_path / "missing") in c.value for c in at.code if "cycle" in c.value)


def test_pass_rate_opens_on_the_live_system(demo_copy, monkeypatch):
    db = open_db(demo_copy)
    live = live_system(db)
    assert live is not None and live["system"] != systems(db)[0], "the demo cannot tell the default apart"
    at = open_page(app(demo_copy, monkeypatch, "ana"), "pages/quality.py")
    assert at.selectbox(key="split_system").value == live["system"]
