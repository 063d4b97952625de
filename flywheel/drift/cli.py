"""The ``drift`` command: how much traffic the current eval set no longer covers."""

from __future__ import annotations

import argparse
import json
import sys

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.progress import clear_progress, stderr_progress
from flywheel.store.cli import open_database


def register(commands) -> None:
    """Add ``drift``."""
    drift = commands.add_parser(
        "drift", help="measure how much traffic the current eval set no longer covers"
    )
    drift.add_argument("--db", required=True, help="path of the database")
    drift.add_argument("--window", metavar="ISO_WEEK|all-weeks", help="default: the latest week with traces")
    drift.add_argument(
        "--json", action="store_true", help="print one JSON object per window (a list for all-weeks)"
    )
    drift.add_argument(
        "--send-to-sampling", type=int, metavar="N", help="send the N biggest clusters to sampling"
    )
    drift.add_argument("--actor", default="cli", help="who runs it, for the audit log")
    drift.set_defaults(handler=_drift)


def _drift(args: argparse.Namespace) -> int:
    from flywheel.drift import run as drift

    db = open_database(args.db)
    run = drift.run_drift(
        db,
        args.actor,
        args.window,
        progress=lambda _, done, total: stderr_progress(done, total),
        config=load_config(),
    )
    clear_progress()
    out = run.as_json()
    print(json.dumps(out if args.window == drift.ALL_WEEKS else out[0]) if args.json else run.summary())
    if args.send_to_sampling is not None:
        batch = drift.send_to_sampling(
            db, User(args.actor, "lead"), run.id, clusters_sent=args.send_to_sampling
        )
        print(batch.summary(), file=sys.stderr)
    return 0
