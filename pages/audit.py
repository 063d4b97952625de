from datetime import timedelta

import pandas as pd
import streamlit as st

from flywheel.audit import AuditFilter, audit_choices, audit_csv, audit_entries, claim_summary, count_entries
from flywheel.auth import require_role
from flywheel.store.clock import now_utc
from pages._charts import show_table
from pages._ui import as_text, current_user, database

PAGE = 200

db, user = database(), current_user()
require_role(user, "lead")
st.title("Audit log")
st.caption("Every change made through Flywheel: who, when, what, and the trace it was about.")

choices = audit_choices(db, user)
cols = st.columns(4)
actors = cols[0].multiselect("Actor", choices["actors"])
actions = cols[1].multiselect("Action", choices["actions"])
entities = cols[2].multiselect("Entity", choices["entities"])
today = now_utc().date()
period = cols[3].date_input("Period (UTC)", value=(today - timedelta(days=30), today), max_value=today)
cols = st.columns([2, 2, 4], vertical_alignment="bottom")
trace_id = cols[0].text_input("About trace id", max_chars=200)
claims = cols[1].checkbox(
    "List each claim", help="Claims are one entry per item served; they are summarised below."
)
since, until = (*period, None, None)[:2]
where = AuditFilter(
    actors=tuple(actors),
    actions=tuple(actions),
    entities=tuple(entities),
    since=since,
    until=until or since,
    trace_id=trace_id,
    claims=claims,
)

view = repr(where)
if st.session_state.get("audit_view") != view:  # a new filter starts from the newest entry
    st.session_state.update(audit_view=view, audit_before=[None])
before = st.session_state["audit_before"]
entries = audit_entries(db, user, where, before_id=before[-1], limit=PAGE)
total = count_entries(db, user, where)
nav = st.columns([1, 1, 6], vertical_alignment="center")
if nav[0].button("Newer", disabled=len(before) == 1):
    before.pop()
    st.rerun()
if nav[1].button("Older", disabled=len(entries) < PAGE):
    before.append(entries[-1]["id"])
    st.rerun()
shown_from = (len(before) - 1) * PAGE
nav[2].caption(f"Entries {shown_from + 1:,}–{shown_from + len(entries):,} of {total:,}, newest first")

if entries:
    frame = pd.DataFrame(entries, dtype=object)[
        ["at", "actor", "action", "trace_id", "entity", "entity_id", "detail"]
    ]
    show_table(
        as_text(frame),
        hide_index=True,
        column_config={
            "at": st.column_config.TextColumn("time (UTC)"),
            "trace_id": st.column_config.TextColumn("trace"),
            "entity_id": st.column_config.TextColumn("entity id"),
            "detail": st.column_config.TextColumn("detail", width="large"),
        },
    )
    st.download_button(
        f"Download these {total:,} entries as CSV",
        data=lambda: audit_csv(db, user, where),
        file_name="flywheel-audit.csv",
        mime="text/csv",
        icon=":material/download:",
    )
else:
    st.info("No entry matches.")

if not claims and (not actions or set(actions) & {"claim", "release_claim"}):
    summary = claim_summary(db, user, where)
    if summary:
        st.subheader("Claims per labeler and day")
        show_table(as_text(pd.DataFrame(summary, dtype=object)), hide_index=True)
