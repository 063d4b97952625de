"""The demo traffic: deterministic, well-formed, realistic rates, planted PII, real drift, real bad lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path

import pytest

from flywheel.demo.traffic import (
    BAD_LINE_KINDS,
    DATA_DIR,
    RISING_INTENTS,
    demo_lines,
    demo_samples,
    demo_traces,
    luhn_check_digit,
)
from flywheel.errors import BadInput
from flywheel.traces.queries import normalize_trace

ROOT = Path(__file__).resolve().parent.parent
N = 6000
SIGNAL_TYPES = {
    "regenerated": bool,
    "retried": bool,
    "escalated": bool,
    "guardrail_tripped": bool,
    "schema_valid": bool,
    "judge_score": float,
    "turns": int,
    "latency_ms": int,
    "cost_usd": float,
}


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(demo_lines(seed=7, n=N))


@pytest.fixture(scope="module")
def samples() -> list:
    return list(demo_samples(seed=7, n=N))


@pytest.fixture(scope="module")
def traces(samples) -> list[dict]:
    return [s.trace for s in samples]


@pytest.fixture(scope="module")
def split(lines) -> tuple[list[dict], list[tuple[str, bytes]]]:
    """Good traces in order, and every other line with the kind it turned out to be."""
    good: dict[str, dict] = {}
    bad = []
    for line in lines:
        kind, obj = classify(line, good)
        if kind == "good":
            good[obj["trace_id"]] = obj
        else:
            bad.append((kind, line))
    return list(good.values()), bad


def classify(line: bytes, good: dict[str, dict]) -> tuple[str, dict | None]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return "not_json", None
    if not isinstance(obj.get("input"), str):
        return ("wrong_types" if "input" in obj and obj["input"] is not None else "missing_input"), obj
    if not isinstance(obj.get("signals"), dict) or isinstance(obj["signals"].get("judge_score"), str):
        return "wrong_types", obj
    if obj["trace_id"] in good:
        return ("exact_duplicate" if good[obj["trace_id"]] == obj else "changed_duplicate"), obj
    return "good", obj


def week_index(traces: list[dict]) -> dict[str, int]:
    weeks = sorted({datetime.fromisoformat(t["timestamp"]).isocalendar()[:2] for t in traces})
    return {
        t["trace_id"]: weeks.index(datetime.fromisoformat(t["timestamp"]).isocalendar()[:2]) for t in traces
    }


def share(items: list, predicate) -> float:
    return sum(1 for item in items if predicate(item)) / len(items)


def luhn_valid(digits: str) -> bool:
    """An independent Luhn check, so a broken generator cannot pass its own test."""
    doubled = [int(d) * 2 for d in digits[-2::-2]]
    return (sum(int(d) for d in digits[::-2]) + sum(d - 9 if d > 9 else d for d in doubled)) % 10 == 0


# --- determinism and shape ----------------------------------------------------------------------------


def test_same_seed_gives_identical_lines(lines):
    assert list(demo_lines(seed=7, n=N)) == lines


@pytest.mark.slow
def test_same_seed_gives_identical_lines_in_another_process(lines):
    # nothing in a demo line may hang on a per-process value (string hashes, the hash of None)
    script = (
        "import sys; from flywheel.demo.traffic import demo_lines;"
        " sys.stdout.buffer.writelines(demo_lines(seed=7, n=400))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    outputs = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, check=True).stdout
        for _ in range(2)
    }
    assert outputs == {b"".join(demo_lines(seed=7, n=400))}


def test_different_seed_gives_different_lines(lines):
    other = list(demo_lines(seed=8, n=N))
    assert other != lines
    assert sum(a == b for a, b in zip(other, lines, strict=False)) < 10


def test_demo_lines_are_demo_traces_plus_bad_lines(split, traces):
    good, _ = split
    assert good == traces
    assert list(demo_lines(seed=3, n=200, bad_share=0)) == [
        (json.dumps(t, ensure_ascii=False) + "\n").encode() for t in demo_traces(seed=3, n=200)
    ]


def test_every_line_ends_with_one_newline(lines):
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)


def test_good_lines_have_required_keys_and_signal_types(split):
    good, _ = split
    assert len(good) == N
    for trace in good:
        assert isinstance(trace["trace_id"], str) and isinstance(trace["input"], str) and trace["input"]
        assert isinstance(trace["output"], str) and trace["output"]
        assert trace["cohort"] in ("free", "smb", "enterprise")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", trace["timestamp"])
        signals = trace["signals"]
        assert signals["thumbs"] in ("up", "down", None)
        for key, kind in SIGNAL_TYPES.items():
            assert type(signals[key]) is kind, (trace["trace_id"], key, signals[key])
        assert 0 <= signals["judge_score"] <= 1
        assert signals["latency_ms"] > 0 and signals["cost_usd"] > 0
        assert trace["metadata"]["model"] in ("assistant-v1", "assistant-v2")
        assert trace["metadata"]["channel"] in ("web", "app")


def test_good_lines_pass_the_trace_contract(split):
    good, _ = split
    for trace in good:
        normalize_trace(trace)


def test_trace_ids_are_unique_and_in_time_order(split):
    good, _ = split
    ids = [t["trace_id"] for t in good]
    assert len(set(ids)) == len(ids)
    assert ids[:2] == ["t-000001", "t-000002"]
    stamps = [t["timestamp"] for t in good]
    assert stamps == sorted(stamps)


def test_intents_are_banking77_categories_with_irregular_labels_verbatim(traces):
    categories = set(json.loads((DATA_DIR / "categories.json").read_text()))
    intents = {t["intent"] for t in traces}
    assert intents <= categories
    assert len(intents) == 77
    assert {"Refund_not_showing_up", "reverted_card_payment?"} <= intents


def test_multi_turn_conversations_alternate_and_end_on_the_input(traces):
    multi = [t for t in traces if "messages" in t]
    assert 0.10 <= len(multi) / len(traces) <= 0.20
    for trace in multi:
        roles = [m["role"] for m in trace["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        assert 2 <= trace["signals"]["turns"] == roles.count("user") <= 6
        assert trace["messages"][-1]["content"] == trace["input"]
    assert all(t["signals"]["turns"] == 1 for t in traces if "messages" not in t)


def test_cost_grows_with_turns(traces):
    def mean_cost(turns: set[int]) -> float:
        costs = [t["signals"]["cost_usd"] for t in traces if t["signals"]["turns"] in turns]
        return sum(costs) / len(costs)

    assert mean_cost({3, 4, 5, 6}) > 1.3 * mean_cost({1})


# --- rates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "value", "low", "high"),
    [
        ("thumbs", "down", 0.025, 0.06),
        ("thumbs", "up", 0.07, 0.14),
        ("regenerated", True, 0.015, 0.05),
        ("retried", True, 0.01, 0.035),
        ("escalated", True, 0.015, 0.05),
        ("guardrail_tripped", True, 0.005, 0.04),
        ("schema_valid", False, 0.003, 0.025),
    ],
)
def test_signal_rates_are_realistic(traces, signal, value, low, high):
    assert low <= share(traces, lambda t: t["signals"][signal] == value) <= high


def test_judge_scores_are_mostly_high_with_a_borderline_band(traces):
    scores = [t["signals"]["judge_score"] for t in traces]
    assert 0.08 <= share(scores, lambda s: 0.4 <= s <= 0.7) <= 0.18
    assert share(scores, lambda s: s > 0.7) > 0.7


def test_judge_scores_follow_user_signals(traces):
    def mean_score(predicate) -> float:
        scores = [t["signals"]["judge_score"] for t in traces if predicate(t)]
        return sum(scores) / len(scores)

    up = mean_score(lambda t: t["signals"]["thumbs"] == "up")
    assert mean_score(lambda t: t["signals"]["thumbs"] == "down") < up - 0.2
    assert mean_score(lambda t: t["signals"]["escalated"]) < up - 0.2


def test_failing_traces_carry_the_bad_signals(samples):
    failing = [s.trace for s in samples if s.failing]
    passing = [s.trace for s in samples if not s.failing]
    assert share(failing, lambda t: t["signals"]["thumbs"] == "down") > 4 * share(
        passing, lambda t: t["signals"]["thumbs"] == "down"
    )


def test_adversarial_inputs_trip_the_guardrail_more_often(samples):
    adversarial = [s.trace for s in samples if s.adversarial]
    ordinary = [s.trace for s in samples if not s.adversarial]
    assert 0.003 <= len(adversarial) / len(samples) <= 0.03
    assert {s.adversarial for s in samples} >= {"policy_override", "prompt_injection", "role_play"}
    tripped = share(adversarial, lambda t: t["signals"]["guardrail_tripped"])
    assert tripped > 0.4 > 10 * share(ordinary, lambda t: t["signals"]["guardrail_tripped"])


# --- PII ------------------------------------------------------------------------------------------------


def all_text(trace: dict) -> str:
    turns = [m["content"] for m in trace.get("messages", [])]
    return "\n".join([trace["input"], trace["output"], *turns])


def test_pii_is_planted_in_a_quarter_of_traces_and_really_there(samples):
    assert 0.15 <= share(samples, lambda s: bool(s.pii)) <= 0.35
    for sample in samples:
        text = all_text(sample.trace)
        for item in sample.pii:
            assert item["value"] in text, (sample.trace["trace_id"], item)


def test_pii_covers_the_classes_the_scrubber_must_find(samples):
    labels = Counter(item["label"] for s in samples for item in s.pii)
    assert set(labels) >= {"PERSON", "ORG", "EMAIL", "PHONE", "CREDIT_CARD", "LOCATION", "ID", "IP"}
    assert min(labels.values()) >= 20


def test_luhn_check_digit_matches_known_numbers():
    assert luhn_check_digit("453914880343646") == 7
    assert luhn_check_digit("37828224631000") == 5
    assert luhn_valid("4539148803436467") and not luhn_valid("4539148803436466")


def test_planted_card_numbers_pass_luhn(samples):
    cards = [i["value"] for s in samples for i in s.pii if i["label"] == "CREDIT_CARD"]
    assert len(cards) > 50
    for card in cards:
        digits = re.sub(r"\D", "", card)
        assert len(digits) in (15, 16) and luhn_valid(digits), card


def test_pii_is_findable_without_ground_truth(traces):
    """Independent of the planted list: emails and Luhn-valid card numbers show up in the raw text."""
    email = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
    card = re.compile(r"\b\d{4}[ -]?\d{4,6}[ -]?\d{4,5}(?:[ -]?\d{4})?\b")
    with_email = share(traces, lambda t: bool(email.search(t["input"])))
    cards = [re.sub(r"\D", "", m) for t in traces for m in card.findall(all_text(t))]
    assert with_email > 0.02
    assert sum(luhn_valid(c) for c in cards) > 50


# --- time and drift -------------------------------------------------------------------------------------


def test_timestamps_span_twelve_iso_weeks_ending_at_end(traces):
    weeks = {datetime.fromisoformat(t["timestamp"]).isocalendar()[:2] for t in traces}
    assert len(weeks) == 12
    assert max(weeks) == (2026, 47)
    assert max(t["timestamp"] for t in traces) < "2026-11-21"


def test_end_moves_the_window():
    stamps = [t["timestamp"] for t in demo_traces(n=300, end=date(2026, 3, 1))]
    assert max(stamps) < "2026-03-02" and min(stamps) >= "2025-12-08"


def test_weekly_volume_grows(traces):
    counts = Counter(week_index(traces).values())
    assert sum(counts[w] for w in (8, 9, 10)) / 3 > sum(counts[w] for w in (0, 1, 2)) / 3


def test_enterprise_cohort_ramps_up_in_the_last_four_weeks(traces):
    weeks = week_index(traces)
    early = [t for t in traces if weeks[t["trace_id"]] < 8]
    late = [t for t in traces if weeks[t["trace_id"]] >= 8]
    early_share = share(early, lambda t: t["cohort"] == "enterprise")
    late_share = share(late, lambda t: t["cohort"] == "enterprise")
    assert early_share < 0.15 and late_share > 0.3 and late_share > 2.5 * early_share


def test_rising_intents_are_rare_early_and_common_late(traces):
    weeks = week_index(traces)
    early = [t for t in traces if weeks[t["trace_id"]] < 8]
    late = [t for t in traces if weeks[t["trace_id"]] >= 8]
    per_intent_early = Counter(t["intent"] for t in early if t["intent"] in RISING_INTENTS)
    assert max(per_intent_early.values()) / len(early) < 0.01
    late_share = share(late, lambda t: t["intent"] in RISING_INTENTS)
    assert late_share > 0.15 and late_share > 5 * share(early, lambda t: t["intent"] in RISING_INTENTS)


def test_enterprise_users_write_longer_and_mention_their_team(traces):
    enterprise = [t["input"] for t in traces if t["cohort"] == "enterprise" and "messages" not in t]
    consumer = [t["input"] for t in traces if t["cohort"] != "enterprise" and "messages" not in t]
    assert sum(map(len, enterprise)) / len(enterprise) > 1.8 * sum(map(len, consumer)) / len(consumer)
    assert share(enterprise, lambda text: "team" in text) > 0.8


def test_model_switches_once(traces):
    models = [t["metadata"]["model"] for t in traces]
    switch = models.index("assistant-v2")
    assert (
        switch > 0 and set(models[:switch]) == {"assistant-v1"} and set(models[switch:]) == {"assistant-v2"}
    )


# --- malformed lines ------------------------------------------------------------------------------------


def test_bad_lines_are_few_and_of_every_intended_kind(split, lines):
    _, bad = split
    kinds = Counter(kind for kind, _ in bad)
    expected = {
        "not_json",
        "missing_input",
        "wrong_types",
        "invalid_utf8",
        "changed_duplicate",
        "exact_duplicate",
    }
    assert set(kinds) == expected == set(BAD_LINE_KINDS)
    assert len(bad) == len(lines) - N == round(N * 0.003)


def test_bad_lines_are_rejected_by_the_trace_contract(split):
    _, bad = split
    for kind, line in bad:
        if kind in ("missing_input", "wrong_types"):
            with pytest.raises(BadInput):
                normalize_trace(json.loads(line))


def test_changed_duplicate_differs_from_the_original(split):
    good, bad = split
    by_id = {t["trace_id"]: t for t in good}
    for kind, line in bad:
        if kind == "changed_duplicate":
            resent = json.loads(line)
            assert resent != by_id[resent["trace_id"]]
            assert resent["input"] == by_id[resent["trace_id"]]["input"]


def test_bad_lines_scale_with_bad_share():
    assert len(list(demo_lines(seed=1, n=2000, bad_share=0.02))) == 2040
    assert len(list(demo_lines(seed=1, n=2000, bad_share=0))) == 2000
    assert len(list(demo_lines(seed=1, n=20))) == 20 + len(BAD_LINE_KINDS)  # every kind, even when few


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n must be"),
        ({"n": "10"}, "n must be"),
        ({"bad_share": 1.5}, "bad_share"),
        ({"end": "2026-01-01"}, "end must be"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(kwargs, message):
    with pytest.raises(BadInput, match=message):
        demo_lines(**kwargs)


@pytest.mark.slow
def test_first_start_publishes_the_demo_then_computes_its_drift_series(tmp_path):
    """The app's first start opens on a demo without its slow drift series; the series follows in the
    background, once, and a database that is not a demo is never touched."""
    from flywheel.demo.build import build_demo, demo_drift_pending, demo_status, finish_demo
    from flywheel.store.db import open_db

    path = tmp_path / "demo.db"
    build_demo(path, seed=5, traces=1000, drift=False)
    assert open_db(path)["drift_runs"].count == 0 and open_db(path)["labels"].count > 0
    assert demo_drift_pending(path)
    finish_demo(path)
    assert demo_status()["running"] is False and demo_status()["error"] is None
    assert demo_status()["stage"] and demo_status()["total"] > 0  # progress was reported
    # the series (one run over every week), then the weekly cycle with its own drift run of the last week
    assert open_db(path)["drift_runs"].count == 2
    cycles = open_db(path).execute("SELECT status, needs_attention FROM cycles").fetchall()
    assert cycles == [("finished", 1)], cycles
    assert not demo_drift_pending(path)
    other = open_db(tmp_path / "team.db")  # a team's own store: no demo ingest run, nothing pending
    other.close()
    assert not demo_drift_pending(tmp_path / "team.db")
