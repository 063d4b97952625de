import pytest
from conftest import jsonl, trace

from flywheel.auth import User, load_users, user_for_email
from flywheel.errors import BadInput, PermissionDenied, TraceNotFound
from flywheel.ingest import ingest_files
from flywheel.traces import TraceFilter, count_traces, filter_options, find_traces, raw_trace

LEAD, REVIEWER, LABELER = User("ana", "lead"), User("ravi", "reviewer"), User("lena", "labeler")


@pytest.fixture
def stored(db, tmp_path):
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", [trace(n) for n in range(120)])])
    return db


def test_labeler_never_gets_raw_text(stored):
    rows = find_traces(stored, LABELER, TraceFilter(), page_size=200)
    assert len(rows) == 120
    assert all("input" not in row and "output" not in row for row in rows)
    with pytest.raises(PermissionDenied, match="labeler"):
        raw_trace(stored, LABELER, "t-000001")


@pytest.mark.parametrize("user", [LEAD, REVIEWER])
def test_reviewers_and_leads_read_raw_text(stored, user):
    assert raw_trace(stored, user, "t-000007")["input"] == "question number 7"
    assert find_traces(stored, user, TraceFilter(), page_size=1)[0]["input"].startswith("question number")


def test_unknown_trace_is_named(stored):
    with pytest.raises(TraceNotFound, match="t-nope"):
        raw_trace(stored, LEAD, "t-nope")


def test_filters_narrow_and_pages_partition(stored):
    where = TraceFilter(cohorts=("smb",), signals=("thumbs down",))
    expected = {f"t-{n:06d}" for n in range(120) if n % 3 == 1 and n % 10 == 0}
    assert count_traces(stored, where) == len(expected)
    assert {r["trace_id"] for r in find_traces(stored, LEAD, where)} == expected
    pages = [find_traces(stored, LEAD, TraceFilter(), page=p, page_size=50) for p in range(3)]
    assert [len(p) for p in pages] == [50, 50, 20]
    assert len({r["trace_id"] for page in pages for r in page}) == 120
    assert [r["ts"] for r in pages[0]] == sorted((r["ts"] for r in pages[0]), reverse=True)


def test_week_and_signal_filters(stored):
    weeks = filter_options(stored)["weeks"]
    assert weeks == sorted(weeks) and len(weeks) >= 4
    assert count_traces(stored, TraceFilter(weeks=(weeks[0],))) > 0
    border = find_traces(stored, LEAD, TraceFilter(signals=("borderline judge (0.4-0.7)",)), page_size=200)
    assert border and all(0.4 <= r["judge_score"] <= 0.7 for r in border)


def test_bad_filter_and_page_are_refused(stored):
    with pytest.raises(BadInput, match="unknown signal filter 'bogus'"):
        count_traces(stored, TraceFilter(signals=("bogus",)))
    with pytest.raises(BadInput, match="page -1"):
        find_traces(stored, LEAD, TraceFilter(), page=-1)


def test_users_file(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text('[users.ana]\nrole = "lead"\nemail = "Ana@Example.com"\n[users.bo]\nrole = "labeler"\n')
    users = load_users(path)
    assert [(u.name, u.role) for u in users] == [("ana", "lead"), ("bo", "labeler")]
    assert user_for_email(users, "ana@example.com").role == "lead"
    assert user_for_email(users, "stranger@example.com").role == "labeler"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[users.ana]\nrole = "admin"\n', "role 'admin'"),
        ("[users.ana]\n", "needs a role"),
        ("users = 3\n", "no [users.NAME]"),
        ("[users.ana\n", "not valid TOML"),
    ],
)
def test_bad_users_file_is_named(tmp_path, text, message):
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(BadInput, match=message.replace("[", r"\[")):
        load_users(path)


def test_store_runs_in_wal_with_foreign_keys_and_migrates_once(db, tmp_path):
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    from flywheel.store import migrations, open_db

    again = open_db(tmp_path / "flywheel.db")
    names = [m.name for m in migrations.applied(again)]
    assert names and len(names) == len(set(names)) and not migrations.pending(again)


def test_every_import_is_audited(stored):
    (entry,) = stored["audit_log"].rows_where("action = 'ingest'")
    assert (entry["action"], entry["entity"], entry["actor"]) == ("ingest", "ingest_run", "cli")
    assert stored["audit_log"].count_where("action = 'ingest_batch'") >= 1
