"""Data subject and retention commands: a lead named by --actor."""

from __future__ import annotations

import argparse
import json
import sys

from flywheel.config import load_config
from flywheel.errors import BadInput
from flywheel.store.cli import lead


def register(commands) -> None:
    """Add ``subject find|erase`` and ``retention``."""
    subject = commands.add_parser("subject", help="find or erase a data subject's data")
    actions = subject.add_subparsers(dest="action", required=True, parser_class=type(subject))
    find = actions.add_parser("find", help="every place a value (e-mail, phone, card, name, user id) lives")
    erase = actions.add_parser("erase", help="erase a data subject: raw text, eval rows, derived copies")
    for cmd, run in ((find, _subject_find), (erase, _subject_erase)):
        cmd.add_argument("--db", required=True, help="path of the database")
        cmd.add_argument("value", metavar="VALUE")
        cmd.add_argument("--json", action="store_true", help="print one JSON object")
        cmd.add_argument("--actor", default="cli", help="who acts, for the audit log")
        cmd.set_defaults(handler=run)
    erase.add_argument("--reason", required=True, help="why (e.g. the request's reference)")
    retention = commands.add_parser(
        "retention", help="list (dry run) or purge raw text older than FLYWHEEL_RETENTION_DAYS"
    )
    retention.add_argument("--db", required=True, help="path of the database")
    retention.add_argument("--apply", action="store_true", help="purge (default: only list)")
    retention.add_argument("--json", action="store_true", help="print one JSON object")
    retention.add_argument("--actor", default="cli", help="who acts, for the audit log")
    retention.set_defaults(handler=_retention)


def _subject_find(args: argparse.Namespace) -> int:
    from flywheel.privacy import subjects

    db, user = lead(args)
    report = subjects.find_subject(db, user, args.value)
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return 0


def _subject_erase(args: argparse.Namespace) -> int:
    from flywheel.privacy import subjects

    db, user = lead(args)
    report = subjects.erase_subject(db, user, args.value, args.reason)
    print(json.dumps(report.as_json()) if args.json else report.summary())
    for export in report.exports:
        print(
            f"export #{export['id']} of version {export['version']} at {export['path']} ({export['at']})"
            " holds rows now erased: delete that file",
            file=sys.stderr,
        )
    if not report.checkpointed:
        print("another connection kept the WAL open: run the erase again when it is closed", file=sys.stderr)
    return 0


def _retention(args: argparse.Namespace) -> int:
    from flywheel.privacy import retention

    db, user = lead(args)
    days = load_config().retention_days
    if not days:
        raise BadInput("FLYWHEEL_RETENTION_DAYS is not set (0): raw text is kept, nothing expires")
    run = retention.apply_retention if args.apply else retention.retention_plan
    report = run(db, user, days)
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return 0
