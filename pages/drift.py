import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from flywheel.auth import require_role
from flywheel.config import load_config
from flywheel.drift import inputs as input_drift
from flywheel.drift import run as drift
from flywheel.errors import FlywheelError
from flywheel.sampling.batches import sample_weeks
from pages._charts import BLUE, GREY, ORANGE, line, marks, show, show_table
from pages._ui import chart_text, current_user, database, md

db, user = database(), current_user()
require_role(user, "lead")
config = load_config()
st.title("Drift")
st.caption(
    "How much of each week's traffic the current eval set no longer covers: the share of traces that are"
    " farther from every eval row than most covered traffic is, week by week. A week alarms when that"
    " share is clearly above normal."
)
METHOD = (
    "Every trace's nearest eval row (all-MiniLM-L6-v2 on scrubbed text) gives the mean distance and the"
    " share beyond a threshold τ: the"
    f" {drift.QUANTILE:.0%} point of a reference window of covered traffic, reweighted to each week's mix of"
    " eval-set regions, so a week that only moves between covered topics keeps its τ honest; both with 95%"
    f" intervals. The count beyond τ and the count beyond the far {drift.FAR_QUANTILE:.0%} point are each"
    " tested exactly against that reference; an alarm needs the smaller p, doubled, below"
    f" {drift.ALPHA} and, at that point, a share at least {drift.MIN_EXCESS:.0%} above the reference's."
)

weeks = sorted(sample_weeks(db))
with st.form("run"):
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    choice = left.selectbox(
        "Window", [drift.ALL_WEEKS, *reversed(weeks)], help="an ISO week, or every week", key="drift_window"
    )
    start = right.form_submit_button("Run drift", type="primary")
