"""Eval sets: immutable, numbered versions of eval rows.

A version is a snapshot of row ids, each ``active`` (read by exports and regression runs) or
``archived`` (retired, kept, exported only on request). A row's content never changes after it is
written; an edit is a new row that replaces the old one in the next version.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.csvfiles import BadRows, read_table
from flywheel.errors import BadInput, NotFound
from flywheel.labels import NOT_A_BUG
from flywheel.store import audit, query_one, query_rows, write
from flywheel.traces import approved_scrub

ROW_STATES = ("active", "archived")


def current_version(db: Database) -> int | None:
    """The newest eval-set version, or None when there is none yet."""
    row = query_one(db, "SELECT max(version) AS v FROM eval_versions")
    return row["v"] if row else None


def eval_set_versions(db: Database) -> list[dict]:
    """Every version, newest first, with its counts."""
    return query_rows(db, "SELECT * FROM eval_versions ORDER BY version DESC")


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
IMPORT_FIELDS = ("input", "expected", "criterion", "code", "adversarial", "tags", "id")
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

    def as_json(self) -> dict:
        """The fold-in contract: ``{"version", "added", "retired", "carried", "rows"}``."""
        return {k: getattr(self, k) for k in ("version", "added", "retired", "carried", "rows")}

    def summary(self) -> str:
        """One line for people."""
        if not self.created:
            if self.version is None:
                return "nothing to fold in: no labeled failure on an approved scrub yet"
            return f"nothing to fold in; the eval set stays at version {self.version}"
        extra = (
            f", {self.changed} changed, {self.withdrawn} withdrawn" if self.changed or self.withdrawn else ""
        )
        waiting = f"; {self.disagreements} disagreements wait for a lead" if self.disagreements else ""
        return (
            f"version {self.version}: {self.rows} active rows ({self.added} added, {self.carried} carried,"
            f" {self.retired} retired{extra}){waiting}"
        )


def _stamp(moment: datetime | None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def content_hash(row: dict) -> str:
    """A hash of what a row asks, so an unchanged row is carried and a changed one is new."""
    keys = ("input", "messages", "expected", "criterion", "code", "adversarial", "adversarial_kind", "tags")
    canonical = json.dumps([row.get(k) for k in keys], ensure_ascii=False)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def _next_row_ids(db: Database, count: int) -> list[str]:
    top = db.execute("SELECT max(CAST(substr(id, 3) AS INTEGER)) FROM eval_rows").fetchone()[0] or 0
    return [f"r-{top + n:06d}" for n in range(1, count + 1)]


def _insert_rows(db: Database, rows: list[dict], stamp: str) -> list[str]:
    ids = _next_row_ids(db, len(rows))
    for row_id, row in zip(ids, rows, strict=True):
        row.update(id=row_id, created_at=stamp, content_hash=content_hash(row))
    db["eval_rows"].insert_all(rows)
    return ids


def _members(db: Database, version: int | None) -> dict[str, str]:
    if version is None:
        return {}
    return dict(db.execute("SELECT row_id, state FROM eval_version_rows WHERE version = ?", [version]))


def _make_version(
    db: Database,
    user: User,
    kind: str,
    note: str | None,
    stamp: str,
    members: dict[str, str],
    counts: dict,
) -> int:
    version = (current_version(db) or 0) + 1
    active = sum(state == "active" for state in members.values())
    db["eval_versions"].insert(
        {
            "version": version,
            "kind": kind,
            "note": (note or "").strip()[:MAX_FIELD] or None,
            "created_by": user.name,
            "created_at": stamp,
            "rows": active,
            **counts,
        }
    )
    db["eval_version_rows"].insert_all(
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
    audit(db, user.name, kind, "eval_version", version, note=note, rows=active, **counts)
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
) -> VersionChange:
    """Import a starter suite (CSV or JSONL bytes) as a new version; a bad row refuses the whole file."""
    require_role(user, "lead")
    rows = parse_suite(data, name)
    stamp = _stamp(now)
    with write(db):
        members = _members(db, current_version(db))
        carried = sum(state == "active" for state in members.values())
        for row in rows:
            row.update(source="import", source_file=Path(name).name, labeled_by=user.name, labeled_at=stamp)
        for row_id in _insert_rows(db, rows, stamp):
            members[row_id] = "active"
        retired, changed = _apply_pending(db, members)
        counts = {"added": len(rows) + changed, "retired": retired, "carried": carried - retired - changed}
        counts.update(changed=changed, withdrawn=0)
        version = _make_version(
            db, user, "import", note or f"starter suite {Path(name).name}", stamp, members, counts
        )
    return VersionChange(
        version, True, counts["added"], retired, counts["carried"], _active(members), changed
    )


def import_evalset_file(
    db: Database, user: User, path: str | Path, note: str | None = None, now: datetime | None = None
) -> VersionChange:
    """Import a starter-suite file from disk."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BadInput(f"cannot read {str(path)!r}: {error.strerror}") from None
    return import_evalset(db, user, data, path.name, note, now)


