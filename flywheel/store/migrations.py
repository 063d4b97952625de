"""The schema: one ordered set of migrations, applied by ``open_db`` under the write lock."""

from __future__ import annotations

import hashlib

from sqlite_utils import Database, Migrations

from flywheel.store.audit import audit
from flywheel.store.clock import sql_iso_week, stored_ts

migrations = Migrations("flywheel")


@migrations()
def m001_traces_ingest_audit(db: Database) -> None:
    db.table("traces").create(
        {
            "trace_id": str,
            "ts": str,
            "week": str,
            "input": str,
            "output": str,
            "messages": str,
            "cohort": str,
            "intent": str,
            "thumbs": str,
            "regenerated": int,
            "retried": int,
            "escalated": int,
            "guardrail_tripped": int,
            "schema_valid": int,
            "judge_score": float,
            "turns": int,
            "latency_ms": float,
            "cost_usd": float,
            "metadata": str,
            "content_hash": str,
            "run_id": int,
        },
        pk="trace_id",
        not_null={"input", "ts", "week", "content_hash"},
    )
    for columns in (["week", "ts"], ["ts"], ["cohort"], ["intent"]):
        db.table("traces").create_index(columns)
    db.table("ingest_runs").create(
        {
            "id": int,
            "started_at": str,
            "finished_at": str,
            "actor": str,
            "sources": str,
            "status": str,
            "lines_read": int,
            "ingested": int,
            "duplicates": int,
            "changed": int,
            "quarantined": int,
            "blank_lines": int,
        },
        pk="id",
    )
    db.table("quarantine").create(
        {"id": int, "run_id": int, "file": str, "line_no": int, "reason": str, "raw": bytes},
        pk="id",
        foreign_keys=[("run_id", "ingest_runs", "id")],
    )
    db.table("quarantine").create_index(["run_id", "line_no"])
    db.table("ingest_conflicts").create(
        {"id": int, "run_id": int, "file": str, "line_no": int, "trace_id": str},
        pk="id",
        foreign_keys=[("run_id", "ingest_runs", "id")],
    )
    db.table("ingest_conflicts").create_index(["run_id"])
    db.table("audit_log").create(
        {"id": int, "at": str, "actor": str, "action": str, "entity": str, "entity_id": str, "detail": str},
        pk="id",
    )
    db.table("audit_log").create_index(["at"])


@migrations()
def m002_scrubs_and_review(db: Database) -> None:
    db.table("scrubs").create(
        {
            "id": int,
            "trace_id": str,
            "scrubber_version": str,
            "status": str,
            "input": str,
            "output": str,
            "messages": str,
            "created_at": str,
            "reviewed_by": str,
            "reviewed_at": str,
            "note": str,
        },
        pk="id",
        not_null={"trace_id", "status", "input"},
        foreign_keys=[("trace_id", "traces", "trace_id")],
    )
    db.table("scrubs").create_index(["trace_id"], unique=True)
    db.table("scrubs").create_index(["status", "id"])
    db.table("redactions").create(
        {
            "id": int,
            "scrub_id": int,
            "field": str,
            "start": int,
            "end": int,
            "label": str,
            "detector": str,
            "removed_by": str,
        },
        pk="id",
        foreign_keys=[("scrub_id", "scrubs", "id")],
    )
    db.table("redactions").create_index(["scrub_id"])
    db.table("scrub_fixes").create(
        {"id": int, "scrub_id": int, "kind": str, "label": str, "detector": str, "actor": str, "at": str},
        pk="id",
        foreign_keys=[("scrub_id", "scrubs", "id")],
    )
    db.table("scrub_fixes").create_index(["at"])
    db.table("known_names").create(
        {"id": int, "name": str, "added_by": str, "added_at": str},
        pk="id",
        not_null={"name"},
    )
    db.execute("CREATE UNIQUE INDEX idx_known_names_name ON known_names(name COLLATE NOCASE)")


@migrations()
def m003_sampling(db: Database) -> None:
    db.table("sampling_plans").create(
        {"name": str, "body": str, "updated_at": str, "updated_by": str}, pk="name", not_null={"body"}
    )
    db.table("sample_batches").create(
        {
            "id": int,
            "plan_name": str,
            "plan": str,
            "seed": int,
            "week": str,
            "created_by": str,
            "created_at": str,
            "window": int,
            "selected": int,
            "sampled": int,
            "dropped": int,
            "reasons": str,
        },
        pk="id",
        not_null={"plan", "seed", "week"},
    )
    db.table("batch_items").create(
        {"batch_id": int, "trace_id": str, "reasons": str, "stratum": str, "priority": int},
        pk=("batch_id", "trace_id"),
        not_null={"reasons", "priority"},
        foreign_keys=[("batch_id", "sample_batches", "id"), ("trace_id", "traces", "trace_id")],
    )
    db.table("batch_items").create_index(["trace_id"])
    db.table("batch_strata").create(
        {
            "batch_id": int,
            "kind": str,
            "rule": str,
            "stratum": str,
            "quota": int,
            "population": int,
            "selected": int,
            "dropped": int,
            "in_batch": int,
        },
        pk=("batch_id", "rule", "stratum"),
        foreign_keys=[("batch_id", "sample_batches", "id")],
    )
    # Per-week strata counts read only these index entries, never the trace rows.
    db.table("traces").create_index(["week", "cohort", "intent"])
    db.table("traces").create_index(["week", "cost_usd"])


@migrations()
def m004_labels_taxonomy_embeddings(db: Database) -> None:
    db.table("taxonomy").create(
        {
            "code": str,
            "name": str,
            "definition": str,
            "status": str,
            "merged_into": str,
            "created_by": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="code",
        not_null={"name", "definition", "status"},
    )
    db.table("taxonomy_history").create(
        {"id": int, "code": str, "change": str, "name": str, "definition": str, "actor": str, "at": str},
        pk="id",
        foreign_keys=[("code", "taxonomy", "code")],
    )
    db.table("taxonomy_history").create_index(["code", "id"])
    db.table("batch_overlap").create(
        {"batch_id": int, "labels_per_item": int, "set_by": str, "set_at": str},
        pk="batch_id",
        foreign_keys=[("batch_id", "sample_batches", "id")],
    )
    db.table("label_queue").create(
        {
            "trace_id": str,
            "scrub_id": int,
            "batch_id": int,
            "batch_rank": int,
            "priority": int,
            "needed": int,
            "done": int,
            "is_open": int,
            "claim_id": int,
            "claimed_by": str,
            "claim_expires": str,
            "queued_at": str,
        },
        pk="trace_id",
        not_null={"batch_rank", "priority", "needed", "done", "is_open"},
        foreign_keys=[("trace_id", "traces", "trace_id")],
    )
    db.table("label_queue").create_index(["is_open", "batch_rank", "priority", "trace_id"])
    db.table("label_queue").create_index(["claimed_by"])
    db.table("label_queue").create_index(["batch_id", "is_open"])
    db.table("claims").create(
        {"id": int, "trace_id": str, "labeler": str, "claimed_at": str, "expires_at": str, "state": str},
        pk="id",
        not_null={"trace_id", "labeler", "claimed_at", "expires_at", "state"},
        foreign_keys=[("trace_id", "traces", "trace_id")],
    )
    db.table("claims").create_index(["trace_id"])
    db.table("labels").create(
        {
            "id": int,
            "trace_id": str,
            "batch_id": int,
            "labeler": str,
            "kind": str,
            "code": str,
            "original_code": str,
            "expected": str,
            "pass_criterion": str,
            "note": str,
            "adversarial": str,
            "via": str,
            "sibling_of": int,
            "claim_id": int,
            "created_at": str,
            "undone_at": str,
            "undone_by": str,
        },
        pk="id",
        not_null={"trace_id", "labeler", "kind", "adversarial", "via", "created_at"},
        foreign_keys=[("trace_id", "traces", "trace_id"), ("code", "taxonomy", "code")],
    )
    # One live label per labeler and trace, enforced by the database itself.
    db.execute("CREATE UNIQUE INDEX idx_labels_live ON labels(trace_id, labeler) WHERE undone_at IS NULL")
    db.table("labels").create_index(["labeler", "id"])
    db.table("labels").create_index(["code", "created_at"])
    db.table("labels").create_index(["batch_id", "labeler"])
    db.table("labels").create_index(["sibling_of"])
    db.table("embeddings").create(
        {"text_hash": str, "model": str, "dim": int, "vector": bytes, "created_at": str},
        pk=("text_hash", "model"),
        not_null={"dim", "vector"},
    )
    # The queue policy as this migration first wrote it, frozen here (m030 drops the triggers; the live
    # policy is flywheel.review.label_queue): approved scrubs join the queue in the first batch that sampled
    # them; traces in no batch rank after every batch.
    db.execute(
        """
    INSERT OR IGNORE INTO label_queue
        (trace_id, scrub_id, batch_id, batch_rank, priority, needed, done, is_open, queued_at)
    SELECT s.trace_id, s.id, b.batch_id, coalesce(b.batch_id, 9223372036854775807), coalesce(b.priority, 3),
           coalesce(o.labels_per_item, 1), 0, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM (SELECT id, trace_id FROM scrubs WHERE status = 'approved') s
    LEFT JOIN batch_items b ON b.trace_id = s.trace_id
         AND b.batch_id = (SELECT min(batch_id) FROM batch_items WHERE trace_id = s.trace_id)
    LEFT JOIN batch_overlap o ON o.batch_id = b.batch_id"""
    )
    db.execute(
        """CREATE TRIGGER label_queue_on_approve AFTER UPDATE OF status ON scrubs
    WHEN NEW.status = 'approved' AND OLD.status IS NOT 'approved' BEGIN
    INSERT OR IGNORE INTO label_queue
        (trace_id, scrub_id, batch_id, batch_rank, priority, needed, done, is_open, queued_at)
    SELECT s.trace_id, s.id, b.batch_id, coalesce(b.batch_id, 9223372036854775807), coalesce(b.priority, 3),
           coalesce(o.labels_per_item, 1), 0, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM (SELECT NEW.id AS id, NEW.trace_id AS trace_id) s
    LEFT JOIN batch_items b ON b.trace_id = s.trace_id
         AND b.batch_id = (SELECT min(batch_id) FROM batch_items WHERE trace_id = s.trace_id)
    LEFT JOIN batch_overlap o ON o.batch_id = b.batch_id; END"""
    )
    db.execute(
        """CREATE TRIGGER label_queue_on_insert AFTER INSERT ON scrubs WHEN NEW.status = 'approved' BEGIN
    INSERT OR IGNORE INTO label_queue
        (trace_id, scrub_id, batch_id, batch_rank, priority, needed, done, is_open, queued_at)
    SELECT s.trace_id, s.id, b.batch_id, coalesce(b.batch_id, 9223372036854775807), coalesce(b.priority, 3),
           coalesce(o.labels_per_item, 1), 0, 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM (SELECT NEW.id AS id, NEW.trace_id AS trace_id) s
    LEFT JOIN batch_items b ON b.trace_id = s.trace_id
         AND b.batch_id = (SELECT min(batch_id) FROM batch_items WHERE trace_id = s.trace_id)
    LEFT JOIN batch_overlap o ON o.batch_id = b.batch_id; END"""
    )
    db.execute(
        """CREATE TRIGGER label_queue_on_batch AFTER INSERT ON batch_items BEGIN
            UPDATE label_queue SET batch_id = NEW.batch_id, batch_rank = NEW.batch_id,
                priority = NEW.priority
            WHERE trace_id = NEW.trace_id AND batch_id IS NULL;
        END"""
    )


@migrations()
def m005_eval_sets(db: Database) -> None:
    # An eval row's content is frozen once written: an edit is a new row that ``replaces`` the old one.
    db.table("eval_rows").create(
        {
            "id": str,
            "external_id": str,
            "input": str,
            "messages": str,
            "expected": str,
            "criterion": str,
            "code": str,
            "adversarial": int,
            "adversarial_kind": str,
            "tags": str,
            "source": str,
            "trace_id": str,
            "scrub_id": int,
            "source_file": str,
            "source_line": int,
            "labeled_by": str,
            "labeled_at": str,
            "replaces": str,
            "content_hash": str,
            "created_at": str,
        },
        pk="id",
        not_null={"input", "source", "adversarial", "content_hash", "created_at"},
    )
    db.table("eval_rows").create_index(["trace_id"])
    db.table("eval_rows").create_index(["content_hash"])
    db.table("eval_versions").create(
        {
            "version": int,
            "kind": str,
            "note": str,
            "created_by": str,
            "created_at": str,
            "added": int,
            "retired": int,
            "carried": int,
            "rows": int,
        },
        pk="version",
        not_null={"kind", "created_by", "created_at"},
    )
    # Membership of each version: ``active`` rows are what a normal export and a run read; ``archived``
    # rows were retired (kept, never deleted) and are exported only on request.
    db.table("eval_version_rows").create(
        {"version": int, "row_id": str, "state": str},
        pk=("version", "row_id"),
        not_null={"state"},
        foreign_keys=[("version", "eval_versions", "version"), ("row_id", "eval_rows", "id")],
    )
    db.table("eval_version_rows").create_index(["row_id"])


@migrations()
def m006_eval_results(db: Database) -> None:
    # A regression run of one system on one eval-set version, imported from a results file or graded
    # by the judge; ``passed`` is NULL while a row has an output but no verdict yet.
    db.table("eval_runs").create(
        {
            "id": int,
            "version": int,
            "system": str,
            "run_label": str,
            "source_file": str,
            "format": str,
            "imported_by": str,
            "imported_at": str,
        },
        pk="id",
        not_null={"version", "system", "imported_by", "imported_at"},
        foreign_keys=[("version", "eval_versions", "version")],
    )
    db.table("eval_runs").create_index(["version", "system"])
    db.table("eval_results").create(
        {
            "id": int,
            "run_id": int,
            "row_id": str,
            "repeat": int,
            "passed": int,
            "score": float,
            "output": str,
            "graded_by": str,
        },
        pk="id",
        not_null={"run_id", "row_id", "repeat"},
        foreign_keys=[("run_id", "eval_runs", "id"), ("row_id", "eval_rows", "id")],
    )
    db.execute("CREATE UNIQUE INDEX idx_eval_results_run_row ON eval_results(run_id, row_id, repeat)")
    db.table("eval_results").create_index(["row_id"])


@migrations()
def m010_ingest_heartbeat_and_quarantine_per_line(db: Database) -> None:
    # A run that stops beating while "running" was killed; the page shows it as interrupted.
    db.execute("ALTER TABLE ingest_runs ADD COLUMN heartbeat_at TEXT")
    db.execute("UPDATE ingest_runs SET heartbeat_at = coalesce(finished_at, started_at)")
    # One quarantine row per source line (file, line number, content): a re-run or a concurrent
    # import of the same file updates ``last_run_id`` instead of adding a copy.
    db.execute("ALTER TABLE quarantine ADD COLUMN raw_hash TEXT")
    db.execute("ALTER TABLE quarantine ADD COLUMN last_run_id INTEGER")
    rows = db.execute("SELECT id, raw FROM quarantine").fetchall()
    db.conn.executemany(
        "UPDATE quarantine SET raw_hash = ?, last_run_id = run_id WHERE id = ?",
        [(quarantine_hash(raw), row_id) for row_id, raw in rows],
    )
    db.execute(
        """DELETE FROM quarantine WHERE id NOT IN
           (SELECT min(id) FROM quarantine GROUP BY file, line_no, raw_hash)"""
    )
    db.execute("CREATE UNIQUE INDEX idx_quarantine_line ON quarantine(file, line_no, raw_hash)")
    db.execute("CREATE INDEX idx_quarantine_last_run ON quarantine(last_run_id, line_no)")


def quarantine_hash(raw: bytes | None) -> str:
    """The content key of a quarantined line."""
    return hashlib.blake2b(raw or b"", digest_size=16).hexdigest()


@migrations()
def m020_scrub_versions_review_claims(db: Database) -> None:
    # A trace may be scrubbed again by a newer scrubber: one row per (trace, scrubber version), of which
    # exactly one is current. Reviewers claim a scrub like labelers claim an item; skips are kept.
    db.execute("ALTER TABLE scrubs ADD COLUMN is_current INTEGER NOT NULL DEFAULT 1")
    db.execute("ALTER TABLE scrubs ADD COLUMN claimed_by TEXT")
    db.execute("ALTER TABLE scrubs ADD COLUMN claim_expires TEXT")
    db.execute("DROP INDEX idx_scrubs_trace_id")
    db.execute("CREATE UNIQUE INDEX idx_scrubs_current ON scrubs(trace_id) WHERE is_current = 1")
    db.execute("CREATE UNIQUE INDEX idx_scrubs_trace_version ON scrubs(trace_id, scrubber_version)")
    db.execute(
        """CREATE TABLE review_skips (
            reviewer TEXT NOT NULL,
            scrub_id INTEGER NOT NULL REFERENCES scrubs(id),
            skipped_at TEXT NOT NULL,
            PRIMARY KEY (reviewer, scrub_id))"""
    )


@migrations()
def m021_known_name_history(db: Database) -> None:
    # Removed customer names live here, readable by role, not in the audit log that names every action.
    db.execute(
        """CREATE TABLE known_name_history (
            id INTEGER PRIMARY KEY, name TEXT NOT NULL, change TEXT NOT NULL, actor TEXT, at TEXT)"""
    )
    moved = db.execute(
        "SELECT id, actor, at, entity_id FROM audit_log WHERE action = 'remove_known_name'"
    ).fetchall()
    for audit_id, actor, at, name in moved:
        history_id = db.execute(
            "INSERT INTO known_name_history (name, change, actor, at) VALUES (?, 'removed', ?, ?)",
            [name, actor, at],
        ).lastrowid
        db.execute("UPDATE audit_log SET entity_id = ? WHERE id = ?", [str(history_id), audit_id])


@migrations()
def m030_label_queue_without_triggers(db: Database) -> None:
    # Enqueueing is an explicit library call now (flywheel.review.label_queue), made in the approving
    # transaction.
    for name in ("label_queue_on_approve", "label_queue_on_insert", "label_queue_on_batch"):
        db.execute(f"DROP TRIGGER IF EXISTS {name}")


@migrations()
def m031_scrub_vectors(db: Database) -> None:
    # Which cached embedding holds each part of an approved scrub, so siblings read vectors by scrub.
    db.table("scrub_vectors").create(
        {"scrub_id": int, "part": str, "model": str, "text_hash": str},
        pk=("scrub_id", "part", "model"),
        not_null={"text_hash"},
        foreign_keys=[("scrub_id", "scrubs", "id")],
    )
    db.table("label_queue").create_index(["scrub_id"])


@migrations()
def m040_trace_rollups_and_listing_indexes(db: Database) -> None:
    # Counts per week, cohort, intent and signal ('' for all traces), kept up to a rowid watermark so
    # the overview reads a few thousand rows instead of every trace; rebuilt when the signal table changes.
    db.table("trace_rollup").create(
        {"week": str, "cohort": str, "intent": str, "signal": str, "traces": int},
        pk=("week", "cohort", "intent", "signal"),
        not_null={"traces"},
    )
    db.table("rollup_state").create({"name": str, "definition": str, "upto_rowid": int}, pk="name")
    # Listing indexes end in trace_id, the tie-break of keyset pagination; they replace the narrower
    # ones so an import maintains no more indexes than before.
    for old, columns in (("ts", "ts"), ("cohort", "cohort, ts"), ("intent", "intent, ts")):
        db.execute(f"DROP INDEX IF EXISTS idx_traces_{old}")
        db.execute(f"CREATE INDEX idx_traces_{old}_list ON traces({columns}, trace_id)")
    db.execute("CREATE INDEX idx_traces_judge_list ON traces(judge_score, trace_id)")
    db.execute("CREATE INDEX idx_traces_cost_list ON traces(cost_usd, trace_id)")
    # Anomalies are a few percent of traffic: small partial indexes list and count them by time.
    for name, predicate in (
        ("thumbs_down", "thumbs = 'down'"),
        ("regenerated", "regenerated = 1"),
        ("retried", "retried = 1"),
        ("escalated", "escalated = 1"),
        ("guardrail_tripped", "guardrail_tripped = 1"),
        ("schema_invalid", "schema_valid = 0"),
    ):
        db.execute(f"CREATE INDEX idx_traces_{name} ON traces(ts, trace_id) WHERE {predicate}")
    for name, columns in (("actor", "actor, id"), ("action", "action, id"), ("entity", "entity, entity_id")):
        db.execute(f"CREATE INDEX idx_audit_log_{name} ON audit_log({columns})")


@migrations()
def m050_batch_source_and_sql(db: Database) -> None:
    # Where a batch was sampled (NULL: the store itself), by which engine, the SQL that ran, and how
    # many picked rows a source sent that failed validation.
    for column, kind in (("source", str), ("engine", str), ("sql", str), ("quarantined", int)):
        db.table("sample_batches").add_column(column, kind)
    db.table("sample_batches").create_index(["plan_name", "week"])


@migrations()
def m060_eval_lifecycle(db: Database) -> None:
    # When a run ran (an injected clock in tests and the demo) and the row ids its file named that the
    # version does not hold; how many rows a version changed or withdrew.
    db.table("eval_runs").add_column("ran_at", str)
    db.table("eval_runs").add_column("unknown_ids", str)
    db.table("eval_versions").add_column("changed", int)
    db.table("eval_versions").add_column("withdrawn", int)
    # A retirement a lead confirmed; ``left_version`` is the version whose archive took the row.
    db.table("eval_retirements").create(
        {"row_id": str, "reason": str, "confirmed_by": str, "confirmed_at": str, "left_version": int},
        pk="row_id",
        not_null={"confirmed_by", "confirmed_at"},
        foreign_keys=[("row_id", "eval_rows", "id")],
    )
    # A lead's decision on a trace its labelers disagree on: the label to fold (NULL: keep it out).
    db.table("eval_settlements").create(
        {"trace_id": str, "label_id": int, "settled_by": str, "settled_at": str},
        pk="trace_id",
        not_null={"settled_by", "settled_at"},
        foreign_keys=[("trace_id", "traces", "trace_id"), ("label_id", "labels", "id")],
    )
    db.table("eval_gate_settings").create(
        {"id": int, "adversarial_min": float, "set_by": str, "set_at": str},
        pk="id",
        not_null={"adversarial_min"},
    )
    # A version, its membership and a row's content never change once written.
    for table in ("eval_versions", "eval_version_rows"):
        for event in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_immutable_{event.lower()} BEFORE {event} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{table} is immutable: make a new version'); END"
            )
    content = "input, messages, expected, criterion, code, adversarial, adversarial_kind, tags, content_hash"
    db.execute(
        f"CREATE TRIGGER eval_rows_frozen BEFORE UPDATE OF {content} ON eval_rows"
        " BEGIN SELECT RAISE(ABORT, 'eval rows are frozen: an edit makes a new row'); END"
    )
    db.execute(
        "CREATE TRIGGER eval_rows_kept BEFORE DELETE ON eval_rows"
        " BEGIN SELECT RAISE(ABORT, 'eval rows are never deleted: retire them'); END"
    )


