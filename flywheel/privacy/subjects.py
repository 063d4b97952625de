"""Data subjects: find every place a person's data lives in the loop, and erase it.

A value (an e-mail, a phone or card number, a name, a user id) is matched the way the scrubber reads
text: on the normalised view (invisible characters dropped, odd spaces and full-width forms folded),
case-folded, phone and card numbers by their digits, names by their words whatever the spacing.

Raw text is found through ``subject_index``: keyed hashes (the key is this database's own secret) of the
normalised tokens of each trace, never the text, so the index holds no second copy of raw text; a purged
trace's entries go with its text. Matches are then confirmed on the text itself. The value is never
stored: the audit log keeps its keyed hash.

Erasure purges the raw text of every matching trace and quarantined line, withdraws the eval rows made
from them in a new version (the old versions' rows become tombstones), drops their scrubbed text,
embeddings and judge payloads, blanks every other cell that still holds the value, and rewrites the
file so no deleted byte survives (``secure_delete``, the free pages zeroed, the WAL checkpointed and
truncated).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.drift.run import drop_drift_texts, drop_drift_vectors
from flywheel.errors import BadInput
from flywheel.evals.versions import withdraw_rows
from flywheel.ingest.run import blank_quarantined, blank_raw_text
from flywheel.labeling.labels import erase_label_text
from flywheel.online.judge import erase_trace_judgments
from flywheel.review.scrubs import erase_scrubs, set_aside_unapproved
from flywheel.scrub.normalise import INVISIBLE, normalise
from flywheel.store.audit import audit
from flywheel.store.clock import format_ts, now_utc
from flywheel.store.db import query_rows, write
from flywheel.traces.rollups import advance_watermark, pending_rowids
from flywheel.vectors.embeddings import drop_embeddings, drop_scrub_vectors, text_hash

INDEX_STATE = "subject_index"
INDEX_DEFINITION = "keyed token hashes of raw trace text"
INDEX_CHUNK = 5000
MIN_DIGITS = 7  # a phone or card number: shorter digit runs are amounts, dates, codes
ERASED = "[erased]"
# Function words name nobody (so not "may" or "will"): leaving them out keeps the index small.
_FUNCTION_WORDS = """a an the and or but if of to in on at by for with from as is are was were be been am do
    does did have has had i me my we our you your he him his she her it its they them their this that
    these those there here what which who whom when where why how not no yes can could would should
    might must shall just so than too very s t ll ve re d m don didn doesn isn aren wasn won can't i'm
    it's please thanks thank hi hello hey dear"""
STOP_WORDS = frozenset(_FUNCTION_WORDS.split())
_WORD = re.compile(r"[^\W_]+")
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_NUMBER = re.compile(r"\+?\(?\d+(?:[ .\-()/]{1,2}\d+)*")
_INVISIBLE_GLOB = "*[" + "".join(INVISIBLE) + "]*"


# Matching -------------------------------------------------------------------------------------------


def fold(text: str) -> str:
    """The scrubber's view of ``text``, case-folded."""
    return normalise(text)[0].casefold()


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _same_number(a: str, b: str) -> bool:
    """The same phone or card number, with or without a trunk zero or a country code."""
    short, long = sorted((a.lstrip("0"), b.lstrip("0")), key=len)
    return len(short) >= MIN_DIGITS and long.endswith(short)


@dataclass(frozen=True)
class Probe:
    """A searched value as the matcher reads it: an ``email``, a ``number`` or ``words``."""

    kind: str
    folded: str
    digits: str = ""
    words: tuple[str, ...] = ()

    def keys(self) -> list[str]:
        """Index keys a matching trace must hold (none: only a scan can tell)."""
        if self.kind == "email":
            return ["@" + self.folded]
        if self.kind == "number":
            return ["#" + self.digits.lstrip("0")[-MIN_DIGITS:]]
        return [w for w in self.words if len(w) > 1 and w not in STOP_WORDS]

    def matches(self, text: str | None) -> bool:
        """Whether ``text`` holds the value."""
        if not text:
            return False
        view = fold(text)
        if self.kind == "email":
            return self.folded in view
        if self.kind == "number":
            return any(_same_number(_digits(m.group()), self.digits) for m in _NUMBER.finditer(view))
        return f" {' '.join(self.words)} " in f" {' '.join(_WORD.findall(view))} "

    def anchor(self) -> str:
        """A plain piece every ordinary copy holds, for a cheap SQL filter before ``matches``."""
        if self.kind == "number":
            return self.digits[-4:]
        if self.kind == "email":
            return self.folded
        return max(self.words, key=len)


