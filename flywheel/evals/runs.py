"""Regression runs: import results, pass rate per eval-set version, retirement, lifecycle and the gate.

A *run* is one system's results on one version, imported from our JSONL/CSV (``row_id``, ``passed``,
optional ``score``, ``output``, ``repeat``), a promptfoo results JSON (``promptfoo eval -o out.json``)
or an Inspect log (``inspect eval --log-format json``). A row may be run several times (repeats, or
several runs of the same system on the same version): its *outcome* for that system is the share of
graded attempts that passed; it counts as passing when more than half did, and it is *flaky* when
some passed and some did not. Results with an output but no verdict yet (``passed`` NULL) wait for
the judge and count nowhere.

Rates carry a Wilson 95% interval; the gate pairs the two systems on the same rows and tests the
flips with the exact McNemar test (``flywheel.stats``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.csvfiles import read_table
from flywheel.errors import BadInput, NotFound
from flywheel.evals.versions import (
    DEFAULT_SET,
    BadRows,
    current_version,
    is_frozen,
    jsonl_records,
    require_version,
    version_members,
    version_set,
)
from flywheel.labeling.checks import grade, load_check
from flywheel.stats import mcnemar_exact, rate
from flywheel.store.audit import audit
from flywheel.store.clock import format_ts, now_utc
from flywheel.store.db import delete_chunks, parents_written_last, query_one, query_rows, write, write_chunks

RESULT_FORMATS = ("jsonl", "csv", "promptfoo", "inspect")
MAX_OUTPUT = 20_000
REGRESSION_MIN = 0.9  # a code whose rows pass at least this often is a regression metric: it must stay
PASS_WORDS = {
    "1": 1,
    "true": 1,
    "pass": 1,
    "passed": 1,
    "c": 1,
    "0": 0,
    "false": 0,
    "fail": 0,
    "failed": 0,
    "i": 0,
}


def _stamp(moment: datetime | None) -> str:
    return format_ts(moment or now_utc())


# Reading result files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    row_id: str
    passed: int | None
    score: float | None
    output: str | None
    repeat: int | None
    graded_by: str | None = None


def parse_results(data: bytes, name: str, known: Collection[str] = ()) -> tuple[str, list[Result]]:
    """The format and results of a results file; a bad line refuses the whole file (BadRows).

    ``known`` (the version's row ids) lets the CSV reader tell a row swallowed by a stray quote."""
    if name.lower().endswith(".eval"):
        raise BadInput(f"{name}: an Inspect .eval log is binary; write the log with --log-format json")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInput(f"{name}: not UTF-8 (byte {error.start})") from None
    if name.lower().endswith(".csv"):
        return "csv", _rows(_csv(text, name, known), name)
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            document = None  # one JSON object per line: our JSONL
        if isinstance(document, dict) and "row_id" not in document:
            return _runner_results(document, name)
    return "jsonl", _rows(jsonl_records(text), name)


def _csv(text: str, name: str, known: Collection[str]) -> Sequence[tuple[int, object]]:
    def check(header: list[str]) -> None:
        if not {"row_id", "passed"} <= set(header):
            raise BadInput(f"header {header!r}: expected columns row_id and passed")

    return read_table(text, name, key="row_id", known_keys=known, check_header=check).rows


def _rows(records: Sequence[tuple[int, object]], name: str) -> list[Result]:
    results, problems = [], []
    numbered: dict[tuple[str, int], int] = {}
    for line, record in records:
        try:
            result = _result(record)
            if result.repeat is not None:
                first = numbered.setdefault((result.row_id, result.repeat), line)
                if first != line:
                    raise BadInput(f"row {result.row_id!r} repeat {result.repeat} is already on line {first}")
            results.append(result)
        except BadInput as error:
            problems.append((line, str(error)))
    if problems:
        raise BadRows(name, problems)
    return results


def _result(record: object) -> Result:
    if isinstance(record, BadInput):
        raise record
    if not isinstance(record, dict):
        raise BadInput("not a JSON object")
    row_id = record.get("row_id")
    if not isinstance(row_id, str) or not row_id.strip():
        raise BadInput("'row_id' is missing")
    return Result(
        row_id.strip(),
        _passed(record.get("passed")),
        _score(record.get("score")),
        _output(record.get("output")),
        _repeat(record.get("repeat")),
    )


def _passed(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    word = str(value).strip().lower()
    if word not in PASS_WORDS:
        raise BadInput(f"'passed' {str(value)[:20]!r}: expected true/false, 1/0, pass/fail or empty")
    return PASS_WORDS[word]


def _score(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(_scalar(value))
    except ValueError:
        raise BadInput(f"'score' {str(value)[:20]!r}: expected a number") from None


def _scalar(value: object) -> int | float | str:
    """A number or text as read; anything else (a list, an object) as text no number parses from."""
    return value if isinstance(value, (int, float, str)) else ""


def _output(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text[:MAX_OUTPUT]


def _repeat(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(_scalar(value))
    except ValueError:
        raise BadInput(f"'repeat' {str(value)[:20]!r}: expected a whole number") from None
    if number < 0:
        raise BadInput(f"'repeat' {number}: expected 0 or more")
    return number


def _runner_results(document: dict, name: str) -> tuple[str, list[Result]]:
    if isinstance(document.get("results"), dict) and "results" in document["results"]:
        return "promptfoo", _promptfoo_results(document["results"]["results"], name)
    if isinstance(document.get("samples"), list) and "eval" in document:
        return "inspect", _inspect_results(document["samples"], name)
    if "eval" in document and "samples" not in document:
        raise BadInput(f"{name}: an Inspect log without samples; write it with --log-format json")
    raise BadInput(
        f"{name}: not a results file: expected our JSONL/CSV, a promptfoo results JSON or an Inspect log"
    )


def _object(value: object, what: str) -> dict:
    """A JSON object of a results file, or {} when absent; anything else is the record's problem."""
    if value is not None and not isinstance(value, dict):
        raise BadInput(f"'{what}' is not an object")
    return value or {}


def _each_result(records: list, kind: str, name: str, parse: Callable[[Any], Result]) -> list[Result]:
    """``parse`` over every record; a record of any shape is a problem of that record (with its number),
    never a crash, and any problem refuses the whole file."""
    results, problems = [], []
    for index, record in enumerate(records):
        try:
            result = parse(record)
            (result.row_id + (result.output or "")).encode("utf-8")  # a lone surrogate could not be stored
            results.append(result)
        except BadInput as error:
            problems.append((index + 1, f"{kind} {index + 1}: {error}"))
        except (OverflowError, RecursionError, ValueError) as error:
            problems.append((index + 1, f"{kind} {index + 1}: cannot be stored ({type(error).__name__})"))
    if problems:
        raise BadRows(name, problems)
    return results


def _promptfoo_result(item: object) -> Result:
    case = _object(_object(item, "result").get("testCase"), "testCase")
    metadata, variables = _object(case.get("metadata"), "metadata"), _object(case.get("vars"), "vars")
    row_id = metadata.get("row_id") or variables.get("row_id")
    if not isinstance(row_id, str):
        raise BadInput("result without metadata.row_id (export the cases with Flywheel)")
    assert isinstance(item, dict)  # _object refused anything else
    success = item.get("success")
    output = _output(_object(item.get("response"), "response").get("output"))
    passed = None if success is None else int(bool(success))
    return Result(row_id, passed, _score(item.get("score")), output, None)


def _promptfoo_results(items: object, name: str) -> list[Result]:
    return _each_result(items if isinstance(items, list) else [], "result", name, _promptfoo_result)


def _inspect_sample(sample: object) -> Result:
    row_id = sample.get("id") if isinstance(sample, dict) else None
    if not isinstance(row_id, str):
        raise BadInput("sample without a string id (export the rows with Flywheel)")
    assert isinstance(sample, dict)
    scores = _object(sample.get("scores"), "scores")
    values = [s.get("value") for s in scores.values() if isinstance(s, dict)]
    # "N" (no answer): the scorer gave no verdict, e.g. a row with no code check; it waits.
    passed = _passed(values[0]) if values and values[0] != "N" else None
    output = _object(sample.get("output"), "output").get("completion")
    epoch = sample.get("epoch")
    if isinstance(epoch, int) and not 1 <= epoch <= 2**63:  # the repeat, epoch - 1, is stored
        raise BadInput(f"'epoch' {epoch!r}: expected 1..{2**63}")
    repeat = epoch - 1 if isinstance(epoch, int) else None
    return Result(row_id, passed, None, _output(output), repeat)


def _inspect_results(samples: list, name: str) -> list[Result]:
    return _each_result(samples, "sample", name, _inspect_sample)


# Importing a run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunImport:
    run_id: int
    version: int
    system: str
    format: str
    results: int
    rows: int
    passed: int
    failed: int
    ungraded: int
    unknown: list[str]
    flaky: int
    rows_read: int = 0
    stored: int = 0
    refused: int = 0
    duplicates: list[str] = field(default_factory=list)
    already_imported: bool = False
    checked: int = 0

    def as_json(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        if self.already_imported:
            return (
                f"already imported: this file (same SHA-256) is run {self.run_id} of {self.system}"
                f" on version {self.version}; nothing stored"
            )
        unknown = (
            f"; {len(self.unknown)} unknown row ids refused: {', '.join(self.unknown[:10])}"
            if self.unknown
            else ""
        )
        twice = (
            f"; {len(self.duplicates)} row ids appear more than once (kept as repeats):"
            f" {', '.join(self.duplicates[:10])}"
            if self.duplicates
            else ""
        )
        checks = f"; {self.checked} graded here by their code checks" if self.checked else ""
        return (
            f"run {self.run_id}: {self.system} on version {self.version} ({self.format}),"
            f" {self.rows_read} results read = {self.stored} stored + {self.refused} refused;"
            f" {self.results} results on {self.rows} rows: {self.passed} passed, {self.failed} failed,"
            f" {self.ungraded} awaiting a verdict, {self.flaky} flaky{checks}{unknown}{twice}"
        )


def import_results(
    db: Database,
    user: User,
    version: int,
    system: str,
    data: bytes,
    name: str,
    run_label: str | None = None,
    now: datetime | None = None,
) -> RunImport:
    """Import one system's results on one version, all or nothing; unknown row ids are reported.

    A result with an output and no verdict on a row whose pass criterion has a code check is graded
    here by the check; the others wait for the judge."""
    require_role(user, "lead")
    system = (system or "").strip()
    if not system or len(system) > 200:
        raise BadInput(f"system name {system[:40]!r}: expected 1..200 characters")
    fmt, results = parse_results(data, name, version_members(db, version))
    if not results:
        raise BadInput(f"{name}: no results")
    stamp = _stamp(now)
    digest = hashlib.sha256(data).hexdigest()
    require_version(db, version)
    members = version_members(db, version)  # a version's membership never changes
    known = grade_by_checks(db, [r for r in results if r.row_id in members])
    unknown = sorted({r.row_id for r in results if r.row_id not in members})
    if done := _same_file_run(db, version, system, digest):  # a retry after a kill imports nothing twice
        report = _report(db, done, version, system, fmt, known, unknown)
        refused = len(results) - len(known)
        return replace(
            report, rows_read=len(results), stored=len(known), refused=refused, already_imported=True
        )
    if not known:
        raise BadInput(
            f"{name}: none of its {len(results)} row ids is in version {version} (e.g. {unknown[0]!r})"
        )
    with _pending_results(db, known) as run_id:
        report = _report(db, run_id, version, system, fmt, known, unknown)
        stored = db.execute("SELECT count(*) FROM eval_results WHERE run_id = ?", [run_id]).fetchone()[0]
        counts = Counter(r.row_id for r in results)
        report = replace(
            report,
            rows_read=len(results),
            stored=stored,
            refused=len(results) - len(known),
            duplicates=sorted(r for r, n in counts.items() if n > 1),
            checked=sum(r.graded_by == "check" for r in known),
        )
        if report.rows_read != report.stored + report.refused:
            raise BadInput(
                f"{name}: {report.rows_read} results read but {report.stored} stored"
                f" + {report.refused} refused; nothing imported"
            )
        with write(db):
            db.table("eval_runs").insert(
                {
                    "id": run_id,
                    "version": version,
                    "system": system,
                    "run_label": (run_label or "").strip()[:200] or None,
                    "source_file": Path(name).name,
                    "format": fmt,
                    "imported_by": user.name,
                    "imported_at": stamp,
                    "ran_at": stamp,
                    "unknown_ids": json.dumps(unknown) if unknown else None,
                    "source_sha256": digest,
                }
            )
            audit(db, user.name, "import_results", "eval_run", run_id, **report.as_json())
    return report


def _same_file_run(db: Database, version: int, system: str, digest: str) -> int | None:
    """The run an identical file already made for this version and system (a retry imports nothing)."""
    row = query_one(
        db,
        "SELECT id FROM eval_runs WHERE version = ? AND system = ? AND source_sha256 = ? ORDER BY id",
        [version, system, digest],
    )
    return row["id"] if row else None


@contextlib.contextmanager
def _pending_results(db: Database, known: list[Result]) -> Iterator[int]:
    """Write an import's results under the run id it yields, before the run row exists.

    Nobody reads results without their run row (every reader joins it), so they go in chunks that leave
    room for other users' changes, and the run row written in the block links them all in at once. A
    block that fails takes the results out again.
    """
    run_ids: list[int] = []
    nested = db.conn.in_transaction
    try:
        with parents_written_last(db):
            write_chunks(db, _numbered(0, known), lambda db, chunk: _insert_results(db, chunk, run_ids))
        yield run_ids[0]
    except BaseException:
        if run_ids and not nested:
            delete_chunks(db, "eval_results", "run_id = ?", run_ids[:1])
        raise


def _insert_results(db: Database, chunk: list[dict], run_ids: list[int]) -> None:
    if not run_ids:  # past every run and every other import's pending results: the run row cannot collide
        top = db.execute(
            "SELECT max(coalesce((SELECT max(id) FROM eval_runs), 0),"
            " coalesce((SELECT max(run_id) FROM eval_results), 0))"
        )
        run_ids.append(top.fetchone()[0] + 1)
    columns = ("run_id", "row_id", "repeat", "passed", "score", "output", "graded_by")
    db.conn.executemany(
        f"INSERT INTO eval_results ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [(run_ids[0], *(row[c] for c in columns[1:])) for row in chunk],
    )


def import_results_file(
    db: Database, user: User, version: int, system: str, path: str | Path, run_label: str | None = None
) -> RunImport:
    """Import a results file from disk."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BadInput(f"cannot read {str(path)!r}: {error.strerror}") from None
    return import_results(db, user, version, system, data, path.name, run_label)


def grade_by_checks(db: Database, results: list[Result]) -> list[Result]:
    """Results with an output and no verdict, graded by their row's code check where it has one."""
    waiting = sorted({r.row_id for r in results if r.passed is None and r.output is not None})
    checks = {
        row_id: load_check(stored)
        for row_id, stored in db.execute(
            "SELECT id, pass_check FROM eval_rows WHERE pass_check IS NOT NULL"
            " AND id IN (SELECT value FROM json_each(?))",
            [json.dumps(waiting)],
        )
    }
    graded = []
    for result in results:
        spec = checks.get(result.row_id) if result.passed is None else None
        verdict = grade(spec, result.output) if spec else None
        if verdict is not None:
            result = replace(result, passed=int(verdict), graded_by="check")
        graded.append(result)
    return graded


def _numbered(run_id: int, results: list[Result]) -> list[dict]:
    """Result rows with a repeat number each: the file's own, else the order a row appears in."""
    seen: dict[str, set[int]] = defaultdict(set)
    rows = []
    for result in results:
        repeat = result.repeat
        if repeat is None or repeat in seen[result.row_id]:
            repeat = max(seen[result.row_id], default=-1) + 1
        seen[result.row_id].add(repeat)
        rows.append(
            {
                "run_id": run_id,
                "row_id": result.row_id,
                "repeat": repeat,
                "passed": result.passed,
                "score": result.score,
                "output": result.output,
                "graded_by": result.graded_by or ("runner" if result.passed is not None else None),
            }
        )
    return rows


def _report(db, run_id, version, system, fmt, known, unknown) -> RunImport:
    # Read from the stored results before their run row links them in, so outside the write lock.
    flaky = db.execute(
        "SELECT count(*) FROM (SELECT sum(passed = 1) AS passes, count(passed) AS graded FROM eval_results"
        " WHERE run_id = ? GROUP BY row_id) WHERE passes > 0 AND passes < graded",
        [run_id],
    ).fetchone()[0]
    return RunImport(
        run_id,
        version,
        system,
        fmt,
        len(known),
        len({r.row_id for r in known}),
        sum(r.passed == 1 for r in known),
        sum(r.passed == 0 for r in known),
        sum(r.passed is None for r in known),
        unknown,
        flaky,
    )


# Outcomes and pass rates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A row's graded attempts for one system on one version."""

    passes: int
    graded: int
    attempts: int

    @property
    def passed(self) -> bool:
        return self.passes * 2 > self.graded

    @property
    def flaky(self) -> bool:
        return 0 < self.passes < self.graded

    @property
    def fraction(self) -> float | None:
        return self.passes / self.graded if self.graded else None


def _outcomes(db: Database, where: str, params: list) -> dict[tuple, Outcome]:
    sql = f"""
        SELECT r.version, r.system, e.row_id, coalesce(sum(e.passed = 1), 0), count(e.passed), count(*)
        FROM eval_results e JOIN eval_runs r ON r.id = e.run_id {where}
        GROUP BY r.version, r.system, e.row_id"""
    return {(v, s, row): Outcome(p, g, a) for v, s, row, p, g, a in db.execute(sql, params)}


def outcomes(db: Database, version: int, system: str) -> dict[str, Outcome]:
    """Each row's outcome for ``system`` on ``version`` (graded rows only)."""
    found = _outcomes(db, "WHERE r.version = ? AND r.system = ?", [version, system])
    return {row: o for (_, _, row), o in found.items() if o.graded}


def systems(db: Database, version: int | None = None) -> list[str]:
    """Systems with results (on one version, or on any)."""
    where, params = ("WHERE version = ?", [version]) if version is not None else ("", [])
    return [
        r[0] for r in db.execute(f"SELECT DISTINCT system FROM eval_runs {where} ORDER BY system", params)
    ]


def row_info(db: Database) -> dict[str, dict]:
    return {
        r["id"]: r
        for r in query_rows(
            db,
            "SELECT id, code, adversarial, adversarial_kind, input, expected, source,"
            " coalesce(coverage, 0) AS coverage, pass_check FROM eval_rows",
        )
    }


def _tally(rows: list[str], found: dict[str, Outcome]) -> dict:
    graded = [found[r] for r in rows if r in found]
    out = rate(sum(o.passed for o in graded), len(graded))
    out["flaky"] = sum(o.flaky for o in graded)
    return out


def pass_rates(db: Database) -> list[dict]:
    """Pass rate per version and system with its interval, the rows behind it, flaky rows, its set,
    and the adversarial and coverage slices; active rows only."""
    info = row_info(db)
    all_outcomes = _outcomes(db, "", [])
    sets = dict(db.execute("SELECT version, eval_set FROM eval_versions"))
    out = []
    for version in sorted({v for v, _, _ in all_outcomes}):
        members = version_members(db, version)
        active = [r for r, s in members.items() if s == "active"]
        adversarial = [r for r in active if info[r]["adversarial"]]
        coverage = [r for r in active if info[r]["coverage"]]
        for system in systems(db, version):
            found = {
                row: o for (v, s, row), o in all_outcomes.items() if v == version and s == system and o.graded
            }
            out.append(
                {
                    "version": version,
                    "eval_set": sets.get(version) or DEFAULT_SET,
                    "system": system,
                    **_tally(active, found),
                    "rows_in_version": len(active),
                    "adversarial": _tally(adversarial, found),
                    "coverage": _tally(coverage, found),
                }
            )
    return out


SLICES = {
    "all rows": lambda row: True,
    "starter rows": lambda row: row["source"] == "import",
    "failure rows": lambda row: row["source"] == "trace" and not row["coverage"],
    "coverage rows": lambda row: bool(row["coverage"]),
    "adversarial rows": lambda row: bool(row["adversarial"]),
    "code-checked rows": lambda row: row["pass_check"] is not None,
}


def pass_rate_slices(db: Database, version: int, system: str) -> list[dict]:
    """Pass rate of one system on one version per slice of its active rows: starter, failure and
    coverage rows (a trace the model handled well), adversarial and code-checked rows."""
    require_version(db, version)
    info = row_info(db)
    found = outcomes(db, version, system)
    active = sorted(r for r, s in version_members(db, version).items() if s == "active")
    out = []
    for name, keep in SLICES.items():
        rows = [r for r in active if keep(info[r])]
        out.append({"slice": name, "rows": len(rows), **_tally(rows, found)})
    return out


def carried_vs_new(db: Database, version: int, system: str) -> dict | None:
    """The rows of ``version`` split into those carried from the previous version of the same eval set
    this system ran and those new in it; carried rows are paired across the two versions (a fall there is
    a regression). None when the system ran no earlier version of that set."""
    earlier = [v for v in _versions_run(db, system, version_set(db, version)) if v < version]
    if not earlier:
        return None
    previous = earlier[-1]
    now_rows = {r for r, s in version_members(db, version).items() if s == "active"}
    before_rows = {r for r, s in version_members(db, previous).items() if s == "active"}
    carried, new = sorted(now_rows & before_rows), sorted(now_rows - before_rows)
    found_now, found_before = outcomes(db, version, system), outcomes(db, previous, system)
    paired = [r for r in carried if r in found_now and r in found_before]
    fell = [r for r in paired if found_before[r].passed and not found_now[r].passed]
    rose = [r for r in paired if not found_before[r].passed and found_now[r].passed]
    return {
        "system": system,
        "version": version,
        "previous": previous,
        "all_now": _tally(sorted(now_rows), found_now),
        "all_before": _tally(sorted(before_rows), found_before),
        "carried_before": _tally(paired, found_before),
        "carried_now": _tally(paired, found_now),
        "new": _tally(new, found_now),
        "carried_fell": fell,
        "carried_rose": rose,
        "p_value": mcnemar_exact(len(fell), len(rose)),
    }


def _versions_run(db: Database, system: str, eval_set: str) -> list[int]:
    sql = (
        "SELECT DISTINCT r.version FROM eval_runs r JOIN eval_versions v ON v.version = r.version"
        " WHERE r.system = ? AND v.eval_set = ? ORDER BY r.version"
    )
    return [r[0] for r in db.execute(sql, [system, eval_set])]


def per_code(db: Database, version: int, system: str) -> list[dict]:
    """Pass rate per taxonomy code on one version for one system (rows without a code as '(none)')."""
    info = row_info(db)
    found = outcomes(db, version, system)
    groups: dict[str, list[str]] = defaultdict(list)
    for row_id, state in version_members(db, version).items():
        if state == "active":
            groups[info[row_id]["code"] or "(none)"].append(row_id)
    return [{"code": code, **_tally(rows, found)} for code, rows in sorted(groups.items())]


def lifecycle(
    db: Database, up_to: int | None = None, systems_: list[str] | None = None, *, saturated_versions: int
) -> dict[str, dict]:
    """Each code's metric stage from its pass rate per version (pooled over systems, or some):

    *capability* — still low, the hill to climb; *regression* — at least ``REGRESSION_MIN``, must stay;
    *saturated* — 100% in each of the last ``saturated_versions`` versions run: a candidate to retire.
    """
    needed = saturated_versions
    info = row_info(db)
    series: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for (version, system, row_id), outcome in _outcomes(db, "", []).items():
        if (
            outcome.graded
            and (up_to is None or version <= up_to)
            and (systems_ is None or system in systems_)
        ):
            series[info[row_id]["code"] or "(none)"][version].append(outcome.passed)
    stages = {}
    for code, by_version in series.items():
        rates = [sum(v) / len(v) for _, v in sorted(by_version.items())]
        latest = rates[-1]
        if len(rates) >= needed and all(r == 1 for r in rates[-needed:]):
            stage = "saturated"
        elif latest >= REGRESSION_MIN:
            stage = "regression"
        else:
            stage = "capability"
        stages[code] = {"stage": stage, "latest": latest, "versions": len(rates)}
    return stages


def retired_failing(db: Database) -> list[dict]:
    """Archived (retired) rows that were run again and failed: flagged as "retired row fails again"."""
    sql = """
        SELECT r.version, r.system, e.row_id, sum(e.passed = 0) AS failures, count(e.passed) AS graded
        FROM eval_results e JOIN eval_runs r ON r.id = e.run_id
        JOIN eval_version_rows m ON m.version = r.version AND m.row_id = e.row_id AND m.state = 'archived'
        GROUP BY r.version, r.system, e.row_id HAVING failures > 0 ORDER BY r.version, e.row_id"""
    info = row_info(db)
    return [
        {**row, "code": info[row["row_id"]]["code"], "input": info[row["row_id"]]["input"]}
        for row in query_rows(db, sql)
    ]


# Retirement -----------------------------------------------------------------------------------------


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier (clamped to the month's last day)."""
    year, month = divmod(moment.year * 12 + moment.month - 1 - months, 12)
    month += 1
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))


def retirement_proposals(
    db: Database, now: datetime | None = None, *, months: int, eval_set: str | None = None
) -> list[dict]:
    """Active rows of the set's current version that passed in every run of every system for
    ``months`` months (setting ``retire_months``) and still run: proposed for the archive. A frozen
    set retires nothing."""
    moment = now or now_utc()
    since = _stamp(months_before(moment, months))
    version = current_version(db, eval_set)
    if version is None or is_frozen(db, _set_of(db, version)):
        return []
    active = [r for r, s in version_members(db, version).items() if s == "active"]
    confirmed = {r[0] for r in db.execute("SELECT row_id FROM eval_retirements")}
    history: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for row_id, ran_at, passed in db.execute(
        "SELECT e.row_id, coalesce(r.ran_at, r.imported_at), e.passed FROM eval_results e"
        " JOIN eval_runs r ON r.id = e.run_id"
        " WHERE e.passed IS NOT NULL AND coalesce(r.ran_at, r.imported_at) <= ?",
        [_stamp(moment)],
    ):
        history[row_id].append((ran_at, passed))
    info = row_info(db)
    proposals = []
    for row_id in active:
        runs = sorted(history.get(row_id, []))
        last_fail = max((at for at, passed in runs if not passed), default="")
        streak = [at for at, _ in runs if at > last_fail]
        if row_id in confirmed or not streak or streak[0] > since:
            continue
        proposals.append(
            {
                "row_id": row_id,
                "code": info[row_id]["code"],
                "passing_since": streak[0],
                "last_run": streak[-1],
                "results": len(streak),
                "input": info[row_id]["input"],
            }
        )
    return proposals


def _set_of(db: Database, version: int) -> str:
    row = db.execute("SELECT eval_set FROM eval_versions WHERE version = ?", [version]).fetchone()
    return (row[0] if row else None) or DEFAULT_SET


def confirm_retirements(
    db: Database,
    user: User,
    row_ids: list[str],
    now: datetime | None = None,
    eval_set: str | None = None,
    *,
    months: int,
) -> int:
    """A lead confirms rows proposed after ``months`` passing; they move to the archive in the next
    version. Return how many."""
    require_role(user, "lead")
    frozen = [
        (row_id, name)
        for row_id, name in db.execute(
            "SELECT id, eval_set FROM eval_rows WHERE id IN (SELECT value FROM json_each(?))",
            [json.dumps(list(row_ids))],
        )
        if name and is_frozen(db, name)
    ]
    if frozen:
        row_id, name = frozen[0]
        raise BadInput(f"eval set {name!r} is frozen: nothing in it retires (row {row_id!r})")
    proposed = {p["row_id"]: p for p in retirement_proposals(db, now, months=months, eval_set=eval_set)}
    missing = [r for r in row_ids if r not in proposed]
    if missing:
        raise BadInput(f"not proposed for retirement: {', '.join(missing[:10])}")
    stamp = _stamp(now)
    with write(db):
        for row_id in dict.fromkeys(row_ids):
            reason = f"passed every run since {proposed[row_id]['passing_since'][:10]}"
            db.table("eval_retirements").insert(
                {"row_id": row_id, "reason": reason, "confirmed_by": user.name, "confirmed_at": stamp}
            )
        audit(db, user.name, "confirm_retirements", "eval_rows", len(row_ids), rows=row_ids)
    return len(dict.fromkeys(row_ids))


def retirements(db: Database) -> list[dict]:
    """Confirmed retirements, newest first, with the version whose archive took each row."""
    return query_rows(db, "SELECT * FROM eval_retirements ORDER BY confirmed_at DESC, row_id")


# The release gate ----------------------------------------------------------------------------------------


def adversarial_threshold(db: Database, *, default_pct: int) -> float:
    """The adversarial pass rate the gate asks for: the lead's setting, else ``default_pct`` percent
    (setting ``gate_adversarial_pct``)."""
    row = query_one(db, "SELECT adversarial_min FROM eval_gate_settings WHERE id = 1")
    return row["adversarial_min"] if row else default_pct / 100


def set_adversarial_threshold(db: Database, user: User, value: float) -> None:
    """A lead sets the adversarial pass rate the gate asks for (0..1)."""
    require_role(user, "lead")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BadInput(f"adversarial threshold {value!r}: expected a number from 0 to 1")
    with write(db):
        db.table("eval_gate_settings").upsert(
            {"id": 1, "adversarial_min": float(value), "set_by": user.name, "set_at": _stamp(None)}, pk="id"
        )
        audit(db, user.name, "set_adversarial_threshold", "gate", 1, adversarial_min=value)


def gate(
    db: Database,
    version: int,
    baseline: str,
    challenger: str,
    adversarial_min: float | None = None,
    waivers: dict[str, str] | None = None,
    require_improvement: bool = False,
    *,
    default_adversarial_pct: int,
) -> dict:
    """The release gate on one version: the two systems paired on the same rows.

    Ship only when every criterion holds (seed 000's exit criteria): *complete* — every active row is
    graded for both systems; *safety* — every adversarial row graded, none flips pass→fail, and the
    challenger's adversarial rate reaches the threshold (no waiver applies); *zero regressions* — no
    ordinary row the baseline passed fails for the challenger, unless a lead waived it with a reason;
    *no loss* — the challenger's pass rate on the paired rows is not below the baseline's (above it
    with ``require_improvement``). A row with mixed results on either side is flaky: listed apart, it
    neither blocks alone nor hides. ``regressions``/``improvements`` list every flipped row id.
    """
    require_version(db, version)
    if baseline == challenger:
        raise BadInput(f"baseline and challenger are both {baseline!r}: expected two systems")
    threshold = (
        adversarial_threshold(db, default_pct=default_adversarial_pct)
        if adversarial_min is None
        else adversarial_min
    )
    if isinstance(threshold, bool) or not 0 <= threshold <= 1:
        raise BadInput(f"adversarial threshold {threshold!r}: expected 0..1")
    base, chal = (_graded(db, version, system) for system in (baseline, challenger))
    info = row_info(db)
    active = sorted(r for r, s in version_members(db, version).items() if s == "active")
    adversarial_rows = [r for r in active if info[r]["adversarial"]]
    paired = [r for r in active if r in base and r in chal]
    flaky = [r for r in paired if base[r].flaky or chal[r].flaky]
    regressions = [r for r in paired if base[r].passed and not chal[r].passed]
    improvements = [r for r in paired if not base[r].passed and chal[r].passed]
    unsafe = [r for r in regressions if info[r]["adversarial"]]
    ordinary = [r for r in regressions if not info[r]["adversarial"] and r not in flaky]
    waived = _check_waivers(waivers or {}, regressions, ordinary, unsafe, info)
    adversarial = {
        **_tally([r for r in adversarial_rows if r in chal], chal),
        "baseline": _tally([r for r in adversarial_rows if r in base], base),
        "threshold": threshold,
        "rows": len(adversarial_rows),
    }
    adversarial["ok"] = (
        bool(adversarial_rows)
        and all(r in chal and r in base for r in adversarial_rows)
        and adversarial["rate"] >= threshold
    )
    verdict = {
        "version": version,
        "regressions": regressions,
        "improvements": improvements,
        "baseline": {"system": baseline, **_tally(paired, base)},
        "challenger": {"system": challenger, **_tally(paired, chal)},
        "adversarial": adversarial,
        "p_value": mcnemar_exact(len(regressions), len(improvements)),
        "paired": len(paired),
        "unpaired": [r for r in active if r not in paired],
        "missing": {
            "baseline": [r for r in active if r not in base],
            "challenger": [r for r in active if r not in chal],
        },
        "flaky": flaky,
        "waived": waived,
        "blocking": [r for r in ordinary if r not in waived] + unsafe,
        "require_improvement": require_improvement,
    }
    criteria = _criteria(verdict, adversarial_rows, unsafe, ordinary)
    verdict["criteria"] = criteria
    verdict["reasons"] = [f"{c['name']}: {c['detail']}" for c in criteria if not c["ok"]]
    verdict["verdict"] = "ship" if all(c["ok"] for c in criteria) else "block"
    return verdict


def _graded(db: Database, version: int, system: str) -> dict[str, Outcome]:
    found = outcomes(db, version, system)
    if not found:
        raise NotFound(f"no graded results of system {system!r} on version {version}")
    return found


def _check_waivers(
    waivers: dict[str, str], regressions: list[str], ordinary: list[str], unsafe: list[str], info: dict
) -> dict[str, str]:
    """Waivers a lead may grant: named ordinary regressions, each with a reason; anything else refused."""
    for row_id, reason in waivers.items():
        if row_id in unsafe or (row_id in info and info[row_id]["adversarial"]):
            raise BadInput(f"row {row_id!r} is adversarial: safety takes no waiver")
        if row_id not in regressions:
            raise BadInput(f"row {row_id!r} did not flip pass→fail: there is nothing to waive")
        if not (reason or "").strip():
            raise BadInput(f"waiver of row {row_id!r} has no reason: say why it may ship")
    return {r: waivers[r].strip()[:500] for r in sorted(waivers) if r in ordinary}


def _criteria(
    verdict: dict, adversarial_rows: list[str], unsafe: list[str], ordinary: list[str]
) -> list[dict]:
    """The four named criteria, each with whether it holds and the facts behind it."""
    missing, adversarial = verdict["missing"], verdict["adversarial"]
    gaps = [f"{len(ids)} ungraded for {side} ({_listed(ids)})" for side, ids in missing.items() if ids]
    complete = {
        "name": "complete",
        "ok": not verdict["unpaired"],
        "detail": "; ".join(gaps) if gaps else f"all {verdict['paired']} active rows graded for both systems",
    }
    unsafe_missing = [r for r in adversarial_rows if r in verdict["unpaired"]]
    rate_text = "n/a" if adversarial["rate"] is None else f"{adversarial['rate']:.1%}"
    if not adversarial_rows:
        safety = "the version has no adversarial rows: safety is not shown"
    else:
        safety = (
            f"adversarial {adversarial['passed']}/{adversarial['total']} graded of {len(adversarial_rows)}"
            f" = {rate_text} against {adversarial['threshold']:.0%}"
        )
        if unsafe_missing:
            safety += f"; {len(unsafe_missing)} ungraded ({_listed(unsafe_missing)})"
        if unsafe:
            safety += f"; {len(unsafe)} flipped pass→fail ({_listed(unsafe)})"
    blocking = [r for r in ordinary if r not in verdict["waived"]]
    regress = f"{len(blocking)} rows the baseline passed fail for the challenger"
    regress += f" ({_listed(blocking)})" if blocking else ""
    if verdict["waived"]:
        regress += f"; {len(verdict['waived'])} waived ({_listed(list(verdict['waived']))})"
    flaky_ones = [r for r in verdict["regressions"] if r in verdict["flaky"] and r not in unsafe]
    if flaky_ones:
        regress += f"; {len(flaky_ones)} flaky, listed apart ({_listed(flaky_ones)})"
    base, chal = verdict["baseline"], verdict["challenger"]
    if base["rate"] is None or chal["rate"] is None:
        loss_ok, loss = False, "no paired rows: the pass rates cannot be compared"
    else:
        better = chal["passed"] > base["passed"]
        loss_ok = better if verdict["require_improvement"] else chal["passed"] >= base["passed"]
        word = "must be above" if verdict["require_improvement"] else "may not fall below"
        loss = (
            f"challenger {chal['passed']}/{chal['total']} = {chal['rate']:.1%} {word}"
            f" baseline {base['passed']}/{base['total']} = {base['rate']:.1%} on the paired rows"
        )
    return [
        complete,
        {"name": "safety", "ok": adversarial["ok"] and not unsafe, "detail": safety},
        {"name": "zero regressions", "ok": not blocking, "detail": regress},
        {"name": "no loss", "ok": loss_ok, "detail": loss},
    ]


def _listed(ids: list[str], most: int = 10) -> str:
    more = f" and {len(ids) - most} more" if len(ids) > most else ""
    return ", ".join(ids[:most]) + more


GATE_KEYS = (
    "verdict",
    "regressions",
    "improvements",
    "baseline",
    "challenger",
    "adversarial",
    "p_value",
    "criteria",
    "unpaired",
    "flaky",
    "waived",
)


def record_decision(db: Database, user: User, verdict: dict, now: datetime | None = None) -> int:
    """A lead records the gate's verdict as the release decision (a table row and the audit log).

    A shipped decision makes its challenger the live system from that moment on."""
    require_role(user, "lead")
    stamp = _stamp(now)
    row = {
        "version": verdict["version"],
        "baseline": verdict["baseline"]["system"],
        "challenger": verdict["challenger"]["system"],
        "verdict": verdict["verdict"],
        "criteria": json.dumps(verdict["criteria"], ensure_ascii=False),
        "waived": json.dumps(verdict["waived"], ensure_ascii=False),
        "unpaired": json.dumps(verdict["unpaired"]),
        "flaky": json.dumps(verdict["flaky"]),
        "adversarial_min": verdict["adversarial"]["threshold"],
        "require_improvement": int(verdict["require_improvement"]),
        "decided_by": user.name,
        "decided_at": stamp,
    }
    with write(db):
        decision = db.table("release_decisions").insert(row).last_pk
        assert decision is not None  # every insert into a rowid table has one
        audit(
            db,
            user.name,
            "release_decision",
            "release_decision",
            decision,
            version=row["version"],
            baseline=row["baseline"],
            challenger=row["challenger"],
            verdict=row["verdict"],
            criteria=verdict["criteria"],
            waived=verdict["waived"],
        )
    return decision


def release_decisions(db: Database, limit: int = 50) -> list[dict]:
    """Recorded release decisions, newest first, criteria and waivers decoded."""
    sql = "SELECT * FROM release_decisions ORDER BY decided_at DESC, id DESC LIMIT ?"
    rows = query_rows(db, sql, [limit])
    for row in rows:
        for key in ("criteria", "waived", "unpaired", "flaky"):
            row[key] = json.loads(row[key]) if row[key] else ({} if key == "waived" else [])
    return rows


def live_system(db: Database) -> dict | None:
    """The live system: the challenger of the newest shipped decision (with its version and time), or None."""
    return query_one(
        db,
        "SELECT challenger AS system, version, decided_at, decided_by, id AS decision FROM release_decisions"
        " WHERE verdict = 'ship' ORDER BY decided_at DESC, id DESC LIMIT 1",
    )


def parse_waivers(items: list[str]) -> dict[str, str]:
    """``ROW_ID=REASON`` pairs from the command line; a row waived twice or without a reason is refused."""
    waivers: dict[str, str] = {}
    for item in items:
        row_id, sep, reason = item.partition("=")
        if not sep or not row_id.strip() or not reason.strip():
            raise BadInput(f"waiver {item[:60]!r}: expected ROW_ID=REASON")
        if row_id.strip() in waivers:
            raise BadInput(f"row {row_id.strip()!r} is waived twice")
        waivers[row_id.strip()] = reason.strip()
    return waivers


def flipped_rows(db: Database, verdict: dict) -> list[dict]:
    """The gate's flipped rows with their scrubbed input, expected behaviour and both outputs."""
    version, base, chal = verdict["version"], verdict["baseline"]["system"], verdict["challenger"]["system"]
    out = []
    for direction, ids in (("pass→fail", verdict["regressions"]), ("fail→pass", verdict["improvements"])):
        for row_id in ids:
            row = query_one(
                db, "SELECT id, code, adversarial, input, expected FROM eval_rows WHERE id = ?", [row_id]
            )
            if row is None:
                raise NotFound(f"no eval row {row_id!r}")
            out.append(
                {
                    "row_id": row_id,
                    "flip": direction,
                    "blocks": row_id in verdict["blocking"],
                    "code": row["code"],
                    "adversarial": bool(row["adversarial"]),
                    "input": row["input"],
                    "expected": row["expected"],
                    "baseline_output": _last_output(db, version, base, row_id),
                    "challenger_output": _last_output(db, version, chal, row_id),
                }
            )
    return out


def _last_output(db: Database, version: int, system: str, row_id: str) -> str | None:
    row = db.execute(
        "SELECT e.output FROM eval_results e JOIN eval_runs r ON r.id = e.run_id"
        " WHERE r.version = ? AND r.system = ? AND e.row_id = ? ORDER BY e.id DESC LIMIT 1",
        [version, system, row_id],
    ).fetchone()
    return row[0] if row else None


# Demo ------------------------------------------------------------------------------------------------


def gate_summary(verdict: dict) -> str:
    """The gate's verdict for people: the two rates, then each criterion with its facts."""
    base, chal = verdict["baseline"], verdict["challenger"]

    def line(side: dict) -> str:
        value = "n/a" if side["rate"] is None else f"{side['rate']:.1%}"
        low, high = side["ci"]
        return f"{side['system']}: {side['passed']}/{side['total']} = {value} (95% CI {low:.1%}–{high:.1%})"

    lines = [
        f"{verdict['verdict'].upper()} on version {verdict['version']} ({verdict['paired']} paired rows)",
        f"baseline   {line(base)}",
        f"challenger {line(chal)}",
        f"pass→fail {len(verdict['regressions'])}, fail→pass {len(verdict['improvements'])},"
        f" exact McNemar p = {verdict['p_value']:.4g}",
        *(f"[{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}" for c in verdict["criteria"]),
    ]
    if verdict["flaky"]:
        lines.append(f"flaky (mixed results, listed apart): {_listed(verdict['flaky'])}")
    lines += [f"waived {row_id}: {reason}" for row_id, reason in verdict["waived"].items()]
    return "\n".join(lines)


def grade_result(db: Database, result_id: int, passed: bool, score: float | None, graded_by: str) -> None:
    """Record a grader's verdict on a stored result (the judge grading it); call inside its ``write``."""
    db.execute(
        "UPDATE eval_results SET passed = ?, score = ?, graded_by = ? WHERE id = ?",
        [int(passed), score, graded_by, result_id],
    )
