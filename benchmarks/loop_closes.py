"""The loop closes, measured: after a drift alarm, the far traces go to sampling, are approved and
labeled, folded in as eval rows, and drift on the following weeks falls back.

    python benchmarks/loop_closes.py [--seeds 3] [--first-seed 0] [--per-cluster 5] [--clusters 10]

Per seed, Banking77 as in drift_banking77.py: 15 held-out intents, 20 eval rows per covered intent,
twelve weeks of 300 traces whose held-out share is 0 for four weeks, then rises 5% a week to 40%.
Everything runs through the library on a real SQLite file: ingest, ``run_drift`` over every week,
``send_to_sampling`` of the first alarmed week (the farthest traces of its biggest clusters plus a
10% random control), which scrubs them; a simulated reviewer approves each scrub, a simulated labeler
reads the benchmark's ground truth and labels a trace of a held-out intent as a coverage gap (the
others "not a bug"); the approved scrubs of the gaps are imported as eval rows (a new eval-set
version through the eval-set station's import path), and drift runs again over every week. It prints,
for the weeks after the alarm, the share beyond τ and the alarms before and after, and how many rows
it took.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from drift_banking77 import WEEKS, _lines, banking77, split, weeks_of

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.drift import run as drift
from flywheel.ingest.run import ingest_lines
from flywheel.review import scrubs as review
from flywheel.store.db import open_db

LEAD = User("bench", "lead")


def run_seed(seed: int, by_intent: dict, clusters: int, per_cluster: int) -> dict:
    rng = np.random.default_rng(seed)
    intents = sorted(by_intent)
    held_out = [str(i) for i in rng.choice(intents, 15, replace=False)]
    covered = [i for i in intents if i not in held_out]
    rows, pools = split(rng, by_intent, set(held_out), 20)
    weeks = weeks_of(rng, pools, covered, held_out, "shift")
    truth = {f"t-{n + 1:06d}": item[2] for n, item in enumerate(i for week in weeks for i in week)}
    with tempfile.TemporaryDirectory() as folder:
        db = open_db(Path(folder) / "loop.db")
        drift.add_starter_suite(db, rows, LEAD.name)
        ingest_lines(db, _lines(weeks, 0), "weeks.jsonl", LEAD.name, config=load_config())
        before = drift.run_drift(db, LEAD.name, drift.ALL_WEEKS, config=load_config())
        windows = [w for w in before.as_json()]
        alarmed = [w["window"] for w in windows if w["alarm"]]
        if not alarmed:
            return {"seed": seed, "alarm": None}
        first = alarmed[0]
        batch = drift.send_to_sampling(db, LEAD, before.id, first, clusters, per_cluster, 0.1, seed)
        sent = [r[0] for r in db.execute("SELECT trace_id FROM batch_items WHERE batch_id = ?", [batch.id])]
        gaps = []
        for trace_id in sent:
            scrub_id, text = db.execute(
                "SELECT id, input FROM scrubs WHERE trace_id = ? AND is_current = 1", [trace_id]
            ).fetchone()
            review.approve_scrub(db, LEAD, scrub_id)  # the simulated reviewer signs every scrub off
            if truth[trace_id]:  # the simulated labeler: a held-out intent is a gap in coverage
                gaps.append(text)
        drift.add_starter_suite(db, gaps, LEAD.name, note=f"coverage from drift batch {batch.id}")
        after = drift.run_drift(db, LEAD.name, drift.ALL_WEEKS, config=load_config())
        db.close()
    later = [w["window"] for w in windows if w["window"] > first]
    share = {w["window"]: w["share_beyond"] for w in windows}
    share_after = {w["window"]: w["share_beyond"] for w in after.as_json()}
    alarms_after = {w["window"] for w in after.as_json() if w["alarm"]}
    return {
        "seed": seed,
        "alarm": first,
        "sent": len(sent),
        "novel_sent": sum(truth[t] for t in sent),
        "rows": len(gaps),
        "before": float(np.mean([share[w] for w in later])),
        "after": float(np.mean([share_after[w] for w in later])),
        "alarms_before": sum(w in alarmed for w in later),
        "alarms_after": sum(w in alarms_after for w in later),
        "later": len(later),
        "ref_share": float(np.mean([w["share_beyond"] for w in windows[:2]])),
    }


def run_weekly(seed: int, by_intent: dict, clusters: int, per_cluster: int) -> dict:
    """The loop as the weekly cycle runs it: each week drift is measured against the current version;
    an alarmed week's far traces are sent, labeled and folded in before the next week arrives."""
    rng = np.random.default_rng(seed)
    intents = sorted(by_intent)
    held_out = [str(i) for i in rng.choice(intents, 15, replace=False)]
    covered = [i for i in intents if i not in held_out]
    rows, pools = split(rng, by_intent, set(held_out), 20)
    weeks = weeks_of(rng, pools, covered, held_out, "shift")
    truth = {f"t-{n + 1:06d}": item[2] for n, item in enumerate(i for week in weeks for i in week)}
    lines = list(_lines(weeks, 0))
    per_week = len(weeks[0])
    shares, alarms, added, first = {}, set(), [], None
    with tempfile.TemporaryDirectory() as folder:
        db = open_db(Path(folder) / "loop.db")
        drift.add_starter_suite(db, rows, LEAD.name)
        for w in range(len(weeks)):
            ingest_lines(
                db,
                iter(lines[w * per_week : (w + 1) * per_week]),
                f"week-{w}.jsonl",
                LEAD.name,
                config=load_config(),
            )
            if w < 2:
                continue
            run = drift.run_drift(db, LEAD.name, config=load_config())
            window = run.as_json()[0]
            shares[window["window"]] = window["share_beyond"]
            if window["alarm"]:
                alarms.add(window["window"])
                first = first or window["window"]
                added.append(_fold(db, run.id, window["window"], truth, clusters, per_cluster, seed))
        if first is not None:
            without = drift.run_drift(
                db, LEAD.name, drift.ALL_WEEKS, config=load_config()
            )  # every week, the final version
        db.close()
    return {
        "seed": seed,
        "first": first,
        "shares": shares,
        "alarms": alarms,
        "added": added,
        "final": without,
    }


