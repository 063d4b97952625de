"""No text a reviewer has not signed off reaches a labeler.

Every test plants a value the machine scrubber does not catch (a user handle) and that a reviewer then
redacts. Each path a labeler reads trace-derived text through (the label card and its sampling reasons,
the Traces table, its search and its detail, taxonomy examples, sibling traces, the Overview) must show
the redacted placeholder or nothing, never the handle; each test first proves the handle is there to
leak (in the machine scrub or where a lead reads it), so it cannot pass by finding nothing anywhere.
"""

import json

import numpy as np
import pytest
from conftest import jsonl, trace
from drift_support import add_eval_version, banking77
from labels_support import ANA
from pages_support import app, open_page

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.drift import run as drift
from flywheel.ingest.run import ingest_files
from flywheel.labeling.labels import claim_next, label_card, record_label
from flywheel.labeling.taxonomy import example_rows
from flywheel.review.scrubs import add_redaction_text, approve_scrub, claim_scrub, scrub_traces
from flywheel.store.clock import now
from flywheel.store.db import open_db, write
from flywheel.traces.queries import TraceFilter, count_traces, find_traces
from flywheel.vectors.embeddings import embed_scrubs, similar_traces
from flywheel.vectors.stand_in import hashing_encoder

HANDLE = "orbitfern"  # a login name the scrubber's detectors and NER leave alone in these sentences
LENA, RAVI = User("lena", "labeler"), User("ravi", "reviewer")
OLD_REASONS = [
    f"drift:{HANDLE} declined payment",
    "anomaly:thumbs_down",
    "drift:cluster-2",
    f"drift:login {HANDLE}",
]
CONVERSATION = [
    {"role": "user", "content": f"{HANDLE}: where is my new card?"},
    {"role": "assistant", "content": f"Sorry {HANDLE}, it ships soon."},
    {"role": "user", "content": f"my login is {HANDLE} and my card payment was declined twice"},
]


def redact_and_approve(db, trace_id: str, label: str = "PERSON") -> int:
    """What a reviewer does on the Review page: claim, redact every occurrence of the handle, sign off."""
    sql = "SELECT id FROM scrubs WHERE trace_id = ? AND is_current = 1"
    scrub = db.execute(sql, [trace_id]).fetchone()[0]
    claim_scrub(db, RAVI, scrub, minutes=10)
    if HANDLE in scrubbed_text(db, trace_id):
        assert add_redaction_text(db, RAVI, scrub, HANDLE, label) > 0
    approve_scrub(db, RAVI, scrub)
    return scrub


def scrubbed_text(db, trace_id: str) -> str:
    row = db.execute(
        "SELECT input, coalesce(output, ''), coalesce(messages, '') FROM scrubs"
        " WHERE trace_id = ? AND is_current = 1",
        [trace_id],
    ).fetchone()
    return "\n".join(row)


def old_drift_batch(db, trace_ids: list[str]) -> int:
    """A batch as drift wrote it before its reasons were numbered: the cluster's words in the reason."""
    with write(db):
        batch = (
            db["sample_batches"]
            .insert(
                {
                    "plan_name": "drift",
                    "plan": json.dumps({"name": "drift"}),
                    "seed": 7,
                    "week": "2026-W18",
                    "created_by": "ana",
                    "created_at": now(),
                    "reasons": json.dumps({r: len(trace_ids) for r in OLD_REASONS}),
                }
            )
            .last_pk
        )
        db["batch_items"].insert_all(
            {"batch_id": batch, "trace_id": t, "reasons": json.dumps(OLD_REASONS), "priority": 1}
            for t in trace_ids
        )
    return batch


@pytest.fixture
def planted(tmp_path):
    """t-000001 approved once the reviewer redacted the handle; t-000002 holds it in a pending machine
    scrub; t-000003 approved and free of it. 1 and 2 sit in an old drift batch named after the handle."""
    path = tmp_path / "planted.db"
    db = open_db(path)
    items = [
        trace(
            1,
            input=CONVERSATION[-1]["content"],
            output=f"Sorry {HANDLE}, we will check the declined payment.",
            messages=CONVERSATION,
            signals={"thumbs": "down"},
        ),
        trace(2, input=f"my login is {HANDLE} and the top up failed", output="let me check the top up"),
        trace(3, input="my card payment was declined at a shop", output="we will check the payment"),
    ]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)], config=load_config())
    old_drift_batch(db, ["t-000001", "t-000002"])
    scrub_traces(db, ["t-000001", "t-000002", "t-000003"], actor="ana")
    # the precondition that makes every test below able to fail: the machine scrub keeps the handle
    assert HANDLE in scrubbed_text(db, "t-000001") and HANDLE in scrubbed_text(db, "t-000002")
    redact_and_approve(db, "t-000001")
    redact_and_approve(db, "t-000003")
    assert HANDLE not in scrubbed_text(db, "t-000001") and "[PERSON]" in scrubbed_text(db, "t-000001")
    db.close()
    return path


