"""The Judge and Online quality pages and the Overview's alerts, through app.py."""

import pytest
from streamlit.testing.v1 import AppTest

from flywheel.demo.judgments import DEMO_GRADER_MODEL
from flywheel.store.db import open_db
from tests.fake_anthropic import FakeAnthropic


def _page(db_path, monkeypatch, page: str, user: str = "ana") -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DB", str(db_path))
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.session_state["user_name"] = user
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_without_a_key_the_judge_page_says_how_to_enable_it_and_shows_demo_calibration(
    demo_copy, monkeypatch
):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    at = _page(demo_copy, monkeypatch, "pages/judge.py")
    assert any("ANTHROPIC_API_KEY" in info.value for info in at.info)
    assert any(DEMO_GRADER_MODEL in w.value for w in at.warning)
    assert next(b for b in at.button if b.label == "Grade").disabled
    labels = [m.label for m in at.metric]
    assert (
        "Cohen's kappa" in labels
        and "constant predictor kappa" in labels
        and "base rate (human fail)" in labels
    )


def test_a_lead_grades_a_batch_from_the_app_against_a_local_fake(tmp_path, monkeypatch):
    from flywheel.online.rubrics import STARTER_RUBRIC, save_rubric
    from tests.judge_data import LEAD, add_traces

    path = tmp_path / "app.db"
    db = open_db(path)
    add_traces(db, 4)
    save_rubric(db, LEAD, STARTER_RUBRIC)
    db["sample_batches"].insert({"id": 1, "plan": "{}", "seed": 7, "week": "2026-W45"})
    for n in range(4):
        db["batch_items"].insert(
            {"batch_id": 1, "trace_id": f"t-{n:04d}", "reasons": '["random"]', "priority": 2}
        )
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        monkeypatch.setenv("FLYWHEEL_JUDGE_MAX_RETRIES", "1")
        at = _page(path, monkeypatch, "pages/judge.py")
        assert not at.info or not any("ANTHROPIC_API_KEY" in i.value for i in at.info)
        next(b for b in at.button if b.label == "Grade").click().run()
        assert not at.exception and not at.error
    assert len(fake.bodies) == 4
    assert db.execute("SELECT count(*) FROM judgments WHERE status = 'ok'").fetchone()[0] == 4
    assert any("4 judged" in t.value for t in at.text)


@pytest.mark.parametrize("tab", range(4))
def test_the_online_page_shows_signals_parity_experiments_and_shadow_on_the_demo(demo_copy, monkeypatch, tab):
    at = _page(demo_copy, monkeypatch, "pages/online.py")
    if tab == 0:
        assert len(at.get("plotly_chart")) >= 7
    elif tab == 2:
        # the parity tab draws no table on the demo: its judge is below the calibration bar
        verdicts = next((d.value["verdict"] for d in at.dataframe if "verdict" in d.value.columns), None)
        assert verdicts is not None and verdicts.str.len().gt(0).all()
        assert any(m.label == "traces per arm" for m in at.metric)
    elif tab == 3:
        assert any(m.label == "judge prefers the shadow" for m in at.metric)
        assert any(DEMO_GRADER_MODEL in c.value for c in at.caption)


def test_overview_lists_signal_alerts(demo_copy, monkeypatch):
    at = _page(demo_copy, monkeypatch, "pages/overview.py")
    assert any(h.value == "Signal alerts, last four weeks" for h in at.subheader)


def test_labelers_do_not_get_the_judge_pages(demo_copy, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DB", str(demo_copy))
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.session_state["user_name"] = "lena"
    at.run()
    for page in ("pages/judge.py", "pages/online.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)


@pytest.mark.parametrize("page", ["pages/judge.py", "pages/online.py"])
def test_the_pages_render_on_an_empty_database(tmp_path, monkeypatch, page):
    path = tmp_path / "empty.db"
    open_db(path).close()
    at = _page(path, monkeypatch, page)
    assert at.title[0].value
