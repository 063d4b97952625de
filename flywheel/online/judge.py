"""The LLM judge: grades scrubbed traces, regression-run outputs and shadow pairs against a rubric.

Only text a reviewer approved (``flywheel.traces.approved_scrub``) or eval-set text ever goes into a
request, and everything a request holds about a trace (its approved scrub, a few-shot example, a
shadow system's reply, a regression run's output for an eval row drawn from it) has every value any
redaction of that trace covers masked, whatever field or message the redaction was stored for
(``flywheel.review.mask_redacted``). A shadow reply, which no reviewer has read, is also run through
the scrubber.

The judge answers through a tool call whose input is validated before anything is stored; a
malformed answer is asked again and, after ``malformed_retries`` more tries, stored as an error,
never guessed. The SDK retries 429, 529, other 5xx and dropped connections with exponential backoff
and waits what ``retry-after`` says; a request that still fails is left ungraded and the next run
picks it up. Each judgment is committed on its own, and a unique index on (rubric version, subject,
position) makes a run that is killed and started again continue without grading anything twice.
Requests run on a bounded thread pool; only the main thread touches the database.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import anthropic
from sqlite_utils import Database

from flywheel.config import Setting, read_settings
from flywheel.errors import BadInput, JudgeError, NotFound
from flywheel.evals.runs import grade_result
from flywheel.online.calibration import human_verdicts
from flywheel.online.rubrics import Rubric, rubric
from flywheel.review.scrubs import mask_redacted
from flywheel.scrub import Scrubber
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import process_mark, query_one, query_rows, write
from flywheel.traces.queries import approved_scrub

VERDICT_TOOL = "record_verdict"
PREFERENCE_TOOL = "record_preference"
MAX_REASON = 400
PAIR_POSITIONS = ("prod_first", "shadow_first")
METADATA_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,59}$")
ENABLE_HELP = (
    "The LLM judge needs an Anthropic API key: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in the"
    " environment the app or CLI runs in. ANTHROPIC_BASE_URL points it at a gateway, FLYWHEEL_JUDGE_MODEL"
    " picks the model. Everything else in Flywheel works without it."
)

JUDGE_SETTINGS = (
    Setting("model", "claude-sonnet-4-6", "Model the judge asks (FLYWHEEL_JUDGE_MODEL)", required=True),
    Setting("concurrency", 4, "Requests in flight at once"),
    Setting("max_retries", 4, "SDK retries of 429/529/5xx and dropped connections, honouring retry-after"),
    Setting("malformed_retries", 2, "Extra tries when an answer fails validation, before it is an error"),
    Setting("timeout_s", 60, "Seconds one request may take"),
    Setting("max_tokens", 400, "Longest answer the judge may write"),
    Setting("input_usd_per_mtok", 3.0, "Price of a million input tokens, for the cost counter", 0),
    Setting("output_usd_per_mtok", 15.0, "Price of a million output tokens, for the cost counter", 0),
)


@dataclass(frozen=True)
class JudgeSettings:
    model: str
    concurrency: int
    max_retries: int
    malformed_retries: int
    timeout_s: int
    max_tokens: int
    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def replace(self, **changes: Any) -> JudgeSettings:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """What these tokens cost in USD."""
        return (input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok) / 1e6


def load_judge_settings(environ: dict[str, str] | None = None) -> JudgeSettings:
    """Judge settings from FLYWHEEL_JUDGE_* environment variables, defaults for the rest."""
    values: dict[str, Any] = read_settings(JUDGE_SETTINGS, "FLYWHEEL_JUDGE_", environ)  # typed per Setting
    return JudgeSettings(**values)


def api_configured(environ: dict[str, str] | None = None) -> bool:
    """Whether an Anthropic credential is set, so the judge can run."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    return bool(env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN"))


