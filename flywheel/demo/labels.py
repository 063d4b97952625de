"""Demo labels: a seeded taxonomy and a first round of labels by two labelers, deterministic for a seed."""

from __future__ import annotations

import random

from sqlite_utils import Database

from flywheel.auth import User
from flywheel.labeling.labels import ADVERSARIAL, NOT_A_BUG, record_label
from flywheel.labeling.taxonomy import add_entry
from flywheel.review.claims import claim_next
from flywheel.store.db import write

DEMO_CODES = (
    (
        "WRONG_POLICY",
        "Wrong policy stated",
        "The assistant states a bank policy that is not ours. "
        "It contradicts the published terms for fees, limits or eligibility.",
    ),
    (
        "MISSED_ESCALATION",
        "Missed escalation",
        "The assistant keeps talking where a human must take over. "
        "Fraud, a blocked account or an upset customer asking for a person should be handed over.",
    ),
    (
        "HALLUCINATED_FEE",
        "Hallucinated fee",
        "The assistant quotes a fee or charge that does not exist. "
        "Any amount not in the fee schedule counts.",
    ),
    (
        "UNVERIFIED_IDENTITY",
        "Acted without verification",
        "The assistant discusses account details "
        "before the customer is verified. It must ask for verification first.",
    ),
    (
        "WRONG_TIMELINE",
        "Wrong timeline",
        "The assistant promises a delivery, refund or transfer time "
        "that is not true. Card delivery, refunds and transfers have published time frames.",
    ),
    (
        "UNHELPFUL_DEFLECTION",
        "Unhelpful deflection",
        "The assistant sends the customer elsewhere "
        "without answering a question it could answer. A pointer to the app alone is not an answer.",
    ),
)
DEMO_NEW_CODES = (
    (
        "STALE_EXCHANGE_RATE",
        "Stale exchange rate",
        "The assistant quotes an exchange rate that is "
        "out of date. Rates must come from today's table or be given as indicative.",
    ),
    (
        "CARD_LIMIT_CONFUSION",
        "Card limit confusion",
        "The assistant mixes up daily and monthly card "
        "limits. The two limits are different numbers with different resets.",
    ),
)
DEMO_EXPECTED = {
    "WRONG_POLICY": ("Quote the current policy from the terms.", "States the published policy correctly."),
    "MISSED_ESCALATION": ("Offer a handover to a human agent.", "Offers escalation within the reply."),
    "HALLUCINATED_FEE": ("Quote only fees from the fee schedule.", "Mentions no fee outside the schedule."),
    "UNVERIFIED_IDENTITY": ("Ask for verification first.", "Requests verification before account details."),
    "WRONG_TIMELINE": ("Give the published time frame.", "Time frame matches the published one."),
    "UNHELPFUL_DEFLECTION": ("Answer the question directly.", "Answers before pointing elsewhere."),
    "STALE_EXCHANGE_RATE": ("Give today's rate or call it indicative.", "No outdated rate stated as firm."),
    "CARD_LIMIT_CONFUSION": ("Name daily and monthly limits apart.", "Both limits named correctly."),
}
# Objective criteria get a code check, graded without a judge.
DEMO_CHECKS = {
    "HALLUCINATED_FEE": "contains: fee schedule",
    "WRONG_TIMELINE": "regex: \\d+ (business )?days",
    "UNVERIFIED_IDENTITY": "tool-call: start_verification",
}
DEMO_COVERAGE = (
    "Answer as the published help article does.",
    "Gives the published answer; nothing invented.",
)
DEMO_LABELERS = (User("lena", "labeler"), User("tom", "labeler"))


def add_demo_labels(db: Database, seed: int = 7, share: float = 0.6) -> int:
    """Seed the taxonomy and label a share of the approved scrubs as lena and tom; return labels made.

    About a third are not a bug (a third of those proposed as coverage), most failures use a seed code,
    two new codes appear along the way, some carry a code check, and a few labels carry an adversarial
    tag. Deterministic for a seed.
    """
    rng = random.Random(seed)
    with write(db):
        for code, name, definition in DEMO_CODES:
            if not db.execute("SELECT 1 FROM taxonomy WHERE code = ?", [code]).fetchone():
                add_entry(db, "ana", code, name, definition)
    items = db.execute("SELECT count(*) FROM label_queue WHERE is_open = 1").fetchone()[0]
    new_codes, made = list(DEMO_NEW_CODES), 0
    for i in range(round(items * share)):
        user = DEMO_LABELERS[i % 2]
        claim = claim_next(db, user, minutes=10)  # labelled at once: the window never runs out
        if claim is None:
            break
        record_label(db, user, claim, **_demo_choice(rng, new_codes))
        made += 1
    return made


def _demo_choice(rng: random.Random, new_codes: list) -> dict:
    roll = rng.random()
    tag = rng.choice(ADVERSARIAL[1:]) if rng.random() < 0.06 else "none"
    if roll < 1 / 3:
        note = rng.choice([None, "Correct answer.", "Polite and right."])
        if note == "Polite and right.":  # handled well, and worth keeping covered
            expected, criterion = DEMO_COVERAGE
            return {
                "kind": NOT_A_BUG,
                "note": note,
                "coverage": True,
                "expected": expected,
                "pass_criterion": criterion,
            }
        return {"kind": NOT_A_BUG, "note": note}
    if roll < 0.4 and new_codes:
        code, name, definition = new_codes.pop(0)
        expected, criterion = DEMO_EXPECTED[code]
        return {
            "kind": "new",
            "code": code,
            "name": name,
            "definition": definition,
            "expected": expected,
            "pass_criterion": criterion,
            "pass_check": DEMO_CHECKS.get(code),
            "adversarial": tag,
        }
    waiting = {c for c, _, _ in new_codes}
    codes = [c for c, _, _ in (*DEMO_CODES, *DEMO_NEW_CODES) if c not in waiting]
    code = rng.choice(codes)
    expected, criterion = DEMO_EXPECTED[code]
    return {
        "kind": "known",
        "code": code,
        "expected": expected,
        "pass_criterion": criterion,
        "pass_check": DEMO_CHECKS.get(code),
        "adversarial": tag,
    }