def _fold(db, run_id: int, window: str, truth: dict, clusters: int, per_cluster: int, seed: int) -> int:
    batch = drift.send_to_sampling(db, LEAD, run_id, window, clusters, per_cluster, 0.1, seed)
    gaps = []
    for (trace_id,) in db.execute(
        "SELECT trace_id FROM batch_items WHERE batch_id = ?", [batch.id]
    ).fetchall():
        scrub_id, text = db.execute(
            "SELECT id, input FROM scrubs WHERE trace_id = ? AND is_current = 1", [trace_id]
        ).fetchone()
        review.approve_scrub(db, LEAD, scrub_id)
        if truth[trace_id]:
            gaps.append(text)
    if gaps:
        drift.add_starter_suite(db, gaps, LEAD.name, note=f"coverage from drift batch {batch.id}")
    return len(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=10, help="clusters sent to sampling")
    parser.add_argument("--per-cluster", type=int, default=5, help="farthest traces per cluster")
    parser.add_argument(
        "--weekly", action="store_true", help="run the loop every alarmed week, as the cycle does"
    )
    args = parser.parse_args()
    by_intent = banking77()
    if args.weekly:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            r = run_weekly(seed, by_intent, args.clusters, args.per_cluster)
            print(f"seed {seed}: first alarm {r['first']}; rows folded in per alarmed week {r['added']}")
            for week, share in sorted(r["shares"].items()):
                mark = " ALARM (sent, labeled, folded in)" if week in r["alarms"] else ""
                print(f"  {week} share beyond τ against the version current then {share:6.1%}{mark}")
        return
    print(f"{WEEKS} weeks x 300 traces; held-out share 0,0,0,0 then +5%/week to 40%")
    print(
        f"{'seed':>4} {'alarm':>9} {'sent':>5} {'novel':>5} {'rows':>5} {'beyond τ before':>16}"
        f" {'after':>7} {'alarms before':>14} {'after':>6}"
    )
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        started = time.perf_counter()
        r = run_seed(seed, by_intent, args.clusters, args.per_cluster)
        if r["alarm"] is None:
            print(f"{seed:>4} no alarm in twelve weeks")
            continue
        results.append(r)
        print(
            f"{seed:>4} {r['alarm']:>9} {r['sent']:>5} {r['novel_sent']:>5} {r['rows']:>5}"
            f" {r['before']:>16.1%} {r['after']:>7.1%} {r['alarms_before']:>8} of {r['later']:<3}"
            f" {r['alarms_after']:>6}   ({time.perf_counter() - started:.0f} s)"
        )
    if results:
        mean = {k: float(np.mean([r[k] for r in results])) for k in ("rows", "before", "after", "ref_share")}
        print(
            f"mean: {mean['rows']:.1f} rows folded in; share beyond τ on the weeks after the alarm"
            f" {mean['before']:.1%} -> {mean['after']:.1%} (reference weeks {mean['ref_share']:.1%})"
        )


if __name__ == "__main__":
    main()
