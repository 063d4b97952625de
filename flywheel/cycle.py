"""The weekly cycle: the whole loop in one headless run that cron or CI can call.

Steps, in order: ingest the files of an inbox folder that were never ingested (each file once, by
content hash), sample the week with the plan and scrub the batch, measure drift for that week, fold in
what was labeled since the last fold (when the lead's cycle settings allow it), and run the release
gate when a challenger's results arrived since the last cycle, then purge raw text past retention
(when ``FLYWHEEL_RETENTION_DAYS`` is set). A step that cannot run says why and the
cycle goes on; the report says whether a person is needed (a drift alarm, a blocked gate, a failed
step) so the exit code can page someone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.config import Config
from flywheel.drift import inputs as input_drift
from flywheel.drift import run as drift
from flywheel.errors import BadInput, FlywheelError
from flywheel.evals.runs import GATE_KEYS, gate
from flywheel.evals.versions import current_version, fold_in
from flywheel.ingest.run import ingest_files
from flywheel.privacy.retention import apply_retention
from flywheel.sampling.batches import resolve_week, sample_and_scrub
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import beat, process_mark, query_one, query_rows, sweep_interrupted, write

STEPS = ("ingest", "sample", "drift", "fold_in", "gate", "retention")
Progress = Callable[[str, int, int], None]


@dataclass
class Step:
    """What one step of a cycle did: ``done``, ``skipped`` (with why) or ``failed`` (with the error)."""

    name: str
    status: str
    detail: str
    data: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"status": self.status, "detail": self.detail, **self.data}


@dataclass
class CycleReport:
    """The outcome of one cycle; ``attention`` lists why a person is needed (empty: nobody is)."""

    id: int
    week: str | None
    steps: list[Step]
    attention: list[str]
    resumes: list[int] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when nobody is needed, 1 when a drift alarm, a blocked gate or a failed step needs a person."""
        return 1 if self.attention else 0

    def as_json(self) -> dict:
        return {
            "cycle_id": self.id,
            "week": self.week,
            "steps": {step.name: step.as_json() for step in self.steps},
            "attention": self.attention,
            "exit_code": self.exit_code,
            "resumes": self.resumes,
        }

    def summary(self) -> str:
        lines = [f"cycle {self.id} for {self.week or 'no week'}"]
        if self.resumes:
            lines.append(f"  resumes interrupted cycle(s) {', '.join(map(str, self.resumes))}")
        lines += [f"  {step.name:<8} {step.status:<8} {step.detail}" for step in self.steps]
        lines.append(
            "needs attention: " + "; ".join(self.attention) if self.attention else "nothing needs a person"
        )
        return "\n".join(lines)


# Settings ---------------------------------------------------------------------------------------


def cycle_settings(db: Database) -> dict:
    """The lead's cycle settings: whether the cycle folds in, and the gate's baseline system."""
    row = query_one(db, "SELECT fold_in, baseline, set_by, set_at FROM cycle_settings WHERE id = 1")
    return row or {"fold_in": 0, "baseline": None, "set_by": None, "set_at": None}


def set_cycle_settings(db: Database, user: User, fold_in: bool, baseline: str | None) -> None:
    """A lead decides whether the weekly cycle folds labeled rows in, and which system is the baseline."""
    require_role(user, "lead")
    baseline = (baseline or "").strip() or None
    if baseline is not None and len(baseline) > 200:
        raise BadInput(f"baseline system name of {len(baseline)} characters: expected at most 200")
    with write(db):
        db.table("cycle_settings").upsert(
            {
                "id": 1,
                "fold_in": int(bool(fold_in)),
                "baseline": baseline,
                "set_by": user.name,
                "set_at": now(),
            },
            pk="id",
        )
        audit(
            db, user.name, "set_cycle_settings", "cycle_settings", 1, fold_in=bool(fold_in), baseline=baseline
        )


# Inbox ------------------------------------------------------------------------------------------


