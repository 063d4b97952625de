import math

import pandas as pd
import streamlit as st

from flywheel.config import load_config
from flywheel.traces import (
    SIGNAL_FILTERS,
    TraceFilter,
    approved_scrub,
    count_traces,
    filter_options,
    find_traces,
    raw_trace,
)
from pages._ui import current_user, database, md, show_conversation

db, user = database(), current_user()
st.title("Traces")

options = filter_options(db)
cols = st.columns(4)
where = TraceFilter(
    weeks=tuple(cols[0].multiselect("Week", options["weeks"][::-1])),
    cohorts=tuple(cols[1].multiselect("Cohort", options["cohorts"])),
    intents=tuple(cols[2].multiselect("Intent", options["intents"])),
    signals=tuple(cols[3].multiselect("Signal", list(SIGNAL_FILTERS))),
)
total = count_traces(db, where)
page_size = load_config().page_size
pages = max(1, math.ceil(total / page_size))
left, right = st.columns([1, 4], vertical_alignment="bottom")
page = left.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, value=1, step=1)
right.caption(f"{total:,} traces match")

rows = find_traces(db, user, where, page=page - 1, page_size=page_size)
if not user.sees_raw_text:
    st.info(
        "Raw trace text is hidden: labelers see a trace's scrubbed text once a reviewer approved its scrub."
    )
columns = ["trace_id", "ts", "cohort", "intent", "flags", "scrub", "scrubbed_input", "judge_score", "turns"]
columns += ["latency_ms", "cost_usd"]
if user.sees_raw_text:
    columns += ["input", "output"]
frame = pd.DataFrame(rows, columns=columns)
frame["flags"] = frame["flags"].map(", ".join)
selection = st.dataframe(
    frame,
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="trace_table",
    column_config={
        "ts": st.column_config.TextColumn("time (UTC)"),
        "flags": st.column_config.TextColumn("signals"),
        "scrubbed_input": st.column_config.TextColumn("input (scrubbed)", width="large"),
        "judge_score": st.column_config.NumberColumn("judge", format="%.2f"),
        "latency_ms": st.column_config.NumberColumn("latency ms", format="%d"),
        "cost_usd": st.column_config.NumberColumn("cost $", format="%.4f"),
        "input": st.column_config.TextColumn("input (raw)", width="large"),
        "output": st.column_config.TextColumn("output (raw)", width="medium"),
    },
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
        st.caption("scrubbed text, approved by " + scrub["reviewed_by"])
        show_conversation(scrub)
elif picked:
    trace = raw_trace(db, user, rows[picked[0]]["trace_id"])
    st.subheader(f"Trace {md(trace['trace_id'])}")
    where = f"{md(trace['cohort'] or 'no cohort')} · {md(trace['intent'] or 'no intent')}"
    st.caption(f"{trace['ts']} · {where} · raw text")
    show_conversation(trace)
    with st.expander("Metadata"):
        st.json(trace["metadata"])
