"""Calibration of the LLM judge against the labelers, and the lead's thresholds that gate its use.

On traces both graded, per rubric version: the human verdict is the majority of live labels mapped by
the rubric's label map (a tie counts nowhere), the judge verdict its stored judgment. "fail" is the
positive class: TPR is the share of human failures the judge caught, TNR the share of passes it let
through. Cohen's kappa is shown with the base rate (share of human failures) and what a constant
predictor of the majority verdict scores, because agreement alone misleads when one verdict
dominates. Traces the rubric shows the judge as few-shot examples are never counted.

The judge's score feeds sampling strata and alerts only once its kappa reaches the lead's threshold
(``adopt_judge``); adopting writes the scores into ``traces.judge_score`` (what strata read) and the
borderline band into a saved sampling plan as a ``judge_band`` stratum.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.errors import BadInput, NotFound
from flywheel.ingest.run import copy_judge_scores
from flywheel.labeling.labels import cohen_kappa
from flywheel.online.rubrics import Rubric, rubric
from flywheel.sampling.plans import Stratum, saved_plan, store_plan
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import query_rows, write

# The lead's thresholds: name -> (default, lowest, highest, help).
THRESHOLDS = {
    "kappa_threshold": (0.6, 0.0, 1.0, "Cohen's kappa the judge needs before its score is used"),
    "borderline_low": (0.4, 0.0, 1.0, "Lower bound of the borderline judge-score band"),
    "borderline_high": (0.7, 0.0, 1.0, "Upper bound of the borderline judge-score band"),
    "parity_gap": (0.1, 0.0, 1.0, "Gap between lab pass rate and production estimate that is flagged"),
    "min_effect": (0.02, 0.001, 1.0, "Smallest difference in a rate an A/B test must be able to detect"),
}


def threshold(db: Database, name: str) -> float:
    """A lead's threshold, or its default."""
    if name not in THRESHOLDS:
        raise BadInput(f"unknown threshold {name!r}; expected one of {', '.join(THRESHOLDS)}")
    row = db.execute("SELECT value FROM quality_settings WHERE name = ?", [name]).fetchone()
    return row[0] if row else THRESHOLDS[name][0]


def thresholds(db: Database) -> dict[str, float]:
    """Every threshold with its current value."""
    return {name: threshold(db, name) for name in THRESHOLDS}


def set_threshold(db: Database, user: User, name: str, value: float) -> None:
    """Set a threshold (leads only, audited)."""
    require_role(user, "lead")
    if name not in THRESHOLDS:
        raise BadInput(f"unknown threshold {name!r}; expected one of {', '.join(THRESHOLDS)}")
    _, low, high, help_text = THRESHOLDS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadInput(f"{name} {value!r}: expected a number in {low}..{high} ({help_text})")
    with write(db):
        db.table("quality_settings").upsert(
            {"name": name, "value": float(value), "updated_by": user.name, "updated_at": now()}, pk="name"
        )
        audit(db, user.name, "set_threshold", "quality_setting", name, value=value)
    band = threshold(db, "borderline_low"), threshold(db, "borderline_high")
    if band[0] > band[1]:
        raise BadInput(f"borderline band {band[0]}-{band[1]}: low is above high; set the other bound first")


def human_verdicts(db: Database, chosen: Rubric, trace_ids: Iterable[str] | None = None) -> dict[str, str]:
    """Per labeled trace, the majority of its live labels mapped to pass/fail; ties are left out."""
    sql = "SELECT trace_id, kind FROM labels WHERE undone_at IS NULL"
    params: list = []
    if trace_ids is not None:
        ids = list(trace_ids)
        sql += f" AND trace_id IN ({','.join('?' * len(ids))})"
        params = ids
    votes: dict[str, Counter] = {}
    for trace_id, kind in db.execute(sql, params):
        votes.setdefault(trace_id, Counter())[chosen.label_map[kind]] += 1
    verdicts = {}
    for trace_id, count in votes.items():
        top = count.most_common()
        if len(top) == 1 or top[0][1] > top[1][1]:
            verdicts[trace_id] = top[0][0]
    return verdicts


@dataclass
class Calibration:
    """Agreement of one rubric version's judge with the labelers."""

    rubric: str
    n: int
    confusion: dict[str, int] = field(default_factory=dict)  # tp, fn, fp, tn ("fail" is positive)
    tpr: float = math.nan
    tnr: float = math.nan
    accuracy: float = math.nan
    kappa: float = math.nan
    base_rate: float = math.nan
    constant_accuracy: float = math.nan
    constant_kappa: float = math.nan
    excluded_examples: int = 0
    disagreements: list[dict] = field(default_factory=list)

    def passes(self, minimum: float) -> bool:
        """Whether the kappa reaches ``minimum`` (never on no data)."""
        return self.n > 0 and not math.isnan(self.kappa) and self.kappa >= minimum


