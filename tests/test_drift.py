"""Drift: the embedding cache, exact nearest rows, calibration, clusters, the drift batch and the CLI."""

import json
import math

import numpy as np
import pytest
from conftest import jsonl, trace
from drift_support import add_eval_version, banking77

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.config import load_config
from flywheel.drift import run as drift
from flywheel.errors import BadInput, PermissionDenied
from flywheel.ingest.run import ingest_files
from flywheel.store.db import open_db
from flywheel.vectors.stand_in import hashing_encoder

ANA, LENA = User("ana", "lead"), User("lena", "labeler")
COVERED = ("card_arrival", "exchange_rate", "top_up_failed", "lost_or_stolen_card", "pin_blocked")
NOVEL = ("age_limit", "apple_pay_or_google_pay", "terminate_account")
WEEKS = ("2026-W10", "2026-W11", "2026-W12", "2026-W13")
MONDAYS = ("2026-03-02", "2026-03-09", "2026-03-16", "2026-03-23")


@pytest.fixture
def drift_db(db, tmp_path):
    """Four weeks of 60 traces: three of covered intents, the last half novel; an eval set of the covered."""
    texts, rng = banking77(), np.random.default_rng(5)
    add_eval_version(db, [t for intent in COVERED for t in texts[intent][:12]])
    traces, n = [], 0
    for week, monday in enumerate(MONDAYS):
        for i in range(60):
            novel = week == 3 and i % 2 == 0
            intent = NOVEL[i % 3] if novel else COVERED[i % 5]
            n += 1
            text = texts[intent][12 + int(rng.integers(0, 60))]
            if n == 7:
                text += " Write to me at jane.roe@example.com"
            traces.append(
                {
                    "trace_id": f"t-{n:04d}",
                    "timestamp": f"{monday}T10:{i:02d}:00Z",
                    "input": text,
                    "intent": intent,
                }
            )
    ingest_files(db, [jsonl(tmp_path / "traces.jsonl", traces)], actor="test", config=load_config())
    return db


def test_a_warm_run_embeds_nothing_it_has_seen_and_a_new_model_is_a_new_baseline(drift_db):
    calls = []
    model = drift.Model("bag-of-words", "1", hashing_encoder(calls))
    cold = drift.run_drift(drift_db, "ana", drift.ALL_WEEKS, model=model, config=load_config())
    assert cold.embedded == sum(calls) > 200 and cold.scrubbed == 240
    warm = drift.run_drift(drift_db, "ana", drift.ALL_WEEKS, model=model, config=load_config())
    assert (warm.embedded, warm.scrubbed) == (0, 0) and sum(calls) == cold.embedded
    assert warm.as_json() == cold.as_json()
    other = drift.Model("bag-of-words", "2", hashing_encoder(calls, dim=64))
    again = drift.run_drift(drift_db, "ana", drift.ALL_WEEKS, model=other, config=load_config())
    assert again.embedded == cold.embedded and again.calibration.tau != cold.calibration.tau
    keys = drift_db.execute("SELECT revision, count(*) FROM drift_vectors GROUP BY revision").fetchall()
    assert keys == [("1", cold.embedded), ("2", cold.embedded)]


def test_traces_are_embedded_on_scrubbed_text_only(drift_db):
    seen = []
    model = drift.Model("bag-of-words", "1", lambda texts: seen.extend(texts) or hashing_encoder()(texts))
    drift.run_drift(drift_db, "ana", "2026-W10", model=model, config=load_config())
    assert not any("jane.roe@example.com" in t for t in seen) and any("[EMAIL]" in t for t in seen)
    stored = drift_db.execute("SELECT text FROM drift_texts WHERE trace_id = 't-0007'").fetchone()[0]
    assert "[EMAIL]" in stored and "jane.roe" not in stored


