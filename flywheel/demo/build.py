"""The demo database a newcomer opens first: generated traffic run through the real stations."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from flywheel.auth import User
from flywheel.config import Config, default_config
from flywheel.cycle import run_cycle
from flywheel.demo.drift import DEMO_MIN_TRACES, add_demo_drift
from flywheel.demo.history import add_demo_eval_history
from flywheel.demo.judgments import add_demo_judgments
from flywheel.demo.labels import add_demo_labels
from flywheel.demo.traffic import demo_lines, demo_samples
from flywheel.errors import BadInput
from flywheel.ingest.run import ingest_lines
from flywheel.online.experiments import add_demo_experiment
from flywheel.review import scrubs as review
from flywheel.sampling.batches import sample_and_scrub, sample_weeks, week_order
from flywheel.sampling.plans import DEMO_PLAN, save_plan
from flywheel.store.db import open_db

MAX_DEMO_TRACES = 1_000_000
DEMO_SAMPLED_WEEKS = 6
DEMO_REVIEWERS = (User("ravi", "reviewer"), User("ana", "lead"))
DEMO_KNOWN_NAMES = ("Globex Fintech", "Initech Payments", "Umbrella Logistics")


def build_demo(
    path: str | Path,
    seed: int = 7,
    traces: int = 6000,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    drift: bool = True,
) -> dict:
    """Write a demo database at ``path``; it appears whole or not at all.

    ``drift=False`` leaves out the drift series, the one slow part (it embeds every trace): the app's
    first start publishes the rest at once and computes the series in the background (``finish_demo``)."""
    path = Path(path)
    if not 1 <= traces <= MAX_DEMO_TRACES:
        raise BadInput(f"--traces {traces}: expected 1..{MAX_DEMO_TRACES:,}")
    if path.exists() and not force:
        raise BadInput(f"{str(path)!r} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise BadInput(f"folder {str(path.parent)!r} does not exist")
    # A unique scratch file: sessions of one app are threads of one process, so a pid is not unique.
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    scratch = Path(name)
    try:
        db = open_db(scratch)
    except BaseException:
        _remove(scratch)
        raise
    try:
        lines = _counted(demo_lines(seed, traces), traces, progress)
        # the demo is the same for a seed whatever the settings say
        report = ingest_lines(db, lines, "demo.jsonl", "demo", config=default_config())
        save_plan(db, DEMO_PLAN, actor="demo")
        review.add_known_names(db, DEMO_REVIEWERS[1], DEMO_KNOWN_NAMES)
        weeks = sorted(sample_weeks(db)[:DEMO_SAMPLED_WEEKS], key=week_order)
        for week in weeks:
            sample_and_scrub(db, DEMO_PLAN, actor="demo", week=week)
        _review_demo(db, seed, traces, latest_week=weeks[-1] if weeks else None)
        add_demo_labels(db, seed)
        add_demo_eval_history(db, seed)
        if drift and add_demo_drift(db) is not None:
            add_demo_cycle(db)
        add_demo_judgments(db, DEMO_REVIEWERS[1])
        add_demo_experiment(db, DEMO_REVIEWERS[1])
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except BaseException:
        db.close()
        _remove(scratch)
        raise
    db.close()
    _publish(scratch, path, replace=force)
    return {"db": str(path), "seed": seed, **report.as_json()}


def _review_demo(db: Database, seed: int, traces: int, latest_week: str | None) -> None:
    """Review every demo scrub but the latest week's, using what the generator planted as ground truth:
    planted PII the scrubber missed is added, redactions of nothing planted are removed."""
    planted = {s.trace["trace_id"]: s.pii for s in demo_samples(seed, traces)}
    rng = random.Random(seed)
    pending = review.review_queue(db, DEMO_REVIEWERS[1], limit=1_000_000)
    weeks = dict(
        db.execute("SELECT trace_id, week FROM traces WHERE trace_id IN (SELECT trace_id FROM scrubs)")
    )
    for item in pending:
        if weeks[item["trace_id"]] == latest_week:
            continue
        reviewer = rng.choice(DEMO_REVIEWERS)
        _fix_demo_scrub(db, reviewer, item["scrub_id"], planted.get(item["trace_id"], []))
        if rng.random() < 0.03:
            review.reject_scrub(
                db, reviewer, item["scrub_id"], note="account screenshot pasted in; keep it out"
            )
        else:
            review.approve_scrub(db, reviewer, item["scrub_id"])


def _fix_demo_scrub(db: Database, reviewer: User, scrub_id: int, pii: list[dict]) -> None:
    for value in pii:
        with contextlib.suppress(BadInput):  # planted in a part of the trace that is not stored as text
            review.add_redaction_text(db, reviewer, scrub_id, value["value"], value["label"])
    view = review.scrub_view(db, reviewer, scrub_id)
    user_text = view.fields[0]
    values = [p["value"] for p in pii]
    for redaction in user_text.redactions:
        marked = user_text.raw[redaction["start"] : redaction["end"]]
        if not any(marked in value or value in marked for value in values):
            review.remove_redaction(db, reviewer, scrub_id, redaction["id"], confirmed=True)


def ensure_demo_db(config: Config) -> None:
    """Create the demo database at the configured path unless a database is already there.

    The demo is published without its drift series, so the first page opens in seconds; the series is
    computed in the background (``demo_status`` tells how far it is), also after a restart that cut it
    short. Sessions and processes that start together wait on one lock: the first builds, the others
    find the database once it is published.
    """
    path = Path(config.db)
    if not path.exists():
        with _build_lock, _file_lock(_lock_path(path)):  # git-ignored like scratch files
            if not path.exists():
                build_demo(path, seed=config.demo_seed, traces=config.demo_traces, drift=False)
    if demo_drift_pending(path):
        _start_finishing(path)


def demo_drift_pending(path: str | Path) -> bool:
    """Whether ``path`` is a demo database whose drift series is still to be computed."""
    if str(path) in _finished:
        return False
    db = open_db(path)
    try:
        built_as_demo = db.execute(
            "SELECT 1 FROM ingest_runs WHERE actor = 'demo' AND sources = '[\"demo.jsonl\"]' LIMIT 1"
        ).fetchone()
        pending = bool(built_as_demo) and not db["drift_runs"].count
        pending = pending and db.execute("SELECT count(*) FROM traces").fetchone()[0] >= DEMO_MIN_TRACES
    finally:
        db.close()
    if not pending:
        _finished.add(str(path))  # a database never becomes a pending demo again: ask once per process
    return pending


_finished: set[str] = set()


# What the background build of the drift series reports: a stage, done and total, or an error.
_status: dict = {}
_status_lock = threading.Lock()


def demo_status() -> dict:
    """The background drift build of this process: ``{"stage", "done", "total", "running", "error"}``,
    or an empty dict when none ran."""
    with _status_lock:
        return dict(_status)


def _start_finishing(path: Path) -> None:
    with _status_lock:
        if _status.get("running"):
            return
        _status.clear()
        _status.update(running=True, stage="starting", done=0, total=0, error=None)
    threading.Thread(target=finish_demo, args=(path,), name="flywheel-demo-drift", daemon=True).start()


def add_demo_cycle(db: Database) -> None:
    """The weekly loop run once over the demo's latest week, as cron would run it, once the drift series is
    in: its report (the drift alarm that needs a person) is on the Weekly cycle page and the Overview."""
    run_cycle(db, DEMO_PLAN, actor=DEMO_REVIEWERS[1].name, config=default_config())


def finish_demo(path: str | Path) -> None:
    """Compute the demo's drift series on a published demo database (once, whichever process gets there
    first); progress and any failure go to ``demo_status``."""

    def report(stage: str, done: int, total: int) -> None:
        with _status_lock:
            _status.update(stage=stage, done=done, total=total)

    path = Path(path)
    with _status_lock:
        _status.update(running=True, stage="starting", done=0, total=0, error=None)
    try:
        with _try_file_lock(path.with_name(f".{path.name}.drift.lock.tmp")) as mine:
            if mine and demo_drift_pending(path):
                db = open_db(path)
                try:
                    if add_demo_drift(db, progress=report) is not None:
                        report("weekly cycle", 0, 1)
                        add_demo_cycle(db)
                        report("weekly cycle", 1, 1)
                finally:
                    db.close()
    except Exception as error:  # shown to the user by the app; the demo stays usable without the series
        with _status_lock:
            _status["error"] = f"{type(error).__name__}: {error}"
    finally:
        with _status_lock:
            _status["running"] = False


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock.tmp")


_build_lock = threading.Lock()  # threads of one process (Streamlit sessions)


@contextlib.contextmanager
def _file_lock(lock_path: Path):
    """An exclusive lock on a file, for processes (an flock is released when the holder dies)."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _try_file_lock(lock_path: Path):
    """An exclusive lock on a file if nobody holds it: yields whether this process got it."""
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
