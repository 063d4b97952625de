"""Data subjects: find a value in every place raw text lives, follow it through the loop, erase it."""

import json
import sqlite3

import pytest
from conftest import jsonl, trace

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.config import load_config
from flywheel.errors import BadInput, PermissionDenied
from flywheel.ingest.run import ingest_files
from flywheel.privacy.subjects import erase_subject, find_subject, probe
from flywheel.store.db import open_db

LEAD = User("ana", "lead")
SUBJECT_TRACES = [
    trace(1, input="Please reply to Jane.Doe@Example.com about my refund"),
    trace(2, output="We will call you on +44 20 7946 0958 tomorrow"),
    trace(
        3,
        messages=[
            {"role": "user", "content": "Thanks, La\u200bn  NGUYEN here"},
            {"role": "assistant", "content": "Hello"},
        ],
    ),
    trace(4, metadata={"user_id": "u-48213", "release": "v2"}),
    trace(5, input="card 4111-1111-1111-1111 was charged twice"),
    trace(6, input="call me on 020 7946 0959 please"),  # one digit away from trace 2's number
]


@pytest.fixture
def subject_db(tmp_path):
    path = jsonl(
        tmp_path / "traces.jsonl",
        [*SUBJECT_TRACES, b'{"trace_id": "t-000099", "input": "jane.doe@example.com wrote" BROKEN'],
    )
    database = open_db(tmp_path / "subjects.db")
    ingest_files(database, [path], actor="test", config=load_config())
    yield database
    database.close()


def _ids(report) -> list[str]:
    return [t["trace_id"] for t in report.traces]


@pytest.mark.parametrize(
    ("value", "traces", "fields", "quarantined"),
    [
        ("jane.doe@example.com", ["t-000001"], ["input"], 1),
        ("JANE.DOE@EXAMPLE.COM", ["t-000001"], ["input"], 1),
        ("020 7946 0958", ["t-000002"], ["output"], 0),
        ("+44-20-7946-0958", ["t-000002"], ["output"], 0),
        ("lan nguyen", ["t-000003"], ["messages[0]"], 0),
        ("Lan Nguyen", ["t-000003"], ["messages[0]"], 0),
        ("U-48213", ["t-000004"], ["metadata"], 0),
        ("4111 1111 1111 1111", ["t-000005"], ["input"], 0),
        ("nobody@example.com", [], [], 0),
        ("+44 20 7946 0957", [], [], 0),
        ("Nguyen Lan", [], [], 0),
    ],
)
def test_find_matches_the_way_the_scrubber_normalises(subject_db, value, traces, fields, quarantined):
    report = find_subject(subject_db, LEAD, value)
    assert _ids(report) == traces
    assert [f for t in report.traces for f in t["fields"]] == fields
    assert len(report.quarantined) == quarantined


@pytest.mark.parametrize("value", ["", "  ", "ab", "--!!"])
def test_find_refuses_values_too_short_or_without_letters(subject_db, value):
    with pytest.raises(BadInput):
        find_subject(subject_db, LEAD, value)


def test_a_common_word_value_is_found_by_a_scan(subject_db):
    assert probe("please").keys() == []
    assert _ids(find_subject(subject_db, LEAD, "PLEASE")) == ["t-000001", "t-000006"]


def test_index_follows_new_traces(subject_db, tmp_path):
    assert _ids(find_subject(subject_db, LEAD, "zoe.late@example.org")) == []
    later = jsonl(tmp_path / "later.jsonl", [trace(7, input="mail zoe.late@example.org")])
    ingest_files(subject_db, [later], actor="test", config=load_config())
    assert _ids(find_subject(subject_db, LEAD, "zoe.late@example.org")) == ["t-000007"]


@pytest.mark.parametrize("role", ["labeler", "reviewer"])
def test_only_leads_find_or_erase(subject_db, role):
    someone = User("x", role)
    with pytest.raises(PermissionDenied):
        find_subject(subject_db, someone, "jane.doe@example.com")
    with pytest.raises(PermissionDenied):
        erase_subject(subject_db, someone, "jane.doe@example.com", "DSR-1")


def test_find_audits_a_keyed_hash_never_the_value(subject_db):
    find_subject(subject_db, LEAD, "jane.doe@example.com")
    entry = subject_db.execute(
        "SELECT entity_id, detail FROM audit_log WHERE action = 'find_subject'"
    ).fetchone()
    assert entry is not None and len(entry[0]) == 32
    assert "jane" not in json.dumps(entry).lower()


def test_erase_refuses_a_reason_naming_the_subject_and_an_empty_reason(subject_db):
    with pytest.raises(BadInput, match="names the data subject"):
        erase_subject(subject_db, LEAD, "jane.doe@example.com", "Jane.Doe@example.com asked")
    with pytest.raises(BadInput):
        erase_subject(subject_db, LEAD, "jane.doe@example.com", "  ")
    assert _ids(find_subject(subject_db, LEAD, "jane.doe@example.com")) == ["t-000001"]


