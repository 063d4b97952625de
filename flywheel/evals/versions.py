"""Eval sets: named lineages of immutable, numbered versions of eval rows.

A store holds one or more named sets (e.g. a frozen ``regression`` set beside a ``quality`` set
refreshed from production); each row belongs to one set. Version numbers are unique across the store,
so a version number alone names a version (a set's versions may read 1, 2, 5). A *frozen* set takes no
new version: nothing is folded in, edited, withdrawn or retired, and the database refuses it too.

A version is a snapshot of row ids, each ``active`` (read by exports and regression runs) or
``archived`` (retired, kept, exported only on request). A row's content never changes after it is
written; an edit is a new row that replaces the old one in the next version.

Rows come from a starter file, from failure labels, and from *coverage* labels: a trace the model
handled well that a labeler proposes to keep covered (a not-a-bug label with expected behaviour and
pass criterion). A row's pass criterion may carry a code check (``flywheel.labeling.checks``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import overload

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.csvfiles import BadRows, read_table
from flywheel.errors import BadInput, NotFound
from flywheel.labeling.checks import EXAMPLES, describe_check, dump_check, load_check, parse_check
from flywheel.labeling.labels import NOT_A_BUG, review_step, unreviewed_traces
from flywheel.store.audit import audit
from flywheel.store.clock import format_ts, now_utc
from flywheel.store.db import query_one, query_rows, write, write_chunks
from flywheel.traces.queries import approved_scrub, storable

ROW_STATES = ("active", "archived")
DEFAULT_SET = "default"
SET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def current_version(db: Database, eval_set: str | None = None) -> int | None:
    """The newest version of ``eval_set``, or None when it has none yet.

    Without a set: the newest version of the sets that are not frozen (the ones refreshed from
    production, which drift and the weekly cycle read), else of any set."""
    if eval_set is not None:
        row = query_one(db, "SELECT max(version) AS v FROM eval_versions WHERE eval_set = ?", [eval_set])
        return row["v"] if row else None
    row = query_one(
        db,
        "SELECT max(v.version) AS v FROM eval_versions v JOIN eval_sets s ON s.name = v.eval_set"
        " WHERE s.frozen = 0",
    )
    if row and row["v"] is not None:
        return row["v"]
    row = query_one(db, "SELECT max(version) AS v FROM eval_versions")
    return row["v"] if row else None


def eval_set_versions(db: Database, eval_set: str | None = None) -> list[dict]:
    """Every version (of every set, or of one), newest first, with its counts and set."""
    if eval_set is not None:
        sql = "SELECT * FROM eval_versions WHERE eval_set = ? ORDER BY version DESC"
        return query_rows(db, sql, [eval_set])
    return query_rows(db, "SELECT * FROM eval_versions ORDER BY version DESC")


# Named sets ------------------------------------------------------------------------------------------


def eval_sets(db: Database) -> list[dict]:
    """Every named set with its newest version and how many versions it has, by name."""
    return query_rows(
        db,
        """SELECT s.*, max(v.version) AS current, count(v.version) AS versions
           FROM eval_sets s LEFT JOIN eval_versions v ON v.eval_set = s.name
           GROUP BY s.name ORDER BY s.name""",
    )


def set_names(db: Database) -> list[str]:
    """The names of the store's eval sets."""
    return [r[0] for r in db.execute("SELECT name FROM eval_sets ORDER BY name")]


@overload
def resolve_set(db: Database, name: str) -> str: ...
@overload
def resolve_set(db: Database, name: str | None) -> str | None: ...
def resolve_set(db: Database, name: str | None) -> str | None:
    """The set a command acts on: ``name`` when it exists; without a name the one set there is (None
    when there is none yet). Several sets and no name is refused with the list of sets."""
    names = set_names(db)
    if name is not None:
        if name not in names:
            listed = ", ".join(names) if names else "none yet"
            raise NotFound(f"no eval set {name!r}; the sets are: {listed}")
        return name
    if len(names) > 1:
        raise BadInput(f"this store has {len(names)} eval sets ({', '.join(names)}): name one with --set")
    return names[0] if names else None


def version_set(db: Database, version: int) -> str:
    """The set a version belongs to."""
    row = query_one(db, "SELECT eval_set FROM eval_versions WHERE version = ?", [version])
    if row is None:
        raise NotFound(f"eval-set version {version} does not exist")
    return row["eval_set"]


def require_in_set(db: Database, version: int, eval_set: str | None) -> None:
    """Refuse a version that is not one of ``eval_set``'s (no check without a set)."""
    found = version_set(db, version)
    if eval_set is not None and found != eval_set:
        raise BadInput(f"version {version} belongs to eval set {found!r}, not {eval_set!r}")


def is_frozen(db: Database, eval_set: str) -> bool:
    """Whether a set is frozen."""
    row = query_one(db, "SELECT frozen FROM eval_sets WHERE name = ?", [eval_set])
    return bool(row and row["frozen"])


def create_eval_set(
    db: Database, user: User, name: str, note: str | None = None, now: datetime | None = None
) -> str:
    """A lead starts a new named set (empty until a file is imported or labels are folded into it)."""
    require_role(user, "lead")
    name = (name or "").strip()
    if not SET_NAME.fullmatch(name):
        raise BadInput(
            f"eval set name {name[:60]!r}: expected 1-40 of a-z, 0-9, '-', '_' (a letter or digit first)"
        )
    with write(db):
        if name in set_names(db):
            raise BadInput(f"eval set {name!r} already exists")
        _insert_set(db, user, name, note, _stamp(now))
    return name


def _insert_set(db: Database, user: User, name: str, note: str | None, stamp: str) -> None:
    note = (note or "").strip()[:MAX_FIELD] or None
    db.table("eval_sets").insert(
        {"name": name, "frozen": 0, "note": note, "created_by": user.name, "created_at": stamp}
    )
    audit(db, user.name, "create_eval_set", "eval_set", name, note=note)


def freeze_eval_set(db: Database, user: User, name: str, now: datetime | None = None) -> None:
    """A lead freezes a set for good: from now on nothing is folded in, edited, withdrawn or retired."""
    require_role(user, "lead")
    with write(db):
        name = resolve_set(db, name)
        if is_frozen(db, name):
            raise BadInput(f"eval set {name!r} is frozen already")
        if current_version(db, name) is None:
            raise BadInput(f"eval set {name!r} has no version yet: import or fold rows into it first")
        db.execute(
            "UPDATE eval_sets SET frozen = 1, frozen_by = ?, frozen_at = ? WHERE name = ?",
            [user.name, _stamp(now), name],
        )
        audit(db, user.name, "freeze_eval_set", "eval_set", name, version=current_version(db, name))


