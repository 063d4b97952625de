import pandas as pd
import streamlit as st
from sqlite_utils import Database

from flywheel.config import load_config
from flywheel.errors import FlywheelError
from flywheel.labeling.labels import (
    ADVERSARIAL,
    Claim,
    accept_labels,
    add_siblings,
    agreement,
    annotator_stats,
    claim_next,
    edit_label,
    label_card,
    labels_to_review,
    most_used_codes,
    my_labels,
    overlap,
    progress,
    record_label,
    release_claim,
    review_step,
    set_overlap,
    set_review_step,
    skip_claim,
    undo_last_label,
)
from flywheel.labeling.taxonomy import active_entries, check_code, example_rows
from flywheel.sampling.batches import sample_batches
from flywheel.traces.queries import exchange
from flywheel.vectors.embeddings import NEEDS_REVIEW, background_encoder, month_siblings, pull_siblings
from pages._charts import show_table
from pages._ui import current_user, database, md, show_conversation, turns_text

user = current_user()
config = load_config()
st.title("Label")
SHORTCUTS = (
    "Approved, scrubbed traces, highest priority first; your item is held for you for a few minutes. "
    "Keys: K known · N new · B not a bug · H handled well (coverage) · S skip · U undo · 1–9 the most "
    "used codes (above) · / the code picker · E expected behaviour. They act only when no field or widget "
    "has focus: Esc leaves a field."
)
KINDS = {"known": "known failure", "not_a_bug": "not a bug"}
TAGS = {"none": "not adversarial", "jailbreak": "jailbreak", "prompt_injection": "prompt injection"}
TAGS["policy_override"] = "policy override"
SIGNALS = ("regenerated", "retried", "escalated", "guardrail_tripped")
# A static bar: st.progress animates every change of its value, and in the browser that animation cost
# about a quarter of drawing the next card. Only a number goes into this markup.
PROGRESS_BAR = (
    '<div role="progressbar" aria-valuenow="{pct}" aria-valuemin="0" aria-valuemax="100"'
    ' style="height:4px;border-radius:2px;background:#e6eaf1">'
    '<div style="width:{pct}%;height:4px;border-radius:2px;background:#2f6fde"></div></div>'
)
# Streamlit ignores shortcuts inside text inputs, but not on a select's clear button, a checkbox or a
# focused button, so typing there fired them. "/" and E, pressed outside any field, focus the code picker
# and the expected behaviour. This guard swallows single-key presses (shortcuts are
# letters) while a control has focus; the key still types into its field. Esc leaves the field, and a
# mouse click does not leave focus on the button or link it clicked. Focus on anything else (a click on
# the trace's text lands on its scroll box) is not typing: the shortcuts keep working there.
SHORTCUT_GUARD = """<script>
(() => {
  const clicked = document.activeElement;  // the sidebar link that brought the user here
  if (clicked && clicked.matches && clicked.matches("a, button")) clicked.blur();
  if (window.flywheelShortcutGuard) return;
  window.flywheelShortcutGuard = true;
  const CONTROLS = "input, textarea, select, button, a[href], [contenteditable=''], [contenteditable=true],"
    + " [role=combobox], [role=listbox], [role=option], [role=checkbox], [role=radio], [role=switch],"
    + " [role=slider], [role=spinbutton], [role=textbox], [role=menuitem], [role=tab]";
  // "/" and E take the labeler to the code picker and the expected behaviour without the mouse
  const FOCUS_KEYS = {
    "/": 'input[aria-label^="Failure code (type to search"]',
    "e": 'input[aria-label="Expected behaviour"]',
  };
  const typing = () => {
    const el = document.activeElement;
    return Boolean(el && el.matches && el.matches(CONTROLS));
  };
  window.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const el = document.activeElement;
    const field = !typing() && FOCUS_KEYS[event.key.toLowerCase()];
    if (field) {
      const target = document.querySelector(field);
      if (target) {
        event.preventDefault();  // the key picks the field; it is not typed into it
        event.stopImmediatePropagation();
        target.focus();
        return;
      }
    }
    if (!typing()) {
      // focus on a box of text (not a control): hand it back to the page so the shortcut reaches it
      if (el && el !== document.body && el.blur && event.key.length === 1) el.blur();
      return;
    }
    if (event.key === "Escape") { el.blur(); return; }
    if (event.key.length === 1) event.stopImmediatePropagation();
  }, true);
  window.addEventListener("click", (event) => {
    const target = event.target.closest && event.target.closest("a, button");
    if (target && event.detail > 0) setTimeout(() => target.blur(), 0);
  }, true);
})();
</script>"""