def probe(value: str) -> Probe:
    """The value to search for; refuses one too short or without a letter or digit."""
    folded = " ".join(fold(value or "").split())
    if len(folded) < 3:
        raise BadInput(f"{value!r} is too short to search for: give at least 3 characters")
    if _EMAIL.fullmatch(folded):
        return Probe("email", folded)
    digits = _digits(folded)
    if len(digits) >= MIN_DIGITS and not re.search(r"[^\W\d_]", folded):
        return Probe("number", folded, digits=digits)
    words = tuple(_WORD.findall(folded))
    if not words:
        raise BadInput(f"{value!r} holds no letter or digit to search for")
    return Probe("words", folded, words=words)


def text_keys(text: str | None) -> set[str]:
    """The index keys of a text: its words, e-mail addresses and long numbers, normalised."""
    if not text:
        return set()
    view = fold(text)
    keys = {w for w in _WORD.findall(view) if len(w) > 1 and w not in STOP_WORDS}
    keys.update("@" + m for m in _EMAIL.findall(view))
    for match in _NUMBER.finditer(view):
        if match.end() - match.start() < MIN_DIGITS:
            continue
        digits = _digits(match.group()).lstrip("0")
        if len(digits) >= MIN_DIGITS:
            keys.add("#" + digits[-MIN_DIGITS:])
    return keys


def trace_fields(row: dict) -> Iterator[tuple[str, str]]:
    """Every raw text of a trace row: input, output, each message and the metadata's strings."""
    yield "input", row["input"]
    if row.get("output"):
        yield "output", row["output"]
    messages = _json(row.get("messages"))
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(message, dict):
            yield f"messages[{i}]", str(message.get("content") or "")
    if row.get("metadata"):
        yield "metadata", "\n".join(_strings(_json(row["metadata"])))


def _json(text: str | None) -> object:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        yield str(value)


# The keyed hash index -------------------------------------------------------------------------------


def _secret(db: Database) -> bytes:
    row = db.execute("SELECT secret FROM subject_keys WHERE name = 'subject'").fetchone()
    if row:
        return row[0]
    with write(db):
        db.execute(
            "INSERT OR IGNORE INTO subject_keys (name, secret) VALUES ('subject', ?)", [os.urandom(32)]
        )
    return db.execute("SELECT secret FROM subject_keys WHERE name = 'subject'").fetchone()[0]


def _token(secret: bytes, key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), key=secret, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def value_hash(db: Database, value: str) -> str:
    """The keyed (salted) hash the audit log keeps instead of a searched or erased value."""
    secret = _secret(db)
    folded = " ".join(fold(value or "").split())
    return hashlib.blake2b(folded.encode("utf-8", "surrogatepass"), key=secret, person=b"audit").hexdigest()[
        :32
    ]


def refresh_index(db: Database, progress: Callable[[int], None] | None = None) -> int:
    """Index the traces added since the last call; return how many were indexed."""
    secret = _secret(db)
    done = 0
    tokens: dict[str, int] = {}
    keys: dict[str, set[str]] = {}
    while True:
        upto = _indexed_upto(db)
        rows = query_rows(
            db,
            """SELECT t.rowid AS rowid, t.input, t.output, t.messages, t.metadata FROM traces t
               WHERE t.rowid > ? AND NOT EXISTS (SELECT 1 FROM raw_purges p WHERE p.trace_id = t.trace_id)
               ORDER BY t.rowid LIMIT ?""",
            [upto, INDEX_CHUNK],
        )
        last = rows[-1]["rowid"] if rows else db.execute("SELECT max(rowid) FROM traces").fetchone()[0]
        if last is None or last <= upto:
            return done
        postings = {
            (tokens[key] if key in tokens else tokens.setdefault(key, _token(secret, key)), row["rowid"])
            for row in rows
            for _, text in trace_fields(row)
            for key in (keys[text] if text in keys else keys.setdefault(text, text_keys(text)))
        }
        if len(keys) > 100_000:  # repeated texts (canned replies) and words are hashed once
            keys.clear()

        def add_postings(postings: set = postings) -> None:
            db.conn.executemany("INSERT OR IGNORE INTO subject_index VALUES (?, ?)", sorted(postings))

        if not advance_watermark(db, INDEX_STATE, INDEX_DEFINITION, upto, last, add_postings):
            continue  # another session indexed these rows meanwhile
        done += len(rows)
        if progress:
            progress(done)
        if not rows:
            return done