@migrations()
def m070_drift(db: Database) -> None:
    # Vectors keyed by text hash, model name and model revision: a new model starts a new baseline.
    db.table("drift_vectors").create(
        {"text_hash": str, "model": str, "revision": str, "dim": int, "vector": bytes, "created_at": str},
        pk=("text_hash", "model", "revision"),
        not_null={"dim", "vector"},
    )
    # Machine scrubs of traces no batch sampled: scrubbed once, embedded by drift, shown to leads only.
    db.table("drift_texts").create(
        {"trace_id": str, "scrubber_version": str, "text": str, "created_at": str},
        pk="trace_id",
        not_null={"scrubber_version", "text"},
        foreign_keys=[("trace_id", "traces", "trace_id")],
    )
    db.table("drift_references").create(
        {"version": int, "from_week": str, "to_week": str, "set_by": str, "set_at": str},
        pk="version",
        not_null={"from_week", "to_week"},
        foreign_keys=[("version", "eval_versions", "version")],
    )
    db.table("drift_runs").create(
        {
            "id": int,
            "at": str,
            "actor": str,
            "scope": str,
            "eval_version": int,
            "model": str,
            "revision": str,
            "tau": float,
            "ref_from": str,
            "ref_to": str,
            "ref_n": int,
            "ref_share": float,
            "alpha": float,
            "min_excess": float,
            "max_traces": int,
            "embedded": int,
            "scrubbed": int,
        },
        pk="id",
        not_null={"eval_version", "model", "tau"},
    )
    db.table("drift_windows").create(
        {
            "run_id": int,
            "window": str,
            "n": int,
            "mean_distance": float,
            "mean_lo": float,
            "mean_hi": float,
            "share_beyond": float,
            "share_lo": float,
            "share_hi": float,
            "tau": float,
            "p_value": float,
            "alarm": int,
            "eval_version": int,
            "in_reference": int,
        },
        pk=("run_id", "window"),
        foreign_keys=[("run_id", "drift_runs", "id")],
    )
    db.table("drift_windows").create_index(["window", "run_id"])
    db.table("drift_clusters").create(
        {"run_id": int, "window": str, "cluster": int, "name": str, "terms": str, "size": int},
        pk=("run_id", "window", "cluster"),
        foreign_keys=[("run_id", "drift_runs", "id")],
    )
    # Far traces only: what clusters and the drift-driven batch need.
    db.table("drift_members").create(
        {
            "run_id": int,
            "window": str,
            "trace_id": str,
            "distance": float,
            "cluster": int,
            "nearest_row": str,
        },
        pk=("run_id", "trace_id"),
        foreign_keys=[("run_id", "drift_runs", "id"), ("trace_id", "traces", "trace_id")],
    )
    db.table("drift_members").create_index(["run_id", "window", "cluster", "distance"])


