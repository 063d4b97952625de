"""The ``ingest`` command: import trace files and print the reconciled report."""

from __future__ import annotations

import argparse
import json

from flywheel.config import load_config
from flywheel.formats import INGEST_FORMATS
from flywheel.progress import ProgressBar
from flywheel.store.cli import open_database


def register(commands) -> None:
    """Add ``ingest``."""
    imp = commands.add_parser("ingest", help="import trace files (JSONL or CSV, optionally .gz)")
    imp.add_argument("--db", required=True, help="path of the database")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--json", action="store_true", help="print the report as one JSON object")
    imp.add_argument("--actor", default="cli", help="who is importing, for the audit log")
    imp.add_argument("--max-bad", type=int, metavar="N", help="stop past N bad lines (default: setting)")
    imp.add_argument("--format", choices=INGEST_FORMATS, help="default: told by name and content")
    imp.set_defaults(handler=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    from flywheel.ingest import run as ingest

    db, bar = open_database(args.db, create=True), ProgressBar("ingest")
    progress = lambda lines, done, total: bar.update(done, total, lines)  # noqa: E731
    try:
        report = ingest.ingest_files(
            db,
            args.files,
            actor=args.actor,
            config=load_config(),
            progress=progress,
            max_bad=args.max_bad,
            fmt=args.format,
        )
    finally:
        bar.close()
    print(json.dumps(report.as_json()) if args.json else report.summary())
    if not args.json:
        for c in report.conflicts:
            print(
                f"conflict: {c['file']} line {c['line']}: trace {c['trace_id']!r} differs from the stored one"
            )
    return 0
