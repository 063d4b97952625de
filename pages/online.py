import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from flywheel.auth import require_role
from flywheel.demo.judgments import DEMO_GRADER_MODEL
from flywheel.errors import FlywheelError, NotFound
from flywheel.online import calibration, experiments, parity, rubrics, signal_alerts
from flywheel.online.judge import judge_runs
from flywheel.traces import signals
from pages._charts import BLUE, GREY, ORANGE, band, in_units, line, marks, show, show_table
from pages._ui import chart_text, current_user, database, md

db, user = database(), current_user()
require_role(user, "lead")
st.title("Online quality")
st.caption(
    "Production has no gold answers: implicit signals, the judge on sampled traffic, releases side by side"
    " and shadow replies tell how the live system is doing."
)


if any(run["model"] == DEMO_GRADER_MODEL for run in judge_runs(db)):
    st.caption(
        f":material/science: Judge verdicts and shadow preferences here come from `{DEMO_GRADER_MODEL}`, the"
        " demo database's deterministic offline grader, not from a language model."
    )


def pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def latest_rubric_id() -> int | None:
    try:
        return rubrics.rubric(db).id
    except NotFound:
        return None


signals_tab, parity_tab, ab_tab, shadow_tab = st.tabs(["Signals", "Parity", "A/B and canary", "Shadow"])

with signals_tab:
    cols = st.columns(3)
    period = cols[0].radio("Per", list(signal_alerts.PERIODS), horizontal=True)
    trailing = cols[1].number_input(
        "control band from the trailing periods", 3, 60, 8 if period == "week" else 28
    )
    series = signal_alerts.signal_series(
        db, period, trailing=int(trailing), min_history=min(4, int(trailing))
    )
    if series.empty:
        st.info("No traces yet.")
    else:
        cohort = cols[2].selectbox("Cohort", sorted(series["cohort"].unique()))
        alerts = series[series["alert"]]
        st.caption(
            "A rate's band is the trailing periods' pooled rate ± 3 binomial standard errors; p95 latency and"
            " cost use the trailing mean ± 3 standard deviations. The judge's fail rate appears once it is"
            " calibrated."
        )
        shown = series[series["cohort"] == cohort]
        for signal, part in shown.groupby("signal", sort=False):
            rate = signal not in signal_alerts.VALUE_SIGNALS
            banded = part.dropna(subset=["low", "high"])
            figure = go.Figure(
                [
                    *band(banded["period"], banded["low"], banded["high"], "control band (± 3 σ)", GREY),
                    *line(part["period"], part["value"], chart_text(signal), BLUE),
                    marks(
                        part.loc[part["alert"], "period"],
                        part.loc[part["alert"], "value"],
                        "alert: outside the control band",
                    ),
                ]
            )
            unit = "Share of traces (%)" if rate else "Milliseconds" if "ms" in signal else "US dollars"
            show(figure, period.title(), unit, rate, height=280, title=signal)
        st.subheader("Alerts")
        rates = ~alerts["signal"].isin(signal_alerts.VALUE_SIGNALS)
        shown = in_units(alerts, ["value", "centre", "low", "high"], rates.tolist())
        show_table(shown.drop(columns=["alert"]).iloc[::-1], hide_index=True)
    declared = signal_alerts.declared_status(db)
    if declared:
        st.subheader("Declared signals")
        st.caption(
            "Signals the product logs beyond the built-in ones, declared in the signals file"
            " (FLYWHEEL_SIGNALS). Booleans and numbers are rated over the traces that carry a value, events"
            " over every trace once any carries one; a signal no trace carries is shown as no data, not 0."
        )
        show_table(pd.DataFrame(declared), hide_index=True)

