"""Ingest speed: `python -m flywheel ingest` against `sqlite-utils insert --nl` on the same file.

Both run as command-line processes on the same 100k demo-style JSONL lines, alternating, several
rounds; the table shows median seconds and the ratio. Usage:

    python benchmarks/ingest_speed.py [--lines 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flywheel.demo import demo_lines, demo_traces


def _write_inputs(folder: Path, lines: int) -> tuple[Path, Path]:
    clean = folder / "clean.jsonl"
    with clean.open("wb") as out:
        for trace in demo_traces(seed=11, n=lines):
            out.write(json.dumps(trace).encode() + b"\n")
    mixed = folder / "mixed.jsonl"
    with mixed.open("wb") as out:
        out.writelines(demo_lines(seed=11, n=lines))
    return clean, mixed


def _flywheel_ingest(db: Path, path: Path) -> list[str]:
    return [sys.executable, "-m", "flywheel", "ingest", "--db", str(db), str(path)]


def _timed(command: list[str], db: Path) -> float:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clean, mixed = _write_inputs(folder, args.lines)
        db = folder / "bench.db"
        commands = {
            "sqlite-utils insert --nl --pk trace_id (clean file)": [
                "sqlite-utils",
                "insert",
                str(db),
                "traces",
                str(clean),
                "--nl",
                "--pk",
                "trace_id",
            ],
            "flywheel ingest (clean file)": _flywheel_ingest(db, clean),
            "flywheel ingest (file with bad lines)": _flywheel_ingest(db, mixed),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                times[name].append(_timed(command, db))
    base = statistics.median(times[next(iter(commands))])
    print(f"{args.lines:,} lines, median of {args.rounds} rounds, run alternately\n")
    print(f"| {'command':<52} | {'median s':>8} | {'lines/s':>9} | {'ratio':>5} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 11}|{'-' * 7}|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name:<52} | {median:>8.2f} | {args.lines / median:>9,.0f} | {median / base:>5.2f} |")


if __name__ == "__main__":
    main()