def _indexed_upto(db: Database) -> int:
    return pending_rowids(db, INDEX_STATE, INDEX_DEFINITION)[0]


def drop_from_index(db: Database, rowids: Iterable[int]) -> None:
    """Forget a trace's tokens (its raw text is gone); call inside the purging transaction."""
    db.conn.executemany("DELETE FROM subject_index WHERE trace_rowid = ?", [(r,) for r in rowids])


def _candidates(db: Database, found: Probe) -> list[int] | None:
    """Rowids of traces holding every key of the value, or None when the value has no indexable key."""
    keys = found.keys()
    if not keys:
        return None
    secret = _secret(db)
    rowids: set[int] | None = None
    for key in sorted(set(keys), key=len, reverse=True):
        hits = {
            r
            for (r,) in db.execute(
                "SELECT trace_rowid FROM subject_index WHERE token = ?", [_token(secret, key)]
            )
        }
        rowids = hits if rowids is None else rowids & hits
        if not rowids:
            return []
    return sorted(rowids or ())


# Find -----------------------------------------------------------------------------------------------

TRACE_COLUMNS = "rowid, trace_id, ts, input, output, messages, metadata"


def _matching_traces(db: Database, found: Probe) -> list[dict]:
    """Traces whose raw text holds the value, with the fields it is in."""
    refresh_index(db)
    rowids = _candidates(db, found)
    rows: Iterable[dict]
    if rowids is None:
        rows = _scan_traces(db, found)
    else:
        rows = (
            row
            for start in range(0, len(rowids), 500)
            for row in query_rows(
                db,
                f"SELECT {TRACE_COLUMNS} FROM traces WHERE rowid IN"
                f" ({','.join('?' * len(rowids[start : start + 500]))}) ORDER BY rowid",
                rowids[start : start + 500],
            )
        )
    hits = []
    for row in rows:
        fields = [name for name, text in trace_fields(row) if found.matches(text)]
        if fields:
            hits.append(
                {"rowid": row["rowid"], "trace_id": row["trace_id"], "ts": row["ts"], "fields": fields}
            )
    return hits


def _scan_traces(db: Database, found: Probe) -> Iterator[dict]:
    """Every trace that may hold a value made of common words only (a scan: such values are rare)."""
    columns = ("input", "output", "messages", "metadata")
    anchor = found.anchor()
    where = " OR ".join(f"instr(lower({c}), :a) OR {c} GLOB :g" for c in columns)
    sql = f"SELECT {TRACE_COLUMNS} FROM traces WHERE {where}"
    yield from query_rows(db, sql, {"a": anchor, "g": _INVISIBLE_GLOB})


def _matching_quarantine(db: Database, found: Probe) -> list[dict]:
    hits = []
    for row in query_rows(db, "SELECT id, run_id, file, line_no, raw FROM quarantine"):
        raw = row.pop("raw")
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
        if found.matches(text) or found.matches(_unescaped(text)):
            hits.append(row)
    return hits


def _unescaped(text: str) -> str:
    # A quarantined JSON line may hold the value as \u escapes; read it the way JSON would.
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return text


def _in_ids(ids: list) -> str:
    return ",".join("?" * len(ids))


