"""The Release gate page through app.py: every criterion shown, a waiver with its reason recorded."""

from gate_support import BASE, build, changed
from pages_support import app

from flywheel.evals.runs import live_system, release_decisions
from flywheel.store.db import open_db


def test_the_gate_page_shows_the_criteria_and_records_a_waived_decision(tmp_path, monkeypatch):
    path = tmp_path / "g.db"
    build(path, changed(r1=False, r16=True), BASE).close()
    at = app(path, monkeypatch)
    at.switch_page("pages/gate.py").run()
    assert not at.exception
    assert at.error[0].value.startswith("**BLOCK**")
    lines = [m.value for m in at.markdown]
    for name in ("complete", "safety", "zero regressions", "no loss"):
        assert any(f"**{name}**" in line for line in lines), name
    assert any(
        line.startswith(":red[:material/cancel:] **zero regressions**") and "r\\-000001" in line
        for line in lines
    )

    at.text_input(key="gate_waive_r-000001").input("tone only; checked by hand").run()
    assert at.success[0].value.startswith("**SHIP**")
    at.button(key="gate_record").click().run()
    assert not at.exception
    (decision,) = release_decisions(open_db(path))
    assert decision["verdict"] == "ship" and decision["decided_by"] == "ana"
    assert decision["waived"] == {"r-000001": "tone only; checked by hand"}
    assert live_system(open_db(path))["system"] == "new"
    assert at.dataframe[-1].value["verdict"].tolist() == ["ship"]
