import pandas as pd
import plotly.express as px
import streamlit as st

from flywheel.errors import BadInput
from flywheel.labeling.taxonomy import (
    code_counts,
    create_entry,
    edit_entry,
    entry_history,
    example_rows,
    merge_codes,
    retire_code,
    taxonomy_entries,
)
from pages._charts import show, show_table
from pages._ui import chart_frame, current_user, database, md

db, user = database(), current_user()
st.title("Failure taxonomy")
st.caption(
    "Failure modes as they grow from the data: labelers add codes while labeling; leads edit, merge and "
    "retire them. Merged codes point to where their labels went."
)


def _confirm(action: str, code: str, target: str | None) -> None:
    """Ask before a merge or retirement: both change every label of the code and cannot be undone."""
    labels = next(e["labels"] for e in taxonomy_entries(db) if e["code"] == code)
    with st.container(border=True):
        if action == "merge":
            st.warning(
                f"Merge {md(code)} into {md(target)}? Its {labels} label(s) move to {md(target)} and "
                f"{md(code)} stops taking labels. This cannot be undone."
            )
        else:
            st.warning(f"Retire {md(code)}? Its {labels} label(s) stay; new labels cannot use it.")
        yes, no = st.columns(2)
        if yes.button(f"Yes, {action} {md(code)}", type="primary"):
            st.session_state.pop("taxonomy_confirm")
            if action == "merge":
                st.toast(f"Moved {merge_codes(db, user, code, target)} label(s) to {md(target)}")
            else:
                retire_code(db, user, code)
            st.session_state["taxonomy_keep"] = code  # the picker stays on the code just changed
            st.rerun()
        if no.button("Cancel"):
            st.session_state.pop("taxonomy_confirm")
            st.rerun()


entries = taxonomy_entries(db)
if not entries:
    st.info("No failure codes yet. They appear when a labeler marks a new failure mode.")
else:
    table = pd.DataFrame(entries)[["code", "name", "status", "labels", "merged_into", "definition"]]
    table["merged_into"] = table["merged_into"].fillna("")
    show_table(table, codes={}, hide_index=True)  # the name has its own column here
    counts = code_counts(db)
    if not counts.empty:
        chart = px.bar(
            chart_frame(counts, "week", "code"),
            x="week",
            y="labels",
            color="code",
            title="Labels per code and production week",
        )
        show(chart, "ISO week", "Labels (count)")

    by_code = {e["code"]: e for e in entries}
    if "taxonomy_keep" in st.session_state:
        st.session_state["taxonomy_entry"] = st.session_state.pop("taxonomy_keep")
    if st.session_state.get("taxonomy_entry") not in by_code:
        st.session_state.pop("taxonomy_entry", None)
    code = st.selectbox(
        "Entry", list(by_code), format_func=lambda c: f"{c} — {by_code[c]['name']}", key="taxonomy_entry"
    )
    chosen = by_code[code]
    st.subheader(f"{md(code)} · {chosen['status']}")
    st.text(chosen["definition"])
    if chosen["merged_into"]:
        st.caption(f"Merged into {md(chosen['merged_into'])}.")
    st.markdown("**Examples** (scrubbed exchanges of approved traces)")
    examples = example_rows(db, user, code, limit=5)
    for row in examples:
        with st.container(border=True):
            st.caption(md(f"{row['trace_id']} · by {row['labeler']} ({row['via']}) · {row['adversarial']}"))
            st.text("\n".join(f"{turn['role']}: {turn['content']}" for turn in row["turns"]))
            if row["pass_criterion"]:
                st.text(f"Pass criterion: {row['pass_criterion']}")
    if not examples:
        st.caption("No labels carry this code.")
    with st.expander("Definition history"):
        show_table(pd.DataFrame(entry_history(db, code)), hide_index=True)

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
                    st.error(md(error))
                else:
                    st.rerun()
        others = [c for c, e in by_code.items() if c != code and e["status"] == "active"]
        target = st.selectbox(f"Merge {md(code)} into", others, index=None, placeholder="Pick a code")
        merge, retire = st.columns(2)
        if merge.button(f"Merge {md(code)}", disabled=target is None):
            st.session_state["taxonomy_confirm"] = ("merge", code, target)
        if retire.button(f"Retire {md(code)}"):
            st.session_state["taxonomy_confirm"] = ("retire", code, None)
        pending = st.session_state.get("taxonomy_confirm")
        if pending and pending[1] == code:
            _confirm(*pending)
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
                st.error(md(error))
            else:
                for key in fields:
                    st.session_state.pop(key, None)
                st.rerun()
