"""Sampling at the source: one weekly plan over a generated Parquet trace table, run three ways.

    duckdb     DuckDB reads the Parquet file where it lies; only the sample goes into SQLite
    spark      Spark SQL in local mode does the same
    sqlite     ingest every row into SQLite (as `python -m flywheel ingest` would), then sample there

Each way runs in its own process (time = wall clock of that process's work after start-up; peak
memory = the largest resident memory of the process and its children, sampled every 0.2 s, the JVM
included). The table shows whether the batch items and ledgers are identical to the first engine's. Usage:

    python benchmarks/sample_at_source.py [--rows 10000000] [--engines duckdb,spark,sqlite]
                                          [--sqlite-max-rows 2000000] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WEEKS = 12
FIRST_MONDAY = "2026-08-31"  # ISO week 2026-W36; the table spans 12 weeks from there
PLAN = {
    "name": "weekly",
    "seed": 7,
    "cap": 500,
    "random": {"rate": 0.0005},
    "anomaly": ["guardrail_tripped", "regenerated", "retried", "thumbs_down", "schema_invalid", "escalated"],
    "strata": [
        {"key": "cohort", "quota": 20},
        {"key": "intent", "quota": 5, "rare_share": 0.02},
        {"key": "judge_band", "quota": 20, "low": 0.4, "high": 0.7},
        {"key": "cost_tail", "quota": 20, "top_share": 0.01},
    ],
}
WEEK = "2026-W47"  # the last of the 12 weeks


def generate(path: Path, rows: int) -> None:
    """A deterministic trace table: flat columns named as ours, about 1 in 1,000 rows flagged."""
    import duckdb

    h = "hash(i)"
    duckdb.execute(
        f"""COPY (SELECT 't-' || lpad(CAST(i AS VARCHAR), 10, '0') AS trace_id,
            TIMESTAMPTZ '{FIRST_MONDAY} 00:00:00+00'
                + to_seconds(CAST(i * ({WEEKS} * 7 * 86400 / {rows}) AS BIGINT)) AS timestamp,
            'question ' || CAST(i AS VARCHAR) AS input, 'answer ' || CAST(i AS VARCHAR) AS output,
            ['free', 'smb', 'enterprise'][1 + ({h} % 3)::INT] AS cohort,
            'intent_' || CAST(CAST(floor(pow(({h} >> 8) % 1000 / 1000.0, 3) * 77) AS INT) AS VARCHAR)
                AS intent,
            CASE WHEN ({h} >> 20) % 100 = 0 THEN 'down' ELSE 'up' END AS thumbs,
            ({h} >> 24) % 2000 = 0 AS regenerated, ({h} >> 28) % 2000 = 0 AS retried,
            ({h} >> 32) % 2000 = 0 AS escalated, ({h} >> 36) % 3000 = 0 AS guardrail_tripped,
            ({h} >> 40) % 3000 <> 0 AS schema_valid, (({h} >> 44) % 1000) / 1000.0 AS judge_score,
            1 + ({h} >> 50) % 12 AS turns, CAST(100 + ({h} >> 12) % 5000 AS DOUBLE) AS latency_ms,
            (({h} >> 16) % 100000) / 1e7 AS cost_usd
        FROM range({rows}) t(i)) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)"""
    )


def run_one(engine: str, parquet: str, db_path: str) -> dict:
    """One engine's run, in this process: what it picked and how long it took."""
    from flywheel.config import load_config
    from flywheel.sampling.batches import batch_items, batch_ledger, run_plan
    from flywheel.sampling.plans import Plan
    from flywheel.sampling.source import sample_source
    from flywheel.store.db import open_db

    plan = Plan.from_dict(PLAN)
    db = open_db(db_path)
    start = time.perf_counter()
    if engine == "sqlite":
        _ingest_parquet(db, parquet)
        ingested = time.perf_counter() - start
        batch = run_plan(db, plan, "bench", WEEK)
    else:
        ingested = 0.0
        batch = sample_source(
            db, plan, parquet, "bench", engine, week=WEEK, scrub=False, config=load_config()
        ).batch
    seconds = time.perf_counter() - start
    items = batch_items(db, batch.id)
    ledger = batch_ledger(db, batch.id)
    digest = hashlib.sha256(json.dumps([items, ledger], sort_keys=True).encode()).hexdigest()[:12]
    return {
        "seconds": seconds,
        "ingest_seconds": ingested,
        "window": batch.window,
        "sampled": batch.sampled,
        "selected": batch.selected,
        "digest": digest,
    }


