import functools
import zlib

import pandas as pd
import plotly.express as px
import streamlit as st

from flywheel.auth import RAW_TEXT_ROLES, require_role
from flywheel.config import load_config
from flywheel.errors import BadInput, FlywheelError
from flywheel.review.scrubs import (
    LABELS,
    RESIDUE_KINDS,
    VERIFIED_DETECTORS,
    VERIFIED_LABELS,
    add_known_names,
    add_never_redact,
    add_redaction_text,
    approve_scrub,
    change_redaction_label,
    claim_scrub,
    clear_skips,
    highlight_html,
    invisible_counts,
    known_names,
    reject_scrub,
    remove_redactions,
    reopen_scrub,
    reopenable_scrubs,
    residue,
    review_progress,
    review_queue,
    scrub_counts,
    scrub_view,
    skip_scrub,
)
from pages._charts import BLUE, GREY, VERMILLION, show, show_table
from pages._ui import current_user, database, md

RESIDUE_COLOURS = dict(zip(RESIDUE_KINDS.values(), (VERMILLION, BLUE, GREY), strict=True))
LONG_TRACE = 1500  # characters; longer traces scroll inside a box under fixed Raw/Scrubbed headers
# A pick in the jump box (or any select) must hand the keyboard back to the page, else A/N/X type into
# the box; Esc leaves whatever field holds the focus. Letters typed into text fields stay theirs.
SHORTCUT_GUARD = """<script>
(() => {
  if (window.flywheelReviewGuard) return;
  window.flywheelReviewGuard = true;
  const PICKERS = "[role=combobox], input[aria-autocomplete], [role=listbox], [role=option]";
  const leave = () => {
    const el = document.activeElement;
    if (el && el !== document.body && el.blur) el.blur();
  };
  // After a pick the select gives its input the focus back once its list has closed (a moment later):
  // for a short while, a picker that takes the focus without the person asking gives it up again.
  let leaveUntil = 0;
  const leaveAfterPick = () => { leaveUntil = Date.now() + 1500; setTimeout(leave, 0); };
  window.addEventListener("focusin", (event) => {
    const el = event.target;
    if (Date.now() < leaveUntil && el.matches && el.matches(PICKERS)) setTimeout(() => el.blur(), 0);
  }, true);
  window.addEventListener("pointerdown", (event) => {
    const option = event.target.closest && event.target.closest("[role=option]");
    if (!option) leaveUntil = 0;  // a click on the box itself is the person asking for it
  }, true);
  window.addEventListener("click", (event) => {
    const option = event.target.closest && event.target.closest("[role=option]");
    const several = option && option.closest("[aria-multiselectable=true]");  // picks go on
    if (option && !several) leaveAfterPick();
  }, true);
  window.addEventListener("keydown", (event) => {
    const el = document.activeElement;
    if (event.key === "Tab") leaveUntil = 0;  // moving to a box by Tab is the person's own move
    if (!el || !el.matches || el === document.body) return;
    if (event.key !== "Enter" && el.matches(PICKERS)) leaveUntil = 0;  // so is typing in one
    if (event.key === "Escape") { leave(); return; }
    if (event.key === "Enter" && el.matches(PICKERS)) leaveAfterPick();
  }, true);
})();
</script>"""

db, user = database(), current_user()
require_role(user, *RAW_TEXT_ROLES)
minutes = load_config().claim_minutes
st.title("Review scrubs")
st.caption(
    "Compare raw and scrubbed text, fix what the scrubber missed or over-redacted, then sign off. "
    "Only approved traces reach labelers. The scrub you see is held for you alone for "
    f"{minutes} minutes."
)


def _flash(kind: str, message: str) -> None:
    st.session_state["review_flash"] = (kind, message)


def _act(action, *args, done: str | None = None, clear: str | None = None) -> None:
    """Run a library action from a button callback, bound to the scrub the button was shown with.

    Callbacks may run in another thread than the script run that drew the button: own connection."""
    try:
        action(database(), user, *args)
    except FlywheelError as error:
        _flash("error", md(error))
        return
    if done:
        _flash("success", done)
    if clear:
        st.session_state.pop(clear, None)


