"""Reading the audit log: who changed what, filtered and summarised for a lead.

``store.audit`` writes the entries; this module reads them. Entries can hold customer vocabulary (a
removed known name is the entity it names), so every reader takes the user and needs a lead.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, timedelta

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.errors import BadInput
from flywheel.evals.exports import spreadsheet_row
from flywheel.store.db import query_rows

CLAIM_ACTIONS = ("claim", "release_claim")
MAX_PAGE = 5000
# The trace an entry is about, for entries that name a scrub or a label rather than the trace itself.
_TRACE_ID = """CASE entity
    WHEN 'trace' THEN entity_id
    WHEN 'scrub' THEN (SELECT trace_id FROM scrubs WHERE scrubs.id = CAST(entity_id AS INTEGER))
    WHEN 'label' THEN (SELECT trace_id FROM labels WHERE labels.id = CAST(entity_id AS INTEGER))
END"""


@dataclass(frozen=True)
class AuditFilter:
    """Which entries to read: every non-empty field narrows; days are inclusive UTC dates.

    Claims (one entry per item a labeler was served) are left out unless ``claims`` is set or a claim
    action is asked for; read them summarised with ``claim_summary``.
    """

    actors: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    trace_id: str = ""
    claims: bool = False

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise BadInput(f"audit period {self.since} to {self.until}: the start is after the end")

    def sql(self, claims: bool | None = None) -> tuple[str, list]:
        """The WHERE clause and its parameters (``claims`` overrides whether claim entries count)."""
        clauses: list[str] = []
        params: list[object] = []
        for column, values in (("actor", self.actors), ("action", self.actions), ("entity", self.entities)):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if self.since:
            clauses.append("at >= ?")
            params.append(self.since.isoformat())
        if self.until:
            clauses.append("at < ?")
            params.append((self.until + timedelta(days=1)).isoformat())
        if self.trace_id.strip():
            clauses.append(
                "((entity = 'trace' AND entity_id = ?) OR (entity = 'scrub' AND entity_id IN"
                " (SELECT CAST(id AS TEXT) FROM scrubs WHERE trace_id = ?)) OR (entity = 'label' AND"
                " entity_id IN (SELECT CAST(id AS TEXT) FROM labels WHERE trace_id = ?)))"
            )
            params += [self.trace_id.strip()] * 3
        wanted = self.claims or bool(set(self.actions) & set(CLAIM_ACTIONS))
        if not (wanted if claims is None else claims):
            clauses.append(f"action NOT IN ({','.join('?' * len(CLAIM_ACTIONS))})")
            params.extend(CLAIM_ACTIONS)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def audit_entries(
    db: Database,
    user: User,
    where: AuditFilter = AuditFilter(),
    before_id: int | None = None,
    limit: int = 200,
) -> list[dict]:
    """Entries newest first (those older than ``before_id`` when given), each with the trace it is about
    (``trace_id``, None when it is about no trace) and its detail as short ``key=value`` text."""
    require_role(user, "lead")
    if not 1 <= limit <= MAX_PAGE:
        raise BadInput(f"audit page of {limit} entries: expected 1..{MAX_PAGE}")
    clause, params = where.sql()
    if before_id is not None:
        clause += (" AND" if clause else " WHERE") + " id < ?"
        params.append(before_id)
    sql = (
        f"SELECT id, at, actor, action, entity, entity_id, {_TRACE_ID} AS trace_id, detail FROM audit_log"
        f"{clause} ORDER BY id DESC LIMIT ?"
    )
    return [_summarised(row) for row in query_rows(db, sql, [*params, limit])]


def _summarised(row: dict) -> dict:
    try:
        detail = json.loads(row["detail"] or "{}")
    except json.JSONDecodeError:
        return row
    if isinstance(detail, dict):
        row["detail"] = "; ".join(f"{key}={_short(value)}" for key, value in detail.items())
    return row


def _short(value: object, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def count_entries(db: Database, user: User, where: AuditFilter = AuditFilter()) -> int:
    """How many entries match."""
    require_role(user, "lead")
    clause, params = where.sql()
    return db.execute(f"SELECT count(*) FROM audit_log{clause}", params).fetchone()[0]


def claim_summary(db: Database, user: User, where: AuditFilter = AuditFilter()) -> list[dict]:
    """Claims per labeler and UTC day (items served and released) for the filter's actors and period."""
    require_role(user, "lead")
    claims_only = AuditFilter(
        actors=where.actors, since=where.since, until=where.until, trace_id=where.trace_id, claims=True
    )
    clause, params = claims_only.sql()
    clause += (" AND" if clause else " WHERE") + f" action IN ({','.join('?' * len(CLAIM_ACTIONS))})"
    sql = (
        "SELECT substr(at, 1, 10) AS day, actor, sum(action = 'claim') AS claims,"
        f" sum(action = 'release_claim') AS released FROM audit_log{clause}"
        " GROUP BY day, actor ORDER BY day DESC, actor"
    )
    return query_rows(db, sql, [*params, *CLAIM_ACTIONS])


def audit_choices(db: Database, user: User) -> dict[str, list[str]]:
    """The actors, actions and entities that occur, for filter widgets."""
    require_role(user, "lead")
    return {
        plural: [r[0] for r in db.execute(f"SELECT DISTINCT {column} FROM audit_log ORDER BY 1")]
        for column, plural in (("actor", "actors"), ("action", "actions"), ("entity", "entities"))
    }


def audit_csv(db: Database, user: User, where: AuditFilter = AuditFilter()) -> str:
    """Every matching entry as CSV (full detail JSON), newest first; cells a spreadsheet would run as a
    formula are quoted (``exports.spreadsheet_cell``)."""
    require_role(user, "lead")
    clause, params = where.sql()
    cursor = db.execute(
        f"SELECT id, at, actor, action, entity, entity_id, {_TRACE_ID} AS trace_id, detail"
        f" FROM audit_log{clause} ORDER BY id DESC",
        params,
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([d[0] for d in cursor.description])
    writer.writerows(spreadsheet_row(row) for row in cursor)
    return out.getvalue()
