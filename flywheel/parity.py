"""Prod-lab parity: the lab pass rate beside the production quality estimate, week by week.

The lab figure is the pass rate of the latest regression run on the current eval-set version. The
production estimate is the judge's pass share on the *random* part of each week's sample only (the
anomaly and stratified picks over-represent trouble by design), with a Wilson interval. A week whose
gap exceeds the lead's ``parity_gap`` threshold is flagged.
"""

from __future__ import annotations

import math

from sqlite_utils import Database

from flywheel.calibration import threshold
from flywheel.evalsets import current_version
from flywheel.rubrics import rubric
from flywheel.stats import NO_TRIALS, wilson
from flywheel.store import query_one, query_rows


def lab_pass_rate(db: Database) -> dict | None:
    """The latest regression run on the current eval-set version and its pass rate, or None."""
    version = current_version(db)
    if version is None:
        return None
    run = query_one(db, "SELECT * FROM eval_runs WHERE version = ? ORDER BY id DESC LIMIT 1", [version])
    if run is None:
        return None
    row = db.execute(
        "SELECT count(passed), coalesce(sum(passed), 0) FROM eval_results WHERE run_id = ?", [run["id"]]
    ).fetchone()
    n, passed = row
    low, high = wilson(passed, n, no_data=NO_TRIALS)
    return {
        "version": version,
        "run_id": run["id"],
        "system": run["system"],
        "n": n,
        "rate": passed / n if n else math.nan,
        "low": low,
        "high": high,
    }


def production_estimates(db: Database, rubric_id: int) -> list[dict]:
    """Per sampled week: the judge's pass share on the randomly sampled traces, with an interval."""
    rows = query_rows(
        db,
        """SELECT s.week, count(*) AS n, sum(j.verdict = 'pass') AS passed
           FROM batch_items b JOIN sample_batches s ON s.id = b.batch_id
           JOIN judgments j ON j.subject_kind = 'trace' AND j.subject_id = b.trace_id
                AND j.rubric_id = ? AND j.status = 'ok'
           WHERE EXISTS (SELECT 1 FROM json_each(b.reasons) WHERE value = 'random')
           GROUP BY s.week ORDER BY s.week""",
        [rubric_id],
    )
    for row in rows:
        row["rate"] = row["passed"] / row["n"]
        row["low"], row["high"] = wilson(row["passed"], row["n"], no_data=NO_TRIALS)
    return rows


def parity(db: Database, rubric_name: str | None = None) -> dict:
    """Lab beside production per week, with the gap and whether it is beyond the lead's threshold."""
    lab = lab_pass_rate(db)
    gap_limit = threshold(db, "parity_gap")
    chosen = rubric(db, rubric_name)
    weeks = production_estimates(db, chosen.id)
    for week in weeks:
        if lab is None or math.isnan(lab["rate"]):
            week.update(lab_rate=None, gap=None, flagged=False, lab_in_interval=None)
            continue
        gap = week["rate"] - lab["rate"]
        week.update(
            lab_rate=lab["rate"],
            gap=gap,
            flagged=abs(gap) > gap_limit,
            lab_in_interval=week["low"] <= lab["rate"] <= week["high"],
        )
    return {"lab": lab, "rubric": chosen.label, "threshold": gap_limit, "weeks": weeks}
