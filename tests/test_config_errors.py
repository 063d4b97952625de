"""Configuration that is wrong is a message, never a crash or a silent fallback; a new store is made only
by the commands that begin a project's data."""

import json
import re
import sqlite3
from pathlib import Path

import pytest
from conftest import jsonl, trace
from streamlit import config as streamlit_config
from streamlit.runtime.secrets import secrets_singleton
from streamlit.testing.v1 import AppTest

from flywheel.__main__ import main
from flywheel.auth import check_sign_in_settings, load_users
from flywheel.errors import BadInput, NewerDatabase
from flywheel.store.db import open_db
from flywheel.store.migrations import migrations

ROOT = Path(__file__).resolve().parent.parent

COMPLETE_AUTH = """[auth]
redirect_uri = "http://localhost:8501/oauth2callback"
cookie_secret = "a-long-random-secret-for-the-cookie"
client_id = "flywheel"
client_secret = "s3cret"
server_metadata_url = "https://accounts.example.com/.well-known/openid-configuration"
"""


def _app(monkeypatch, db_path, users=None) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DB", str(db_path))
    if users is not None:
        monkeypatch.setenv("FLYWHEEL_USERS", str(users))
    at = AppTest.from_file("../app.py", default_timeout=90)
    at.session_state["user_name"] = "ana"
    return at.run()


def _refused(at: AppTest, before_users: bool = True) -> str:
    """The one message the app showed instead of starting; no page ran and nothing crashed."""
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1, [e.value for e in at.error]
    assert not at.title, "a page ran"
    if before_users:
        assert not at.sidebar.selectbox, "the app went on to pick a user"
    return at.error[0].value.replace("\\", "")  # the message as the page shows it (markdown unescaped)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "flywheel.db"
    open_db(path).close()
    return path


# The users file --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, reason",
    [
        (b'[users.ana]\nrole = "lead"\nemail = "\xff\xfe@example.com"\n', "not UTF-8 text (byte 35)"),
        (b"[users.ana\nrole = lead\n", "not valid TOML"),
        (b"", "has no [users.NAME] tables"),
        (None, "is a folder"),
        ("missing", "does not exist"),
    ],
    ids=["invalid-utf8", "bad-toml", "empty", "folder", "missing"],
)
def test_a_broken_users_file_is_a_message_on_the_page(tmp_path, monkeypatch, store, content, reason):
    users = tmp_path / "users.toml"
    if content is None:
        users.mkdir()
    elif content != "missing":
        users.write_bytes(content)
    message = _refused(_app(monkeypatch, store, users))
    assert reason in message and "users.toml" in message


def test_a_users_file_that_cannot_be_read_names_the_reason(tmp_path):
    users = tmp_path / "users.toml"
    users.symlink_to(users)  # a loop: reading it fails with an OS error, not a crash
    with pytest.raises(BadInput, match="cannot be read"):
        load_users(users)


# The database's location and schema --------------------------------------------------------------------


def test_a_missing_database_folder_is_a_message_on_the_page(tmp_path, monkeypatch):
    message = _refused(_app(monkeypatch, tmp_path / "nowhere" / "flywheel.db"))
    assert "folder" in message and "nowhere" in message and "does not exist" in message
    assert not (tmp_path / "nowhere").exists()


def _from_the_future(path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
        [migrations.name, "m990_something_new", "2027-01-01 00:00:00"],
    )
    conn.commit()
    conn.close()


def test_a_database_from_a_newer_schema_is_refused_with_the_versions_named(store):
    open_db(store).close()  # the same schema opens
    _from_the_future(store)
    before = store.read_bytes()
    with pytest.raises(NewerDatabase) as refused:
        open_db(store)
    newest_known = max(m.name for m in migrations._migrations)
    assert "m990_something_new" in str(refused.value) and newest_known in str(refused.value)
    assert store.read_bytes() == before, "a refused database was written to"


def test_a_database_from_a_newer_schema_is_a_message_on_the_page(store, monkeypatch):
    _from_the_future(store)
    message = _refused(_app(monkeypatch, store), before_users=False)
    assert "m990" in message and "newer Flywheel" in message


# Sign-in settings --------------------------------------------------------------------------------------


@pytest.fixture
def secrets_file(tmp_path):
    """A secrets.toml the app reads instead of the project's and the user's."""
    path = tmp_path / "secrets.toml"
    saved = streamlit_config.get_option("secrets.files")
    streamlit_config.set_option("secrets.files", [str(path)])
    secrets_singleton._reset()
    yield path
    streamlit_config.set_option("secrets.files", saved)
    secrets_singleton._reset()


BROKEN_AUTH = {
    "syntax-error": (
        COMPLETE_AUTH.replace('client_id = "flywheel"', "client_id = flywheel"),
        "not valid TOML",
    ),
    "no-cookie-secret": (COMPLETE_AUTH.replace("cookie_secret", "# cookie_secret"), "lacks cookie_secret"),
    "no-provider": (
        "[auth]\nredirect_uri = 'http://localhost:8501/oauth2callback'\ncookie_secret = 'x'\n",
        "lacks client_id, client_secret, server_metadata_url",
    ),
    "empty-default-provider": (COMPLETE_AUTH + "[auth.default]\nclient_id = 'x'\n", "[auth.default] section"),
    "not-a-table": ('auth = "google"\n', "must be a table"),
}


