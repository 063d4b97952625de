"""The audit log's writer: who changed what, one entry per user-visible change."""

from __future__ import annotations

import json

from sqlite_utils import Database

from flywheel.store.clock import now


def audit(db: Database, actor: str, action: str, entity: str, entity_id: object, **detail: object) -> None:
    """Record who did what to which entity; call inside the write transaction of the change itself."""
    db.table("audit_log").insert(
        {
            "at": now(),
            "actor": actor,
            "action": action,
            "entity": entity,
            "entity_id": str(entity_id),
            "detail": json.dumps(detail, default=str),
        }
    )
