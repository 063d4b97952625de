"""Ingest speed: `python -m flywheel ingest` against `sqlite-utils insert --nl` on the same file.

Both run as command-line processes on the same demo-style JSONL lines (100k, or 1M with ``--1m``),
alternating, several rounds; the table shows median wall seconds, user and system CPU seconds of the
child process, and the ratios to sqlite-utils of both wall and CPU (user + system) seconds. Usage:

    python benchmarks/ingest_speed.py [--lines 100000 | --1m] [--rounds 3] [--inputs DIR]

``--inputs DIR`` keeps the generated files in DIR and reuses them on the next run (1M lines take a
while to generate).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flywheel.demo.traffic import demo_lines, demo_traces


def _write_inputs(folder: Path, lines: int) -> tuple[Path, Path]:
    clean, mixed = folder / f"clean-{lines}.jsonl", folder / f"mixed-{lines}.jsonl"
    if not clean.exists():
        with clean.open("wb") as out:
            for trace in demo_traces(seed=11, n=lines):
                out.write(json.dumps(trace).encode() + b"\n")
    if not mixed.exists():
        with mixed.open("wb") as out:
            out.writelines(demo_lines(seed=11, n=lines))
    return clean, mixed


def _flywheel_ingest(db: Path, path: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "flywheel", "ingest", "--db", str(db), str(path), *options]


def _timed(command: list[str], db: Path) -> tuple[float, float, float]:
    """Wall, user CPU and system CPU seconds of one run of ``command`` on a fresh database."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--1m", dest="million", action="store_true", help="1,000,000 lines")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inputs", type=Path, help="folder to keep and reuse the generated input files in")
    args = parser.parse_args()
    if args.million:
        args.lines = 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clean, mixed = _write_inputs(args.inputs or folder, args.lines)
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
            "flywheel ingest (file with bad lines)": _flywheel_ingest(db, mixed, "--max-bad", "1000000000"),
        }
        times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                times[name].append(_timed(command, db))
    # wall, user, system and CPU (user + system) seconds: the median of each over the rounds
    medians = {
        name: [statistics.median(t[i] if i < 3 else t[1] + t[2] for t in runs) for i in range(4)]
        for name, runs in times.items()
    }
    base_wall, _, _, base_cpu = medians[next(iter(commands))]
    print(f"{args.lines:,} lines, median of {args.rounds} rounds, run alternately\n")
    heads = " | ".join(
        f"{h:>{w}}" for h, w in (("wall s", 7), ("user s", 7), ("sys s", 6), ("cpu s", 7), ("lines/s", 9))
    )
    print(f"| {'command':<52} | {heads} | wall x | cpu x |")
    print(f"|{'-' * 54}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 9}|{'-' * 11}|{'-' * 8}|{'-' * 7}|")
    for name, (wall, user, system, cpu) in medians.items():
        print(
            f"| {name:<52} | {wall:>7.2f} | {user:>7.2f} | {system:>6.2f} | {cpu:>7.2f}"
            f" | {args.lines / wall:>9,.0f} | {wall / base_wall:>6.2f} | {cpu / base_cpu:>5.2f} |"
        )
    print("\nwall x, cpu x: ratio to sqlite-utils of the median wall and CPU (user + system) seconds")
    print("\nall wall times (s):", {name: [round(t[0], 2) for t in runs] for name, runs in times.items()})


if __name__ == "__main__":
    main()
