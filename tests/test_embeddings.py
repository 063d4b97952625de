"""Embeddings of scrubbed text: the real MiniLM model (loaded once), the cache, nearest neighbours."""

import json
import time

import numpy as np
import pytest
from labels_support import LENA, RAW_ONLY

from flywheel.errors import BadInput, PermissionDenied
from flywheel.review import label_queue
from flywheel.store.db import open_db, write
from flywheel.vectors.embeddings import (
    embed,
    embed_all,
    exchange,
    nearest,
    part_text,
    pending_scrubs,
    similar_traces,
    start_worker,
)
from flywheel.vectors.model import MODEL_NAME, encode, load_model
from flywheel.vectors.model_process import CHUNK, ModelProcess
from flywheel.vectors.stand_in import bag_of_words

TEXTS = {
    "t-fee": "Why was I charged a fee on my card payment?",
    "t-fee2": "There is an extra charge on my statement I do not recognise",
    "t-fee3": "What does the transfer fee cost?",
    "t-card": "My new card has still not arrived in the post",
    "t-card2": "When will the card be delivered?",
    "t-pin": "I forgot my PIN, how do I reset it?",
    "t-old": "Why was I charged a fee for this payment?",
    "t-pending": "Why is there a fee on my account?",
}


@pytest.fixture(scope="session")
def model():
    """The real model, loaded once for the whole test session."""
    return load_model()


@pytest.fixture
def topic_db(db):
    for trace_id, text in TEXTS.items():
        ts = "2026-01-01T00:00:00.000Z" if trace_id == "t-old" else "2026-05-02T00:00:00.000Z"
        db["traces"].insert(
            {
                "trace_id": trace_id,
                "ts": ts,
                "week": "w",
                "input": f"{RAW_ONLY}: {text}",
                "content_hash": trace_id,
            }
        )
        status = "pending" if trace_id == "t-pending" else "approved"
        db["scrubs"].insert({"trace_id": trace_id, "status": status, "input": f"[PERSON]: {text}"})
    with write(db):
        label_queue.enqueue_approved(db)
    return db


def refuse(texts):
    raise AssertionError(f"a request encoded {len(texts)} text(s); vectors should have been stored")


def counting(calls: list):
    def encoder(texts):
        calls.append(len(texts))
        return encode(texts)

    return encoder


def test_siblings_are_the_nearest_approved_traces_of_the_last_month(topic_db, model):
    assert embed_all(topic_db) == 2 * 7  # two parts of each queued scrub; t-pending is not queued
    rows = similar_traces(topic_db, LENA, "t-fee", limit=3, encoder=refuse)
    assert {r["trace_id"] for r in rows[:2]} == {"t-fee2", "t-fee3"}
    assert all(
        r["trace_id"] not in ("t-old", "t-pending", "t-fee") for r in rows
    )  # too old, unapproved, itself
    assert rows[0]["similarity"] >= rows[1]["similarity"] >= rows[2]["similarity"]
    assert RAW_ONLY not in repr(rows) and rows[0]["labels"] == []
    assert rows[0]["turns"][0]["role"] == "customer"


def test_texts_are_embedded_once_and_cached_as_float32(topic_db, model):
    calls = []
    first = embed(topic_db, ["a fee", "a card", "a fee"], counting(calls))
    again = embed(topic_db, ["a card", "a fee", "a pin"], counting(calls))
    assert calls == [2, 1]
    assert first.dtype == np.float32 and first.shape == (3, 384)
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    assert np.array_equal(again[0], first[1]) and np.array_equal(first[0], first[2])
    row = topic_db.execute("SELECT model, dim, length(vector) FROM embeddings LIMIT 1").fetchone()
    assert row == (MODEL_NAME, 384, 384 * 4) and topic_db["embeddings"].count == 3


def test_the_model_process_encodes_what_the_model_encodes_in_process(model):
    texts = [TEXTS[trace_id] for trace_id in sorted(TEXTS)] * 5  # more than one chunk
    assert len(texts) > CHUNK
    process = ModelProcess()
    try:
        vectors = process.encode(texts)
        child = process._child
        assert child is not None and child.poll() is None  # the model stays loaded between batches
        assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 384)
        assert np.allclose(vectors, encode(texts), atol=1e-5)
        assert process.encode([]).shape == (0, 0)
    finally:
        process.close()
    assert child.returncode == 0  # its input closed, the child ended