def _active(members: dict[str, str]) -> int:
    return sum(state == "active" for state in members.values())


def parse_suite(data: bytes, name: str) -> list[dict]:
    """Rows of a starter-suite file as eval-row fields; raise BadRows listing every bad line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInput(f"{name}: not UTF-8 (byte {error.start})") from None
    records = _csv_records(text, name) if name.lower().endswith(".csv") else _jsonl_records(text)
    rows, problems, seen = [], [], {}
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


def _csv_records(text: str, name: str) -> list[tuple[int, object]]:
    def check(header: list[str]) -> None:
        unknown = [f for f in header if f not in IMPORT_FIELDS]
        if "input" not in header or unknown:
            raise BadInput(
                f"header {header!r}: expected an 'input' column and only {', '.join(IMPORT_FIELDS)}"
            )

    return read_table(text, name, key="id", check_header=check).rows


def _jsonl_records(text: str) -> list[tuple[int, object]]:
    records = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            records.append((line, json.loads(raw)))
        except json.JSONDecodeError as error:
            records.append((line, BadInput(f"not JSON: {error.msg}")))
    return records


def _suite_row(record: object) -> dict:
    if isinstance(record, BadInput):
        raise record
    if not isinstance(record, dict):
        raise BadInput("not a JSON object")
    unknown = sorted(set(record) - set(IMPORT_FIELDS))
    if unknown:
        raise BadInput(f"unknown fields {', '.join(map(repr, unknown))}; expected {', '.join(IMPORT_FIELDS)}")
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
           l.adversarial, l.created_at
    FROM labels l WHERE l.undone_at IS NULL ORDER BY l.trace_id, l.id"""


def _labels_by_trace(db: Database) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for label in query_rows(db, LIVE_LABELS):
        grouped.setdefault(label["trace_id"], []).append(label)
    return grouped


def _verdict(label: dict) -> tuple:
    return ("not_a_bug",) if label["kind"] == NOT_A_BUG else (label["code"], label["adversarial"])


def _agreed(db: Database, trace_id: str, labels: list[dict]) -> tuple[list[dict] | None, bool]:
    """The labels a row is built from (None: no row) and whether the labelers disagree unsettled."""
    settled = query_one(db, "SELECT label_id FROM eval_settlements WHERE trace_id = ?", [trace_id])
    if settled is not None:
        chosen = [label for label in labels if label["id"] == settled["label_id"]]
        if chosen or settled["label_id"] is None:
            return (chosen if chosen and chosen[0]["kind"] != NOT_A_BUG else None), False
    verdicts = {_verdict(label) for label in labels}
    if len(verdicts) > 1:
        return None, True
    return (None if verdicts == {("not_a_bug",)} else labels), False


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
        db["eval_settlements"].upsert(
            {"trace_id": trace_id, "label_id": label_id, "settled_by": user.name, "settled_at": _stamp(now)},
            pk="trace_id",
        )
        audit(db, user.name, "settle_disagreement", "trace", trace_id, label_id=label_id)


def _row_from_labels(db: Database, trace_id: str, labels: list[dict]) -> dict | None:
    """An eval row from agreed labels and the trace's approved scrub; None when the scrub is not approved."""
    scrub_id = db.execute(
        "SELECT id FROM scrubs WHERE trace_id = ? AND status = 'approved'", [trace_id]
    ).fetchone()
    if scrub_id is None:
        return None
    scrub = approved_scrub(db, trace_id)
    first = labels[0]
    tag = first["adversarial"]
    return {
        "input": scrub["input"],
        "messages": json.dumps(scrub["messages"], ensure_ascii=False) if scrub["messages"] else None,
        "expected": first["expected"],
        "criterion": first["pass_criterion"],
        "code": first["code"],
        "adversarial": int(tag != "none"),
        "adversarial_kind": None if tag == "none" else tag,
        "tags": json.dumps(sorted({f"label:{label['kind']}" for label in labels})),
        "source": "trace",
        "trace_id": trace_id,
        "scrub_id": scrub_id[0],
        "labeled_by": ",".join(sorted({label["labeler"] for label in labels})),
        "labeled_at": max(label["created_at"] for label in labels),
    }