def _eval_rows(db: Database, found: Probe, trace_ids: list[str]) -> list[dict]:
    """Eval rows made from the traces, and any other row whose text holds the value."""
    rows = query_rows(
        db,
        "SELECT id, trace_id, input, messages, expected, criterion, tags FROM eval_rows"
        " WHERE id NOT IN (SELECT row_id FROM eval_row_tombstones)",
    )
    wanted = set(trace_ids)
    chosen = [
        r
        for r in rows
        if r["trace_id"] in wanted
        or any(found.matches(r[k]) for k in ("input", "messages", "expected", "criterion", "tags"))
    ]
    out = []
    for row in chosen:
        versions = query_rows(
            db, "SELECT version, state FROM eval_version_rows WHERE row_id = ? ORDER BY version", [row["id"]]
        )
        withdrawn = db.execute(
            "SELECT version FROM eval_withdrawals WHERE row_id = ?", [row["id"]]
        ).fetchone()
        out.append(
            {
                "row_id": row["id"],
                "trace_id": row["trace_id"],
                "versions": versions,
                "withdrawn_in": withdrawn[0] if withdrawn else None,
            }
        )
    return out


@dataclass
class SubjectReport:
    """Where a value lives: traces (and what the loop made of them), quarantined lines, eval rows,
    the versions holding those rows and the exports written of those versions."""

    traces: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    eval_rows: list[dict] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    exports: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        """``{"traces", "quarantined", "eval_rows", "versions", "exports"}``."""
        traces = [{k: v for k, v in t.items() if k != "rowid"} for t in self.traces]
        return {
            "traces": traces,
            "quarantined": self.quarantined,
            "eval_rows": self.eval_rows,
            "versions": self.versions,
            "exports": self.exports,
        }

    @property
    def empty(self) -> bool:
        return not (self.traces or self.quarantined or self.eval_rows)

    def summary(self) -> str:
        """Lines for people: ids only, never the text."""
        if self.empty:
            return "not found: no trace, quarantined line or eval row holds this value"
        lines = [
            f"{len(self.traces)} trace(s), {len(self.quarantined)} quarantined line(s),"
            f" {len(self.eval_rows)} eval row(s) in version(s) {', '.join(map(str, self.versions)) or '-'},"
            f" {len(self.exports)} export(s)"
        ]
        for t in self.traces:
            scrubs = ", ".join(f"scrub {s['id']} {s['status']}" for s in t["scrubs"]) or "not scrubbed"
            lines.append(
                f"  {t['trace_id']} ({t['ts']}) in {', '.join(t['fields'])}: {scrubs};"
                f" {len(t['labels'])} label(s); batches {t['batches'] or '-'}"
            )
        lines += [f"  quarantine #{q['id']}: {q['file']} line {q['line_no']}" for q in self.quarantined]
        for r in self.eval_rows:
            held = ", ".join(f"v{v['version']} {v['state']}" for v in r["versions"]) or "no version"
            lines.append(f"  {r['row_id']} (trace {r['trace_id'] or '-'}): {held}")
        lines += [
            f"  export #{e['id']}: version {e['version']} {e['format']} {e['path']} at {e['at']}"
            for e in self.exports
        ]
        return "\n".join(lines)


def find_subject(db: Database, user: User, value: str) -> SubjectReport:
    """Every place the value lives (leads only); the audit log keeps its keyed hash, never the value."""
    require_role(user, "lead")
    report = _locate(db, value)
    with write(db):
        audit(
            db,
            user.name,
            "find_subject",
            "data_subject",
            value_hash(db, value),
            traces=len(report.traces),
            quarantined=len(report.quarantined),
            eval_rows=len(report.eval_rows),
        )
    return report


def _locate(db: Database, value: str) -> SubjectReport:
    found = probe(value)
    traces = _matching_traces(db, found)
    ids = [t["trace_id"] for t in traces]
    for t in traces:
        t.update(_loop_of(db, t["trace_id"]))
    rows = _eval_rows(db, found, ids)
    versions = sorted({v["version"] for r in rows for v in r["versions"]})
    exports = (
        query_rows(
            db,
            "SELECT id, version, format, path, rows, actor, at FROM exports"
            f" WHERE version IN ({_in_ids(versions)}) ORDER BY id",
            versions,
        )
        if versions
        else []
    )
    return SubjectReport(traces, _matching_quarantine(db, found), rows, versions, exports)