def test_nearest_rows_are_the_brute_force_nearest():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(300, 24)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    queries = rng.normal(size=(50, 24)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index, distance = drift.nearest_rows(queries, rows, chunk=7)
    brute = [min(range(300), key=lambda j: 1 - float(np.dot(q, rows[j]))) for q in queries]
    assert index.tolist() == brute
    assert np.allclose(
        distance, [1 - float(np.dot(q, rows[j])) for q, j in zip(queries, brute, strict=True)], atol=1e-6
    )


def test_the_exceedance_test_is_exact_under_no_shift():
    calibration = drift.Calibration(tau=0.5, n=200, beyond=9)
    law = [
        drift.exceedance_p_value(k, 100, calibration) - drift.exceedance_p_value(k + 1, 100, calibration)
        for k in range(101)
    ]
    assert math.isclose(sum(law), 1, abs_tol=1e-9)
    # The same law by simulation: ranks of 300 exchangeable values.
    rng, counts = np.random.default_rng(0), np.zeros(101)
    for _ in range(4000):
        values = rng.random(300)
        tau = np.sort(values[:200])[::-1][9]
        counts[int(np.sum(values[200:] > tau))] += 1
    assert np.abs(counts / 4000 - law).max() < 0.02


def test_calibration_alarms_near_alpha_without_shift_and_always_with_one():
    # 1,500 unshifted weeks: at α = 0.01 a block of 300 can reach 3% by chance, 1,500 rarely pass 1.5%
    alarms, ps, shifted = 0, [], 0
    for seed in range(1500):
        rng = np.random.default_rng(seed)
        reference = rng.gamma(4, 0.08, size=600)
        points = drift.calibrate(reference), drift.calibrate(reference, drift.FAR_QUANTILE)
        week = drift.window_stats(rng.gamma(4, 0.08, size=300), *points)
        alarms += week["alarm"]
        ps.append(week["p_value"])
        if seed < 300:
            novel = np.concatenate([rng.gamma(4, 0.08, size=255), rng.gamma(9, 0.08, size=45)])  # 15% new
            shifted += drift.window_stats(novel, *points)["alarm"]
    assert alarms / 1500 <= 0.015
    assert 0.02 <= np.mean(np.array(ps) < 0.05) <= 0.07  # Bonferroni over two points: at most 5%
    assert shifted / 300 >= 0.95


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_calibration_on_synthetic_vectors_holds_without_shift_and_alarms_on_new_topics():
    alarms, shifted = 0, 0
    for seed in range(80):
        rng = np.random.default_rng(seed)
        topics = unit(rng.normal(size=(30, 32)))
        new_topics = unit(rng.normal(size=(5, 32)))

        def traffic(n, centres, rng=rng):
            return unit(centres[rng.integers(len(centres), size=n)] + 0.1 * rng.normal(size=(n, 32)))

        rows = traffic(150, topics)
        calibration = drift.calibrate(drift.nearest_rows(traffic(600, topics), rows)[1])
        same = drift.nearest_rows(traffic(300, topics), rows)[1]
        alarms += drift.window_stats(same, calibration)["alarm"]
        mixed = np.vstack([traffic(255, topics), traffic(45, new_topics)])  # 15% new topics
        shifted += drift.window_stats(drift.nearest_rows(mixed, rows)[1], calibration)["alarm"]
    assert alarms / 80 <= 0.03 and shifted / 80 >= 0.95


def test_window_stats_report_intervals_around_the_estimates():
    calibration = drift.Calibration(tau=0.5, n=400, beyond=20)
    stats = drift.window_stats(np.array([0.1] * 80 + [0.9] * 20), calibration)
    assert stats["share_beyond"] == 0.2 and stats["share_ci"][0] < 0.2 < stats["share_ci"][1]
    assert stats["mean_ci"][0] < stats["mean_distance"] == 0.26 < stats["mean_ci"][1]
    assert stats["alarm"] and stats["p_value"] < 1e-4
    with pytest.raises(BadInput, match="at least 50"):
        drift.calibrate(np.ones(10))


def test_clusters_group_separated_vectors_largest_first_and_are_named_by_their_words():
    rng = np.random.default_rng(2)
    centres = np.eye(3, 16, dtype=np.float32)
    vectors = np.vstack([centres[c] + 0.05 * rng.normal(size=(n, 16)) for c, n in ((0, 4), (1, 9), (2, 6))])
    labels = drift.cluster_vectors(vectors.astype(np.float32))
    assert [int(np.sum(labels == c)) for c in range(3)] == [9, 6, 4] and labels.max() == 2
    names = drift.cluster_names(
        {
            0: ["my virtual card was declined", "virtual card declined online"],
            1: ["close my account please", "how to close the account"],
        },
        ["where is my card", "my card was declined", "my account balance"],
    )
    assert names[0][0] == "virtual card" and "close" in " ".join(names[1])


def test_a_run_stores_the_series_and_clusters_of_the_novel_traffic(drift_db):
    model = drift.Model("bag-of-words", "1", hashing_encoder())
    run = drift.run_drift(drift_db, "ana", drift.ALL_WEEKS, model=model, config=load_config())
    assert [w["window"] for w in run.windows] == list(WEEKS) and run.reference == ("2026-W10", "2026-W11")
    assert [w["alarm"] for w in run.windows] == [False, False, False, True]
    series = drift.drift_series(drift_db)
    assert [s["window"] for s in series] == list(WEEKS) and all(s["run_id"] == run.id for s in series)
    # the far point lies beyond τ, so its share is part of the share beyond τ
    assert all(s["far_tau"] >= s["tau"] and 0 <= s["far_share"] <= s["share_beyond"] for s in series)
    assert series[-1]["far_share"] > series[-1]["far_ref_share"] > 0
    assert series[-1]["share_beyond"] > series[-1]["ref_share"] > 0
    found = drift.clusters(drift_db, run.id, "2026-W13")
    assert found[0]["size"] >= found[-1]["size"] and sum(c["size"] for c in found) >= 12
    members = drift_db.execute(
        "SELECT t.intent FROM drift_members m JOIN traces t USING (trace_id)"
        " WHERE m.run_id = ? AND m.window = ?",
        [run.id, "2026-W13"],
    ).fetchall()
    assert sum(intent in NOVEL for (intent,) in members) / len(members) > 0.6
    examples = drift.cluster_examples(drift_db, ANA, run.id, "2026-W13", found[0]["cluster"])
    assert examples[0]["distance"] >= examples[-1]["distance"] and examples[0]["text"]
    with pytest.raises(PermissionDenied):
        drift.cluster_examples(drift_db, LENA, run.id, "2026-W13", 0)


def test_the_lead_sets_the_reference_window(drift_db):
    model = drift.Model("bag-of-words", "1", hashing_encoder())
    drift.set_reference_window(drift_db, ANA, 1, "2026-W12", "2026-W13")
    run = drift.run_drift(drift_db, "ana", "2026-W13", model=model, config=load_config())
    assert run.reference == ("2026-W12", "2026-W13") and not run.windows[0]["alarm"]
    with pytest.raises(BadInput, match="after the last"):
        drift.set_reference_window(drift_db, ANA, 1, "2026-W13", "2026-W12")
    with pytest.raises(PermissionDenied):
        drift.set_reference_window(drift_db, LENA, 1, "2026-W10", "2026-W11")


def test_drift_needs_an_eval_set_and_a_known_window(drift_db, tmp_path):
    with pytest.raises(BadInput, match="has no traces"):
        drift.run_drift(
            drift_db, "ana", "2026-W40", model=drift.Model("x", "1", hashing_encoder()), config=load_config()
        )
    with pytest.raises(BadInput, match="ISO week"):
        drift.run_drift(
            drift_db, "ana", "week 3", model=drift.Model("x", "1", hashing_encoder()), config=load_config()
        )
    fresh = open_db(tmp_path / "no-eval-set.db")
    ingest_files(fresh, [jsonl(tmp_path / "t.jsonl", [trace(n) for n in range(20)])], config=load_config())
    with pytest.raises(BadInput, match="no eval set"):
        drift.run_drift(fresh, "ana", config=load_config())


def test_the_farthest_traces_of_the_biggest_clusters_go_to_a_drift_batch(drift_db):
    model = drift.Model("bag-of-words", "1", hashing_encoder())
    run = drift.run_drift(drift_db, "ana", "2026-W13", model=model, config=load_config())
    top = drift.clusters(drift_db, run.id, "2026-W13")[:2]
    with pytest.raises(PermissionDenied):
        drift.send_to_sampling(drift_db, LENA, run.id)
    batch = drift.send_to_sampling(drift_db, ANA, run.id, clusters_sent=2, per_cluster=3, control_share=0.5)
    picks = sum(min(3, c["size"]) for c in top)
    assert batch.sampled == picks + math.ceil(picks * 0.5) and batch.week == "2026-W13"
    reason = f"drift:cluster-{top[0]['cluster'] + 1}"
    assert batch.reasons[reason] == min(3, top[0]["size"])
    assert batch.reasons["random:drift-control"] == math.ceil(picks * 0.5)
    items = drift_db.execute(
        "SELECT trace_id, reasons FROM batch_items WHERE batch_id = ?", [batch.id]
    ).fetchall()
    first = [t for t, r in items if json.loads(r) == [reason]]
    farthest = drift.cluster_examples(drift_db, ANA, run.id, "2026-W13", top[0]["cluster"], limit=3)
    assert sorted(first) == sorted(e["trace_id"] for e in farthest)
    ledger = drift_db.execute(
        "SELECT kind, stratum, population, in_batch FROM batch_strata WHERE batch_id = ?", [batch.id]
    )
    ledger_name = f"cluster-{top[0]['cluster'] + 1} · {top[0]['name']}"  # the name stays with leads
    assert ("drift", ledger_name, top[0]["size"], min(3, top[0]["size"])) in ledger.fetchall()
    scrubs = drift_db.execute(
        "SELECT count(*) FROM scrubs WHERE status = 'pending'"
        " AND trace_id IN (SELECT trace_id FROM batch_items)"
    ).fetchone()[0]
    assert scrubs == batch.sampled
    assert drift_db.execute("SELECT count(*) FROM audit_log WHERE action = 'sample'").fetchone()[0] == 1


def test_a_trace_approved_before_drift_sent_it_joins_the_drift_batch_in_the_label_queue(drift_db):
    from flywheel.review import scrubs as review

    model = drift.Model("bag-of-words", "1", hashing_encoder())
    run = drift.run_drift(drift_db, "ana", "2026-W13", model=model, config=load_config())
    top = drift.clusters(drift_db, run.id, "2026-W13")[0]
    early = drift.cluster_examples(drift_db, ANA, run.id, "2026-W13", top["cluster"], limit=1)[0]["trace_id"]
    review.scrub_traces(drift_db, [early], "ana")
    scrub_id = drift_db.execute("SELECT id FROM scrubs WHERE trace_id = ?", [early]).fetchone()[0]
    review.approve_scrub(drift_db, ANA, scrub_id)
    queued = "SELECT batch_id, priority FROM label_queue WHERE trace_id = ?"
    assert drift_db.execute(queued, [early]).fetchone() == (None, 3)  # approved, no batch yet
    batch = drift.send_to_sampling(drift_db, ANA, run.id, clusters_sent=1, per_cluster=3)
    assert drift_db.execute(queued, [early]).fetchone() == (batch.id, 1)


@pytest.mark.slow  # the command line loads the real embedding model
def test_cli_prints_exactly_the_contract_keys(drift_db, tmp_path, capsys):
    path = str(tmp_path / "flywheel.db")
    assert main(["drift", "--db", path, "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert tuple(one) == drift.JSON_KEYS and one["window"] == "2026-W13" and one["alarm"] is True
    assert len(one["mean_ci"]) == len(one["share_ci"]) == 2 and one["eval_version"] == 1
    assert main(["drift", "--db", path, "--window", "all-weeks", "--json", "--send-to-sampling", "2"]) == 0
    out = capsys.readouterr()
    series = json.loads(out.out)
    assert [w["window"] for w in series] == list(WEEKS) and all(tuple(w) == drift.JSON_KEYS for w in series)
    assert "drift:" in out.err
    assert main(["drift", "--db", path, "--window", "2026-W99"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_reference_window_too_small_fails_before_anything_is_scrubbed_or_embedded(db, tmp_path):
    add_eval_version(db, ["where is my card", "my card payment was declined"])
    traces = [
        {"trace_id": f"t-{n}", "timestamp": "2026-03-02T10:00:00Z", "input": f"card {n}"} for n in range(20)
    ]
    ingest_files(db, [jsonl(tmp_path / "few.jsonl", traces)], actor="test", config=load_config())
    calls = []
    with pytest.raises(BadInput, match="holds 20 traces"):
        drift.run_drift(
            db, "ana", model=drift.Model("bag-of-words", "1", hashing_encoder(calls)), config=load_config()
        )
    assert calls == [] and db["drift_texts"].count == 0


def test_weighted_calibration_with_equal_weights_is_the_plain_one():
    rng = np.random.default_rng(4)
    for n in (50, 199, 200, 600, 601):
        values = rng.gamma(4, 0.08, size=n)
        for quantile in (drift.QUANTILE, drift.FAR_QUANTILE):
            plain = drift.calibrate(values, quantile)
            assert drift.weighted_calibration(values, np.ones(n), quantile) == plain
            assert plain.beyond == math.floor(round((1 - quantile) * n, 9))


def topic_traffic(seed: int, rows_per_topic: int = 6):
    """30 topics with ``rows_per_topic`` eval rows each; traffic by popularity (1/rank); topics 10-15
    are looser around their centres than the rest, so more of their traffic lies beyond a τ set on the
    usual mix."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(30, 32)))
    spread = np.where((np.arange(30) >= 10) & (np.arange(30) < 16), 0.06, 0.05)
    popularity = 1 / np.arange(1, 31) / np.sum(1 / np.arange(1, 31))

    def traffic(topics):
        return unit(centres[topics] + spread[topics, None] * rng.normal(size=(len(topics), 32)))

    rows = traffic(np.repeat(np.arange(30), rows_per_topic))
    usual = lambda n: traffic(rng.choice(30, n, p=popularity))  # noqa: E731
    return rng, rows, usual, traffic


@pytest.mark.parametrize(
    "rows_per_topic, concentrated_at_most",
    # regions of REGION_ROWS rows resolve topics of 10 rows; topics of 6 they straddle, so part of a
    # region's reference is a tighter topic and the correction for the loose ones is partial
    [(10, 0.05), (6, 0.3)],
)
def test_calibration_for_the_weeks_mix_holds_without_shift_and_on_a_concentrated_covered_mix(
    rows_per_topic, concentrated_at_most
):
    same, concentrated, concentrated_one_tau, shifted = 0, 0, 0, 0
    runs = 60
    for seed in range(runs):
        rng, rows, usual, traffic = topic_traffic(seed, rows_per_topic)
        reference = drift.reference_of(rows, *drift.nearest_rows(usual(600), rows))

        def alarm(vectors, one_tau=False, rows=rows, reference=reference):
            nearest, distance = drift.nearest_rows(vectors, rows)
            if one_tau:
                return drift.window_stats(distance, reference.calibration, reference.far)["alarm"]
            window = reference.for_window(nearest, distance)
            far = reference.for_window(nearest, distance, drift.FAR_QUANTILE)
            return drift.window_stats(distance, window, far)["alarm"]

        same += alarm(usual(300))
        loose = traffic(rng.integers(10, 16, size=300))  # every trace on the six looser covered topics
        concentrated += alarm(loose)
        concentrated_one_tau += alarm(loose, one_tau=True)
        new = unit(rng.normal(size=(5, 32)))
        novel = unit(new[rng.integers(5, size=45)] + 0.05 * rng.normal(size=(45, 32)))
        shifted += alarm(np.vstack([usual(255), novel]))  # 15% new topics
    assert same / runs <= 0.05
    assert concentrated_one_tau / runs >= 0.9  # one τ for every mix mistakes the covered mix for drift
    assert concentrated / runs <= concentrated_at_most
    assert shifted / runs >= 0.95
