"""Page times in Chromium: from a click on a sidebar link until the script is idle, per page and role.

    python benchmarks/page_times.py [--big-db PATH] [--traces 1000000] [--keep] [--repeats 3]

Measures two databases in one run: the demo (6,000 traces) and the same demo built with 1M traces
(``build_demo(traces=1_000_000)``: 12 ISO weeks of about 83k traces, six sampled and scrubbed weekly
batches with reviews, labels and a taxonomy, three eval-set versions with results, a drift series,
judge verdicts and releases: every page has its data). For each database it starts ``streamlit run
app.py`` on a free loopback port, signs in as a lead and as a labeler, clicks each page of the sidebar
``--repeats`` times (after one warm-up visit, as a user who already opened the app once) and prints the median
milliseconds from the click until Streamlit reports the script run finished
(``data-test-script-state``). The bar is 1,000 ms per page at 1M traces.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flywheel.demo.build import build_demo  # noqa: E402
from pages._nav import titles_for  # noqa: E402
from tests.browser_support import CHROMIUM, LAUNCH_ARGS, serve_app  # noqa: E402

PAGES = {role: titles_for(role) for role in ("lead", "labeler")}
USERS = {"lead": "ana (lead)", "labeler": "lena (labeler)"}
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

    results = {}
    with serve_app(db_path) as (url, _), sync_playwright() as playwright:
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
        big.unlink(missing_ok=True)
        started = time.perf_counter()
        build_demo(big, traces=args.traces)
        print(f"built {big} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
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