def _loop_of(db: Database, trace_id: str) -> dict:
    """What the loop made of one trace: its scrubs, labels and sample batches."""
    scrubs = query_rows(
        db,
        "SELECT id, scrubber_version, status, is_current FROM scrubs WHERE trace_id = ? ORDER BY id",
        [trace_id],
    )
    labels = query_rows(
        db,
        "SELECT id, labeler, kind, code, undone_at IS NOT NULL AS undone FROM labels WHERE trace_id = ?"
        " ORDER BY id",
        [trace_id],
    )
    batches = [r[0] for r in db.execute("SELECT batch_id FROM batch_items WHERE trace_id = ?", [trace_id])]
    purged = db.execute("SELECT reason FROM raw_purges WHERE trace_id = ?", [trace_id]).fetchone()
    return {
        "scrubs": scrubs,
        "labels": labels,
        "batches": batches,
        "raw_text": purged[0] if purged else "kept",
    }


# Purging raw text (erasure and retention) -------------------------------------------------------------


def purge_marker(reason: str) -> str:
    """What a purged trace's input reads afterwards, on every page that shows it."""
    return f"[raw text removed: {reason}]"


def purge_traces(
    db: Database, actor: str, rows: list[tuple[int, str]], reason: str, stamp: str, keep_metadata: bool
) -> int:
    """Purge the raw text of traces given as (rowid, trace_id), inside the caller's transaction.

    Ids, times, signals and approved scrubs stay; a pending scrub is set aside with the reason (nobody
    can review it without the raw text) and an unapproved scrub's text goes with the raw text.
    """
    if not rows:
        return 0
    marker = purge_marker(reason)
    blank_raw_text(db, rows, marker, keep_metadata)
    db.conn.executemany(
        "INSERT OR REPLACE INTO raw_purges (trace_id, reason, purged_by, purged_at) VALUES (?, ?, ?, ?)",
        [(trace_id, reason, actor, stamp) for _, trace_id in rows],
    )
    set_aside_unapproved(db, [trace_id for _, trace_id in rows], reason, marker)
    drop_from_index(db, [rowid for rowid, _ in rows])
    return len(rows)


def _erase_derived(db: Database, trace_ids: list[str], marker: str) -> None:
    """What the loop derived from erased traces: scrubbed text, label text, embeddings, judge payloads.

    Each table is changed by the station that writes it, inside this one transaction."""
    for start in range(0, len(trace_ids), 500):
        part = trace_ids[start : start + 500]
        marks = _in_ids(part)
        scrubs = query_rows(
            db, f"SELECT id, input, output, messages FROM scrubs WHERE trace_id IN ({marks})", part
        )
        hashes = {text_hash(t) for s in scrubs for t in (s["input"], s["output"], s["messages"]) if t}
        hashes |= {text_hash(t) for s in scrubs for t in _message_texts(s["messages"])}
        hashes |= drop_drift_texts(db, part)
        scrub_ids = [s["id"] for s in scrubs]
        if scrub_ids:
            hashes |= drop_scrub_vectors(db, scrub_ids)
        drop_embeddings(db, hashes)
        drop_drift_vectors(db, hashes)
        erase_scrubs(db, part, marker)
        erase_label_text(db, part)
        erase_trace_judgments(db, part)


def _message_texts(messages: str | None) -> list[str]:
    parsed = _json(messages)
    return [str(m.get("content")) for m in parsed if isinstance(m, dict)] if isinstance(parsed, list) else []


# Erase -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasureReport:
    traces: int
    quarantined: int
    eval_rows_withdrawn: list[str]
    versions: list[int]
    tombstoned: list[str]
    cells: int
    exports: list[dict]
    checkpointed: bool

    def as_json(self) -> dict:
        """``{"traces", "quarantined", "eval_rows_withdrawn", "versions"}``."""
        return {
            "traces": self.traces,
            "quarantined": self.quarantined,
            "eval_rows_withdrawn": self.eval_rows_withdrawn,
            "versions": self.versions,
        }

    def summary(self) -> str:
        """One line for people."""
        versions = f"new version {', '.join(map(str, self.versions))}" if self.versions else "no new version"
        return (
            f"erased: raw text of {self.traces} trace(s) and {self.quarantined} quarantined line(s);"
            f" {len(self.eval_rows_withdrawn)} eval row(s) withdrawn ({versions}),"
            f" {len(self.tombstoned)} tombstoned; {self.cells} other cell(s) blanked"
        )