def _set_to_write(db: Database, user: User, name: str | None, stamp: str) -> str:
    """The set a new version goes into: ``name``, else the one set that is not frozen; the first
    version of a store starts its set (``default`` unless named). A frozen set is refused."""
    names = set_names(db)
    if not names:
        name = (name or DEFAULT_SET).strip()
        if not SET_NAME.fullmatch(name):
            raise BadInput(f"eval set name {name[:60]!r}: expected 1-40 of a-z, 0-9, '-', '_'")
        _insert_set(db, user, name, None, stamp)
        return name
    if name is None:
        return _only_open_set(db, names)
    name = resolve_set(db, name)
    _refuse_frozen(db, name)
    return name


def _only_open_set(db: Database, names: list[str]) -> str:
    """The one set that is not frozen, for a write that names none."""
    open_ = [n for n in names if not is_frozen(db, n)]
    if not open_:
        raise BadInput(f"every eval set is frozen ({', '.join(names)}): create a set to add rows to")
    if len(open_) > 1:
        raise BadInput(f"this store has {len(names)} eval sets ({', '.join(names)}): name one with --set")
    return open_[0]


def _refuse_frozen(db: Database, name: str, what: str = "takes no new version") -> None:
    if is_frozen(db, name):
        raise BadInput(f"eval set {name!r} is frozen: it {what}")


def version_rows(db: Database, version: int, include_archive: bool = False) -> list[dict]:
    """The rows of one version (active only unless ``include_archive``), by row id, with their state."""
    if query_one(db, "SELECT 1 AS x FROM eval_versions WHERE version = ?", [version]) is None:
        raise NotFound(f"eval-set version {version} does not exist")
    states = ROW_STATES if include_archive else ("active",)
    marks = ", ".join("?" for _ in states)
    return query_rows(
        db,
        f"""SELECT r.*, m.state FROM eval_version_rows m JOIN eval_rows r ON r.id = m.row_id
            WHERE m.version = ? AND m.state IN ({marks}) ORDER BY r.id""",
        [version, *states],
    )


def eval_runs(db: Database, version: int | None = None) -> list[dict]:
    """Regression runs (all, or of one version), newest first."""
    where, params = ("WHERE version = ?", [version]) if version is not None else ("", [])
    return query_rows(db, f"SELECT * FROM eval_runs {where} ORDER BY id DESC", params)


# Everything below builds versions: rows from labels or a starter file, fold-in, edits, diff.

ROW_ID = re.compile(r"r-\d{6,}")
ADVERSARIAL_KINDS = ("jailbreak", "prompt_injection", "policy_override")
IMPORT_FIELDS = ("input", "expected", "criterion", "check", "code", "adversarial", "tags", "id")
MAX_INPUT = 20_000
MAX_FIELD = 2_000
MAX_IMPORT_ROWS = 100_000
TRUE_WORDS = {"1", "true", "yes", "y"}
FALSE_WORDS = {"", "0", "false", "no", "n", "none"}


@dataclass(frozen=True)
class VersionChange:
    """What one new version did, as the fold-in and import commands report it."""

    version: int | None
    created: bool
    added: int
    retired: int
    carried: int
    rows: int
    changed: int = 0
    withdrawn: int = 0
    disagreements: int = 0
    left_out: int = 0
    blocked: int = 0
    already_imported: bool = False

    def as_json(self) -> dict:
        """The fold-in contract: ``{"version", "added", "retired", "carried", "rows"}``, plus
        ``"already_imported": true`` when the same suite file had made ``version`` before."""
        keys = ("version", "added", "retired", "carried", "rows")
        return {k: getattr(self, k) for k in keys} | (
            {"already_imported": True} if self.already_imported else {}
        )

    def summary(self) -> str:
        """One line for people."""
        if self.already_imported:
            return f"already imported: this file (same SHA-256) made version {self.version}; nothing stored"
        if not self.created:
            if self.version is None and not (self.left_out or self.blocked):
                return "nothing to fold in: no labeled failure on an approved scrub yet"
            stays = f"the eval set stays at version {self.version}" if self.version else "no version yet"
            return f"nothing to fold in; {stays}{self._waiting()}"
        extra = (
            f", {self.changed} changed, {self.withdrawn} withdrawn" if self.changed or self.withdrawn else ""
        )
        return (
            f"version {self.version}: {self.rows} active rows ({self.added} added, {self.carried} carried,"
            f" {self.retired} retired{extra}){self._waiting()}"
        )

    def _waiting(self) -> str:
        parts = [
            f"{self.left_out} left out" if self.left_out else "",
            f"{self.blocked} not foldable" if self.blocked else "",
            f"{self.disagreements} disagreements" if self.disagreements else "",
        ]
        listed = ", ".join(p for p in parts if p)
        return f"; {listed} wait for a lead" if listed else ""


def _stamp(moment: datetime | None) -> str:
    return format_ts(moment or now_utc())


def content_hash(row: dict) -> str:
    """A hash of what a row asks, so an unchanged row is carried and a changed one is new."""
    keys = ("input", "messages", "expected", "criterion", "code", "adversarial", "adversarial_kind", "tags")
    values = [row.get(k) for k in keys]
    # Added only when set, so rows written before coverage and checks existed keep their hashes.
    values += [[k, row[k]] for k in ("coverage", "pass_check") if row.get(k)]
    canonical = json.dumps(values, ensure_ascii=False)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def _next_row_ids(db: Database, count: int) -> list[str]:
    top = db.execute("SELECT max(CAST(substr(id, 3) AS INTEGER)) FROM eval_rows").fetchone()[0] or 0
    return [f"r-{top + n:06d}" for n in range(1, count + 1)]


def _insert_rows(db: Database, rows: list[dict], stamp: str) -> list[str]:
    ids = _next_row_ids(db, len(rows))
    for row_id, row in zip(ids, rows, strict=True):
        row.update(id=row_id, created_at=stamp, content_hash=content_hash(row))
    db.table("eval_rows").insert_all(rows)
    return ids


def version_members(db: Database, version: int | None) -> dict[str, str]:
    """Row id -> state (active, retired, ...) of every row in ``version``; none for no version."""
    if version is None:
        return {}
    return dict(db.execute("SELECT row_id, state FROM eval_version_rows WHERE version = ?", [version]))


def make_version(
    db: Database,
    user: User,
    kind: str,
    note: str | None,
    stamp: str,
    members: dict[str, str],
    counts: dict,
    eval_set: str,
) -> int:
    _refuse_frozen(db, eval_set)
    top = db.execute("SELECT max(version) FROM eval_versions").fetchone()[0]
    version = (top or 0) + 1
    active = sum(state == "active" for state in members.values())
    db.table("eval_versions").insert(
        {
            "version": version,
            "eval_set": eval_set,
            "kind": kind,
            "note": (note or "").strip()[:MAX_FIELD] or None,
            "created_by": user.name,
            "created_at": stamp,
            "rows": active,
            **counts,
        }
    )
    db.table("eval_version_rows").insert_all(
        {"version": version, "row_id": row_id, "state": state} for row_id, state in sorted(members.items())
    )
    retiring = [r for r, s in members.items() if s == "archived"]
    if retiring:
        marks = ",".join("?" * len(retiring))
        db.execute(
            "UPDATE eval_retirements SET left_version = ?"
            f" WHERE left_version IS NULL AND row_id IN ({marks})",
            [version, *retiring],
        )
    audit(db, user.name, kind, "eval_version", version, eval_set=eval_set, note=note, rows=active, **counts)
    return version