def _act(action, *args, error_key: str = "label_error", **kwargs):
    """Run a library action from a button callback; its error shows on the card (or where ``error_key``
    is read)."""
    try:
        result = action(database(), user, *args, **kwargs)
    except FlywheelError as error:
        st.session_state[error_key] = {"message": str(error), "claim_id": None}
        return None
    st.session_state.pop("label_error", None)
    st.session_state.pop("label_notice", None)
    return result


def _say(message: str) -> None:
    """Remember a confirmation for the card to show (callbacks may not draw elements themselves)."""
    st.session_state["label_toast"] = message


def _field(name: str, default: object = None) -> object:
    """The value of one of the shown card's fields."""
    return st.session_state.get(_key(name), default)


def _known(claim: Claim) -> None:
    code = _field("code")
    done = _act(
        record_label,
        claim,
        "known",
        code=code,
        expected=_field("expected"),
        pass_criterion=_field("pass"),
        adversarial=_field("tag", "none"),
        pass_check=_field("check"),
    )
    if done:
        _say(f"{md(claim.trace_id)}: {md(code)}")


def _not_a_bug(claim: Claim) -> None:
    done = _act(record_label, claim, "not_a_bug", note=_field("note"), adversarial=_field("tag", "none"))
    if done:
        _say(f"{md(claim.trace_id)}: not a bug")


def _coverage(claim: Claim) -> None:
    done = _act(
        record_label,
        claim,
        "not_a_bug",
        coverage=True,
        expected=_field("expected"),
        pass_criterion=_field("pass"),
        pass_check=_field("check"),
        note=_field("note"),
        adversarial=_field("tag", "none"),
    )
    if done:
        _say(f"{md(claim.trace_id)}: handled well, added as coverage")


def _new(claim: Claim) -> None:
    code = _field("new_code")
    label_id = _act(
        record_label,
        claim,
        "new",
        code=code,
        name=_field("new_name"),
        definition=_field("new_definition"),
        expected=_field("expected"),
        pass_criterion=_field("pass"),
        adversarial=_field("tag", "none"),
        pass_check=_field("check"),
    )
    if label_id:
        st.session_state["siblings_for"] = {
            "label_id": label_id,
            "trace_id": claim.trace_id,
            "code": check_code(code),
        }
        st.session_state.pop("new_for", None)


def _skip(claim: Claim) -> None:
    if _act(skip_claim, claim) is None and "label_error" not in st.session_state:
        _say(f"Skipped {md(claim.trace_id)}: it goes to the others, and back to you only at the end")


def _release(claim: Claim) -> None:
    if _act(release_claim, claim) is None and "label_error" not in st.session_state:
        st.session_state["label_paused"] = True


def _undo() -> None:
    st.session_state.pop("siblings_for", None)
    st.session_state.pop("label_paused", None)
    undone = _act(undo_last_label, minutes=config.claim_minutes)
    if undone is not None:
        st.session_state["label_notice"] = undone.describe()


def _add_siblings(label_id: int, picked: list[str], code: str) -> None:
    added = _act(add_siblings, label_id, picked)
    if added is not None:
        _say(f"Added {len(added)} sibling(s) to {md(code)}")
        st.session_state.pop("siblings_for", None)