def erase_subject(
    db: Database, user: User, value: str, reason: str, now: datetime | None = None
) -> ErasureReport:
    """Erase a data subject (leads only): see the module docstring for everything it does."""
    require_role(user, "lead")
    found = probe(value)
    reason = " ".join((reason or "").split())
    if not reason:
        raise BadInput("say why the data subject is erased (e.g. the request's reference)")
    if found.matches(reason):
        raise BadInput("the reason names the data subject; give a reference that does not")
    stamp = format_ts(now or now_utc())
    why = f"erased on {stamp[:10]} at a data subject's request"
    hashed = value_hash(db, value)
    report = _locate(db, value)
    with secure_deletes(db):
        with write(db):
            rows = [(t["rowid"], t["trace_id"]) for t in report.traces]
            ids = [trace_id for _, trace_id in rows]
            purge_traces(db, user.name, rows, why, stamp, keep_metadata=False)
            _erase_derived(db, ids, purge_marker(why))
            quarantined = [q["id"] for q in report.quarantined]
            blank_quarantined(db, quarantined)
            withdrawn, versions, tombstoned = withdraw_rows(db, user, report.eval_rows, why, stamp)
            cells = _blank_copies(db, found)
            audit(
                db,
                user.name,
                "erase_subject",
                "data_subject",
                hashed,
                reason=reason,
                traces=ids,
                quarantined=quarantined,
                eval_rows_withdrawn=withdrawn,
                tombstoned=tombstoned,
                versions=versions,
                cells=cells,
            )
        checkpointed = wipe_free_space(db)
    return ErasureReport(
        len(rows), len(quarantined), withdrawn, versions, tombstoned, cells, report.exports, checkpointed
    )


# Copies outside the raw-text tables: a scrub that missed the value, a reason, a cluster name.
_SKIP_TABLES = {
    "traces",
    "quarantine",
    "subject_index",
    "subject_keys",
    "_sqlite_migrations",
    "eval_row_tombstones",
}


def _blank_copies(db: Database, found: Probe) -> int:
    """Blank every other text cell that holds the value; return how many.

    The one write here into tables other stations own: it sweeps every text column of every table,
    including tables added after this code, so no station's writer can be asked for it by name."""
    blanked = 0
    for table in _tables(db):
        for column in _text_columns(db, table):
            sql = (
                f"SELECT rowid, [{column}] FROM [{table}] WHERE typeof([{column}]) = 'text'"
                f" AND (instr(lower([{column}]), ?) OR [{column}] GLOB ?)"
            )
            for rowid, text in db.execute(sql, [found.anchor(), _INVISIBLE_GLOB]).fetchall():
                if found.matches(text) or found.matches(_unescaped(text)):
                    try:
                        db.execute(
                            f"UPDATE [{table}] SET [{column}] = ? WHERE rowid = ?", [_blank(text), rowid]
                        )
                        blanked += 1
                    except sqlite3.IntegrityError as error:
                        raise BadInput(
                            f"{table}.{column} holds the value and cannot be changed ({error})"
                        ) from None
    return blanked


def _tables(db: Database) -> list[str]:
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE '%WITHOUT ROWID%'"
        " AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return [name for (name,) in rows if name not in _SKIP_TABLES]


def _text_columns(db: Database, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info([{table}])") if row[2].upper() in ("TEXT", "")]


def _blank(text: str) -> str:
    parsed = _json(text)
    if isinstance(parsed, dict):
        return json.dumps({"erased": True})
    if isinstance(parsed, list):
        return json.dumps([ERASED])
    return ERASED


@contextlib.contextmanager
def secure_deletes(db: Database) -> Iterator[None]:
    """Deleted and overwritten content is zeroed in the file while inside (``PRAGMA secure_delete``)."""
    db.execute("PRAGMA secure_delete = ON")
    try:
        yield
    finally:
        db.execute("PRAGMA secure_delete = OFF")


def wipe_free_space(db: Database) -> bool:
    """Zero the file's free pages and fold the WAL back, truncated; False when a reader kept the WAL.

    ``secure_delete`` zeroes what the erasure itself frees; pages freed earlier may still hold old
    text, so they are filled with a zero blob and freed again, then the WAL is checkpointed.
    """
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    if free:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        with write(db):
            db.execute("CREATE TABLE _free_space_wipe (b BLOB)")
            db.execute("INSERT INTO _free_space_wipe VALUES (zeroblob(?))", [free * size])
            db.execute("DROP TABLE _free_space_wipe")
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy
