import math

import pandas as pd
import streamlit as st

from flywheel.config import load_config
from flywheel.traces import SIGNAL_FILTERS, TraceFilter, count_traces, filter_options, find_traces, raw_trace
from pages._ui import current_user, database

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
page = st.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, value=1, step=1)
st.caption(f"{total:,} traces match")

rows = find_traces(db, user, where, page=page - 1, page_size=page_size)
if not user.sees_raw_text:
    st.info("Trace text is hidden: labelers see a trace only after a reviewer approved its scrub.")
selection = st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="trace_table",
    column_config={"judge_score": st.column_config.NumberColumn(format="%.2f")},
)

picked = selection.selection.rows if user.sees_raw_text else []
if picked:
    trace = raw_trace(db, user, rows[picked[0]]["trace_id"])
    st.subheader(f"Trace {trace['trace_id']}")
    st.caption(
        f"{trace['ts']} · {trace['cohort'] or 'no cohort'} · {trace['intent'] or 'no intent'} · raw text"
    )
    for message in trace["messages"] or [{"role": "user", "content": trace["input"]}]:
        with st.chat_message("user" if message["role"] == "user" else "assistant"):
            st.text(message["content"])
    if trace["output"] and not trace["messages"]:
        with st.chat_message("assistant"):
            st.text(trace["output"])
    with st.expander("Metadata"):
        st.json(trace["metadata"])
