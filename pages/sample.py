import pandas as pd
import plotly.express as px
import streamlit as st

from flywheel.auth import require_role
from flywheel.errors import BadInput
from flywheel.sampling.batches import (
    NothingSampled,
    batch_ledger,
    batch_rule_counts,
    batch_sql,
    cohort_values,
    load_batch,
    preview_plan,
    sample_and_scrub,
    sample_batches,
    sample_weeks,
    scrub_batch,
    store_sql,
    unscrubbed_count,
)
from flywheel.sampling.plans import DEMO_PLAN, STRATUM_KEYS, Plan, Stratum, save_plan, saved_plans
from flywheel.traces.signals import signal_names
from pages._charts import show, show_table
from pages._ui import chart_text, current_user, database, md

NEW_PLAN = "(new plan)"
ENGINES = {"sqlite": "SQLite (this store)", "duckdb": "DuckDB", "spark": "Spark SQL"}

db, user = database(), current_user()
require_role(user, "lead")
st.title("Sampling")
st.caption(
    "A plan picks this week's traces for the eval loop: every anomaly, quotas per stratum and a seeded"
    " random share. Each pick keeps its reasons; a batch goes straight to the scrubber."
)

plans = {plan.name: plan for plan in saved_plans(db)}
if "select_plan" in st.session_state:  # set by a save on the previous run
    st.session_state["plan_choice"] = st.session_state.pop("select_plan")
choice = st.selectbox("Plan", [*plans, NEW_PLAN], key="plan_choice")
plan = plans.get(choice)
base = plan or DEMO_PLAN.replace(name="new-plan")
by_key = {s.key: s for s in base.strata}