@migrations()
def m080_judge(db: Database) -> None:
    # A rubric is never edited in place: saving it again writes the next version.
    db.table("rubrics").create(
        {"id": int, "name": str, "version": int, "body": str, "created_by": str, "created_at": str},
        pk="id",
        not_null={"name", "version", "body", "created_by", "created_at"},
    )
    db.execute("CREATE UNIQUE INDEX idx_rubrics_name_version ON rubrics(name, version)")
    db.table("judge_runs").create(
        {
            "id": int,
            "rubric_id": int,
            "target": str,
            "model": str,
            "base_url": str,
            "status": str,
            "started_by": str,
            "started_at": str,
            "finished_at": str,
            "requested": int,
            "judged": int,
            "errors": int,
            "failed": int,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
        },
        pk="id",
        not_null={"rubric_id", "target", "model", "status", "started_by", "started_at"},
        foreign_keys=[("rubric_id", "rubrics", "id")],
    )
    # One judgment per rubric version, subject and position (pairs are judged in both orders), so an
    # interrupted run that is started again cannot grade anything twice.
    db.table("judgments").create(
        {
            "id": int,
            "run_id": int,
            "rubric_id": int,
            "subject_kind": str,
            "subject_id": str,
            "position": str,
            "status": str,
            "verdict": str,
            "score": float,
            "reason": str,
            "metrics": str,
            "error": str,
            "model": str,
            "prompt_hash": str,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "attempts": int,
            "created_at": str,
        },
        pk="id",
        not_null={"run_id", "rubric_id", "subject_kind", "subject_id", "position", "status", "created_at"},
        foreign_keys=[("run_id", "judge_runs", "id"), ("rubric_id", "rubrics", "id")],
    )
    db.execute(
        "CREATE UNIQUE INDEX idx_judgments_subject"
        " ON judgments(rubric_id, subject_kind, subject_id, position)"
    )
    db.table("judgments").create_index(["run_id"])
    db.table("judgments").create_index(["subject_kind", "subject_id"])
    db.table("quality_settings").create(
        {"name": str, "value": float, "updated_by": str, "updated_at": str}, pk="name", not_null={"value"}
    )


