"""The label loop in Chromium: key press to the next card with 1, 2 and 4 labelers at once, and the
siblings panel, first open included.

    python benchmarks/label_browser.py [--db PATH] [--counts 1,2,4] [--per-labeler 20] [--think 1.0]
                                       [--siblings 4]

Works on a copy of the database, so every run starts from the same queue: by default a fresh demo
(``build_demo``, 6,000 traces) in a temp folder; ``--db PATH`` copies an existing database instead (a
missing PATH is first built by ``label_speed.py``'s builder: 1M traces, 6,000 approved scrubs in the
queue). Approved scrubs without vectors are embedded into the copy before the server starts, as the
app's background worker or ``python -m flywheel embed`` leaves a database in use.

Starts ``streamlit run app.py`` on a free loopback port with a users file (``FLYWHEEL_USERS``) of four
labelers and opens one Chromium page (one browser context) per labeler on the Label page.

- **Siblings.** On the freshly started server (no request has used the embedding model), the first
  labeler presses N, fills in a new failure mode and clicks "Create code and label"; the time runs from
  the click until the siblings are listed and the script is idle. The first open, then the next ones
  (``--siblings`` in all), each printed; after the first, a switch to "Compare by: the assistant's
  reply" is timed the same way.
- **Next card.** For each labeler count, that many labelers label ``--per-labeler`` items each at the
  same time: not a bug (B) twice, then a known failure (K) after picking a code and filling the two
  fields, with a think time drawn around ``--think`` seconds (seeded) between items. Each time runs in
  the page's own clock from the key press until the next card's trace id is shown and Streamlit reports
  the script idle (``data-test-script-state``). Prints p50 / p95 / max (and of the part until Streamlit
  reported the run started: the key press's trip to the server), the labels written, and whether
  any item was served to two labelers (read from the database's claims and labels). A key press that
  starts no script run within 5 s is counted as lost and pressed again.

The script waits on pages by polling every 100 ms, not on every animation frame, so its own waiting costs
the renderers little; the times themselves come from a MutationObserver in each page.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402

from flywheel.demo.build import build_demo  # noqa: E402
from flywheel.store.db import open_db  # noqa: E402
from tests.browser_support import CHROMIUM, LAUNCH_ARGS, VIEWPORT, serve_app  # noqa: E402

LABELERS = ("ada", "ben", "chen", "dana")
USERS_TOML = "".join(f'[users.{name}]\nrole = "labeler"\n\n' for name in LABELERS)
TIMEOUT_MS = 60_000

# In the page: arm before a key press or click; resolves in window.__lb once the condition holds, with
# the moments (performance.now()) of the key press or click and of the condition first holding.
_MEASURE = """
(() => {
  const app = () => document.querySelector('[data-testid="stApp"]');
  const idle = () => app()?.getAttribute('data-test-script-state') === 'notRunning';
  const heading = (prefix) => [...document.querySelectorAll('h3')].map(h => h.innerText)
    .find(text => text.startsWith(prefix));
  window.__lbCard = () => {
    const text = heading('Trace ');
    return text ? text.split(/\\s+/).pop() : null;
  };
  window.__lbIdle = idle;
  const conditions = {
    card: (previous) => { const id = window.__lbCard(); return id && id !== previous ? id : null; },
    siblings: (code) => heading('Siblings for ' + code) !== undefined
      && document.querySelectorAll('[data-testid="stCheckbox"]').length > 0 ? 'shown' : null,
  };
  window.__lbArm = (kind, arg, trigger) => {
    window.__lb = null;
    let started = null, observer = null, sawRun = false, running = null;
    window.addEventListener(trigger, () => { started = performance.now(); }, {capture: true, once: true});
    window.__lbLost = () => started !== null && !sawRun && performance.now() - started > LOST_MS;
    const check = (records) => {
      if (started === null) return;
      if (records.some(r => r.type === 'attributes')) sawRun = true;
      if (running === null && !idle()) running = performance.now() - started;
      if (!idle()) return;
      const value = sawRun || kind === 'card' ? conditions[kind](arg) : null;
      if (value !== null) {
        observer.disconnect();
        window.__lb = {ms: performance.now() - started, value, running};
      }
    };
    observer = new MutationObserver(check);
    observer.observe(document.body, {subtree: true, childList: true, characterData: true,
                                     attributes: true, attributeFilter: ['data-test-script-state']});
  };
})()
""".replace("LOST_MS", "5000")


def _copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a database in WAL mode (the backup API reads committed pages only)."""
    src, dst = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True), sqlite3.connect(target)
    with src, dst:
        src.backup(dst)
    src.close()
    dst.close()


