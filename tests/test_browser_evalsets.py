"""The lead's path in Chromium: fold in, import two systems' results (ours and promptfoo's), read the
pass rate per version and the gate's verdict."""

import json
from pathlib import Path

import pytest
from browser_support import VIEWPORT, go, open_app, serve_app, settle, sign_in_as

from flywheel.demo.build import build_demo
from flywheel.evals.runs import gate
from flywheel.evals.versions import current_version, iter_version_rows
from flywheel.store.db import open_db

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("browser_evalsets") / "demo.db"
    build_demo(path, seed=5, traces=1200)
    return path


@pytest.fixture(scope="module")
def server(server_db):
    with serve_app(server_db) as (url, _):
        yield url


@pytest.fixture(scope="module")
def page(browser):
    """One page for the whole path: each step goes on from where the last one left the app."""
    context = browser.new_context(viewport=VIEWPORT)
    yield context.new_page()
    context.close()


def _results(db_path, version: int, tmp_path: Path) -> tuple[Path, Path]:
    """Our JSONL for one system and a promptfoo results JSON for the other, on every active row."""
    rows = [r["id"] for r in iter_version_rows(open_db(db_path), version)]
    ours = tmp_path / "bot-a.jsonl"
    ours.write_text(
        "".join(json.dumps({"row_id": r, "passed": i % 4 != 0}) + "\n" for i, r in enumerate(rows))
    )
    results = [
        {
            "success": i % 4 != 0 or i % 8 == 0,  # fixes every other failure of bot-a
            "score": 1,
            "response": {"output": f"answer {i}"},
            "testCase": {"vars": {"input": "..."}, "metadata": {"row_id": r}},
        }
        for i, r in enumerate(rows)
    ]
    theirs = tmp_path / "promptfoo-out.json"
    theirs.write_text(json.dumps({"evalId": "eval-1", "results": {"version": 3, "results": results}}))
    return ours, theirs


def _import(page, system: str, path: Path) -> None:
    """Import one results file on the Pass rate page, opened afresh so the uploader is empty."""
    go(page, "Eval sets")
    go(page, "Pass rate")
    box = page.get_by_label("System (model or release name)")
    if not box.is_visible():
        page.get_by_test_id("stExpander").filter(has_text="Import results").locator("summary").click()
        box.wait_for(timeout=30_000)
    settle(page)  # a file set while a rerun redraws the uploader is dropped
    page.locator("input[type=file]").set_input_files(str(path))
    page.get_by_text(path.name).first.wait_for(timeout=30_000)  # the uploaded file's chip
    settle(page)
    box.fill(system)
    box.press("Enter")
    settle(page)
    page.get_by_test_id("stButton").filter(has_text="Import results").click()
    page.get_by_text(f"{system} on version").first.wait_for(timeout=60_000)
    settle(page)


def test_lead_folds_in_imports_two_systems_and_reads_the_verdict(server, server_db, page, tmp_path):
    # version numbers are unique across the store's sets (the demo's frozen regression set holds one)
    version = open_db(server_db).execute("SELECT max(version) FROM eval_versions").fetchone()[0] + 1
    open_app(page, server)
    sign_in_as(page, "ana (lead)")
    go(page, "Eval sets")
    page.get_by_role("button", name="Fold in").click()
    page.get_by_text(f"version {version}:").first.wait_for(timeout=60_000)
    settle(page)
    assert current_version(open_db(server_db)) == version

    ours, theirs = _results(server_db, version, tmp_path)
    _import(page, "bot-a", ours)
    _import(page, "bot-b", theirs)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    assert page.get_by_test_id("stException").count() == 0

    go(page, "Release gate")
    expected = gate(open_db(server_db), version, "bot-a", "bot-b", default_adversarial_pct=90)
    word = expected["verdict"].upper()
    page.get_by_text(f"{word} bot-b on version {version}").wait_for(timeout=30_000)
    settle(page)
    page.get_by_test_id("stMetricLabel").filter(has_text="Exact McNemar p").wait_for(timeout=30_000)
    page.locator("h3").filter(has_text="Flipped rows").wait_for(timeout=30_000)
    assert expected["improvements"] and expected["regressions"] == []
