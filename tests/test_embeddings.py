"""Embeddings of scrubbed text: the real MiniLM model (loaded once), the cache, nearest neighbours."""

import numpy as np
import pytest
from test_labels import LENA, RAW_ONLY

from flywheel.embeddings import MODEL_NAME, embed, encode, load_model, nearest, similar_traces
from flywheel.errors import PermissionDenied

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
    return db


def counting(calls: list):
    def encoder(texts):
        calls.append(len(texts))
        return encode(texts)

    return encoder


def test_siblings_are_the_nearest_approved_traces_of_the_last_month(topic_db, model):
    rows = similar_traces(topic_db, LENA, "t-fee", limit=3)
    assert {r["trace_id"] for r in rows[:2]} == {"t-fee2", "t-fee3"}
    assert all(
        r["trace_id"] not in ("t-old", "t-pending", "t-fee") for r in rows
    )  # too old, unapproved, itself
    assert rows[0]["similarity"] >= rows[1]["similarity"] >= rows[2]["similarity"]
    assert RAW_ONLY not in repr(rows) and rows[0]["labels"] == []


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
