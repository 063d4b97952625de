"""Every page, for every role, on an empty database and on the demo database, through app.py."""

import pytest
from conftest import jsonl, trace
from pages_support import app, open_page
from streamlit.testing.v1 import AppTest

from flywheel.auth import ROLES, User, load_users
from flywheel.config import PROJECT_ROOT, load_config
from flywheel.ingest.run import ingest_files
from flywheel.store.db import open_db
from pages._nav import PAGES

USERS = {user.name: user for user in load_users(load_config().users)}
WALKED = ["lena", "ravi", "ana"]  # one user of each role


def pages_for(user: User) -> list[str]:
    """The page files app.py's navigation gives ``user``, chosen as app.py chooses them."""
    return [path for pages in PAGES.values() for path, _, _, roles in pages if user.may(*roles)]


@pytest.fixture
def demo_db(demo_copy):
    return demo_copy


@pytest.fixture
def empty_db(tmp_path):
    path = tmp_path / "empty.db"
    open_db(path).close()
    return path


def test_the_walk_covers_every_page_file_and_every_lead_page():
    files = {f"pages/{path.name}" for path in (PROJECT_ROOT / "pages").glob("[!_]*.py")}
    listed = [path for pages in PAGES.values() for path, *_ in pages]
    assert sorted(listed) == sorted(files), "a page file is missing from the navigation, or listed twice"
    assert sorted(USERS[name].role for name in WALKED) == sorted(ROLES)
    walked = {page for name in WALKED for page in pages_for(USERS[name])}
    assert walked == files, f"no role walks {sorted(files - walked)}"
    assert len(pages_for(USERS["ana"])) >= 15


@pytest.mark.parametrize("user", WALKED)
# demo_db comes through getfixturevalue, out of sight of conftest's fixture rule: marked here
@pytest.mark.parametrize("which", ["empty_db", pytest.param("demo_db", marks=pytest.mark.slow)])
def test_every_page_renders_for_every_role(request, monkeypatch, user, which):
    at = app(request.getfixturevalue(which), monkeypatch, user)
    assert not at.exception
    for page in pages_for(USERS[user]):
        open_page(at, page)
        assert at.title[0].value


def test_app_creates_the_demo_database_on_first_start(tmp_path, monkeypatch):
    path = tmp_path / "fresh.db"
    monkeypatch.setenv("FLYWHEEL_DEMO_TRACES", "300")
    at = app(path, monkeypatch, "ana")
    assert path.exists() and open_db(path)["traces"].count == 300
    assert next(m.value for m in at.metric if m.label == "Traces") == "300"


def _caption(at: AppTest, words: str) -> str:
    return next(c.value for c in at.caption if words in c.value)


def test_labeler_sees_no_raw_text_on_the_traces_page(tmp_path, monkeypatch):
    path = tmp_path / "t.db"
    db = open_db(path)
    ingest_files(
        db,
        [jsonl(tmp_path / "t.jsonl", [trace(n, input=f"SECRET-{n}") for n in range(5)])],
        config=load_config(),
    )
    at = open_page(app(path, monkeypatch, "lena"), "pages/traces.py")
    assert any("hidden" in info.value for info in at.info)
    assert not at.dataframe, "a labeler's first page lists approved scrubs only"
    next(c for c in at.checkbox if c.label == "Approved scrubs only").uncheck().run()
    table = at.dataframe[0].value
    assert len(table) == 5 and "input" not in table.columns and "output" not in table.columns
    assert "SECRET" not in str(table.to_dict())


def test_reviewer_sees_raw_columns_and_no_cell_reads_none(demo_db, monkeypatch):
    at = open_page(app(demo_db, monkeypatch, "ravi"), "pages/traces.py")
    columns = next(c for c in at.multiselect if c.label == "Columns")
    every = ["trace_id", "ts", "week", "cohort", "intent", "flags", "scrub", "scrubbed_input", "judge_score"]
    columns.set_value([*every, "turns", "latency_ms", "cost_usd", "input", "output"]).run()
    table = at.dataframe[0].value
    assert "input" in table.columns and len(table.columns) == 14
    assert not (table == "None").any().any() and not table.isna().any().any()
    assert set(table["scrub"]) <= {"approved", "awaiting review", "rejected", "not scrubbed"}