def file_hash(path: Path) -> str:
    """The content hash that decides whether an inbox file was already ingested."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inbox_files(inbox: str | Path) -> list[Path]:
    """The regular, non-hidden files of an inbox folder, by name."""
    folder = Path(inbox)
    if not folder.is_dir():
        raise BadInput(f"inbox {str(folder)!r} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def new_inbox_files(db: Database, inbox: str | Path) -> list[tuple[Path, str]]:
    """Inbox files whose content was never ingested, with their hashes (a renamed copy is not new)."""
    seen = {row["content_hash"] for row in query_rows(db, "SELECT content_hash FROM inbox_files")}
    fresh = []
    for path in inbox_files(inbox):
        digest = file_hash(path)
        if digest not in seen:
            seen.add(digest)
            fresh.append((path, digest))
    return fresh


def _ingest_inbox(
    db: Database, inbox: str | Path, actor: str, progress: Progress | None, config: Config
) -> Step:

    fresh = new_inbox_files(db, inbox)
    if not fresh:
        return Step("ingest", "skipped", f"no new files in {inbox}", {"files": 0})
    totals = {"files": 0, "lines_read": 0, "ingested": 0, "duplicates": 0, "quarantined": 0}
    for path, digest in fresh:
        tick = (
            (lambda lines, done, total, name=path.name: progress(f"ingest {name}", done, total))
            if progress
            else None
        )
        report = ingest_files(db, [path], actor=actor, config=config, progress=tick)
        with write(db):
            db.table("inbox_files").insert(
                {"content_hash": digest, "name": path.name, "run_id": report.run_id, "ingested_at": now()}
            )
        totals["files"] += 1
        for key in ("lines_read", "ingested", "duplicates", "quarantined"):
            totals[key] += getattr(report, key)
    detail = f"{totals['files']} file(s): {totals['ingested']} traces ingested"
    return Step("ingest", "done", f"{detail}, {totals['quarantined']} lines quarantined", totals)


# Steps ------------------------------------------------------------------------------------------


def _sample(db: Database, plan, actor: str, progress: Progress | None) -> tuple[Step, str | None]:

    week = resolve_week(db, plan.week)
    tick = (lambda done, total: progress("scrub", done, total)) if progress else None
    run = sample_and_scrub(db, plan, actor, week=week, progress=tick)
    batch = run.batch
    what = (
        f"batch {batch.id} already held this week; scrubbing resumed" if run.repeated else f"batch {batch.id}"
    )
    detail = f"{what}: {batch.sampled} traces of {week}, {run.scrubbed} scrubbed now"
    data = {
        "batch_id": batch.id,
        "sampled": batch.sampled,
        "scrubbed": run.scrubbed,
        "repeated": run.repeated,
    }
    return Step("sample", "done", detail, data), week


def _drift(db: Database, actor: str, week: str | None, progress: Progress | None, config: Config) -> Step:

    # input drift needs no eval set: what users send can move before there is a suite to cover it
    inputs = {
        "input_alarms": input_drift.alarm_reasons(input_drift.run_input_drift(db, actor, week, config=config))
    }
    if current_version(db) is None:
        return Step("drift", "skipped", "there is no eval set yet to measure drift against", inputs)
    tick = (lambda stage, done, total: progress(f"drift {stage}", done, total)) if progress else None
    run = drift.run_drift(db, actor, week, progress=tick, config=config)
    window = run.as_json()[0]
    state = "ALARM" if window["alarm"] else "no alarm"
    detail = (
        f"{window['window']}: {window['share_beyond']:.1%} of {window['n']} traces beyond tau"
        f" {window['tau']:.3f} (p={window['p_value']:.2g}) vs version {window['eval_version']}: {state}"
    )
    return Step("drift", "done", detail, {"run_id": run.id, **window, **inputs})


def _fold_in(db: Database, actor: str, week: str | None, settings: dict) -> Step:

    if not settings["fold_in"]:
        return Step("fold_in", "skipped", "folding in is off in the lead's cycle settings")
    change = fold_in(db, User(actor, "lead"), note=f"weekly cycle {week or ''}".strip())
    data = {**change.as_json(), "disagreements": change.disagreements}
    if not change.created:
        return Step("fold_in", "skipped", "nothing new was labeled since the last fold", data)
    detail = f"version {data['version']}: {data['added']} added, {data['retired']} retired"
    detail += f", {data['carried']} carried"
    return Step("fold_in", "done", detail, data)


def _gate(db: Database, since: str | None, settings: dict, default_adversarial_pct: int) -> Step:

    version, baseline = current_version(db), settings["baseline"]
    if version is None:
        return Step("gate", "skipped", "there is no eval set yet")
    if not baseline:
        return Step("gate", "skipped", "no baseline system is set in the lead's cycle settings")
    challenger = _new_challenger(db, version, baseline, since)
    if challenger is None:
        return Step("gate", "skipped", f"no new challenger results on version {version} since the last cycle")
    verdict = gate(db, version, baseline, challenger, default_adversarial_pct=default_adversarial_pct)
    data = {key: verdict[key] for key in GATE_KEYS}
    detail = f"version {version}: {challenger} vs {baseline}: {verdict['verdict']}"
    if verdict["reasons"]:
        detail += " (" + "; ".join(verdict["reasons"]) + ")"
    return Step("gate", "done", detail, {"version": version, **data})


def _new_challenger(db: Database, version: int, baseline: str, since: str | None) -> str | None:
    row = query_one(
        db,
        """SELECT system FROM eval_runs WHERE version = ? AND system <> ? AND imported_at > ?
           ORDER BY id DESC LIMIT 1""",
        [version, baseline, since or ""],
    )
    has_baseline = query_one(
        db, "SELECT 1 AS x FROM eval_runs WHERE version = ? AND system = ?", [version, baseline]
    )
    return row["system"] if row and has_baseline else None


# The cycle --------------------------------------------------------------------------------------


def run_cycle(
    db: Database,
    plan,
    actor: str,
    inbox: str | Path | None = None,
    progress: Progress | None = None,
    *,
    config: Config,
) -> CycleReport:
    """Run the weekly loop once and record it; every step's outcome is in the report.

    A cycle that was killed is marked interrupted (when the store is opened, or here) and the next one
    resumes it: inbox files are known by content, a sampled week's batch is reused and its scrubbing
    goes on where it stopped.
    """
    if inbox is not None:
        inbox_files(inbox)  # a missing folder is bad input, refused before anything runs
    sweep_interrupted(db)
    since = _last_cycle_start(db)
    with write(db):
        row = {"started_at": now(), "actor": actor, "status": "running", **process_mark()}
        cycle_id = db.table("cycles").insert(row).last_pk
        assert cycle_id is not None  # every insert into a rowid table has one
    with _failing_cycle(db, cycle_id, actor):
        report = _run_steps(db, cycle_id, plan, actor, inbox, since, _beating(db, cycle_id, progress), config)
        report.resumes = interrupted_cycles(db, cycle_id)
        _finish(db, report, actor)
    return report


def _run_steps(db, cycle_id, plan, actor, inbox, since, progress: Progress, config: Config) -> CycleReport:
    settings = cycle_settings(db)
    steps, week = [], None
    steps.append(
        _guarded("ingest", lambda: _ingest_inbox(db, inbox, actor, progress, config))
        if inbox
        else Step("ingest", "skipped", "no inbox folder given")
    )
    progress("sample", 0, 0)
    sample = _guarded("sample", lambda: _sample(db, plan, actor, progress))
    if isinstance(sample, tuple):
        sample, week = sample
    steps.append(sample)
    progress("drift", 0, 0)
    steps.append(_guarded("drift", lambda: _drift(db, actor, week, progress, config)))
    progress("fold_in", 0, 0)
    steps.append(_guarded("fold_in", lambda: _fold_in(db, actor, week, settings)))
    steps.append(_guarded("gate", lambda: _gate(db, since, settings, config.gate_adversarial_pct)))
    steps.append(_guarded("retention", lambda: _retention(db, actor, config.retention_days)))
    return CycleReport(cycle_id, week, steps, _attention(steps))


BEAT_SECONDS = 5.0


def _beating(db: Database, cycle_id: int, progress: Progress | None) -> Progress:
    """The caller's progress callback, also recording the cycle's heartbeat (at most every few seconds)."""
    last = [0.0]

    def tick(stage: str, done: int, total: int) -> None:
        if time.monotonic() - last[0] >= BEAT_SECONDS:
            beat(db, "cycles", cycle_id)
            last[0] = time.monotonic()
        if progress and total:
            progress(stage, done, total)

    return tick


@contextlib.contextmanager
def _failing_cycle(db: Database, cycle_id: int, actor: str) -> Iterator[None]:
    """A cycle stopped by an unexpected error is marked failed (Ctrl-C: interrupted) with the reason."""
    try:
        yield
    except BaseException as error:
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        reason = f"{type(error).__name__}: {error}"[:500]
        with contextlib.suppress(Exception), write(db):  # the store itself may be what failed
            db.table("cycles").update(cycle_id, {"status": status, "finished_at": now(), "report": None})
            audit(db, actor, f"cycle_{status}", "cycle", cycle_id, reason=reason)
        raise


def interrupted_cycles(db: Database, before: int | None = None) -> list[int]:
    """Cycles that stopped unfinished since the last finished one (before cycle ``before``): the next
    cycle resumes them. Running cycles whose process is gone are marked interrupted first."""
    sweep_interrupted(db)
    rows = query_rows(
        db,
        """SELECT id FROM cycles WHERE status IN ('interrupted', 'failed') AND id < ?
           AND id > coalesce((SELECT max(id) FROM cycles WHERE status = 'finished' AND id < ?), 0)
           ORDER BY id""",
        [before or 2**62, before or 2**62],
    )
    return [row["id"] for row in rows]


def _retention(db: Database, actor: str, days: int) -> Step:

    if not days:
        return Step("retention", "skipped", "FLYWHEEL_RETENTION_DAYS is not set: raw text is kept")
    report = apply_retention(db, User(actor, "lead"), days)
    return Step("retention", "done", report.summary(), report.as_json())


def _guarded(name: str, step: Callable):
    """Run a step; a library error becomes a failed step with its reason, and the cycle goes on."""
    try:
        return step()
    except FlywheelError as error:
        return Step(name, "failed", str(error))


def _attention(steps: list[Step]) -> list[str]:
    reasons = [f"{step.name} failed: {step.detail}" for step in steps if step.status == "failed"]
    for step in steps:
        if step.name == "drift" and step.data.get("alarm"):
            reasons.append(f"drift alarm: {step.detail}")
        if step.name == "drift":
            reasons += step.data.get("input_alarms", [])
        if step.name == "gate" and step.data.get("verdict") == "block":
            reasons.append(f"release gate blocks: {step.detail}")
    return reasons


def _last_cycle_start(db: Database) -> str | None:
    row = query_one(db, "SELECT max(started_at) AS at FROM cycles WHERE status = 'finished'")
    return row["at"] if row else None


def _finish(db: Database, report: CycleReport, actor: str) -> None:
    with write(db):
        db.table("cycles").update(
            report.id,
            {
                "finished_at": now(),
                "status": "finished",
                "week": report.week,
                "needs_attention": int(bool(report.attention)),
                "report": json.dumps(report.as_json(), default=str),
            },
        )
        audit(db, actor, "cycle", "cycle", report.id, week=report.week, attention=report.attention)


def cycles(db: Database, limit: int = 20) -> list[dict]:
    """The latest cycles, newest first, with their reports decoded."""
    rows = query_rows(db, "SELECT * FROM cycles ORDER BY id DESC LIMIT ?", [limit])
    for row in rows:
        row["report"] = json.loads(row["report"]) if row["report"] else None
    return rows


def crontab_line(db_path: str, plan_path: str, inbox: str, project: str) -> str:
    """A ready-to-copy crontab line: every Monday at 06:00, output appended to a log."""
    return (
        f"0 6 * * 1 cd {project} && python -m flywheel cycle --db {db_path} --plan {plan_path}"
        f" --inbox {inbox} --json >> cycle.log 2>&1"
    )
