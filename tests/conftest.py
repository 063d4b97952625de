import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flywheel.demo.build import build_demo
from flywheel.store import clock as store_clock
from flywheel.store.db import open_db


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory):
    """An empty store with every migration applied, made once: migrating a new file for each test costs
    a quarter of a second, copying this one a hundredth."""
    path = tmp_path_factory.mktemp("store") / "flywheel.db"
    open_db(path).close()  # the last connection's close checkpoints the WAL: the file is whole
    return path


@pytest.fixture
def db(tmp_path, migrated_store):
    path = tmp_path / "flywheel.db"
    shutil.copy(migrated_store, path)
    database = open_db(path)
    yield database
    database.close()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory):
    """One demo database for the whole run; tests get copies of it."""
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    build_demo(path, seed=3, traces=1500)
    return path


@pytest.fixture(scope="module")
def demo_served(demo_template, tmp_path_factory, request):
    """A test module's own copy of the demo database, served (browser tests): ``(url, path)``."""
    from browser_support import served_copy

    with served_copy(demo_template, tmp_path_factory.mktemp(request.module.__name__)) as both:
        yield both


@pytest.fixture
def demo_copy(tmp_path, demo_template):
    """A private copy of the demo database (build_demo checkpoints the WAL, so the file is whole)."""
    path = tmp_path / "demo.db"
    shutil.copy(demo_template, path)
    return path


def trace(n: int, **fields) -> dict:
    """A valid trace object; fields override the defaults."""
    return {
        "trace_id": f"t-{n:06d}",
        "timestamp": f"2026-05-{1 + n % 28:02d}T10:{n % 60:02d}:00Z",
        "input": f"question number {n}",
        "output": f"answer number {n}",
        "cohort": ("free", "smb", "enterprise")[n % 3],
        "intent": ("card_arrival", "refund_dispute", "top_up_failed")[n % 3],
        "signals": {
            "thumbs": "down" if n % 10 == 0 else None,
            "judge_score": (n % 100) / 100,
            "turns": 1 + n % 7,
        },
        **fields,
    }


def jsonl(path: Path, items: list) -> Path:
    """Write objects (dicts) or raw lines (bytes) as a JSONL file."""
    with path.open("wb") as out:
        for item in items:
            out.write((item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n")
    return path


class Clock:
    """The one clock held still: every "now" of the library (and of pages run by AppTest) reads it."""

    def __init__(self, monkeypatch, moment: datetime):
        self._monkeypatch = monkeypatch
        self.set(moment)

    def set(self, moment: datetime) -> None:
        self.moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        self._monkeypatch.setattr(store_clock, "_frozen", self.moment)

    def advance(self, **delta: float) -> None:
        self.set(self.moment + timedelta(**delta))

    def now(self) -> str:
        return store_clock.format_ts(self.moment)


@pytest.fixture
def clock(monkeypatch):
    """Time frozen at 2026-05-04 09:00 UTC; ``clock.set``/``clock.advance`` move it."""
    return Clock(monkeypatch, datetime(2026, 5, 4, 9, 0, tzinfo=UTC))


@pytest.fixture(autouse=True)
def no_background_embedding(monkeypatch):
    """Pages run in the test process: no embedding thread (and model load) behind every AppTest."""
    monkeypatch.setenv("FLYWHEEL_EMBED_WORKER", "off")


@pytest.fixture(scope="session")
def browser():
    """One Chromium for every browser test of the run."""
    from browser_support import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser):
    """A fresh browser context (its own Streamlit session) and its page."""
    from browser_support import VIEWPORT

    context = browser.new_context(viewport=VIEWPORT)
    yield context.new_page()
    context.close()


# The fast tier (`pytest -m "not slow"`): tests that build a demo, load the embedding model, drive Chromium
# or start Spark are slow by what they use, so no one has to remember the marker on each of them. A test
# that starts processes of its own (a pool, a subprocess, the command line's model) carries the marker.
SLOW_FIXTURES = {"demo_template", "demo_copy", "browser", "page", "server", "server_db", "model"}
SLOW_MODULES = {
    "test_sample_source",
    "test_runs_runners",
    "test_checks_runners",
    "test_crash_recovery",
    "test_long_text",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        slow_module = item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES
        if slow_module or item.get_closest_marker("browser") or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
