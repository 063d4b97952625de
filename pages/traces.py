import math

import pandas as pd
import streamlit as st

from flywheel.config import load_config
from flywheel.traces.queries import (
    SIGNAL_FILTERS,
    TraceFilter,
    TraceSort,
    approved_scrub,
    count_traces,
    filter_options,
    find_traces,
    page_key,
    raw_trace,
)
from pages._charts import show_table
from pages._ui import as_text, current_user, database, md, show_conversation

SORTS = {
    "newest first": TraceSort("time", descending=True),
    "oldest first": TraceSort("time", descending=False),
    "judge score, lowest first": TraceSort("judge score", descending=False),
    "judge score, highest first": TraceSort("judge score", descending=True),
    "cost, highest first": TraceSort("cost", descending=True),
    "cost, lowest first": TraceSort("cost", descending=False),
}
COLUMNS = {
    "trace_id": "trace id",
    "ts": "time (UTC)",
    "week": "week",
    "cohort": "cohort",
    "intent": "intent",
    "flags": "signals",
    "scrub": "scrub",
    "scrubbed_input": "input (scrubbed)",
    "judge_score": "judge",
    "turns": "turns",
    "latency_ms": "latency ms",
    "cost_usd": "cost $",
    "input": "input (raw)",
    "output": "output (raw)",
}
FORMATS = {"judge_score": "{:.2f}", "latency_ms": "{:,.0f}", "cost_usd": "{:.4f}"}
SCRUB_STATES = {None: "not scrubbed", "pending": "awaiting review"}

db, user = database(), current_user()
st.title("Traces")
if not user.sees_raw_text:
    st.info(
        "Raw trace text is hidden: labelers see a trace's scrubbed text once a reviewer approved its scrub."
    )

options = filter_options(db)
cols = st.columns(4)
weeks = cols[0].multiselect("Week", options["weeks"][::-1])
cohorts = cols[1].multiselect("Cohort", options["cohorts"])
intents = cols[2].multiselect("Intent", options["intents"])
signals = cols[3].multiselect("Signal", list(SIGNAL_FILTERS))
cols = st.columns([2, 2, 2, 2], vertical_alignment="bottom")
trace_id = cols[0].text_input("Trace id starts with", max_chars=200)
text = cols[1].text_input("Scrubbed text contains", max_chars=200)
sort = SORTS[cols[2].selectbox("Order", list(SORTS))]
approved_only = cols[3].checkbox("Approved scrubs only", value=not user.sees_raw_text)
where = TraceFilter(
    weeks=tuple(weeks),
    cohorts=tuple(cohorts),
    intents=tuple(intents),
    signals=tuple(signals),
    trace_id=trace_id,
    text=text,
    approved_only=approved_only,
)
available = [c for c in COLUMNS if user.sees_raw_text or c not in ("input", "output")]
default = ["trace_id", "ts", "cohort", "intent", "flags", "scrubbed_input", "judge_score"]
default += ["scrub", "input"] if user.sees_raw_text else []
shown = st.multiselect("Columns", available, default=default, format_func=COLUMNS.get)

total = count_traces(db, where, user)
page_size = load_config().page_size
pages = max(1, math.ceil(total / page_size))
view = repr((where, sort, page_size))
if st.session_state.get("traces_view") != view:  # a new selection starts on its first page
    st.session_state.update(traces_view=view, traces_page=1, traces_cursor={})


def _turn(to: str) -> None:
    first, last = st.session_state["traces_keys"]
    page = {"first": 1, "previous": st.session_state["traces_page"] - 1, "last": pages}.get(
        to, st.session_state["traces_page"] + 1
    )
    cursor = {"after": last} if to == "next" else {"before": first} if to == "previous" else {}
    st.session_state.update(traces_page=page, traces_cursor={} if page == 1 else cursor)
    if to == "last" and pages > 1:
        st.session_state["traces_cursor"] = {"last": True}


page = st.session_state["traces_page"]
cursor = st.session_state["traces_cursor"]
size = total - (pages - 1) * page_size if cursor.get("last") else page_size
rows = find_traces(db, user, where, sort, page_size=max(1, size), **cursor)
st.session_state["traces_keys"] = (
    (page_key(rows[0], sort), page_key(rows[-1], sort)) if rows else (None, None)
)

nav = st.columns([1, 1, 1, 1, 4], vertical_alignment="center")
nav[0].button("First", on_click=_turn, args=("first",), disabled=page <= 1)
nav[1].button("Previous", on_click=_turn, args=("previous",), disabled=page <= 1)
nav[2].button("Next", on_click=_turn, args=("next",), disabled=page >= pages)
nav[3].button("Last", on_click=_turn, args=("last",), disabled=page >= pages)
nav[4].caption(f"Page {page:,} of {pages:,} · {total:,} traces match")

if not rows:
    hint = " Untick *Approved scrubs only* to list every trace." if approved_only else ""
    st.info(f"No trace matches.{hint}")
    st.stop()
frame = pd.DataFrame(rows, dtype=object)
frame["flags"] = frame["flags"].map(", ".join)
frame["scrub"] = frame["scrub"].map(lambda status: SCRUB_STATES.get(status, status))
selection = show_table(
    as_text(frame[shown], FORMATS),
    hide_index=True,
    column_config={column: st.column_config.TextColumn(label) for column, label in COLUMNS.items()},
    on_select="rerun",
    selection_mode="single-row",
    key="trace_table",
)
st.caption("Select a row to read the whole trace.")

picked = selection.selection.rows
if picked and not user.sees_raw_text:
    chosen = rows[picked[0]]
    if chosen["scrub"] != "approved":
        st.info(f"Trace {md(chosen['trace_id'])} has no approved scrub yet, so there is nothing to show.")
    else:
        scrub = approved_scrub(db, chosen["trace_id"])
        st.subheader(f"Trace {md(chosen['trace_id'])}")
        st.caption("scrubbed text, approved by " + md(scrub["reviewed_by"] or "a reviewer"))
        show_conversation(scrub)
elif picked:
    trace = raw_trace(db, user, rows[picked[0]]["trace_id"])
    st.subheader(f"Trace {md(trace['trace_id'])}")
    where = f"{md(trace['cohort'] or 'no cohort')} · {md(trace['intent'] or 'no intent')}"
    st.caption(f"{md(trace['ts'])} · {where} · raw text")
    show_conversation(trace)
    with st.expander("Metadata"):
        st.json(trace["metadata"])
