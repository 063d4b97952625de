from conftest import jsonl, trace

from flywheel.ingest import ingest_files
from flywheel.overview import intent_mix, loop_counts, weekly_signal_rates, weekly_traffic


def test_counts_and_weekly_views_follow_the_data(db, tmp_path):
    early = [trace(n, timestamp=f"2026-05-0{1 + n % 3}T10:00:00Z", intent="card_arrival") for n in range(30)]
    late = [
        trace(
            100 + n, timestamp=f"2026-06-{10 + n % 5}T10:00:00Z", intent="crypto" if n % 2 else "card_arrival"
        )
        for n in range(20)
    ]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", [*early, *late])])
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
