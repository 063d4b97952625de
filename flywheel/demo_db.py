"""The demo database a newcomer opens first: generated traffic run through the real stations."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from flywheel.config import Config
from flywheel.demo import demo_lines
from flywheel.errors import BadInput
from flywheel.ingest import ingest_lines
from flywheel.sampling import DEMO_PLAN, run_plan, sample_weeks, save_plan
from flywheel.store import open_db

MAX_DEMO_TRACES = 1_000_000
DEMO_SAMPLED_WEEKS = 6


def build_demo(
    path: str | Path,
    seed: int = 7,
    traces: int = 6000,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a demo database at ``path``; it appears whole or not at all."""
    path = Path(path)
    if not 1 <= traces <= MAX_DEMO_TRACES:
        raise BadInput(f"--traces {traces}: expected 1..{MAX_DEMO_TRACES:,}")
    if path.exists() and not force:
        raise BadInput(f"{str(path)!r} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise BadInput(f"folder {str(path.parent)!r} does not exist")
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(scratch)
    db = open_db(scratch)
    try:
        report = ingest_lines(db, _counted(demo_lines(seed, traces), traces, progress), "demo.jsonl", "demo")
        save_plan(db, DEMO_PLAN, actor="demo")
        for week in sorted(sample_weeks(db)[:DEMO_SAMPLED_WEEKS]):
            run_plan(db, DEMO_PLAN, actor="demo", week=week)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    _publish(scratch, path, replace=force)
    return {"db": str(path), "seed": seed, **report.as_json()}


def ensure_demo_db(config: Config) -> None:
    """Create the demo database at the configured path unless a database is already there."""
    if not Path(config.db).exists():
        try:
            build_demo(config.db, seed=config.demo_seed, traces=config.demo_traces)
        except BadInput:
            if not Path(config.db).exists():  # another session may have created it meanwhile
                raise


def _counted(lines, total: int, progress):
    for done, line in enumerate(lines, 1):
        if progress and done % 500 == 0:
            progress(min(done, total), total)
        yield line


def _publish(scratch: Path, path: Path, replace: bool) -> None:
    if replace:
        _remove(path)
        os.replace(scratch, path)
        return
    try:
        os.link(scratch, path)  # fails if another process published first: theirs stays
    except FileExistsError:
        pass
    finally:
        _remove(scratch)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
