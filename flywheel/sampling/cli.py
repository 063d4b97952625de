"""The ``sample`` command: sample a week of traces (in the store or at the source) and scrub it."""

from __future__ import annotations

import argparse
import json

from flywheel.config import load_config
from flywheel.progress import clear_progress, stderr_progress
from flywheel.store.cli import open_database


def register(commands) -> None:
    """Add ``sample``."""
    sample = commands.add_parser("sample", help="sample a week of traces into a batch and scrub it")
    sample.add_argument("--db", required=True, help="path of the database")
    how = sample.add_mutually_exclusive_group(required=True)
    how.add_argument("--plan", metavar="FILE", help="sampling plan (.toml or .json)")
    how.add_argument("--random", type=float, metavar="RATE", help="random rate, 0 < RATE <= 1")
    sample.add_argument("--anomaly", action="store_true", help="with --random: all anomaly-flagged traces")
    sample.add_argument("--seed", type=int, help="seed (default: the plan's, else 7)")
    sample.add_argument("--week", metavar="ISO_WEEK", help="e.g. 2026-W45 (default: latest week with traces)")
    sample.add_argument("--json", action="store_true", help="print the batch as one JSON object")
    sample.add_argument("--actor", default="cli", help="who is sampling, for the audit log")
    sample.add_argument("--again", action="store_true", help="a new batch even if this plan sampled the week")
    sample.add_argument(
        "--source", metavar="PATH_OR_GLOB", help="sample Parquet/JSONL/CSV files where they lie"
    )
    sample.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb", help="engine for --source")
    sample.add_argument("--spark-master", metavar="URL", help="Spark master (default local[1])")
    sample.add_argument("--column", action="append", default=[], metavar="OURS=THEIRS", help="map a column")
    sample.set_defaults(handler=_sample)


def _sample(args: argparse.Namespace) -> int:
    from flywheel.sampling.batches import sample_and_scrub
    from flywheel.sampling.plans import plan_from_options

    plan = plan_from_options(args.plan, args.random, args.anomaly, args.seed)
    db = open_database(args.db, create=bool(args.source))  # sampling at the source can begin a project's data
    options = {"week": args.week, "again": args.again, "progress": stderr_progress}
    if args.source:
        from flywheel.sampling.source import parse_columns, sample_source

        columns = parse_columns(args.column)
        run = sample_source(
            db,
            plan,
            args.source,
            args.actor,
            args.engine,
            columns,
            args.spark_master,
            **options,
            config=load_config(),
        )
    else:
        run = sample_and_scrub(db, plan, args.actor, **options)
    clear_progress()
    print(json.dumps(run.as_json()) if args.json else run.summary())
    return 0
