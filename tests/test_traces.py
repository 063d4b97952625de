import pytest
from conftest import jsonl, trace

from flywheel.auth import User, least_privileged, load_users, reachable_beyond_loopback, user_for_email
from flywheel.config import load_config
from flywheel.errors import BadInput, PermissionDenied, TraceNotFound
from flywheel.ingest.run import ingest_files
from flywheel.store.db import write
from flywheel.traces.queries import (
    TraceFilter,
    TraceSort,
    count_traces,
    filter_options,
    find_traces,
    page_key,
    raw_trace,
)

LEAD, REVIEWER, LABELER = User("ana", "lead"), User("ravi", "reviewer"), User("lena", "labeler")


@pytest.fixture
def stored(db, tmp_path):
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", [trace(n) for n in range(120)])], config=load_config())
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


def _walk(db, user, where, sort, page_size):
    """Every page from the first on, by keyset: each continues from the last row of the one before."""
    pages = [find_traces(db, user, where, sort, page_size=page_size)]
    while len(pages[-1]) == page_size:
        pages.append(
            find_traces(db, user, where, sort, after=page_key(pages[-1][-1], sort), page_size=page_size)
        )
    return [page for page in pages if page]


def test_filters_narrow_and_pages_partition(stored):
    where = TraceFilter(cohorts=("smb",), signals=("thumbs down",))
    expected = {f"t-{n:06d}" for n in range(120) if n % 3 == 1 and n % 10 == 0}
    assert count_traces(stored, where) == len(expected)
    assert {r["trace_id"] for r in find_traces(stored, LEAD, where)} == expected
    pages = _walk(stored, LEAD, TraceFilter(), TraceSort(), 50)
    assert [len(p) for p in pages] == [50, 50, 20]
    listed = [r["trace_id"] for page in pages for r in page]
    assert len(set(listed)) == 120
    keys = [(r["ts"], r["trace_id"]) for page in pages for r in page]
    assert keys == sorted(keys, reverse=True)
    assert find_traces(stored, LEAD, TraceFilter(), last=True, page_size=20) == pages[-1]
    previous = find_traces(stored, LEAD, TraceFilter(), before=page_key(pages[2][0]), page_size=50)
    assert previous == pages[1]


@pytest.mark.parametrize("descending", [True, False])
def test_sorting_spans_every_page_and_puts_missing_values_last(db, tmp_path, descending):
    items = [trace(n) for n in range(47)]
    for item in items[::5]:
        item["signals"]["judge_score"] = None
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)], config=load_config())
    sort = TraceSort("judge score", descending=descending)
    pages = _walk(db, LABELER, TraceFilter(), sort, 7)
    rows = [r for page in pages for r in page]
    assert len({r["trace_id"] for r in rows}) == 47
    scores = [r["judge_score"] for r in rows if r["judge_score"] is not None]
    assert scores == sorted(scores, reverse=descending)
    assert all(r["judge_score"] is None for r in rows[len(scores) :]) and len(scores) == 47 - 10
    backwards = [find_traces(db, LABELER, TraceFilter(), sort, last=True, page_size=7)]
    while backwards[-1] and len(backwards[-1]) == 7:
        backwards.append(
            find_traces(
                db, LABELER, TraceFilter(), sort, before=page_key(backwards[-1][0], sort), page_size=7
            )
        )
    assert [r for page in backwards[::-1] for r in page] == rows


def _scrub(db, trace_id: str, status: str, text: str) -> None:
    with write(db):
        db["scrubs"].insert({"trace_id": trace_id, "status": status, "input": text, "scrubber_version": "t"})


def test_search_by_trace_id_and_scrubbed_text(stored):
    assert {r["trace_id"] for r in find_traces(stored, LABELER, TraceFilter(trace_id="t-00011"))} == {
        f"t-{n:06d}" for n in range(110, 120)
    }
    _scrub(stored, "t-000003", "approved", "Refund for [PERSON] please")
    _scrub(stored, "t-000004", "pending", "refund of card ending [CREDIT_CARD]")
    search = TraceFilter(text="REFUND")
    assert [r["trace_id"] for r in find_traces(stored, LABELER, search)] == ["t-000003"]
    assert count_traces(stored, search, LABELER) == 1
    assert {r["trace_id"] for r in find_traces(stored, REVIEWER, search)} == {"t-000003", "t-000004"}
    approved = find_traces(stored, LABELER, TraceFilter(approved_only=True))
    assert [(r["trace_id"], r["scrubbed_input"]) for r in approved] == [
        ("t-000003", "Refund for [PERSON] please")
    ]


