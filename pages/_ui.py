"""What every page needs: the current user and a database connection for this script run."""

import re

import streamlit as st
from sqlite_utils import Database

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.store import open_db


def current_user() -> User:
    """The user app.py identified for this run."""
    if "user" not in st.session_state:
        # A deep link opened on a freshly started server can run a page before app.py has called
        # st.navigation; send it through the entry point, which identifies the user first.
        st.switch_page("app.py")
    return st.session_state["user"]


def database() -> Database:
    """A connection for this script run, for an identified user only."""
    current_user()
    return open_db(load_config().db)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md(text: object) -> str:
    """Text from a trace (an id, a cohort) made safe to place inside markdown: it renders literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def show_conversation(trace: dict) -> None:
    """A trace's messages (or its input and output) as chat bubbles; st.text keeps untrusted text literal."""
    messages = trace["messages"] or [
        {"role": "user", "content": trace["input"]},
        *([{"role": "assistant", "content": trace["output"]}] if trace["output"] else []),
    ]
    for message in messages:
        with st.chat_message("user" if message["role"] == "user" else "assistant"):
            st.text(message["content"])
