"""Pages driven through AppTest: the app opened as a user, a page switched to."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def app(db_path, monkeypatch, user: str = "ana") -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DB", str(db_path))
    at = AppTest.from_file("../app.py", default_timeout=90)
    at.session_state["user_name"] = user
    at.run()
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page)
    at.run()
    assert not at.exception, f"{page} raised: {[e.value for e in at.exception]}"
    assert not at.error, f"{page} showed an error: {[e.value for e in at.error]}"
    return at
