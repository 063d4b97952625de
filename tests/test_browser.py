"""The real app in Chromium: start streamlit on a free port against a tmp demo database, click through."""

import json
import socket

import pytest
from browser_support import assert_signed_in_as, go, open_app, serve_app, settle, sign_in_as

from flywheel.config import load_config
from flywheel.demo.build import build_demo
from flywheel.ingest.run import ingest_lines
from flywheel.review.scrubs import scrub_traces
from flywheel.store.db import open_db
from pages._nav import titles_for

pytestmark = pytest.mark.browser

REVIEW_INPUT = "Hello, Maria Gonzalez here, card lost near the kettle lane branch"


@pytest.fixture(scope="module")
def server_db(tmp_path_factory):
    db_path = tmp_path_factory.mktemp("browser") / "demo.db"
    build_demo(db_path, seed=5, traces=1200)
    db = open_db(db_path)
    line = json.dumps({"trace_id": "t-review", "input": REVIEW_INPUT, "output": "We can help."}).encode()
    ingest_lines(db, [line + b"\n"], "review.jsonl", "test", config=load_config())
    scrub_traces(db, ["t-review"], actor="test")
    return db_path


@pytest.fixture(scope="module")
def server(server_db):
    with serve_app(server_db) as (url, _):
        yield url


def test_lead_opens_every_page_without_an_exception(server, page):
    open_app(page, server)
    sign_in_as(page, "ana (lead)")
    for title in titles_for("lead"):
        go(page, title)
        # the sidebar's pick holds on every page: never a fall-back to the least privileged user
        assert_signed_in_as(page, "ana (lead)")
    go(page, "Overview")
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)


def test_reviewer_sees_highlights_adds_a_redaction_and_approves_with_the_keyboard(server, server_db, page):
    open_app(page, server)
    sign_in_as(page, "ravi (reviewer)")
    go(page, "Review scrubs")
    page.get_by_test_id("stSelectbox").filter(has_text="Pending trace").click()
    page.keyboard.type("t-review")  # the option list is virtualised: filter it to the trace
    page.get_by_role("option", name="t-review", exact=False).click()
    page.locator("h3").filter(has_text="Trace t-review").wait_for(timeout=30_000)
    settle(page)
    # the raw column marks the name, the scrubbed column its placeholder
    page.locator("mark.pii-person").filter(has_text="Maria Gonzalez").first.wait_for(timeout=30_000)
    page.locator("mark.pii-person").filter(has_text="[PERSON]").first.wait_for(timeout=30_000)

    page.get_by_label("Text the scrubber missed").fill("kettle lane")
    settle(page)
    page.get_by_test_id("stSelectbox").filter(has_text="Class").click()
    page.get_by_role("option", name="LOCATION", exact=True).click(timeout=10_000)
    page.get_by_role("button", name="Add redaction").click()
    page.locator("mark.pii-location").filter(has_text="kettle lane").first.wait_for(timeout=30_000)
    settle(page)
    db = open_db(server_db)
    scrub = db.execute("SELECT id, input FROM scrubs WHERE trace_id = 't-review'").fetchone()
    assert "kettle lane" not in scrub[1] and "[LOCATION]" in scrub[1]

    page.evaluate("document.activeElement.blur()")  # shortcuts do not fire while an input has focus
    page.keyboard.press("a")
    page.locator("h3").filter(has_text="Trace t-review").wait_for(state="detached", timeout=30_000)
    settle(page)
    assert db.execute("SELECT status, reviewed_by FROM scrubs WHERE id = ?", [scrub[0]]).fetchone() == (
        "approved",
        "ravi",
    )


def test_lead_imports_a_file_in_the_browser(server, server_db, page, tmp_path):
    upload = tmp_path / "upload.jsonl"
    good = [json.dumps({"trace_id": f"u-{n}", "input": f"uploaded question {n}"}) for n in range(3)]
    upload.write_text("\n".join([*good, "this line is not json"]) + "\n")
    open_app(page, server)
    sign_in_as(page, "ana (lead)")
    go(page, "Import")
    page.locator("input[type=file]").set_input_files(str(upload))
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("4 lines read = 3 ingested + 0 duplicates + 1 quarantined").wait_for(timeout=30_000)
    settle(page)
    db = open_db(server_db)
    assert db.execute("SELECT count(*) FROM traces WHERE trace_id LIKE 'u-%'").fetchone()[0] == 3
    assert (
        db.execute("SELECT reason FROM quarantine WHERE file = 'upload.jsonl'")
        .fetchone()[0]
        .startswith("not JSON")
    )


