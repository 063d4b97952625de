"""Eval-set commands (versions, exports, results, the release gate): each acts as a lead named by --actor."""

from __future__ import annotations

import argparse
import json
import sys

from flywheel.config import load_config
from flywheel.errors import BadInput
from flywheel.formats import EXPORT_FORMATS
from flywheel.store.cli import lead


def register(commands) -> None:
    """Add the eval-set commands."""
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
        cmd.set_defaults(handler=run)
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

    db, user = lead(args, create=True)
    eval_set = _set_to_write(db, args)
    change = evalsets.import_evalset_file(db, user, args.file, note=args.note, eval_set=eval_set)
    print(json.dumps(change.as_json()) if args.json else change.summary())
    return 0


def _fold_in(args: argparse.Namespace) -> int:
    from flywheel.evals import versions as evalsets

    db, user = lead(args)
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

    db, _ = lead(args)
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

    db, user = lead(args)
    eval_set = evalsets.resolve_set(db, args.eval_set)
    change = evalsets.withdraw_row(db, user, args.row_id, args.reason, eval_set=eval_set)
    out = {**change.as_json(), "withdrawn": [args.row_id], "reason": args.reason.strip()}
    print(json.dumps(out) if args.json else f"withdrew {args.row_id}: {change.summary()}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from flywheel.evals import exports

    db, user = lead(args)
    version = _version_of_set(db, args)
    written = exports.export_version(db, version, args.format, args.out, args.include_archive)
    exports.record_export(db, user, version, args.format, args.out, written)
    print(f"wrote {written} rows of version {args.version} to {args.out}", file=sys.stderr)
    return 0


def _import_results(args: argparse.Namespace) -> int:
    from flywheel.evals import runs

    db, user = lead(args)
    version = _version_of_set(db, args)
    report = runs.import_results_file(db, user, version, args.system, args.file, args.run_label)
    print(json.dumps(report.as_json()) if args.json else report.summary())
    return 0


def _gate(args: argparse.Namespace) -> int:
    from flywheel.evals import runs

    db, user = lead(args)
    verdict = runs.gate(
        db,
        _version_of_set(db, args),
        args.baseline,
        args.challenger,
        args.adversarial_min,
        waivers=runs.parse_waivers(args.waive),
        require_improvement=args.require_improvement,
        default_adversarial_pct=load_config().gate_adversarial_pct,
    )
    runs.record_decision(db, user, verdict)
    if args.json:
        print(json.dumps({key: verdict[key] for key in runs.GATE_KEYS}))
    else:
        print(runs.gate_summary(verdict))
    return 0 if verdict["verdict"] == "ship" else 1


def _eval_sets(args: argparse.Namespace) -> int:
    from flywheel.evals import versions as evalsets

    db, user = lead(args)
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