if start:
    bar = st.progress(0.0, text="Starting")

    def report(stage: str, done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{stage} {done:,} of {total:,} texts")

    input_drift.run_input_drift(db, user.name, choice, config=config)
    run = drift.run_drift(db, user.name, choice, progress=report, config=config)
    bar.empty()
    st.success(f"Drift run {run.id}: {run.embedded:,} texts embedded, {run.scrubbed:,} machine-scrubbed.")


def _input_drift_section() -> None:
    """What users send, per week, against the reference weeks: length, language mix, intent mix."""
    st.subheader("Input drift")
    st.caption(
        "Whether what users send has moved, eval set or not: request length (KS test), language mix"
        " (identified offline on scrubbed text) and intent mix (chi-square tests) of each week against"
        f" the reference weeks; p-values Bonferroni-adjusted across the three, an alarm needs adjusted"
        f" p < {input_drift.ALPHA} and an effect of at least"
        f" {', '.join(f'{v:g} ({k})' for k, v in input_drift.MIN_EFFECT.items())}."
    )
    rows = input_drift.input_drift_series(db)
    if not rows:
        st.info("No input drift measured yet: Run drift above measures it too.")
        return
    for reason in input_drift.alarm_reasons([r for r in rows if r["week"] == rows[-1]["week"]]):
        st.warning(md(reason), icon=":material/warning:")
    frame = pd.DataFrame(rows)
    figure = go.Figure()
    for test, part in frame.groupby("test", sort=False):
        figure.add_trace(
            go.Scatter(x=part["week"], y=part["effect"], mode="lines+markers", name=chart_text(test))
        )
    figure.update_layout(height=260)
    show(figure, x="ISO week", y="Effect size (KS D or total variation, 0–1)")
    moved = [
        {
            "week": r["week"],
            "test": r["test"],
            "value": m["value"],
            "reference": m["reference"],
            "week share": m["week"],
        }
        for r in rows
        if r["alarm"]
        for m in r["detail"].get("moved", [])[:3]
    ]
    columns = ["week", "test", "n", "reference_n", "statistic", "p_value", "p_adjusted", "effect", "alarm"]
    with st.expander("Input drift as a table"):
        show_table(frame[columns], hide_index=True)
        if moved:
            show_table(pd.DataFrame(moved), hide_index=True)


series = pd.DataFrame(drift.drift_series(db))
latest = drift.latest_run(db)
if series.empty or latest is None:
    st.info("No drift run yet: run one above (it needs an eval set and traces).")
    _input_drift_section()
    st.stop()

last = series.iloc[-1]


def _reference_share(window: pd.Series) -> str:
    """The window's reweighted reference share; a run stored before windows kept it has the run's."""
    value = window.get("ref_share")
    if value is None or pd.isna(value):
        return f"{window['run_ref_share']:.1%} of the reference window {reference}"
    return f"{value:.1%} of the reference window {reference} reweighted to the week's mix"


reference = f"{md(latest['ref_from'])}..{md(latest['ref_to'])}"
why = (
    f"{last['share_beyond']:.1%} of {int(last['n']):,} traces in {md(last['window'])} lie beyond"
    f" τ = {last['tau']:.3f} against {_reference_share(last)}"
)
if pd.notna(last.get("far_share")):
    why += (
        f"; {last['far_share']:.1%} lie beyond the far point {last['far_tau']:.3f} against"
        f" {last['far_ref_share']:.1%} (p = {last['p_value']:.2g}: the smaller of the two tests, doubled)."
    )
else:
    why += f" (p = {last['p_value']:.2g})."


def _sentence(window: pd.Series) -> str:
    """The verdict in words a lead can repeat; the statistics stay one click away."""
    normal = window.get("ref_share")
    normal = window["run_ref_share"] if normal is None or pd.isna(normal) else normal
    said = (
        f"In {md(window['window'])}, {window['share_beyond']:.0%} of traffic is farther from every eval row"
        f" than {drift.QUANTILE:.0%} of covered traffic is (normally {normal:.0%})"
    )
    if window["alarm"]:
        return f"{said}: the eval set does not cover what users now ask."
    return f"{said}: the eval set still covers what users ask."


if last["alarm"]:
    st.warning(f"**Alarm**: {_sentence(last)}", icon=":material/warning:")
else:
    st.success(f"No alarm: {_sentence(last)}", icon=":material/check_circle:")
with st.expander("The statistics behind it"):
    st.markdown(why)
    st.caption(METHOD)


def _with_interval(column: str, low: str, high: str, name: str, colour: str) -> list:
    """One measure over the windows with its 95% interval as a named band."""
    return line(series["window"], series[column], name, colour, series[low], series[high])


figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
for trace in _with_interval("share_beyond", "share_lo", "share_hi", "share beyond τ", BLUE):
    figure.add_trace(trace, 1, 1)
alarms = series[series["alarm"].astype(bool)]
if len(alarms):
    alarm = marks(alarms["window"], alarms["share_beyond"], "alarm: beyond τ above the reference")
    figure.add_trace(alarm, 1, 1)
for trace in _with_interval("mean_distance", "mean_lo", "mean_hi", "mean distance", ORANGE):
    figure.add_trace(trace, 2, 1)
figure.add_hline(
    y=float(latest["ref_share"]),
    line={"dash": "dot", "color": GREY},
    annotation_text="reference share",
    annotation_position="bottom right",
    row=1,
    col=1,
)
versions = series["eval_version"].tolist()
for i in range(1, len(versions)):
    if versions[i] != versions[i - 1]:
        figure.add_vline(x=i - 0.5, line_dash="dash", line_color=GREY)
        figure.add_annotation(x=series["window"].iloc[i], y=1, yref="paper", text=f"eval set v{versions[i]}")
show(figure, "ISO week", ["Share beyond τ (%)", "Mean cosine distance"], [True, False], height=560)

columns = ["window", "n", "mean_distance", "share_beyond", "ref_share", "far_share", "far_ref_share"]
table = series[[*columns, "p_value", "alarm", "eval_version", "tau", "far_tau"]]
with st.expander("Series as a table"):
    show_table(table, percent=["share_beyond", "ref_share", "far_share", "far_ref_share"])

st.subheader("Traffic the eval set does not cover")
st.caption(
    f"Clusters of the week's far traffic: traces beyond the {drift.FAR_QUANTILE:.0%} point of its"
    " reweighted reference, grouped by meaning and named by their most distinctive words."
)
windows = [w["window"] for w in drift.run_windows(db, latest["id"])]
window = st.selectbox("Window of the latest run", list(reversed(windows)))
found = drift.clusters(db, latest["id"], window)
if not found:
    st.info("No trace of this window is far from the eval set.")
else:
    show_table(
        pd.DataFrame(
            [
                {
                    "reason": f"drift:{drift.cluster_key(c['cluster'])}",
                    "cluster": c["name"],
                    "traces": c["size"],
                    "farthest": c["farthest"],
                }
                for c in found
            ]
        ),
        hide_index=True,
    )
    for cluster in found[:8]:
        with st.expander(f"{md(cluster['name'])} · {cluster['size']} traces"):
            for example in drift.cluster_examples(db, user, latest["id"], window, cluster["cluster"]):
                st.caption(f"{md(example['trace_id'])} · distance {example['distance']:.3f}")
                st.text(example["text"])

    st.subheader("Send to sampling")
    st.caption(
        "The farthest traces of the biggest clusters, plus a seeded random control of the week, become a"
        " drift-driven batch; they go to the scrubber, then to review and labeling. Their reason names the"
        " cluster by number (`drift:cluster-<n>`): its words come from scrubs no reviewer has signed off,"
        " so they stay on this page."
    )
    with st.form("send"):
        cols = st.columns(3)
        count = cols[0].number_input("Clusters", 1, 50, min(3, len(found)))
        per_cluster = cols[1].number_input("Traces per cluster", 1, 20, 3)
        control = cols[2].number_input("Random control, %", 0, 100, 10)
        send = st.form_submit_button("Send to sampling")
    if send:
        try:
            batch = drift.send_to_sampling(
                db, user, latest["id"], window, int(count), int(per_cluster), control / 100
            )
        except FlywheelError as error:
            st.error(md(error))
        else:
            if batch.already_sent:
                st.info(
                    f"Already sent: these clusters of this run went out as batch {batch.id}"
                    f" ({batch.sampled} traces of {md(batch.week)}); nothing new was sent."
                )
            else:
                st.success(
                    f"Batch {batch.id}: {batch.sampled} traces of {md(batch.week)} sent to the scrubber."
                )
            show_table(pd.DataFrame(batch.reasons.items(), columns=["reason", "traces"]))

with st.expander("Reference window"):
    st.caption(
        f"τ for eval-set version {latest['eval_version']} is calibrated on {reference}. Pick weeks the"
        " eval set covers (by default the first weeks of traffic); the next run uses them."
    )
    with st.form("reference"):
        left, right = st.columns(2)
        first = left.selectbox(
            "From", weeks, index=weeks.index(latest["ref_from"]) if latest["ref_from"] in weeks else 0
        )
        to = right.selectbox(
            "To", weeks, index=weeks.index(latest["ref_to"]) if latest["ref_to"] in weeks else 0
        )
        if st.form_submit_button("Set reference window"):
            drift.set_reference_window(db, user, int(latest["eval_version"]), first, to)
            st.success(f"Reference window {md(first)}..{md(to)} set; run drift again to recalibrate.")

_input_drift_section()