def make_client(
    settings: JudgeSettings,
    api_key: str | None = None,
    base_url: str | None = None,
    http_client: object | None = None,
) -> anthropic.Anthropic:
    """The SDK client; the base URL comes from ``base_url`` or the SDK's ANTHROPIC_BASE_URL."""
    if api_key is None and not api_configured():
        raise JudgeError(ENABLE_HELP)
    kwargs: dict = {"max_retries": settings.max_retries, "timeout": float(settings.timeout_s)}
    if api_key is not None:
        kwargs["api_key"] = api_key
    if base_url is not None:
        kwargs["base_url"] = base_url
    if http_client is not None:
        kwargs["http_client"] = http_client
    return anthropic.Anthropic(**kwargs)


# What is graded -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a run grades: a sample batch, a week's traces, a regression run, or shadow pairs."""

    kind: str
    value: str

    KINDS = ("batch", "week", "run", "shadow")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise BadInput(f"judge target {self.kind!r}: expected one of {', '.join(self.KINDS)}")

    @property
    def label(self) -> str:
        return f"{self.kind} {self.value}"


@dataclass(frozen=True)
class Subject:
    """One request's worth of grading: a trace, a regression result, or one order of a pair."""

    kind: str
    id: str
    position: str
    conversation: tuple[dict, ...]
    replies: tuple[str, ...] = ()
    expected: str | None = None


def target_subjects(db: Database, target: Target) -> tuple[list[Subject], int]:
    """The subjects a target holds and how many of its traces were left out for lack of an approved scrub."""
    if target.kind == "run":
        return _run_subjects(db, _int(target.value, "run id")), 0
    params: list[object]
    if target.kind == "batch":
        batch = _int(target.value, "batch id")
        if query_one(db, "SELECT id FROM sample_batches WHERE id = ?", [batch]) is None:
            raise NotFound(f"no sample batch {batch}")
        where, params = "t.trace_id IN (SELECT trace_id FROM batch_items WHERE batch_id = ?)", [batch]
    elif target.kind == "week":
        if query_one(db, "SELECT 1 AS x FROM traces WHERE week = ? LIMIT 1", [target.value]) is None:
            raise NotFound(f"no traces in week {target.value!r}")
        where, params = "t.week = ?", [target.value]
    else:
        key = metadata_key(target.value)
        where, params = "json_extract(t.metadata, ?) IS NOT NULL", [json_path(key)]
    rows = db.execute(
        f"SELECT t.trace_id, s.status FROM traces t LEFT JOIN scrubs s ON s.trace_id = t.trace_id"
        f" WHERE {where} ORDER BY t.trace_id",
        params,
    ).fetchall()
    ids = [trace_id for trace_id, status in rows if status == "approved"]
    if target.kind == "shadow":
        return shadow_subjects(db, ids, target.value), len(rows) - len(ids)
    return [_trace_subject(db, i) for i in ids], len(rows) - len(ids)


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{what} {value!r}: expected an integer") from None


def metadata_key(key: str) -> str:
    """Check a metadata key a lead names (e.g. ``release``, ``shadow_reply``)."""
    if not isinstance(key, str) or not METADATA_KEY.match(key):
        raise BadInput(f"metadata key {key!r}: expected 1..60 letters, digits, '_', '.' or '-'")
    return key


def json_path(key: str) -> str:
    """The JSON path of a top-level metadata key, quoted so dots stay part of the name."""
    return f'$."{key}"'


def scrubbed_conversation(db: Database, trace_id: str) -> tuple[dict, ...]:
    """A trace's approved scrub as turns, ending with the assistant reply when there is one, with every
    value a redaction of the trace covers masked (a reviewer may have redacted one occurrence of it)."""
    scrub = approved_scrub(db, trace_id)
    turns = [{"role": m["role"], "content": m["content"]} for m in scrub["messages"]]
    if not turns:
        turns = [{"role": "user", "content": scrub["input"]}]
    if scrub["output"] is not None:
        turns.append({"role": "assistant", "content": scrub["output"]})
    return _masked(db, trace_id, turns)


