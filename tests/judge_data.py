"""Data for judge, calibration and online-quality tests: traces with PII, approved scrubs, labels."""

from __future__ import annotations

import json

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.ingest.run import ingest_lines
from flywheel.online.rubrics import STARTER_RUBRIC, save_rubric
from flywheel.store.clock import now
from flywheel.store.db import write

LEAD = User("ana", "lead")
NAMES = ("Jane Doe", "Omar Haddad", "Li Wei", "Sven Berg")


def raw_input(n: int) -> str:
    return f"Hi, I am {NAMES[n % 4]}, mail me at person{n}@example.org: where is my card {n}?"


def raw_output(n: int) -> str:
    reply = "FAILME no idea" if n % 3 == 0 else "Cards arrive in 3 to 5 days"
    return f"Thanks {NAMES[n % 4]}. {reply} (ref person{n}@example.org)"


def add_traces(
    db,
    count: int,
    week_day: str = "2026-11-03",
    approved: int | None = None,
    metadata=None,
    start: int = 0,
) -> list[str]:
    """``count`` traces whose text carries a name and an e-mail; the first ``approved`` are approved."""
    lines = []
    for n in range(start, start + count):
        trace = {
            "trace_id": f"t-{n:04d}",
            "timestamp": f"{week_day}T10:{n % 60:02d}:00Z",
            "input": raw_input(n),
            "output": raw_output(n),
            "cohort": ("free", "enterprise")[n % 2],
            "signals": {"thumbs": "down" if n % 3 == 0 else "up", "judge_score": 0.5},
            "metadata": metadata(n) if metadata else {},
        }
        lines.append(json.dumps(trace).encode())
    ingest_lines(db, lines, "judge-test.jsonl", "test", config=load_config())
    ids = [f"t-{n:04d}" for n in range(start, start + count)]
    approve(db, ids[: count if approved is None else approved])
    return ids


def approve(db, ids: list[str]) -> None:
    """Approved scrubs (name and e-mail redacted) with their redaction spans, as a reviewer leaves them."""
    with write(db):
        for trace_id in ids:
            n = int(trace_id[2:])
            text_in, text_out = raw_input(n), raw_output(n)
            scrub_id = (
                db["scrubs"]
                .insert(
                    {
                        "trace_id": trace_id,
                        "scrubber_version": "test",
                        "status": "approved",
                        "input": _scrubbed(n, text_in),
                        "output": _scrubbed(n, text_out),
                        "created_at": now(),
                    }
                )
                .last_pk
            )
            for field, text in (("input", text_in), ("output", text_out)):
                for value, label in ((NAMES[n % 4], "PERSON"), (f"person{n}@example.org", "EMAIL")):
                    start = text.index(value)
                    db["redactions"].insert(
                        {
                            "scrub_id": scrub_id,
                            "field": field,
                            "start": start,
                            "end": start + len(value),
                            "label": label,
                        }
                    )


def _scrubbed(n: int, text: str) -> str:
    return text.replace(NAMES[n % 4], "[PERSON]").replace(f"person{n}@example.org", "[EMAIL]")


def label(db, trace_id: str, kind: str, labeler: str = "lena") -> None:
    """A live human label."""
    with write(db):
        db["labels"].insert(
            {
                "trace_id": trace_id,
                "labeler": labeler,
                "kind": kind,
                "adversarial": "none",
                "via": "card",
                "created_at": now(),
            }
        )


def starter_rubric(db):
    return save_rubric(db, LEAD, STARTER_RUBRIC)
