"""Command line: ``python -m flywheel COMMAND``; errors are one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import NoReturn

from flywheel.errors import BadInput, FlywheelError
from flywheel.formats import EXPORT_FORMATS, INGEST_FORMATS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _created.clear()
    try:
        code = args.run(args)
    except FlywheelError as error:
        _drop_unused(_created)
        print(f"flywheel {args.command}: {error}", file=sys.stderr)
        return 2
    for path in _created:
        print(f"flywheel {args.command}: created a new database {path!r}", file=sys.stderr)
    return code


_created: list[str] = []  # databases this command created (said once it succeeds)


def _drop_unused(paths: list[str]) -> None:
    """Remove a database this command created when the command failed before changing anything: a
    refused first import leaves no empty store behind (every change writes an audit entry)."""
    import sqlite3

    for path in paths:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                if conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]:
                    continue
        except sqlite3.Error:
            continue  # cannot tell: keep it
        for suffix in ("", "-wal", "-shm", "-waiting"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


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
    imp.add_argument("--max-bad", type=int, metavar="N", help="stop past N bad lines (default: setting)")
    imp.add_argument("--format", choices=INGEST_FORMATS, help="default: told by name and content")
    imp.set_defaults(run=_ingest)

    scrub = commands.add_parser("scrub", help="scrub PII from {id, text} JSONL lines (stateless)")
    scrub.add_argument("input", metavar="IN.jsonl")
    scrub.add_argument("output", metavar="OUT.jsonl")
    scrub.add_argument("--known-names", metavar="FILE", help="customer/organisation names, one per line")
    scrub.add_argument(
        "--workers", type=int, metavar="N", help="processes (default: one per core from 2,000 lines)"
    )
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
    sample.add_argument("--again", action="store_true", help="a new batch even if this plan sampled the week")
    sample.add_argument(
        "--source", metavar="PATH_OR_GLOB", help="sample Parquet/JSONL/CSV files where they lie"
    )
    sample.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb", help="engine for --source")
    sample.add_argument("--spark-master", metavar="URL", help="Spark master (default local[1])")
    sample.add_argument("--column", action="append", default=[], metavar="OURS=THEIRS", help="map a column")
    sample.set_defaults(run=_sample)

    embed = commands.add_parser("embed", help="embed approved scrubs for the siblings panel")
    embed.add_argument("--db", required=True, help="path of the database")
    embed.set_defaults(run=_embed)
    _eval_parsers(commands)
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
    drift.set_defaults(run=_drift)

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

    cycle = commands.add_parser(
        "cycle", help="run the weekly loop: exit 0 nobody is needed, 1 a person is needed, 2 an error"
    )
    cycle.add_argument("--db", required=True, help="path of the database")
    cycle.add_argument("--plan", required=True, metavar="FILE", help="sampling plan (.toml or .json)")
    cycle.add_argument("--inbox", metavar="DIR", help="folder of trace files; each file is ingested once")
    cycle.add_argument("--json", action="store_true", help="print the cycle report as one JSON object")
    cycle.add_argument("--actor", default="cycle", help="who runs the cycle, for the audit log")
    cycle.set_defaults(run=_cycle)
    _privacy_parsers(commands)
    return parser


def _privacy_parsers(commands) -> None:
    """Data subjects and retention (flywheel.subjects, .retention): a lead named by --actor."""
    subject = commands.add_parser("subject", help="find or erase a data subject's data")
    actions = subject.add_subparsers(dest="action", required=True, parser_class=_Parser)
    find = actions.add_parser("find", help="every place a value (e-mail, phone, card, name, user id) lives")
    erase = actions.add_parser("erase", help="erase a data subject: raw text, eval rows, derived copies")
    for cmd, run in ((find, _subject_find), (erase, _subject_erase)):
        cmd.add_argument("--db", required=True, help="path of the database")
        cmd.add_argument("value", metavar="VALUE")
        cmd.add_argument("--json", action="store_true", help="print one JSON object")
        cmd.add_argument("--actor", default="cli", help="who acts, for the audit log")
        cmd.set_defaults(run=run)
    erase.add_argument("--reason", required=True, help="why (e.g. the request's reference)")
    retention = commands.add_parser(
        "retention", help="list (dry run) or purge raw text older than FLYWHEEL_RETENTION_DAYS"
    )
    retention.add_argument("--db", required=True, help="path of the database")
    retention.add_argument("--apply", action="store_true", help="purge (default: only list)")
    retention.add_argument("--json", action="store_true", help="print one JSON object")
    retention.add_argument("--actor", default="cli", help="who acts, for the audit log")
    retention.set_defaults(run=_retention)


def _eval_parsers(commands) -> None:
    """Eval sets (flywheel.evalsets, .exports, .runs): every command acts as a lead named by --actor."""
    specs = {
        "import-evalset": ("import a starter suite (CSV/JSONL) as a new version", _import_evalset),
        "fold-in": ("fold labeled failures into a new eval-set version", _fold_in),
        "diff": ("rows added, retired, changed and withdrawn between two versions", _diff),
        "withdraw": ("withdraw a bad row: a new version without it, with the reason", _withdraw),
        "export": ("export a version for a regression runner", _export),
        "import-results": ("import one system's results on a version", _import_results),
        "gate": ("release gate: exit 0 ship, 1 block, 2 error", _gate),
        "eval-sets": ("list the named eval sets; create or freeze one", _eval_sets),
    }
    for name, (text, run) in specs.items():
        cmd = commands.add_parser(name, help=text)
        cmd.add_argument("--db", required=True, help="path of the database")
        cmd.add_argument("--actor", default="cli", help="who acts, for the audit log")
        cmd.set_defaults(run=run)
        if name != "eval-sets":
            cmd.add_argument(
                "--set", dest="eval_set", metavar="NAME", help="eval set (default: the one set there is)"
            )
        if name == "eval-sets":
            what = cmd.add_mutually_exclusive_group()
            what.add_argument("--create", metavar="NAME", help="start a new, empty set")
            what.add_argument(
                "--freeze", metavar="NAME", help="freeze a set for good: it never changes again"
            )
            cmd.add_argument("--note", help="what the new set is for")
        if name in ("import-evalset", "fold-in"):
            cmd.add_argument("--note", help="what this version is")
        if name == "import-evalset":
            cmd.add_argument("file", metavar="FILE")
        if name == "fold-in":
            cmd.add_argument("--preview", action="store_true", help="show the rows a fold would write")
            cmd.add_argument("--fingerprint", metavar="FP", help="refuse unless the preview is still FP")
            cmd.add_argument(
                "--leave-out",
                action="append",
                default=[],
                metavar="ITEM",
                help="a preview key, e.g. 'add t-1'",
            )
            cmd.add_argument("--reason", help="why the --leave-out items are left out")
        if name == "diff":
            cmd.add_argument("a", type=int, metavar="A")
            cmd.add_argument("b", type=int, metavar="B")
        if name == "withdraw":
            cmd.add_argument("row_id", metavar="ROW_ID")
            cmd.add_argument("--reason", required=True, help="why the row is withdrawn")
        if name in ("export", "import-results", "gate"):
            cmd.add_argument("--version", type=int, required=True, help="eval-set version")
        if name == "export":
            cmd.add_argument("--format", required=True, choices=EXPORT_FORMATS)
            cmd.add_argument("--out", required=True, metavar="FILE")
            cmd.add_argument("--include-archive", action="store_true", help="also retired rows")
        if name == "import-results":
            cmd.add_argument("--system", required=True, metavar="NAME")
            cmd.add_argument("--run-label", metavar="L")
            cmd.add_argument("file", metavar="FILE")
        if name == "gate":
            cmd.add_argument("--baseline", required=True, metavar="SYS")
            cmd.add_argument("--challenger", required=True, metavar="SYS")
            cmd.add_argument(
                "--adversarial-min", type=float, metavar="RATE", help="0..1 (default: the setting)"
            )
            cmd.add_argument(
                "--waive",
                action="append",
                default=[],
                metavar="ROW_ID=REASON",
                help="waive one ordinary regression for this decision, with a reason (repeatable)",
            )
            cmd.add_argument(
                "--require-improvement",
                action="store_true",
                help="ship only when the challenger's pass rate is above the baseline's",
            )
        if name != "export":
            cmd.add_argument("--json", action="store_true", help="print one JSON object")


def _lead(args: argparse.Namespace, create: bool = False):
    from flywheel.auth import User

    return _open(args.db, create), User(args.actor, "lead")


def _open(path: str, create: bool = False):
    """The database at ``path``. Commands that begin a project's data (``create``) make a new one in an
    existing folder (``main`` says so once they succeed); commands that read one refuse a path that
    does not exist."""
    from flywheel.store.db import open_db

    if not create:
        return open_db(_existing(path))
    new = not Path(path).exists()
    db = open_db(path)
    if new:
        _created.append(path)
    return db


def _set_to_write(db, args: argparse.Namespace) -> str | None:
    """The set a version-writing command names; on a store without sets, the name it will start."""
    from flywheel.evals import versions as evalsets

    return evalsets.resolve_set(db, args.eval_set) if evalsets.set_names(db) else args.eval_set


def _version_of_set(db, args: argparse.Namespace) -> int:
    """``--version``, checked to be a version of ``--set`` (or of the one set there is)."""
    from flywheel.evals import versions as evalsets

    evalsets.require_in_set(db, args.version, evalsets.resolve_set(db, args.eval_set))
    return args.version


def _import_evalset(args: argparse.Namespace) -> int:
    from flywheel.evals import versions as evalsets

    db, user = _lead(args, create=True)
    eval_set = _set_to_write(db, args)
    change = evalsets.import_evalset_file(db, user, args.file, note=args.note, eval_set=eval_set)
    print(json.dumps(change.as_json()) if args.json else change.summary())
    return 0


def _fold_in(args: argparse.Namespace) -> int:
    from flywheel.evals import versions as evalsets

    db, user = _lead(args)
    eval_set = _set_to_write(db, args)
    if args.preview:
        preview = evalsets.fold_preview(db, eval_set=eval_set)
        print(json.dumps(preview.as_json()) if args.json else _preview_text(preview))
        return 0
    if args.leave_out and not args.reason:
        raise BadInput("--leave-out needs a --reason")
    leave_out = dict.fromkeys(args.leave_out, args.reason)
    change = evalsets.fold_in(
        db, user, note=args.note, fingerprint=args.fingerprint, leave_out=leave_out, eval_set=eval_set
    )
    print(json.dumps(change.as_json()) if args.json else change.summary())
    return 0


def _preview_text(preview) -> str:
    lines = [preview.summary()]
    for item in preview.items:
        state = "" if item.foldable else f"  NOT FOLDABLE: {item.blocked}"
        lines.append(f"{item.key}{state}")
        for key in ("input", "expected", "criterion", "code", "adversarial", "labeled_by", "agreement"):
            lines.append(f"    {key}: {_quoted(getattr(item, key))}")
        if item.check:
            lines.append(f"    check: {_quoted(item.check)}")
        if item.coverage:
            lines.append("    coverage: handled well, kept covered")
        if item.reason:
            lines.append(f"    reason: {_quoted(item.reason)}")
        if item.left_out:
            before = item.left_out
            lines.append(f"    left out before by {before['left_by']}: {_quoted(before['reason'])}")
    return "\n".join(lines)


def _quoted(value: object) -> str:
    # Trace text on a terminal: one line, control characters escaped, so it cannot move the cursor.
    return json.dumps(value, ensure_ascii=False)


def _diff(args: argparse.Namespace) -> int:
    from flywheel.evals import versions as evalsets

    db, _ = _lead(args)
    eval_set = evalsets.resolve_set(db, args.eval_set)
    for version in (args.a, args.b):
        evalsets.require_in_set(db, version, eval_set)
    diff = evalsets.diff_versions(db, args.a, args.b)
    if args.json:
        print(json.dumps(diff))
        return 0
    content = diff["content"]
    for key in ("added", "retired", "changed", "withdrawn"):
        ids = [f"{c['from']}->{c['to']}" if isinstance(c, dict) else c for c in diff[key]]
        print(f"{key} ({len(ids)}): {' '.join(ids)}")
        for row in content[key]:
            if key == "changed":
                print(f"  {row['from']} -> {row['to']}")
                for change in row["fields"]:
                    print(f"    {change['field']}: {_quoted(change['old'])} -> {_quoted(change['new'])}")
                continue
            print(f"  {row['id']}")
            for field in (*evalsets.DIFF_FIELDS, "reason"):
                if field in row:
                    print(f"    {field}: {_quoted(row[field])}")
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    from flywheel.evals import versions as evalsets

    db, user = _lead(args)
    eval_set = evalsets.resolve_set(db, args.eval_set)
    change = evalsets.withdraw_row(db, user, args.row_id, args.reason, eval_set=eval_set)
    out = {**change.as_json(), "withdrawn": [args.row_id], "reason": args.reason.strip()}
    print(json.dumps(out) if args.json else f"withdrew {args.row_id}: {change.summary()}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from flywheel.evals import exports

    db, user = _lead(args)
    version = _version_of_set(db, args)
    written = exports.export_version(db, version, args.format, args.out, args.include_archive)
    exports.record_export(db, user, version, args.format, args.out, written)
    print(f"wrote {written} rows of version {args.version} to {args.out}", file=sys.stderr)
    return 0


def _subject_find(args: argparse.Namespace) -> int:
    from flywheel.privacy import subjects

    db, user = _lead(args)
    report = subjects.find_subject(db, user, args.value)
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return 0


def _subject_erase(args: argparse.Namespace) -> int:
    from flywheel.privacy import subjects

    db, user = _lead(args)
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
    from flywheel.config import load_config
    from flywheel.privacy import retention

    db, user = _lead(args)
    days = load_config().retention_days
    if not days:
        raise BadInput("FLYWHEEL_RETENTION_DAYS is not set (0): raw text is kept, nothing expires")
    run = retention.apply_retention if args.apply else retention.retention_plan
    report = run(db, user, days)
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return 0


def _import_results(args: argparse.Namespace) -> int:
    from flywheel.evals import runs

    db, user = _lead(args)
    version = _version_of_set(db, args)
    report = runs.import_results_file(db, user, version, args.system, args.file, args.run_label)
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return 0


def _gate(args: argparse.Namespace) -> int:
    from flywheel.evals import runs

    db, user = _lead(args)
    verdict = runs.gate(
        db,
        _version_of_set(db, args),
        args.baseline,
        args.challenger,
        args.adversarial_min,
        waivers=runs.parse_waivers(args.waive),
        require_improvement=args.require_improvement,
    )
    runs.record_decision(db, user, verdict)
    if args.json:
        print(json.dumps({key: verdict[key] for key in runs.GATE_KEYS}))
    else:
        print(runs.gate_summary(verdict))
    return 0 if verdict["verdict"] == "ship" else 1


def _eval_sets(args: argparse.Namespace) -> int:
    from flywheel.evals import versions as evalsets

    db, user = _lead(args)
    if args.create:
        evalsets.create_eval_set(db, user, args.create, args.note)
    if args.freeze:
        evalsets.freeze_eval_set(db, user, args.freeze)
    sets = evalsets.eval_sets(db)
    if args.json:
        print(json.dumps(sets))
        return 0
    for item in sets:
        state = "frozen" if item["frozen"] else "refreshed"
        current = f"version {item['current']}" if item["current"] else "no version yet"
        print(f"{_quoted(item['name'])}: {state}, {item['versions']} versions, {current}")
    if not sets:
        print("no eval set yet: import a starter suite or fold labels in to start one")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flywheel.demo.build import build_demo

    summary = build_demo(
        args.db, seed=args.seed, traces=args.traces, force=args.force, progress=_stderr_progress
    )
    print(json.dumps(summary))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from flywheel.ingest import run as ingest
    from flywheel.progress import ProgressBar

    db, bar = _open(args.db, create=True), ProgressBar("ingest")
    progress = lambda lines, done, total: bar.update(done, total, lines)  # noqa: E731
    try:
        report = ingest.ingest_files(
            db, args.files, actor=args.actor, progress=progress, max_bad=args.max_bad, fmt=args.format
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


def _scrub(args: argparse.Namespace) -> int:
    # This process only scrubs: spaCy's thinc would import torch if installed (seconds, unused by NER).
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    from flywheel import scrub

    names = scrub.load_known_names(args.known_names) if args.known_names else ()
    written = scrub.scrub_jsonl(
        args.input, args.output, known_names=names, progress=_stderr_progress, workers=args.workers
    )
    _clear_progress()
    print(f"scrubbed {written} lines into {args.output}", file=sys.stderr)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from flywheel import sampling

    plan = sampling.plan_from_options(args.plan, args.random, args.anomaly, args.seed)
    db = _open(args.db, create=bool(args.source))  # sampling at the source can begin a project's data
    options = {"week": args.week, "again": args.again, "progress": _stderr_progress}
    if args.source:
        from flywheel.sampling.source import parse_columns, sample_source

        columns = parse_columns(args.column)
        run = sample_source(
            db, plan, args.source, args.actor, args.engine, columns, args.spark_master, **options
        )
    else:
        run = sampling.sample_and_scrub(db, plan, args.actor, **options)
    _clear_progress()
    print(json.dumps(run.as_json()) if args.json else run.summary())
    return 0


def _drift(args: argparse.Namespace) -> int:
    from flywheel.auth import User
    from flywheel.drift import run as drift
    from flywheel.store.db import open_db

    db = open_db(_existing(args.db))
    run = drift.run_drift(
        db, args.actor, args.window, progress=lambda _, done, total: _stderr_progress(done, total)
    )
    _clear_progress()
    out = run.as_json()
    print(json.dumps(out if args.window == drift.ALL_WEEKS else out[0]) if args.json else run.summary())
    if args.send_to_sampling is not None:
        batch = drift.send_to_sampling(
            db, User(args.actor, "lead"), run.id, clusters_sent=args.send_to_sampling
        )
        print(batch.summary(), file=sys.stderr)
    return 0


def _cycle(args: argparse.Namespace) -> int:
    from flywheel.cycle import run_cycle
    from flywheel.progress import ProgressBar
    from flywheel.sampling import load_plan_file
    from flywheel.store.db import open_db

    plan = load_plan_file(args.plan)
    bars: list[tuple[str, ProgressBar]] = []

    def progress(stage: str, done: int, total: int) -> None:
        if not bars or bars[-1][0] != stage:  # a new stage ends the previous stage's line
            if bars:
                bars[-1][1].close()
            bars.append((stage, ProgressBar(stage, unit="items")))
        bars[-1][1].update(done, total)

    report = run_cycle(open_db(_existing(args.db)), plan, args.actor, args.inbox, progress)
    if bars:
        bars[-1][1].close()
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return report.exit_code


def _judge(args: argparse.Namespace) -> int:
    from flywheel.online import judge
    from flywheel.store.db import open_db

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


def _stderr_progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total:
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r[{bar}] {done:,}/{total:,}", end="", file=sys.stderr, flush=True)


def _clear_progress() -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr)


def _embed(args: argparse.Namespace) -> int:
    from flywheel.progress import ProgressBar
    from flywheel.store.db import open_db
    from flywheel.vectors.embeddings import embed_all

    bar = ProgressBar("embedding approved scrubs", unit="texts")
    done = embed_all(open_db(_existing(args.db)), progress=lambda n: bar.update(n, 0, n))
    bar.close()
    print(f"embedded {done} approved scrub part(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