def test_labeler_labels_three_items_with_the_keyboard_only(server, server_db, page):
    open_app(page, server)
    sign_in_as(page, "tom (labeler)")
    go(page, "Label")
    seen = []
    for step in range(3):
        heading = page.locator("h3").filter(has_text="Trace ").first
        heading.wait_for(timeout=30_000)
        # the card is a fragment: wait until its buttons are drawn, not just the page around it
        page.get_by_test_id("stButton").filter(has_text="Not a bug").wait_for(timeout=30_000)
        seen.append(heading.inner_text().split()[-1])
        if step == 1:  # a known failure: code, expected behaviour and pass criterion, typed
            page.get_by_label("Failure code (type to search").focus()
            page.keyboard.type("WRONG_POLICY")
            page.keyboard.press("Enter")
            # Tab goes from the picker to each field; Esc leaves the last one so K is a shortcut again
            for key in ("Tab", "Quote the current policy", "Tab", "States the policy", "Escape"):
                page.keyboard.press(key) if key in ("Tab", "Escape") else page.keyboard.type(key)
                settle(page)
            page.keyboard.press("k")
        else:
            page.evaluate("document.activeElement.blur()")  # shortcuts do not fire inside an input
            page.keyboard.press("b")
        page.locator("h3").filter(has_text=f"Trace {seen[-1]}").wait_for(state="detached", timeout=30_000)
        settle(page)
    marks = ",".join("?" * len(seen))
    rows = open_db(server_db).execute(
        f"SELECT trace_id, kind, code, expected FROM labels WHERE labeler = 'tom' AND undone_at IS NULL"
        f" AND via = 'card' AND trace_id IN ({marks})",
        seen,
    )
    assert sorted(rows) == sorted(
        [
            (seen[0], "not_a_bug", None, None),
            (seen[1], "known", "WRONG_POLICY", "Quote the current policy"),
            (seen[2], "not_a_bug", None, None),
        ]
    )


def test_two_labelers_side_by_side_never_get_the_same_item(server, browser):
    pages = []
    for name in ("lena (labeler)", "tom (labeler)"):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        open_app(page, server)
        sign_in_as(page, name)
        go(page, "Label")
        pages.append(page)
    shown = []
    for page in pages:
        heading = page.locator("h3").filter(has_text="Trace ").first
        heading.wait_for(timeout=30_000)
        shown.append(heading.inner_text().split()[-1])
    for page in pages:
        page.context.close()
    assert shown[0] != shown[1], f"both labelers were shown {shown[0]}"


def test_lead_runs_a_plan_and_its_batch_reaches_the_review_queue(server, server_db, page):
    db = open_db(server_db)
    before = db.execute("SELECT count(*) FROM sample_batches").fetchone()[0]
    # a week the demo never sampled, so every pick is a trace the scrubber has not seen yet
    week = db.execute(
        "SELECT min(week) FROM traces WHERE week NOT IN (SELECT week FROM sample_batches)"
    ).fetchone()[0]
    fresh = "SELECT count(*) FROM scrubs WHERE trace_id IN (SELECT trace_id FROM traces WHERE week = ?)"
    assert week and db.execute(fresh, [week]).fetchone()[0] == 0
    open_app(page, server)
    sign_in_as(page, "ana (lead)")
    go(page, "Sample")
    page.get_by_test_id("stSelectbox").filter(has_text="Week").click()
    page.get_by_role("option", name=week, exact=True).click()
    settle(page)
    page.get_by_role("button", name="Run plan").click()
    settle(page)
    page.get_by_text(f"Batch {before + 1}:").wait_for(timeout=120_000)
    assert page.get_by_test_id("stException").count() == 0
    batch_id, batch_week, sampled = db.execute(
        "SELECT id, week, sampled FROM sample_batches ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert (batch_id, batch_week) == (before + 1, week) and sampled > 0
    pending = db.execute(
        "SELECT count(*) FROM batch_items b JOIN scrubs s ON s.trace_id = b.trace_id"
        " WHERE b.batch_id = ? AND s.status = 'pending'",
        [batch_id],
    ).fetchone()[0]
    assert pending == sampled  # every trace of the batch now waits for a reviewer


def _listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # UDP connect sends nothing: it only picks the interface
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") else address


# Every link name the sidebar navigation ever shows, recorded as it is drawn (however briefly); a link's
# text is its icon's name, then its title, on lines of their own
NAV_LINKS_SEEN = """(() => {
  window.flywheelNavSeen = new Set();
  const record = () => document.querySelectorAll("[data-testid=stSidebarNav] a")
    .forEach((link) => window.flywheelNavSeen.add(link.innerText.trim().split("\\n").pop().trim()));
  new MutationObserver(record).observe(document, {childList: true, subtree: true, characterData: true});
})();"""


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory):
    """The app started the way the README says (``streamlit run app.py``; only the port is chosen) on a
    database that does not exist yet, so the first visit builds the demo."""
    folder = tmp_path_factory.mktemp("readme")
    db_path, log = folder / "fresh.db", folder / "server.log"
    with serve_app(db_path, address=None, env={"FLYWHEEL_DEMO_TRACES": "150"}, log=log) as (url, port):
        yield {"url": url, "port": port, "db": db_path, "log": log}


