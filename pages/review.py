import pandas as pd
import plotly.express as px
import streamlit as st

from flywheel.auth import RAW_TEXT_ROLES, require_role
from flywheel.errors import BadInput
from flywheel.review import (
    LABELS,
    add_known_names,
    add_redaction_text,
    approve_scrub,
    highlight_html,
    known_names,
    reject_scrub,
    remove_redaction,
    residue,
    review_queue,
    scrub_counts,
    scrub_view,
)
from pages._ui import current_user, database, md

db, user = database(), current_user()
require_role(user, *RAW_TEXT_ROLES)
st.title("Review scrubs")
st.caption(
    "Compare raw and scrubbed text, fix what the scrubber missed or over-redacted, then sign off. "
    "Only approved traces reach labelers."
)

counts = scrub_counts(db)
cols = st.columns(3)
cols[0].metric("Pending", counts["pending"])
cols[1].metric("Approved", counts["approved"])
cols[2].metric("Rejected", counts["rejected"])


def _next(scrub_id: int | None = None) -> None:
    st.session_state["review_skip"] = [*st.session_state.get("review_skip", []), scrub_id] if scrub_id else []


def _review(scrub_id: int) -> None:
    view = scrub_view(db, user, scrub_id)
    st.subheader(f"Trace {md(view.trace_id)}")
    st.caption(
        f"scrub #{view.scrub_id} · scrubber {view.scrubber_version} · hover a mark for class and detector"
    )
    left, right = st.columns(2)
    left.markdown("**Raw**")
    right.markdown("**Scrubbed**")
    # highlight_html passes every piece of trace text through html.escape before it meets markup
    for field in view.fields:
        left, right = st.columns(2)
        with left.container(border=True):
            st.caption(field.name)
            st.markdown(highlight_html(field.raw, field.redactions), unsafe_allow_html=True)
        with right.container(border=True):
            st.caption(field.name)
            st.markdown(highlight_html(field.raw, field.redactions, scrubbed=True), unsafe_allow_html=True)

    with st.form("add_redaction", clear_on_submit=True, border=True):
        st.markdown("**Add a missed redaction**: every uncovered occurrence in this trace is redacted.")
        text_col, label_col, button_col = st.columns([3, 1, 1], vertical_alignment="bottom")
        missed = text_col.text_input("Text the scrubber missed", key="redaction_text")
        label = label_col.selectbox("Class", LABELS, key="redaction_label")
        if button_col.form_submit_button("Add redaction") and missed.strip():
            try:
                added = add_redaction_text(db, user, scrub_id, missed, label)
            except BadInput as error:  # a typo must not take the rest of the card away
                st.error(str(error))
            else:
                st.toast(f"Redacted {added} occurrence(s) as {label}")
                st.rerun()

    spans = [
        {**r, "field": f.name, "text": f.raw[r["start"] : r["end"]]}
        for f in view.fields
        for r in f.redactions
    ]
    if spans:
        table = pd.DataFrame(spans)[["id", "field", "label", "detector", "text"]]
        picked = st.dataframe(
            table, hide_index=True, on_select="rerun", selection_mode="multi-row", key=f"spans_{scrub_id}"
        )
        chosen = [int(table.iloc[i]["id"]) for i in picked.selection.rows]
        if st.button(f"Remove {len(chosen)} selected redaction(s)", disabled=not chosen):
            for redaction_id in chosen:
                remove_redaction(db, user, redaction_id)
            st.rerun()

    note = st.text_input("Note (optional)", key=f"note_{scrub_id}")
    approve, reject, skip = st.columns(3)
    if approve.button("Approve", type="primary", shortcut="a", width="stretch"):
        approve_scrub(db, user, scrub_id, note)
        st.toast(f"Approved {md(view.trace_id)}")
        st.rerun()
    if reject.button("Reject", shortcut="x", width="stretch"):
        reject_scrub(db, user, scrub_id, note)
        st.toast(f"Rejected {md(view.trace_id)}: it will never reach labelers")
        st.rerun()
    if skip.button("Skip for now", shortcut="n", width="stretch"):
        _next(scrub_id)
        st.rerun()


queue = [
    q
    for q in review_queue(db, user, limit=500)
    if q["scrub_id"] not in st.session_state.get("review_skip", [])
]
if queue:
    # Labels must not change while the trace is being fixed: a changed option list resets the choice.
    labels = {q["scrub_id"]: q["trace_id"] for q in queue}
    picked = st.selectbox(
        f"Pending trace ({len(queue)} in the queue, oldest first)",
        list(labels),
        format_func=labels.get,
        key="review_pick",
    )
    _review(picked if picked in labels else queue[0]["scrub_id"])
    st.caption("Shortcuts: A approve · X reject · N skip.")
elif counts["pending"]:
    st.info("You skipped every pending scrub.")
    st.button("Show skipped scrubs again", on_click=_next)
else:
    st.success("Nothing waits for review. Sampled traces appear here once scrubbed.")

st.divider()
st.subheader("What the scrubber misses")
fixes = residue(db)
if fixes.empty:
    st.caption(
        "No reviewer fixes yet. Each added or removed redaction is counted here by class and detector."
    )
else:
    by_class = fixes.groupby(["label", "kind"], as_index=False)["fixes"].sum()
    st.plotly_chart(
        px.bar(
            by_class, x="label", y="fixes", color="kind", barmode="group", title="Reviewer fixes by class"
        ),
        width="stretch",
    )
    st.dataframe(fixes, hide_index=True)

if user.role == "lead":
    with st.expander(f"Known customer and organisation names ({len(known_names(db))})"):
        st.caption("The lookup layer replaces these with [CUSTOMER], case-insensitive, whole words.")
        names = st.text_area("Add names, one per line")
        if st.button("Add names") and names.strip():
            st.toast(f"Added {add_known_names(db, user, names.splitlines())} new name(s)")
            st.rerun()
        st.dataframe(pd.DataFrame({"name": known_names(db)}), hide_index=True)
