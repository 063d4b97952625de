"""What the judge sends never holds a value a redaction of the trace covers, whatever field shape the
redaction was stored for (input, output, messages, messages[i], added by a reviewer): trace subjects,
shadow pairs, regression-run outputs and few-shot examples, checked on the request bodies the real SDK
sends to the local stand-in server. And every library reader of raw trace text refuses a labeler."""

import json
import re

import pytest

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.errors import PermissionDenied
from flywheel.ingest.run import ingest_lines, quarantined_lines
from flywheel.online.judge import Target, load_judge_settings, make_client, run_judge
from flywheel.online.rubrics import STARTER_RUBRIC, Rubric, save_rubric
from flywheel.review import scrubs as review
from flywheel.scrub import Scrubber, Span
from flywheel.store.clock import now
from flywheel.store.db import write
from flywheel.traces.queries import TraceFilter, approved_scrub, find_traces, raw_trace
from tests.fake_anthropic import FakeAnthropic
from tests.judge_data import LEAD, label

SETTINGS = load_judge_settings({}).replace(model="fake-judge", max_retries=0, concurrency=2, timeout_s=5)
REVIEWER = User("rita", "reviewer")
LABELER = User("lena", "labeler")
SHAPES = ("input", "output", "messages", "messages[0]", "messages[3]", "reviewer")
# Where each shape's redacted value stands in the raw trace ("messages": offsets into the JSON column)
HOME = {"reviewer": "messages[2]", "messages": "messages[1]"}
CONVERSATION = (
    ("user", "Hi, I need help with my card."),
    ("assistant", "Sure, what is the problem?"),
    ("user", "It has not arrived yet."),
    ("assistant", "It ships in 3 to 5 days."),
)


def secret(n: int) -> str:
    """A login no detector knows: only the stored redaction marks it."""
    return f"qzv{n}kestrel moorquill"


def variant(n: int) -> str:
    """The same login as a reply might write it: other case, other spacing, an invisible character."""
    first, second = secret(n).split()
    return f"{first.upper()}\u200b  {second.title()}"


def squash(text: str) -> str:
    return re.sub(r"[\s\u200b]+", "", text).lower()


def _raw(n: int, shape: str) -> dict:
    """A trace whose ``shape`` field holds the login once; another field repeats it as ``variant``."""
    home = HOME.get(shape, shape)
    fields = {"input": "Hi, I need help with my card.", "output": "Anything else?"}
    fields.update({f"messages[{i}]": content for i, (_, content) in enumerate(CONVERSATION)})
    fields[home] += f" My login is {secret(n)}."
    echo = "output" if home != "output" else "messages[3]"
    fields[echo] += f" (login {variant(n)})"
    return fields


def _trace(n: int, shape: str) -> dict:
    fields = _raw(n, shape)
    messages = [
        {"role": role, "content": fields[f"messages[{i}]"]} for i, (role, _) in enumerate(CONVERSATION)
    ]
    return {
        "trace_id": f"m-{n}",
        "timestamp": f"2026-11-03T10:0{n}:00Z",
        "input": fields["input"],
        "output": fields["output"],
        "messages": messages,
        "signals": {"judge_score": 0.5},
        "metadata": {"shadow_reply": f"Noted, {variant(n)}: your card ships this week."},
    }