with parity_tab:
    try:
        result = parity.parity(db)
    except NotFound as error:
        st.info(f"{md(error)}. The production estimate needs judged traces.")
        result = None
    if result is not None:
        lab = result["lab"]
        if lab is None:
            st.info(f"No lab figure: {md(parity.lab_missing(db))}.")
        else:
            st.caption(
                f"Lab: the live system {md(lab['system'])} (release decision {lab['decision']}) on"
                f" eval-set v{lab['version']}: {pct(lab['rate'])} of {lab['n']} rows pass."
            )
        weeks = pd.DataFrame(result["weeks"])
        if not result["assessable"]:
            st.warning(f"The gap cannot be assessed: {md(result['why'])}. No alert is raised.")
        if weeks.empty and result["assessable"]:
            st.info("No judged traces from the random part of a sample yet.")
        elif not weeks.empty:
            figure = go.Figure(
                line(
                    weeks["week"],
                    weeks["rate"],
                    "production (judge, random sample)",
                    BLUE,
                    weeks["low"],
                    weeks["high"],
                )
            )
            if lab is not None and result["assessable"]:
                figure.add_hline(
                    y=lab["rate"],
                    line={"dash": "dash", "color": ORANGE},
                    annotation_text="lab pass rate",
                    annotation_position="bottom right",
                )
            show(
                figure,
                "ISO week",
                "Pass rate (%)",
                percent=True,
                title="Pass rate: production estimate beside the lab",
            )
            flagged = weeks[weeks["flagged"]]
            if not flagged.empty:
                st.warning(f"{len(flagged)} week(s) with a gap beyond {result['threshold']:.0%}.")
            show_table(weeks, hide_index=True)
        st.caption(f"Judge: {md(result['rubric'])}; the gap threshold is set on the Judge page.")

with ab_tab:
    key = st.text_input("Metadata field naming the release or variant", experiments.ARM_KEY)
    arms = experiments.arm_values(db, user, key)
    names = [a["arm"] for a in arms]
    limits = calibration.thresholds(db)
    rubric_id = latest_rubric_id()
    if len(arms) < 2:
        st.info("Fewer than two values of that field in the traces: nothing to compare.")
    else:
        show_table(pd.DataFrame(arms), hide_index=True)
        declared = experiments.declared_experiments(db, user)
        describe = "(none: describe two arms)"
        choice = st.selectbox("Experiment", [e.name for e in declared] + [describe])
        if choice == describe:
            cols = st.columns(2)
            control = cols[0].selectbox("Control", names, 0)
            treatment = cols[1].selectbox("Treatment", names, 1)
            weeks = st.multiselect(
                "Weeks (none = all)", sorted({w for a in arms for w in (a["first_week"], a["last_week"])})
            )
            result = None
            if control != treatment:
                result = experiments.compare_arms(db, user, key, control, treatment, tuple(weeks), rubric_id)
            else:
                st.caption("Pick two different arms.")
        else:
            exp = next(e for e in declared if e.name == choice)
            st.caption(
                f"Declared by {md(exp.declared_by)} at {exp.declared_at}: {md(exp.key)} {md(exp.control)}"
                f" vs {md(exp.treatment)} from {exp.start}, randomized by {md(exp.unit)}, planned"
                f" {1 - exp.treatment_share:.0%} / {exp.treatment_share:.0%}; primary metric"
                f" {md(exp.primary_metric)}, at least {exp.min_days} days, minimum effect"
                f" {exp.min_effect:.1%}, alpha {exp.alpha:g}, power {exp.power:g}."
            )
            result = experiments.experiment_verdict(db, user, exp.name, rubric_id)
        if result is not None:
            if result["withheld"]:
                st.warning("Verdict withheld: " + "; ".join(md(reason) for reason in result["withheld"]))
            else:
                st.info(
                    f"Verdict on the primary metric, {md(result['primary_metric'])}: {md(result['verdict'])}"
                )
            show_table(
                pd.DataFrame(result["metrics"]),
                hide_index=True,
                column_config={"verdict": st.column_config.TextColumn(width="large")},
            )
            if result["design"] is not None:
                st.caption(
                    "Secondary rates carry Holm-adjusted p-values (`p_holm`) and no verdict. Design as"
                    " observed since the start:"
                )
                show_table(pd.DataFrame([result["design"]]), hide_index=True)
    with st.expander("Declare an experiment", expanded=not names), st.form("declare_experiment"):
        cols = st.columns(3)
        new_name = cols[0].text_input("Experiment name")
        new_key = cols[1].text_input("Arm field (metadata key)", key)
        new_unit = cols[2].text_input(
            "Randomization unit", "user_id", help="trace_id, cohort or a metadata key such as user_id"
        )
        cols = st.columns(3)
        new_control = cols[0].text_input("Control arm", names[0] if names else "")
        new_treatment = cols[1].text_input("Treatment arm", names[1] if len(names) > 1 else "")
        new_share = cols[2].number_input("Planned treatment share", 0.01, 0.99, 0.5)
        cols = st.columns(3)
        new_metric = cols[0].selectbox(
            "Primary metric", [*experiments.METRICS, *(d.name for d in signals.declared_signals())]
        )
        new_days = cols[1].number_input("Minimum duration, days", 1, 365, experiments.DEFAULT_MIN_DAYS)
        new_start = cols[2].date_input("Start (UTC)")
        cols = st.columns(3)
        new_effect = cols[0].number_input(
            "minimum effect", 0.001, 0.5, float(limits["min_effect"]), format="%.3f"
        )
        new_alpha = cols[1].number_input("alpha", 0.001, 0.2, 0.05)
        new_power = cols[2].number_input("power", 0.5, 0.99, 0.8)
        if st.form_submit_button("Declare"):
            try:
                declared_now = experiments.declare_experiment(
                    db,
                    user,
                    new_name,
                    new_key,
                    new_control,
                    new_treatment,
                    new_unit,
                    new_share,
                    new_metric,
                    min_days=int(new_days),
                    min_effect=new_effect,
                    alpha=new_alpha,
                    power=new_power,
                    start=new_start.isoformat(),
                )
            except FlywheelError as error:
                st.error(md(error))
            else:
                st.success(
                    f"Declared {md(declared_now.name)}; its verdict reads the traces from"
                    f" {declared_now.start} on."
                )
    st.subheader("Sample-size planner")
    cols = st.columns(6)
    baseline = cols[0].number_input("baseline rate", 0.0, 0.99, 0.05, format="%.3f")
    effect = cols[1].number_input("minimum effect ", 0.001, 0.5, float(limits["min_effect"]), format="%.3f")
    alpha = cols[2].number_input("alpha ", 0.001, 0.2, 0.05)
    power = cols[3].number_input("power ", 0.5, 0.99, 0.8)
    share = cols[4].number_input("share of traffic per arm", 0.01, 0.5, 0.5)
    traffic = experiments.daily_traffic(db)
    plan = experiments.plan_test(baseline, effect, alpha, power, traffic, share)
    days = "n/a" if plan["days"] is None else f"{plan['days']} days"
    cols[5].metric("traces per arm", f"{plan['per_arm']:,}", help=f"{days} at {traffic:,.0f} traces a day")
    st.caption(f"{days} at the current {traffic:,.0f} traces a day with {share:.0%} of traffic per arm.")
    if len(arms) >= 2:
        st.subheader("Canary")
        cols = st.columns(3)
        hours = cols[2].slider("last hours", 24, 72, 72)
        recent = [a["arm"] for a in experiments.arm_values(db, user, key, hours)] or names
        stable = cols[0].selectbox("Stable release", recent, 0, key="stable")
        canary = cols[1].selectbox("Canary", recent, len(recent) - 1, key="canary")
        if stable != canary:
            alarms = experiments.canary_alarms(db, user, key, stable, canary, hours, rubric_id)
            if alarms:
                st.error(
                    f"Canary alarm: {len(alarms)} rate(s) worse than the stable release beyond the interval."
                )
                show_table(pd.DataFrame(alarms), hide_index=True)
            else:
                st.success("No rate of the canary is worse than the stable release beyond its interval.")
            window = experiments.arm_rates(db, user, key, (stable, canary), hours=hours, rubric_id=rubric_id)
            show_table(pd.DataFrame(window), hide_index=True)