def _apply_pending(db: Database, members: dict[str, str]) -> tuple[int, int]:
    """Apply confirmed retirements and row edits to a new membership; return (retired, changed)."""
    retired = 0
    for (row_id,) in db.execute("SELECT row_id FROM eval_retirements WHERE left_version IS NULL").fetchall():
        if members.get(row_id) == "active":
            members[row_id] = "archived"
            retired += 1
    changed = 0
    edits = db.execute(
        "SELECT id, replaces FROM eval_rows r WHERE replaces IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM eval_version_rows m WHERE m.row_id = r.id) ORDER BY id"
    ).fetchall()
    for new_id, old_id in edits:
        if members.get(old_id) == "active":
            del members[old_id]
            members[new_id] = "active"
            changed += 1
    return retired, changed


# Import of a starter suite ---------------------------------------------------------------------------


def import_evalset(
    db: Database,
    user: User,
    data: bytes,
    name: str,
    note: str | None = None,
    now: datetime | None = None,
    eval_set: str | None = None,
) -> VersionChange:
    """Import a starter suite (CSV or JSONL bytes) as a new version of ``eval_set`` (see
    ``_set_to_write`` for the default); a bad row refuses the whole file."""
    require_role(user, "lead")
    rows = parse_suite(data, name)
    stamp = _stamp(now)
    digest = hashlib.sha256(data).hexdigest()
    with write(db):
        eval_set = _set_to_write(db, user, eval_set, stamp)
        done = query_one(
            db,
            "SELECT version, rows FROM eval_versions WHERE source_sha256 = ? AND eval_set = ?"
            " ORDER BY version",
            [digest, eval_set],
        )
    if done:  # a retry after a kill that landed just after the commit imports nothing twice
        return VersionChange(done["version"], False, 0, 0, 0, done["rows"], already_imported=True)
    for row in rows:
        row.update(source="import", source_file=Path(name).name, labeled_by=user.name, labeled_at=stamp)
        row["eval_set"] = eval_set
    # Rows no version names yet are read by nobody, so they go in chunks that leave room for other
    # users' changes; the version that links them in is one short write. A failed import leaves them
    # unlinked (rows are never deleted).
    inserted: list[str] = []
    write_chunks(db, rows, lambda db, chunk: inserted.extend(_insert_rows(db, chunk, stamp)))
    with write(db):
        members = version_members(db, current_version(db, eval_set))
        carried = sum(state == "active" for state in members.values())
        for row_id in inserted:
            members[row_id] = "active"
        retired, changed = _apply_pending(db, members)
        added, kept = len(rows) + changed, carried - retired - changed
        counts: dict[str, object] = {"added": added, "retired": retired, "carried": kept, "changed": changed}
        counts.update(withdrawn=0, source_sha256=digest)
        note = note or f"starter suite {Path(name).name}"
        version = make_version(db, user, "import", note, stamp, members, counts, eval_set)
    return VersionChange(version, True, added, retired, kept, _active(members), changed)


def import_evalset_file(
    db: Database,
    user: User,
    path: str | Path,
    note: str | None = None,
    now: datetime | None = None,
    eval_set: str | None = None,
) -> VersionChange:
    """Import a starter-suite file from disk."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BadInput(f"cannot read {str(path)!r}: {error.strerror}") from None
    return import_evalset(db, user, data, path.name, note, now, eval_set)


def _active(members: dict[str, str]) -> int:
    return sum(state == "active" for state in members.values())


def parse_suite(data: bytes, name: str) -> list[dict]:
    """Rows of a starter-suite file as eval-row fields; raise BadRows listing every bad line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInput(f"{name}: not UTF-8 (byte {error.start})") from None
    records = _csv_records(text, name) if name.lower().endswith(".csv") else jsonl_records(text)
    rows, problems = [], []
    seen: dict[str, int] = {}
    for line, record in records:
        try:
            row = _suite_row(record)
            if row["external_id"] is not None:
                if row["external_id"] in seen:
                    raise BadInput(f"id {row['external_id']!r} already on line {seen[row['external_id']]}")
                seen[row["external_id"]] = line
            row["source_line"] = line
            rows.append(row)
        except BadInput as error:
            problems.append((line, str(error)))
    if problems:
        raise BadRows(name, problems)
    if not rows:
        raise BadInput(f"{name}: no rows; expected at least one line with an 'input'")
    if len(rows) > MAX_IMPORT_ROWS:
        raise BadInput(f"{name}: {len(rows):,} rows; expected at most {MAX_IMPORT_ROWS:,}")
    return rows


def _csv_records(text: str, name: str) -> Sequence[tuple[int, object]]:
    def check(header: list[str]) -> None:
        unknown = [f for f in header if f not in IMPORT_FIELDS]
        if "input" not in header or unknown:
            raise BadInput(
                f"header {header!r}: expected an 'input' column and only {', '.join(IMPORT_FIELDS)}"
            )

    return read_table(text, name, key="id", check_header=check).rows


def jsonl_records(text: str) -> list[tuple[int, object]]:
    """(line, object) for each non-blank line of a suite or results JSONL text; a line that is not JSON
    gives (line, BadInput), so the caller refuses the file naming every bad line."""
    records = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            records.append((line, json.loads(raw)))
        except json.JSONDecodeError as error:
            records.append((line, BadInput(f"not JSON: {error.msg}")))
        except RecursionError:
            records.append((line, BadInput("not JSON we read: nested too deeply")))
    return records


def _suite_row(record: object) -> dict:
    if isinstance(record, BadInput):
        raise record
    if not isinstance(record, dict):
        raise BadInput("not a JSON object")
    unknown = sorted(set(record) - set(IMPORT_FIELDS))
    if unknown:
        raise BadInput(f"unknown fields {', '.join(map(repr, unknown))}; expected {', '.join(IMPORT_FIELDS)}")
    for key, value in record.items():
        if isinstance(value, str) and not storable(value):
            raise BadInput(f"'{key}' holds a lone surrogate (text that is not UTF-8): it cannot be stored")
    text = record.get("input")
    if not isinstance(text, str) or not text.strip():
        raise BadInput("'input' is missing or empty")
    if len(text) > MAX_INPUT:
        raise BadInput(f"'input' is {len(text):,} characters; expected at most {MAX_INPUT:,}")
    flag, kind = _adversarial(record.get("adversarial"))
    external = record.get("id")
    return {
        "external_id": None if external in (None, "") else _short(str(external), "id"),
        "input": text,
        "messages": None,
        "expected": _optional(record, "expected"),
        "criterion": _optional(record, "criterion"),
        "code": _optional(record, "code"),
        "adversarial": flag,
        "adversarial_kind": kind,
        "tags": json.dumps(_tags(record.get("tags"))),
        "pass_check": dump_check(parse_check(record.get("check"))),
    }


