"""Input drift: whether what users send has moved, beside whether the eval set still covers it.

Coverage drift (``flywheel.drift.run``) asks how far a week's traffic lies from the eval set; it needs an
eval set and an embedding. Input drift needs neither: per ISO week it compares three plain properties
of the requests with the reference weeks (the first ``drift_reference_weeks`` weeks of traffic, or the
lead's reference window for the current eval-set version):

    length     characters of the scrubbed request: two-sample Kolmogorov-Smirnov test, effect = D
    language   language of the scrubbed request (py3langid, offline): chi-square test of homogeneity
               of the 2 x k table, effect = total variation distance between the two mixes
    intent     the trace's intent field: the same chi-square test and effect

Categories seen fewer than ``MIN_CELL`` times in the week and the reference together are pooled, so
the chi-square approximation holds; a language or intent new to the week still counts in the pool.
The three p-values are Bonferroni-adjusted (×3); a test alarms when its adjusted p-value is below
``ALPHA`` and its effect reaches ``MIN_EFFECT`` (a real move, not a detectable one at large n), as
coverage drift does. Language is identified on scrubbed text only (the trace's scrub, else the machine
scrub coverage drift keeps), placeholders removed, and never shown: only the mix is stored.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats
from sqlite_utils import Database

from flywheel.config import Config
from flywheel.drift.run import scrubbed_requests, window_traces
from flywheel.errors import BadInput
from flywheel.sampling.plans import parse_week
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import query_rows, write

TESTS = ("length", "language", "intent")
ALPHA = 0.01
MIN_EFFECT = {"length": 0.10, "language": 0.05, "intent": 0.10}
MIN_CELL = 10
MIN_TRACES = 30  # fewer traces in a week or the reference: no test, said so
OTHER = "(other)"
UNKNOWN = "(unknown)"
_PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")
_lock = threading.Lock()
_identifier = None


def language(text: str) -> str:
    """The ISO 639-1 code of a scrubbed text's language, ``(unknown)`` when it has no letters."""
    global _identifier
    plain = _PLACEHOLDER.sub(" ", text or "")
    if not any(ch.isalpha() for ch in plain):
        return UNKNOWN
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
        return _identifier.classify(plain)[0]


def length_test(reference: Sequence[float], window: Sequence[float]) -> dict:
    """Two-sample KS test of request lengths, with each side's median."""
    result = scipy_stats.ks_2samp(np.asarray(reference, float), np.asarray(window, float))
    return {
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "effect": float(result.statistic),
        "detail": {"reference_median": float(np.median(reference)), "median": float(np.median(window))},
    }


def mix_test(reference: Counter, window: Counter, min_cell: int = MIN_CELL) -> dict:
    """Chi-square test of homogeneity of two category mixes (rare categories pooled), with the total
    variation distance and the categories whose share moved most."""
    both = reference + window
    kept = sorted(c for c, n in both.items() if n >= min_cell)
    pooled = [c for c in both if c not in kept]
    columns = kept + ([OTHER] if pooled else [])

    def row(counts: Counter) -> list[int]:
        return [counts[c] for c in kept] + ([sum(counts[c] for c in pooled)] if pooled else [])

    table = np.array([row(reference), row(window)], dtype=float)
    ref_share, win_share = table[0] / table[0].sum(), table[1] / table[1].sum()
    moved = sorted(zip(columns, ref_share, win_share, strict=True), key=lambda c: -abs(c[2] - c[1]))
    detail = {"moved": [{"value": c, "reference": float(r), "week": float(w)} for c, r, w in moved[:5]]}
    if len(columns) < 2:  # one category on both sides: nothing can have moved
        return {"statistic": 0.0, "p_value": 1.0, "effect": 0.0, "detail": detail}
    chi2, p_value, _, _ = scipy_stats.chi2_contingency(table, correction=False)
    effect = float(np.abs(ref_share - win_share).sum() / 2)
    return {"statistic": float(chi2), "p_value": float(p_value), "effect": effect, "detail": detail}


