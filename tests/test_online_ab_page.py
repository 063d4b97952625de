"""The A/B section of the Online quality page, through app.py: declare, withheld reasons, verdict."""

import datetime as dt

from streamlit.testing.v1 import AppTest

from flywheel.store.db import open_db
from tests.test_experiment_design import _traffic, _unique_users


def _page(db_path, monkeypatch) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DB", str(db_path))
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.session_state["user_name"] = "ana"
    at.run()
    at.switch_page("pages/online.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _widget(widgets, label):
    return next(w for w in widgets if w.label == label)


def _verdict_table(at: AppTest):
    (table,) = [d.value for d in at.dataframe if "verdict" in d.value.columns]
    return table


def _declare(at: AppTest, name: str, min_days: int) -> AppTest:
    _widget(at.text_input, "Experiment name").set_value(name)
    _widget(at.text_input, "Randomization unit").set_value("user_id")
    _widget(at.text_input, "Control arm").set_value("a")
    _widget(at.text_input, "Treatment arm").set_value("b")
    _widget(at.selectbox, "Primary metric").set_value("thumbs down")
    _widget(at.number_input, "Minimum duration, days").set_value(min_days)
    _widget(at.number_input, "minimum effect").set_value(0.05)
    _widget(at.date_input, "Start (UTC)").set_value(dt.date(2026, 11, 2))
    _widget(at.button, "Declare").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at.run()  # the experiment list above the form picks up the declaration on the next run


def test_a_lead_declares_an_experiment_and_reads_its_verdict_or_why_it_is_withheld(tmp_path, monkeypatch):
    path = tmp_path / "ab.db"
    db = open_db(path)
    _traffic(db, "a", 1000, user=_unique_users("a"), thumbs=100)
    _traffic(db, "b", 1000, user=_unique_users("b"), thumbs=150)
    at = _page(path, monkeypatch)
    assert _widget(at.selectbox, "Experiment").options == ["(none: describe two arms)"]
    assert any("no experiment is declared" in w.value for w in at.warning)
    assert set(_verdict_table(at)["verdict"]) == {"withheld"}
    assert "p_value" not in _verdict_table(at).columns

    at = _declare(at, "checkout", 7)
    (row,) = db["experiments"].rows
    assert (row["name"], row["unit"], row["primary_metric"], row["min_days"], row["declared_by"]) == (
        "checkout",
        "user_id",
        "thumbs down",
        7,
        "ana",
    )
    assert row["start"] == "2026-11-02T00:00:00.000Z"
    assert db.execute("SELECT actor FROM audit_log WHERE action = 'declare experiment'").fetchall() == [
        ("ana",)
    ]
    assert _widget(at.selectbox, "Experiment").value == "checkout"
    assert [i.value for i in at.info if "Verdict on the primary metric" in i.value] == [
        "Verdict on the primary metric, thumbs down: treatment worse"
    ]
    table = _verdict_table(at)
    assert list(table["role"]) == ["primary", *["secondary"] * 4]
    assert list(table["verdict"]) == ["treatment worse", *["secondary: no verdict"] * 4]
    assert table["p_holm"].iloc[1:].notna().all()

    at = _declare(at, "checkout, four weeks", 28)
    assert _widget(at.selectbox, "Experiment").value == "checkout, four weeks"
    (withheld,) = [w.value for w in at.warning if w.value.startswith("Verdict withheld")]
    assert "declared minimum 28 days" in withheld
    assert not any("Verdict on the primary metric" in i.value for i in at.info)
    assert set(_verdict_table(at)["verdict"]) == {"withheld"}


def test_a_bad_declaration_is_refused_on_the_page(tmp_path, monkeypatch):
    path = tmp_path / "ab.db"
    db = open_db(path)
    _traffic(db, "a", 50, user=_unique_users("a"))
    _traffic(db, "b", 50, user=_unique_users("b"))
    at = _page(path, monkeypatch)
    _widget(at.text_input, "Experiment name").set_value("same arms")
    _widget(at.text_input, "Treatment arm").set_value("a")
    _widget(at.button, "Declare").click().run()
    assert [e.value for e in at.error] == [
        "control and treatment are both 'a'; pick two different arms"
    ] or any("pick two different arms" in e.value for e in at.error)
    assert db["experiments"].count == 0