def _optional(record: dict, key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"'{key}' must be text, got {type(value).__name__}")
    return _short(value.strip(), key) or None


def _short(value: str, key: str) -> str:
    if len(value) > MAX_FIELD:
        raise BadInput(f"'{key}' is {len(value):,} characters; expected at most {MAX_FIELD:,}")
    return value


def _adversarial(value: object) -> tuple[int, str | None]:
    if value is None or isinstance(value, bool):
        return int(bool(value)), None
    if isinstance(value, int) and value in (0, 1):
        return value, None
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return 1, None
    if word in FALSE_WORDS:
        return 0, None
    if word in ADVERSARIAL_KINDS:
        return 1, word
    raise BadInput(
        f"'adversarial' {str(value)[:40]!r}: expected true/false or one of {', '.join(ADVERSARIAL_KINDS)}"
    )


def _tags(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [t for t in (part.strip() for part in value.split(",")) if t]
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise BadInput("'tags' must be a list of strings or comma-separated text")
    return [_short(t.strip(), "tag") for t in value if t.strip()]


# Fold-in of labeled failures ------------------------------------------------------------------------

LIVE_LABELS = """
    SELECT l.id, l.trace_id, l.batch_id, l.labeler, l.kind, l.code, l.expected, l.pass_criterion,
           l.adversarial, l.created_at, coalesce(l.coverage, 0) AS coverage, l.pass_check
    FROM labels l WHERE l.undone_at IS NULL ORDER BY l.trace_id, l.id"""


def _labels_by_trace(db: Database) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for label in query_rows(db, LIVE_LABELS):
        grouped.setdefault(label["trace_id"], []).append(label)
    return grouped


def _verdict(label: dict) -> tuple:
    # Not a bug, with or without a coverage proposal, is one verdict: the trace was handled well.
    return ("not_a_bug",) if label["kind"] == NOT_A_BUG else (label["code"], label["adversarial"])


def _makes_row(label: dict) -> bool:
    """A failure label makes a row; a not-a-bug label only when it proposes coverage."""
    return label["kind"] != NOT_A_BUG or bool(label["coverage"])


def _agreed(db: Database, trace_id: str, labels: list[dict]) -> tuple[list[dict] | None, bool]:
    """The labels a row is built from (None: no row) and whether the labelers disagree unsettled.

    Labelers who agree a trace is not a bug agree whether or not each proposes it as coverage; its
    row is built from those who do."""
    settled = query_one(db, "SELECT label_id FROM eval_settlements WHERE trace_id = ?", [trace_id])
    if settled is not None:
        chosen = [label for label in labels if label["id"] == settled["label_id"]]
        if chosen or settled["label_id"] is None:
            return (chosen if chosen and _makes_row(chosen[0]) else None), False
    verdicts = {_verdict(label) for label in labels}
    if len(verdicts) > 1:
        return None, True
    return [label for label in labels if _makes_row(label)] or None, False


def disagreements(db: Database) -> list[dict]:
    """Traces whose labelers disagree (code, not-a-bug or adversarial tag) and no lead has settled."""
    out = []
    for trace_id, labels in _labels_by_trace(db).items():
        _, open_ = _agreed(db, trace_id, labels)
        if open_:
            out.append(
                {
                    "trace_id": trace_id,
                    "labels": [
                        {k: label[k] for k in ("id", "labeler", "kind", "code", "adversarial", "expected")}
                        for label in labels
                    ],
                }
            )
    return out


def settle_disagreement(
    db: Database, user: User, trace_id: str, label_id: int | None, now: datetime | None = None
) -> None:
    """A lead settles a disagreement: fold the label ``label_id``, or keep the trace out (None)."""
    require_role(user, "lead")
    with write(db):
        if label_id is not None:
            label = query_one(
                db,
                "SELECT id FROM labels WHERE id = ? AND trace_id = ? AND undone_at IS NULL",
                [label_id, trace_id],
            )
            if label is None:
                raise NotFound(f"no live label {label_id} on trace {trace_id!r}")
        db.table("eval_settlements").upsert(
            {"trace_id": trace_id, "label_id": label_id, "settled_by": user.name, "settled_at": _stamp(now)},
            pk="trace_id",
        )
        audit(db, user.name, "settle_disagreement", "trace", trace_id, label_id=label_id)


def _row_from_labels(db: Database, trace_id: str, labels: list[dict], eval_set: str) -> dict | None:
    """An eval row from agreed labels and the trace's approved scrub; None when the scrub is not approved."""
    scrub_id = db.execute(
        "SELECT id FROM scrubs WHERE trace_id = ? AND status = 'approved'", [trace_id]
    ).fetchone()
    if scrub_id is None:
        return None
    scrub = approved_scrub(db, trace_id)
    # Agreeing labelers may word the expected behaviour differently; one who wrote it all out is preferred.
    first = next((label for label in labels if _missing_fields(_label_fields(label)) is None), labels[0])
    tag = first["adversarial"]
    return {
        "input": scrub["input"],
        "messages": json.dumps(scrub["messages"], ensure_ascii=False) if scrub["messages"] else None,
        "expected": first["expected"],
        "criterion": first["pass_criterion"],
        "code": first["code"],
        "adversarial": int(tag != "none"),
        "adversarial_kind": None if tag == "none" else tag,
        "tags": json.dumps(sorted({f"label:{_label_word(label)}" for label in labels})),
        "coverage": 1 if first["kind"] == NOT_A_BUG else None,
        "pass_check": first["pass_check"],
        "source": "trace",
        "trace_id": trace_id,
        "scrub_id": scrub_id[0],
        "labeled_by": ",".join(sorted({label["labeler"] for label in labels})),
        "labeled_at": max(label["created_at"] for label in labels),
        "replaces": None,
        "eval_set": eval_set,
    }


def _label_word(label: dict) -> str:
    return "coverage" if label["kind"] == NOT_A_BUG else label["kind"]


def _label_fields(label: dict) -> dict:
    return {"expected": label["expected"], "criterion": label["pass_criterion"]}


def _missing_fields(row: dict) -> str | None:
    """Why a row built from labels has nothing to test, or None when it has."""
    names = {"expected": "expected behaviour", "criterion": "pass criterion"}
    missing = [name for key, name in names.items() if not (row.get(key) or "").strip()]
    return f"the label has no {' and no '.join(missing)}" if missing else None


def adversarial_text(row: dict) -> str:
    """A row's adversarial tag in one word: its kind, "yes" when untyped, "none"."""
    return row.get("adversarial_kind") or ("yes" if row.get("adversarial") else "none")


class StalePreview(BadInput):
    """The rows a fold-in would write changed since the preview a lead confirmed."""


@dataclass(frozen=True)
class FoldItem:
    """One thing a fold-in would do, as the preview shows it and the fold applies it.

    ``action``: add (a new row from a trace's labels), change (a row replacing ``replaces``: new labels
    or a lead's edit), retire or withdraw (``row_id``). An item that is not ``foldable`` says why in
    ``blocked`` and is never folded. ``left_out`` is the last time a lead left this item out of a fold.
    ``coverage``: the row covers a trace the model handled well (not a failure); ``check``: its pass
    criterion's code check, written ``TYPE: VALUE``.
    """

    key: str
    action: str
    trace_id: str | None
    row_id: str | None
    replaces: str | None
    input: str
    expected: str | None
    criterion: str | None
    code: str | None
    adversarial: str
    labeled_by: str | None
    labelers: int
    agreement: str | None
    foldable: bool = True
    blocked: str | None = None
    reason: str | None = None
    left_out: dict | None = None
    row: dict | None = field(default=None, repr=False)
    coverage: bool = False
    check: str | None = None

    def as_dict(self) -> dict:
        """The item as the page and the command line show it."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("row", "left_out")}
        before = self.left_out or {}
        out.update(
            left_out_reason=before.get("reason"),
            left_out_by=before.get("left_by"),
            left_out_at=before.get("left_at"),
        )
        return out


@dataclass(frozen=True)
class FoldPreview:
    """What a fold-in would do now. ``fingerprint`` names exactly these items, so a fold confirmed on
    this preview can refuse to write anything else."""

    after: int | None
    items: tuple[FoldItem, ...]
    disagreements: int
    fingerprint: str
    eval_set: str = DEFAULT_SET

    @property
    def foldable(self) -> list[FoldItem]:
        """The items a fold would apply (before any is left out)."""
        return [item for item in self.items if item.foldable]

    @property
    def blocked(self) -> list[FoldItem]:
        """The items shown but never folded, each with its reason."""
        return [item for item in self.items if not item.foldable]

    def count(self, action: str) -> int:
        """How many foldable items do ``action``."""
        return sum(item.action == action for item in self.foldable)

    def as_json(self) -> dict:
        """``{"after_version", "fingerprint", "disagreements", "items": [...]}``."""
        return {
            "after_version": self.after,
            "fingerprint": self.fingerprint,
            "disagreements": self.disagreements,
            "items": [item.as_dict() for item in self.items],
        }

    def summary(self) -> str:
        """One line for people."""
        if not self.foldable:
            head = "nothing to fold in"
        else:
            head = ", ".join(f"{self.count(a)} to {a}" for a in FOLD_ACTIONS if self.count(a))
        blocked = f"; {len(self.blocked)} not foldable" if self.blocked else ""
        return f"{head}{blocked} (preview {self.fingerprint})"


FOLD_ACTIONS = ("add", "change", "retire", "withdraw")


def fold_preview(db: Database, batches: list[int] | None = None, eval_set: str | None = None) -> FoldPreview:
    """What ``fold_in`` would do now, without doing it: the very items it applies.

    Agreed failure labels on approved scrubs that are not rows yet are added; a trace whose labels changed
    gets a row replacing its old one; a row whose scrub was reopened, or whose labels were undone or
    turned into "not a bug", is withdrawn; confirmed retirements move to the archive; a lead's pending
    edits replace their rows. A label without expected behaviour or pass criterion, and a trace its
    labelers disagree on, are shown as not foldable. ``batches`` limits new rows to those sample batches.
    Coverage labels (not a bug, handled well) are added like failures. ``eval_set``: the set folded into
    (default: the one set not frozen); a frozen set is refused.
    """
    eval_set = _set_to_fold(db, eval_set)
    previous = current_version(db, eval_set)
    members = version_members(db, previous)
    items, disputed = _trace_items(db, members, batches, eval_set)
    simulated = dict(members)
    for item in items:
        if item.action == "withdraw":
            del simulated[item.row_id]
        elif item.action == "change" and item.foldable:
            del simulated[item.replaces]
    items += _retire_items(db, simulated) + _edit_items(db, simulated)
    basis = [previous, [[i.key, i.foldable, i.row_id, i.replaces, _item_hash(i)] for i in items]]
    fingerprint = hashlib.blake2b(json.dumps(basis).encode(), digest_size=8).hexdigest()
    before = {
        r["item"]: r
        for r in query_rows(
            db, "SELECT * FROM eval_leave_outs WHERE coalesce(eval_set, ?) = ? ORDER BY id", [eval_set] * 2
        )
    }
    items = [replace(item, left_out=before.get(item.key)) for item in items]
    return FoldPreview(previous, tuple(items), disputed, fingerprint, eval_set)


def _set_to_fold(db: Database, name: str | None) -> str:
    """The set a fold reads and writes; a store without a set yet folds into ``default``."""
    if not set_names(db):
        return (name or DEFAULT_SET).strip()
    if name is None:
        return _only_open_set(db, set_names(db))
    name = resolve_set(db, name)
    _refuse_frozen(db, name, "takes no new rows: fold into a set that is not frozen")
    return name


def _item_hash(item: FoldItem) -> str | None:
    return content_hash(item.row) if item.row is not None else None


def _trace_items(
    db: Database, members: dict[str, str], batches: list[int] | None, eval_set: str
) -> tuple[list, int]:
    """Items from traces' labels: rows to add, to change and to withdraw; and the open disagreements."""
    by_trace = _trace_rows(db, members)
    settled = dict(db.execute("SELECT trace_id, settled_by FROM eval_settlements"))
    withdrawn = set(
        db.execute(
            "SELECT w.trace_id, r.content_hash FROM eval_withdrawals w JOIN eval_rows r ON r.id = w.row_id"
            " WHERE w.source = 'withdraw' AND coalesce(r.eval_set, ?) = ?",
            [eval_set, eval_set],
        ).fetchall()
    )
    items, open_ = [], 0
    grouped = _labels_by_trace(db)
    # with the lead's review step on, a trace waits (neither added, changed nor withdrawn) until a lead
    # has accepted or corrected every live label on it
    waiting = unreviewed_traces(db) if review_step(db) else set()
    for trace_id in sorted((set(grouped) | set(by_trace)) - waiting):
        labels = grouped.get(trace_id, [])
        agreed, disputed = _agreed(db, trace_id, labels)
        open_ += disputed
        current = by_trace.get(trace_id)
        if current is not None and current["state"] == "archived":
            continue
        in_scope = batches is None or any(label["batch_id"] in batches for label in labels)
        agreement = _agreement(labels, disputed, settled.get(trace_id))
        if current is None:
            source = [label for label in labels if label["kind"] != NOT_A_BUG] if disputed else agreed
            row = _row_from_labels(db, trace_id, source, eval_set) if source and in_scope else None
            if row is None or (trace_id, content_hash(row)) in withdrawn:
                continue  # a row a lead withdrew comes back only when its labels say something new
            blocked = "its labelers disagree: settle it first" if disputed else _missing_fields(row)
            items.append(_label_item("add", row, labels, agreement, blocked))
            continue
        row = _row_from_labels(db, trace_id, agreed, eval_set) if agreed else None
        if row is None and not disputed:
            reason = _withdraw_reason(labels, agreed, settled.get(trace_id))
            items.append(_row_item("withdraw", eval_row(db, current["id"]), reason))
        elif row is not None and in_scope and content_hash(row) != current["content_hash"]:
            row["replaces"] = current["id"]
            items.append(_label_item("change", row, labels, agreement, _missing_fields(row)))
    return items, open_


def _agreement(labels: list[dict], disputed: bool, settled_by: str | None) -> str:
    count = len({label["labeler"] for label in labels})
    if disputed:
        return f"{count} labelers disagree"
    if settled_by:
        return f"settled by {settled_by}"
    return "1 labeler" if count == 1 else f"{count} labelers agree"


def _withdraw_reason(labels: list[dict], agreed: list[dict] | None, settled_by: str | None) -> str:
    if not labels:
        return "its labels were undone"
    if agreed is None:
        if settled_by:
            return f"{settled_by} settled to keep it out"
        return "its labels now say not a bug, and none proposes it as coverage"
    return "its scrub is no longer approved"


def _label_item(action: str, row: dict, labels: list[dict], agreement: str, blocked: str | None) -> FoldItem:
    return FoldItem(
        key=f"{action} {row['trace_id']}",
        action=action,
        trace_id=row["trace_id"],
        row_id=None,
        replaces=row["replaces"],
        input=row["input"],
        expected=row["expected"],
        criterion=row["criterion"],
        code=row["code"],
        adversarial=adversarial_text(row),
        labeled_by=row["labeled_by"],
        labelers=len({label["labeler"] for label in labels}),
        agreement=agreement,
        foldable=blocked is None,
        blocked=blocked,
        row=row,
        coverage=bool(row.get("coverage")),
        check=_check_text(row),
    )


def _check_text(row: dict) -> str | None:
    return describe_check(load_check(row.get("pass_check"))) or None


def _row_item(action: str, row: dict, reason: str | None, key: str | None = None) -> FoldItem:
    """An item about a row already written: one to retire or withdraw, or a lead's edit."""
    return FoldItem(
        key=key or f"{action} {row['id']}",
        action=action,
        trace_id=row["trace_id"],
        row_id=row["id"],
        replaces=row["replaces"] if action == "change" else None,
        input=row["input"],
        expected=row["expected"],
        criterion=row["criterion"],
        code=row["code"],
        adversarial=adversarial_text(row),
        labeled_by=row["labeled_by"],
        labelers=len((row["labeled_by"] or "").split(",")) if row["labeled_by"] else 0,
        agreement=None,
        reason=reason,
        coverage=bool(row.get("coverage")),
        check=_check_text(row),
    )


def _retire_items(db: Database, simulated: dict[str, str]) -> list[FoldItem]:
    items = []
    pending = query_rows(
        db,
        "SELECT row_id, reason, confirmed_by FROM eval_retirements"
        " WHERE left_version IS NULL ORDER BY row_id",
    )
    for retirement in pending:
        if simulated.get(retirement["row_id"]) == "active":
            simulated[retirement["row_id"]] = "archived"
            reason = f"{retirement['reason'] or 'confirmed'} (confirmed by {retirement['confirmed_by']})"
            items.append(_row_item("retire", eval_row(db, retirement["row_id"]), reason))
    return items


def _edit_items(db: Database, simulated: dict[str, str]) -> list[FoldItem]:
    items = []
    edits = query_rows(
        db,
        "SELECT * FROM eval_rows r WHERE replaces IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM eval_version_rows m WHERE m.row_id = r.id) ORDER BY id",
    )
    for row in edits:
        if simulated.get(row["replaces"]) == "active":
            del simulated[row["replaces"]]
            simulated[row["id"]] = "active"
            items.append(_row_item("change", row, f"edited by {row['labeled_by']}", key=f"edit {row['id']}"))
    return items


def fold_in(
    db: Database,
    user: User,
    note: str | None = None,
    batches: list[int] | None = None,
    now: datetime | None = None,
    *,
    fingerprint: str | None = None,
    leave_out: dict[str, str] | None = None,
    eval_set: str | None = None,
) -> VersionChange:
    """Apply the fold-in preview as a new immutable version of ``eval_set``, in one transaction.

    ``fingerprint``: the preview the lead confirmed; when what a fold would write differs from it, the
    fold is refused (StalePreview). ``leave_out``: preview item keys to leave out, each with its reason;
    they stay waiting and are recorded. Items that are not foldable never fold.
    """
    require_role(user, "lead")
    reasons = _leave_out_reasons(leave_out or {})
    stamp = _stamp(now)
    with write(db):
        plan = fold_preview(db, batches, eval_set)
        if fingerprint is not None and fingerprint != plan.fingerprint:
            raise StalePreview(
                f"the fold-in preview {fingerprint!r} is out of date (now {plan.fingerprint!r}):"
                " rows changed since it was read; read the preview again"
            )
        keys = {item.key for item in plan.items}
        unknown = [key for key in reasons if key not in keys]
        if unknown:
            raise BadInput(f"not in the fold-in preview: {', '.join(map(repr, unknown[:10]))}")
        folding = [item for item in plan.foldable if item.key not in reasons]
        members = version_members(db, plan.after)
        version, counts = None, {}
        if folding:
            target = _set_to_write(db, user, plan.eval_set, stamp)
            counts = _apply_items(db, members, folding, stamp, plan.after)
            version = make_version(db, user, "fold_in", note, stamp, members, counts, target)
            _record_withdrawals(db, user, [i for i in folding if i.action == "withdraw"], stamp, version)
        _record_leave_outs(db, user, plan, reasons, stamp, version)
    disagreements, left_out, blocked = plan.disagreements, len(reasons), len(plan.blocked)
    if version is None:
        active = _active(members)
        return VersionChange(
            plan.after,
            False,
            0,
            0,
            active,
            active,
            disagreements=disagreements,
            left_out=left_out,
            blocked=blocked,
        )
    return VersionChange(
        version,
        True,
        counts["added"],
        counts["retired"],
        counts["carried"],
        _active(members),
        counts["changed"],
        counts["withdrawn"],
        disagreements=disagreements,
        left_out=left_out,
        blocked=blocked,
    )


def _leave_out_reasons(leave_out: dict[str, str]) -> dict[str, str]:
    reasons = {}
    for key, reason in leave_out.items():
        text = (reason or "").strip()
        if not text:
            raise BadInput(f"leaving out {key!r} needs a reason")
        reasons[key] = _short(text, "reason")
    return reasons


def _apply_items(
    db: Database, members: dict[str, str], items: list[FoldItem], stamp: str, previous: int | None
) -> dict:
    """Apply preview items to a membership (in place) and write their new rows; return the counts."""
    before = dict(members)
    for item in items:
        if item.action == "withdraw":
            assert item.row_id is not None  # a withdrawal names the row it takes out
            del members[item.row_id]
        elif item.action == "retire":
            assert item.row_id is not None  # a retirement names the row it archives
            members[item.row_id] = "archived"
        elif item.action == "change":
            assert item.replaces is not None  # a change names the row it replaces
            del members[item.replaces]
            if item.row is None:  # a lead's edit: its row is written already
                assert item.row_id is not None
                members[item.row_id] = "active"
    written = [dict(item.row) for item in items if item.row is not None]
    for row_id in _insert_rows(db, written, stamp):
        members[row_id] = "active"
    done = {action: sum(item.action == action for item in items) for action in FOLD_ACTIONS}
    carried = sum(state == "active" and before.get(r) == "active" for r, state in members.items())
    return {
        "added": done["add"] + done["change"],
        "retired": done["retire"],
        "carried": carried,
        "changed": done["change"],
        "withdrawn": done["withdraw"],
    }


def _record_withdrawals(db: Database, user: User, items: list[FoldItem], stamp: str, version: int) -> None:
    for item in items:
        assert item.row_id is not None and item.reason is not None  # a withdrawal item has both
        record_withdrawal(db, user, item.row_id, item.trace_id, item.reason, "fold_in", stamp, version)


def record_withdrawal(
    db: Database,
    user: User,
    row_id: str,
    trace_id: str | None,
    reason: str,
    source: str,
    stamp: str,
    version: int,
) -> None:
    db.table("eval_withdrawals").insert(
        {
            "row_id": row_id,
            "trace_id": trace_id,
            "reason": reason,
            "source": source,
            "withdrawn_by": user.name,
            "withdrawn_at": stamp,
            "version": version,
        }
    )
    audit(db, user.name, "withdraw_eval_row", "eval_row", row_id, reason=reason, version=version, via=source)


def _record_leave_outs(
    db: Database, user: User, plan: FoldPreview, reasons: dict[str, str], stamp: str, version: int | None
) -> None:
    items = {item.key: item for item in plan.items}
    for key, reason in reasons.items():
        item = items[key]
        row_id = item.row_id or item.replaces
        db.table("eval_leave_outs").insert(
            {
                "item": key,
                "action": item.action,
                "trace_id": item.trace_id,
                "row_id": row_id,
                "reason": reason,
                "left_by": user.name,
                "left_at": stamp,
                "after_version": plan.after,
                "fold_version": version,
                "eval_set": plan.eval_set,
            }
        )
        entity, entity_id = ("trace", item.trace_id) if item.trace_id else ("eval_row", row_id)
        audit(db, user.name, "leave_out", entity, entity_id, item=key, reason=reason, fold_version=version)


def withdraw_row(
    db: Database,
    user: User,
    row_id: str,
    reason: str,
    now: datetime | None = None,
    eval_set: str | None = None,
) -> VersionChange:
    """A lead withdraws a bad row: a new version of its set without it, with the reason recorded.
    A row of a frozen set is never withdrawn; ``eval_set``, when given, must be the row's set."""
    require_role(user, "lead")
    text = _short((reason or "").strip(), "reason")
    if not text:
        raise BadInput(f"withdrawing {row_id!r} needs a reason")
    stamp = _stamp(now)
    with write(db):
        row = eval_row(db, row_id)
        home = _row_set(db, row, eval_set)
        _refuse_frozen(db, home, f"is never changed: row {row_id!r} cannot be withdrawn")
        previous = current_version(db, home)
        members = version_members(db, previous)
        _require_active(db, row_id, members.get(row_id), previous)
        del members[row_id]
        active = _active(members)
        counts = {"added": 0, "retired": 0, "carried": active, "changed": 0, "withdrawn": 1}
        note = f"withdrew {row_id}: {text}"
        version = make_version(db, user, "withdraw", note, stamp, members, counts, home)
        record_withdrawal(db, user, row_id, row["trace_id"], text, "withdraw", stamp, version)
    return VersionChange(version, True, 0, 0, active, active, 0, 1)


def _row_set(db: Database, row: dict, eval_set: str | None) -> str:
    """The set a row belongs to; refused when the caller named another."""
    home = row["eval_set"] or DEFAULT_SET
    if eval_set is not None:
        resolve_set(db, eval_set)
        if eval_set != home:
            raise BadInput(f"row {row['id']!r} belongs to eval set {home!r}, not {eval_set!r}")
    return home


def _require_active(db: Database, row_id: str, state: str | None, version: int | None) -> None:
    if state == "active":
        return
    if state == "archived":
        raise BadInput(f"row {row_id!r} is retired (in the archive of version {version}), not active")
    gone = query_one(db, "SELECT version, reason FROM eval_withdrawals WHERE row_id = ?", [row_id])
    if gone is not None:
        raise BadInput(f"row {row_id!r} was already withdrawn in version {gone['version']}: {gone['reason']}")
    raise BadInput(f"row {row_id!r} is not in the current version ({version or 'none yet'})")


def _trace_rows(db: Database, members: dict[str, str]) -> dict[str, dict]:
    """The row of each trace in a membership, with its state."""
    rows = {}
    for row in query_rows(db, "SELECT id, trace_id, content_hash FROM eval_rows WHERE trace_id IS NOT NULL"):
        if row["id"] in members:
            rows[row["trace_id"]] = {**row, "state": members[row["id"]]}
    return rows


# Edits, lookups and diffs ------------------------------------------------------------------------------


def edit_row(db: Database, user: User, row_id: str, now: datetime | None = None, **changes: object) -> str:
    """Write a new row replacing ``row_id`` with some fields changed; it enters the next version of its
    set. ``pass_check`` takes a code check in its written form (None or "" removes it). A row of a
    frozen set is never edited."""
    require_role(user, "lead")
    allowed = {"expected", "criterion", "code", "adversarial", "adversarial_kind", "tags", "pass_check"}
    if not changes or set(changes) - allowed:
        raise BadInput(f"edit fields {sorted(changes)!r}: expected some of {', '.join(sorted(allowed))}")
    if "pass_check" in changes:
        written = changes["pass_check"]
        if written is not None and not isinstance(written, (str, dict)):
            raise BadInput(f"code check {str(written)[:40]!r}: expected text such as {EXAMPLES}")
        changes["pass_check"] = dump_check(parse_check(written))
    stamp = _stamp(now)
    with write(db):
        old = query_one(db, "SELECT * FROM eval_rows WHERE id = ?", [row_id])
        if old is None:
            raise NotFound(f"no eval row {row_id!r}")
        _refuse_frozen(
            db, old["eval_set"] or DEFAULT_SET, f"is never changed: row {row_id!r} cannot be edited"
        )
        row = {k: v for k, v in old.items() if k not in ("id", "created_at", "content_hash")}
        row.update(changes, replaces=row_id, labeled_by=user.name, labeled_at=stamp)
        (new_id,) = _insert_rows(db, [row], stamp)
        audit(db, user.name, "edit_eval_row", "eval_row", row_id, new_row=new_id, fields=sorted(changes))
    return new_id


def eval_row(db: Database, row_id: str) -> dict:
    """One eval row by id."""
    row = query_one(db, "SELECT * FROM eval_rows WHERE id = ?", [row_id])
    if row is None:
        raise NotFound(f"no eval row {row_id!r}")
    return row


def iter_version_rows(db: Database, version: int, include_archive: bool = False) -> Iterator[dict]:
    """The rows of a version one at a time (a cursor, not a list), by row id."""
    require_version(db, version)
    states = ROW_STATES if include_archive else ("active",)
    cursor = db.execute(
        f"""SELECT r.*, m.state FROM eval_version_rows m JOIN eval_rows r ON r.id = m.row_id
            WHERE m.version = ? AND m.state IN ({", ".join("?" * len(states))}) ORDER BY r.id""",
        [version, *states],
    )
    names = [d[0] for d in cursor.description]
    for values in cursor:
        yield dict(zip(names, values, strict=True))


def require_version(db: Database, version: int) -> None:
    if query_one(db, "SELECT 1 AS x FROM eval_versions WHERE version = ?", [version]) is None:
        raise NotFound(f"eval-set version {version} does not exist")


def diff_versions(db: Database, a: int, b: int) -> dict:
    """Rows added, retired, changed (old id -> new id) and withdrawn between versions ``a`` and ``b``."""
    require_version(db, a)
    require_version(db, b)
    if version_set(db, a) != version_set(db, b):
        raise BadInput(
            f"versions {a} ({version_set(db, a)!r}) and {b} ({version_set(db, b)!r}) are of different"
            " eval sets: a diff compares two versions of one set"
        )
    old, new = version_members(db, a), version_members(db, b)
    replaces = dict(db.execute("SELECT id, replaces FROM eval_rows WHERE replaces IS NOT NULL"))
    changed = []
    for row_id in sorted(r for r in new if r not in old):
        ancestor = replaces.get(row_id)
        while ancestor is not None and ancestor not in old:
            ancestor = replaces.get(ancestor)
        if ancestor is not None:
            changed.append({"from": ancestor, "to": row_id})
    sources = {c["from"] for c in changed}
    targets = {c["to"] for c in changed}
    diff = {
        "a": a,
        "b": b,
        "added": sorted(r for r in new if r not in old and r not in targets and new[r] == "active"),
        "retired": sorted(r for r in new if old.get(r) == "active" and new[r] == "archived"),
        "changed": changed,
        "withdrawn": sorted(r for r in old if r not in new and r not in sources and old[r] == "active"),
    }
    diff["content"] = _diff_content(db, diff)
    return diff


DIFF_FIELDS = ("input", "expected", "criterion", "code", "adversarial")


def row_view(row: dict) -> dict:
    """What a row asks, as a diff and the preview show it."""
    view = {"id": row["id"], "trace_id": row["trace_id"]}
    view.update({key: row[key] for key in DIFF_FIELDS if key != "adversarial"})
    view.update(adversarial=adversarial_text(row), labeled_by=row["labeled_by"])
    return view


def _diff_content(db: Database, diff: dict) -> dict:
    """The rows behind a diff's ids: what was added, retired and withdrawn (with why), and old -> new
    text of every field a changed row changed."""
    pairs = [(c["from"], c["to"]) for c in diff["changed"]]
    wanted = [*diff["added"], *diff["retired"], *diff["withdrawn"], *(r for pair in pairs for r in pair)]
    listed = json.dumps(wanted)
    among = "IN (SELECT value FROM json_each(?))"
    rows = {
        r["id"]: row_view(r) for r in query_rows(db, f"SELECT * FROM eval_rows WHERE id {among}", [listed])
    }
    retired = dict(db.execute("SELECT row_id, reason FROM eval_retirements"))
    gone = {
        w["row_id"]: w
        for w in query_rows(db, f"SELECT * FROM eval_withdrawals WHERE row_id {among}", [listed])
    }
    return {
        "added": [rows[r] for r in diff["added"]],
        "retired": [{**rows[r], "reason": retired.get(r)} for r in diff["retired"]],
        "changed": [_changed_fields(rows[old], rows[new]) for old, new in pairs],
        "withdrawn": [_withdrawn_view(rows[r], gone.get(r)) for r in diff["withdrawn"]],
    }


def _changed_fields(old: dict, new: dict) -> dict:
    changes = [
        {"field": key, "old": old[key], "new": new[key]} for key in DIFF_FIELDS if old[key] != new[key]
    ]
    return {"from": old["id"], "to": new["id"], "trace_id": new["trace_id"], "fields": changes}


def _withdrawn_view(row: dict, withdrawal: dict | None) -> dict:
    withdrawal = withdrawal or {}
    return {
        **row,
        "reason": withdrawal.get("reason"),
        "withdrawn_by": withdrawal.get("withdrawn_by"),
        "withdrawn_in": withdrawal.get("version"),
    }


def withdraw_rows(
    db: Database, user: User, rows: list[dict], why: str, stamp: str
) -> tuple[list[str], list[int], list[str]]:
    """Tombstone eval rows that held an erased data subject's text (``rows``: dicts with ``row_id`` and
    ``trace_id``) and leave them out of a new version of each set; return (withdrawn, versions,
    tombstoned). Call inside the erasing transaction."""
    if not rows:
        return [], [], []
    tombstone = f"[erased on {stamp[:10]}: this row held a data subject's text]"
    row_ids = [r["row_id"] for r in rows]
    marks = ",".join("?" * len(row_ids))
    for row_id in row_ids:
        db.table("eval_row_tombstones").insert(
            {"row_id": row_id, "text": tombstone, "reason": why, "erased_by": user.name, "erased_at": stamp}
        )
        blank = {"input": tombstone, "messages": None, "expected": None, "criterion": None, "tags": None}
        blank["content_hash"] = content_hash(blank)
        db.table("eval_rows").update(row_id, blank)
    db.execute(f"UPDATE eval_results SET output = NULL WHERE row_id IN ({marks})", row_ids)
    traces = {r["row_id"]: r["trace_id"] for r in rows}
    sets = dict(db.execute(f"SELECT id, eval_set FROM eval_rows WHERE id IN ({marks})", row_ids))
    withdrawn, versions = [], []
    for eval_set in sorted(set(sets.values())):
        if is_frozen(db, eval_set):
            continue  # a frozen set takes no new version: its rows keep only their tombstones
        members = version_members(db, current_version(db, eval_set))
        leaving = [r for r in row_ids if sets[r] == eval_set and r in members]
        if not leaving:
            continue
        for row_id in leaving:
            del members[row_id]
        active = sum(state == "active" for state in members.values())
        counts = {"added": 0, "retired": 0, "carried": active, "changed": 0, "withdrawn": len(leaving)}
        note = f"withdrew {len(leaving)} row(s): {why}"
        version = make_version(db, user, "erasure", note, stamp, members, counts, eval_set)
        for row_id in leaving:
            record_withdrawal(db, user, row_id, traces[row_id], why, "erasure", stamp, version)
        withdrawn += leaving
        versions.append(version)
    return withdrawn, versions, row_ids
