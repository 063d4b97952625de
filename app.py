"""Flywheel: the entry point. Page config, who the user is, which pages their role gets, and the one
place where library errors become messages."""

import sqlite3

import streamlit as st

from flywheel.auth import (
    SIGN_IN_HELP,
    User,
    check_sign_in_settings,
    least_privileged,
    load_users,
    reachable_beyond_loopback,
    user_for_email,
)
from flywheel.config import load_config
from flywheel.demo.build import demo_status, ensure_demo_db
from flywheel.errors import FlywheelError
from flywheel.store.db import check_location, is_busy, store_error
from flywheel.vectors.embeddings import start_background_embedding
from flywheel.warmup import warm_in_background
from pages._nav import PAGES
from pages._ui import database, md

st.set_page_config(page_title="Flywheel", page_icon=":material/cyclone:", layout="wide")
# The first run of a fresh server goes through Streamlit's own listing of the files in pages/ until
# st.navigation replaces it; config.toml hides that listing, and the menu st.navigation draws is shown.
st.set_option("client.showSidebarNavigation", True)
# Streamlit leaves 6rem above every page; on a laptop screen that is room the label card needs.
st.html("<style>[data-testid='stMainBlockContainer'] {padding-top: 3rem}</style>")


def _signed_in_user(users: list[User]) -> User | None:
    """The OIDC user when an [auth] section is configured, else the local user picked in the sidebar."""
    if "is_logged_in" in st.user.to_dict():
        if not st.user.is_logged_in:
            st.title("Flywheel")
            st.button("Sign in", on_click=st.login, type="primary")
            return None
        st.sidebar.button("Sign out", on_click=st.logout)
        user = user_for_email(users, st.user.get("email") or "", st.user.get("email_verified"))
        st.sidebar.caption(f"Signed in as {md(user.email)}")
    else:
        user = _local_user(users, exposed=_reachable_beyond_loopback())
    st.sidebar.caption(f"Role: **{user.role}**")
    if user.exposed:
        st.sidebar.warning(md(SIGN_IN_HELP))
    return user


def _local_user(users: list[User], exposed: bool) -> User:
    """The user picked in the sidebar; a fresh session starts as the least privileged one."""
    roles = {u.name: u.role for u in users}
    names = list(roles)
    # The choice lives in user_name, apart from the widget's own state: widget state can reset when the
    # page changes, and a reset must never fall back to the first user of the file (often a lead). The
    # widget has a fixed key, so it stays one widget whoever is chosen, and it is set from user_name on
    # every run; a pick reaches user_name through the callback, before the run that follows it.
    if st.session_state.get("user_name") not in roles:
        st.session_state["user_name"] = least_privileged(users).name
    st.session_state["signed_in_as"] = st.session_state["user_name"]
    chosen = st.sidebar.selectbox(
        "Signed in as",
        names,
        key="signed_in_as",
        on_change=_remember_user,
        format_func=lambda n: f"{n} ({roles[n]})",
    )
    user = next(u for u in users if u.name == chosen)
    return User(user.name, user.role, user.email, exposed=exposed)


def _remember_user() -> None:
    st.session_state["user_name"] = st.session_state["signed_in_as"]


def _reachable_beyond_loopback() -> bool:
    headers = st.context.headers
    if not headers:  # no HTTP client behind this session (a script run in tests)
        return False
    ip = st.context.ip_address  # None for a browser on this machine
    forwarded = bool(headers.get("X-Forwarded-For") or headers.get("Forwarded"))
    return reachable_beyond_loopback(st.get_option("server.address"), ip, forwarded)


@st.fragment(run_every=2)
def _demo_progress() -> None:
    """While the demo's drift series (and the weekly cycle after it) is computed in the background: how far
    it is, in the sidebar; the page reruns once it is there."""
    status = demo_status()
    if not status.get("running"):
        if status.get("error"):
            st.warning(md(f"The demo's drift series could not be computed: {status['error']}"))
        else:
            st.rerun(scope="app")
        return
    done, total = status["done"], status["total"]
    text = f"Demo: computing the drift series, then a weekly cycle ({status['stage']}"
    text += f", {done:,} of {total:,})" if total else ")"
    st.progress(min(done / total, 1.0) if total else 0.0, text=md(text))


def _navigation(user: User):
    sections = {
        section: [
            st.Page(path, title=title, icon=icon) for path, title, icon, roles in pages if user.may(*roles)
        ]
        for section, pages in PAGES.items()
    }
    return st.navigation({name: pages for name, pages in sections.items() if pages}, expanded=True)


try:
    config = load_config()
    # A broken [auth] section must stop the start: Streamlit would drop it and leave sign-in off.
    check_sign_in_settings(st.get_option("secrets.files"))
    check_location(config.db)
    user = _signed_in_user(load_users(config.users))
    if user is not None:
        st.session_state["user"] = user
        page = _navigation(user)  # before the (slow) first build, so the menu is ours from the start
        with st.spinner("Creating the demo database (first start only, a few seconds)..."):
            ensure_demo_db(config)
        database()  # the session's connection: a database that cannot be used is refused here, once
        if demo_status().get("running"):
            with st.sidebar:
                _demo_progress()
        # Background threads, started with the server's first session: rollups and the Sample preview are
        # brought up to date, and the embedding worker loads the model long before anyone opens a siblings
        # panel; later runs find them running.
        warm_in_background(config.db)
        start_background_embedding(config)
        page.run()
except FlywheelError as error:
    st.error(md(error))
except sqlite3.OperationalError as error:
    if not is_busy(error):  # a wrong statement stays a bug
        raise
    st.error(md(store_error(error)))  # a read or a single statement that waited out the busy timeout
