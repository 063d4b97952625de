"""Page times in Chromium: from a click on a sidebar link until the script is idle, per page and role.

    python benchmarks/page_times.py [--big-db PATH] [--traces 1000000] [--keep] [--repeats 3]

Measures two databases in one run: the demo (6,000 traces, built by ``build_demo``) and a generated
database of 1M traces (26 ISO weeks, 5 cohorts, the 77 Banking77 intents, every anomaly signal,
sample batches with approved and pending scrubs, labels and audit entries; rows inserted with
executemany, like ``label_speed.py``). For each database it starts ``streamlit run app.py`` on a free
loopback port, signs in as a lead and as a labeler, clicks each page of the sidebar ``--repeats`` times
(after one warm-up visit, as a user who already opened the app once) and prints the median
milliseconds from the click until Streamlit reports the script run finished
(``data-test-script-state``). The bar is 1,000 ms per page at 1M traces.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flywheel.demo_db import build_demo  # noqa: E402
from flywheel.store import open_db, write  # noqa: E402
from flywheel.traces import iso_week  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LAUNCH_ARGS += ["--disable-dev-shm-usage"]
PAGES = {
    "lead": ["Overview", "Traces", "Sample", "Review scrubs", "Label", "Taxonomy", "Import", "Audit log"],
    "labeler": ["Overview", "Traces", "Label", "Taxonomy"],
}
USERS = {"lead": "ana (lead)", "labeler": "lena (labeler)"}
COHORTS = ("free", "smb", "enterprise", "startup", "public_sector")
WORDS = "card payment refund transfer fee account limit pending declined arrived exchange rate branch"
START = datetime(2026, 5, 4, tzinfo=UTC)  # a Monday: ISO week 2026-W19
WEEKS = 26


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS.split()) for _ in range(words))


def _trace_rows(rng: random.Random, intents: list[str], start: int, count: int, total: int):
    span = WEEKS * 7 * 86400
    for n in range(start, start + count):
        moment = START + timedelta(seconds=n * span // total)
        ts = moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        question, answer = _text(rng, 40), _text(rng, 60)
        messages = json.dumps(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        )
        roll = rng.random()
        yield (
            f"t-{n:07d}",
            ts,
            iso_week(ts),
            question,
            answer,
            messages,
            COHORTS[int(rng.random() ** 2 * len(COHORTS))],
            intents[int(rng.random() ** 1.5 * len(intents))],
            "down" if roll < 0.04 else ("up" if roll > 0.9 else None),
            int(rng.random() < 0.03),
            int(rng.random() < 0.02),
            int(rng.random() < 0.015),
            int(rng.random() < 0.01),
            int(rng.random() > 0.01),
            round(rng.random(), 3),
            1 + int(rng.random() ** 3 * 12),
            round(200 + rng.random() * 3000),
            round(rng.random() * 0.01, 5),
            "{}",
            f"h{n}",
            1,
        )


def build_big(path: Path, traces: int, seed: int = 7) -> None:
    """A fresh database of ``traces`` traces and a realistic amount of work done on them."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = open_db(path)
    rng = random.Random(seed)
    intents = json.loads((ROOT / "data" / "banking77" / "categories.json").read_text())
    started = time.perf_counter()
    with write(db):
        db["ingest_runs"].insert({"id": 1, "actor": "bench", "sources": "[]", "status": "finished"})
    columns = (
        "trace_id, ts, week, input, output, messages, cohort, intent, thumbs, regenerated, retried,"
        " escalated, guardrail_tripped, schema_valid, judge_score, turns, latency_ms, cost_usd, metadata,"
        " content_hash, run_id"
    )
    for start in range(0, traces, 50_000):
        with write(db):
            db.conn.executemany(
                f"INSERT INTO traces ({columns}) VALUES ({','.join('?' * 21)})",
                _trace_rows(rng, intents, start, min(50_000, traces - start), traces),
            )
    print(f"inserted {traces:,} traces in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    _add_work(db, rng, traces)
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _add_work(db, rng: random.Random, traces: int) -> None:
    """Six weekly batches of 500 picks, their scrubs (the last batch pending), labels and audit entries."""
    from flywheel.taxonomy import add_entry

    stamp = "2026-11-01T10:00:00.000Z"
    with write(db):
        db.conn.executemany(
            "INSERT INTO quarantine (run_id, file, line_no, reason, raw) VALUES (1, 'big.jsonl', ?, ?, ?)",
            [(n, "not JSON: Expecting value", b"garbage") for n in range(2000)],
        )
        for code in ("WRONG_POLICY", "MISSED_INTENT", "HALLUCINATED_FEE"):
            add_entry(db, "bench", code, code.replace("_", " ").lower(), "A failure. It is checked by hand.")
        per_week = traces // WEEKS
        for batch in range(1, 7):
            week_start = (WEEKS - 7 + batch) * per_week
            picks = rng.sample(range(week_start, week_start + per_week), 500)
            week = iso_week((START + timedelta(weeks=WEEKS - 7 + batch)).strftime("%Y-%m-%d"))
            db["sample_batches"].insert({"id": batch, "plan": "{}", "seed": 7, "week": week})
            db.conn.executemany(
                "INSERT INTO batch_items (batch_id, trace_id, reasons, priority)"
                " VALUES (?, ?, '[\"random\"]', 2)",
                [(batch, f"t-{n:07d}") for n in picks],
            )
            status = "pending" if batch == 6 else "approved"
            db.conn.executemany(
                "INSERT INTO scrubs (trace_id, scrubber_version, status, input, output, messages, created_at,"
                " reviewed_by) SELECT trace_id, 'bench', ?, input, output, messages, ?, 'ravi'"
                " FROM traces WHERE trace_id = ?",
                [(status, stamp, f"t-{n:07d}") for n in picks],
            )
            if status == "approved":
                db.conn.executemany(
                    "INSERT OR IGNORE INTO labels (trace_id, batch_id, labeler, kind, code, adversarial, via,"
                    " created_at) VALUES (?, ?, ?, ?, ?, 'none', 'card', ?)",
                    [(f"t-{n:07d}", batch, ("lena", "tom")[n % 2], *_label(n), stamp) for n in picks[:300]],
                )
        db.conn.executemany(
            "INSERT INTO audit_log (at, actor, action, entity, entity_id, detail)"
            " VALUES (?, ?, ?, ?, ?, '{}')",
            [
                (
                    stamp,
                    ("lena", "tom", "ravi", "ana")[n % 4],
                    ("claim", "label", "approve_scrub")[n % 3],
                    ("trace", "label", "scrub")[n % 3],
                    str(n),
                )
                for n in range(50_000)
            ],
        )


def _label(n: int) -> tuple[str, str | None]:
    if n % 3 == 0:
        return "not_a_bug", None
    return "known", ("WRONG_POLICY", "MISSED_INTENT", "HALLUCINATED_FEE")[n % 3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(db_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    env = {**os.environ, "FLYWHEEL_DB": str(db_path)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"streamlit did not answer on {url}")


# Records when the script run that follows the click finishes, in the page's own clock.
_WATCH = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__runs = [];
  new MutationObserver(() => window.__runs.push([app.getAttribute('data-test-script-state'),
                                                  performance.now()]))
    .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
_DONE = """() => {
  const runs = window.__runs || [];
  const started = runs.findIndex(r => r[0] === 'running');
  if (started < 0) return null;
  const done = runs.slice(started).find(r => r[0] !== 'running');
  return done ? done[1] : null;
}"""


def _idle(page) -> None:
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state')"
        " === 'notRunning'",
        timeout=300_000,
    )


def _visit(page, title: str) -> float:
    """Milliseconds from clicking ``title`` in the sidebar until the script run it started is over."""
    _idle(page)
    page.evaluate(_WATCH)
    link = page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True)
    clicked = page.evaluate("() => performance.now()")
    link.click()
    page.wait_for_function(_DONE, timeout=300_000)
    done = page.evaluate(_DONE)
    _idle(page)
    if page.get_by_test_id("stException").count():
        print(f"{title} shows an exception", file=sys.stderr)
        return float("nan")
    return done - clicked


def _sign_in(page, label: str) -> None:
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name=label).click()
    sidebar.get_by_text(f"Role: {label.split('(')[1].rstrip(')')}").wait_for(timeout=60_000)
    _idle(page)


