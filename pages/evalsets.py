import pandas as pd
import streamlit as st

from flywheel.auth import require_role
from flywheel.config import load_config
from flywheel.errors import FlywheelError
from flywheel.evals import exports, runs
from flywheel.evals import versions as evalsets
from pages._charts import show_table
from pages._ui import current_user, database, md

db, user = database(), current_user()
require_role(user, "lead")
st.title("Eval sets")
st.caption(
    "Labeled production failures (and traces handled well, proposed as coverage) become eval rows. "
    "Every fold-in or import makes a new immutable version of its set; retired rows move to an archive "
    "and are never deleted. A frozen set never changes."
)


FLASH = "evalsets_flash"
PREVIEW_COLUMNS = [
    "key", "foldable", "blocked", "trace_id", "row_id", "replaces", "input", "expected", "criterion",
    "code", "coverage", "check", "adversarial", "labeled_by", "labelers", "agreement", "reason",
    "left_out_reason", "left_out_by", "left_out_at",
]  # fmt: skip


def _error(error: FlywheelError) -> None:
    st.error(md(error))


def _rows_table(rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    columns = ["id", "state", "code", "coverage", "adversarial_kind", "input", "expected", "criterion"]
    columns += ["pass_check", "source"]
    columns.append("trace_id")
    show_table(frame[[c for c in columns if c in frame]], hide_index=True)


def _reason_key(item: str) -> str:
    return f"leave_reason_{item}"


def _fold(fingerprint: str) -> None:
    """Fold exactly the preview the lead read: the fingerprint bound when the button was drawn."""
    picked = st.session_state.get("fold_leave_out") or []
    reasons = {item: st.session_state.get(_reason_key(item), "") for item in picked}
    note = st.session_state.get("fold_note") or None
    try:
        change = evalsets.fold_in(
            database(),
            current_user(),
            note=note,
            fingerprint=fingerprint,
            leave_out=reasons,
            eval_set=st.session_state.get("evalset_name"),
        )
    except FlywheelError as error:
        st.session_state[FLASH] = ("error", md(error))
    else:
        st.session_state[FLASH] = ("success" if change.created else "info", change.summary())
        st.session_state["fold_leave_out"] = []


def _withdraw() -> None:
    row_id = st.session_state.get("withdraw_row")
    reason = st.session_state.get("withdraw_reason", "")
    try:
        change = evalsets.withdraw_row(
            database(), current_user(), row_id, reason, eval_set=st.session_state.get("evalset_name")
        )
    except FlywheelError as error:
        st.session_state[FLASH] = ("error", md(error))
    else:
        st.session_state[FLASH] = ("success", f"withdrew {md(row_id)}: {change.summary()}")
        st.session_state["withdraw_reason"] = ""
        st.session_state.pop("withdraw_row", None)


def _flash() -> None:
    kind, message = st.session_state.pop(FLASH, (None, None))
    if kind:
        getattr(st, kind)(message)


def _preview_table(preview: evalsets.FoldPreview) -> None:
    frame = pd.DataFrame([item.as_dict() for item in preview.items])
    frame["foldable"] = frame["foldable"].map({True: "yes", False: "no"})
    show_table(frame[PREVIEW_COLUMNS], hide_index=True)


def _diff_tables(diff: dict) -> None:
    content = diff["content"]
    if not any(content.values()):
        st.caption("No difference: the two versions hold the same rows.")
    for name in ("added", "retired", "withdrawn"):
        if content[name]:
            st.subheader(f"{name.capitalize()} ({len(content[name])})")
            show_table(pd.DataFrame(content[name]), hide_index=True)
    if content["changed"]:
        st.subheader(f"Changed ({len(content['changed'])})")
        changes = [
            {"from": c["from"], "to": c["to"], "trace_id": c["trace_id"], **field}
            for c in content["changed"]
            for field in c["fields"]
        ]
        show_table(pd.DataFrame(changes), hide_index=True)


def _create_set() -> None:
    try:
        name = evalsets.create_eval_set(
            database(),
            current_user(),
            st.session_state.get("new_set_name", ""),
            st.session_state.get("new_set_note"),
        )
    except FlywheelError as error:
        st.session_state[FLASH] = ("error", md(error))
    else:
        st.session_state[FLASH] = ("success", f"eval set {md(name)} created: import or fold rows into it")
        st.session_state["evalset_name"] = name


def _freeze_set(name: str) -> None:
    try:
        evalsets.freeze_eval_set(database(), current_user(), name)
    except FlywheelError as error:
        st.session_state[FLASH] = ("error", md(error))
    else:
        st.session_state[FLASH] = ("success", f"eval set {md(name)} is frozen: it never changes again")


def _sets_tab(sets: list[dict], chosen: str | None) -> None:
    st.write(
        "Each set is its own lineage of versions. A *frozen* set (e.g. a regression set) never changes: "
        "nothing is folded in, edited, withdrawn or retired. Version numbers are unique across sets."
    )
    if sets:
        show_table(pd.DataFrame(sets), hide_index=True)
    left, right = st.columns(2)
    left.text_input("New set name (a-z, 0-9, - and _)", key="new_set_name")
    right.text_input("What it is for", key="new_set_note")
    st.button("Create set", key="create_set", on_click=_create_set)
    if chosen is not None and not evalsets.is_frozen(db, chosen):
        sure = st.checkbox(f"Freeze {md(chosen)} for good: it will never change again", key="freeze_sure")
        st.button("Freeze", key="freeze_set", on_click=_freeze_set, args=(chosen,), disabled=not sure)


_flash()
sets = evalsets.eval_sets(db)
names = [s["name"] for s in sets]
chosen = None
if names:
    frozen = {s["name"]: s["frozen"] for s in sets}
    if st.session_state.get("evalset_name") not in names:  # first the set that is refreshed
        st.session_state["evalset_name"] = next((n for n in names if not frozen[n]), names[0])
    chosen = st.selectbox(
        "Eval set", names, format_func=lambda n: f"{n} (frozen)" if frozen[n] else n, key="evalset_name"
    )
version = evalsets.current_version(db, chosen) if chosen else None
locked = chosen is not None and evalsets.is_frozen(db, chosen)
preview = None if locked else evalsets.fold_preview(db, eval_set=chosen)
cols = st.columns(4)
cols[0].metric("Current version", version or "none")
if version is not None:
    members = evalsets.version_rows(db, version, include_archive=True)
    cols[1].metric("Active rows", sum(r["state"] == "active" for r in members))
    cols[2].metric("Archived rows", sum(r["state"] == "archived" for r in members))
cols[3].metric("Labeled rows waiting", preview.count("add") if preview else 0)

fold, starter, history, withdraw, export, retire, sets_tab = st.tabs(
    ["Fold in", "Import starter suite", "Versions and diff", "Withdraw", "Export", "Retirement", "Sets"]
)

with sets_tab:
    _sets_tab(sets, chosen)

with fold:
    if preview is None:
        st.info(f"{md(chosen)} is frozen: it takes no new rows. Pick a set that is not frozen to fold in.")
    else:
        st.write(
            f"The next version would add {preview.count('add')} rows, change {preview.count('change')}, "
            f"retire {preview.count('retire')} and withdraw {preview.count('withdraw')}; "
            f"{len(preview.blocked)} rows are not foldable. The fold writes exactly the rows below."
        )
        if not preview.items:
            st.info(
                "Nothing to fold in: no labeled failure or coverage row, edit, retirement or withdrawal"
                " is waiting."
            )
        else:
            _preview_table(preview)
            keys = [item.key for item in preview.foldable]
            # a pick from an older preview that is no longer proposed cannot stay picked
            st.session_state["fold_leave_out"] = [
                k for k in st.session_state.get("fold_leave_out") or [] if k in keys
            ]
            picked = st.multiselect(
                "Leave out of this fold (they stay waiting)",
                keys,
                key="fold_leave_out",
            )
            for item in picked:
                st.text_input(f"Why leave out {md(item)}", key=_reason_key(item))
        st.text_input("Note for the new version", key="fold_note")
        st.button(
            "Fold in",
            type="primary",
            key="fold_in",
            on_click=_fold,
            args=(preview.fingerprint,),
            disabled=not preview.foldable,
        )
        open_ = evalsets.disagreements(db)
        st.subheader(f"Disagreements to settle ({len(open_)})")
        if not open_:
            st.caption("Labelers agree on every trace they both labeled.")
        for item in open_[:20]:
            with st.container(border=True):
                st.text(f"Trace {item['trace_id']}")
                show_table(pd.DataFrame(item["labels"]), hide_index=True)
                choices = {label["id"]: label for label in item["labels"]}
                picked = st.selectbox(
                    "Fold which label",
                    [None, *choices],
                    key=f"settle_{item['trace_id']}",
                    format_func=lambda i, c=choices: (
                        "keep it out" if i is None else f"{c[i]['labeler']}: {c[i]['code'] or c[i]['kind']}"
                    ),
                )
                if st.button("Settle", key=f"settle_btn_{item['trace_id']}"):
                    try:
                        evalsets.settle_disagreement(db, user, item["trace_id"], picked)
                    except FlywheelError as error:
                        _error(error)
                    else:
                        st.rerun()

with starter:
    st.write(
        "A CSV or JSONL file with `input` (required), `expected`, `criterion`, `check` (a code check such "
        "as `contains: fee schedule`), `code`, `adversarial`, `tags` and `id`. A file with any bad row is "
        "refused whole, with every bad row listed."
    )
    upload = st.file_uploader("Starter suite", type=["csv", "jsonl"], key="suite_file")
    suite_note = st.text_input("Note", key="suite_note")
    if upload is not None and st.button("Import as a new version", key="suite_import"):
        try:
            data, name = upload.getvalue(), upload.name
            change = evalsets.import_evalset(db, user, data, name, note=suite_note or None, eval_set=chosen)
        except evalsets.BadRows as error:
            st.error(f"{md(upload.name)}: {len(error.problems)} bad rows, nothing imported")
            show_table(pd.DataFrame(error.problems, columns=["line", "reason"]), hide_index=True)
        except FlywheelError as error:
            _error(error)
        else:
            st.success(change.summary())

versions = evalsets.eval_set_versions(db, chosen) if chosen else []
with history:
    if not versions:
        st.info("No eval-set version yet: import a starter suite or fold in labeled failures.")
    else:
        show_table(pd.DataFrame(versions), hide_index=True)
        numbers = [v["version"] for v in versions]
        left, right = st.columns(2)
        a = left.selectbox("From version", numbers, index=min(1, len(numbers) - 1), key="diff_a")
        b = right.selectbox("To version", numbers, key="diff_b")
        diff = evalsets.diff_versions(db, a, b)
        st.write(
            f"{len(diff['added'])} added, {len(diff['retired'])} retired, {len(diff['changed'])} changed, "
            f"{len(diff['withdrawn'])} withdrawn"
        )
        _diff_tables(diff)
        shown = st.selectbox("Rows of version", numbers, key="rows_version")
        _rows_table(evalsets.version_rows(db, shown, include_archive=True))

with withdraw:
    if version is None:
        st.caption("No eval-set version yet.")
    elif locked:
        st.caption(f"{md(chosen)} is frozen: its rows are never withdrawn.")
    else:
        st.write(
            "A bad row leaves the set in a new version (versions never change); the reason is kept and "
            "shown in the diff."
        )
        active = {r["id"]: r for r in members if r["state"] == "active"}
        st.selectbox(
            "Row",
            list(active),
            key="withdraw_row",
            format_func=lambda r: f"{r} · {active[r]['code'] or ''} · {active[r]['input'][:60]}",
        )
        st.text_input("Reason", key="withdraw_reason")
        st.button("Withdraw in a new version", key="withdraw", on_click=_withdraw, disabled=not active)

with export:
    if versions:
        numbers = [v["version"] for v in versions]
        left, middle, right = st.columns(3)
        export_version = left.selectbox("Version", numbers, key="export_version")
        fmt = middle.selectbox("Format", exports.FORMATS, key="export_format")
        archive = right.checkbox("Include retired rows", key="export_archive")
        suffix = "csv" if fmt == "csv" else "jsonl"
        st.download_button(
            "Download",
            exports.export_text(db, export_version, fmt, archive),
            file_name=f"evalset-{chosen}-v{export_version}-{fmt}.{suffix}",
            key="export_download",
        )
        st.code(
            f"python -m flywheel export --db PATH --set {chosen} --version {export_version} --format {fmt}"
            " --out FILE"
        )

with retire:
    months = load_config().retire_months
    proposals = runs.retirement_proposals(db, months=months, eval_set=chosen) if chosen else []
    st.write(
        f"Rows that passed in every run of every system for {months} months. "
        "Confirmed rows move to the archive in the next version. A frozen set retires nothing."
    )
    if proposals:
        frame = pd.DataFrame(proposals)[["row_id", "code", "passing_since", "last_run", "results", "input"]]
        show_table(frame, hide_index=True)
        picked = st.multiselect("Retire", [p["row_id"] for p in proposals], key="retire_pick")
        if picked and st.button("Confirm retirement", key="retire_confirm"):
            try:
                runs.confirm_retirements(db, user, picked, eval_set=chosen, months=months)
            except FlywheelError as error:
                _error(error)
            else:
                st.success(f"{len(picked)} rows move to the archive in the next version.")
    else:
        st.caption("No row is due for retirement.")
    done = runs.retirements(db)
    if done:
        st.subheader("Retired rows")
        show_table(pd.DataFrame(done), hide_index=True)
    flagged = runs.retired_failing(db)
    if flagged:
        st.warning(f"{len(flagged)} retired rows fail again: see Pass rate.")
        show_table(pd.DataFrame(flagged), hide_index=True)