@pytest.mark.parametrize("text, reason", BROKEN_AUTH.values(), ids=BROKEN_AUTH)
def test_a_broken_auth_section_stops_the_start_with_the_reason(
    secrets_file, store, monkeypatch, text, reason
):
    secrets_file.write_text(text)
    with pytest.raises(BadInput, match=re.escape(reason)):
        check_sign_in_settings([str(secrets_file)])
    message = _refused(_app(monkeypatch, store))
    assert "sign" in message.lower() or "TOML" in message


def test_a_complete_auth_section_asks_to_sign_in(secrets_file, store, monkeypatch):
    secrets_file.write_text(COMPLETE_AUTH)
    assert check_sign_in_settings([str(secrets_file)]) is True
    at = _app(monkeypatch, store)
    assert not at.exception and not at.error
    assert [b.label for b in at.button] == ["Sign in"]


def test_no_secrets_file_or_no_auth_section_is_local_sign_in(secrets_file, store, monkeypatch):
    assert check_sign_in_settings([str(secrets_file)]) is False  # no file at all
    secrets_file.write_text('[judge]\nmodel = "x"\n')
    assert check_sign_in_settings([str(secrets_file), str(secrets_file.with_name("absent.toml"))]) is False
    at = _app(monkeypatch, store)
    assert not at.exception and not at.error and at.sidebar.selectbox
    assert at.title[0].value == "Overview"


# A new store from the command line --------------------------------------------------------------------


def _suite(tmp_path):
    path = tmp_path / "suite.csv"
    path.write_text("id,input,expected\ns-1,Where is my card?,Give the delivery window.\n")
    return path


def test_import_evalset_begins_a_new_store_and_says_so(tmp_path, capsys):
    path = tmp_path / "new.db"
    assert main(["import-evalset", "--db", str(path), str(_suite(tmp_path)), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["version"] == 1
    assert "created a new database" in err and str(path) in err
    assert open_db(path)["eval_versions"].count == 1
    assert main(["import-evalset", "--db", str(path), str(_suite(tmp_path))]) == 0
    assert "created" not in capsys.readouterr().err, "an existing store is not new"


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["import-evalset", "BAD_SUITE"], "line 2"),
        (["import-evalset", "MISSING"], "cannot read"),
        (["ingest", "MISSING"], "no such file"),
        (["sample", "--random", "0.5", "--source", "MISSING"], "MISSING"),
    ],
    ids=["bad-suite", "missing-suite", "missing-traces", "missing-source"],
)
def test_a_refused_first_command_leaves_no_store_and_one_line(tmp_path, capsys, argv, reason):
    path = tmp_path / "new.db"
    bad = tmp_path / "bad.csv"
    bad.write_text("input,code\n,X\n")
    values = {"BAD_SUITE": str(bad), "MISSING": str(tmp_path / "missing.jsonl")}
    assert main([argv[0], "--db", str(path), *(values.get(a, a) for a in argv[1:])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "created" not in err, err
    assert reason.replace("MISSING", "missing") in err
    assert list(tmp_path.glob("new.db*")) == [], "a refused command left a store behind"


def test_ingest_begins_a_new_store_and_says_so(tmp_path, capsys):
    path = tmp_path / "new.db"
    traces = jsonl(tmp_path / "t.jsonl", [trace(n) for n in range(3)])
    assert main(["ingest", "--db", str(path), str(traces), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["ingested"] == 3 and "created a new database" in err


def test_sample_at_the_source_begins_a_new_store(tmp_path, capsys):
    path = tmp_path / "new.db"
    source = jsonl(tmp_path / "warehouse.jsonl", [trace(n, signals={"thumbs": "down"}) for n in range(20)])
    code = main(["sample", "--db", str(path), "--random", "1", "--source", str(source), "--json"])
    out, err = capsys.readouterr()
    assert "created a new database" in err and path.exists()
    assert code == 0, err
    assert json.loads(out)["sampled"] > 0


@pytest.mark.parametrize(
    "command",
    [
        ["import-evalset", "SUITE"],
        ["ingest", "SUITE"],
        ["sample", "--random", "0.5", "--source", "SUITE"],
    ],
    ids=["import-evalset", "ingest", "sample-source"],
)
def test_a_new_store_needs_an_existing_folder(tmp_path, capsys, command):
    path = tmp_path / "missing" / "new.db"
    argv = [
        command[0],
        "--db",
        str(path),
        *(str(_suite(tmp_path)) if a == "SUITE" else a for a in command[1:]),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err and "does not exist" in err
    assert not path.parent.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["drift"],
        ["gate", "--version", "1", "--baseline", "a", "--challenger", "b"],
        ["judge"],
        ["cycle", "--plan", "PLAN"],
        ["export", "--version", "1", "--format", "csv", "--out", "OUT"],
        ["diff", "1", "2"],
        ["fold-in"],
        ["import-results", "--version", "1", "--system", "a", "SUITE"],
        ["sample", "--random", "0.5"],
        ["embed"],
    ],
    ids=lambda argv: argv[0] + ("-source" if "--source" in argv else ""),
)
def test_commands_that_read_a_store_refuse_a_missing_one(tmp_path, capsys, argv):
    path = tmp_path / "absent.db"
    values = {
        "PLAN": str(ROOT / "data" / "plans" / "weekly.toml"),
        "OUT": str(tmp_path / "out.csv"),
        "SUITE": str(_suite(tmp_path)),
    }
    assert main([argv[0], "--db", str(path), *(values.get(a, a) for a in argv[1:])]) == 2
    err = capsys.readouterr().err
    assert f"database {str(path)!r} does not exist" in err and err.count("\n") == 1
    assert not path.exists(), f"{argv[0]} created a store it only reads"