@pytest.mark.parametrize(
    "where",
    [
        TraceFilter(),
        TraceFilter(cohorts=("smb", "free")),
        TraceFilter(intents=("card_arrival",), signals=("thumbs down",)),
        TraceFilter(signals=("thumbs down", "long conversation (5+ turns)")),
    ],
)
def test_counts_from_the_rollup_match_the_listing(stored, tmp_path, where):
    assert count_traces(stored, where) == len(find_traces(stored, LEAD, where, page_size=1000))
    ingest_files(
        stored, [jsonl(tmp_path / "more.jsonl", [trace(n) for n in range(120, 150)])], config=load_config()
    )
    assert count_traces(stored, where) == len(find_traces(stored, LEAD, where, page_size=1000))


def test_week_and_signal_filters(stored):
    weeks = filter_options(stored)["weeks"]
    assert weeks == sorted(weeks) and len(weeks) >= 4
    assert count_traces(stored, TraceFilter(weeks=(weeks[0],))) > 0
    border = find_traces(stored, LEAD, TraceFilter(signals=("borderline judge (0.4-0.7)",)), page_size=200)
    assert border and all(0.4 <= r["judge_score"] <= 0.7 for r in border)


def test_bad_filter_sort_and_page_are_refused(stored):
    with pytest.raises(BadInput, match="unknown signal filter 'bogus'"):
        count_traces(stored, TraceFilter(signals=("bogus",)))
    with pytest.raises(BadInput, match="unknown sort 'size'"):
        TraceSort("size")
    with pytest.raises(BadInput, match="page size 0"):
        find_traces(stored, LEAD, TraceFilter(), page_size=0)


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
    from flywheel.store.db import open_db
    from flywheel.store.migrations import migrations

    again = open_db(tmp_path / "flywheel.db")
    names = [m.name for m in migrations.applied(again)]
    assert names and len(names) == len(set(names)) and not migrations.pending(again)


def test_every_import_is_audited(stored):
    (entry,) = stored["audit_log"].rows_where("action = 'ingest'")
    assert (entry["action"], entry["entity"], entry["actor"]) == ("ingest", "ingest_run", "cli")
    assert stored["audit_log"].count_where("action = 'ingest_batch'") >= 1


def test_sign_in_identity_is_the_verified_email_never_a_display_name(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text(
        '[users.lena]\nrole = "labeler"\nemail = "lena@example.com"\n[users.ana]\nrole = "lead"\n'
    )
    users = load_users(path)
    stranger = user_for_email(users, "Mallory@Evil.example", verified=True)
    assert (stranger.name, stranger.role) == ("mallory@evil.example", "labeler")
    assert user_for_email(users, "LENA@example.com").name == "lena@example.com"
    with pytest.raises(PermissionDenied, match="not verified"):
        user_for_email(users, "lena@example.com", verified=False)
    with pytest.raises(PermissionDenied, match="no e-mail"):
        user_for_email(users, "")


def test_a_fresh_session_gets_the_least_privileged_user(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text(
        '[users.ana]\nrole = "lead"\n[users.ravi]\nrole = "reviewer"\n[users.tom]\nrole = "labeler"\n'
    )
    assert least_privileged(load_users(path)).name == "tom"


@pytest.mark.parametrize(
    "server, client, forwarded, exposed",
    [
        ("127.0.0.1", None, False, False),
        ("localhost", None, False, False),
        ("::1", None, False, False),
        (None, None, False, True),  # no address: every interface
        ("0.0.0.0", None, False, True),
        ("192.0.2.7", None, False, True),
        ("127.0.0.1", "192.0.2.9", False, True),
        ("127.0.0.1", None, True, True),
    ],
)
def test_reachability_beyond_loopback(server, client, forwarded, exposed):
    assert reachable_beyond_loopback(server, client, forwarded) is exposed


def test_an_exposed_local_user_holds_a_labelers_rights(stored):
    lead = User("ana", "lead", exposed=True)
    assert not lead.sees_raw_text and lead.may("labeler", "lead") and not lead.may("lead")
    with pytest.raises(PermissionDenied, match=r"\[auth\] section"):
        raw_trace(stored, lead, "t-000001")
    rows = find_traces(stored, lead, TraceFilter(), page_size=5)
    assert rows and all("input" not in row for row in rows)
