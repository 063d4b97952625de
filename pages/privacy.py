import pandas as pd
import streamlit as st

from flywheel.auth import require_role
from flywheel.config import load_config
from flywheel.errors import FlywheelError
from flywheel.privacy.retention import apply_retention, retention_plan
from flywheel.privacy.subjects import erase_subject, find_subject
from flywheel.review.scrubs import add_never_redact, never_redact, remove_never_redact, rescrub_pending
from pages._charts import show_table
from pages._ui import current_user, database, md

db, user = database(), current_user()
require_role(user, "lead")
st.title("Privacy")
st.caption(
    "Answer a data subject: find every place their data lives, erase it. Keep raw text only as long as"
    " the retention setting says, and tell the scrubber which phrases to leave alone."
)


def _table(rows: list[dict], columns: list[str]) -> None:
    show_table(pd.DataFrame(rows, columns=columns), hide_index=True)


st.subheader("Find a data subject")
with st.form("find_subject"):
    value = st.text_input(
        "E-mail, phone or card number, name or user id",
        type="password",
        help="Matched as the scrubber reads text (case, spacing, phone digits, invisible characters)."
        " The value is not stored; the audit log keeps a keyed hash of it.",
    )
    searched = st.form_submit_button("Find")
if searched and value.strip():
    try:
        report = find_subject(db, user, value)
    except FlywheelError as error:
        st.error(md(error))
    else:
        st.session_state["subject_report"] = report.as_json()
found = st.session_state.get("subject_report")
if found is not None:
    if not (found["traces"] or found["quarantined"] or found["eval_rows"]):
        st.success("Not found: no trace, quarantined line or eval row holds this value.")
    else:
        st.markdown(
            f"**{len(found['traces'])}** trace(s) · **{len(found['quarantined'])}** quarantined line(s) ·"
            f" **{len(found['eval_rows'])}** eval row(s) · **{len(found['exports'])}** export(s)"
        )
        traces = [
            {
                "trace": t["trace_id"],
                "time": t["ts"],
                "found in": ", ".join(t["fields"]),
                "scrubs": ", ".join(f"#{s['id']} {s['status']}" for s in t["scrubs"]),
                "labels": len(t["labels"]),
                "batches": ", ".join(map(str, t["batches"])),
                "raw text": t["raw_text"],
            }
            for t in found["traces"]
        ]
        _table(traces, ["trace", "time", "found in", "scrubs", "labels", "batches", "raw text"])
        if found["quarantined"]:
            _table(found["quarantined"], ["id", "run_id", "file", "line_no"])
        rows = [
            {
                "row": r["row_id"],
                "trace": r["trace_id"],
                "versions": ", ".join(f"v{v['version']} {v['state']}" for v in r["versions"]),
                "withdrawn in": r["withdrawn_in"],
            }
            for r in found["eval_rows"]
        ]
        if rows:
            _table(rows, ["row", "trace", "versions", "withdrawn in"])
        if found["exports"]:
            st.caption("Exports written of those versions (files hold the rows as they were):")
            _table(found["exports"], ["id", "version", "format", "path", "rows", "actor", "at"])
        with st.form("erase_subject"):
            st.warning(
                "Erasing purges the raw text of these traces and lines, withdraws their eval rows in a new"
                " version (older versions keep a tombstone), drops scrubbed text, embeddings and judge"
                " reasons, and blanks every other copy. It cannot be undone."
            )
            reason = st.text_input("Reason (a reference, not the person's name)")
            again = st.text_input("Type the value again to confirm", type="password")
            if st.form_submit_button("Erase", type="primary"):
                if again != value or not value.strip():
                    st.error("The value typed to confirm differs from the one searched for.")
                else:
                    try:
                        done = erase_subject(db, user, value, reason)
                    except FlywheelError as error:
                        st.error(md(error))
                    else:
                        st.session_state.pop("subject_report", None)
                        st.success(md(done.summary()))

st.divider()
st.subheader("Retention")
days = load_config().retention_days
if not days:
    st.caption(
        "FLYWHEEL_RETENTION_DAYS is not set: raw text is kept. Set it to the days raw text may be kept;"
        " the weekly cycle then purges older raw text, keeping ids, times, signals and approved scrubs."
    )
else:
    plan = retention_plan(db, user, days)
    st.markdown(md(plan.summary()))
    if st.button("Purge expired raw text now", disabled=not (plan.traces or plan.quarantined)):
        st.success(md(apply_retention(db, user, days).summary()))

st.divider()
st.subheader("Never redact")
st.caption(
    "Phrases the scrubber leaves alone (your own team's or product's name). Verified e-mails, cards,"
    " phones and IBANs are redacted even inside them. New scrubs use the list at once."
)
phrases = never_redact(db, user)
_table(phrases, ["phrase", "added_by", "added_at"])
with st.form("never_redact", clear_on_submit=True):
    added = st.text_area("Add phrases, one per line")
    if st.form_submit_button("Add") and added.strip():
        try:
            st.toast(f"Added {add_never_redact(db, user, added.splitlines())} phrase(s)")
        except FlywheelError as error:
            st.error(md(error))
if phrases:
    cols = st.columns([3, 1], vertical_alignment="bottom")
    gone = cols[0].selectbox("Phrase", [p["phrase"] for p in phrases], key="never_redact_pick")
    if cols[1].button("Remove phrase"):
        remove_never_redact(db, user, gone)
        st.rerun()
if st.button("Re-scrub pending scrubs with the current lists"):
    st.success(f"Scrubbed {rescrub_pending(db, user)} pending scrub(s) again; they wait for review.")
