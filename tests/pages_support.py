"""Pages driven through AppTest: the app opened as a user, a page switched to."""

from __future__ import annotations

from html.parser import HTMLParser

from streamlit.testing.v1 import AppTest

from flywheel.store.db import open_db


def app(db_path, monkeypatch, user: str = "ana") -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DB", str(db_path))
    at = AppTest.from_file("../app.py", default_timeout=90)
    at.session_state["user_name"] = user
    at.run()
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page)
    at.run()
    assert not at.exception, f"{page} raised: {[e.value for e in at.exception]}"
    assert not at.error, f"{page} showed an error: {[e.value for e in at.error]}"
    return at


CODE_PICKER = "Failure code (type to search, Enter to pick)"

NEW_DEFINITION = "The assistant quotes a made-up card fee. Any amount missing from the schedule counts."


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def widget(elements, label: str):
    return next(e for e in elements if e.label == label)


def shown_text(at) -> str:
    kinds = ("title", "subheader", "text", "markdown", "caption", "error", "checkbox", "selectbox")
    elements = [e for kind in kinds for e in getattr(at, kind)]
    return repr([(getattr(e, "label", None), getattr(e, "value", None)) for e in elements])


def rows(path, sql: str = "SELECT trace_id, labeler, kind, code, via FROM labels ORDER BY id") -> list:
    return open_db(path).execute(sql).fetchall()


def sides(at) -> tuple[list[str], list[str]]:
    raw = [shown(h.value) for h in at.html if "fw-raw" in h.value]
    scrubbed = [shown(h.value) for h in at.html if "fw-scrubbed" in h.value]
    return raw, scrubbed


def shown(body: str) -> str:
    parser = _Text()
    parser.feed(body)
    return "".join(parser.parts)


class _Text(HTMLParser):
    """The characters a reader gets from st.html markup, without the names on boxed invisible marks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if self.skip or ("class", "fw-mark-label") in attrs:
            self.skip += 1

    def handle_endtag(self, tag):
        if self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)