def fold_in(
    db: Database,
    user: User,
    note: str | None = None,
    batches: list[int] | None = None,
    now: datetime | None = None,
) -> VersionChange:
    """Fold labeled failures into a new immutable version, in one transaction.

    Agreed failure labels (known and new, adversarial included) on approved scrubs that are not yet rows
    become rows; a trace whose labels changed gets a new row replacing its old one; a row whose scrub
    was reopened, or whose labels were undone or turned into "not a bug", is withdrawn. Confirmed
    retirements move to the archive. ``batches`` limits new rows to labels of those sample batches.
    """
    require_role(user, "lead")
    stamp = _stamp(now)
    with write(db):
        previous = current_version(db)
        members = _members(db, previous)
        by_trace = _trace_rows(db, members)
        grouped = _labels_by_trace(db)
        new_rows, replaced, withdrawn, open_ = [], [], 0, 0
        for trace_id in sorted(set(grouped) | set(by_trace)):
            labels = grouped.get(trace_id, [])
            agreed, disputed = _agreed(db, trace_id, labels)
            open_ += disputed
            current = by_trace.get(trace_id)
            if current is not None and current["state"] == "archived":
                continue
            in_scope = batches is None or any(label["batch_id"] in batches for label in labels)
            row = _row_from_labels(db, trace_id, agreed) if agreed else None
            if current is None:
                if row is not None and in_scope:
                    new_rows.append(row)
            elif row is None and not disputed:
                del members[current["id"]]
                withdrawn += 1
            elif row is not None and in_scope and content_hash(row) != current["content_hash"]:
                row["replaces"] = current["id"]
                del members[current["id"]]
                new_rows.append(row)
                replaced.append(current["id"])
        carried_before = _active(members)
        for row_id in _insert_rows(db, new_rows, stamp):
            members[row_id] = "active"
        retired, edited = _apply_pending(db, members)
        changed = len(replaced) + edited
        if not (new_rows or retired or edited or withdrawn):
            return VersionChange(
                previous, False, 0, 0, _active(members), _active(members), disagreements=open_
            )
        counts = {
            "added": len(new_rows) + edited,
            "retired": retired,
            "carried": carried_before - retired - edited,
            "changed": changed,
            "withdrawn": withdrawn,
        }
        version = _make_version(db, user, "fold_in", note, stamp, members, counts)
    return VersionChange(
        version,
        True,
        counts["added"],
        retired,
        counts["carried"],
        _active(members),
        changed,
        withdrawn,
        open_,
    )


def _trace_rows(db: Database, members: dict[str, str]) -> dict[str, dict]:
    """The row of each trace in a membership, with its state."""
    rows = {}
    for row in query_rows(db, "SELECT id, trace_id, content_hash FROM eval_rows WHERE trace_id IS NOT NULL"):
        if row["id"] in members:
            rows[row["trace_id"]] = {**row, "state": members[row["id"]]}
    return rows


def fold_preview(db: Database) -> dict:
    """What a fold-in would do now, without doing it: candidate traces, rows in place, disagreements."""
    members = _members(db, current_version(db))
    by_trace = _trace_rows(db, members)
    waiting = 0
    for trace_id, labels in _labels_by_trace(db).items():
        agreed, _ = _agreed(db, trace_id, labels)
        if (
            agreed
            and trace_id not in by_trace
            and db.execute(
                "SELECT 1 FROM scrubs WHERE trace_id = ? AND status = 'approved'", [trace_id]
            ).fetchone()
        ):
            waiting += 1
    pending = db.execute("SELECT count(*) FROM eval_retirements WHERE left_version IS NULL").fetchone()[0]
    return {"new_failures": waiting, "pending_retirements": pending, "disagreements": len(disagreements(db))}


# Edits, lookups and diffs ------------------------------------------------------------------------------


def edit_row(db: Database, user: User, row_id: str, now: datetime | None = None, **changes: object) -> str:
    """Write a new row replacing ``row_id`` with some fields changed; it enters the next version."""
    require_role(user, "lead")
    allowed = {"expected", "criterion", "code", "adversarial", "adversarial_kind", "tags"}
    if not changes or set(changes) - allowed:
        raise BadInput(f"edit fields {sorted(changes)!r}: expected some of {', '.join(sorted(allowed))}")
    stamp = _stamp(now)
    with write(db):
        old = query_one(db, "SELECT * FROM eval_rows WHERE id = ?", [row_id])
        if old is None:
            raise NotFound(f"no eval row {row_id!r}")
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
    _require_version(db, version)
    states = ROW_STATES if include_archive else ("active",)
    cursor = db.execute(
        f"""SELECT r.*, m.state FROM eval_version_rows m JOIN eval_rows r ON r.id = m.row_id
            WHERE m.version = ? AND m.state IN ({", ".join("?" * len(states))}) ORDER BY r.id""",
        [version, *states],
    )
    names = [d[0] for d in cursor.description]
    for values in cursor:
        yield dict(zip(names, values, strict=True))


def _require_version(db: Database, version: int) -> None:
    if query_one(db, "SELECT 1 AS x FROM eval_versions WHERE version = ?", [version]) is None:
        raise NotFound(f"eval-set version {version} does not exist")


def diff_versions(db: Database, a: int, b: int) -> dict:
    """Rows added, retired, changed (old id -> new id) and withdrawn between versions ``a`` and ``b``."""
    _require_version(db, a)
    _require_version(db, b)
    old, new = _members(db, a), _members(db, b)
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
    return {
        "a": a,
        "b": b,
        "added": sorted(r for r in new if r not in old and r not in targets and new[r] == "active"),
        "retired": sorted(r for r in new if old.get(r) == "active" and new[r] == "archived"),
        "changed": changed,
        "withdrawn": sorted(r for r in old if r not in new and r not in sources and old[r] == "active"),
    }
