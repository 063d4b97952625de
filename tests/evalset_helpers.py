"""Test data for eval-set tests: traces with approved scrubs and labels, written through the store."""

import json
from datetime import UTC, datetime

from conftest import trace

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.ingest.run import ingest_lines
from flywheel.labeling.taxonomy import add_entry
from flywheel.store.db import write

LEAD = User("ana", "lead")
CODES = ("WRONG_POLICY", "MISSED_ESCALATION", "HALLUCINATED_FEE")
RAW_NAME = "Maria Gonzalez"


def add_traces(db, count: int, start: int = 1) -> list[str]:
    """Traces whose raw input names a person; their approved scrubs replace the name."""
    lines = [
        json.dumps(trace(n, input=f"{RAW_NAME} asks question {n}", output=f"answer {n}")).encode() + b"\n"
        for n in range(start, start + count)
    ]
    ingest_lines(db, lines, "t.jsonl", "test", config=load_config())
    ids = [f"t-{n:06d}" for n in range(start, start + count)]
    with write(db):
        for code in CODES:
            if not db.execute("SELECT 1 FROM taxonomy WHERE code = ?", [code]).fetchone():
                add_entry(db, "ana", code, code.title(), "A failure. It is defined here for tests.")
        for trace_id in ids:
            n = int(trace_id[2:])
            db["scrubs"].insert(
                {
                    "trace_id": trace_id,
                    "scrubber_version": "test",
                    "status": "approved",
                    "input": f"[PERSON] asks question {n}",
                    "output": f"answer {n}",
                    "messages": json.dumps(
                        [
                            {"role": "user", "content": f"[PERSON] asks question {n}"},
                            {"role": "assistant", "content": f"answer {n}"},
                        ]
                    ),
                    "created_at": "2026-05-01T00:00:00Z",
                    "reviewed_by": "ravi",
                }
            )
    return ids


def label(db, trace_id: str, labeler: str, kind: str = "known", code: str | None = CODES[0], **extra) -> int:
    """A live label, as the labeling station stores it."""
    values = {
        "trace_id": trace_id,
        "labeler": labeler,
        "kind": kind,
        "code": None if kind == "not_a_bug" else code,
        "expected": None if kind == "not_a_bug" else "Quote the policy.",
        "pass_criterion": None if kind == "not_a_bug" else "States the policy.",
        "adversarial": "none",
        "via": "card",
        "created_at": datetime.now(UTC).isoformat(),
        **extra,
    }
    with write(db):
        return db["labels"].insert(values).last_pk


def undo(db, label_id: int) -> None:
    with write(db):
        db["labels"].update(label_id, {"undone_at": datetime.now(UTC).isoformat(), "undone_by": "test"})


def results_file(path, outcomes: dict[str, object]) -> bytes:
    """Our JSONL results: {row_id: passed or [passed, ...] for repeats}."""
    lines = []
    for row_id, passed in outcomes.items():
        for value in passed if isinstance(passed, list) else [passed]:
            lines.append(json.dumps({"row_id": row_id, "passed": value, "output": f"out {row_id}"}))
    data = ("\n".join(lines) + "\n").encode()
    if path is not None:
        path.write_bytes(data)
    return data
