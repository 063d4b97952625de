import pandas as pd
import plotly.express as px
import streamlit as st

from flywheel.errors import BadInput
from flywheel.taxonomy import (
    code_counts,
    create_entry,
    edit_entry,
    entry_history,
    example_rows,
    merge_codes,
    retire_code,
    taxonomy_entries,
)
from pages._ui import current_user, database, md

db, user = database(), current_user()
st.title("Failure taxonomy")
st.caption(
    "Failure modes as they grow from the data: labelers add codes while labeling; leads edit, merge and "
    "retire them. Merged codes point to where their labels went."
)

entries = taxonomy_entries(db)
if not entries:
    st.info("No failure codes yet. They appear when a labeler marks a new failure mode.")
else:
    table = pd.DataFrame(entries)[["code", "name", "status", "labels", "merged_into", "definition"]]
    st.dataframe(table, hide_index=True)
    counts = code_counts(db)
    if not counts.empty:
        chart = px.bar(
            counts, x="week", y="labels", color="code", title="Labels per code and production week"
        )
        st.plotly_chart(chart, width="stretch")

    by_code = {e["code"]: e for e in entries}
    code = st.selectbox("Entry", list(by_code), format_func=lambda c: f"{c} — {by_code[c]['name']}")
    chosen = by_code[code]
    st.subheader(f"{code} · {chosen['status']}")
    st.text(chosen["definition"])
    if chosen["merged_into"]:
        st.caption(f"Merged into {chosen['merged_into']}.")
    st.markdown("**Examples** (scrubbed text of approved traces)")
    examples = example_rows(db, user, code, limit=5)
    for row in examples:
        with st.container(border=True):
            st.caption(f"{md(row['trace_id'])} · by {row['labeler']} ({row['via']}) · {row['adversarial']}")
            st.text(row["scrubbed_input"])
            if row["pass_criterion"]:
                st.text(f"Pass criterion: {row['pass_criterion']}")
    if not examples:
        st.caption("No labels carry this code.")
    with st.expander("Definition history"):
        st.dataframe(pd.DataFrame(entry_history(db, code)), hide_index=True)

    if user.role == "lead" and chosen["status"] == "active":
        st.divider()
        st.subheader("Edit")
        with st.form("edit_entry"):
            name = st.text_input("Name", chosen["name"])
            definition = st.text_area("Definition (two sentences)", chosen["definition"])
            if st.form_submit_button("Save definition"):
                try:
                    edit_entry(db, user, code, definition, name)
                except BadInput as error:  # shown beside the form, the text stays for fixing
                    st.error(str(error))
                else:
                    st.rerun()
        others = [c for c, e in by_code.items() if c != code and e["status"] == "active"]
        target = st.selectbox(f"Merge {code} into", others, index=None, placeholder="Pick a code")
        merge, retire = st.columns(2)
        if merge.button(f"Merge {code}", disabled=target is None):
            st.toast(f"Moved {merge_codes(db, user, code, target)} label(s) to {target}")
            st.rerun()
        if retire.button(f"Retire {code}"):
            retire_code(db, user, code)
            st.rerun()
    elif user.role != "lead":
        st.caption("Only leads edit, merge or retire codes.")

if user.role == "lead":
    fields = ("new_code", "new_name", "new_definition")
    with st.expander("Add a code"), st.form("add_entry"):
        new_code = st.text_input("Code", key="new_code")
        new_name = st.text_input("Name", key="new_name")
        new_definition = st.text_area("Definition (two sentences)", key="new_definition")
        if st.form_submit_button("Add code"):
            try:
                create_entry(db, user, new_code, new_name, new_definition)
            except BadInput as error:  # keep what the lead typed so it can be fixed
                st.error(str(error))
            else:
                for key in fields:
                    st.session_state.pop(key, None)
                st.rerun()
