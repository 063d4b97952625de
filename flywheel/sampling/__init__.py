"""The sampling station: plans that pick production traces for the eval loop, and the batches they make.

    plans     the plan schema (one class per stratum kind), plan files and saved plans
    sql       a plan compiled to SQL for SQLite, DuckDB or Spark, with the same hash everywhere
    batches   running a plan on the store, previews, batches and ledgers, sample-then-scrub
    source    running a plan where the traces live (DuckDB over files, Spark SQL)

The window is one ISO week (the latest week with traces unless the plan or the caller names one).
A trace picked by several rules appears once in the batch with all its reasons; a cap on the batch
size drops random picks first, then stratified ones, never an anomaly: when the anomalies alone exceed
the cap, the batch holds all of them and nothing else, and says so (``Batch.over_cap``).
Every choice is a pure function of seed and data: the random predicate is an MD5 prefix comparison a
warehouse can run as plain SQL (``random_predicate_sql``), and quota picks take the traces that come
first in a seeded MD5 order.
"""

import hashlib
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flywheel.sampling.batches import (
        Batch,
        NothingSampled,
        Outcome,
        Preview,
        SampleRun,
        batch_items,
        batch_ledger,
        batch_reasons,
        batch_rule_counts,
        batch_sql,
        batch_trace_ids,
        cohort_values,
        data_version,
        existing_batch,
        load_batch,
        preview_plan,
        record_batch,
        register_md5,
        resolve_week,
        run_plan,
        sample_and_scrub,
        sample_batches,
        sample_weeks,
        scrub_batch,
        store_sql,
        unscrubbed_count,
        week_order,
    )
    from flywheel.sampling.plans import (
        ANOMALY_SIGNALS,
        DEMO_PLAN,
        PLAN_KEYS,
        PRIORITY,
        STRATA,
        STRATUM_KEYS,
        Plan,
        Stratum,
        delete_plan,
        load_plan_file,
        parse_week,
        plan_from_options,
        save_plan,
        saved_plan,
        saved_plans,
        week_bounds,
    )
    from flywheel.sampling.sql import (
        DIALECTS,
        HASH_SPACE,
        PlanSQL,
        compile_plan,
        random_predicate_sql,
        threshold,
    )

# The command line imports this package to add ``sample``; its modules open the store (sqlite-utils, which
# loads pandas), so each name loads on first use instead, and ``python -m flywheel --help`` stays light.
_HOMES = {
    "batches": (
        "Batch",
        "NothingSampled",
        "Outcome",
        "Preview",
        "SampleRun",
        "batch_items",
        "batch_ledger",
        "batch_reasons",
        "batch_rule_counts",
        "batch_sql",
        "batch_trace_ids",
        "cohort_values",
        "data_version",
        "existing_batch",
        "load_batch",
        "preview_plan",
        "record_batch",
        "register_md5",
        "resolve_week",
        "run_plan",
        "sample_and_scrub",
        "sample_batches",
        "sample_weeks",
        "scrub_batch",
        "store_sql",
        "unscrubbed_count",
        "week_order",
    ),
    "plans": (
        "ANOMALY_SIGNALS",
        "DEMO_PLAN",
        "PLAN_KEYS",
        "PRIORITY",
        "STRATA",
        "STRATUM_KEYS",
        "Plan",
        "Stratum",
        "delete_plan",
        "load_plan_file",
        "parse_week",
        "plan_from_options",
        "save_plan",
        "saved_plan",
        "saved_plans",
        "week_bounds",
    ),
    "sql": (
        "DIALECTS",
        "HASH_SPACE",
        "PlanSQL",
        "compile_plan",
        "random_predicate_sql",
        "threshold",
    ),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def in_random_sample(trace_id: str, rate: float, seed: int) -> bool:
    """Whether the random rule picks this trace: the Python twin of ``random_predicate_sql``."""
    prefix = int(hashlib.md5(f"{seed}:{trace_id}".encode()).hexdigest()[:8], 16)
    return prefix < __getattr__("threshold")(rate)


__all__ = [
    "ANOMALY_SIGNALS",
    "DEMO_PLAN",
    "DIALECTS",
    "HASH_SPACE",
    "PLAN_KEYS",
    "PRIORITY",
    "STRATA",
    "STRATUM_KEYS",
    "Batch",
    "NothingSampled",
    "Outcome",
    "Plan",
    "PlanSQL",
    "Preview",
    "SampleRun",
    "Stratum",
    "batch_items",
    "batch_ledger",
    "batch_reasons",
    "batch_rule_counts",
    "batch_sql",
    "batch_trace_ids",
    "cohort_values",
    "compile_plan",
    "data_version",
    "delete_plan",
    "existing_batch",
    "in_random_sample",
    "load_batch",
    "load_plan_file",
    "parse_week",
    "plan_from_options",
    "preview_plan",
    "random_predicate_sql",
    "record_batch",
    "register_md5",
    "resolve_week",
    "run_plan",
    "sample_and_scrub",
    "sample_batches",
    "sample_weeks",
    "save_plan",
    "saved_plan",
    "saved_plans",
    "scrub_batch",
    "store_sql",
    "threshold",
    "unscrubbed_count",
    "week_bounds",
    "week_order",
]
