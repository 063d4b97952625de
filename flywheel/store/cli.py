"""The command line's way to the store: the database a command names, and one it created.

Commands import the library inside their handlers: opening the store loads sqlite-utils, which loads
pandas, and ``python -m flywheel --help`` (or ``scrub``, which needs no store) should not pay for it.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
from pathlib import Path

from flywheel.auth import User
from flywheel.errors import BadInput

created: list[str] = []  # databases this command created (said once it succeeds)


def lead(args: argparse.Namespace, create: bool = False):
    """The database ``--db`` names and the lead ``--actor`` names."""
    return open_database(args.db, create), User(args.actor, "lead")


def open_database(path: str, create: bool = False):
    """The database at ``path``. Commands that begin a project's data (``create``) make a new one in an
    existing folder (``main`` says so once they succeed); commands that read one refuse a path that
    does not exist."""
    from flywheel.store.db import open_db

    if not create:
        return open_db(existing(path))
    new = not Path(path).exists()
    db = open_db(path)
    if new:
        created.append(path)
    return db


def existing(path: str) -> str:
    """``path``, when a database file is there."""
    if not Path(path).is_file():
        raise BadInput(f"database {path!r} does not exist")
    return path


def drop_unused(paths: list[str]) -> None:
    """Remove a database this command created when the command failed before changing anything: a
    refused first import leaves no empty store behind (every change writes an audit entry)."""
    for path in paths:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                if conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]:
                    continue
        except sqlite3.Error:
            continue  # cannot tell: keep it
        for suffix in ("", "-wal", "-shm", "-waiting"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