with shadow_tab:
    shadow_key = st.text_input("Metadata field holding the shadow reply", "shadow_reply")
    rubric_id = latest_rubric_id()
    if rubric_id is None:
        st.info("Shadow replies are compared by the judge: save a rubric on the Judge page first.")
    else:
        result = experiments.shadow_preference(db, shadow_key, rubric_id)
        if not result["pairs"]:
            st.info("No shadow pair judged yet: grade the shadow field on the Judge page.")
        else:
            cols = st.columns(4)
            cols[0].metric(
                "judge prefers the shadow",
                pct(result["rate"]),
                help=f"95% interval {pct(result['low'])}-{pct(result['high'])}; a tie counts half",
            )
            cols[1].metric("pairs (both orders)", result["pairs"])
            cols[2].metric(
                "shadow / production / even",
                f"{result['shadow_preferred']} / {result['production_preferred']} / {result['even']}",
            )
            cols[3].metric(
                "agrees with user signals",
                pct(result["agree_with_users"]),
                help=f"on {result['with_user_signal']} traces with thumbs or a regeneration",
            )
            st.caption(
                f"Preference for the shadow: {pct(result['rate'])}, 95% interval {pct(result['low'])} to"
                f" {pct(result['high'])}; agreement with users on {result['with_user_signal']} traces with"
                f" thumbs or a regeneration, interval {pct(result['agree_low'])} to"
                f" {pct(result['agree_high'])}."
            )
            st.caption(
                "Each pair is judged in both orders, so a judge that always prefers the first answer"
                " scores 50%. This measures what the judge prefers; the agreement with user signals says"
                " how far to trust it."
            )