def _ingest_parquet(db, parquet: str) -> None:
    """Every row into the store through ingest, as JSON lines (the path a team without DuckDB takes)."""
    import duckdb

    from flywheel.config import load_config
    from flywheel.ingest.run import ingest_lines
    from flywheel.sampling.source import FIELDS, _trace_lines

    con = duckdb.connect()
    names = [f for f in FIELDS if f not in ("messages", "metadata")]
    cursor = con.execute(f"SELECT {', '.join(names)}, NULL, NULL FROM read_parquet('{parquet}')")

    def lines():
        order = [*names, "messages", "metadata"]
        while chunk := cursor.fetchmany(50_000):
            yield from _trace_lines([tuple(row[order.index(f)] for f in FIELDS) for row in chunk])

    ingest_lines(db, lines(), parquet, "bench", config=load_config())


def measure(engine: str, parquet: Path, folder: Path, timeout: float) -> dict:
    """Run one engine in a child process; its result plus the peak memory of its process tree."""
    import psutil

    out = folder / f"{engine}.json"
    command = [
        sys.executable,
        __file__,
        "--child",
        engine,
        str(parquet),
        str(folder / f"{engine}.db"),
        str(out),
    ]
    child = subprocess.Popen(command)
    peak, deadline = 0, time.monotonic() + timeout
    while child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()
            return {"error": f"did not finish in {timeout:.0f} s"}
        peak = max(peak, _tree_rss(psutil.Process(child.pid)))
        time.sleep(0.2)
    if child.returncode:
        return {"error": f"failed (exit {child.returncode})"}
    return {**json.loads(out.read_text()), "peak_mb": peak / 1e6}


def _tree_rss(process) -> int:
    """Resident memory of a process and its children (the JVM Spark starts included)."""
    import psutil

    try:
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--engines", default="duckdb,spark,sqlite")
    parser.add_argument(
        "--sqlite-max-rows", type=int, default=2_000_000, help="skip ingest-then-sample above"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per engine")
    parser.add_argument("--folder", help="where to keep the Parquet file (default: a temp folder)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, parquet, db_path, out = args.child
        Path(out).write_text(json.dumps(run_one(engine, parquet, db_path)))
        return
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        parquet = folder / f"traces-{args.rows}.parquet"
        start = time.perf_counter()
        generate(parquet, args.rows)
        print(
            f"generated {args.rows:,} rows, {parquet.stat().st_size / 1e6:.0f} MB Parquet"
            f" in {time.perf_counter() - start:.1f} s; plan {PLAN['name']!r} on {WEEK}",
            flush=True,
        )
        rows = []
        for engine in args.engines.split(","):
            if engine == "sqlite" and args.rows > args.sqlite_max_rows:
                rows.append((engine, {"error": f"skipped above {args.sqlite_max_rows:,} rows"}))
                continue
            rows.append((engine, measure(engine, parquet, folder, args.timeout)))
            print(f"  {engine}: {rows[-1][1]}", file=sys.stderr, flush=True)
        _print_table(args.rows, rows)


def _print_table(n: int, rows: list[tuple[str, dict]]) -> None:
    first = next((r["digest"] for _, r in rows if "digest" in r), None)
    print("\n| rows | engine | seconds | of which ingest | peak MB | window | sampled | identical |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for engine, r in rows:
        if "error" in r:
            print(f"| {n:,} | {engine} | {r['error']} | | | | | |")
            continue
        same = "yes" if r["digest"] == first else "NO"
        print(
            f"| {n:,} | {engine} | {r['seconds']:.1f} | {r['ingest_seconds']:.1f} | {r['peak_mb']:.0f} |"
            f" {r['window']:,} | {r['sampled']:,} | {same} ({r['digest']}) |"
        )


if __name__ == "__main__":
    main()
