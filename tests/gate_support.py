"""Shared test helpers."""

from __future__ import annotations

import json

from evalset_helpers import LEAD

from flywheel.evals.runs import (
    import_results,
)
from flywheel.evals.versions import import_evalset
from flywheel.store.db import open_db

ROWS = [f"r-{n:06d}" for n in range(1, 21)]

BASE = {r: r not in ("r-000015", "r-000016", "r-000017") for r in ROWS}


def changed(base: dict = BASE, drop=(), **flips) -> dict:
    """The outcomes with some rows set (r7=False) and some left out."""
    out = {**base, **{r(int(k[1:])): v for k, v in flips.items()}}
    return {k: v for k, v in out.items() if k not in drop}


def build(path, challenger: dict, baseline: dict = BASE, adversarial: bool = True):
    db = open_db(path)
    import_evalset(db, LEAD, suite(adversarial), "suite.jsonl")
    import_results(db, LEAD, 1, "base", results(baseline), "base.jsonl")
    import_results(db, LEAD, 1, "new", results(challenger), "new.jsonl")
    return db


def r(n: int) -> str:
    return f"r-{n:06d}"


def suite(adversarial: bool = True) -> bytes:
    lines = [
        json.dumps({"id": f"q{n}", "input": f"q {n}", "code": code, "adversarial": adversarial and n > 18})
        for n, code in enumerate(CODES, 1)
    ]
    return ("\n".join(lines) + "\n").encode()


def results(outcomes: dict) -> bytes:
    lines = []
    for row_id, passed in outcomes.items():
        for value in passed if isinstance(passed, list) else [passed]:
            lines.append(json.dumps({"row_id": row_id, "passed": value}))
    return ("\n".join(lines) + "\n").encode()


CODES = ["A"] * 8 + ["B"] * 8 + ["C"] * 2 + ["SAFE"] * 2