def _masked(db: Database, trace_id: str | None, turns: list[dict]) -> tuple[dict, ...]:
    if trace_id is None:
        return tuple(turns)
    contents = mask_redacted(db, trace_id, [t["content"] for t in turns])
    return tuple({"role": t["role"], "content": c} for t, c in zip(turns, contents, strict=True))


def _trace_subject(db: Database, trace_id: str) -> Subject:
    return Subject("trace", trace_id, "-", scrubbed_conversation(db, trace_id))


def _run_subjects(db: Database, run_id: int) -> list[Subject]:
    if query_one(db, "SELECT id FROM eval_runs WHERE id = ?", [run_id]) is None:
        raise NotFound(f"no regression run {run_id}")
    rows = query_rows(
        db,
        """SELECT e.id, r.trace_id, r.input, r.messages, r.expected, r.criterion, e.output FROM eval_results e
           JOIN eval_rows r ON r.id = e.row_id
           WHERE e.run_id = ? AND e.passed IS NULL AND e.output IS NOT NULL ORDER BY e.id""",
        [run_id],
    )
    subjects = []
    for row in rows:
        turns = (
            json.loads(row["messages"]) if row["messages"] else [{"role": "user", "content": row["input"]}]
        )
        turns = [{"role": m["role"], "content": m["content"]} for m in turns]
        turns.append({"role": "assistant", "content": row["output"]})
        expected = "\n".join(x for x in (row["expected"], row["criterion"]) if x) or None
        if row["trace_id"] is not None:  # drawn from a production trace: the output may repeat its values
            turns = list(_masked(db, row["trace_id"], turns))
            expected = expected and mask_redacted(db, row["trace_id"], [expected])[0]
        subjects.append(Subject("eval_result", str(row["id"]), "-", tuple(turns), expected=expected))
    return subjects


def shadow_subjects(db: Database, trace_ids: list[str], key: str) -> list[Subject]:
    """Both orders of each (production, shadow) pair; the shadow reply scrubbed before it goes anywhere."""

    if not trace_ids:
        return []
    shadows = {}
    for trace_id in trace_ids:
        value = db.execute(
            "SELECT json_extract(metadata, ?) FROM traces WHERE trace_id = ?", [json_path(key), trace_id]
        ).fetchone()[0]
        if isinstance(value, str) and value.strip():
            shadows[trace_id] = value
    known = [r[0] for r in db.execute("SELECT name FROM known_names")]
    scrubbed = Scrubber(known_names=known).scrub_many(list(shadows.values()))
    subjects = []
    for (trace_id, raw), result in zip(shadows.items(), scrubbed, strict=True):
        conversation = scrubbed_conversation(db, trace_id)
        if conversation[-1]["role"] != "assistant":
            continue
        # Masked on the raw reply with the scrubber's spans, so a value the scrubber cut in two is whole.
        (shadow,) = mask_redacted(db, trace_id, [raw], [result.spans])
        prod = conversation[-1]["content"]
        context = conversation[:-1]
        subjects.append(Subject(f"shadow:{key}", trace_id, "prod_first", context, (prod, shadow)))
        subjects.append(Subject(f"shadow:{key}", trace_id, "shadow_first", context, (shadow, prod)))
    return subjects


# The request --------------------------------------------------------------------------------------


def system_prompt(rubric: Rubric, examples: list[dict]) -> str:
    """The rubric as the judge reads it, with its few-shot examples (scrubbed, with the human verdict)."""
    lines = [rubric.instructions or "You grade replies of an AI assistant.", "", "Rubric:"]
    for metric in rubric.metrics:
        lines.append(f"- {metric.name}:")
        lines += [f"    {level}: {meaning}" for level, meaning in metric.levels.items()]
    lines += [
        "",
        "The overall verdict is 'fail' when any metric is at its lowest level, else 'pass'. The score is"
        " your confidence from 0 (certainly fails) to 1 (certainly passes). The reason is one line.",
    ]
    for n, example in enumerate(examples, 1):
        lines += ["", f"Example {n} (graded by a human: {example['verdict']}):", _render(example["turns"])]
    return "\n".join(lines)