@migrations()
def m090_weekly_cycle(db: Database) -> None:
    # Each inbox file is ingested once, known by its content hash (a renamed copy is not new).
    db.table("inbox_files").create(
        {"content_hash": str, "name": str, "run_id": int, "ingested_at": str},
        pk="content_hash",
        not_null={"name", "ingested_at"},
    )
    db.table("cycles").create(
        {
            "id": int,
            "started_at": str,
            "finished_at": str,
            "actor": str,
            "status": str,
            "week": str,
            "needs_attention": int,
            "report": str,
        },
        pk="id",
        not_null={"started_at", "actor", "status"},
    )
    db.table("cycle_settings").create(
        {"id": int, "fold_in": int, "baseline": str, "set_by": str, "set_at": str}, pk="id"
    )


@migrations()
def m100_fewer_week_indexes(db: Database) -> None:
    # Every per-week query reads (week, cohort, intent): no query plan chose (week, ts), and (week,
    # cost_usd) served only week filters. Each index an import keeps current costs it CPU at scale.
    for name in ("idx_traces_week_ts", "idx_traces_week_cost_usd"):
        db.execute(f"DROP INDEX IF EXISTS {name}")


@migrations()
def m110_signal_rollup(db: Database) -> None:
    # Per period (week or day) and cohort: traces, rate-signal events, mean cost and p95 latency, kept
    # up to a rowid watermark in rollup_state; a period that gains traces is recomputed whole.
    db.table("signal_rollup").create(
        {
            "kind": str,
            "period": str,
            "cohort": str,
            "n": int,
            "s0": int,
            "s1": int,
            "s2": int,
            "s3": int,
            "s4": int,
            "cost": float,
            "p95": float,
        },
        pk=("kind", "period", "cohort"),
        not_null={"n"},
    )