def prepare(db: str | None, folder: Path) -> Path:
    """The database the run works on: a copy of ``db`` (built first if missing) or a fresh demo."""
    path = folder / "bench.db"
    if db is None:
        started = time.perf_counter()
        build_demo(path)
        print(f"built the 6,000-trace demo in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    else:
        if not Path(db).exists():
            import label_speed

            label_speed.build(Path(db), 1_000_000, 6000)
        _copy_db(Path(db), path)
    from flywheel.vectors.embeddings import embed_all

    started = time.perf_counter()
    done = embed_all(open_db(path))
    print(f"embedded {done} approved scrub part(s) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


# Steps in one page ----------------------------------------------------------------------------------


async def _until(page, condition: str) -> None:
    await page.wait_for_function(condition, timeout=TIMEOUT_MS, polling=100)


async def _idle(page) -> None:
    await _until(page, "() => window.__lbIdle && window.__lbIdle()")


async def _settle(page) -> None:
    """The script run a step started is over (Streamlit may take a moment to start it)."""
    await page.wait_for_timeout(300)
    await _idle(page)


async def open_label_page(page, url: str, name: str) -> None:
    """Load the app, sign in as ``name`` in the sidebar picker and open the Label page."""
    await page.goto(url)
    nav = page.get_by_test_id("stSidebarNav")
    await nav.get_by_role("link", name="Overview", exact=True).wait_for(timeout=TIMEOUT_MS)
    await page.evaluate(_MEASURE)
    await _settle(page)
    label = f"{name} (labeler)"
    picker = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox")
    for _ in range(4):  # a click that lands while a script run is still going can be lost
        shown = await picker.locator("input").input_value()
        if shown == label:
            break
        try:
            await picker.click(timeout=20_000)
            await page.get_by_role("option", name=label).click(timeout=20_000)
        except Exception:
            await page.keyboard.press("Escape")
        await _settle(page)
    await nav.get_by_role("link", name="Label", exact=True).click()
    await page.locator("h1").filter(has_text="Label").first.wait_for(timeout=TIMEOUT_MS)
    await card(page)


async def card(page) -> str:
    """The trace id of the card shown, once the script is idle and the card's shortcuts are live."""
    await _until(page, "() => window.__lbCard() && window.__lbIdle()")
    await _until(page, "() => window.flywheelShortcutGuard === true")
    return await page.evaluate("window.__lbCard()")


async def _measured(page, kind: str, arg, trigger: str, action) -> dict:
    """Milliseconds from ``trigger`` (the event ``action`` causes) until ``kind``'s condition holds
    (``ms``), until Streamlit reported the script running (``running``), the condition's ``value``, and
    how many tries started no script run within 5 s (``lost``: the action is done again)."""
    for lost in range(3):
        await page.evaluate("([k, a, t]) => window.__lbArm(k, a, t)", [kind, arg, trigger])
        await action()
        await _until(page, "() => window.__lb !== null || window.__lbLost()")
        result = await page.evaluate("window.__lb")
        if result is not None:
            return {**result, "lost": lost}
    raise RuntimeError(f"three tries of {kind} started no script run")


async def _blur(page) -> None:
    await page.evaluate("document.activeElement && document.activeElement.blur()")


async def fill_known(page, code: str, n: int) -> None:
    """Pick ``code`` and fill the two fields a known failure needs, then leave the fields."""
    picker = page.get_by_label("Failure code (type to search")
    await picker.click()
    await page.keyboard.type(code)
    await page.keyboard.press("Enter")
    await _settle(page)
    for label, text in (("Expected behaviour", f"Answer the question {n}"), ("Pass criterion", "Answers it")):
        field = page.get_by_label(label)
        await field.fill(text)
        await field.press("Enter")
        await _settle(page)
    await _blur(page)
    await page.wait_for_timeout(100)


async def label_next(page, key: str, shown: str) -> dict:
    """Press ``key`` on the card showing ``shown``; milliseconds until the next card (``value``) is shown
    and the script idle, as ``_measured`` reports them."""
    await _blur(page)
    return await _measured(page, "card", shown, "keydown", lambda: page.keyboard.press(key))


async def open_siblings(page, code: str) -> float:
    """New failure (N) with code ``code``; milliseconds from "Create code and label" to the siblings."""
    code_field = page.get_by_label("Code", exact=True)
    for _ in range(3):  # a lost key press is pressed again
        await _blur(page)
        await page.keyboard.press("n")
        with contextlib.suppress(PlaywrightTimeout):
            await code_field.wait_for(timeout=10_000)
            break
    await _settle(page)
    definition = "The reply promises something we never do. Look for the promise in the reply."
    for label, text in (("Code", code), ("Name", code.replace("_", " ").title()), ("Definition", definition)):
        field = page.get_by_label(label, exact=label != "Definition")
        await field.fill(text)
        await field.press("Tab")
        await _settle(page)
    button = page.get_by_role("button", name="Create code and label")
    return (await _measured(page, "siblings", code, "click", lambda: button.click()))["ms"]


async def compare_by_reply(page) -> float:
    """Milliseconds from a click on "the assistant's reply" until the siblings are listed again."""
    option = page.get_by_text("the assistant's reply", exact=True)
    return (await _measured(page, "siblings", "", "click", lambda: option.click()))["ms"]


async def close_siblings(page) -> None:
    await _blur(page)
    await page.keyboard.press("d")
    await card(page)


# The runs ---------------------------------------------------------------------------------------------


async def labeler(page, n_items: int, code: str, think: float, rng: random.Random) -> dict:
    """Label ``n_items`` items in a row; the times and the trace ids this page was shown."""
    times, to_run, shown, lost = [], [], [await card(page)], 0
    for n in range(n_items):
        await asyncio.sleep(rng.uniform(0.5, 1.5) * think)
        key = "k" if n % 3 == 2 else "b"
        if key == "k":
            await fill_known(page, code, n)
        result = await label_next(page, key, shown[-1])
        lost += result["lost"]
        times.append(result["ms"])
        to_run.append(result["running"] if result["running"] is not None else float("nan"))
        shown.append(result["value"])
        await _settle(page)
    return {"times": times, "to_run": to_run, "shown": shown, "lost": lost}


def _served_twice(db_path: Path, since: int) -> tuple[int, int, int]:
    """Labels written by the run; traces claimed by two labelers; traces with more live labels than
    their batch asks for."""
    db = open_db(db_path)
    marks = ",".join("?" * len(LABELERS))
    labels = db.execute(
        f"SELECT count(*) FROM labels WHERE labeler IN ({marks}) AND id > ?", [*LABELERS, since]
    ).fetchone()[0]
    twice = db.execute(
        f"SELECT count(*) FROM (SELECT trace_id FROM claims WHERE labeler IN ({marks})"
        " GROUP BY trace_id HAVING count(DISTINCT labeler) > 1)",
        LABELERS,
    ).fetchone()[0]
    over = db.execute(
        "SELECT count(*) FROM label_queue q WHERE"
        " (SELECT count(*) FROM labels l WHERE l.trace_id = q.trace_id AND l.undone_at IS NULL) > q.needed"
    ).fetchone()[0]
    db.close()
    return labels, twice, over


def _quantile(values: list[float], q: float) -> float:
    values = [v for v in values if v == v]
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _stats(values: list[float]) -> str:
    top = max((v for v in values if v == v), default=float("nan"))
    return f"{_quantile(values, 0.5):8.0f} {_quantile(values, 0.95):8.0f} {top:8.0f}"


async def measure(args, pages, url: str, code: str, started: float) -> tuple[list[float], list[tuple]]:
    """The siblings opens on the fresh server, then the labeling rounds; prints each as it comes."""
    await open_label_page(pages[0], url, LABELERS[0])
    siblings = []
    for n in range(args.siblings):
        siblings.append(await open_siblings(pages[0], f"BENCH_SIBLING_{n + 1}"))
        label = "first open" if n == 0 else f"open {n + 1}"
        since = f"{time.monotonic() - started:.0f} s after the server started"
        print(f"siblings {label:<12} {siblings[-1]:6.0f} ms  ({since})", flush=True)
        if n == 0:
            print(f"siblings compare by reply {await compare_by_reply(pages[0]):6.0f} ms", flush=True)
        await close_siblings(pages[0])
    for page, name in zip(pages[1:], LABELERS[1:], strict=True):
        await open_label_page(page, url, name)
    rows = []
    rng = random.Random(11)
    for count in args.counts:
        results = await asyncio.gather(
            *(labeler(page, args.per_labeler, code, args.think, rng) for page in pages[:count])
        )
        times = [ms for r in results for ms in r["times"]]
        to_run = [ms for r in results for ms in r["to_run"]]
        shown = [trace for r in results for trace in r["shown"]]
        lost = sum(r["lost"] for r in results)
        rows.append((count, times, to_run, len(shown) - len(set(shown)), lost))
        print(f"{count} labeler(s): {_stats(times)}  ({len(times)} labels, {lost} lost)", flush=True)
    return siblings, rows


async def run(args, db_path: Path, users: Path, folder: Path) -> None:
    db = open_db(db_path)
    code = db.execute("SELECT code FROM taxonomy WHERE status = 'active' ORDER BY code LIMIT 1").fetchone()[0]
    first_label = db.execute("SELECT coalesce(max(id), 0) FROM labels").fetchone()[0]
    traces, queued = db["traces"].count, db.execute("SELECT sum(is_open) FROM label_queue").fetchone()[0]
    db.close()
    print(f"{traces:,} traces, {queued:,} open items in the label queue", flush=True)
    started = time.monotonic()
    with serve_app(db_path, env={"FLYWHEEL_USERS": str(users)}, log=folder / "streamlit.log") as (url, _):
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            pages = []
            for _ in LABELERS:
                context = await browser.new_context(viewport=VIEWPORT)
                pages.append(await context.new_page())
            try:
                siblings, rows = await measure(args, pages, url, code, started)
            except Exception:
                for n, page in enumerate(pages):
                    await page.screenshot(path=folder / f"page{n + 1}.png", full_page=True)
                raise
            await browser.close()
    labels, twice, over = _served_twice(db_path, first_label)
    print(f"key press to next card shown and idle, Chromium, think time ~{args.think:.1f} s")
    print("labelers   p50 ms   p95 ms   max ms  labels  lost twice   to run p50   p95")
    for count, times, to_run, repeats, lost in rows:
        print(f"{count:>8} {_stats(times)} {len(times):>7} {lost:>5} {repeats:>5}", end="")
        print(f"   {_quantile(to_run, 0.5):10.0f} {_quantile(to_run, 0.95):5.0f}")
    if siblings:
        later = ", ".join(f"{ms:.0f}" for ms in siblings[1:])
        print(f"siblings panel ms: first open {siblings[0]:.0f}; next opens {later or '-'}")
    print(
        f"database: {labels} labels by the benchmark's labelers; {twice} trace(s) claimed by two of them;"
        f" {over} item(s) with more live labels than asked for"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="copy this database (built by label_speed.py's builder if missing)")
    parser.add_argument("--counts", default="1,2,4", help="labeler counts, comma-separated (at most 4)")
    parser.add_argument("--per-labeler", type=int, default=20, help="labels per labeler and count")
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds between labels")
    parser.add_argument("--siblings", type=int, default=4, help="siblings panel opens (0: none)")
    parser.add_argument("--keep", help="keep the working copy and the server log in this folder")
    args = parser.parse_args()
    args.counts = [int(c) for c in args.counts.split(",")]
    if not all(1 <= c <= len(LABELERS) for c in args.counts):
        parser.error(f"--counts {args.counts}: expected numbers 1..{len(LABELERS)}")
    folder = Path(tempfile.mkdtemp(prefix="label_browser."))
    try:
        users = folder / "users.toml"
        users.write_text(USERS_TOML, encoding="utf-8")
        db_path = prepare(args.db, folder)
        asyncio.run(run(args, db_path, users, folder))
    finally:
        if args.keep:
            shutil.copytree(folder, args.keep, dirs_exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
