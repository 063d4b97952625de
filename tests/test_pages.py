"""Every page, for every role, on an empty database and on the demo database, through app.py."""

import pytest
from conftest import jsonl, trace
from streamlit.testing.v1 import AppTest

from flywheel.ingest import ingest_files
from flywheel.store import open_db

PAGES_BY_ROLE = {
    "lena": ["pages/overview.py", "pages/traces.py", "pages/label.py", "pages/taxonomy.py"],
    "ravi": [
        "pages/overview.py",
        "pages/traces.py",
        "pages/review.py",
        "pages/label.py",
        "pages/taxonomy.py",
    ],
    "ana": [
        "pages/overview.py",
        "pages/traces.py",
        "pages/sample.py",
        "pages/review.py",
        "pages/label.py",
        "pages/taxonomy.py",
        "pages/ingest.py",
        "pages/audit.py",
    ],
}


@pytest.fixture
def demo_db(demo_copy):
    return demo_copy


@pytest.fixture
def empty_db(tmp_path):
    path = tmp_path / "empty.db"
    open_db(path).close()
    return path


def app(db_path, monkeypatch, user: str) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DB", str(db_path))
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.session_state["user_name"] = user
    at.run()
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page)
    at.run()
    assert not at.exception, f"{page} raised: {[e.value for e in at.exception]}"
    assert not at.error, f"{page} showed an error: {[e.value for e in at.error]}"
    return at


@pytest.mark.parametrize("user", list(PAGES_BY_ROLE))
@pytest.mark.parametrize("which", ["empty_db", "demo_db"])
def test_every_page_renders_for_every_role(request, monkeypatch, user, which):
    at = app(request.getfixturevalue(which), monkeypatch, user)
    assert not at.exception
    for page in PAGES_BY_ROLE[user]:
        open_page(at, page)
        assert at.title[0].value


def test_app_creates_the_demo_database_on_first_start(tmp_path, monkeypatch):
    path = tmp_path / "fresh.db"
    monkeypatch.setenv("FLYWHEEL_DEMO_TRACES", "300")
    at = app(path, monkeypatch, "ana")
    assert path.exists() and open_db(path)["traces"].count == 300
    assert at.metric[0].value == "300"


def test_labeler_sees_no_raw_text_on_the_traces_page(tmp_path, monkeypatch):
    path = tmp_path / "t.db"
    db = open_db(path)
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", [trace(n, input=f"SECRET-{n}") for n in range(5)])])
    at = open_page(app(path, monkeypatch, "lena"), "pages/traces.py")
    table = at.dataframe[0].value
    assert "input" not in table.columns and "output" not in table.columns
    assert "SECRET" not in str(table.to_dict())
    assert any("hidden" in info.value for info in at.info)


def test_reviewer_sees_raw_columns(tmp_path, monkeypatch):
    path = tmp_path / "t.db"
    ingest_files(open_db(path), [jsonl(tmp_path / "t.jsonl", [trace(n) for n in range(5)])])
    at = open_page(app(path, monkeypatch, "ravi"), "pages/traces.py")
    assert "input" in at.dataframe[0].value.columns


def test_traces_page_filters_in_sql(demo_db, monkeypatch):
    at = open_page(app(demo_db, monkeypatch, "ana"), "pages/traces.py")
    total = int(at.caption[0].value.split()[0].replace(",", ""))
    at.multiselect[1].set_value(["enterprise"]).run()
    narrowed = int(at.caption[0].value.split()[0].replace(",", ""))
    assert 0 < narrowed < total
    assert set(at.dataframe[0].value["cohort"]) == {"enterprise"}


def test_labeler_cannot_open_lead_pages(demo_db, monkeypatch):
    at = app(demo_db, monkeypatch, "lena")
    for page in ("pages/ingest.py", "pages/audit.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)


def test_import_page_reports_and_shows_the_quarantine(demo_db, monkeypatch):
    at = open_page(app(demo_db, monkeypatch, "ana"), "pages/ingest.py")
    runs = at.dataframe[0].value
    assert runs.iloc[0]["quarantined"] > 0
    assert len(at.dataframe[1].value) == runs.iloc[0]["quarantined"]
