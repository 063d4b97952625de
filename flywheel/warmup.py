"""Warm-up after start: the rollups, the signal and arm rollups and the Sample page's first preview,
brought up to date in a background thread so the first visit after a large import does not pay for it.

It reads across stations (traces, sampling, online), so it lives above them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from flywheel.online.experiments import ARM_KEY, refresh_arm_rollup
from flywheel.online.signal_alerts import refresh_signal_rollup
from flywheel.sampling.batches import preview_plan, sample_weeks
from flywheel.sampling.plans import saved_plans
from flywheel.store.db import open_db
from flywheel.traces.rollups import refresh_rollups

_log = logging.getLogger(__name__)

_warmers: dict[str, threading.Thread] = {}
_warmers_lock = threading.Lock()


def warm_in_background(path: str | Path) -> threading.Thread:
    """Bring the rollups of the database at ``path`` up to date (and compute the Sample page's first
    preview) in a daemon thread, once per process and path, so the first visit after a large import
    does not pay for it. Pages still refresh what
    they read, so a visit before the thread is done is correct, only slower."""
    key = str(Path(path).resolve())
    with _warmers_lock:
        thread = _warmers.get(key)
        if thread is None:
            thread = _warmers[key] = threading.Thread(
                target=_warm, args=(key,), name=f"flywheel-rollups:{key}", daemon=True
            )
            thread.start()
    return thread


def _warm(path: str) -> None:
    try:
        db = open_db(path)  # this thread needs its own connection
        try:
            refresh_rollups(db)
            refresh_signal_rollup(db, "week")
            refresh_arm_rollup(db, ARM_KEY)
            plans, weeks = saved_plans(db), sample_weeks(db)
            if plans and weeks:  # the preview the Sample page opens on (kept in this process's cache)
                preview_plan(db, plans[0], plans[0].week if plans[0].week in weeks else weeks[0])
        finally:
            db.close()
    except Exception:  # a thread has no caller; the pages refresh on their own
        _log.exception("bringing the rollups up to date failed")
