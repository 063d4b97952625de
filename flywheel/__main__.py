"""Command line: ``python -m flywheel COMMAND``; errors are one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flywheel import ingest
from flywheel.errors import BadInput, FlywheelError
from flywheel.store import open_db


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FlywheelError as error:
        print(f"flywheel {args.command}: {error}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flywheel", description="Keep an LLM product's eval set alive.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = commands.add_parser("demo", help="write a demo database built from Banking77 queries")
    demo.add_argument("--db", required=True, help="path of the database to create")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--traces", type=int, default=6000, help="number of traces (default 6000)")
    demo.add_argument("--force", action="store_true", help="replace the file if it exists")
    demo.set_defaults(run=_demo)

    imp = commands.add_parser("ingest", help="import trace files (JSONL or CSV, optionally .gz)")
    imp.add_argument("--db", required=True, help="path of the database")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--json", action="store_true", help="print the report as one JSON object")
    imp.add_argument("--actor", default="cli", help="who is importing, for the audit log")
    imp.set_defaults(run=_ingest)

    scrub = commands.add_parser("scrub", help="scrub PII from {id, text} JSONL lines (stateless)")
    scrub.add_argument("input", metavar="IN.jsonl")
    scrub.add_argument("output", metavar="OUT.jsonl")
    scrub.add_argument("--known-names", metavar="FILE", help="customer/organisation names, one per line")
    scrub.set_defaults(run=_scrub)

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
    sample.set_defaults(run=_sample)

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
    judge.set_defaults(run=_judge)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from flywheel.demo_db import build_demo

    summary = build_demo(
        args.db, seed=args.seed, traces=args.traces, force=args.force, progress=_stderr_progress
    )
    print(json.dumps(summary))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    db = open_db(args.db)
    report = ingest.ingest_files(db, args.files, actor=args.actor, progress=_stderr_count)
    _clear_progress()
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return 0


def _scrub(args: argparse.Namespace) -> int:
    from flywheel import scrub

    names = scrub.load_known_names(args.known_names) if args.known_names else ()
    written = scrub.scrub_jsonl(args.input, args.output, known_names=names, progress=_stderr_progress)
    _clear_progress()
    print(f"scrubbed {written} lines into {args.output}", file=sys.stderr)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from flywheel import sampling

    plan = sampling.plan_from_options(args.plan, args.random, args.anomaly, args.seed)
    db = open_db(_existing(args.db))
    batch = sampling.run_plan(db, plan, actor=args.actor, week=args.week)
    from flywheel.review import scrub_traces  # loads the scrubber's NLP stack: only once a batch exists

    scrubbed = scrub_traces(db, sampling.batch_trace_ids(db, batch.id), args.actor, progress=_stderr_progress)
    _clear_progress()
    out = {**batch.as_json(), "scrubbed": scrubbed}
    print(json.dumps(out) if args.json else f"{batch.summary()}\n{scrubbed} traces sent to the scrubber")
    return 0


def _judge(args: argparse.Namespace) -> int:
    from flywheel import judge

    db = open_db(_existing(args.db))
    chosen = {"batch": args.batch, "week": args.week, "run": args.run_id}
    kind = next((k for k, value in chosen.items() if value is not None), None)
    target = judge.Target(kind, chosen[kind]) if kind else judge.default_target(db)
    report = judge.run_judge(db, args.actor, target, args.rubric, args.limit, progress=_stderr_progress)
    _clear_progress()
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return 0


def _existing(path: str) -> str:
    if not Path(path).is_file():
        raise BadInput(f"database {path!r} does not exist")
    return path


def _stderr_count(done: int) -> None:
    if sys.stderr.isatty():
        print(f"\r{done:,} lines", end="", file=sys.stderr, flush=True)


def _stderr_progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total:
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r[{bar}] {done:,}/{total:,}", end="", file=sys.stderr, flush=True)


def _clear_progress() -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