def _decide(action, scrub_id: int, done: str) -> None:
    st.session_state.pop("review_reject", None)
    _act(action, scrub_id, st.session_state.get(f"note_{scrub_id}", ""), done=done)


def _ask_reject(scrub_id: int) -> None:
    # One key (X) must not drop a trace for good: rejecting takes a second, deliberate click.
    st.session_state["review_reject"] = scrub_id


def _cancel_reject() -> None:
    st.session_state.pop("review_reject", None)


def _jump() -> None:
    chosen = st.session_state.get("review_jump")
    st.session_state["review_jump"] = None
    if chosen is not None:
        _act(functools.partial(claim_scrub, minutes=minutes), chosen)


kind, message = st.session_state.pop("review_flash", (None, None))
if kind == "error":
    st.error(message)
elif kind == "success":
    st.toast(message)

counts = scrub_counts(db)
st.markdown(
    f"**{counts['pending']:,}** pending · **{counts['approved']:,}** approved · "
    f"**{counts['rejected']:,}** rejected"
)


def _texts(view, scrub_id: int) -> None:
    """Raw beside scrubbed, every field with its role; headers stay put while a long trace scrolls."""
    head_left, head_right = st.columns(2)
    head_left.markdown("**Raw**")
    head_right.markdown("**Scrubbed**")
    size = sum(len(f.raw) for f in view.fields)
    with st.container(height=560 if size > LONG_TRACE else "content", border=False, key=f"texts_{scrub_id}"):
        for field in view.fields:
            where = field.name + (f" · {md(field.role)}" if field.role else "")
            hidden = invisible_counts(field.raw)
            if hidden:
                names = ", ".join(f"{name} ×{n}" for name, n in hidden.items())
                where += f" · invisible characters, boxed in red: {names}"
            left, right = st.columns(2)
            with left.container(border=True):
                st.caption(where)
                # st.html: the escaped markup is shown as it is, with no Markdown pass over trace text.
                st.html(highlight_html(field.raw, field.redactions))
            with right.container(border=True):
                st.caption(where)
                st.html(highlight_html(field.raw, field.redactions, scrubbed=True))


def _actions(view, scrub_id: int) -> None:
    """Approve / reject / skip, above the text so they are reachable without scrolling past it."""
    note_col, approve, reject, skip = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
    note_col.text_input("Note (optional)", key=f"note_{scrub_id}")
    approve.button(
        "Approve",
        type="primary",
        shortcut="a",
        width="stretch",
        on_click=_decide,
        args=(approve_scrub, scrub_id, f"Approved trace {md(view.trace_id)}"),
    )
    reject.button("Reject", shortcut="x", width="stretch", on_click=_ask_reject, args=(scrub_id,))
    skip.button(
        "Skip for now",
        shortcut="n",
        width="stretch",
        on_click=_act,
        args=(skip_scrub, scrub_id),
        kwargs={"done": f"Skipped trace {md(view.trace_id)}; it stays skipped for you"},
    )
    if st.session_state.get("review_reject") == scrub_id:
        _confirm_reject(view, scrub_id)


def _confirm_reject(view, scrub_id: int) -> None:
    with st.container(border=True, key=f"confirm_reject_{scrub_id}"):
        st.warning(
            f"Reject trace {md(view.trace_id)}? It will never reach labelers, unless a lead or you reopen"
            " the scrub."
        )
        yes, no = st.columns(2)
        done = f"Rejected trace {md(view.trace_id)}: it will never reach labelers"
        yes.button("Yes, reject", type="primary", on_click=_decide, args=(reject_scrub, scrub_id, done))
        no.button("Cancel", on_click=_cancel_reject)


def _add_form(scrub_id: int) -> None:
    with st.form("add_redaction", clear_on_submit=True, border=True):
        st.markdown("**Add a missed redaction**: every uncovered occurrence in this trace is redacted.")
        text_col, label_col, button_col = st.columns([3, 1, 1], vertical_alignment="bottom")
        missed = text_col.text_input("Text the scrubber missed", key="redaction_text")
        label = label_col.selectbox("Class", LABELS, key="redaction_label")
        if button_col.form_submit_button("Add redaction") and missed.strip():
            try:
                added = add_redaction_text(db, user, scrub_id, missed, label)
            except BadInput as error:  # a typo must not take the rest of the card away
                st.error(md(error))
            except FlywheelError as error:
                st.error(md(error))
            else:
                st.toast(f"Redacted {added} occurrence(s) as {label}")
                st.rerun()