@migrations()
def m120_arm_rollup(db: Database) -> None:
    # Per metadata key (a release or variant field), value and ISO week: traces and rate-signal events,
    # kept up to a rowid watermark per key ('arms:<key>' in rollup_state).
    db.table("arm_rollup").create(
        {
            "key": str,
            "arm": str,
            "week": str,
            "n": int,
            "s0": int,
            "s1": int,
            "s2": int,
            "s3": int,
            "s4": int,
        },
        pk=("key", "arm", "week"),
        not_null={"n"},
    )


@migrations()
def m130_drift_far_point(db: Database) -> None:
    # Per window: the reweighted reference's share beyond τ, and the far point's τ and shares; the
    # alarm tests both points, so a lead can see which one moved.
    for column in ("ref_share", "far_tau", "far_share", "far_ref_share"):
        db.table("drift_windows").add_column(column, float)


@migrations()
def m140_fold_leave_outs_and_withdrawals(db: Database) -> None:
    # A row a lead left out of one fold-in, with the reason: it keeps waiting and the next preview shows
    # it; ``item`` names what the preview proposed ("add t-000123", "retire r-000045").
    db.table("eval_leave_outs").create(
        {
            "id": int,
            "item": str,
            "action": str,
            "trace_id": str,
            "row_id": str,
            "reason": str,
            "left_by": str,
            "left_at": str,
            "after_version": int,
            "fold_version": int,
        },
        pk="id",
        not_null={"item", "action", "reason", "left_by", "left_at"},
    )
    db.table("eval_leave_outs").create_index(["item"])
    # Why a row left the set without being retired: a lead's withdrawal (``source`` 'withdraw') or a
    # fold-in that found its labels undone or its scrub reopened ('fold_in'); ``version`` is the first
    # version without it.
    db.table("eval_withdrawals").create(
        {
            "row_id": str,
            "trace_id": str,
            "reason": str,
            "source": str,
            "withdrawn_by": str,
            "withdrawn_at": str,
            "version": int,
        },
        pk="row_id",
        not_null={"reason", "source", "withdrawn_by", "withdrawn_at", "version"},
        foreign_keys=[("row_id", "eval_rows", "id"), ("version", "eval_versions", "version")],
    )
    db.table("eval_withdrawals").create_index(["trace_id"])


@migrations()
def m150_anomalies_over_the_cap(db: Database) -> None:
    # The cap limits stratified and random picks only: a batch keeps every anomaly even when they alone
    # exceed it. The batch records its cap and how many anomalies its plan picked, and each ledger row
    # how many of its batch traces are held beyond the cap.
    db.table("sample_batches").add_column("cap", int)
    db.table("sample_batches").add_column("anomalies", int)
    db.table("batch_strata").add_column("over_cap", int)


@migrations()
def m180_experiments(db: Database) -> None:
    # A declared A/B experiment: what decides it is fixed before its data is read, so a verdict cannot
    # be shopped for by changing the unit, the split, the metric or the test's parameters afterwards.
    db.table("experiments").create(
        {
            "id": int,
            "name": str,
            "key": str,
            "control": str,
            "treatment": str,
            "unit": str,
            "treatment_share": float,
            "primary_metric": str,
            "min_days": int,
            "min_effect": float,
            "alpha": float,
            "power": float,
            "start": str,
            "declared_by": str,
            "declared_at": str,
        },
        pk="id",
        not_null={
            "name",
            "key",
            "control",
            "treatment",
            "unit",
            "treatment_share",
            "primary_metric",
            "start",
        },
    )
    db.table("experiments").create_index(["name"], unique=True)


@migrations()
def m170_release_decisions(db: Database) -> None:
    # A lead's release decision on one version: the verdict, every criterion and the waived rows with
    # their reasons, as the gate stated them then. The newest shipped decision names the live system.
    db.table("release_decisions").create(
        {
            "id": int,
            "version": int,
            "baseline": str,
            "challenger": str,
            "verdict": str,
            "criteria": str,
            "waived": str,
            "unpaired": str,
            "flaky": str,
            "adversarial_min": float,
            "require_improvement": int,
            "decided_by": str,
            "decided_at": str,
        },
        pk="id",
        not_null={"version", "baseline", "challenger", "verdict", "criteria", "decided_by", "decided_at"},
    )
    db.table("release_decisions").create_index(["verdict", "decided_at"])
    for event in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER release_decisions_immutable_{event.lower()} BEFORE {event} ON release_decisions"
            " BEGIN SELECT RAISE(ABORT, 'release_decisions is immutable: record a new decision'); END"
        )