def calibrate(db: Database, rubric_name: str | None = None, version: int | None = None) -> Calibration:
    """Confusion matrix, TPR/TNR, kappa beside base rate and constant predictor, and the disagreements."""
    chosen = rubric(db, rubric_name, version)
    judged = {
        r["subject_id"]: r
        for r in query_rows(
            db,
            "SELECT subject_id, verdict, score, reason FROM judgments"
            " WHERE rubric_id = ? AND subject_kind = 'trace' AND status = 'ok'",
            [chosen.id],
        )
    }
    humans = human_verdicts(db, chosen, judged)
    examples = set(chosen.examples)
    pairs = [(t, humans[t], judged[t]) for t in sorted(humans) if t not in examples]
    result = calibration_of([(h, j["verdict"]) for _, h, j in pairs], chosen.label)
    result.excluded_examples = len(examples & set(humans))
    result.disagreements = [
        {"trace_id": t, "human": h, "judge": j["verdict"], "judge_score": j["score"], "reason": j["reason"]}
        for t, h, j in pairs
        if h != j["verdict"]
    ]
    return result


def calibration_of(pairs: list[tuple[str, str]], label: str = "") -> Calibration:
    """Calibration metrics of (human, judge) verdict pairs, each 'pass' or 'fail'."""
    result = Calibration(label, len(pairs))
    count = Counter(pairs)
    tp, fn = count[("fail", "fail")], count[("fail", "pass")]
    fp, tn = count[("pass", "fail")], count[("pass", "pass")]
    result.confusion = {"tp": tp, "fn": fn, "fp": fp, "tn": tn}
    if not pairs:
        return result
    humans, judges = [h for h, _ in pairs], [j for _, j in pairs]
    result.tpr = tp / (tp + fn) if tp + fn else math.nan
    result.tnr = tn / (tn + fp) if tn + fp else math.nan
    result.accuracy = (tp + tn) / len(pairs)
    result.kappa = cohen_kappa(humans, judges)
    result.base_rate = (tp + fn) / len(pairs)
    majority = "fail" if result.base_rate > 0.5 else "pass"
    result.constant_accuracy = max(result.base_rate, 1 - result.base_rate)
    result.constant_kappa = cohen_kappa(humans, [majority] * len(pairs))
    return result


def judge_trusted(db: Database, rubric_name: str | None = None) -> tuple[bool, str]:
    """Whether the judge's latest rubric version agrees with the labelers well enough, and why (not)."""
    try:
        result = calibrate(db, rubric_name)
    except NotFound as error:
        return False, str(error)
    minimum = threshold(db, "kappa_threshold")
    if result.n == 0:
        return False, f"{result.rubric}: no trace graded by both the judge and the labelers yet"
    verdict = "reaches" if result.passes(minimum) else "is below"
    return result.passes(minimum), (
        f"{result.rubric}: kappa {result.kappa:.2f} on {result.n} traces"
        f" {verdict} the threshold {minimum:.2f}"
    )


def borderline_stratum(db: Database, quota: int = 8) -> Stratum:
    """The borderline judge-score band as a stratified sampling rule."""
    return Stratum.of(
        "judge_band", quota=quota, low=threshold(db, "borderline_low"), high=threshold(db, "borderline_high")
    )


def adopt_judge(
    db: Database, user: User, plan_name: str, rubric_name: str | None = None, quota: int = 8
) -> dict:
    """Use a calibrated judge: its scores go into ``traces.judge_score`` and the borderline band into
    the saved plan ``plan_name`` (replacing its judge_band rule). Refused while the judge is not trusted."""
    require_role(user, "lead")
    trusted, why = judge_trusted(db, rubric_name)
    if not trusted:
        raise BadInput(f"the judge is not calibrated well enough to use: {why}")
    chosen = rubric(db, rubric_name)
    plan = saved_plan(db, plan_name)
    stratum = borderline_stratum(db, quota)
    strata = (*(s for s in plan.strata if s.key != "judge_band"), stratum)
    with write(db):
        assert chosen.id is not None  # a stored rubric has its id
        updated = copy_judge_scores(db, chosen.id)
        body = plan.replace(strata=strata).as_dict()
        store_plan(db, plan.replace(strata=strata), user.name)
        audit(db, user.name, "adopt_judge", "rubric", chosen.id, scores=updated, plan=body, reason=why)
    return {
        "rubric": chosen.label,
        "scores_written": updated,
        "plan": plan_name,
        "stratum": stratum.as_dict(),
    }