def compare(reference: list[dict], window: list[dict]) -> list[dict]:
    """The three tests of a week's requests (``length``, ``language``, ``intent`` each) against the
    reference's, Bonferroni-adjusted, each with its alarm."""
    results: list[dict] = []
    for test in TESTS:
        if len(reference) < MIN_TRACES or len(window) < MIN_TRACES:
            results.append({"test": test, "statistic": None, "p_value": None, "effect": None, "detail": {}})
            continue
        if test == "length":
            result = length_test([r["length"] for r in reference], [r["length"] for r in window])
        else:
            result = mix_test(Counter(r[test] for r in reference), Counter(r[test] for r in window))
        results.append({"test": test, **result})
    for result in results:
        p = result["p_value"]
        result["p_adjusted"] = None if p is None else min(1.0, p * len(TESTS))
        result["alarm"] = (
            p is not None
            and result["p_adjusted"] < ALPHA
            and (result["effect"] >= MIN_EFFECT[result["test"]])
        )
        result["n"], result["reference_n"] = len(window), len(reference)
    return results


# Reading a week's requests ------------------------------------------------------------------------------


def week_requests(db: Database, week: str, limit: int) -> list[dict]:
    """Length, language and intent of up to ``limit`` requests of a week (coverage drift's seeded
    sample), from scrubbed text only."""

    ids = window_traces(db, week, limit)
    texts, _ = scrubbed_requests(db, ids)
    intents: dict[str, str | None] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        sql = f"SELECT trace_id, intent FROM traces WHERE trace_id IN ({','.join('?' * len(part))})"
        intents.update(db.execute(sql, part).fetchall())
    return [
        {"length": len(texts[i]), "language": language(texts[i]), "intent": intents.get(i) or "(none)"}
        for i in ids
        if i in texts
    ]


def reference_weeks(db: Database, config: Config) -> list[str]:
    """The weeks input drift compares with: the current eval-set version's reference window when a lead
    set one, else the first ``drift_reference_weeks`` weeks of traffic."""
    weeks = [
        r[0] for r in db.execute("SELECT DISTINCT week FROM traces WHERE week IS NOT NULL ORDER BY week")
    ]
    if not weeks:
        raise BadInput("there are no traces to measure input drift on; import some first")
    row = db.execute(
        "SELECT from_week, to_week FROM drift_references WHERE version ="
        " (SELECT max(version) FROM eval_versions)"
    ).fetchone()
    if row:
        return [w for w in weeks if row[0] <= w <= row[1]]
    return weeks[: config.drift_reference_weeks]


def run_input_drift(db: Database, actor: str, week: str | None = None, *, config: Config) -> list[dict]:
    """Test ``week`` (default the latest; ``all-weeks`` for every week after the reference) against the
    reference weeks; store and audit the results and return them, one row per week and test."""

    reference = reference_weeks(db, config)
    weeks = [
        r[0] for r in db.execute("SELECT DISTINCT week FROM traces WHERE week IS NOT NULL ORDER BY week")
    ]
    if week == "all-weeks":
        targets = [w for w in weeks if w > reference[-1]]
    else:
        targets = [parse_week(week) if week else weeks[-1]]
    base = [r for w in reference for r in week_requests(db, w, config.drift_max_traces)]
    label = f"{reference[0]}..{reference[-1]}"
    rows, stamp = [], now()
    for target in targets:
        for result in compare(base, week_requests(db, target, config.drift_max_traces)):
            rows.append({"run_at": stamp, "actor": actor, "week": target, "reference": label, **result})
    with write(db):
        db.table("input_drift").insert_all(
            {**r, "alarm": int(r["alarm"]), "detail": json.dumps(r["detail"])} for r in rows
        )
        alarms = [f"{r['week']} {r['test']}" for r in rows if r["alarm"]]
        audit(db, actor, "input_drift", "input_drift", label, weeks=targets, alarms=alarms)
    return rows


def input_drift_series(db: Database) -> list[dict]:
    """The latest result of every week and test, oldest week first."""
    rows = query_rows(
        db,
        """SELECT * FROM input_drift d WHERE id = (SELECT max(id) FROM input_drift
           WHERE week = d.week AND test = d.test) ORDER BY week, test""",
    )
    for row in rows:
        row["detail"] = json.loads(row["detail"] or "{}")
        row["alarm"] = bool(row["alarm"])
    return rows


def alarm_reasons(rows: list[dict]) -> list[str]:
    """One line per alarm, for the cycle's attention list and the Drift page."""
    out = []
    for r in rows:
        if r["alarm"]:
            out.append(
                f"input drift in {r['week']}: {r['test']} moved (effect {r['effect']:.2f},"
                f" Bonferroni p = {r['p_adjusted']:.2g}, vs {r['reference']})"
            )
    return out