def measure(db_path: Path, repeats: int) -> dict[tuple[str, str], float]:
    """Median page time per (role, page) on one database."""
    from playwright.sync_api import sync_playwright

    process, url = _start_server(db_path)
    results = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            for role, pages in PAGES.items():
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.goto(url)
                page.get_by_test_id("stSidebarNav").wait_for(timeout=600_000)
                _idle(page)
                _sign_in(page, USERS[role])
                for title in pages:  # one warm-up round: the first visit after a server start
                    _visit(page, title)
                times = {title: [] for title in pages}
                for _ in range(repeats):
                    for title in pages:
                        times[title].append(_visit(page, title))
                for title, values in times.items():
                    results[(role, title)] = statistics.median(values)
                page.context.close()
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-db", default="/tmp/flywheel_page_times_1m.db")
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="reuse the database at --big-db if it exists")
    parser.add_argument("--build-only", action="store_true", help="build the big database and stop")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    big = Path(args.big_db)
    if not (args.keep and big.exists()):
        build_big(big, args.traces)
    if args.build_only:
        return
    columns = {}
    with tempfile.TemporaryDirectory() as folder:
        demo = Path(folder) / "demo.db"
        build_demo(demo)
        for name, path in (("6k demo", demo), (f"{args.traces // 1000:,}k", big)):
            columns[name] = measure(path, args.repeats)
            print(
                name,
                {f"{role}/{title}": f"{ms:.0f}" for (role, title), ms in columns[name].items()},
                flush=True,
            )
    print(f"median ms from sidebar click to idle script, {args.repeats} visits after a warm-up, Chromium")
    print(f"{'role':<8} {'page':<14}" + "".join(f"{name:>12}" for name in columns))
    for role, pages in PAGES.items():
        for title in pages:
            print(
                f"{role:<8} {title:<14}" + "".join(f"{col[(role, title)]:12.0f}" for col in columns.values())
            )


if __name__ == "__main__":
    main()
