"""Retention of raw text over an injected clock, the never-redact list, and the Privacy page."""

import json
from datetime import UTC, datetime

import pytest
from conftest import jsonl, trace
from streamlit.testing.v1 import AppTest

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.config import load_config
from flywheel.errors import BadInput, PermissionDenied
from flywheel.ingest.run import ingest_files
from flywheel.privacy.retention import apply_retention, raw_text_gone, retention_plan
from flywheel.privacy.subjects import find_subject
from flywheel.review.scrubs import (
    add_never_redact,
    approve_scrub,
    claim_scrub,
    never_redact,
    rescrub_pending,
    scrub_traces,
    scrubber_version,
)
from flywheel.scrub import Scrubber
from flywheel.store.db import open_db
from pages._nav import PAGES

LEAD = User("ana", "lead")
REVIEWER = User("ravi", "reviewer")
NOW = datetime(2026, 6, 1, tzinfo=UTC)  # the fixture's traces are dated 2026-05-01 .. 2026-05-28


@pytest.fixture
def dated_db(tmp_path):
    traces = [trace(n, input=f"Hi, I am Mara Quist{n}, mail mq{n}@example.com") for n in range(1, 29)]
    database = open_db(tmp_path / "retention.db")
    ingest_files(database, [jsonl(tmp_path / "t.jsonl", traces)], actor="test", config=load_config())
    yield database
    database.close()


@pytest.mark.parametrize(
    ("days", "expired"),
    [(40, 0), (31, 0), (15, 16), (4, 27), (1, 28)],
)
def test_dry_run_counts_what_would_expire_and_changes_nothing(dated_db, days, expired):
    plan = retention_plan(dated_db, LEAD, days, now=NOW)
    assert (plan.traces, plan.applied) == (expired, False)
    assert dated_db.execute("SELECT count(*) FROM raw_purges").fetchone()[0] == 0


@pytest.mark.parametrize("days", [0, -1, True, "7"])
def test_retention_refuses_days_that_are_not_a_positive_number(dated_db, days):
    with pytest.raises(BadInput):
        retention_plan(dated_db, LEAD, days, now=NOW)


@pytest.mark.parametrize("role", ["labeler", "reviewer"])
def test_only_leads_apply_retention(dated_db, role):
    with pytest.raises(PermissionDenied):
        apply_retention(dated_db, User("x", role), 15, now=NOW)


def test_apply_purges_raw_text_keeps_approved_scrubs_and_sets_pending_aside(dated_db):
    scrub_traces(dated_db, ["t-000002", "t-000003", "t-000027"], "test")
    approved = claim_scrub(dated_db, REVIEWER, minutes=10)
    approve_scrub(dated_db, REVIEWER, approved)
    approved_trace, approved_text = dated_db.execute(
        "SELECT trace_id, input FROM scrubs WHERE id = ?", [approved]
    ).fetchone()
    assert approved_trace == "t-000002"
    assert [t["trace_id"] for t in find_subject(dated_db, LEAD, "mq3@example.com").traces] == ["t-000003"]

    report = apply_retention(dated_db, LEAD, 15, now=NOW)

    assert (report.traces, report.set_aside, report.applied) == (16, 1, True)
    assert retention_plan(dated_db, LEAD, 15, now=NOW).traces == 0  # nothing left to purge
    row = dated_db.execute(
        "SELECT input, output, ts, cohort, judge_score FROM traces WHERE trace_id = 't-000003'"
    ).fetchone()
    assert row[0].startswith("[raw text removed: expired on 2026-06-01") and row[1] is None
    assert row[2:] == ("2026-05-04T10:03:00.000Z", "free", 0.03)
    assert raw_text_gone(dated_db, "t-000003").startswith("expired on 2026-06-01")
    assert raw_text_gone(dated_db, "t-000027") is None
    assert dated_db.execute("SELECT input, status FROM scrubs WHERE id = ?", [approved]).fetchone() == (
        approved_text,
        "approved",
    )
    status, note = dated_db.execute("SELECT status, note FROM scrubs WHERE trace_id = 't-000003'").fetchone()
    assert status == "set_aside" and "expired" in note
    assert claim_scrub(dated_db, REVIEWER, minutes=10) is not None  # t-000027 is still reviewable
    assert find_subject(dated_db, LEAD, "mq3@example.com").traces == []
    assert [t["trace_id"] for t in find_subject(dated_db, LEAD, "mq27@example.com").traces] == ["t-000027"]


def test_cli_retention_needs_the_setting(dated_db, tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "retention.db")
    monkeypatch.delenv("FLYWHEEL_RETENTION_DAYS", raising=False)
    assert main(["retention", "--db", path]) == 2
    assert "FLYWHEEL_RETENTION_DAYS" in capsys.readouterr().err
    monkeypatch.setenv("FLYWHEEL_RETENTION_DAYS", "100000")
    assert main(["retention", "--db", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["traces"], out["applied"]) == (0, False)


# Every page still renders after retention purged most raw text --------------------------------------


def _lead_pages() -> list[str]:
    return [path for pages in PAGES.values() for path, _, _, roles in pages if "lead" in roles]


def test_every_page_renders_for_a_lead_after_retention(demo_copy, monkeypatch):
    db = open_db(demo_copy)
    # The demo runs to mid-November 2026: 30 days before 2026-11-20 expires most of it.
    report = apply_retention(db, LEAD, 30, now=datetime(2026, 11, 20, tzinfo=UTC))
    assert report.traces > 500
    db.close()
    monkeypatch.setenv("FLYWHEEL_DB", str(demo_copy))
    monkeypatch.setenv("FLYWHEEL_RETENTION_DAYS", "30")
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.session_state["user_name"] = "ana"
    at.run()
    for page in _lead_pages():
        at.switch_page(page)
        at.run()
        assert not at.exception, f"{page} raised: {[e.value for e in at.exception]}"
        assert not at.error, f"{page} showed an error: {[e.value for e in at.error]}"


def test_privacy_page_finds_and_erases(subject_page_db, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DB", str(subject_page_db))
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.session_state["user_name"] = "ana"
    at.run()
    at.switch_page("pages/privacy.py")
    at.run()
    at.text_input[0].input("mq1@example.com")
    at.button[0].click()
    at.run()
    assert not at.exception and not at.error
    assert at.dataframe[0].value["trace"].tolist() == ["t-000001"]
    at.text_input[1].input("DSR-4")
    at.text_input[2].input("mq1@example.com")
    at.button[1].click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    db = open_db(subject_page_db)
    assert find_subject(db, LEAD, "mq1@example.com").empty
    assert db.execute("SELECT count(*) FROM audit_log WHERE action = 'erase_subject'").fetchone()[0] == 1


@pytest.fixture
def subject_page_db(dated_db, tmp_path):
    return tmp_path / "retention.db"


@pytest.mark.parametrize("user", ["lena", "ravi"])
def test_privacy_page_refuses_labelers_and_reviewers(subject_page_db, monkeypatch, user):
    monkeypatch.setenv("FLYWHEEL_DB", str(subject_page_db))
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.session_state["user_name"] = user
    at.run()
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/privacy.py")


# The never-redact list ---------------------------------------------------------------------------


def test_scrubber_leaves_listed_phrases_alone_but_not_verified_pii():
    text = "Thanks, Lan. Business Support here: write to support.team@bank.example"
    plain = Scrubber().scrub(text).text
    kept = (
        Scrubber(never_redact=["thanks", "business  support", "support.team@bank.example"]).scrub(text).text
    )
    assert plain.startswith("[PERSON]")
    assert kept.startswith("Thanks, [PERSON].")
    assert "[EMAIL]" in kept  # a verified e-mail stays redacted even when listed


@pytest.mark.parametrize("role", ["labeler", "reviewer"])
def test_only_leads_change_the_list_or_rescrub(dated_db, role):
    with pytest.raises(PermissionDenied):
        add_never_redact(dated_db, User("x", role), ["Business Support"])
    with pytest.raises(PermissionDenied):
        rescrub_pending(dated_db, User("x", role))


def test_list_applies_to_new_scrubs_and_rescrubs_pending_only_on_request(dated_db):
    scrub_traces(dated_db, ["t-000001", "t-000002"], "test")
    approved = claim_scrub(dated_db, REVIEWER, minutes=10)
    approve_scrub(dated_db, REVIEWER, approved)
    before = dict(dated_db.execute("SELECT trace_id, input FROM scrubs WHERE is_current = 1").fetchall())
    assert "Mara Quist" not in before["t-000002"]

    assert add_never_redact(dated_db, LEAD, ["Mara  Quist2", "mara quist2"]) == 1
    assert [p["phrase"] for p in never_redact(dated_db, LEAD)] == ["Mara Quist2"]
    assert scrubber_version(dated_db).startswith("1.1.0+keep.")
    with pytest.raises(BadInput):
        add_never_redact(dated_db, LEAD, ["ab"])
    # Existing scrubs are untouched until a lead asks.
    assert (
        dict(dated_db.execute("SELECT trace_id, input FROM scrubs WHERE is_current = 1").fetchall()) == before
    )

    scrub_traces(dated_db, ["t-000012"], "test")
    new = dated_db.execute(
        "SELECT input, scrubber_version FROM scrubs WHERE trace_id = 't-000012'"
    ).fetchone()
    assert new[1] == scrubber_version(dated_db) and "Quist" not in new[0]  # not on the list: redacted

    assert rescrub_pending(dated_db, LEAD) == 1  # t-000002 only: t-000001 is approved
    rows = dated_db.execute(
        "SELECT status, is_current, input FROM scrubs WHERE trace_id = 't-000002' ORDER BY id"
    ).fetchall()
    assert [(s, c) for s, c, _ in rows] == [("superseded", 0), ("pending", 1)]
    assert "Mara Quist2" in rows[1][2] and "[EMAIL]" in rows[1][2]
    assert dated_db.execute("SELECT status FROM scrubs WHERE id = ?", [approved]).fetchone() == ("approved",)
    assert rescrub_pending(dated_db, LEAD) == 0
    actions = [r[0] for r in dated_db.execute("SELECT action FROM audit_log WHERE action LIKE '%never%'")]
    assert actions == ["add_never_redact"]
