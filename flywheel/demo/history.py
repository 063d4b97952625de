"""The demo's eval history: a starter suite, a fixed regression set, two systems' results per version."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database

from flywheel.auth import User
from flywheel.config import default_config
from flywheel.csvfiles import read_table
from flywheel.demo.drift import demo_coverage_rows
from flywheel.demo.labels import DEMO_CHECKS
from flywheel.evals.runs import (
    confirm_retirements,
    gate,
    import_results,
    record_decision,
    retirement_proposals,
    row_info,
)
from flywheel.evals.versions import (
    create_eval_set,
    current_version,
    eval_set_versions,
    fold_in,
    freeze_eval_set,
    import_evalset,
    version_members,
)
from flywheel.labeling.checks import load_check
from flywheel.store.clock import parse_ts
from flywheel.store.db import query_rows

DEMO_SUITE = Path(__file__).resolve().parent.parent.parent / "data" / "evalsets" / "starter_suite.csv"

DEMO_SYSTEMS = ("support-bot-2026.04", "support-bot-2026.05")

DEMO_LEAD = User("ana", "lead")


def add_demo_eval_history(db: Database, seed: int = 7) -> dict:
    """Give the demo an eval-set history: a ``quality`` set refreshed from production (the starter
    suite as v1, two folds with failure and coverage rows, two systems' results per version: a later,
    harder version reads lower without any regression; one retired row that fails again) beside a
    frozen ``regression`` set. Rows with a code check are graded by it. Labels of the last batches stay
    unfolded for a lead to fold in. Deterministic."""

    rng = random.Random(seed)
    end = _demo_end(db)
    clock = [end - timedelta(days=days) for days in (120, 90, 60, 10, 5)]
    create_eval_set(db, DEMO_LEAD, "quality", "refreshed from production every week", now=clock[0])
    import_evalset(
        db,
        DEMO_LEAD,
        _demo_suite(),
        DEMO_SUITE.name,
        note="starter suite from the support spreadsheet",
        now=clock[0],
        eval_set="quality",
    )
    skill = {"rng": rng, "draws": {}}
    _demo_runs(db, 1, skill, clock[0])
    batches = [
        r[0] for r in db.execute("SELECT DISTINCT batch_id FROM labels WHERE batch_id IS NOT NULL ORDER BY 1")
    ]
    if batches:
        fold_in(db, DEMO_LEAD, note="first production failures", batches=batches[:1], now=clock[1])
        _demo_runs(db, 2, skill, clock[1])
        _demo_runs(db, 2, skill, clock[2], label="rerun")
    months = default_config().retire_months  # the demo is the same whatever the settings say
    proposals = retirement_proposals(db, now=clock[3], months=months)
    confirm_retirements(db, DEMO_LEAD, [p["row_id"] for p in proposals[:4]], now=clock[3], months=months)
    if len(batches) > 1:
        fold_in(
            db,
            DEMO_LEAD,
            note="second batch of failures; four saturated rows retired",
            batches=batches[1:2],
            now=clock[3],
        )
    else:
        fold_in(db, DEMO_LEAD, note="four saturated rows retired", now=clock[3])
    version = current_version(db)
    assert version is not None  # the starter suite made the first version above
    _demo_runs(db, version, skill, clock[4], include_archive=True)
    pct = default_config().gate_adversarial_pct
    verdict = gate(db, version, *DEMO_SYSTEMS, default_adversarial_pct=pct)
    record_decision(db, DEMO_LEAD, verdict, now=clock[4] + timedelta(hours=2))
    _demo_regression_set(db, skill, clock[4])
    return {"versions": len(eval_set_versions(db)), "runs": len(query_rows(db, "SELECT id FROM eval_runs"))}


def _demo_regression_set(db: Database, skill: dict, moment: datetime) -> None:
    """The spreadsheet's rows as a ``regression`` set, run by both systems and frozen: it never changes."""

    create_eval_set(db, DEMO_LEAD, "regression", "the support spreadsheet, fixed for good", now=moment)
    change = import_evalset(
        db,
        DEMO_LEAD,
        _demo_suite(faq=False),
        DEMO_SUITE.name,
        note="fixed regression suite",
        now=moment,
        eval_set="regression",
    )
    _demo_runs(db, change.version, skill, moment)
    freeze_eval_set(db, DEMO_LEAD, "regression", now=moment)


def _demo_suite(faq: bool = True) -> bytes:
    """The demo's starter suite: the spreadsheet's rows plus plain questions of every intent the early
    weeks' traffic holds (the FAQ sheet), so drift measures the later weeks against covered traffic."""

    table = read_table(DEMO_SUITE.read_text(encoding="utf-8-sig"), DEMO_SUITE.name, key="id")
    fields, rows = [*table.header, "check"], [row for _, row in table.rows]
    for row in rows:
        row["check"] = DEMO_CHECKS.get(row["code"], "")
    for number, (intent, text) in enumerate(demo_coverage_rows() if faq else [], start=1):
        rows.append(
            {"id": f"faq-{number:03d}", "input": text, "adversarial": "false", "tags": f"faq,{intent}"}
        )
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _demo_end(db: Database) -> datetime:
    latest = db.execute("SELECT max(ts) FROM traces").fetchone()[0]
    if latest is None:
        return datetime(2026, 6, 1, tzinfo=UTC)
    return parse_ts(latest)


def _demo_runs(db, version, skill, moment, label=None, include_archive=False) -> None:
    """Results of both demo systems. Each row draws once how hard it is; a system passes it when the
    draw is below its level: starter rows are easy, production failures harder, the newer system a
    little better (on adversarial rows too), so carried rows never fall between versions."""
    info = row_info(db)
    members = version_members(db, version)
    draws = skill["draws"]
    failing_retired = sorted(r for r, s in members.items() if s == "archived")[:1] if include_archive else []
    for index, system in enumerate(DEMO_SYSTEMS):
        lines = []
        for row_id, state in sorted(members.items()):
            if state == "archived" and not include_archive:
                continue
            if row_id not in draws:
                draws[row_id] = skill["rng"].random()
            row = info[row_id]
            level = (0.93 if row["source"] == "import" or row["coverage"] else 0.62) + (
                0.06 if index else 0.0
            )
            if row["adversarial"]:
                level = 0.97 if index else 0.7
            passed = draws[row_id] < level
            if row_id in failing_retired and index == 1:
                passed = False
            lines.append(json.dumps(_demo_result(row, passed)))
        data = ("\n".join(lines) + "\n").encode()
        import_results(db, DEMO_LEAD, version, system, data, f"{system}-v{version}.jsonl", label, now=moment)


# What a demo system answers on a row with a code check: the check grades it here (no "passed").
DEMO_CHECK_OUTPUTS = {
    "contains": ("Card payments are free; see the fee schedule in the app.", "A small fee applies."),
    "regex": ("It arrives within 3 to 5 business days.", "It is on its way."),
    "tool-call": (
        '{"type": "tool_use", "name": "start_verification", "input": {}}',
        "Send us a photo of your passport.",
    ),
}


def _demo_result(row: dict, passed: bool) -> dict:
    check = load_check(row["pass_check"])
    if check and check["type"] in DEMO_CHECK_OUTPUTS:
        good, bad = DEMO_CHECK_OUTPUTS[check["type"]]
        return {"row_id": row["id"], "output": good if passed else bad}
    output = "Reply that meets the criterion." if passed else "Reply that misses the criterion."
    return {"row_id": row["id"], "passed": passed, "output": output}
