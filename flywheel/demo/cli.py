"""The ``demo`` command: write a demo database built from Banking77 queries."""

from __future__ import annotations

import argparse
import json

from flywheel.progress import stderr_progress


def register(commands) -> None:
    """Add ``demo``."""
    demo = commands.add_parser("demo", help="write a demo database built from Banking77 queries")
    demo.add_argument("--db", required=True, help="path of the database to create")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--traces", type=int, default=6000, help="number of traces (default 6000)")
    demo.add_argument("--force", action="store_true", help="replace the file if it exists")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from flywheel.demo.build import build_demo

    summary = build_demo(
        args.db, seed=args.seed, traces=args.traces, force=args.force, progress=stderr_progress
    )
    print(json.dumps(summary))
    return 0
