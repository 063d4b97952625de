"""Hand-built databases for the lead's Overview: ten weeks of traffic, an eval set and a frozen regression
set with the live system's results, and on request new traffic in the last weeks and a drift run."""

import json
from datetime import datetime, timedelta

from conftest import jsonl

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.drift import run as drift_run
from flywheel.evals.runs import gate, import_results, record_decision
from flywheel.evals.versions import create_eval_set, freeze_eval_set, import_evalset, version_members
from flywheel.ingest.run import ingest_files
from flywheel.store.db import open_db
from flywheel.vectors.stand_in import hashing_encoder

LEAD = User("ana", "lead")
MONDAY = datetime(2026, 3, 2, 10)


def _traces(weeks_count: int, thumbs_late: float, novel_late: bool) -> list[dict]:
    """100 traces a week from 2026-03-02 (a Monday); the last four weeks get ``thumbs_late`` thumbs-down,
    and with ``novel_late`` half their questions are about something the eval set never asks."""
    items = []
    for week in range(weeks_count):
        late = week >= weeks_count - 4
        for i in range(100):
            share = thumbs_late if late else 0.04
            novel = novel_late and late and i % 2 == 0
            text = f"crypto wallet {i} staking payout delayed" if novel else f"question {i} of week {week}"
            items.append(
                {
                    "trace_id": f"t-{week:02d}-{i:03d}",
                    "timestamp": (MONDAY + timedelta(weeks=week, minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "input": text,
                    "cohort": "enterprise",
                    "signals": {"thumbs": "down" if i < share * 100 else "up", "judge_score": 0.8},
                }
            )
    return items


def _results(db, system_passing: dict[str, int], version: int) -> None:
    rows = sorted(version_members(db, version))
    for system, passing in system_passing.items():
        lines = [json.dumps({"row_id": row, "passed": i < passing}) for i, row in enumerate(rows)]
        data = ("\n".join(lines) + "\n").encode()
        import_results(db, LEAD, version, system, data, f"{system}.jsonl", now=MONDAY + timedelta(weeks=3))


def hand_built(tmp_path, thumbs_late: float, novel_late: bool = False, drift: bool = False):
    """Ten weeks of traffic, a ten-row eval set whose live system passes 9 of 10 rows, a frozen
    five-row regression set it passes whole; with ``drift``, a drift run over every week (a stand-in
    encoder)."""
    path = tmp_path / "hand.db"
    db = open_db(path)
    traces = _traces(10, thumbs_late, novel_late)
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", traces)], config=load_config())
    suite_csv = "id,input,expected\n" + "".join(f"r{i},question {i},a good answer\n" for i in range(10))
    import_evalset(db, LEAD, suite_csv.encode(), "suite.csv", now=MONDAY)
    _results(db, {"bot-a": 8, "bot-b": 9}, 1)
    record_decision(db, LEAD, gate(db, 1, "bot-a", "bot-b", default_adversarial_pct=90))
    create_eval_set(db, LEAD, "regression", now=MONDAY)
    regression_csv = "id,input,expected\n" + "".join(f"g{i},old question {i},an answer\n" for i in range(5))
    import_evalset(db, LEAD, regression_csv.encode(), "regression.csv", now=MONDAY, eval_set="regression")
    freeze_eval_set(db, LEAD, "regression")
    _results(db, {"bot-b": 5}, 2)
    if drift:
        model = drift_run.Model("bag-of-words", "1", hashing_encoder([]))
        drift_run.run_drift(db, "ana", drift_run.ALL_WEEKS, model=model, config=load_config())
    return path, db
