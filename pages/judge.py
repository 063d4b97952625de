import dataclasses
import math

import pandas as pd
import streamlit as st

from flywheel.auth import require_role
from flywheel.demo.judgments import DEMO_GRADER_MODEL
from flywheel.online import calibration, judge, rubrics
from flywheel.sampling.plans import saved_plans
from pages._charts import show_table
from pages._ui import current_user, database, md, show_conversation

NEW_RUBRIC = "(new rubric)"
TARGET_HELP = {
    "batch": "a sample batch (its traces with approved scrubs)",
    "week": "every trace of a week with an approved scrub",
    "run": "a regression run's outputs that have no verdict yet",
    "shadow": "shadow replies, judged pairwise against production in both orders",
}

db, user = database(), current_user()
require_role(user, "lead")
st.title("Judge")
st.caption(
    "An LLM judge grades scrubbed traces against a rubric you write. Its score feeds sampling and alerts"
    " only once it agrees with the labelers well enough."
)
configured = judge.api_configured()
if not configured:
    st.info(judge.ENABLE_HELP, icon=":material/key:")

runs = judge.judge_runs(db)
if any(r["model"] == DEMO_GRADER_MODEL for r in runs):
    st.warning(
        f"Judgments made by `{DEMO_GRADER_MODEL}` come from a deterministic offline grader built into"
        " the demo database (the real client against an in-process stand-in), not from a language model.",
        icon=":material/science:",
    )

rubric_tab, run_tab, calibration_tab = st.tabs(["Rubric", "Grade", "Calibration"])

with rubric_tab:
    names = [r["name"] for r in rubrics.rubric_names(db)]
    choice = st.selectbox("Rubric", [*names, NEW_RUBRIC])
    if choice == NEW_RUBRIC:
        base = dataclasses.replace(rubrics.STARTER_RUBRIC, name="new-rubric")
    else:
        base = rubrics.rubric(db, choice)
    if choice != NEW_RUBRIC:
        st.caption(f"Latest version: v{base.version}. Saving a change writes v{base.version + 1}.")
    with st.form(f"rubric-{choice}"):
        name = st.text_input("Name", base.name, disabled=choice != NEW_RUBRIC)
        instructions = st.text_area("Instructions for the judge", base.instructions)
        rows = st.data_editor(
            pd.DataFrame(rubrics.rubric_rows(base)),
            num_rows="dynamic",
            width="stretch",
            column_config={
                "level": st.column_config.SelectboxColumn(options=list(rubrics.LEVEL_VERDICT), required=True),
                "meaning": st.column_config.TextColumn(width="large"),
            },
            key=f"rows-{choice}",
        )
        st.caption(
            "Levels: pass/fail, or excellent/adequate/poor. A human label maps to a verdict for calibration:"
        )
        cols = st.columns(3)
        label_map = {
            kind: cols[i].selectbox(
                kind.replace("_", " "), ["pass", "fail"], ["pass", "fail"].index(base.label_map[kind])
            )
            for i, kind in enumerate(rubrics.LABEL_KINDS)
        }
        examples = st.text_input(
            "Few-shot examples (labeled trace ids, comma-separated; never counted in calibration)",
            ", ".join(base.examples),
        )
        if st.form_submit_button("Save as new version", type="primary"):
            draft = rubrics.rubric_from_rows(
                name, instructions, rows.to_dict("records"), label_map, examples.split(",")
            )
            saved = rubrics.save_rubric(db, user, draft)
            st.success(f"Saved {md(saved.label)}.")

with run_tab:
    if not names:
        st.info("Save a rubric first.")
    else:
        targets = judge.judge_targets(db)
        cols = st.columns([1, 2, 2, 1], vertical_alignment="bottom")
        kind = cols[0].selectbox("Grade", list(TARGET_HELP), format_func=lambda k: k, help=str(TARGET_HELP))
        if kind == "shadow":
            value = cols[1].text_input("Metadata field holding the shadow reply", "shadow_reply")
        else:
            value = cols[1].selectbox(TARGET_HELP[kind], targets[kind])
        rubric_name = cols[2].selectbox("with rubric", names)
        limit = cols[3].number_input("at most", 1, 100_000, 200)
        if st.button("Grade", type="primary", disabled=not configured or value is None):
            bar = st.progress(0.0, text="grading...")
            report = judge.run_judge(
                db,
                user.name,
                judge.Target(kind, str(value)),
                rubric_name,
                int(limit),
                progress=lambda done, total: bar.progress(done / total, text=f"{done:,} of {total:,} graded"),
            )
            st.text(report.summary())
    st.subheader("Recent runs")
    if runs:
        show_table(pd.DataFrame(runs).drop(columns=["rubric_id", "base_url"]), hide_index=True)
    else:
        st.caption("No judge run yet.")