def test_nearest_is_the_brute_force_ranking():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(200, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    queries = rows[:5] + 0.01
    top, scores = nearest(queries, rows, 4)
    expected = np.argsort(-(queries @ rows.T), axis=1)[:, :4]
    assert np.array_equal(top, expected) and scores.dtype == np.float32


def test_no_siblings_for_an_unapproved_trace(topic_db):
    with pytest.raises(PermissionDenied):
        similar_traces(topic_db, LENA, "t-pending")


def _exchange_db(db):
    """Two customers ask the same; the assistant fails the same way in two replies and fine in one."""
    same_question = "Why is there a fee on my card?"
    replies = {
        "t-a": "Sorry, a human agent will call you about the fee.",
        "t-b": "Sorry, a human agent will call you back.",
        "t-c": "The card fee is a refund of the charge.",
        "t-d": "The fee is a charge on the card for each card payment abroad, a fee per card.",
    }
    for trace_id, reply in replies.items():
        db["traces"].insert(
            {"trace_id": trace_id, "ts": "2026-05-02T00:00:00.000Z", "week": "w", "input": same_question,
             "output": reply, "content_hash": trace_id}
        )  # fmt: skip
        messages = json.dumps(
            [{"role": "user", "content": same_question}, {"role": "assistant", "content": reply}]
        )
        scrub = {"trace_id": trace_id, "status": "approved", "input": same_question, "output": reply}
        db["scrubs"].insert({**scrub, "messages": messages})
    with write(db):
        label_queue.enqueue_approved(db)
    embed_all(db, encoder=bag_of_words)
    return db


def test_similarity_on_the_reply_finds_the_same_failure_not_the_same_topic(db):
    _exchange_db(db)
    by_reply = similar_traces(db, LENA, "t-a", limit=3, part="reply", encoder=refuse)
    assert by_reply[0]["trace_id"] == "t-b"
    turns = by_reply[0]["turns"]
    assert [t["role"] for t in turns] == ["customer", "assistant"]
    assert turns[1]["content"] == "Sorry, a human agent will call you back."
    with pytest.raises(BadInput, match="part 'input'"):
        similar_traces(db, LENA, "t-a", part="input")


def test_the_exchange_names_roles_and_keeps_the_reply():
    scrub = {"input": "hi", "output": "Final answer.", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Which card?"},
        {"role": "user", "content": [{"type": "text", "text": "the blue one"}]},
    ]}  # fmt: skip
    assert [(t["role"], t["content"], t["reply"]) for t in exchange(scrub)] == [
        ("customer", "hi", False),
        ("assistant", "Which card?", False),
        ("customer", "the blue one", False),
        ("assistant", "Final answer.", True),
    ]
    # messages that already end with the reply: it is not drawn twice, and it is the one marked
    ended = {**scrub, "messages": [*scrub["messages"], {"role": "assistant", "content": "Final answer."}]}
    assert [t["reply"] for t in exchange(ended)] == [False, False, False, True]
    # a tool's turn keeps its role, and the reply still comes last
    tool = {"input": "q", "output": "Done.", "messages": [
        {"role": "user", "content": "freeze it"}, {"role": "tool", "content": "freeze_card(ok)"},
    ]}  # fmt: skip
    assert [(t["role"], t["reply"]) for t in exchange(tool)] == [
        ("customer", False), ("tool", False), ("assistant", True)
    ]  # fmt: skip
    assert part_text(scrub, "reply") == "Final answer."
    assert part_text(scrub).splitlines()[-1] == "assistant: Final answer."
    assert exchange({"input": "only a question", "output": None}) == [
        {"role": "customer", "content": "only a question", "reply": False}
    ]


def test_the_background_worker_embeds_approved_scrubs_without_a_request(tmp_path):
    path = tmp_path / "worker.db"
    db = _exchange_db(open_db(path))
    db["traces"].insert({"trace_id": "t-e", "ts": "2026-05-03T00:00:00.000Z", "week": "w", "input": "q",
                         "content_hash": "e"})  # fmt: skip
    scrub_id = db["scrubs"].insert({"trace_id": "t-e", "status": "approved", "input": "a fee?"}).last_pk
    with write(db):
        label_queue.enqueue_scrub(db, scrub_id)
    assert pending_scrubs(db) == 1
    worker = start_worker(path, encoder=bag_of_words)
    try:
        assert start_worker(path) is worker
        worker.wake()
        for _ in range(100):
            if pending_scrubs(db) == 0 and pending_scrubs(db, "reply") == 0:
                break
            time.sleep(0.05)
        assert pending_scrubs(db) == 0 and worker.error is None
        assert similar_traces(db, LENA, "t-e", encoder=refuse)
    finally:
        worker.stop()
        worker.join(timeout=5)
