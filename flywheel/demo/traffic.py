"""Demo traffic: deterministic, realistic support-assistant traces built from Banking77 queries.

Twelve ISO weeks of a banking assistant's production traces in the trace JSONL format of DESIGN.md.
What the stations need to find is planted on purpose: PII in about a quarter of the traces, a few
adversarial inputs, failing replies behind the bad signals, and drift in the last four weeks (an
enterprise cohort ramps up and a handful of intents that were rare become common). ``demo_samples``
also hands out that ground truth, for tests and benchmarks; the traces themselves do not carry it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from itertools import accumulate
from pathlib import Path
from typing import Any

from flywheel.errors import BadInput

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "banking77"
DEFAULT_END = dt.date(2026, 11, 20)
WEEKS = 12
LATE_WEEKS = 4
V2_FROM_WEEK = 7
# Relative traffic per UTC hour: people write to their bank during the day.
# fmt: off
HOURLY_TRAFFIC = (0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.5, 2.5, 3, 3, 2.8,
                  2.6, 2.8, 2.8, 2.6, 2.4, 2.2, 2.2, 2, 1.8, 1.4, 0.9, 0.5)
# fmt: on

# Rare in the first eight weeks, common in the last four: the intents a drift detector should surface.
RISING_INTENTS = (
    "getting_virtual_card",
    "get_disposable_virtual_card",
    "virtual_card_not_working",
    "disposable_card_limits",
    "fiat_currency_support",
    "request_refund",
    "Refund_not_showing_up",
    "reverted_card_payment?",
)
RISING_SHARE = (0.016,) * (WEEKS - LATE_WEEKS) + (0.16, 0.26, 0.32, 0.35)
ENTERPRISE_SHARE = (0.09, 0.1, 0.1, 0.1, 0.11, 0.1, 0.1, 0.11, 0.24, 0.34, 0.42, 0.46)

RATES = {
    "multi_turn": 0.15,
    "adversarial": 0.012,
    "pii": 0.2,
    "enterprise_company": 0.4,
    "enterprise_pii": 0.2,
    "retried": 0.02,
}

BAD_LINE_KINDS = (
    "not_json",
    "missing_input",
    "wrong_types",
    "invalid_utf8",
    "changed_duplicate",
    "exact_duplicate",
)

# --- text banks -------------------------------------------------------------------------------------
# The words of the demo live in demo_text.json (package data); arrays load as tuples.


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return {key: _frozen(item) for key, item in value.items()}
    return value


_BANKS = _frozen(
    json.loads(resources.files("flywheel.demo").joinpath("demo_text.json").read_text(encoding="utf-8"))
)

NAMES = _BANKS["NAMES"]
COMPANIES = _BANKS["COMPANIES"]
TEAMS = _BANKS["TEAMS"]
ROLES = _BANKS["ROLES"]
GREETINGS = _BANKS["GREETINGS"]
SIGN_OFFS = _BANKS["SIGN_OFFS"]
CONTEXTS = _BANKS["CONTEXTS"]
ENTERPRISE_OPENINGS = _BANKS["ENTERPRISE_OPENINGS"]
ENTERPRISE_CLOSINGS = _BANKS["ENTERPRISE_CLOSINGS"]
FOLLOW_UPS = _BANKS["FOLLOW_UPS"]
CLARIFYING = _BANKS["CLARIFYING"]
FAMILY_KEYWORDS = _BANKS["FAMILY_KEYWORDS"]
REPLIES = _BANKS["REPLIES"]
FAILING_REPLIES = _BANKS["FAILING_REPLIES"]
REFUSALS = _BANKS["REFUSALS"]
COMPLIANT_FAILURES = _BANKS["COMPLIANT_FAILURES"]
ADVERSARIAL = _BANKS["ADVERSARIAL"]

# Street names and postcodes are generic; the phone ranges are the ones regulators reserve for fiction.
ADDRESSES = (
    lambda r: f"{r.randint(1, 240)} Elm Street, Springfield, IL 627{r.randint(10, 99)}",
    lambda r: (
        f"Flat {r.randint(1, 12)}, {r.randint(2, 90)} Harbour Road, Leeds LS{r.randint(1, 9)} "
        f"{r.randint(1, 9)}AB"
    ),
    lambda r: f"Lindenstraße {r.randint(1, 80)}, 10{r.randint(100, 999)} Berlin",
    lambda r: f"{r.randint(1, 40)} rue des Lilas, 690{r.randint(1, 9):02d} Lyon",
    lambda r: f"Calle del Olmo {r.randint(1, 60)}, 3º B, 280{r.randint(10, 50)} Madrid",
    lambda r: f"{r.randint(1, 99)} Wattle Avenue, Fitzroy VIC 3065",
    lambda r: f"Keizersgracht {r.randint(10, 400)}, 1016 {r.choice('ABCDEFG')}K Amsterdam",
)
PHONES = (
    lambda r: f"+44 7700 900{r.randint(0, 999):03d}",
    lambda r: f"07700 900{r.randint(0, 999):03d}",
    lambda r: f"+1 (202) 555-01{r.randint(0, 99):02d}",
    lambda r: f"555-01{r.randint(0, 99):02d}",
    lambda r: f"+61 491 570 {r.randint(100, 159)}",
    lambda r: f"+33 6 39 98 {r.randint(10, 99)} {r.randint(10, 99)}",
)
EMAIL_DOMAINS = _BANKS["EMAIL_DOMAINS"]
DETAIL_TEMPLATES = _BANKS["DETAIL_TEMPLATES"]


@dataclass
class DemoSample:
    """One demo trace with the ground truth the generator planted in it."""

    trace: dict
    pii: list[dict] = field(default_factory=list)  # {"label", "value"}, labels as the scrub CLI names them
    adversarial: str | None = None
    failing: bool = False


@dataclass(frozen=True)
class _Bank:
    texts: dict[str, tuple[str, ...]]
    family: dict[str, str]
    steady: tuple[str, ...]
    steady_cum: tuple[float, ...]


# --- public API ---------------------------------------------------------------------------------------


def demo_traces(seed: int = 7, n: int = 6000, end: dt.date | None = None) -> Iterator[dict]:
    """Realistic support-assistant traces (DESIGN.md format) over the 12 ISO weeks ending at `end`."""
    return (sample.trace for sample in demo_samples(seed, n, end))


def demo_lines(
    seed: int = 7, n: int = 6000, end: dt.date | None = None, bad_share: float = 0.003
) -> Iterator[bytes]:
    """The demo traces as JSONL lines, with a deterministic few malformed lines (BAD_LINE_KINDS) mixed in."""
    if isinstance(bad_share, bool) or not isinstance(bad_share, (int, float)) or not 0 <= bad_share < 1:
        raise BadInput(f"bad_share must be a number in [0, 1), got {bad_share!r}")
    return _lines(demo_samples(seed, n, end), seed, n, bad_share)


def demo_samples(seed: int = 7, n: int = 6000, end: dt.date | None = None) -> Iterator[DemoSample]:
    """The demo traces with their planted ground truth (PII values, adversarial kind, failing reply)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BadInput(f"n must be a non-negative integer, got {n!r}")
    return _samples(random.Random(seed), n, _end_date(end))