def add_masked_traces(db) -> list[str]:
    """One approved trace per redaction shape: machine spans stored as such, the reviewer's added on the
    Review station; the approved scrub keeps the ``variant`` echo, which no redaction covers."""
    ingest_lines(
        db,
        [json.dumps(_trace(n, shape)).encode() for n, shape in enumerate(SHAPES)],
        "m.jsonl",
        "t",
        config=load_config(),
    )
    for n, shape in enumerate(SHAPES):
        trace_id, fields = f"m-{n}", _raw(n, shape)
        home = HOME.get(shape, shape)
        scrubbed = dict(fields)
        scrubbed[home] = fields[home].replace(secret(n), "[PERSON]")
        if shape == "reviewer":
            scrubbed[home] = fields[home]  # the machine missed it; the reviewer adds it below
        messages = [
            {"role": r, "content": scrubbed[f"messages[{i}]"]} for i, (r, _) in enumerate(CONVERSATION)
        ]
        with write(db):
            scrub_id = (
                db["scrubs"]
                .insert(
                    {
                        "trace_id": trace_id,
                        "scrubber_version": "test",
                        "status": "pending",
                        "input": scrubbed["input"],
                        "output": scrubbed["output"],
                        "messages": json.dumps(messages),
                        "created_at": now(),
                        "is_current": 1,
                    }
                )
                .last_pk
            )
            if shape != "reviewer":
                column = db["traces"].get(trace_id)["messages"] if shape == "messages" else fields[home]
                start = column.index(secret(n))
                db["redactions"].insert(
                    {
                        "scrub_id": scrub_id,
                        "field": shape,
                        "start": start,
                        "end": start + len(secret(n)),
                        "label": "PERSON",
                        "detector": "context",
                    }
                )
        review.claim_scrub(db, REVIEWER, scrub_id, minutes=10)
        if shape == "reviewer":
            assert review.add_redaction_text(db, REVIEWER, scrub_id, secret(n), "PERSON") == 1
        review.approve_scrub(db, REVIEWER, scrub_id)
    return [f"m-{n}" for n in range(len(SHAPES))]


def add_eval_run(db, ids: list[str]) -> None:
    """A regression run over eval rows drawn from the traces; each output repeats the trace's login."""
    db["eval_versions"].insert({"version": 1, "kind": "fold_in", "created_by": "ana", "created_at": "x"})
    db["eval_runs"].insert({"id": 1, "version": 1, "system": "v2", "imported_by": "ana", "imported_at": "x"})
    for n, trace_id in enumerate(ids):
        db["eval_rows"].insert(
            {
                "id": f"r{n}",
                "input": approved_scrub(db, trace_id)["input"],
                "trace_id": trace_id,
                "source": "fold_in",
                "adversarial": 0,
                "content_hash": f"h{n}",
                "created_at": "x",
                "expected": "says when the card arrives",
            }
        )
        output = f"Your card, {variant(n)}, ships soon."
        db["eval_results"].insert({"run_id": 1, "row_id": f"r{n}", "repeat": 0, "output": output})


@pytest.fixture
def masked_db(db):
    ids = add_masked_traces(db)
    for trace_id in ids[:3]:
        label(db, trace_id, "not_a_bug")
    examples = Rubric.from_body("support-reply", {**STARTER_RUBRIC.as_body(), "examples": ids[:3]})
    save_rubric(db, LEAD, examples)  # few-shot examples: three of the traces, in every request
    add_eval_run(db, ids)
    return db


def _sent(fake) -> list[str]:
    """What each request put in front of the judge: system prompt and message text."""
    bodies = [json.loads(body) for body in fake.bodies]
    return [body["system"] + "\n" + body["messages"][0]["content"] for body in bodies]


def test_the_planted_values_reach_the_judge_only_through_what_it_masks(masked_db):
    # Without masking the login would be sent: the approved scrub keeps its echo, the scrubber leaves some.
    for n, trace_id in enumerate([f"m-{n}" for n in range(len(SHAPES))]):
        scrub = approved_scrub(masked_db, trace_id)
        assert squash(secret(n)) in squash(
            scrub["output"] + json.dumps(scrub["messages"], ensure_ascii=False)
        ), SHAPES[n]
        shadow = Scrubber().scrub(_trace(n, SHAPES[n])["metadata"]["shadow_reply"]).text
        assert any(word in squash(shadow) for word in secret(n).split()), SHAPES[n]  # some of it is left


@pytest.mark.parametrize(
    "target", [Target("week", "2026-W45"), Target("shadow", "shadow_reply"), Target("run", "1")]
)
def test_no_request_body_holds_a_value_any_redaction_of_its_trace_covers(masked_db, target):
    with FakeAnthropic() as fake:
        client = make_client(SETTINGS, api_key="k", base_url=fake.url)
        report = run_judge(masked_db, "ana", target, client=client, settings=SETTINGS)
    expected = {"week": 6, "shadow": 12, "run": 6}[target.kind]
    assert report.judged == len(fake.bodies) == expected
    sent = _sent(fake)
    assert all(text.count("Example ") == 3 for text in sent)  # the few-shot examples went in each
    for n, shape in enumerate(SHAPES):
        for text in sent:
            assert squash(secret(n)) not in squash(text), f"{shape}: the login of m-{n} was sent ({target})"
    assert all("[PERSON]" in text for text in sent)


