"""How fast the next item appears after a label click, on a generated database of 1M traces.

    python benchmarks/label_speed.py [--traces 1000000] [--approved 6000] [--iterations 200] [--db PATH]

Builds (or reuses, with --keep) a database of realistic-size traces inserted with executemany, a few
thousand approved scrubs spread over sample batches (and some in no batch), then times, server-side,
``record_label`` (the click) and ``claim_next`` (the next item) for two labelers taking turns, and
prints p50 / p95 / max in milliseconds. The bar is 200 ms from click to next item. It also times the
siblings panel's query (``similar_traces``) over stored vectors of every approved scrub (random unit
vectors: reading and ranking them costs what model vectors cost); the bar is 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from flywheel.auth import User
from flywheel.labeling.labels import claim_next, label_card, record_label
from flywheel.labeling.taxonomy import add_entry
from flywheel.review import label_queue
from flywheel.store.db import open_db, write
from flywheel.vectors.embeddings import PARTS, similar_traces
from flywheel.vectors.model import MODEL_NAME

WORDS = [
    "card",
    "payment",
    "refund",
    "transfer",
    "fee",
    "account",
    "limit",
    "pending",
    "declined",
    "arrived",
    "exchange",
    "rate",
    "branch",
]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _trace_rows(rng: random.Random, start: int, count: int):
    for n in range(start, start + count):
        day = 1 + n % 28
        question, answer = _text(rng, 40), _text(rng, 60)
        messages = json.dumps(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        )
        yield (
            f"t-{n:07d}",
            f"2026-05-{day:02d}T10:00:00.000Z",
            "2026-W19",
            question,
            answer,
            messages,
            ("free", "smb", "enterprise")[n % 3],
            ("card_arrival", "refund_dispute", "top_up_failed")[n % 3],
            "down" if n % 17 == 0 else None,
            (n % 100) / 100,
            1 + n % 7,
            f"h{n}",
        )


def build(path: Path, traces: int, approved: int, seed: int = 7) -> None:
    """A fresh database: ``traces`` traces, ``approved`` approved scrubs (5 batches + some in none)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = open_db(path)
    rng = random.Random(seed)
    started = time.perf_counter()
    for start in range(0, traces, 50_000):
        with write(db):
            db.conn.executemany(
                "INSERT INTO traces (trace_id, ts, week, input, output, messages, cohort, intent, thumbs,"
                " judge_score, turns, content_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                _trace_rows(rng, start, min(50_000, traces - start)),
            )
    print(f"inserted {traces:,} traces in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    picked = rng.sample(range(traces), approved + approved // 2)
    batched, loose, pending = (
        picked[: approved * 5 // 6],
        picked[approved * 5 // 6 : approved],
        picked[approved:],
    )
    with write(db):
        for batch_id in range(1, 6):
            db["sample_batches"].insert({"id": batch_id, "plan": "{}", "seed": 7, "week": "2026-W19"})
            db.conn.executemany(
                "INSERT INTO batch_items (batch_id, trace_id, reasons, priority) VALUES (?, ?, '[]', ?)",
                [(batch_id, f"t-{n:07d}", n % 3) for n in batched[batch_id - 1 :: 5]],
            )
        for numbers, status in ((batched + loose, "approved"), (pending, "pending")):
            db.conn.executemany(
                "INSERT INTO scrubs (trace_id, scrubber_version, status, input, output, created_at)"
                " SELECT trace_id, 'bench', ?, input, output, ts FROM traces WHERE trace_id = ?",
                [(status, f"t-{n:07d}") for n in numbers],
            )
        label_queue.enqueue_approved(db)  # what review does in the approving transaction
        add_entry(db, "bench", "WRONG_POLICY", "Wrong policy", "It states a policy we lack. Check the terms.")
    _random_vectors(db, seed)
    db.execute("ANALYZE")
    db.close()


def _random_vectors(db, seed: int) -> None:
    """Unit vectors for every queued scrub and part, as the embedding worker would store them.

    Random numbers, not model output: the siblings timing reads and ranks vectors, which costs the same.
    """
    rng = np.random.default_rng(seed)
    scrubs = [r[0] for r in db.execute("SELECT scrub_id FROM label_queue")]
    with write(db):
        for part in PARTS:
            vectors = rng.normal(size=(len(scrubs), 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            pairs = zip(scrubs, vectors, strict=True)
            rows = [(f"{part}-{s}", MODEL_NAME, 384, v.tobytes(), "bench") for s, v in pairs]
            db.conn.executemany("INSERT INTO embeddings VALUES (?, ?, ?, ?, ?)", rows)
            db.conn.executemany(
                "INSERT INTO scrub_vectors VALUES (?, ?, ?, ?)",
                [(s, part, MODEL_NAME, f"{part}-{s}") for s in scrubs],
            )


def measure_siblings(path: Path, times: int = 20) -> list[float]:
    """Milliseconds of ``similar_traces`` (the siblings panel's query and ranking) for queued traces."""
    db = open_db(path)
    user = User("lena", "labeler")
    anchors = [
        r[0] for r in db.execute("SELECT trace_id FROM label_queue ORDER BY trace_id LIMIT ?", [times])
    ]
    spent = []
    for trace_id in anchors:
        t0 = time.perf_counter()
        similar_traces(db, user, trace_id, encoder=_refuse)
        spent.append((time.perf_counter() - t0) * 1000)
    db.close()
    return spent


def _refuse(texts):
    raise RuntimeError("the siblings panel encoded text inside the request")


def measure(path: Path, iterations: int) -> dict[str, list[float]]:
    """Milliseconds of each step over ``iterations`` labels by two labelers taking turns."""
    db = open_db(path)
    users = (User("lena", "labeler"), User("tom", "labeler"))
    times: dict[str, list[float]] = {
        "claim_next": [],
        "label_card": [],
        "record_label": [],
        "click_to_next": [],
    }
    claims = {u.name: claim_next(db, u, minutes=10) for u in users}
    for i in range(iterations):
        user = users[i % 2]
        t0 = time.perf_counter()
        if i % 3:
            record_label(db, user, claims[user.name], "not_a_bug")
        else:
            record_label(
                db, user, claims[user.name], "known", code="WRONG_POLICY", expected="x", pass_criterion="y"
            )
        t1 = time.perf_counter()
        claims[user.name] = claim_next(db, user, minutes=10)
        t2 = time.perf_counter()
        label_card(db, user, claims[user.name])
        t3 = time.perf_counter()
        for name, ms in (
            ("record_label", t1 - t0),
            ("claim_next", t2 - t1),
            ("label_card", t3 - t2),
            ("click_to_next", t3 - t0),
        ):
            times[name].append(ms * 1000)
    db.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="/tmp/flywheel_label_speed.db")
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--approved", type=int, default=6000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="reuse the database at --db if it exists")
    args = parser.parse_args()
    path = Path(args.db)
    if not (args.keep and path.exists()):
        build(path, args.traces, args.approved)
    db = open_db(path)
    traces, approved = db["traces"].count, db["label_queue"].count
    db.close()
    times = measure(path, args.iterations)
    times["siblings_panel"] = measure_siblings(path)
    print(f"{traces:,} traces, {approved:,} approved scrubs in the queue, {args.iterations} labels")
    print(f"{'step':<14} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, values in times.items():
        p95 = statistics.quantiles(values, n=20)[-1]
        print(f"{name:<14} {statistics.median(values):8.2f} {p95:8.2f} {max(values):8.2f}")


if __name__ == "__main__":
    main()