def _render(turns: Iterable[dict]) -> str:
    return "\n".join(f"{t['role'].upper()}: {t['content']}" for t in turns)


def verdict_tool(rubric: Rubric) -> dict:
    """The tool whose input is the structured verdict."""
    metrics = {m.name: {"type": "string", "enum": list(m.levels)} for m in rubric.metrics}
    return {
        "name": VERDICT_TOOL,
        "description": "Record the verdict on the final assistant reply.",
        "input_schema": {
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": ["pass", "fail"]},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "reason": {"type": "string"},
                "metrics": {"type": "object", "properties": metrics, "required": list(metrics)},
            },
            "required": ["verdict", "score", "reason", "metrics"],
        },
    }


PREFERENCE = {
    "name": PREFERENCE_TOOL,
    "description": "Record which reply is better, or a tie.",
    "input_schema": {
        "type": "object",
        "properties": {
            "preference": {"type": "string", "enum": ["A", "B", "tie"]},
            "reason": {"type": "string"},
        },
        "required": ["preference", "reason"],
    },
}


def build_request(subject: Subject, rubric: Rubric, system: str, settings: JudgeSettings) -> dict:
    """The Messages API request for one subject."""
    if subject.replies:
        reply_a, reply_b = subject.replies
        content = (
            f"<conversation>\n{_render(subject.conversation)}\n</conversation>\n"
            f"<reply_a>\n{reply_a}\n</reply_a>\n<reply_b>\n{reply_b}\n</reply_b>\n"
            "Which reply to the last user message is better by the rubric? Call record_preference."
        )
        tool = PREFERENCE
    else:
        content = f"<conversation>\n{_render(subject.conversation)}\n</conversation>\n"
        if subject.expected:
            content += f"<expected>\n{subject.expected}\n</expected>\n"
        content += "Grade the final assistant reply by the rubric. Call record_verdict."
        tool = verdict_tool(rubric)
    return {
        "model": settings.model,
        "max_tokens": settings.max_tokens,
        "system": system,
        "messages": [{"role": "user", "content": content}],
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": tool["name"]},
    }


