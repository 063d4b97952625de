"""The demo's drift: coverage rows for the starter suite and the drift series over the demo's weeks."""

from __future__ import annotations

from sqlite_utils import Database

from flywheel.config import default_config
from flywheel.demo.traffic import DATA_DIR, RISING_INTENTS
from flywheel.drift.run import ALL_WEEKS, DriftRun, Progress, add_starter_suite, run_drift
from flywheel.evals import versions as evalsets

DEMO_ROWS_PER_INTENT = 6

DEMO_MAX_TRACES = 100

DEMO_MIN_TRACES = 1000  # below ~100 traces a week a demo series says nothing; skip it


def demo_coverage_rows() -> list[tuple[str, str]]:
    """(intent, text) pairs a demo starter suite holds so that it covers the early weeks' traffic:
    Banking77 test queries of every intent that does not rise late."""
    import csv

    by_intent: dict[str, list[str]] = {}
    with open(DATA_DIR / "test.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["category"] not in RISING_INTENTS:
                by_intent.setdefault(row["category"], []).append(" ".join(row["text"].split()))
    return [
        (intent, text) for intent in sorted(by_intent) for text in by_intent[intent][:DEMO_ROWS_PER_INTENT]
    ]


def add_demo_drift(
    db: Database, actor: str = "ana", max_traces: int = DEMO_MAX_TRACES, progress: Progress | None = None
) -> DriftRun | None:
    """The demo's drift series: a starter suite of the early weeks' intents (Banking77 test queries,
    unless an eval set exists), measured over every week; the later weeks shift away from it."""

    if db["traces"].count < DEMO_MIN_TRACES:
        return None
    if evalsets.current_version(db) is None:
        texts = [text for _, text in demo_coverage_rows()]
        add_starter_suite(db, texts, actor, note="starter suite: Banking77 test queries of the early intents")
    config = default_config().replace(drift_max_traces=max_traces)  # the demo does not vary with settings
    return run_drift(db, actor, ALL_WEEKS, progress=progress, config=config)
