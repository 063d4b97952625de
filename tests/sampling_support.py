""""""

from __future__ import annotations

import random

from flywheel.sampling.plans import (
    ANOMALY_SIGNALS,
    Plan,
    Stratum,
)

ALL_ANOMALIES = tuple(ANOMALY_SIGNALS)

WEEK, OTHER_WEEK = "2026-W19", "2026-W20"  # 4-10 May and 11-17 May 2026


N = 1500


def make_traces(seed: int = 1, n: int = N) -> list[dict]:
    """Two weeks of traces: ``n`` in WEEK, 200 in OTHER_WEEK; three 'tiny' cohort traces; a rare intent."""
    rng = random.Random(seed)
    out = []
    for i in range(n + 200):
        day = 4 + i % 7 if i < n else 11 + i % 7
        signals = {
            "thumbs": "down" if rng.random() < 0.05 else "up",
            "regenerated": rng.random() < 0.03,
            "retried": rng.random() < 0.03,
            "escalated": rng.random() < 0.03,
            "guardrail_tripped": rng.random() < 0.02,
            "schema_valid": rng.random() >= 0.02,
            "judge_score": round(rng.random(), 3),
            "turns": rng.randint(1, 10),
            "latency_ms": rng.randint(100, 5000),
            "cost_usd": round(rng.random() / 100, 6),
        }
        out.append(
            {
                "trace_id": f"t-{i:05d}",
                "timestamp": f"2026-05-{day:02d}T{i % 24:02d}:00:00Z",
                "input": f"question {i}",
                "cohort": "tiny" if i < 3 else rng.choice(["free", "smb"]),
                "intent": "rare_intent" if i % 300 == 7 else rng.choice(["card_arrival", "refund"]),
                "signals": signals,
            }
        )
    return out


EVERYTHING = Plan(
    name="everything",
    seed=11,
    random_rate=0.03,
    anomaly=ALL_ANOMALIES,
    strata=(
        Stratum.of("cohort", quota=5),
        Stratum.of("intent", quota=2),
        Stratum.of("judge_band", quota=7),
        Stratum.of("long_conversation", quota=4, min_turns=9),
        Stratum.of("cost_tail", quota=3),
        Stratum.of("latency_tail", quota=3, top_share=0.02),
    ),
    cap=300,
)
