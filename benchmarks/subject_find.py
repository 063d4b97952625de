"""How long ``subject find`` takes on a generated database of 1M traces.

    python benchmarks/subject_find.py [--traces 1000000] [--db PATH] [--keep]

Traces are Banking77 queries (data/banking77) with a person's name, e-mail, phone or card number in
about one in five, and one of a few dozen replies. Prints the time to build the token index once
(what the first ``find`` after a large import pays), then, for values of each kind, the time of a
``find`` with the index current (the bar is 5 s) and how many traces it found.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flywheel.auth import User
from flywheel.privacy.subjects import find_subject, refresh_index
from flywheel.store.db import open_db, write

ROOT = Path(__file__).resolve().parent.parent
FIRST = ["Lan", "Tom", "Ana", "Ravi", "Mara", "Jonas", "Aiko", "Femi", "Ines", "Omar", "Lena", "Kofi"]
LAST = ["Nguyen", "Fischer", "Quist", "Haddad", "Okafor", "Silva", "Tanaka", "Berg", "Kowalski", "Moreau"]


def _queries() -> list[str]:
    with (ROOT / "data" / "banking77" / "train.csv").open(encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def _pii(rng: random.Random, n: int) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    kind = n % 4
    if kind == 0:
        return f" I'm {first} {last}."
    if kind == 1:
        return f" Mail me at {first.lower()}.{last.lower()}{n}@example.com."
    if kind == 2:
        return f" Call +44 20 {n % 10000:04d} {n // 10000 % 10000:04d}."
    return f" Card 4000 {n % 10000:04d} {n // 7 % 10000:04d} {n // 13 % 10000:04d} was charged twice."


def build(path: Path, traces: int) -> None:
    rng = random.Random(7)
    queries = _queries()
    replies = [
        f"Thanks for asking. {q} is answered under Help > Cards, section {i}."
        for i, q in enumerate(queries[:40])
    ]
    db = open_db(path)
    columns = "trace_id, ts, week, input, output, metadata, content_hash, cohort, intent"
    sql = f"INSERT INTO traces ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    for start in range(0, traces, 50_000):
        rows = []
        for n in range(start, min(start + 50_000, traces)):
            text = rng.choice(queries) + (_pii(rng, n) if n % 5 == 0 else "")
            meta = json.dumps({"user_id": f"u-{n:07d}", "release": "v1"})
            day = 1 + n % 28
            rows.append(
                (
                    f"t-{n:07d}",
                    f"2026-05-{day:02d}T10:00:00.000Z",
                    "2026-W20",
                    text,
                    rng.choice(replies),
                    meta,
                    f"h{n}",
                    "free",
                    "card_arrival",
                )
            )
        with write(db):
            db.conn.executemany(sql, rows)
    db.close()


def _found(db, trace_id: str, pattern: str) -> str:
    """A value as one generated trace holds it, to search for in another form."""
    text = db.execute("SELECT input FROM traces WHERE trace_id = ?", [trace_id]).fetchone()[0]
    return re.search(pattern, text).group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--db", default="/tmp/flywheel_subject_find.db")
    parser.add_argument("--keep", action="store_true", help="reuse the database if it exists")
    args = parser.parse_args()
    path = Path(args.db)
    if not (args.keep and path.exists()):
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        started = time.perf_counter()
        build(path, args.traces)
        print(f"built {args.traces:,} traces in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    db = open_db(path)
    started = time.perf_counter()
    indexed = refresh_index(db, progress=lambda n: print(f"\rindexed {n:,}", end="", file=sys.stderr))
    print(file=sys.stderr)
    build_s = time.perf_counter() - started
    postings = db.execute("SELECT count(*) FROM subject_index").fetchone()[0]
    lead = User("bench", "lead")
    values = [
        ("e-mail", _found(db, "t-0500005", r"[\w.]+@example\.com").upper()),
        ("phone, national form", "0" + _found(db, "t-0700050", r"20 \d{4} \d{4}")),
        ("card, dashed", _found(db, "t-0900015", r"4000(?: \d{4}){3}").replace(" ", "-")),
        ("name", "Tom  Fischer"),
        ("user id", "U-0999990"),
        ("not there", "nobody.here@example.org"),
        ("function words only: a scan", "can you"),
    ]
    print(f"| index build | {indexed:,} traces | {postings:,} postings | {build_s:.1f} s |")
    print("| value | kind | traces found | find (s) |")
    print("|---|---|---|---|")
    for kind, value in values:
        started = time.perf_counter()
        report = find_subject(db, lead, value)
        elapsed = time.perf_counter() - started
        print(f"| {value} | {kind} | {len(report.traces):,} | {elapsed:.2f} |")


if __name__ == "__main__":
    main()
