"""Input drift: input length, language mix and intent mix per week against the reference weeks, with
real p-values (KS, chi-square, Bonferroni across the three), alarms on synthetic shifts, none on
controls; shown on the Drift page and in the cycle's attention list."""

import random
from collections import Counter

import pytest
from conftest import jsonl

from flywheel.config import load_config
from flywheel.cycle import _attention, _drift
from flywheel.drift import inputs as input_drift
from flywheel.ingest.run import ingest_files
from flywheel.store.db import open_db

ENGLISH = [
    "my card has not arrived yet",
    "how do I top up my account with a transfer",
    "why was I charged a fee for this payment",
    "can you help me reset my passcode please",
    "the exchange rate on my transfer looks wrong",
    "I want to cancel a payment I made yesterday",
]
SPANISH = [
    "mi tarjeta todavía no ha llegado a casa",
    "por qué me cobraron una comisión por este pago",
    "quiero cancelar el pago que hice ayer por la tarde",
    "cómo puedo recargar mi cuenta con una transferencia",
]
WEEKS = ["2026-04-06", "2026-04-13", "2026-04-20", "2026-04-27"]  # Mondays of W15..W18
INTENTS = ["card_arrival", "top_up", "fees", "passcode"]


def week_of(day: str, n: int, rng, *, spanish=0.0, long=0.0, intents=INTENTS, weights=None) -> list[dict]:
    out = []
    for i in range(n):
        text = rng.choice(SPANISH if rng.random() < spanish else ENGLISH)
        if rng.random() < long:
            text = " ".join([text, *rng.sample(ENGLISH, 4)])
        out.append(
            {
                "trace_id": f"{day}-{i:04d}",
                "timestamp": f"{day}T{i % 24:02d}:{i % 60:02d}:00Z",
                "input": text,
                "intent": rng.choices(intents, weights=weights)[0],
            }
        )
    return out


def database(tmp_path, last: dict) -> object:
    rng = random.Random(4)
    traces = [t for day in WEEKS[:3] for t in week_of(day, 150, rng)]
    traces += week_of(WEEKS[3], 150, rng, **last)
    db = open_db(tmp_path / "i.db")
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", traces)], config=load_config())
    return db


SHIFTS = {
    "control": ({}, set()),
    "length": ({"long": 0.5}, {"length"}),
    "language": ({"spanish": 0.3}, {"language"}),
    "intent": ({"weights": [6, 1, 1, 1]}, {"intent"}),
}


@pytest.mark.parametrize("case", SHIFTS)
def test_a_shift_alarms_on_its_own_test_and_a_control_on_none(tmp_path, case):
    shift, alarmed = SHIFTS[case]
    db = database(tmp_path, shift)
    rows = input_drift.run_input_drift(db, "ana", "all-weeks", config=load_config())
    by = {(r["week"], r["test"]): r for r in rows}
    assert {w for w, _ in by} == {"2026-W17", "2026-W18"}  # the reference is W15..W16
    assert not any(by["2026-W17", t]["alarm"] for t in input_drift.TESTS)  # same mix: a control week
    assert {t for t in input_drift.TESTS if by["2026-W18", t]["alarm"]} == alarmed
    for r in rows:
        assert r["p_adjusted"] == pytest.approx(min(1.0, 3 * r["p_value"]))
    assert db["input_drift"].count == 6
    assert db.execute("SELECT count(*) FROM audit_log WHERE action = 'input_drift'").fetchone()[0] == 1


def test_languages_are_identified_on_scrubbed_text_without_placeholders():
    assert input_drift.language("[PERSON] quiero cancelar mi tarjeta por favor") == "es"
    assert input_drift.language("[EMAIL] [PHONE]") == input_drift.UNKNOWN
    assert input_drift.language("") == input_drift.UNKNOWN


def test_the_tests_are_real_tests_on_their_own():
    rng = random.Random(0)
    same = [rng.gauss(50, 10) for _ in range(400)]
    assert input_drift.length_test(same[:200], same[200:])["p_value"] > 0.05
    assert input_drift.length_test(same[:200], [v + 15 for v in same[200:]])["p_value"] < 1e-6
    mixed = input_drift.mix_test(Counter(en=190, de=10), Counter(en=120, es=80))
    assert mixed["p_value"] < 1e-6 and mixed["effect"] == pytest.approx(0.4)
    assert mixed["detail"]["moved"][0]["value"] in ("es", "en")
    one = input_drift.mix_test(Counter(en=100), Counter(en=50))
    assert (one["p_value"], one["effect"]) == (1.0, 0.0)


def test_too_few_traces_give_no_test_and_no_alarm():
    rows = input_drift.compare([{"length": 3, "language": "en", "intent": "x"}] * 10, [])
    assert [r["p_value"] for r in rows] == [None, None, None]
    assert not any(r["alarm"] for r in rows)


def test_input_drift_alarms_reach_the_cycles_attention_list(tmp_path):
    db = database(tmp_path, SHIFTS["language"][0])
    step = _drift(
        db, "ana", "2026-W18", None, load_config()
    )  # no eval set: coverage drift skips, input drift runs
    assert step.status == "skipped"
    reasons = _attention([step])
    assert any("input drift in 2026-W18: language moved" in r for r in reasons)
    quiet = _attention([_drift(db, "ana", "2026-W17", None, load_config())])
    assert not any("input drift" in r for r in quiet)