def _send_siblings(anchor: str, trace_ids: list[str]) -> None:
    batch_id = _act(pull_siblings, anchor, trace_ids)
    if batch_id is not None:
        _say(f"Siblings sent for review in batch {batch_id}")
    elif "label_error" not in st.session_state:
        _say("They are already in a batch, waiting for review")


def _signals(view: dict) -> None:
    s = view["signals"]
    parts = [s["ts"][:16].replace("T", " "), s["cohort"], s["intent"]]
    parts += ["thumbs down" if s["thumbs"] == "down" else None]
    parts += [name.replace("_", " ") for name in SIGNALS if s[name]]
    parts += ["schema invalid" if s["schema_valid"] == 0 else None]
    parts += [f"judge {s['judge_score']:.2f}" if s["judge_score"] is not None else None]
    parts += [f"{s['turns']} turn{'s' if s['turns'] != 1 else ''}" if s["turns"] else None]
    st.text(" · ".join(p for p in parts if p))
    if view["reasons"]:
        st.text("Sampled for: " + ", ".join(view["reasons"]))


def _progress(db: Database, claim: Claim) -> None:
    p = progress(db, user, claim.batch_id)
    where = f"Batch {claim.batch_id}" if claim.batch_id is not None else "Traces in no batch"
    others = ", ".join(f"{md(name)} {n}" for name, n in p["per_labeler"].items())
    st.html(PROGRESS_BAR.format(pct=round(100 * p["done"] / p["items"]) if p["items"] else 0))
    by_whom = f"labels by {others}" if others else "no labels yet"
    st.caption(f"{where}: {p['done']} done / {p['left']} left · you {p['mine']} · {by_whom}")


def _form(db: Database, claim: Claim, proposed: str | None = None) -> None:
    """The form, in tab order: code, expected behaviour, pass criterion, the actions, then note and tag."""
    entries = active_entries(db)
    # required: no clear button, so Tab goes from the picker straight to the next field
    code = st.selectbox(
        "Failure code (type to search, Enter to pick)",
        list(entries),
        index=None,
        required=True,
        format_func=lambda c: f"{c} — {entries[c]['name']}",
        placeholder="Pick a known failure mode, or press 1–9",
        key=_key("code"),
    )
    # one slot whether or not a code is picked: what follows keeps its place while the card redraws, so
    # the previous draw's buttons are replaced, never shown beside the new ones
    guideline = st.empty()
    if code in entries:
        with guideline:
            _guideline(code, entries[code])
    st.text_input("Expected behaviour", key=_key("expected"), placeholder="What the assistant should do")
    st.text_input("Pass criterion", key=_key("pass"), placeholder="What a correct answer must do")
    new_form = st.container()
    if st.session_state.get("new_for") == st.session_state.get("card_serial"):
        with new_form:
            _new_form(claim)
    actions = st.container(horizontal=True, gap="small")
    actions.button("Known failure", shortcut="k", on_click=_known, args=(claim,), type="primary")
    actions.button("New failure", shortcut="n", on_click=_open_new)
    actions.button("Not a bug", shortcut="b", on_click=_not_a_bug, args=(claim,))
    actions.button(
        "Handled well — add as coverage",
        shortcut="h",
        on_click=_coverage,
        args=(claim,),
        type="primary" if proposed == "coverage" else "secondary",
        key="coverage",
    )
    actions.button("Skip", shortcut="s", on_click=_skip, args=(claim,))
    actions.button("Undo", shortcut="u", on_click=_undo)
    actions.button("Release this trace and pause", on_click=_release, args=(claim,), type="tertiary")
    if proposed == "coverage":
        st.caption(
            "Drift sent this trace: traffic the eval set does not cover yet. If it was handled well, keep it."
        )
    note, tag = st.columns([3, 2])
    note.text_input("Note (optional, for not a bug)", key=_key("note"))
    tag.selectbox("Adversarial", ADVERSARIAL, format_func=TAGS.get, key=_key("tag"))
    st.text_input(
        "Code check (optional)",
        key=_key("check"),
        placeholder="contains: fee schedule · not-contains: … · regex: … · is-json · tool-call: name",
        help="An objective criterion, graded by code instead of a judge. Also equals: …, json-schema: {…}.",
    )
    _number_keys(db, entries)
    if code in entries:
        _examples(db, code)