def stratum_row(key: str) -> dict | None:
    """One stratum's widgets; its plan-file form when switched on."""
    current = by_key.get(key) or Stratum.of(key)
    left, middle, right = st.columns([2, 1, 3], vertical_alignment="bottom")
    on = left.checkbox(key.replace("_", " "), value=key in by_key, help=current.help)
    body = {"key": key, "quota": middle.number_input("quota", 1, 10_000, current.quota, key=f"q-{key}")}
    if key == "cohort":
        body["values"] = right.multiselect("only these cohorts", cohorts, default=current.values)
    elif key == "intent":
        rare = right.number_input(
            "rare: the rarest intents that together make up at most this % of the week (0 = every intent)",
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
    elif key == "signal":
        body["names"] = right.multiselect("signals", signal_names(), default=current.names)
    else:
        share = right.number_input(
            f"top % of the week by {current.column}", 0.1, 100.0, float(current.top_share) * 100, key=key
        )
        body["top_share"] = share / 100
    return body if on else None


cohorts = cohort_values(db)
with st.expander("Edit plan", expanded=plan is None), st.form(f"plan-{choice}"):
    cols = st.columns(3)
    name = cols[0].text_input("Name", base.name)
    seed = cols[1].number_input("Seed", 0, 2**31, base.seed)
    cap = cols[2].number_input(
        "Cap on batch size (0 = none)",
        0,
        1_000_000,
        base.cap or 0,
        help="Limits stratified and random picks; every anomaly is kept, even past the cap.",
    )
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    random_on = left.checkbox("Random", value=base.random_rate is not None)
    rate = right.number_input("Random rate, %", 0.01, 100.0, float(base.random_rate or 0.02) * 100, step=0.5)
    anomaly = st.multiselect(
        "Anomaly signals (100% of flagged traces; declared signals too)",
        list(signal_names()),
        default=list(base.anomaly),
    )
    st.markdown("**Strata** — quotas per stratum")
    strata = [row for key in STRATUM_KEYS if (row := stratum_row(key))]
    buttons = st.columns([1, 1, 4])
    previewed = buttons[0].form_submit_button("Preview")
    saved = buttons[1].form_submit_button("Save plan", type="primary")
if previewed or saved:
    body = {"name": name, "seed": int(seed), "cap": int(cap) or None, "anomaly": anomaly, "strata": strata}
    body["random"] = {"rate": rate / 100} if random_on else None
    try:
        edited = Plan.from_dict({**body, "week": base.week})
    except BadInput as error:
        st.error(f"Plan not {'saved' if saved else 'previewed'}: {md(error)}")
    else:
        if saved:
            save_plan(db, edited, user.name)
            st.session_state.pop(f"draft-{choice}", None)
            st.session_state["select_plan"] = edited.name
            st.session_state["plan_saved"] = edited.name
            st.rerun()
        st.session_state[f"draft-{choice}"] = edited

if "plan_saved" in st.session_state:
    st.success(f"Saved plan {md(st.session_state.pop('plan_saved'))}.")
draft = st.session_state.get(f"draft-{choice}")
shown = draft or plan
weeks = sample_weeks(db)
if shown is None:
    st.info("Press Preview to see what this plan would pick, or Save plan to keep it.")
elif not weeks:
    st.info("No traces to sample yet: import some on the Import page.")
else:
    unsaved = draft is not None and draft != plan
    st.subheader(f"Preview{' (not saved)' if unsaved else ''}: {md(shown.name)}")
    week = st.selectbox("Week", weeks, index=weeks.index(shown.week) if shown.week in weeks else 0)
    preview = preview_plan(db, shown, week)
    cols = st.columns(3)
    cols[0].metric(f"Traces in {preview.week}", f"{preview.window:,}")
    cols[1].metric("Picked by some rule", f"{preview.selected:,}")
    cols[2].metric("Batch size after the cap", f"{preview.capped:,}")
    if preview.over_cap:
        st.warning(
            f"The anomalies alone exceed the cap of {shown.cap}: the batch would hold all of them"
            f" ({preview.over_cap} over the cap) and no stratified or random pick."
        )
    if preview.absent:
        st.info(
            f"No trace of {preview.week} carries these declared signals yet: {md(', '.join(preview.absent))}"
        )
    show_table(pd.DataFrame(preview.rules), hide_index=True)
    rare = next((s for s in shown.strata if s.key == "intent" and s.rare_share), None)
    if rare:
        st.caption(
            f"Rare intents: the rarest intents of the week that together make up at most"
            f" {rare.rare_share:.1%} of its traces."
        )
    with st.expander("The plan as SQL in this store (DuckDB and Spark below)"):
        st.code(store_sql(shown, week).text(), language="sql")
    if st.toggle("Show the SQL for DuckDB and Spark", key="source_sql"):
        from flywheel.sampling.source import source_sql  # DuckDB loads only when asked

        source = st.text_input("Source files for DuckDB and Spark", "traces/*.parquet")
        st.caption(
            "Columns are read from the files' schema (map others with `--column ours=theirs`);"
            " run it with `python -m flywheel sample --source ... --engine duckdb|spark`."
        )
        for tab, engine in zip(st.tabs(["DuckDB", "Spark SQL"]), ("duckdb", "spark"), strict=True):
            with tab:
                try:
                    st.code(source_sql(shown, week, engine, source).text(), language="sql")
                except BadInput as error:
                    st.error(md(error))
    if unsaved:
        st.info("Save the plan to run it.")
    else:
        again = st.checkbox("A new batch even if this plan already sampled the week", key="again")
        if st.button("Run plan", type="primary"):
            bar = st.progress(0.0, text="Sampling...")
            try:
                run = sample_and_scrub(
                    db,
                    shown,
                    user.name,
                    week,
                    again=again,
                    progress=lambda done, total: bar.progress(
                        done / total, text=f"Scrubbed {done} of {total}"
                    ),
                )
            except NothingSampled as error:
                bar.empty()
                st.warning(md(error))
            else:
                bar.progress(1.0, text="Scrubbed")
                if run.repeated:
                    st.info(
                        f"This plan already sampled {run.batch.week} with seed {run.batch.seed}: batch"
                        f" {run.batch.id}. No new batch; its scrubbing resumed ({run.scrubbed} traces)."
                        " Tick the box above for a new batch."
                    )
                else:
                    st.success(
                        f"Batch {run.batch.id}: {run.batch.sampled} traces sampled,"
                        f" {run.scrubbed} sent to the scrubber."
                    )
                if run.batch.over_cap:
                    st.warning(f"Batch {run.batch.id}: {run.batch.cap_note()}.")
                st.session_state["batch_choice"] = run.batch.id

batches = sample_batches(db)
if not batches:
    st.info("No batches yet.")
    st.stop()
st.subheader("Batches")
table = pd.DataFrame(batches)
table["source"] = table["source"].fillna("this store")
table["engine"] = table["engine"].fillna("sqlite")
show_table(
    table[["id", "plan_name", "week", "seed", "source", "engine", "created_by", "created_at"]].join(
        table[["window", "sampled", "dropped"]].fillna(0).astype(int)
    ),
    hide_index=True,
)
ids = [b["id"] for b in batches]
if st.session_state.get("batch_choice") not in ids:
    st.session_state["batch_choice"] = ids[0]
batch_id = st.selectbox("Ledger of batch", ids, key="batch_choice")
waiting = unscrubbed_count(db, batch_id)
if waiting:
    st.warning(f"{waiting} traces of batch {batch_id} have not been scrubbed yet (a run stopped early).")
    if st.button("Resume scrubbing"):
        with st.spinner("Scrubbing..."):
            scrub_batch(db, batch_id, user.name)
        st.rerun()
chosen = load_batch(db, batch_id)
if chosen.over_cap:
    st.warning(f"Batch {batch_id}: {chosen.cap_note()}.")
ledger = pd.DataFrame(batch_ledger(db, batch_id)).drop(columns="kind")
ledger["quota"] = ledger["quota"].map(lambda q: "all" if pd.isna(q) else f"{int(q)}")
show_table(
    ledger,
    percent=["rate"],
    hide_index=True,
    column_config={
        "quota": st.column_config.TextColumn("quota (all: every trace of the stratum)"),
        "selected": st.column_config.NumberColumn("picked by the rule"),
        "dropped": st.column_config.NumberColumn("dropped by the cap"),
        "in_batch": st.column_config.NumberColumn("in the batch (any reason)"),
        "over_cap": st.column_config.NumberColumn("kept over the cap (anomalies)"),
        "rate": "in batch / population",
    },
)
reasons = batch_rule_counts(db, batch_id)
show(
    px.bar(
        x=list(reasons.values()), y=[chart_text(r) for r in reasons], orientation="h", title="Picks per rule"
    ).update_layout(yaxis={"autorange": "reversed"}),
    "Traces picked (count)",
    "Rule",
)
with st.expander("Plan of this batch"):
    st.json(next(b["plan"] for b in batches if b["id"] == batch_id))
engine, sql = batch_sql(db, batch_id)
with st.expander(f"SQL that made this batch ({ENGINES.get(engine, engine)})"):
    if sql:
        st.code(sql, language="sql")
    else:
        st.caption("This batch was made before batches kept their SQL.")