def test_traces_page_filters_in_sql_and_turns_pages_by_key(demo_db, monkeypatch):
    at = open_page(app(demo_db, monkeypatch, "ana"), "pages/traces.py")
    total = int(_caption(at, "traces match").split("·")[1].split()[0].replace(",", ""))
    first = list(at.dataframe[0].value["trace_id"])
    at.button[2].click().run()  # Next
    assert _caption(at, "traces match").startswith("Page 2 of")
    second = list(at.dataframe[0].value["trace_id"])
    assert len(second) == 50 and not set(first) & set(second)
    at.button[3].click().run()  # Last
    pages = -(-total // 50)
    assert _caption(at, "traces match").startswith(f"Page {pages} of {pages}")
    assert len(at.dataframe[0].value) == total - (pages - 1) * 50
    at.button[1].click().run()  # Previous
    assert len(at.dataframe[0].value) == 50
    at.multiselect[1].set_value(["enterprise"]).run()
    narrowed = int(_caption(at, "traces match").split("·")[1].split()[0].replace(",", ""))
    assert 0 < narrowed < total and _caption(at, "traces match").startswith("Page 1 of")
    assert set(at.dataframe[0].value["cohort"]) == {"enterprise"}


def test_traces_page_searches_by_trace_id(demo_db, monkeypatch):
    at = open_page(app(demo_db, monkeypatch, "ana"), "pages/traces.py")
    wanted = at.dataframe[0].value["trace_id"].iloc[3]
    at.text_input[0].input(wanted).run()
    assert list(at.dataframe[0].value["trace_id"]) == [wanted]


def test_a_fresh_session_starts_as_the_least_privileged_user(demo_db, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DB", str(demo_db))
    at = AppTest.from_file("../app.py", default_timeout=60).run()
    assert at.selectbox[0].value == "lena"
    assert any(c.value == "Role: **labeler**" for c in at.sidebar.caption)


def test_errors_render_untrusted_text_literally(tmp_path, monkeypatch):
    users = tmp_path / "users.toml"
    users.write_text('[users."![x](http://example.com/i.png) <b>ana</b>"]\nrole = "admin"\n')
    monkeypatch.setenv("FLYWHEEL_USERS", str(users))
    at = app(tmp_path / "none.db", monkeypatch, "ana")
    (error,) = at.error
    assert "\\!\\[x\\]\\(http" in error.value and "\\<b\\>" in error.value


def test_overview_chart_labels_are_escaped(tmp_path, monkeypatch):
    path = tmp_path / "t.db"
    cohort = '<a href="http://example.com">click</a>'
    items = [trace(n, cohort=cohort if n % 2 else "<span>smb</span>") for n in range(6)]
    ingest_files(open_db(path), [jsonl(tmp_path / "t.jsonl", items)], config=load_config())
    at = open_page(app(path, monkeypatch, "lena"), "pages/overview.py")
    spec = at.get("plotly_chart")[0].proto.spec
    assert "&lt;a href=" in spec and "&lt;span&gt;smb" in spec
    assert "<a href" not in spec and "<span>" not in spec


def test_audit_page_filters_and_names_traces(demo_db, monkeypatch):
    at = open_page(app(demo_db, monkeypatch, "ana"), "pages/audit.py")
    table = at.dataframe[0].value
    assert "claim" not in set(table["action"]), "claims are summarised, not listed"
    decided = table[table["entity"] == "scrub"]
    assert len(decided) and all(t.startswith("t-") for t in decided["trace_id"])
    assert any(s.value == "Claims per labeler and day" for s in at.subheader)
    at.multiselect[0].set_value(["ravi"]).run()
    assert set(at.dataframe[0].value["actor"]) == {"ravi"}
    assert at.get("download_button")


def test_labeler_cannot_open_lead_pages(demo_db, monkeypatch):
    at = app(demo_db, monkeypatch, "lena")
    for page in ("pages/ingest.py", "pages/audit.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)


def test_import_page_reports_and_shows_the_quarantine(demo_db, monkeypatch):
    at = open_page(app(demo_db, monkeypatch, "ana"), "pages/ingest.py")
    runs = at.dataframe[0].value
    assert runs.iloc[0]["quarantined"] > 0
    quarantine = [d.value for d in at.dataframe if "raw" in [str(c).lower() for c in d.value.columns]]
    assert len(quarantine) == 1, "the run's quarantine is not shown as one table"
    assert len(quarantine[0]) == runs.iloc[0]["quarantined"]