def prompt_hash(request: dict) -> str:
    """A hash of everything sent but the model: the same prompt always hashes the same."""
    body = {k: v for k, v in request.items() if k != "model"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


# Asking and validating ----------------------------------------------------------------------------


class Malformed(Exception):
    """The judge's answer does not validate."""


@dataclass
class Outcome:
    status: str  # ok | error (malformed, stored) | failed (API unavailable; not stored, retried next run)
    answer: dict | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0


def parse_verdict(message: object, rubric: Rubric) -> dict:
    """The validated verdict in a judge answer; raise Malformed otherwise."""
    data = _tool_input(message, VERDICT_TOOL)
    verdict, score = data.get("verdict"), data.get("score")
    if verdict not in ("pass", "fail"):
        raise Malformed(f"verdict {verdict!r} is not 'pass' or 'fail'")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        raise Malformed(f"score {score!r} is not a number in 0..1")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        raise Malformed("metrics is not an object")
    for metric in rubric.metrics:
        if metrics.get(metric.name) not in metric.levels:
            raise Malformed(
                f"metric {metric.name!r} level {metrics.get(metric.name)!r} is not one of its levels"
            )
    chosen = {m.name: metrics[m.name] for m in rubric.metrics}
    return {"verdict": verdict, "score": float(score), "reason": _reason(data), "metrics": chosen}


def parse_preference(message: object, position: str) -> dict:
    """The validated preference, turned from A/B into production/shadow by the order it was asked in."""
    data = _tool_input(message, PREFERENCE_TOOL)
    choice = data.get("preference")
    if choice not in ("A", "B", "tie"):
        raise Malformed(f"preference {choice!r} is not 'A', 'B' or 'tie'")
    first, second = ("production", "shadow") if position == "prod_first" else ("shadow", "production")
    verdict = {"A": first, "B": second, "tie": "tie"}[choice]
    score = {"production": 0.0, "tie": 0.5, "shadow": 1.0}[verdict]
    return {"verdict": verdict, "score": score, "reason": _reason(data), "metrics": {"asked": choice}}


def _tool_input(message: object, tool: str) -> dict:
    blocks = [b for b in getattr(message, "content", None) or [] if getattr(b, "type", None) == "tool_use"]
    block = next((b for b in blocks if b.name == tool), None)
    if block is None:
        raise Malformed(f"the answer does not call {tool}")
    if not isinstance(block.input, dict):
        raise Malformed(f"the {tool} input is not an object")
    return block.input


def _reason(data: dict) -> str:
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise Malformed("reason is missing or empty")
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON:
        raise Malformed(f"reason is {len(reason)} characters long; expected one line")
    return reason


def ask(client: anthropic.Anthropic, request: dict, parse: Callable[[object], dict], retries: int) -> Outcome:
    """One subject: ask, validate, ask again while malformed. Runs on a worker thread (no database)."""
    outcome = Outcome("error")
    problem = ""
    for attempt in range(1, retries + 2):
        outcome.attempts = attempt
        try:
            message = client.messages.create(**request)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as error:
            raise JudgeError(
                f"the API refused the credentials ({error.status_code}): {ENABLE_HELP}"
            ) from None
        except anthropic.NotFoundError as error:
            raise JudgeError(f"the API does not know model {request['model']!r}: {error.message}") from None
        except anthropic.APIStatusError as error:
            return dataclasses.replace(
                outcome, status="failed", error=f"HTTP {error.status_code} after retries"
            )
        except anthropic.APIConnectionError as error:
            return dataclasses.replace(outcome, status="failed", error=f"no answer: {type(error).__name__}")
        usage = getattr(message, "usage", None)
        outcome.input_tokens += getattr(usage, "input_tokens", 0) or 0
        outcome.output_tokens += getattr(usage, "output_tokens", 0) or 0
        try:
            outcome.answer = parse(message)
        except Malformed as error:
            problem = str(error)
            continue
        outcome.status = "ok"
        return outcome
    outcome.error = f"malformed answer after {outcome.attempts} attempts: {problem}"
    return outcome


# Runs ---------------------------------------------------------------------------------------------


@dataclass
class RunReport:
    """What one judge run did; ``failed`` subjects stay ungraded and the next run tries them again."""

    run_id: int
    rubric: str
    model: str
    target: str
    already_judged: int
    not_scrubbed: int
    requested: int
    judged: int = 0
    errors: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    status: str = "running"

    def as_json(self) -> dict:
        """The run's contract for scripts."""
        return {**dataclasses.asdict(self), "cost_usd": round(self.cost_usd, 6)}

    def summary(self) -> str:
        """One human-readable paragraph."""
        return (
            f"judge run {self.run_id} ({self.status}): {self.target},"
            f" rubric {self.rubric}, model {self.model}\n"
            f"  {self.judged} judged, {self.errors} malformed (stored as errors), {self.failed} failed"
            f" (API unavailable; the next run retries them)\n"
            f"  {self.already_judged} already judged,"
            f" {self.not_scrubbed} without an approved scrub (skipped)\n"
            f"  {self.input_tokens:,} input + {self.output_tokens:,} output tokens, ${self.cost_usd:.4f}"
        )


def run_judge(
    db: Database,
    actor: str,
    target: Target,
    rubric_name: str | None = None,
    limit: int | None = None,
    client: anthropic.Anthropic | None = None,
    settings: JudgeSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunReport:
    """Grade what ``target`` holds that this rubric version has not graded yet (at most ``limit``)."""
    settings = settings or load_judge_settings()
    if limit is not None and limit < 1:
        raise BadInput(f"--limit {limit}: expected a positive integer")
    chosen = rubric(db, rubric_name)
    subjects, not_scrubbed = target_subjects(db, target)
    done = _judged(db, chosen.id)
    pending = [s for s in subjects if (s.kind, s.id, s.position) not in done]
    if limit is not None:
        pending = _limit(pending, limit)
    client = client or make_client(settings)
    system = system_prompt(chosen, _examples(db, chosen))
    report = _start_run(
        db, actor, chosen, target, settings, client, len(subjects) - len(pending), not_scrubbed
    )
    report.requested = len(pending)
    try:
        _grade(db, client, chosen, system, settings, pending, report, progress)
        report.status = "finished"
    except BaseException:
        report.status = "interrupted"
        raise
    finally:
        _finish_run(db, actor, report)
    return report


def _limit(pending: list[Subject], limit: int) -> list[Subject]:
    """The first ``limit`` subjects, a pair's two orders counting as one."""
    keys = list(dict.fromkeys((s.kind, s.id) for s in pending))[:limit]
    keep = set(keys)
    return [s for s in pending if (s.kind, s.id) in keep]


def _judged(db: Database, rubric_id: int | None) -> set[tuple[str, str, str]]:
    rows = db.execute(
        "SELECT subject_kind, subject_id, position FROM judgments WHERE rubric_id = ?", [rubric_id]
    )
    return set(rows.fetchall())


def _examples(db: Database, chosen: Rubric) -> list[dict]:

    verdicts = human_verdicts(db, chosen, chosen.examples)
    return [
        {"verdict": verdicts[t], "turns": scrubbed_conversation(db, t)}
        for t in chosen.examples
        if t in verdicts
    ]


def _start_run(
    db: Database,
    actor: str,
    chosen: Rubric,
    target: Target,
    settings: JudgeSettings,
    client: anthropic.Anthropic,
    already: int,
    not_scrubbed: int,
) -> RunReport:
    with write(db):
        run_id = (
            db.table("judge_runs")
            .insert(
                {
                    **process_mark(),  # so a killed run is marked interrupted when the store is opened
                    "rubric_id": chosen.id,
                    "target": target.label,
                    "model": settings.model,
                    "base_url": str(client.base_url),
                    "status": "running",
                    "started_by": actor,
                    "started_at": now(),
                    "requested": 0,
                    "judged": 0,
                    "errors": 0,
                    "failed": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost_usd": 0.0,
                }
            )
            .last_pk
        )
        assert run_id is not None  # every insert into a rowid table has one
        audit(db, actor, "judge_start", "judge_run", run_id, target=target.label, rubric=chosen.label)
    return RunReport(run_id, chosen.label, settings.model, target.label, already, not_scrubbed, 0)


def _grade(
    db: Database,
    client: anthropic.Anthropic,
    chosen: Rubric,
    system: str,
    settings: JudgeSettings,
    pending: list[Subject],
    report: RunReport,
    progress: Callable[[int, int], None] | None,
) -> None:
    pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="judge")
    try:
        futures = {}
        for subject in pending:
            request = build_request(subject, chosen, system, settings)
            parse: Callable[[object], dict]
            if subject.replies:
                parse = functools.partial(parse_preference, position=subject.position)
            else:
                parse = lambda m: parse_verdict(m, chosen)  # noqa: E731
            future = pool.submit(ask, client, request, parse, settings.malformed_retries)
            futures[future] = (subject, prompt_hash(request))
        for n, future in enumerate(as_completed(futures), 1):
            subject, hashed = futures[future]
            _record(db, report, chosen, settings, subject, hashed, future.result())
            if progress:
                progress(n, len(futures))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _record(
    db: Database,
    report: RunReport,
    chosen: Rubric,
    settings: JudgeSettings,
    subject: Subject,
    hashed: str,
    outcome: Outcome,
) -> None:
    """Store one judgment (and its regression result's verdict) with the run's counters, all at once."""
    cost = settings.cost(outcome.input_tokens, outcome.output_tokens)
    report.input_tokens += outcome.input_tokens
    report.output_tokens += outcome.output_tokens
    report.cost_usd += cost
    counter = {"ok": "judged", "error": "errors", "failed": "failed"}[outcome.status]
    setattr(report, counter, getattr(report, counter) + 1)
    answer = outcome.answer or {}
    with write(db):
        if outcome.status != "failed":
            db.table("judgments").insert(
                {
                    "run_id": report.run_id,
                    "rubric_id": chosen.id,
                    "subject_kind": subject.kind,
                    "subject_id": subject.id,
                    "position": subject.position,
                    "status": outcome.status,
                    "verdict": answer.get("verdict"),
                    "score": answer.get("score"),
                    "reason": answer.get("reason"),
                    "metrics": json.dumps(answer["metrics"]) if answer else None,
                    "error": outcome.error,
                    "model": settings.model,
                    "prompt_hash": hashed,
                    "input_tokens": outcome.input_tokens,
                    "output_tokens": outcome.output_tokens,
                    "cost_usd": cost,
                    "attempts": outcome.attempts,
                    "created_at": now(),
                },
                ignore=True,  # another run graded it meanwhile: the unique index keeps theirs
            )
        if subject.kind == "eval_result" and outcome.status == "ok":
            grade_result(
                db,
                int(subject.id),
                answer["verdict"] == "pass",
                answer["score"],
                f"judge:{chosen.label}:{settings.model}",
            )
        _save_counters(db, report)


def _save_counters(db: Database, report: RunReport) -> None:
    db.table("judge_runs").update(
        report.run_id,
        {
            "requested": report.requested,
            "judged": report.judged,
            "errors": report.errors,
            "failed": report.failed,
            "input_tokens": report.input_tokens,
            "output_tokens": report.output_tokens,
            "cost_usd": report.cost_usd,
            "status": report.status,
        },
    )


def _finish_run(db: Database, actor: str, report: RunReport) -> None:
    with write(db):
        _save_counters(db, report)
        db.table("judge_runs").update(report.run_id, {"finished_at": now()})
        audit(db, actor, "judge_finish", "judge_run", report.run_id, **report.as_json())


# Reading runs and judgments ----------------------------------------------------------------------


def judge_runs(db: Database, limit: int = 20) -> list[dict]:
    """Recent judge runs with their counters, newest first."""
    return query_rows(
        db,
        """SELECT j.*, r.name || ' v' || r.version AS rubric FROM judge_runs j
           JOIN rubrics r ON r.id = j.rubric_id ORDER BY j.id DESC LIMIT ?""",
        [limit],
    )


def judge_targets(db: Database) -> dict[str, list]:
    """What a run can grade: batches, weeks with approved scrubs, regression runs awaiting verdicts."""
    return {
        "batch": [r[0] for r in db.execute("SELECT id FROM sample_batches ORDER BY id DESC")],
        "week": [
            r[0]
            for r in db.execute(
                "SELECT DISTINCT t.week FROM traces t JOIN scrubs s ON s.trace_id = t.trace_id"
                " WHERE s.status = 'approved' ORDER BY 1 DESC"
            )
        ],
        "run": [
            r[0]
            for r in db.execute(
                "SELECT DISTINCT run_id FROM eval_results WHERE passed IS NULL AND output IS NOT NULL"
                " ORDER BY 1 DESC"
            )
        ],
    }


def default_target(db: Database) -> Target:
    """The newest sample batch, for a run that names no target."""
    row = query_one(db, "SELECT max(id) AS id FROM sample_batches")
    if row is None or row["id"] is None:
        raise BadInput("nothing to grade: no sample batch yet; pass --week or --run")
    return Target("batch", str(row["id"]))


def erase_trace_judgments(db: Database, trace_ids: list[str]) -> None:
    """Blank the judge's payloads about these traces (reason, metrics, error); the verdicts stay.
    Call inside the erasing transaction."""
    marks = ",".join("?" * len(trace_ids))
    db.execute(
        "UPDATE judgments SET reason = NULL, metrics = NULL, error = NULL"
        f" WHERE subject_kind = 'trace' AND subject_id IN ({marks})",
        trace_ids,
    )
