"""First start on a fresh path: seconds from `streamlit run app.py` to a usable Overview in Chromium, and to
the whole demo (its drift series and weekly cycle, computed in the background).

    python benchmarks/first_start.py [--runs N]

Each run starts the app exactly as the README's first command does (no database at the configured path),
opens it in Debian's Chromium, and waits for the Overview's heading; then polls the database until the
drift series and the weekly cycle run after it are stored. Absolute seconds depend on the machine's
load: print ``uptime`` beside them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser_support import ROOT, VIEWPORT, chromium, free_port

from flywheel.store.db import open_db


def one_run() -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(prefix="first-start-"))
    db = folder / "flywheel.db"
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    command += ["--server.headless", "true"]
    started = time.monotonic()
    env = {**os.environ, "FLYWHEEL_DB": str(db)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with chromium() as browser:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}", timeout=5_000)
                    break
                except Exception:  # the server is not listening yet
                    time.sleep(0.2)
            page.locator("h1").filter(has_text="Overview").first.wait_for(timeout=600_000)
            usable = time.monotonic() - started
        while time.monotonic() - started < 1200:
            store = open_db(db)
            # the drift series, then the weekly cycle run after it: the whole demo
            ready = bool(store.execute("SELECT count(*) FROM cycles WHERE status = 'finished'").fetchone()[0])
            store.close()
            if ready:
                break
            time.sleep(0.5)
        return usable, time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores)")
    print("run | usable Overview (s) | whole demo incl. drift series and cycle (s)")
    for n in range(args.runs):
        usable, whole = one_run()
        print(f"{n + 1} | {usable:.1f} | {whole:.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
