"""The ``embed`` command: embed approved scrubs for the siblings panel."""

from __future__ import annotations

import argparse

from flywheel.progress import ProgressBar
from flywheel.store.cli import open_database


def register(commands) -> None:
    """Add ``embed``."""
    embed = commands.add_parser("embed", help="embed approved scrubs for the siblings panel")
    embed.add_argument("--db", required=True, help="path of the database")
    embed.set_defaults(handler=_embed)


def _embed(args: argparse.Namespace) -> int:
    from flywheel.vectors.embeddings import embed_all

    bar = ProgressBar("embedding approved scrubs", unit="texts")
    done = embed_all(open_database(args.db), progress=lambda n: bar.update(n, 0, n))
    bar.close()
    print(f"embedded {done} approved scrub part(s)")
    return 0
