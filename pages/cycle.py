import pandas as pd
import streamlit as st

from flywheel import cycle
from flywheel.auth import require_role
from flywheel.config import PROJECT_ROOT, load_config
from flywheel.errors import FlywheelError
from flywheel.sampling.plans import saved_plans
from pages._charts import show_table
from pages._ui import current_user, database, md

db, user = database(), current_user()
require_role(user, "lead")
config = load_config()
st.title("Weekly cycle")
st.caption(
    "The whole loop in one run: ingest new inbox files (each file once, by content hash), sample the week"
    " with a plan and scrub the batch, measure drift, fold in what was labeled since the last fold (when"
    " allowed below) and run the release gate when a challenger's results arrived. The command exits 1"
    " when a person is needed (drift alarm, blocked gate, failed step), so cron or CI can page someone."
)

settings = cycle.cycle_settings(db)
with st.form("settings"):
    st.subheader("Settings")
    fold = st.toggle(
        "Fold labeled rows into a new eval-set version on each cycle", value=bool(settings["fold_in"])
    )
    baseline = st.text_input(
        "Baseline system for the release gate",
        value=settings["baseline"] or "",
        help="results of another system on the current version, imported since the last cycle,"
        " are gated against it",
    )
    if st.form_submit_button("Save settings"):
        cycle.set_cycle_settings(db, user, fold, baseline)
        st.success("Saved.")
        settings = cycle.cycle_settings(db)

plans = {plan.name: plan for plan in saved_plans(db)}
st.subheader("Run now")
if not plans:
    st.info("Save a sampling plan on the Sample page first; the cycle samples with it.")
else:
    with st.form("run"):
        name = st.selectbox("Plan", list(plans), format_func=md)
        inbox = st.text_input(
            "Inbox folder (new trace files are imported from it; empty: no import)", key="cycle_inbox"
        )
        start = st.form_submit_button("Run the cycle", type="primary")
    if start:
        status = st.status("Running the weekly cycle", expanded=True)
        bar = status.progress(0.0, text="starting")

        def report(stage: str, done: int, total: int) -> None:
            bar.progress(min(done / total, 1.0) if total else 0.0, text=f"{stage}: {done:,} of {total:,}")

        try:
            result = cycle.run_cycle(
                db, plans[name], user.name, inbox=inbox.strip() or None, progress=report, config=config
            )
        except FlywheelError as error:
            status.update(label="The cycle did not start", state="error")
            st.error(md(error))
        else:
            status.update(
                label=f"Cycle {result.id} finished", state="error" if result.attention else "complete"
            )
            for reason in result.attention:
                st.warning(md(reason))

stopped = cycle.interrupted_cycles(db)
history = cycle.cycles(db)
if history:
    st.subheader("Past cycles")
    if stopped:
        st.warning(
            f"Cycle(s) {', '.join(map(str, stopped))} stopped before finishing (the process was killed or the"
            " machine went down). What they stored stays; the next cycle resumes them: files are known by"
            " content and the week's batch is scrubbed on from where it stopped."
        )
    rows = []
    for item in history:
        steps = (item["report"] or {}).get("steps", {})
        rows.append(
            {
                "cycle": item["id"],
                "status": item["status"],
                "started": item["started_at"],
                "week": item["week"] or "",
                "needs a person": "yes" if item["needs_attention"] else "no",
                **{name: steps.get(name, {}).get("status", "") for name in cycle.STEPS},
            }
        )
    show_table(pd.DataFrame(rows), hide_index=True)
    picked = st.selectbox("Details of cycle", [item["id"] for item in history])
    chosen = next(item for item in history if item["id"] == picked)
    for name, step in ((chosen["report"] or {}).get("steps") or {}).items():
        st.text(f"{name}: {step['status']}: {step['detail']}")

st.subheader("Schedule it")
st.caption("A crontab line (every Monday 06:00; the exit code tells cron whether a person is needed):")
inbox_dir = (st.session_state.get("cycle_inbox") or "").strip() or "inbox/"
st.code(
    cycle.crontab_line(config.db, "data/plans/weekly.toml", inbox_dir, str(PROJECT_ROOT)), language="bash"
)
