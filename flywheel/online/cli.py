"""The ``judge`` command: grade traces or a regression run's outputs with the LLM judge."""

from __future__ import annotations

import argparse
import json

from flywheel.progress import clear_progress, stderr_progress
from flywheel.store.cli import open_database


def register(commands) -> None:
    """Add ``judge``."""
    judge = commands.add_parser("judge", help="grade traces or a regression run's outputs with the LLM judge")
    judge.add_argument("--db", required=True, help="path of the database")
    what = judge.add_mutually_exclusive_group()
    what.add_argument("--batch", metavar="ID", help="a sample batch (default: the newest)")
    what.add_argument("--week", metavar="ISO_WEEK", help="a week's traces with approved scrubs")
    what.add_argument(
        "--run", dest="run_id", metavar="ID", help="a regression run with outputs but no verdicts"
    )
    judge.add_argument("--rubric", metavar="NAME", help="rubric name (default: the newest saved)")
    judge.add_argument("--limit", type=int, metavar="N", help="grade at most N items")
    judge.add_argument("--json", action="store_true", help="print the run report as one JSON object")
    judge.add_argument("--actor", default="cli", help="who is grading, for the audit log")
    judge.set_defaults(handler=_judge)


def _judge(args: argparse.Namespace) -> int:
    from flywheel.online import judge

    db = open_database(args.db)
    chosen = {"batch": args.batch, "week": args.week, "run": args.run_id}
    kind = next((k for k, value in chosen.items() if value is not None), None)
    target = judge.Target(kind, chosen[kind]) if kind else judge.default_target(db)
    report = judge.run_judge(db, args.actor, target, args.rubric, args.limit, progress=stderr_progress)
    clear_progress()
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return 0
