import pandas as pd
import plotly.express as px
import streamlit as st

from flywheel import sampling
from flywheel.auth import require_role
from flywheel.errors import BadInput
from flywheel.traces import filter_options
from pages._ui import current_user, database, md

NEW_PLAN = "(new plan)"
STRATUM_HELP = {
    "cohort": "up to the quota from every cohort (or only those listed)",
    "intent": "up to the quota from every intent; a rare share keeps only the low-frequency intents",
    "judge_band": "borderline judge confidence",
    "long_conversation": "many user turns",
    "cost_tail": "the most expensive share of the week",
    "latency_tail": "the slowest share of the week",
}

db, user = database(), current_user()
require_role(user, "lead")
st.title("Sampling")
st.caption(
    "A plan picks this week's traces for the eval loop: every anomaly, quotas per stratum and a seeded"
    " random share. Each pick keeps its reasons; a batch goes straight to the scrubber."
)

plans = {plan.name: plan for plan in sampling.saved_plans(db)}
if "select_plan" in st.session_state:  # set by a save on the previous run
    st.session_state["plan_choice"] = st.session_state.pop("select_plan")
choice = st.selectbox("Plan", [*plans, NEW_PLAN], key="plan_choice")
plan = plans.get(choice)
base = plan or sampling.DEMO_PLAN.replace(name="new-plan")
by_key = {s.key: s for s in base.strata}


def stratum_row(key: str) -> dict | None:
    """One stratum's widgets; its plan-file form when switched on."""
    current = by_key.get(key, sampling.Stratum(key))
    left, middle, right = st.columns([2, 1, 3], vertical_alignment="bottom")
    on = left.checkbox(key.replace("_", " "), value=key in by_key, help=STRATUM_HELP[key])
    body = {"key": key, "quota": middle.number_input("quota", 1, 10_000, current.quota, key=f"q-{key}")}
    if key == "cohort":
        body["values"] = right.multiselect("only these cohorts", cohorts, default=current.values)
    elif key == "intent":
        rare = right.number_input(
            "rare share, % of the week (0 = every intent)",
            0.0,
            100.0,
            float(current.rare_share or 0) * 100,
            step=0.5,
        )
        body["rare_share"] = rare / 100 or None
    elif key == "judge_band":
        body["low"], body["high"] = right.slider("judge score band", 0.0, 1.0, (current.low, current.high))
    elif key == "long_conversation":
        body["min_turns"] = right.number_input("turns at least", 1, 1000, current.min_turns)
    else:
        body["top_share"] = (
            right.number_input(
                f"top % of the week by {key.removesuffix('_tail')}",
                0.1,
                100.0,
                float(current.top_share) * 100,
                key=key,
            )
            / 100
        )
    return body if on else None


cohorts = filter_options(db)["cohorts"]
with st.expander("Edit plan", expanded=plan is None), st.form(f"plan-{choice}"):
    cols = st.columns(3)
    name = cols[0].text_input("Name", base.name)
    seed = cols[1].number_input("Seed", 0, 2**31, base.seed)
    cap = cols[2].number_input("Cap on batch size (0 = none)", 0, 1_000_000, base.cap or 0)
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    random_on = left.checkbox("Random", value=base.random_rate is not None)
    rate = right.number_input("Random rate, %", 0.01, 100.0, float(base.random_rate or 0.02) * 100, step=0.5)
    anomaly = st.multiselect(
        "Anomaly signals (100% of flagged traces)", list(sampling.ANOMALY_SIGNALS), default=list(base.anomaly)
    )
    st.markdown("**Strata** — quotas per stratum")
    strata = [row for key in sampling.STRATUM_KEYS if (row := stratum_row(key))]
    saved = st.form_submit_button("Save plan", type="primary")
if saved:
    body = {"name": name, "seed": int(seed), "cap": int(cap) or None, "anomaly": anomaly, "strata": strata}
    body["random"] = {"rate": rate / 100} if random_on else None
    try:
        edited = sampling.Plan.from_dict({**body, "week": base.week})
    except BadInput as error:
        st.error(f"Plan not saved: {error}")
    else:
        sampling.save_plan(db, edited, user.name)
        st.session_state["select_plan"] = edited.name
        st.rerun()

weeks = sampling.sample_weeks(db)
if plan is None:
    st.info("Save the plan to preview and run it.")
elif not weeks:
    st.info("No traces to sample yet: import some on the Import page.")
else:
    st.subheader(f"Preview and run: {md(plan.name)}")
    week = st.selectbox("Week", weeks, index=weeks.index(plan.week) if plan.week in weeks else 0)
    if plan.random_rate is not None:
        st.caption("The random rule as SQL (a warehouse with `md5` runs it as is):")
        st.code(sampling.random_predicate_sql(plan), language="sql")
    preview = sampling.preview_plan(db, plan, week)
    cols = st.columns(3)
    cols[0].metric(f"Traces in {preview.week}", f"{preview.window:,}")
    cols[1].metric("Picked by some rule", f"{preview.selected:,}")
    cols[2].metric("Batch size after the cap", f"{preview.capped:,}")
    st.dataframe(pd.DataFrame(preview.rules), hide_index=True)
    if st.button("Run plan", type="primary"):
        with st.spinner("Sampling..."):
            batch = sampling.run_plan(db, plan, user.name, week)
        from flywheel.review import scrub_traces  # the scrubber's NLP stack loads only when needed

        bar = st.progress(0.0, text=f"Scrubbing batch {batch.id}...")
        scrubbed = scrub_traces(
            db,
            sampling.batch_trace_ids(db, batch.id),
            user.name,
            progress=lambda done, total: bar.progress(done / total, text=f"Scrubbed {done} of {total}"),
        )
        bar.progress(1.0, text="Scrubbed")
        st.success(f"Batch {batch.id}: {batch.sampled} traces sampled, {scrubbed} sent to the scrubber.")
        st.session_state["batch_choice"] = batch.id

batches = sampling.sample_batches(db)
if not batches:
    st.info("No batches yet.")
    st.stop()
st.subheader("Batches")
st.dataframe(
    pd.DataFrame(batches)[
        ["id", "plan_name", "week", "seed", "created_by", "created_at", "window", "sampled", "dropped"]
    ],
    hide_index=True,
)
ids = [b["id"] for b in batches]
if st.session_state.get("batch_choice") not in ids:
    st.session_state["batch_choice"] = ids[0]
batch_id = st.selectbox("Ledger of batch", ids, key="batch_choice")
st.dataframe(
    pd.DataFrame(sampling.batch_ledger(db, batch_id)).drop(columns="kind"),
    hide_index=True,
    column_config={
        "selected": st.column_config.NumberColumn("picked by the rule"),
        "dropped": st.column_config.NumberColumn("dropped by the cap"),
        "in_batch": st.column_config.NumberColumn("in the batch (any reason)"),
        "rate": st.column_config.NumberColumn("in batch / population", format="percent"),
    },
)
reasons = sampling.batch_rule_counts(db, batch_id)
st.plotly_chart(
    px.bar(x=list(reasons.values()), y=list(reasons), orientation="h", title="Picks per rule").update_layout(
        xaxis_title="traces", yaxis_title=None, yaxis={"autorange": "reversed"}
    ),
    width="stretch",
)
with st.expander("Plan of this batch"):
    st.json(next(b["plan"] for b in batches if b["id"] == batch_id))