def test_the_readme_command_listens_on_loopback_only_and_asks_no_outside_service(readme_server):
    addresses = _listening_addresses(readme_server["port"])
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 as /proc writes them
    assert addresses and addresses <= loopback, f"listening on {addresses}"
    other = _non_loopback_address()
    if other:
        with pytest.raises(OSError):
            socket.create_connection((other, readme_server["port"]), timeout=2).close()
    log = readme_server["log"].read_text()
    assert "external ip" not in log.lower() and "URL: http://localhost:" in log


def test_first_start_lists_no_page_files_and_starts_as_a_labeler(readme_server, page):
    page.add_init_script(NAV_LINKS_SEEN)
    page.goto(readme_server["url"])
    overview = page.get_by_test_id("stSidebarNav").get_by_role("link", name="Overview", exact=True)
    overview.wait_for(timeout=120_000)  # the first start builds the demo
    seen = set(page.evaluate("[...window.flywheelNavSeen]"))
    assert "Overview" in seen
    assert not seen & {"_ui", "ui", "audit", "ingest", "overview", "review", "traces", "label", "sample"}
    page.get_by_test_id("stSidebar").get_by_text("Role: labeler").wait_for(timeout=30_000)
    nav = page.get_by_test_id("stSidebarNav")
    assert nav.get_by_role("link", name="Review scrubs", exact=True).count() == 0


def test_chart_labels_show_markup_as_text(readme_server, page):
    open_app(page, readme_server["url"])  # builds the demo on a first visit
    cohort = '<a href="http://example.com/x">click</a>'
    lines = [
        json.dumps(
            {"trace_id": f"html-{n}", "input": "hi", "cohort": cohort, "timestamp": "2026-05-04T10:00:00Z"}
        ).encode()
        + b"\n"
        for n in range(3)
    ]
    ingest_lines(open_db(readme_server["db"]), lines, "html.jsonl", "test", config=load_config())
    go(page, "Traces")
    go(page, "Overview")
    legend = page.locator(".js-plotly-plot .legend").first
    legend.get_by_text(cohort, exact=True).wait_for(timeout=90_000)  # the demo's drift may still fill in
    assert page.locator(".js-plotly-plot .legend a").count() == 0


@pytest.fixture(scope="module")
def exposed_server(server_db, tmp_path_factory):
    """The app served on every interface with no [auth] section."""
    log = tmp_path_factory.mktemp("exposed") / "server.log"
    with serve_app(server_db, address="0.0.0.0", log=log) as (url, _):
        yield url


def test_served_beyond_loopback_without_sign_in_refuses_raw_text(exposed_server, page):
    open_app(page, exposed_server)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("reachable beyond this machine", exact=False).wait_for(timeout=30_000)
    assert sidebar.get_by_text("[auth] section", exact=False).count() == 1
    sign_in_as(page, "ana (lead)")
    nav = page.get_by_test_id("stSidebarNav")
    for title in ("Import", "Review scrubs", "Audit log", "Sample"):
        assert nav.get_by_role("link", name=title, exact=True).count() == 0
    go(page, "Traces")
    page.get_by_text("Raw trace text is hidden").wait_for(timeout=30_000)
