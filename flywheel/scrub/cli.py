"""The ``scrub`` command: a stateless scrub of ``{id, text}`` JSONL lines."""

from __future__ import annotations

import argparse
import sys

from flywheel import scrub
from flywheel.progress import clear_progress, stderr_progress


def register(commands) -> None:
    """Add ``scrub``."""
    cmd = commands.add_parser("scrub", help="scrub PII from {id, text} JSONL lines (stateless)")
    cmd.add_argument("input", metavar="IN.jsonl")
    cmd.add_argument("output", metavar="OUT.jsonl")
    cmd.add_argument("--known-names", metavar="FILE", help="customer/organisation names, one per line")
    cmd.add_argument(
        "--workers", type=int, metavar="N", help="processes (default: one per core from 2,000 lines)"
    )
    cmd.set_defaults(handler=_scrub)


def _scrub(args: argparse.Namespace) -> int:
    # This process only scrubs: spaCy's thinc would import torch if installed (seconds, unused by NER).
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    names = scrub.load_known_names(args.known_names) if args.known_names else ()
    written = scrub.scrub_jsonl(
        args.input, args.output, known_names=names, progress=stderr_progress, workers=args.workers
    )
    clear_progress()
    print(f"scrubbed {written} lines into {args.output}", file=sys.stderr)
    return 0
