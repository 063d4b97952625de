"""What every page needs: the current user and the session's database connection."""

import html
import re
import threading
from dataclasses import dataclass

import pandas as pd
import streamlit as st
from sqlite_utils import Database

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.store.db import open_db
from flywheel.traces.queries import exchange


def current_user() -> User:
    """The user app.py identified for this run."""
    if "user" not in st.session_state:
        # A deep link opened on a freshly started server can run a page before app.py has called
        # st.navigation; send it through the entry point, which identifies the user first.
        st.switch_page("app.py")
    return st.session_state["user"]


@dataclass
class _Held:
    path: str
    db: Database
    thread: threading.Thread


def database() -> Database:
    """This session's connection, for an identified user only.

    Opening a connection reads the whole schema, a few milliseconds that a label click paid twice (its
    callback and the card's rerun), so a session keeps one. Its script runs follow one another, each on
    a thread of its own: the connection moves to the thread of the current run, and a run that finds
    the previous one's thread still alive (a run being stopped) opens a connection of its own.
    """
    current_user()
    path, here = load_config().db, threading.current_thread()
    held = st.session_state.get("_db_connection")
    if held is None or held.path != path or (held.thread is not here and held.thread.is_alive()):
        held = st.session_state["_db_connection"] = _Held(path, open_db(path, any_thread=True), here)
    held.thread = here
    return held.db


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md(text: object) -> str:
    """Text from a trace (an id, a cohort) made safe to place inside markdown: it renders literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


AVATARS = {"customer": "user", "assistant": "assistant"}


def show_conversation(trace: dict) -> None:
    """A trace's whole conversation, in order, as chat bubbles: every message with its role, then the reply
    being judged, marked as such. One renderer for every page; st.text keeps untrusted text literal."""
    for turn in exchange(trace):
        role = turn["role"]
        avatar = None if role in AVATARS else ":material/build:" if role == "tool" else ":material/notes:"
        with st.chat_message(AVATARS.get(role, "assistant"), avatar=avatar):
            if turn["reply"]:
                st.caption("Reply being judged")
            elif role not in AVATARS:
                st.caption(md(role))
            st.text(turn["content"])


def turns_text(turns: list[dict]) -> str:
    """Turns (from ``exchange``) as plain lines (``role: text``), for a compact view such as a sibling's."""
    return "\n".join(f"{turn['role']}: {turn['content']}" for turn in turns)


def chart_text(value: object) -> str:
    """A value from a trace or a user made safe as plotly text (legend, tick, hover): plotly reads
    ``<a>``, ``<b>``, ``<span>`` and entities in labels, so escape them and it draws the value as written."""
    return html.escape("" if value is None else str(value), quote=False)


def chart_frame(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """A copy of ``frame`` whose ``columns`` hold plotly-safe text (see ``chart_text``)."""
    return frame.assign(**{column: frame[column].map(chart_text) for column in columns})


def as_text(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> pd.DataFrame:
    """A copy of ``frame`` for display with every cell as text: a missing value is blank (a table never
    reads "None"), and ``formats`` gives a ``str.format`` pattern per column (e.g. ``"{:.2f}"``)."""
    formats = formats or {}
    out = frame.copy()
    for column in out.columns:
        pattern = formats.get(column, "{}")
        out[column] = ["" if _missing(value) else pattern.format(value) for value in frame[column]]
    return out


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)