def test_the_shadow_reply_is_masked_whole_even_where_the_scrubber_took_part_of_it(masked_db):
    (masked,) = review.mask_redacted(
        masked_db, "m-0", ["Hi Qzv0kestrel moorquill!"], [[Span(3, 11, "ID", "x")]]
    )
    assert masked == "Hi [PERSON]!"


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("call jane doe now", {"Jane Doe": "PERSON"}, "call [PERSON] now"),
        ("call JANE   DOE now", {"Jane Doe": "PERSON"}, "call [PERSON] now"),
        ("call Ja\u200bne Doe", {"Jane Doe": "PERSON"}, "call [PERSON]"),
        ("call ＪＡＮＥ Doe", {"Jane Doe": "PERSON"}, "call [PERSON]"),
        ("Limit for Li and li.", {"Li": "PERSON"}, "Limit for [PERSON] and [PERSON]."),
        ("id zk991x and zk991xy", {"zk991x": "ID"}, "id [ID] and [ID]y"),
        ("Jane Doe-Smith", {"Jane Doe": "PERSON", "Doe-Smith": "PERSON"}, "[PERSON]"),
        ("nothing here", {"Jane Doe": "PERSON"}, "nothing here"),
        ("nothing here", {}, "nothing here"),
        ("", {"Jane Doe": "PERSON"}, ""),
    ],
)
def test_mask_values_decision_table(text, values, expected):
    assert review.mask_values(text, values) == expected


def test_a_redaction_the_reviewer_dropped_masks_nothing_and_an_unknown_trace_has_nothing_to_mask(db):
    add_masked_traces(db)
    rid = db.execute(
        "SELECT r.id FROM redactions r JOIN scrubs s ON s.id = r.scrub_id WHERE s.trace_id = 'm-1'"
    )
    db["redactions"].update(rid.fetchone()[0], {"removed_by": "rita"})
    assert review.mask_redacted(db, "m-1", [f"x {secret(1)}"]) == [f"x {secret(1)}"]
    assert review.mask_redacted(db, "m-0", [f"x {secret(0)}"]) == ["x [PERSON]"]
    assert review.mask_redacted(db, "no-such-trace", ["x"]) == ["x"]


# Raw-text readers refuse a labeler ----------------------------------------------------------------


READERS = {
    "raw_trace": lambda db, scrub_id, user: raw_trace(db, user, "m-0"),
    "scrub_view": lambda db, scrub_id, user: review.scrub_view(db, user, scrub_id),
    "review_queue": lambda db, scrub_id, user: review.review_queue(db, user),
    "reopenable_scrubs": lambda db, scrub_id, user: review.reopenable_scrubs(db, user),
    "known_names": lambda db, scrub_id, user: review.known_names(db, user),
    "quarantined_lines": lambda db, scrub_id, user: quarantined_lines(db, user),
}


@pytest.mark.parametrize("reader", READERS)
def test_every_raw_text_reader_refuses_a_labeler(db, reader):
    add_masked_traces(db)
    scrub_id = db.execute("SELECT id FROM scrubs WHERE trace_id = 'm-0'").fetchone()[0]
    READERS[reader](db, scrub_id, REVIEWER)  # it works for a reviewer
    with pytest.raises(PermissionDenied):
        READERS[reader](db, scrub_id, LABELER)
    with pytest.raises(PermissionDenied):  # a lead picked without sign-in on an exposed server
        READERS[reader](db, scrub_id, User("eve", "lead", exposed=True))


def test_the_trace_list_holds_raw_text_only_for_raw_text_roles(db):
    add_masked_traces(db)
    listed = find_traces(db, LABELER, TraceFilter())
    assert listed and not any({"input", "output", "messages", "metadata"} & set(row) for row in listed)
    assert {"input", "output"} <= set(find_traces(db, REVIEWER, TraceFilter())[0])