def _number_keys(db: Database, entries: dict) -> None:
    """Keys 1–9 pick the most used codes; the order follows use, so it stays put within a session."""
    codes = [c for c in most_used_codes(db) if c in entries]
    if not codes:
        return
    keys = st.container(horizontal=True, gap="small")
    for n, code in enumerate(codes, start=1):
        keys.button(
            code,
            shortcut=str(n),
            on_click=_pick,
            args=(code,),
            type="tertiary",
            help=f"Key {n}: {entries[code]['name']}",
            key=f"pick_{code}",
        )


def _pick(code: str) -> None:
    st.session_state[_key("code")] = code


def _guideline(code: str, entry: dict) -> None:
    """The chosen code's definition, right under the picker: beside the trace on a laptop screen, and no
    stop for Tab on the way from the picker to the expected behaviour."""
    with st.container(border=True):
        st.caption(f"Guideline · **{md(code)} — {md(entry['name'])}**  \n{md(entry['definition'])}")


def _examples(db: Database, code: str) -> None:
    """How others used the chosen code: its newest labels with their (approved, scrubbed) exchanges."""
    examples = example_rows(db, user, code, limit=3)
    if examples:
        with st.expander(md(f"Labeled examples of {code} ({len(examples)})")):
            for example in examples:
                st.text(turns_text(example["turns"])[:600])
                st.caption(md(f"Expected: {example['expected'] or '—'}"))


def _recent(db: Database) -> None:
    """The labeler's recent labels; any one of them can be corrected (a folded one changes next version)."""
    recent = my_labels(db, user, limit=20)
    with st.expander(f"My recent labels ({len(recent)})"):
        if not recent:
            st.caption("No labels yet.")
            return
        table = [
            {"trace": r["trace_id"], "label": KINDS.get(r["kind"], r["kind"]), "code": r["code"],
             "at": r["created_at"][:16].replace("T", " ")}
            for r in recent
        ]  # fmt: skip
        show_table(pd.DataFrame(table), hide_index=True, height=180)
        by_id = {r["id"]: r for r in recent}
        label_id = st.selectbox(
            "Label to edit",
            list(by_id),
            index=None,
            format_func=lambda i: (
                f"{by_id[i]['trace_id']} · {KINDS.get(by_id[i]['kind'], '')} {by_id[i]['code'] or ''}"
            ),
            key="edit_pick",
        )
        if label_id is not None:
            _edit_fields(db, by_id[label_id], "edit")


def _edit_fields(db: Database, label: dict, prefix: str) -> None:
    """Fields for one label, prefilled; keyed by the label's id so another label never inherits them."""
    entries = active_entries(db)
    key = f"{prefix}_{label['id']}"
    kind = st.radio(
        "Kind", list(KINDS), format_func=KINDS.get, horizontal=True, key=f"{key}_kind",
        index=0 if label["kind"] != "not_a_bug" else 1,
    )  # fmt: skip
    codes = list(entries)
    st.selectbox(
        "Code", codes, index=codes.index(label["code"]) if label["code"] in entries else None,
        format_func=lambda c: f"{c} — {entries[c]['name']}", key=f"{key}_code", disabled=kind != "known",
    )  # fmt: skip
    st.text_input("Expected", value=label["expected"] or "", key=f"{key}_expected")
    st.text_input("Criterion", value=label["pass_criterion"] or "", key=f"{key}_pass")
    st.text_input("Note", value=label["note"] or "", key=f"{key}_note")
    st.selectbox(
        "Tag", ADVERSARIAL, index=ADVERSARIAL.index(label["adversarial"]), format_func=TAGS.get,
        key=f"{key}_tag",
    )  # fmt: skip
    what = "Save correction" if prefix == "review" else "Save edit"
    where = "review_error" if prefix == "review" else "label_error"
    st.button(what, on_click=_save_edit, args=(label["id"], key, where), key=f"{key}_save")