# Erasure on the demo: t-000889 (Tom Fischer) is one eval row of the quality set -------------------

VALUE = "t.fischer@example.net"


def _bytes_hold(path, needle: str) -> bool:
    data = path.read_bytes().lower() if path.exists() else b""
    return needle.lower().encode() in data or needle.lower().encode("utf-16-le") in data


def test_erase_leaves_no_copy_anywhere(demo_copy, tmp_path):
    db = open_db(demo_copy)
    before = find_subject(db, LEAD, VALUE)
    assert _ids(before) == ["t-000889"]
    assert len(before.eval_rows) == 1
    row_id = before.eval_rows[0]["row_id"]
    old_version = max(before.versions)
    next_version = db.execute("SELECT max(version) FROM eval_versions").fetchone()[0] + 1
    old_rows = db.execute(
        "SELECT count(*) FROM eval_version_rows WHERE version = ?", [old_version]
    ).fetchone()[0]
    out = tmp_path / "v.jsonl"
    assert (
        main(
            [
                "export",
                "--db",
                str(demo_copy),
                "--set",
                "quality",
                "--version",
                str(old_version),
                "--format",
                "jsonl",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(find_subject(db, LEAD, VALUE).exports) == 1

    report = erase_subject(db, LEAD, VALUE, "request DSR-2026-17")

    assert report.as_json() == {
        "traces": 1,
        "quarantined": 0,
        "eval_rows_withdrawn": [row_id],
        "versions": [next_version],
    }
    assert find_subject(db, LEAD, VALUE).empty
    # The new version leaves the row out; the old one still lists it, as a tombstone.
    new_members = dict(
        db.execute("SELECT row_id, state FROM eval_version_rows WHERE version = ?", [next_version]).fetchall()
    )
    assert row_id not in new_members and len(new_members) == old_rows - 1
    row = db.execute("SELECT input, expected, criterion FROM eval_rows WHERE id = ?", [row_id]).fetchone()
    assert row[0].startswith("[erased on ") and row[1] is None and row[2] is None
    assert db.execute("SELECT source FROM eval_withdrawals WHERE row_id = ?", [row_id]).fetchone() == (
        "erasure",
    )
    trace = db.execute(
        "SELECT input, output, messages, metadata, intent FROM traces WHERE trace_id = 't-000889'"
    ).fetchone()
    assert trace[0].startswith("[raw text removed: erased on") and trace[1:4] == (None, None, None)
    assert trace[4] is not None  # the signals and strata stay
    audit = db.execute("SELECT entity_id, detail FROM audit_log WHERE action = 'erase_subject'").fetchone()
    assert "DSR-2026-17" in audit[1] and "t.fischer" not in json.dumps(audit).lower()
    db.close()
    for suffix in ("", "-wal", "-shm"):
        path = demo_copy.with_name(demo_copy.name + suffix)
        assert not _bytes_hold(path, VALUE), f"{path.name} still holds the value"


def test_erase_frozen_rows_still_refuse_any_other_update(demo_copy):
    db = open_db(demo_copy)
    row_id = find_subject(db, LEAD, VALUE).eval_rows[0]["row_id"]
    erase_subject(db, LEAD, VALUE, "DSR-3")
    with pytest.raises(sqlite3.IntegrityError, match="frozen"):
        db.execute("UPDATE eval_rows SET input = 'changed' WHERE id = ?", [row_id])
    with pytest.raises(sqlite3.IntegrityError, match="frozen"):
        db.execute("UPDATE eval_rows SET input = 'changed' WHERE id = 'r-000001'")
    with pytest.raises(sqlite3.IntegrityError, match="never changed"):
        db.execute("DELETE FROM eval_row_tombstones")


def test_cli_find_and_erase_json(subject_db, tmp_path, capsys):
    path = str(tmp_path / "subjects.db")
    assert main(["subject", "find", "--db", path, "Jane.Doe@example.com", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert list(found) == ["traces", "quarantined", "eval_rows", "versions", "exports"]
    assert [t["trace_id"] for t in found["traces"]] == ["t-000001"] and len(found["quarantined"]) == 1
    assert (
        main(["subject", "erase", "--db", path, "Jane.Doe@example.com", "--reason", "DSR-9", "--json"]) == 0
    )
    erased = json.loads(capsys.readouterr().out)
    assert erased == {"traces": 1, "quarantined": 1, "eval_rows_withdrawn": [], "versions": []}
    assert main(["subject", "find", "--db", path, "jane.doe@example.com", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["traces"] == []
    assert main(["subject", "erase", "--db", path, "ab", "--reason", "x"]) == 2
    assert "too short" in capsys.readouterr().err
