"""Eval sets: immutable, numbered versions of eval rows.

A version is a snapshot of row ids, each ``active`` (read by exports and regression runs) or
``archived`` (retired, kept, exported only on request). A row's content never changes after it is
written; an edit is a new row that replaces the old one in the next version.
"""

from __future__ import annotations

from sqlite_utils import Database

from flywheel.errors import NotFound
from flywheel.store import query_one, query_rows

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