def _redactions(view, scrub_id: int) -> None:
    """The redactions, chosen by id (never by row position) to remove or to give another class."""
    spans = {
        r["id"]: {**r, "field": f.name, "text": f.raw[r["start"] : r["end"]]}
        for f in view.fields
        for r in f.redactions
    }
    if not spans:
        return
    table = pd.DataFrame(spans.values())[["id", "field", "label", "detector", "text"]]
    show_table(table, hide_index=True)
    # The key follows the redactions: once one is removed or reclassified the widget is new, so the
    # browser drops chips that name redactions no longer there.
    state = repr(sorted((i, s["label"]) for i, s in spans.items())).encode()
    pick_key = f"pick_{scrub_id}_{zlib.crc32(state):08x}"
    chosen = st.multiselect(
        "Redactions to remove or reclassify",
        list(spans),
        format_func=lambda i: f"#{i} · {spans[i]['field']} · {spans[i]['label']} · {spans[i]['text'][:40]}",
        key=pick_key,
    )
    verified = [
        i
        for i in chosen
        if spans[i]["detector"] in VERIFIED_DETECTORS or spans[i]["label"] in VERIFIED_LABELS
    ]
    confirmed = False
    if verified:
        confirmed = st.checkbox(
            f"Remove {len(verified)} verified e-mail, card, phone or IBAN redaction(s): I checked they are "
            "not personal data",
            key=f"confirm_{scrub_id}",
        )
    remove_col, label_col, change_col = st.columns([2, 1, 1], vertical_alignment="bottom")
    phrases = tuple(dict.fromkeys(" ".join(spans[i]["text"].split()) for i in chosen if i not in verified))
    remove_col.button(
        f"Remove {len(chosen)} selected redaction(s)",
        disabled=not chosen or (bool(verified) and not confirmed),
        on_click=_remove,
        args=(scrub_id, tuple(chosen), confirmed, pick_key, phrases),
    )
    _never_again_offer()
    new_label = label_col.selectbox("Change to", LABELS, key=f"relabel_{scrub_id}")
    change_col.button(
        "Change class",
        disabled=not chosen,
        on_click=_relabel,
        args=(scrub_id, tuple(chosen), new_label, pick_key),
    )


def _remove(scrub_id: int, chosen: tuple, confirmed: bool, pick_key: str, phrases: tuple) -> None:
    _act(remove_redactions, scrub_id, chosen, confirmed, clear=pick_key)
    removed = st.session_state.get("review_flash", (None,))[0] != "error"
    if removed and user.role == "lead" and phrases:
        st.session_state["never_again"] = [p for p in phrases if len(p) >= 3]


def _never_again(phrase: str) -> None:
    st.session_state.pop("never_again", None)
    _act(add_never_redact, [phrase], done=f"The scrubber will leave {md(phrase)} alone from now on")


def _never_again_offer() -> None:
    """After a lead removed false redactions: leave those phrases alone in every scrub to come."""
    offered = st.session_state.get("never_again") or []
    if not offered:
        return
    with st.container(border=True, key="never_again_offer"):
        st.caption("Removed. Never redact this phrase again? (Pending scrubs are re-scrubbed on Privacy.)")
        for n, phrase in enumerate(offered):
            st.button(
                f"Never redact {md(phrase)} again",
                key=f"never_again_{n}",
                on_click=_never_again,
                args=(phrase,),
            )
        st.button(
            "No, only here", key="never_again_no", on_click=st.session_state.pop, args=("never_again", None)
        )


def _relabel(scrub_id: int, chosen: tuple[int, ...], label: str, pick_key: str) -> None:
    for redaction_id in chosen:
        _act(change_redaction_label, scrub_id, redaction_id, label, clear=pick_key)


