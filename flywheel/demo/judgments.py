"""Judgments for the demo database only: the real judge and SDK client, answered in-process by a
deterministic offline grader instead of a language model.

The grader knows the demo generator's reply banks and marks a reply failing when it is one of the
failing ones, with a seeded share of deliberate mistakes; pairs are ranked the same way. Its runs
and judgments carry the model name ``demo-offline-grader`` and cost nothing, and the pages say so.
Nothing outside ``build_demo`` uses it.
"""

from __future__ import annotations

import hashlib
import json

import httpx2
from sqlite_utils import Database

from flywheel.auth import User
from flywheel.demo.traffic import COMPLIANT_FAILURES, FAILING_REPLIES, REPLIES
from flywheel.online.judge import Target, load_judge_settings, make_client, run_judge
from flywheel.online.rubrics import STARTER_RUBRIC, save_rubric

DEMO_GRADER_MODEL = "demo-offline-grader"
DEMO_GRADER_URL = "http://demo-offline-grader.invalid"
MISTAKE_SHARE = 0.1
_FAILING = (*FAILING_REPLIES, *COMPLIANT_FAILURES, '{"action": "open_ticket"')
_GOOD = tuple(reply for replies in REPLIES.values() for reply in replies)


def add_demo_judgments(db: Database, lead: User) -> dict:
    """Save the starter rubric, grade every demo batch and the shadow replies; return run counts."""
    rubric = save_rubric(db, lead, STARTER_RUBRIC)
    settings = load_judge_settings({}).replace(
        model=DEMO_GRADER_MODEL, max_retries=0, input_usd_per_mtok=0.0, output_usd_per_mtok=0.0
    )
    http = httpx2.Client(transport=httpx2.MockTransport(_grade_request))
    client = make_client(settings, api_key="demo", base_url=DEMO_GRADER_URL, http_client=http)
    judged = 0
    batches = [r[0] for r in db.execute("SELECT id FROM sample_batches ORDER BY id")]
    for batch in batches:
        judged += run_judge(
            db, "demo", Target("batch", str(batch)), rubric.name, client=client, settings=settings
        ).judged
    pairs = run_judge(
        db, "demo", Target("shadow", "shadow_reply"), rubric.name, client=client, settings=settings
    )
    return {"judged": judged, "shadow_judgments": pairs.judged}


def _grade_request(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    content = body["messages"][0]["content"]
    tool = body["tool_choice"]["name"]
    if tool == "record_preference":
        a, b = (_between(content, f"<reply_{x}>\n", f"\n</reply_{x}>") for x in "ab")
        rank_a, rank_b = _rank(a), _rank(b)
        choice = "A" if rank_a > rank_b else "B" if rank_b > rank_a else "tie"
        data: dict[str, object] = {
            "preference": choice,
            "reason": "demo grader: ranks replies by the demo's reply banks",
        }
    else:
        reply = content.rsplit("</conversation>", 1)[0].rsplit("ASSISTANT: ", 1)[-1]
        fails = _rank(reply) == 0
        roll = _unit(content)
        if roll < MISTAKE_SHARE:
            fails = not fails
        score = round(0.1 + 0.35 * _unit(reply) if fails else 0.5 + 0.48 * _unit(reply + "s"), 3)
        data = {
            "verdict": "fail" if fails else "pass",
            "score": score,
            "reason": "demo grader: "
            + ("a failing reply from the demo's banks" if fails else "a regular reply"),
            "metrics": {m["name"]: "fail" if fails else "pass" for m in STARTER_RUBRIC.as_body()["metrics"]},
        }
    message = {
        "id": "msg_demo",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "tool_use", "id": "toolu_demo", "name": tool, "input": data}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": len(request.content) // 4, "output_tokens": 40},
    }
    return httpx2.Response(200, json=message)


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def _rank(reply: str) -> int:
    """2 for a regular reply from the banks, 0 for a failing one, 1 for anything else."""
    if any(bad in reply for bad in _FAILING):
        return 0
    return 2 if any(good in reply for good in _GOOD) else 1


def _unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8