def _save_edit(label_id: int, key: str, where: str) -> None:
    """Save the fields as they are now: a button's args were fixed before the last keystrokes."""
    state = st.session_state
    failure = state[f"{key}_kind"] == "known"
    done = _act(
        edit_label,
        label_id,
        state[f"{key}_kind"],
        code=state.get(f"{key}_code") if failure else None,
        expected=state.get(f"{key}_expected") if failure else None,
        pass_criterion=state.get(f"{key}_pass") if failure else None,
        note=state.get(f"{key}_note"),
        adversarial=state.get(f"{key}_tag", "none"),
        error_key=where,
    )
    if done:
        state.pop("edit_pick", None)
        notice = f"Saved: label {label_id} is now label {done}"
        if where == "label_error":
            _say(notice)
        else:
            state["review_notice"] = notice


def _open_new() -> None:
    st.session_state["new_for"] = st.session_state.get("card_serial")


def _new_form(claim: Claim) -> None:
    with st.container(border=True):
        st.markdown("**New failure mode**")
        left, right = st.columns([1, 2])
        left.text_input("Code", key=_key("new_code"), placeholder="e.g. STALE_EXCHANGE_RATE")
        right.text_input("Name", key=_key("new_name"), placeholder="e.g. Stale exchange rate")
        st.text_area(
            "Definition (two sentences: what it is, how to recognise it)",
            key=_key("new_definition"),
            height=80,
        )
        st.caption("The expected behaviour and pass criterion above are needed too.")
        st.button("Create code and label", on_click=_new, args=(claim,), type="primary")


def _siblings_panel(db: Database, pending: dict) -> None:
    code = pending["code"]
    st.subheader(f"Siblings for {md(code)}")
    st.caption(
        "The most similar traces of the last month, sampled or not. Tick 3–5 approved ones that show the "
        "same failure — the same mistake in the reply, not only the same question. A trace no reviewer "
        "has approved shows no text: send it for review, and it reaches the queue once approved."
    )
    # the worker's model, so a request does not load a second copy of it
    encoder = background_encoder(config)
    rows = month_siblings(db, user, pending["trace_id"], limit=10, encoder=encoder)
    picked = []
    for row in (r for r in rows if r["status"] == "approved"):
        labelled = f" · labeled {', '.join(row['labels'])}" if row["labels"] else ""
        with st.container(border=True):
            if st.checkbox(
                md(f"{row['trace_id']} · similarity {row['similarity']:.2f}{labelled}"),
                key=f"sib_{pending['label_id']}_{row['trace_id']}",
            ):
                picked.append(row["trace_id"])
            st.text(turns_text(row["turns"]))
    # never their text: no reviewer has signed off what it would show
    unreviewed = [r["trace_id"] for r in rows if r["status"] == NEEDS_REVIEW]
    for row in (r for r in rows if r["status"] == NEEDS_REVIEW):
        st.text(f"{NEEDS_REVIEW}: {row['trace_id']}, similarity {row['similarity']:.2f}")
    if not rows:
        st.info("No traces of the last month to compare with.")
    add, send, done = st.columns(3)
    add.button(
        f"Add {len(picked)} selected to {md(code)}",
        on_click=_add_siblings,
        args=(pending["label_id"], picked, code),
        disabled=not picked,
        type="primary",
        width="stretch",
    )
    send.button(
        f"Send {len(unreviewed)} for review as siblings",
        on_click=_send_siblings,
        args=(pending["trace_id"], unreviewed),
        disabled=not unreviewed,
        width="stretch",
    )
    done.button(
        "Done", shortcut="d", on_click=st.session_state.pop, args=("siblings_for", None), width="stretch"
    )