with calibration_tab:
    if not names:
        st.info("Save a rubric and grade some labeled traces first.")
        st.stop()
    cols = st.columns(2)
    cal_name = cols[0].selectbox("Rubric ", names)
    versions = [r.version for r in rubrics.rubric_versions(db, cal_name)]
    version = cols[1].selectbox("Version", versions)
    result = calibration.calibrate(db, cal_name, version)
    limits = calibration.thresholds(db)
    st.caption(
        f"{result.n} traces graded by both the judge and the labelers ({result.excluded_examples} few-shot"
        " examples left out). 'fail' is the positive class."
    )
    fmt = lambda x: "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"  # noqa: E731
    metrics = st.columns(4)
    metrics[0].metric("Cohen's kappa", fmt(result.kappa), help="agreement beyond chance")
    metrics[1].metric(
        "constant predictor kappa", fmt(result.constant_kappa), help="always the majority verdict"
    )
    metrics[2].metric("base rate (human fail)", fmt(result.base_rate))
    metrics[3].metric("TPR (failures caught)", fmt(result.tpr))
    metrics = st.columns(4)
    metrics[0].metric("accuracy", fmt(result.accuracy))
    metrics[1].metric(
        "constant predictor accuracy", fmt(result.constant_accuracy), help="always the majority verdict"
    )
    metrics[2].metric("judged by both", result.n)
    metrics[3].metric("TNR (passes let through)", fmt(result.tnr))
    c = result.confusion
    show_table(
        pd.DataFrame(
            {"judge fail": [c["tp"], c["fp"]], "judge pass": [c["fn"], c["tn"]]},
            index=["human fail", "human pass"],
        )
    )
    trusted, why = calibration.judge_trusted(db, cal_name)
    (st.success if trusted else st.warning)(md(why))
    st.subheader("Disagreements")
    if result.disagreements:
        table = pd.DataFrame(result.disagreements)
        picked = show_table(
            table, hide_index=True, on_select="rerun", selection_mode="single-row", key="disagree"
        )
        if picked.selection.rows:
            row = table.iloc[picked.selection.rows[0]]
            st.caption(f"Trace {md(row['trace_id'])}: human {md(row['human'])}, judge {md(row['judge'])}")
            show_conversation(
                {"messages": list(judge.scrubbed_conversation(db, row["trace_id"])), "input": ""}
            )
    else:
        st.caption("None.")
    st.subheader("Thresholds")
    with st.form("thresholds"):
        cols = st.columns(len(calibration.THRESHOLDS))
        values = {
            name: cols[i].number_input(name.replace("_", " "), low, high, float(limits[name]), help=help_text)
            for i, (name, (_, low, high, help_text)) in enumerate(calibration.THRESHOLDS.items())
        }
        if st.form_submit_button("Save thresholds"):
            for name, value in values.items():
                if value != limits[name]:
                    calibration.set_threshold(db, user, name, value)
            st.rerun()
    st.subheader("Use the judge's score")
    st.caption(
        f"Writes this rubric's scores into the traces' judge score and adds the borderline band"
        f" {limits['borderline_low']:g}-{limits['borderline_high']:g} to a sampling plan as a stratum."
    )
    plans = [p.name for p in saved_plans(db)]
    cols = st.columns([2, 1, 1], vertical_alignment="bottom")
    plan = cols[0].selectbox("Sampling plan", plans)
    quota = cols[1].number_input("quota", 1, 10_000, 8)
    if cols[2].button("Adopt", disabled=not trusted or plan is None, help=None if trusted else why):
        adopted = calibration.adopt_judge(db, user, plan, cal_name, int(quota))
        st.success(
            f"{adopted['scores_written']} scores written; plan {md(plan)} now samples the borderline band."
        )
