"""Prod-lab parity: the lab pass rate beside the production quality estimate, week by week.

The lab figure is the live system's pass rate on the current eval-set version: the live system is
the one the newest shipped release decision named (``flywheel.evals.runs.live_system``), so a blocked
challenger never stands in for production. The production estimate is the judge's pass share on the
*random* part of each week's sample only (the anomaly and stratified picks over-represent trouble by
design), with a Wilson interval, and only while the judge meets the calibration bar the Judge page
applies for adoption; otherwise the gap cannot be assessed, says why, and raises no alert. A week
whose gap exceeds the lead's ``parity_gap`` threshold is flagged.
"""

from __future__ import annotations

from sqlite_utils import Database

from flywheel.evals.runs import live_system, outcomes
from flywheel.evals.versions import current_version, version_members
from flywheel.online.calibration import judge_trusted, threshold
from flywheel.online.rubrics import rubric
from flywheel.stats import NO_TRIALS, wilson
from flywheel.store.db import query_rows


def lab_pass_rate(db: Database) -> dict | None:
    """The live system's pass rate on the current eval-set version's active rows, or None (with no live
    system, or none of its results on that version)."""
    version, live = current_version(db), live_system(db)
    if version is None or live is None:
        return None
    found = outcomes(db, version, live["system"])
    active = [r for r, s in version_members(db, version).items() if s == "active" and r in found]
    if not active:
        return None
    n, passed = len(active), sum(found[r].passed for r in active)
    low, high = wilson(passed, n, no_data=NO_TRIALS)
    return {
        "version": version,
        "system": live["system"],
        "decision": live["decision"],
        "n": n,
        "rate": passed / n,
        "low": low,
        "high": high,
    }


def lab_missing(db: Database) -> str:
    """Why there is no lab figure."""
    version, live = current_version(db), live_system(db)
    if version is None:
        return "there is no eval set yet"
    if live is None:
        return "no release decision has shipped a system yet: there is no live system to measure"
    return f"the live system {live['system']!r} has no graded results on the current version {version}"


def production_estimates(db: Database, rubric_id: int | None) -> list[dict]:
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
    """Lab beside production per week, with the gap and whether it is beyond the lead's threshold.

    ``assessable`` is False (and ``why`` says why) when the judge is below the calibration bar or there
    is no lab figure: then no week carries a gap and none is flagged."""
    lab = lab_pass_rate(db)
    gap_limit = threshold(db, "parity_gap")
    chosen = rubric(db, rubric_name)
    trusted, calibration = judge_trusted(db, rubric_name)
    weeks = production_estimates(db, chosen.id) if trusted else []
    why = None
    if not trusted:
        why = f"the judge is not calibrated well enough to estimate production: {calibration}"
    elif lab is None:
        why = lab_missing(db)
    for week in weeks:
        if why or lab is None:  # no lab figure always comes with its why
            week.update(lab_rate=None, gap=None, flagged=False, lab_in_interval=None)
            continue
        gap = week["rate"] - lab["rate"]
        week.update(
            lab_rate=lab["rate"],
            gap=gap,
            flagged=abs(gap) > gap_limit,
            lab_in_interval=week["low"] <= lab["rate"] <= week["high"],
        )
    return {
        "lab": lab,
        "rubric": chosen.label,
        "threshold": gap_limit,
        "weeks": weeks,
        "assessable": why is None,
        "why": why,
        "calibration": calibration,
    }
