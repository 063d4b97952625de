"""What every browser test needs: the app served on a free loopback port, and steps through its UI.

Chromium is Debian's (`/usr/bin/chromium`), driven by Playwright; `playwright install` cannot download
a browser on these machines.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.store.db import open_db

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}


def unavailable(reason: str):
    """Skip locally; in CI a browser test that cannot run is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


@contextlib.contextmanager
def served_copy(template: Path, folder: Path) -> Iterator[tuple[str, Path]]:
    """A private copy of ``template`` (the session's demo database, say) in ``folder``, served without the
    embedding worker; yields the app's URL and the copy's path, for a test module to change freely."""
    path = folder / "demo.db"
    shutil.copy(template, path)
    with serve_app(path, env={"FLYWHEEL_EMBED_WORKER": "off"}) as (url, _):
        yield url, path


@contextlib.contextmanager
def serve_app(
    db_path: Path,
    address: str | None = "127.0.0.1",
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[tuple[str, int]]:
    """``streamlit run app.py`` on a free port against ``db_path``; yields its loopback URL and port.

    ``address=None`` starts it exactly as the README does (the address comes from config.toml).
    """
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    if address is not None:
        command += ["--server.address", address, "--server.headless", "true"]
    environment = {**os.environ, "FLYWHEEL_DB": str(db_path), **(env or {})}
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        errors = subprocess.STDOUT if log else subprocess.DEVNULL
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=errors)
        try:
            wait_for(f"http://127.0.0.1:{port}/_stcore/health")
            yield f"http://127.0.0.1:{port}", port
        finally:
            process.terminate()
            process.wait(timeout=20)


@contextlib.contextmanager
def chromium():
    """Debian's Chromium under Playwright, or a skip (a failure in CI) when it is missing."""
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# Counts, in the page, the script runs the app was asked for (a BackMsg whose first field is rerun_script,
# tag 0x5A) and the ScriptFinished messages (ForwardMsg field 6) that answer them. The running indicator
# alone cannot say a run is over: Streamlit draws it only after half a second of running.
RUN_TRACKER = """() => {
  if (window.flywheelRuns) return;
  const runs = (window.flywheelRuns = {asked: 0, answered: 0});
  const send = WebSocket.prototype.send;
  const finished = (bytes) => {
    let at = 0;
    const varint = () => {
      let value = 0, shift = 0, byte;
      do { byte = bytes[at++]; value += (byte & 0x7f) * 2 ** shift; shift += 7; } while (byte & 0x80);
      return value;
    };
    while (at < bytes.length) {
      const tag = varint();
      if (tag >>> 3 === 6) return true;
      const wire = tag & 7;
      if (wire === 0) varint();
      else if (wire === 2) at += varint();
      else if (wire === 1) at += 8;
      else if (wire === 5) at += 4;
      else return false;
    }
    return false;
  };
  WebSocket.prototype.send = function (data) {
    if (!this.flywheelTracked) {
      this.flywheelTracked = true;
      this.addEventListener("message", (event) => {
        if (event.data instanceof ArrayBuffer && finished(new Uint8Array(event.data))) {
          runs.answered = runs.asked;
        }
      });
    }
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
    if (bytes && bytes[0] === 0x5a) runs.asked += 1;
    return send.call(this, data);
  };
}"""

IDLE = """() => {
  const runs = window.flywheelRuns, app = document.querySelector('[data-testid="stApp"]');
  return runs.answered >= runs.asked && app !== null && app.dataset.testScriptState === "notRunning"
    && !document.querySelector('[data-testid="stStatusWidget"]');
}"""


def settle(page) -> None:
    """Wait until the script runs triggered so far have finished: every run the page asked for was
    answered, the app says it is not running, and the running indicator is gone."""
    page.evaluate(RUN_TRACKER)  # idempotent; after a navigation it starts counting again
    page.wait_for_function(IDLE, timeout=60_000)


SIGNED_IN_AS = (
    "() => [...document.querySelectorAll('[data-testid=stSidebar] [data-testid=stSelectbox] input')]"
)


def signed_in_as(page) -> list[str]:
    """What the sidebar's user picker shows (one value; two while a stale picker is still drawn)."""
    return page.evaluate(SIGNED_IN_AS + ".map(input => input.value)")


def assert_signed_in_as(page, label: str, seconds: float = 60) -> None:
    """The sidebar shows ``label`` as the one signed-in user, once the run is over: while a run draws, the
    previous run's picker stays on screen (faded) beside the new one, and a lead's first run on a freshly
    started server can take longer than a click suggests (``settle`` may look before that run begins)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    shown = f"({SIGNED_IN_AS}.map(input => input.value))()"
    idle = "document.querySelector('[data-testid=stApp]')?.dataset.testScriptState === 'notRunning'"
    with contextlib.suppress(PlaywrightTimeout):  # the assertion below names what is shown instead
        page.wait_for_function(
            f"(label) => {{ const shown = {shown};"
            f" return shown.length === 1 && shown[0] === label && {idle}; }}",
            arg=label,
            timeout=seconds * 1000,
        )
    assert signed_in_as(page) == [label], f"signed in as {signed_in_as(page)}, not {label}"


def sign_in_as(page, label: str) -> None:
    """Pick the local user ``label`` (e.g. 'ana (lead)') in the sidebar; wait until the app runs as them."""
    settle(page)  # a click that lands while a script run redraws the picker is lost
    if signed_in_as(page) != [label]:
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click(timeout=20_000)
        page.get_by_role("option", name=label).click(timeout=20_000)
        settle(page)
    assert_signed_in_as(page, label)
    role = label.split("(")[1].rstrip(")")
    page.get_by_test_id("stSidebar").get_by_text(f"Role: {role}").wait_for(timeout=10_000)


# Page headings that differ from the navigation titles
PAGE_HEADINGS = {"Import": "Import traces", "Sample": "Sampling", "Taxonomy": "Failure taxonomy"}


def open_app(page, url: str) -> None:
    """Load the app and wait for the navigation st.navigation draws (never Streamlit's file listing)."""
    page.goto(url)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Overview", exact=True).wait_for(
        timeout=60_000
    )
    settle(page)


def go(page, title: str) -> None:
    """Open the page ``title`` from the sidebar; it draws its heading and no exception."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    page.locator("h1").filter(has_text=PAGE_HEADINGS.get(title, title)).first.wait_for(timeout=30_000)
    settle(page)
    assert page.get_by_test_id("stException").count() == 0, f"{title} shows an exception"


def card_on_screen(page) -> str:
    """The trace id on the label card, once the card's buttons are drawn."""
    heading = page.locator("h3").filter(has_text="Trace ").first
    heading.wait_for(timeout=30_000)
    page.get_by_test_id("stButton").filter(has_text="Not a bug").first.wait_for(timeout=30_000)
    page.wait_for_function("window.flywheelShortcutGuard === true", timeout=30_000)
    settle(page)
    # the buttons' shortcuts register in effects React runs after the frame that drew them
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return heading.inner_text().split()[-1]


def label_state(db_path: Path, user: str) -> tuple:
    db = open_db(db_path)
    return db.execute(
        "SELECT count(*), sum(undone_at IS NOT NULL), coalesce(max(id), 0) FROM labels WHERE labeler = ?",
        [user],
    ).fetchone()