def _review(scrub_id: int) -> None:
    view = scrub_view(db, user, scrub_id)
    progress = review_progress(db, user)
    st.subheader(f"Trace {md(view.trace_id)}")
    st.caption(
        f"Trace {progress['position']:,} of {progress['total']:,} · {progress['pending']:,} pending"
        f" · {progress['skipped']:,} skipped by you · scrub #{view.scrub_id} · scrubber"
        f" {md(view.scrubber_version)} · hover a mark for class and detector"
    )
    _actions(view, scrub_id)
    _texts(view, scrub_id)
    _add_form(scrub_id)
    _redactions(view, scrub_id)
    st.caption("Shortcuts: A approve · X reject (asks to confirm) · N skip · Esc leaves a field.")


st.html(SHORTCUT_GUARD, unsafe_allow_javascript=True)
free = review_queue(db, user, limit=500, free_only=True)
if free:
    labels = {q["scrub_id"]: q["trace_id"] for q in free}
    st.selectbox(
        f"Pending trace (jump to one; {len(free)} free, oldest first)",
        list(labels),
        index=None,
        format_func=labels.get,
        placeholder="the next one in the queue",
        key="review_jump",
        on_change=_jump,
    )
current = claim_scrub(db, user, minutes=minutes)
if current is not None:
    _review(current)
elif review_progress(db, user)["skipped"]:
    st.info("You skipped every pending scrub that nobody else holds.")
    st.button("Show skipped scrubs again", on_click=_act, args=(clear_skips,))
elif counts["pending"]:
    st.info("Every pending scrub is being reviewed by someone else right now.")
else:
    st.success("Nothing waits for review. Sampled traces appear here once scrubbed.")

with st.expander("Reopen an approved or rejected scrub"):
    st.caption(
        "Reopening sends the scrub back to review. An approved one leaves the label queue, and its labels "
        "reach no eval set until it is approved again; a rejected one gets a second look. A lead can reopen "
        "any scrub, a reviewer those they decided."
    )
    mine = reopenable_scrubs(db, user)
    if mine:
        options = {r["scrub_id"]: f"{r['trace_id']} ({r['status']} by {r['reviewed_by']})" for r in mine}
        chosen = st.selectbox("Decided scrub", list(options), format_func=options.get, key="reopen_pick")
        reason = st.text_input("Why it is reopened", key="reopen_reason")
        st.button(
            "Reopen",
            disabled=not reason.strip(),
            on_click=_act,
            args=(reopen_scrub, chosen, reason),
            kwargs={"done": "Reopened: it is back in review", "clear": "reopen_reason"},
        )
    else:
        st.caption("No approved or rejected scrub you may reopen.")

st.divider()
st.subheader("What the scrubber misses")
fixes = residue(db)
if fixes.empty:
    st.caption(
        "No reviewer fixes yet. Each added, removed or reclassified redaction is counted here by class "
        "and detector."
    )
else:
    fixes["what"] = fixes["kind"].map(RESIDUE_KINDS)
    by_class = fixes.groupby(["label", "what"], as_index=False)["fixes"].sum()
    figure = px.bar(
        by_class,
        x="label",
        y="fixes",
        color="what",
        barmode="group",
        title="Reviewer fixes by class",
        color_discrete_map=RESIDUE_COLOURS,
        category_orders={"label": list(LABELS), "what": list(RESIDUE_KINDS.values())},
        labels={"label": "class", "fixes": "fixes", "what": "fix"},
    )
    show(figure, "PII class", "Reviewer fixes (count)")
    show_table(fixes[["week", "what", "label", "detector", "fixes"]], hide_index=True)

if user.role == "lead":
    names = known_names(db, user)
    with st.expander(f"Known customer and organisation names ({len(names)})"):
        st.caption("The lookup layer replaces these with [CUSTOMER], case-insensitive, whole words.")
        added = st.text_area("Add names, one per line")
        if st.button("Add names") and added.strip():
            st.toast(f"Added {add_known_names(db, user, added.splitlines())} new name(s)")
            st.rerun()
        show_table(pd.DataFrame({"name": names}), hide_index=True)
