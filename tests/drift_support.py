""""""

from __future__ import annotations

import csv
import hashlib

from flywheel.config import PROJECT_ROOT
from flywheel.store.clock import now
from flywheel.store.db import write


def banking77() -> dict[str, list[str]]:
    by_intent: dict[str, list[str]] = {}
    with open(PROJECT_ROOT / "data" / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_intent.setdefault(row["category"], []).append(" ".join(row["text"].split()))
    return by_intent


def add_eval_version(db, texts: list[str]) -> int:
    """A new eval-set version holding ``texts`` as rows (the columns the eval-set station writes)."""
    version = (db.execute("SELECT max(version) FROM eval_versions").fetchone()[0] or 0) + 1
    first = db.execute("SELECT count(*) FROM eval_rows").fetchone()[0] + 1
    ids = [f"r-{first + i:06d}" for i in range(len(texts))]
    with write(db):
        db["eval_versions"].insert(
            {
                "version": version,
                "kind": "import",
                "created_by": "ana",
                "created_at": now(),
                "rows": len(texts),
            }
        )
        db["eval_rows"].insert_all(
            {
                "id": i,
                "input": t,
                "source": "import",
                "adversarial": 0,
                "content_hash": hashlib.sha256(t.encode()).hexdigest(),
                "created_at": now(),
            }
            for i, t in zip(ids, texts, strict=True)
        )
        db["eval_version_rows"].insert_all({"version": version, "row_id": i, "state": "active"} for i in ids)
    return version