def _messages(claim_id: int | None) -> None:
    """The last refusal and undo notice; a refusal belongs to the card it was shown on and goes with it."""
    state = st.session_state
    error = state.get("label_error")
    if error is not None:
        if error["claim_id"] is None:
            error["claim_id"] = claim_id
        if error["claim_id"] == claim_id:
            st.error(md(error["message"]))
        else:
            state.pop("label_error")
    if "label_notice" in state:
        st.info(md(state["label_notice"]))
    if "label_toast" in state:
        st.toast(state.pop("label_toast"))


def _paused() -> None:
    st.info("You hold no trace. The one you released is back in the queue for everyone.")
    st.button("Resume labeling", on_click=st.session_state.pop, args=("label_paused", None), type="primary")


def _key(name: str) -> str:
    """The widget key of one of the shown card's fields.

    Each card's fields are widgets of their own: the key carries the card's serial number, so a new card's
    fields start empty in the browser as well as on the server. With one key for every card, clearing
    the server's state was not enough: the browser kept the previous card's values in the same widgets
    and sent them back with the next click, and they were saved onto the next trace."""
    return f"card_{name}_{st.session_state.get('card_serial', 0)}"


def _show_card_for(claim_id: int | None) -> None:
    """Start a new card (a new serial, so new, empty widgets) whenever another claim is shown, including
    the same trace shown again after an undo; the fields of earlier cards are forgotten."""
    state = st.session_state
    if state.get("card_claim") == claim_id and "card_serial" in state:
        return
    state["card_serial"] = state.get("card_serial", 0) + 1
    state["card_claim"] = claim_id
    current = f"_{state['card_serial']}"
    for key in [k for k in state if isinstance(k, str) and k.startswith("card_")]:
        if key not in ("card_serial", "card_claim") and not key.endswith(current):
            del state[key]


def _start() -> None:
    st.session_state["labeling"] = True


def _not_started() -> None:
    """Leads and reviewers open this page for its settings too: nothing is claimed until they start."""
    st.info("You hold no trace. Start labeling to be given the next one; until then nobody's queue changes.")
    st.button("Start labeling", on_click=_start, type="primary")


@st.fragment
def card() -> None:
    """The label card: a click redraws only this, never the rest of the page.

    Each part is drawn in a slot of its own, so every widget keeps its place from one card to the next:
    while the next card is drawn, the previous card's stale picker is replaced in place rather than left
    standing beside the new one."""
    db = database()
    notices, form = st.container(), st.container()
    # two columns: the trace on the left, the form on the right, so both fit on a laptop screen and the
    # code list opens over the form, not over the trace
    trace_side, form_side = st.columns(2, gap="medium")
    head, body, side = trace_side.container(), trace_side.container(), form_side.container()
    if "siblings_for" in st.session_state:
        with notices:
            _messages(None)
        with form:
            _siblings_panel(db, st.session_state["siblings_for"])
        return
    if st.session_state.get("label_paused"):
        with notices:
            _messages(None)
        with form:
            _paused()
        return
    if user.role != "labeler" and not st.session_state.get("labeling"):
        with form:
            _not_started()
        return
    claim = claim_next(db, user, minutes=config.claim_minutes)
    _show_card_for(claim.claim_id if claim else None)
    with notices:
        _messages(claim.claim_id if claim else None)
    if claim is None:
        with form:
            st.success("Nothing left to label. Approved scrubs appear here as reviewers sign them off.")
            st.button("Undo my last label", shortcut="u", on_click=_undo)
            _recent(db)
        return
    view = label_card(db, user, claim)
    with head:
        _progress(db, claim)
        st.subheader(f"Trace {md(claim.trace_id)}")
        _signals(view)
    with body:
        show_conversation(view)
    with side:
        _form(db, claim, view.get("proposed"))
        st.caption(SHORTCUTS)
        _recent(db)


st.html(SHORTCUT_GUARD, unsafe_allow_javascript=True)
card()