def bad_line(kind: str, recent: Sequence[dict], new_id: str, rng: random.Random) -> bytes:
    """One malformed JSONL line of the given kind, built from recently emitted traces."""
    base = dict(recent[-1], trace_id=new_id)
    maker = {
        "not_json": _not_json,
        "missing_input": _missing_input,
        "wrong_types": _wrong_types,
        "invalid_utf8": _invalid_utf8,
    }.get(kind)
    if maker is not None:
        return maker(base, rng)
    earlier = rng.choice(list(recent))
    if kind == "exact_duplicate":
        return _line(earlier)
    if kind == "changed_duplicate":
        # Late feedback: the exporter re-sends the trace once the user has reacted to it.
        signals = dict(earlier["signals"], thumbs="down")
        metadata = dict(earlier["metadata"], feedback="late", resent_after=recent[-1]["trace_id"])
        return _line(dict(earlier, signals=signals, metadata=metadata))
    raise BadInput(f"unknown bad line kind {kind!r}; expected one of {', '.join(BAD_LINE_KINDS)}")


# --- generation ---------------------------------------------------------------------------------------


def _samples(rng: random.Random, n: int, last: dt.date) -> Iterator[DemoSample]:
    bank = _bank()
    start = _first_day(last)
    for i, moment in enumerate(_timestamps(rng, start, last, n), start=1):
        yield _sample(rng, bank, i, moment, week=(moment.date() - start).days // 7)


def _lines(samples: Iterator[DemoSample], seed: int, n: int, bad_share: float) -> Iterator[bytes]:
    rng = random.Random(f"{seed}/bad-lines")  # its own stream, so the good lines equal demo_traces'
    plan = _bad_line_plan(rng, n, bad_share)
    recent: deque[dict] = deque(maxlen=200)
    for i, sample in enumerate(samples, start=1):
        yield _line(sample.trace)
        recent.append(sample.trace)
        for j, kind in plan.get(i, ()):
            yield bad_line(kind, recent, f"t-{n + j + 1:06d}", rng)


def _end_date(end: dt.date | None) -> dt.date:
    if end is None:
        return DEFAULT_END
    if isinstance(end, dt.datetime):
        return end.date()
    if not isinstance(end, dt.date):
        raise BadInput(f"end must be a date, got {end!r}")
    return end


def _first_day(end: dt.date) -> dt.date:
    """Monday of the ISO week 11 weeks before the one holding `end`."""
    return end - dt.timedelta(days=end.weekday(), weeks=WEEKS - 1)


def _timestamps(rng: random.Random, start: dt.date, end: dt.date, n: int) -> list[dt.datetime]:
    days = [start + dt.timedelta(days=d) for d in range((end - start).days + 1)]
    # Traffic grows ~3% a week and dips at weekends.
    weights = [(1 + 0.03 * ((d - start).days // 7)) * (0.6 if d.weekday() >= 5 else 1.0) for d in days]
    picked_days = rng.choices(days, cum_weights=list(accumulate(weights)), k=n)
    picked_hours = rng.choices(range(24), cum_weights=list(accumulate(HOURLY_TRAFFIC)), k=n)
    midnight = dt.time(tzinfo=dt.UTC)
    moments = [
        dt.datetime.combine(day, midnight) + dt.timedelta(hours=hour, seconds=rng.randrange(3600))
        for day, hour in zip(picked_days, picked_hours, strict=True)
    ]
    return sorted(moments)


# --- one trace ----------------------------------------------------------------------------------------


def _sample(rng: random.Random, bank: _Bank, index: int, moment: dt.datetime, week: int) -> DemoSample:
    cohort = _cohort(rng, week)
    intent = _intent(rng, bank, week)
    sample = DemoSample(trace={}, adversarial=_adversarial_kind(rng))
    query = rng.choice(bank.texts[intent])
    main = _compose(rng, cohort, query, sample)
    messages = _conversation(rng, bank, intent, main) if rng.random() < RATES["multi_turn"] else None
    model = "assistant-v2" if week >= V2_FROM_WEEK else "assistant-v1"
    tripped = rng.random() < (0.65 if sample.adversarial else 0.007)
    sample.failing = _fails(rng, intent, cohort, model, sample.adversarial, tripped)
    signals = _signals(rng, sample, tripped, turns=1 if messages is None else len(messages) // 2 + 1)
    output = _output(rng, bank.family[intent], cohort, sample, signals)
    _price(rng, signals, model, main if messages is None else messages, output)
    trace = {
        "trace_id": f"t-{index:06d}",
        "timestamp": moment.isoformat()[:19] + "Z",
        "input": messages[-1]["content"] if messages else main,
        "output": output,
    }
    if messages is not None:
        trace["messages"] = messages
    trace.update(cohort=cohort, intent=intent, signals=signals, metadata=_metadata(rng, cohort, model))
    sample.trace = trace
    return sample


def _metadata(rng: random.Random, cohort: str, model: str) -> dict:
    web_share = 0.7 if cohort == "enterprise" else 0.4  # companies work at desks, consumers on phones
    metadata = {"model": model, "channel": "web" if rng.random() < web_share else "app"}
    # Releases, a canary and shadow replies draw from their own generator, seeded from the main one's
    # state without advancing it, so every other demo value stays what it was. The seed hashes only the
    # state's integers: hashing the whole state would take in its None, whose hash differs per process.
    own = random.Random(hash(rng.getstate()[1]))
    metadata["release"] = model.removeprefix("assistant-")
    if model == "assistant-v2" and own.random() < 0.1:
        metadata["release"] = "v2.1-canary"  # a canary on a tenth of traffic; it behaves like v2
    if model == "assistant-v2" and own.random() < 0.12:
        generic = (
            "Thanks for reaching out! I have passed your message to our team, who will get back to you soon.",
            "I can help with that. Which card or payment is this about, and when did it happen?",
        )
        family = own.choice(sorted(REPLIES))
        metadata["shadow_reply"] = own.choice([*generic, *REPLIES[family]])  # a candidate model, in shadow
    return metadata


def _cohort(rng: random.Random, week: int) -> str:
    # Enterprise customers are a new cohort: a trickle (pilots) until the last weeks, then the ramp.
    early = week < WEEKS - LATE_WEEKS
    if rng.random() < (0.02 if early else ENTERPRISE_SHARE[week]):
        return "enterprise"
    return "free" if rng.random() < 0.62 else "smb"


def _intent(rng: random.Random, bank: _Bank, week: int) -> str:
    if rng.random() < RISING_SHARE[week]:
        return rng.choice(RISING_INTENTS)
    return rng.choices(bank.steady, cum_weights=bank.steady_cum)[0]


def _adversarial_kind(rng: random.Random) -> str | None:
    if rng.random() >= RATES["adversarial"]:
        return None
    return rng.choice(tuple(ADVERSARIAL))


def _fails(
    rng: random.Random, intent: str, cohort: str, model: str, adversarial: str | None, tripped: bool
) -> bool:
    """Whether the reply is wrong; a guardrail stopping an attack is right, stopping a real question not."""
    if tripped:
        return not adversarial
    if adversarial:
        return rng.random() < 0.5  # the model complied with the attack
    return rng.random() < _failure_rate(intent, cohort, model)


def _failure_rate(intent: str, cohort: str, model: str) -> float:
    rate = 0.075 if model == "assistant-v1" else 0.06
    if intent in RISING_INTENTS:  # never tuned for them: they fail more once they become common
        rate *= 1.8
    if cohort == "enterprise":
        rate *= 1.3
    return rate


# --- user text ----------------------------------------------------------------------------------------


def _compose(rng: random.Random, cohort: str, query: str, sample: DemoSample) -> str:
    """The user's first message: the Banking77 query wrapped the way people actually write."""
    kinds = _pii_kinds(rng, cohort)
    person = rng.choice(NAMES)
    company = rng.choice(COMPANIES) if "company" in kinds else None
    if sample.adversarial:
        query = rng.choice(ADVERSARIAL[sample.adversarial]).format(query=query)
    if cohort == "enterprise":
        parts = _enterprise_parts(rng, query, person, company, kinds, sample)
    else:
        parts = _consumer_parts(rng, query, person, kinds, sample)
    text = " ".join(p for p in parts if p).replace(" \n", "\n")
    # Some people type everything in lower case; lower the planted values too so they stay findable.
    if cohort != "enterprise" and rng.random() < 0.05:
        for item in sample.pii:
            item["value"] = item["value"].lower()
        return text.lower()
    return text


def _pii_kinds(rng: random.Random, cohort: str) -> list[str]:
    kinds = []
    if cohort == "enterprise" and rng.random() < RATES["enterprise_company"]:
        kinds.append("company")
    share = RATES["enterprise_pii"] if cohort == "enterprise" else RATES["pii"]
    if rng.random() < share:
        count = rng.choices((1, 2, 3), weights=(0.6, 0.3, 0.1))[0]
        pool = ["name", "email", "phone", "card", "account", "iban", "address", "ticket", "ip"]
        weights = [0.35, 0.2, 0.2, 0.12, 0.12, 0.05, 0.12, 0.12, 0.03]
        while len(kinds) < count + ("company" in kinds):
            kind = rng.choices(pool, weights=weights)[0]
            if kind not in kinds:
                kinds.append(kind)
    return kinds


def _consumer_parts(
    rng: random.Random, query: str, person: tuple[str, str], kinds: list[str], sample: DemoSample
) -> list[str]:
    parts = [rng.choice(GREETINGS) + rng.choice((",", ",", "!", " -")) if rng.random() < 0.35 else ""]
    if "name" in kinds:
        parts.append(_intro(rng, _plant(sample, "PERSON", _name(rng, person))))
    parts.append(query)
    parts += [_detail(rng, kind, person, sample) for kind in kinds if kind not in ("name", "company")]
    if rng.random() < 0.2:
        parts.append(rng.choice(CONTEXTS))
    if rng.random() < 0.25:
        parts.append(rng.choice(SIGN_OFFS))
    return parts


def _enterprise_parts(
    rng: random.Random,
    query: str,
    person: tuple[str, str],
    company: str | None,
    kinds: list[str],
    sample: DemoSample,
) -> list[str]:
    parts = [rng.choice(ENTERPRISE_OPENINGS) if rng.random() < 0.8 else ""]
    team = rng.choice(TEAMS)
    if company:
        parts.append(f"I'm writing on behalf of the {team} team at {_plant(sample, 'ORG', company)}.")
    else:
        parts.append(f"I'm contacting you for our {team} team.")
    parts.append(query if rng.random() < 0.6 else f'One of our colleagues reports: "{query}"')
    parts += [_detail(rng, kind, person, sample) for kind in kinds if kind not in ("name", "company")]
    parts.append(rng.choice(ENTERPRISE_CLOSINGS))
    if "name" in kinds:
        name = _plant(sample, "PERSON", f"{person[0]} {person[1]}")
        parts.append(f"\nKind regards,\n{name}\n{rng.choice(ROLES)}")
    elif rng.random() < 0.5:
        parts.append(f"\nBest regards,\nThe {team} team")
    return parts


def _intro(rng: random.Random, name: str) -> str:
    template = rng.choice(("I'm {}.", "this is {} here.", "My name is {}.", "{} here -", "It's {}."))
    return template.format(name)


def _name(rng: random.Random, person: tuple[str, str]) -> str:
    name = f"{person[0]} {person[1]}" if rng.random() < 0.7 else person[0]
    roll = rng.random()
    return name.lower() if roll < 0.12 else name.upper() if roll < 0.2 else name


def _detail(rng: random.Random, kind: str, person: tuple[str, str], sample: DemoSample) -> str:
    value = _pii_value(rng, kind, person)
    label = {
        "card": "CREDIT_CARD",
        "address": "LOCATION",
        "email": "EMAIL",
        "phone": "PHONE",
        "ip": "IP",
    }.get(kind, "ID")
    _plant(sample, label, value)
    return rng.choice(DETAIL_TEMPLATES[kind]).format(value)


def _pii_value(rng: random.Random, kind: str, person: tuple[str, str]) -> str:
    if kind == "email":
        first, last = (p.lower().replace(" ", "").replace("'", "") for p in person)
        local = rng.choice(
            (f"{first}.{last}", f"{first[0]}.{last}", f"{first}{rng.randint(1, 99)}", f"{last}.{first[0]}")
        )
        return f"{local}@{rng.choice(EMAIL_DOMAINS)}"
    if kind == "phone":
        return rng.choice(PHONES)(rng)
    if kind == "card":
        return _card_number(rng)
    if kind == "account":
        return f"ACC-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}"
    if kind == "iban":
        return _iban(rng)
    if kind == "address":
        return rng.choice(ADDRESSES)(rng)
    if kind == "ip":
        return f"{rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{rng.randint(1, 254)}"
    return rng.choice(
        (
            f"TCK-{rng.randint(10000, 99999)}",
            f"ORD-2026-{rng.randint(0, 99999):05d}",
            f"case #{rng.randint(1000000, 9999999)}",
        )
    )


def _plant(sample: DemoSample, label: str, value: str) -> str:
    sample.pii.append({"label": label, "value": value})
    return value


def _card_number(rng: random.Random) -> str:
    """A Luhn-valid Visa, Mastercard or Amex number, typed with spaces, dashes or not at all."""
    prefix, length = rng.choice(
        (("4", 16), ("4", 16), (str(rng.randint(51, 55)), 16), (rng.choice(("34", "37")), 15))
    )
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    digits = body + str(luhn_check_digit(body))
    groups = (4, 6, 5) if length == 15 else (4, 4, 4, 4)
    chunks, at = [], 0
    for size in groups:
        chunks.append(digits[at : at + size])
        at += size
    return rng.choice((" ", "-", "", " ")).join(chunks)


def luhn_check_digit(body: str) -> int:
    """The digit that makes `body` + digit pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10


def _iban(rng: random.Random) -> str:
    """A checksum-valid GB or DE IBAN, printed in groups of four."""
    if rng.random() < 0.5:
        bban = "NWBK" + "".join(str(rng.randrange(10)) for _ in range(14))
        country = "GB"
    else:
        bban = "".join(str(rng.randrange(10)) for _ in range(18))
        country = "DE"
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


# --- conversation and reply ---------------------------------------------------------------------------


def _conversation(rng: random.Random, bank: _Bank, intent: str, main: str) -> list[dict]:
    """2-6 user turns, alternating with assistant turns, ending on the user message that is the input."""
    user_turns = rng.choices((2, 3, 4, 5, 6), weights=(0.42, 0.3, 0.15, 0.09, 0.04))[0]
    messages = [{"role": "user", "content": main}]
    for turn in range(1, user_turns):
        clarify = turn == 1 and rng.random() < 0.5
        reply = rng.choice(CLARIFYING) if clarify else rng.choice(REPLIES[bank.family[intent]])
        follow_up = rng.choice(bank.texts[intent]) if rng.random() < 0.5 else rng.choice(FOLLOW_UPS)
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": follow_up}]
    return messages


def _output(rng: random.Random, family: str, cohort: str, sample: DemoSample, signals: dict) -> str:
    if signals["schema_valid"] is False:
        # Structured output cut off mid-object: what a failed schema validation looks like in a trace.
        return '{"action": "open_ticket", "priority": "high", "summary": "Customer reports'
    if signals["guardrail_tripped"]:
        return rng.choice(REFUSALS)
    if sample.adversarial:
        return rng.choice(COMPLIANT_FAILURES if sample.failing else REFUSALS)
    reply = _failing_reply(rng, family) if sample.failing else rng.choice(REPLIES[family])
    first_names = [p["value"].split()[0] for p in sample.pii if p["label"] == "PERSON"]
    if first_names and rng.random() < 0.5:
        reply = f"Thanks, {_plant(sample, 'PERSON', first_names[0].title())}. {reply}"
    if cohort == "enterprise":
        reply = f"Thank you for contacting Business Support. {reply}"
    return reply


def _failing_reply(rng: random.Random, family: str) -> str:
    if rng.random() < 0.4:  # misrouted: a fluent answer to a different question
        return rng.choice(REPLIES[rng.choice([f for f in REPLIES if f != family])])
    return rng.choice(FAILING_REPLIES)


# --- signals ------------------------------------------------------------------------------------------


def _signals(rng: random.Random, sample: DemoSample, tripped: bool, turns: int) -> dict:
    schema_valid = rng.random() >= (0.04 if sample.failing else 0.0065)
    failing = sample.failing = sample.failing or not schema_valid  # a broken structured reply is a failure
    thumbs_roll = rng.random()
    down, up = (0.25, 0.01) if failing else (0.019, 0.11)
    signals: dict[str, object] = {
        "thumbs": "down" if thumbs_roll < down else "up" if thumbs_roll < down + up else None,
        "regenerated": rng.random() < (0.12 if failing else 0.018),
        "retried": rng.random() < RATES["retried"],
        "escalated": rng.random() < (0.17 if failing else 0.012) + 0.015 * (turns - 1),
        "guardrail_tripped": tripped,
        "schema_valid": schema_valid,
    }
    signals["judge_score"] = _judge_score(rng, failing, signals)
    signals["turns"] = turns
    return signals


def _judge_score(rng: random.Random, failing: bool, signals: dict) -> float:
    if failing:
        score = rng.triangular(0.03, 0.68, 0.3)
    elif rng.random() < 0.085:
        score = rng.uniform(0.4, 0.7)
    else:
        score = rng.triangular(0.7, 1.0, 0.93)
    if signals["thumbs"] == "down" or signals["escalated"]:
        score = min(score, rng.uniform(0.35, 0.8))
    return round(score, 3)


def _price(rng: random.Random, signals: dict, model: str, prompt: str | list[dict], output: str) -> None:
    """Latency of the last call, cost of the whole conversation: every turn re-sends the history."""
    turns = signals["turns"]
    prompt_chars = len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)
    # Each of the `turns` calls sends ~450 tokens of system prompt plus the history so far (half, on average).
    tokens_in = turns * 450 + prompt_chars // 4 * (turns + 1) // 2
    tokens_out = turns * (len(output) // 4 + 1)
    in_price, out_price, speed = (3e-6, 15e-6, 1.0) if model == "assistant-v1" else (1e-6, 5e-6, 0.8)
    calls = 2 if signals["regenerated"] else 1
    latency = rng.lognormvariate(6.5, 0.35) * speed * (1 + 0.15 * (turns - 1)) + 12 * len(output) // 4
    if signals["retried"]:
        latency += rng.uniform(2000, 8000)
    signals["latency_ms"] = int(latency)
    signals["cost_usd"] = round(calls * (tokens_in * in_price + tokens_out * out_price), 6)


# --- malformed lines ----------------------------------------------------------------------------------


def _bad_line_plan(rng: random.Random, n: int, bad_share: float) -> dict[int, list[tuple[int, str]]]:
    """After which good line each bad line goes: every kind at least once when there are any."""
    plan: dict[int, list[tuple[int, str]]] = {}
    if bad_share == 0 or n < 2:
        return plan
    count = max(len(BAD_LINE_KINDS), round(n * bad_share))
    kinds = list(BAD_LINE_KINDS) + rng.choices(BAD_LINE_KINDS, k=count - len(BAD_LINE_KINDS))
    rng.shuffle(kinds)
    positions = sorted(rng.randint(1, n) for _ in kinds)
    for j, (position, kind) in enumerate(zip(positions, kinds, strict=True)):
        plan.setdefault(position, []).append((j, kind))
    return plan


def _not_json(base: dict, rng: random.Random) -> bytes:
    text = json.dumps(base, ensure_ascii=False)
    line = rng.choice(
        (
            text[: len(text) // 2],  # a write cut off mid-line
            f"{base['timestamp']} WARNING exporter: flush timeout, {rng.randint(2, 40)} spans dropped",
            repr(base),  # a Python dict printed instead of serialized
        )
    )
    return line.encode("utf-8") + b"\n"


def _missing_input(base: dict, rng: random.Random) -> bytes:
    variant = rng.randrange(3)
    text = base.pop("input")
    if variant == 1:
        base["input"] = None
    elif variant == 2:
        base["prompt"] = text  # an exporter that renamed the field
    return _line(base)


def _wrong_types(base: dict, rng: random.Random) -> bytes:
    variant = rng.randrange(3)
    if variant == 0:
        base["input"] = [{"role": "user", "content": base["input"]}]
    elif variant == 1:
        base["signals"] = dict(base["signals"], judge_score=str(base["signals"]["judge_score"]))
    else:
        base["signals"] = list(base["signals"].items())
    return _line(base)


def _invalid_utf8(base: dict, rng: random.Random) -> bytes:
    # A Latin-1 encoder somewhere upstream: the 'é' arrives as the single byte 0xE9.
    base["input"] = f"{base['input']} Merci, {rng.choice(('René', 'Zoé', 'André'))}"
    return _line(base).replace("é".encode(), b"\xe9")


def _line(trace: dict) -> bytes:
    return json.dumps(trace, ensure_ascii=False).encode("utf-8") + b"\n"


# --- source data --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _bank() -> _Bank:
    texts = _banking77_texts()
    steady = [intent for intent in texts if intent not in RISING_INTENTS]
    random.Random(77).shuffle(steady)  # popularity ranks independent of the file's order
    weights = [(rank + 3) ** -0.6 for rank in range(len(steady))]
    return _Bank(
        texts, {intent: _family(intent) for intent in texts}, tuple(steady), tuple(accumulate(weights))
    )


def _banking77_texts() -> dict[str, tuple[str, ...]]:
    """Banking77 train queries by intent, whitespace collapsed and deduplicated."""
    by_intent: dict[str, list[str]] = {}
    seen: set[str] = set()
    with open(DATA_DIR / "train.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = " ".join(row["text"].split())
            if text and text.lower() not in seen:
                seen.add(text.lower())
                by_intent.setdefault(row["category"], []).append(text)
    return {intent: tuple(texts) for intent, texts in by_intent.items()}


def _family(intent: str) -> str:
    for family, keywords in FAMILY_KEYWORDS:
        if any(k in intent for k in keywords):
            return family
    return "account"
