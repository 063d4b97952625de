"""What every page needs: the current user and a database connection for this script run."""

import streamlit as st
from sqlite_utils import Database

from flywheel.auth import User
from flywheel.config import load_config
from flywheel.store import open_db


def current_user() -> User:
    """The user app.py identified for this run."""
    return st.session_state["user"]


def database() -> Database:
    """A connection for this script run (connections are not shared between threads)."""
    return open_db(load_config().db)