@migrations()
def m200_interrupted_work_and_import_hashes(db: Database) -> None:
    # Work that records a "running" state also records the process doing it (host, pid and the pid's
    # start time, so a reused pid is not taken for the dead one) and a heartbeat: a row whose process is
    # gone, or that stopped beating, is marked interrupted when the store is next opened.
    for table in ("cycles", "ingest_runs", "judge_runs"):
        for column, kind in (("host", str), ("pid", int), ("pid_started", str), ("heartbeat_at", str)):
            if column not in db[table].columns_dict:
                db.table(table).add_column(column, kind)
    # Each scrub names the audit entry written in the transaction that stored it.
    db.table("scrubs").add_column("audit_id", int)
    _audit_old_scrubs(db)
    # The SHA-256 of the file a version or a run was imported from: the same file is imported once.
    db.table("eval_versions").add_column("source_sha256", str)
    db.table("eval_runs").add_column("source_sha256", str)
    db.table("eval_versions").create_index(["source_sha256"])
    db.table("eval_runs").create_index(["version", "system", "source_sha256"])


def _audit_old_scrubs(db: Database) -> None:
    """Tie each earlier scrub to the run entry that counted it; scrubs a killed run committed without
    one (the entry came only after the last chunk) get an entry of their own."""
    unclaimed = [tuple(r) for r in db.execute("SELECT id, created_at FROM scrubs ORDER BY id")]
    entries = db.execute(
        "SELECT id, at, entity_id FROM audit_log WHERE action = 'scrub' AND entity = 'traces' ORDER BY id"
    ).fetchall()
    for audit_id, at, count in entries:
        before = [s for s in unclaimed if s[1] <= at]
        taken = before[-int(count) :] if count.isdigit() and int(count) else []
        db.conn.executemany("UPDATE scrubs SET audit_id = ? WHERE id = ?", [(audit_id, s[0]) for s in taken])
        taken_ids = {s[0] for s in taken}
        unclaimed = [s for s in unclaimed if s[0] not in taken_ids]
    if unclaimed:
        ids = [s[0] for s in unclaimed]
        audit(db, "flywheel", "scrub_recovered", "scrubs", len(ids), scrub_ids=ids)
        audit_id = db.execute("SELECT max(id) FROM audit_log").fetchone()[0]
        db.conn.executemany("UPDATE scrubs SET audit_id = ? WHERE id = ?", [(audit_id, i) for i in ids])


@migrations()
def m220_data_subjects_retention_never_redact(db: Database) -> None:
    # Raw text that is gone (retention or a data subject's erasure): the trace keeps its id, time,
    # signals and approved scrub; ``reason`` says why and when, for every page that shows the trace.
    db.table("raw_purges").create(
        {"trace_id": str, "reason": str, "purged_by": str, "purged_at": str},
        pk="trace_id",
        not_null={"reason", "purged_at"},
    )
    # Keyed hashes of normalised tokens of raw text (never the text), so a data subject is found fast.
    db.execute(
        "CREATE TABLE subject_index (token INTEGER NOT NULL, trace_rowid INTEGER NOT NULL,"
        " PRIMARY KEY (token, trace_rowid)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX idx_subject_index_trace ON subject_index(trace_rowid)")
    db.table("subject_keys").create({"name": str, "secret": bytes}, pk="name", not_null={"secret"})
    db.table("exports").create(
        {"id": int, "version": int, "format": str, "path": str, "rows": int, "actor": str, "at": str},
        pk="id",
        not_null={"version", "format", "path", "at"},
    )
    db.table("exports").create_index(["version"])
    db.table("never_redact").create(
        {"id": int, "phrase": str, "added_by": str, "added_at": str}, pk="id", not_null={"phrase"}
    )
    db.execute("CREATE UNIQUE INDEX idx_never_redact_phrase ON never_redact(phrase COLLATE NOCASE)")
    # An erased row's content is replaced by its tombstone, the one change a frozen row accepts: the
    # tombstone is written first (never changed afterwards) and the update must put exactly its text in.
    db.table("eval_row_tombstones").create(
        {"row_id": str, "text": str, "reason": str, "erased_by": str, "erased_at": str},
        pk="row_id",
        not_null={"text", "erased_at"},
    )
    for event in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER eval_row_tombstones_immutable_{event.lower()} BEFORE {event}"
            " ON eval_row_tombstones BEGIN SELECT RAISE(ABORT, 'tombstones are never changed'); END"
        )
    content = "input, messages, expected, criterion, code, adversarial, adversarial_kind, tags, content_hash"
    db.execute("DROP TRIGGER eval_rows_frozen")
    db.execute(
        f"CREATE TRIGGER eval_rows_frozen BEFORE UPDATE OF {content} ON eval_rows"
        " WHEN NOT EXISTS (SELECT 1 FROM eval_row_tombstones t WHERE t.row_id = OLD.id"
        " AND NEW.input = t.text AND NEW.messages IS NULL AND NEW.expected IS NULL"
        " AND NEW.criterion IS NULL AND NEW.tags IS NULL)"
        " BEGIN SELECT RAISE(ABORT, 'eval rows are frozen: an edit makes a new row'); END"
    )


