"""Flywheel: the entry point. Page config, who the user is, which pages their role gets, and the one
place where library errors become messages."""

import streamlit as st

from flywheel.auth import User, load_users, user_for_email
from flywheel.config import load_config
from flywheel.demo_db import ensure_demo_db
from flywheel.errors import FlywheelError

st.set_page_config(page_title="Flywheel", page_icon=":material/cyclone:", layout="wide")

PAGES = {
    "Loop": [
        ("pages/overview.py", "Overview", ":material/dashboard:", ("labeler", "reviewer", "lead")),
        ("pages/traces.py", "Traces", ":material/list_alt:", ("labeler", "reviewer", "lead")),
        ("pages/sample.py", "Sample", ":material/filter_alt:", ("lead",)),
        ("pages/review.py", "Review scrubs", ":material/shield_person:", ("reviewer", "lead")),
        ("pages/label.py", "Label", ":material/label:", ("labeler", "reviewer", "lead")),
        ("pages/taxonomy.py", "Taxonomy", ":material/category:", ("labeler", "reviewer", "lead")),
        ("pages/judge.py", "Judge", ":material/gavel:", ("lead",)),
        ("pages/online.py", "Online quality", ":material/monitor_heart:", ("lead",)),
    ],
    "Admin": [
        ("pages/ingest.py", "Import", ":material/upload_file:", ("lead",)),
        ("pages/audit.py", "Audit log", ":material/history:", ("lead",)),
    ],
}


def _signed_in_user(users: list[User]) -> User | None:
    """The OIDC user when an [auth] section is configured, else the local user picked in the sidebar."""
    if "is_logged_in" in st.user.to_dict():
        if not st.user.is_logged_in:
            st.title("Flywheel")
            st.button("Sign in", on_click=st.login, type="primary")
            return None
        user = user_for_email(users, st.user.get("email", ""), st.user.get("name"))
        st.sidebar.button("Sign out", on_click=st.logout)
    else:
        roles = {u.name: u.role for u in users}
        if st.session_state.get("user_name") not in roles:
            st.session_state["user_name"] = users[0].name
        chosen = st.sidebar.selectbox(
            "Signed in as", list(roles), key="user_name", format_func=lambda n: f"{n} ({roles[n]})"
        )
        user = next(u for u in users if u.name == chosen)
    st.sidebar.caption(f"Role: **{user.role}**")
    return user


def _navigation(user: User):
    sections = {
        section: [
            st.Page(path, title=title, icon=icon) for path, title, icon, roles in pages if user.role in roles
        ]
        for section, pages in PAGES.items()
    }
    return st.navigation({name: pages for name, pages in sections.items() if pages})


try:
    config = load_config()
    user = _signed_in_user(load_users(config.users))
    if user is not None:
        st.session_state["user"] = user
        with st.spinner("Creating the demo database (first start only)..."):
            ensure_demo_db(config)
        _navigation(user).run()
except FlywheelError as error:
    st.error(str(error))
