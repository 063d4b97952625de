from conftest import jsonl, trace

from flywheel.config import load_config
from flywheel.ingest.run import ingest_files
from flywheel.overview import intent_mix, loop_counts, weekly_signal_rates, weekly_traffic
from flywheel.warmup import warm_in_background


def test_counts_and_weekly_views_follow_the_data(db, tmp_path):
    early = [trace(n, timestamp=f"2026-05-0{1 + n % 3}T10:00:00Z", intent="card_arrival") for n in range(30)]
    late = [
        trace(
            100 + n, timestamp=f"2026-06-{10 + n % 5}T10:00:00Z", intent="crypto" if n % 2 else "card_arrival"
        )
        for n in range(20)
    ]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", [*early, *late])], config=load_config())
    counts = loop_counts(db)
    assert (counts["traces"], counts["ingest_runs"], counts["sampled"], counts["scrub_pending"]) == (
        50,
        1,
        0,
        0,
    )
    traffic = weekly_traffic(db)
    assert traffic["traces"].sum() == 50 and set(traffic["cohort"]) == {"free", "smb", "enterprise"}
    rates = weekly_signal_rates(db)
    thumbs = rates[rates.signal == "thumbs down"]
    assert all(0 <= share <= 1 for share in thumbs.share) and thumbs.share.max() > 0
    mix = intent_mix(db)
    assert mix.iloc[0]["intent"] == "crypto"
    assert mix.iloc[0]["recent_share"] > 0 and mix.iloc[0]["earlier_share"] == 0


def test_rollups_follow_each_import_and_match_a_walk_over_the_traces(db, tmp_path):
    ingest_files(db, [jsonl(tmp_path / "a.jsonl", [trace(n) for n in range(40)])], config=load_config())
    assert weekly_traffic(db)["traces"].sum() == 40
    more = [trace(n, cohort=None if n % 4 == 0 else "smb") for n in range(40, 100)]
    ingest_files(db, [jsonl(tmp_path / "b.jsonl", more)], config=load_config())
    traffic = weekly_traffic(db)
    walked = db.execute(
        "SELECT week, coalesce(cohort, '(none)'), count(*) FROM traces GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert [tuple(row) for row in traffic.itertuples(index=False)] == walked
    rates = weekly_signal_rates(db)
    for week, share in rates[rates.signal == "thumbs down"][["week", "share"]].itertuples(index=False):
        sql = "SELECT avg(coalesce(thumbs = 'down', 0)) FROM traces WHERE week = ?"
        expected = db.execute(sql, [week]).fetchone()[0]
        assert abs(share - expected) < 1e-9
    assert loop_counts(db)["traces"] == 100 and loop_counts(db)["weeks"] == len(set(traffic["week"]))


def test_the_app_brings_the_rollups_up_to_date_in_the_background(db, tmp_path):
    ingest_files(db, [jsonl(tmp_path / "a.jsonl", [trace(n) for n in range(40)])], config=load_config())
    assert db.execute("SELECT count(*) FROM rollup_state").fetchone()[0] == 0
    path = tmp_path / "flywheel.db"
    thread = warm_in_background(path)
    assert warm_in_background(path) is thread  # once per process and database
    thread.join(timeout=60)
    upto = db.execute("SELECT max(rowid) FROM traces").fetchone()[0]
    state = dict(db.execute("SELECT name, upto_rowid FROM rollup_state").fetchall())
    assert state == {"traces": upto, "signals:week": upto, 'arms:$."release"': upto}
    assert db.execute("SELECT sum(n) FROM signal_rollup WHERE cohort = '(all)'").fetchone()[0] == 40