@migrations()
def m230_named_eval_sets_coverage_and_checks(db: Database) -> None:
    # Several eval-set lineages in one store (e.g. a frozen ``regression`` set beside a ``quality`` set
    # refreshed from production). Version numbers stay unique across the store, so every table that
    # names a version keeps naming it alone. A frozen set takes no new version, ever: no fold-in, edit,
    # withdrawal or retirement. A store that had versions keeps them in one set, "default".
    db.table("eval_sets").create(
        {
            "name": str,
            "frozen": int,
            "note": str,
            "created_by": str,
            "created_at": str,
            "frozen_by": str,
            "frozen_at": str,
        },
        pk="name",
        not_null={"frozen", "created_by", "created_at"},
    )
    db.table("eval_versions").add_column("eval_set", str)
    db.table("eval_rows").add_column("eval_set", str)
    db.table("eval_leave_outs").add_column("eval_set", str)
    # A labeler's "handled well: add as coverage" (on a not-a-bug label) and the row it makes; a pass
    # criterion's code check (JSON, validated when written), graded here instead of by a judge.
    db.table("labels").add_column("coverage", int)
    db.table("labels").add_column("pass_check", str)
    db.table("eval_rows").add_column("coverage", int)
    db.table("eval_rows").add_column("pass_check", str)
    db.table("eval_rows").create_index(["eval_set"])
    db.table("eval_versions").create_index(["eval_set", "version"])
    if db.execute("SELECT 1 FROM eval_versions LIMIT 1").fetchone():
        first = db.execute(
            "SELECT created_by, created_at FROM eval_versions ORDER BY version LIMIT 1"
        ).fetchone()
        db.table("eval_sets").insert(
            {"name": "default", "frozen": 0, "created_by": first[0], "created_at": first[1]}
        )
        db.execute("DROP TRIGGER eval_versions_immutable_update")
        db.execute("UPDATE eval_versions SET eval_set = 'default'")
        db.execute(
            "CREATE TRIGGER eval_versions_immutable_update BEFORE UPDATE ON eval_versions"
            " BEGIN SELECT RAISE(ABORT, 'eval_versions is immutable: make a new version'); END"
        )
        db.execute("UPDATE eval_rows SET eval_set = 'default'")
        db.execute("UPDATE eval_leave_outs SET eval_set = 'default'")
    content = (
        "input, messages, expected, criterion, code, adversarial, adversarial_kind, tags, content_hash,"
        " coverage, pass_check, eval_set"
    )
    db.execute("DROP TRIGGER eval_rows_frozen")
    db.execute(
        f"CREATE TRIGGER eval_rows_frozen BEFORE UPDATE OF {content} ON eval_rows"
        # the one update allowed: a data subject's erasure replacing the content by its tombstone
        " WHEN NOT EXISTS (SELECT 1 FROM eval_row_tombstones t WHERE t.row_id = OLD.id"
        " AND NEW.input = t.text AND NEW.messages IS NULL AND NEW.expected IS NULL"
        " AND NEW.criterion IS NULL AND NEW.tags IS NULL AND NEW.pass_check IS NULL"
        " AND NEW.coverage IS OLD.coverage AND NEW.eval_set IS OLD.eval_set)"
        " BEGIN SELECT RAISE(ABORT, 'eval rows are frozen: an edit makes a new row'); END"
    )
    db.execute(
        "CREATE TRIGGER eval_versions_of_frozen_set BEFORE INSERT ON eval_versions"
        " WHEN (SELECT frozen FROM eval_sets WHERE name = NEW.eval_set) = 1"
        " BEGIN SELECT RAISE(ABORT, 'a frozen eval set takes no new version'); END"
    )
    db.execute(
        "CREATE TRIGGER eval_sets_stay_frozen BEFORE UPDATE OF frozen ON eval_sets WHEN OLD.frozen = 1"
        " BEGIN SELECT RAISE(ABORT, 'a frozen eval set stays frozen'); END"
    )
    db.execute(
        "CREATE TRIGGER eval_sets_kept BEFORE DELETE ON eval_sets"
        " BEGIN SELECT RAISE(ABORT, 'eval sets are never deleted'); END"
    )


@migrations()
def m260_label_edits_and_lead_review(db: Database) -> None:
    # An edit replaces a label with a new row (the old one is kept, undone), so who changed what stays
    # readable; a lead's review marks the label that may fold while the review step is on.
    for column in ("edited_by", "edited_at", "reviewed_by", "reviewed_at"):
        db.table("labels").add_column(column, str)
    db.table("labels").add_column("replaced_by", int)
    db.execute(
        "CREATE INDEX idx_labels_unreviewed ON labels(trace_id)"
        " WHERE undone_at IS NULL AND reviewed_at IS NULL"
    )
    db.table("label_settings").create(
        {"name": str, "value": int, "set_by": str, "set_at": str}, pk="name", not_null={"value"}
    )


@migrations()
def m240_input_drift(db: Database) -> None:
    # Input drift beside coverage drift: per run, week and test (input length, language mix, intent
    # mix) the statistic, the p-value and its Bonferroni adjustment across the three, the effect size
    # and the alarm, with the reference weeks the week was compared with.
    db.table("input_drift").create(
        {
            "id": int,
            "run_at": str,
            "actor": str,
            "week": str,
            "test": str,
            "n": int,
            "reference_n": int,
            "reference": str,
            "statistic": float,
            "p_value": float,
            "p_adjusted": float,
            "effect": float,
            "alarm": int,
            "detail": str,
        },
        pk="id",
        not_null={"run_at", "week", "test", "n", "reference_n", "alarm"},
    )
    db.table("input_drift").create_index(["week", "test", "id"])


def _is_timestamp_column(name: str) -> bool:
    return name in ("at", "ts", "start", "claim_expires") or name.endswith("_at")


@migrations()
def m270_one_timestamp_format(db: Database) -> None:
    # Stores written before one clock owned the format hold several shapes (with or without T, Z or
    # +00:00, seconds to microseconds), and some queries compare them as text: only one shape makes text
    # order time order. Immutable tables' guards are lifted for the rewrite and put back as they were.
    db.conn.create_function("flywheel_stored_ts", 1, stored_ts, deterministic=True)
    db.conn.create_function("flywheel_iso_week", 1, sql_iso_week, deterministic=True)
    for table in db.table_names():
        if table.startswith("sqlite_") or db.table(table).virtual_table_using:
            continue
        columns = [c.name for c in db[table].columns if _is_timestamp_column(c.name)]
        if not columns:
            continue
        guards = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", [table]
        ).fetchall()
        for name, _ in guards:
            db.execute(f"DROP TRIGGER [{name}]")
        for column in columns:
            db.execute(
                f"UPDATE [{table}] SET [{column}] = flywheel_stored_ts([{column}])"
                f" WHERE typeof([{column}]) = 'text' AND [{column}] != flywheel_stored_ts([{column}])"
            )
        if table == "traces":  # the week key follows the timestamp, which may have moved across midnight
            db.execute(
                "UPDATE traces SET week = flywheel_iso_week(ts) WHERE week IS NOT flywheel_iso_week(ts)"
            )
        for _, sql in guards:
            db.execute(sql)