def page_text(at) -> str:
    """Everything an AppTest run drew, sidebar and tables included, as one string."""

    def walk(node) -> list[str]:
        proto = getattr(node, "proto", None)
        parts = [str(proto)] if proto is not None else []
        for child in getattr(node, "children", {}).values():
            parts += walk(child)
        return parts

    return "\n".join(walk(at._tree))


# The label card ---------------------------------------------------------------------------------


def test_the_label_card_withholds_a_drift_reason_that_carries_words(planted):
    db = open_db(planted)
    claim = claim_next(db, LENA, minutes=10)
    assert claim.trace_id == "t-000001"  # the batch's item, its drift reason naming the handle
    card = label_card(db, LENA, claim)
    assert card["reasons"] == ["drift (name withheld)", "anomaly:thumbs_down", "drift:cluster-2"]
    assert HANDLE not in json.dumps(card)
    assert "[PERSON]" in card["input"] and "[PERSON]" in card["output"]


@pytest.fixture
def drift_planted(db, tmp_path):
    """Four weeks of traffic; in the last, the new intents' traces carry the handle, so the far clusters
    that drift names from (unreviewed) scrubs are named after it."""
    texts, rng = banking77(), np.random.default_rng(5)
    covered = ("card_arrival", "exchange_rate", "top_up_failed", "lost_or_stolen_card", "pin_blocked")
    novel = ("age_limit", "apple_pay_or_google_pay", "terminate_account")
    add_eval_version(db, [t for intent in covered for t in texts[intent][:12]])
    traces, n = [], 0
    for week, monday in enumerate(("2026-03-02", "2026-03-09", "2026-03-16", "2026-03-23")):
        for i in range(60):
            is_new = week == 3 and i % 2 == 0
            intent = novel[i % 3] if is_new else covered[i % 5]
            n += 1
            text = texts[intent][12 + int(rng.integers(0, 60))]
            if is_new:
                text += f" my login is {HANDLE}, login {HANDLE}"
            traces.append({"trace_id": f"t-{n:04d}", "timestamp": f"{monday}T10:{i:02d}:00Z", "input": text})
    ingest_files(db, [jsonl(tmp_path / "traces.jsonl", traces)], actor="test", config=load_config())
    return db


def test_a_drift_batch_reaches_the_label_card_without_the_cluster_words(drift_planted):
    db = drift_planted
    run = drift.run_drift(
        db, "ana", "2026-W13", model=drift.Model("bow", "1", hashing_encoder()), config=load_config()
    )
    named = [c for c in drift.clusters(db, run.id, "2026-W13") if HANDLE in c["name"]]
    assert named, "the test needs a cluster named after the handle"  # what a lead reads on Drift
    batch = drift.send_to_sampling(db, ANA, run.id, clusters_sent=3, per_cluster=3, control_share=0.5)
    assert not any(HANDLE in reason for reason in batch.reasons)
    items = db.execute("SELECT trace_id, reasons, stratum FROM batch_items WHERE batch_id = ?", [batch.id])
    items = items.fetchall()
    assert not any(HANDLE in reasons or HANDLE in (stratum or "") for _, reasons, stratum in items)
    audit = db.execute("SELECT detail FROM audit_log WHERE action = 'sample'").fetchone()[0]
    assert HANDLE not in audit
    with_handle = [t for t, _, _ in items if HANDLE in scrubbed_text(db, t)]
    assert with_handle, "the machine scrub keeps the handle: only the reviewer catches it"
    for trace_id, _, _ in items:
        redact_and_approve(db, trace_id)
    seen = []
    while (claim := claim_next(db, LENA, minutes=10)) is not None:
        card = label_card(db, LENA, claim)
        assert HANDLE not in json.dumps(card), card
        seen += card["reasons"]
        record_label(db, LENA, claim, "not_a_bug")
    numbered = {f"drift:cluster-{c['cluster'] + 1}" for c in named}
    assert numbered & set(seen) and set(seen) <= {*batch.reasons}


# Traces: the table, its search and the detail ---------------------------------------------------


def test_the_traces_table_and_its_search_read_approved_scrubs_only(planted):
    db = open_db(planted)
    rows = {r["trace_id"]: r for r in find_traces(db, LENA, TraceFilter())}
    assert "[PERSON]" in rows["t-000001"]["scrubbed_input"]
    assert rows["t-000002"]["scrubbed_input"] is None and rows["t-000002"]["scrub"] == "pending"
    assert HANDLE not in json.dumps(list(rows.values()))
    search = TraceFilter(text=HANDLE)
    assert count_traces(db, search, RAVI) == 1  # a reviewer finds the pending machine scrub
    assert [r["trace_id"] for r in find_traces(db, RAVI, search)] == ["t-000002"]
    assert count_traces(db, search, LENA) == 0 and find_traces(db, LENA, search) == []
    assert count_traces(db, TraceFilter(text="[PERSON]"), LENA) == 1


def test_the_traces_page_shows_a_labeler_no_unreviewed_word(planted, monkeypatch):
    lead = open_page(app(planted, monkeypatch, "ana"), "pages/traces.py")
    assert HANDLE in page_text(lead)  # raw text, for a lead: the sweep does see the handle
    at = open_page(app(planted, monkeypatch, "lena"), "pages/traces.py")
    next(c for c in at.checkbox if c.label == "Approved scrubs only").uncheck().run()
    assert set(at.dataframe[0].value["trace_id"]) == {"t-000001", "t-000002", "t-000003"}
    assert HANDLE not in page_text(at)
    at.text_input[1].input(HANDLE).run()  # "Scrubbed text contains"
    assert any("No trace matches" in i.value for i in at.info)
    assert HANDLE not in page_text(at).replace(f'value: "{HANDLE}"', "")  # only the typed query itself


def test_the_trace_detail_shows_a_labeler_the_approved_conversation(planted, monkeypatch):
    at = open_page(app(planted, monkeypatch, "lena"), "pages/traces.py")
    table = at.dataframe[0].value
    position = int(np.flatnonzero(table["trace_id"].to_numpy() == "t-000001")[0])
    at.session_state["trace_table"] = {"selection": {"rows": [position], "columns": []}}
    at.run()
    shown = [t.value for t in at.text]
    assert any("[PERSON]: where is my new card?" in t for t in shown), shown
    assert HANDLE not in page_text(at)


# Taxonomy examples ------------------------------------------------------------------------------


def label_with_new_code(db) -> None:
    claim = claim_next(db, LENA, minutes=10)
    assert claim.trace_id == "t-000001"
    record_label(
        db,
        LENA,
        claim,
        "new",
        code="DECLINED_NO_REASON",
        name="Decline without a reason",
        definition="The reply does not say why a payment was declined. A pass names the reason.",
        expected="Say why the payment was declined",
        pass_criterion="names the decline reason",
    )


def test_taxonomy_examples_are_approved_scrubs_only(planted, monkeypatch):
    db = open_db(planted)
    label_with_new_code(db)
    (example,) = example_rows(db, LENA, "DECLINED_NO_REASON")
    assert example["trace_id"] == "t-000001"
    assert "[PERSON]" in example["scrubbed_output"] and HANDLE not in json.dumps(example)
    at = open_page(app(planted, monkeypatch, "lena"), "pages/taxonomy.py")
    assert any("[PERSON]: where is my new card?" in t.value for t in at.text)
    assert HANDLE not in page_text(at)


def test_a_reopened_scrub_takes_its_example_off_the_taxonomy_page(planted):
    from flywheel.review.scrubs import reopen_scrub

    db = open_db(planted)
    label_with_new_code(db)
    scrub = db.execute("SELECT id FROM scrubs WHERE trace_id = 't-000001'").fetchone()[0]
    reopen_scrub(db, RAVI, scrub, "check the handle again")
    assert example_rows(db, LENA, "DECLINED_NO_REASON") == []


# Siblings on the Label page ---------------------------------------------------------------------


def test_sibling_traces_are_read_from_approved_scrubs(planted):
    db = open_db(planted)
    encoder = hashing_encoder()
    assert embed_scrubs(db, encoder=encoder) == 2
    rows = similar_traces(db, LENA, "t-000003", encoder=encoder)
    assert [r["trace_id"] for r in rows] == ["t-000001"]  # the pending t-000002 is no candidate
    assert "[PERSON]" in json.dumps(rows) and HANDLE not in json.dumps(rows)


# Whole labeler pages ----------------------------------------------------------------------------


def test_the_label_page_shows_reasons_and_text_without_the_handle(planted, monkeypatch):
    at = open_page(app(planted, monkeypatch, "lena"), "pages/label.py")
    shown = [t.value for t in at.text]
    assert "Sampled for: drift (name withheld), anomaly:thumbs_down, drift:cluster-2" in shown
    assert any("[PERSON]" in t for t in shown)
    assert HANDLE not in page_text(at)


def test_the_overview_and_every_labeler_page_show_no_unreviewed_word(planted, monkeypatch):
    db = open_db(planted)
    label_with_new_code(db)
    at = app(planted, monkeypatch, "lena")
    for page in ("pages/overview.py", "pages/traces.py", "pages/label.py", "pages/taxonomy.py"):
        open_page(at, page)
        assert HANDLE not in page_text(at), page