def _labelers(db: Database) -> None:
    st.subheader("Labelers")
    stats = annotator_stats(db, user)
    if not stats:
        st.caption("No labels yet.")
        return
    st.caption(
        "Per labeler: live labels, those made in the last 7 days and labels per hour of labeling (a pause of"
        " over 10 minutes ends a session), edits, labels a lead corrected, labels undone, labels waiting"
        " for review."
    )
    frame = pd.DataFrame(stats)
    if "per_hour" in frame:
        frame["per_hour"] = frame["per_hour"].map(lambda v: "" if v is None or v != v else f"{v:.1f}")
    show_table(frame.rename(columns={"per_hour": "labels per hour"}), hide_index=True)


def _accept(label_ids: list[int]) -> None:
    accepted = _act(accept_labels, label_ids, error_key="review_error")
    if accepted is not None:
        st.session_state["review_notice"] = f"Accepted {accepted} label(s): they fold with the next fold-in"


def _review(db: Database) -> None:
    st.subheader("Review before folding")
    on = review_step(db)
    wanted = st.toggle("Labels fold only after a lead accepts or corrects them", value=on, key="review_on")
    if wanted != on:
        set_review_step(db, user, wanted)
        st.toast("The review step is on" if wanted else "The review step is off: agreed labels fold")
        on = wanted
    if not on:
        st.caption("Off: agreed labels fold as they are.")
        return
    waiting = labels_to_review(db, user, limit=10)
    if "review_error" in st.session_state:
        st.error(md(st.session_state.pop("review_error")["message"]))
    if "review_notice" in st.session_state:
        st.success(st.session_state.pop("review_notice"))
    if not waiting:
        st.caption("No label is waiting for review.")
        return
    st.caption(f"Oldest first; {len(waiting)} shown. A correction keeps the label under its labeler's name.")
    st.button(
        f"Accept all {len(waiting)} shown",
        on_click=_accept,
        args=([w["id"] for w in waiting],),
        key="accept_all",
    )
    for label in waiting:
        with st.container(border=True):
            what = KINDS.get(label["kind"], label["kind"]) + (f" {label['code']}" if label["code"] else "")
            st.text(f"{label['trace_id']} · {label['labeler']} · {what}")
            if label["scrub"]:  # the reply being judged in full; earlier turns one click away
                turns = exchange(label["scrub"])
                if len(turns) > 2:
                    with st.expander(f"{len(turns) - 2} earlier turn(s)"):
                        st.text(turns_text(turns[:-2]))
                st.text(turns_text(turns[-2:]))
            if label["expected"] or label["note"]:
                st.text(f"Expected: {label['expected'] or '—'}\nCriterion: {label['pass_criterion'] or '—'}"
                        f"\nNote: {label['note'] or '—'}")  # fmt: skip
            st.button("Accept", on_click=_accept, args=([label["id"]],), key=f"accept_{label['id']}")
            with st.expander("Correct"):
                _edit_fields(db, label, "review")


if user.role == "lead":
    db = database()
    st.divider()
    st.subheader("Overlap and agreement")
    batches = {b["id"]: b for b in sample_batches(db)}
    if batches:
        batch_id = st.selectbox("Batch", list(batches), format_func=lambda b: f"#{b} · {batches[b]['week']}")
        wanted = st.number_input("Labels per item", 1, 5, overlap(db, batch_id), key=f"overlap_{batch_id}")
        if st.button("Set labels per item") and wanted != overlap(db, batch_id):
            set_overlap(db, user, batch_id, int(wanted))
            st.rerun()
        result = agreement(db, user, batch_id)
        if result.method is None:
            st.caption("No item of this batch has two labels yet.")
        else:
            st.metric(f"{result.method.title()}'s kappa over {result.items} items", f"{result.kappa:.2f}")
            show_table(
                {"code or kind": list(result.per_category), "kappa": list(result.per_category.values())}
            )
    else:
        st.caption("No sample batches yet.")
    _labelers(db)
    _review(db)
