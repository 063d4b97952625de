from datetime import timedelta

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from flywheel import overview
from flywheel.config import load_config
from flywheel.labeling.labels import my_labels
from flywheel.online.signal_alerts import VALUE_SIGNALS, current_alerts
from flywheel.review.scrubs import review_progress
from flywheel.store.clock import week_monday
from pages._charts import (
    ALARM,
    BLUE,
    GREEN,
    ORANGE,
    PURPLE,
    SKY,
    VERMILLION,
    in_units,
    line,
    marks,
    score_range,
    show,
    show_table,
    steps,
)
from pages._ui import chart_frame, chart_text, current_user, database, md

db = database()
user = current_user()
st.title("Overview")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _age(days: float | None) -> str:
    if days is None:
        return ""
    return "under a day" if days < 1 else f"{days:.0f} day{'s' if round(days) != 1 else ''}"


def _verdict(health: dict) -> None:
    verdict = health["verdict"]
    if verdict["alarm"]:
        st.warning(md(verdict["words"]), icon=":material/warning:")
    elif verdict["status"] == "healthy":
        st.success(md(verdict["words"]), icon=":material/check_circle:")
    else:
        st.info(md(verdict["words"]), icon=":material/info:")


def _figures(health: dict) -> None:
    suite = [p for p in health["suite"] if p["rate"] is not None]
    current = [p for p in suite if p["version"] == health["version"]]
    weeks = health["weeks"][-overview.RECENT_WEEKS - overview.EARLIER_WEEKS :]
    cols = st.columns(4)
    if current:
        point = current[-1]
        cols[0].metric(
            md(f"Pass rate, {health['eval_set']} v{point['version']}"),
            _pct(point["rate"]),
            help=f"{md(health['system'])}: {point['passed']} of {point['n']} rows",
        )
        cols[0].caption(f"95% interval {_pct(point['low'])} – {_pct(point['high'])}")
    for name, points in health["other_sets"].items():
        graded = [p for p in points if p["rate"] is not None]
        if graded:
            last = graded[-1]
            cols[0].caption(
                md(f"{name} v{last['version']}: {_pct(last['rate'])} ({last['passed']} of {last['n']})")
            )
    recent = weeks[-overview.RECENT_WEEKS :]
    before = weeks[: -overview.RECENT_WEEKS]
    for col, key, title in ((cols[1], "thumbs_down", "Thumbs-down"), (cols[2], "escalated", "Escalation")):
        now_share = _share(recent, key)
        then_share = _share(before, key)
        change = None if now_share is None or then_share is None else round((now_share - then_share) * 100, 1)
        delta = None if change is None else f"{change:+.1f} pts" if change else "no change"
        colour = "inverse" if change else "off"  # a rise is bad news; no change is neither
        col.metric(
            f"{title}, last {len(recent)} weeks",
            _pct(now_share),
            delta,
            delta_color=colour,
            delta_arrow="auto" if change else "off",
        )
    drift = health["drift"]
    if drift:
        cols[3].metric(
            f"Beyond τ, {drift[-1]['week']}",
            _pct(drift[-1]["share"]),
            help="Share of the week's traffic farther from the eval set than the calibrated threshold τ",
        )
    else:
        cols[3].metric("Beyond τ", "not measured", help="No drift run yet (Drift page)")


def _share(weeks: list[dict], key: str) -> float | None:
    n = sum(w["n"] for w in weeks)
    return sum(w[key] for w in weeks) / n if n else None


def _day(week: str) -> str:
    return week_monday(week).isoformat()


def _suite_lines(
    figure, points: list[dict], name: str, colour: str, window: tuple[str, str], dash: str
) -> None:
    """One set's pass rate: each run's point (labeled with its version) where it falls in the window, and
    the rate held as a step until the next run, so a run graded before the window still shows as a level."""
    points = [p for p in points if p["rate"] is not None]
    if not points:
        return
    days = [p["at"][:10] for p in points]
    x, (y, low, high) = steps(days, [p["rate"] for p in points], [p["low"] for p in points],
                              [p["high"] for p in points], until=window[1])  # fmt: skip
    for trace in line(x, y, name, colour, low, high, mode="lines", line={"color": colour, "dash": dash}):
        trace.cliponaxis = True
        figure.add_trace(trace, 1, 1)
    inside = [(d, p) for d, p in zip(days, points, strict=True) if window[0] <= d <= window[1]]
    if inside:
        figure.add_trace(
            go.Scatter(
                x=[d for d, _ in inside],
                y=[p["rate"] for _, p in inside],
                text=[f"v{p['version']}" for _, p in inside],
                mode="markers+text",
                textposition="top right",  # clear of the step's rise at the same date
                marker={"color": colour, "size": 8},
                cliponaxis=False,
                name=f"{name}: run",
                legendgroup=name,
                showlegend=False,
            ),
            1,
            1,
        )


def _health_chart(health: dict) -> None:
    weeks = health["weeks"][-overview.RECENT_WEEKS - overview.EARLIER_WEEKS :]
    shown = [w["week"] for w in weeks]
    lines = [health["suite"], *health["other_sets"].values()]
    runs = [p["at"][:10] for points in lines for p in points]
    # to the end of the last week, or of the day of a run graded after it
    window = (_day(shown[0]), max([(week_monday(shown[-1]) + timedelta(days=6)).isoformat(), *runs]))
    drift = [d for d in health["drift"] if d["week"] in set(shown)]
    figure = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.32, 0.4, 0.28],
        subplot_titles=("The suite", "Production", "Judge"),
    )
    system = chart_text(health["system"] or "")
    _suite_lines(figure, health["suite"], f"pass rate, {chart_text(health['eval_set'])} ({system})", BLUE,
                 window, "solid")  # fmt: skip
    for name, points in health["other_sets"].items():
        _suite_lines(figure, points, f"pass rate, {chart_text(name)} ({system})", SKY, window, "dot")
    if drift:
        for trace in line(
            [_day(d["week"]) for d in drift],
            [d["share"] for d in drift],
            "share beyond τ (drift)",
            VERMILLION,
            [d["low"] for d in drift],
            [d["high"] for d in drift],
        ):
            figure.add_trace(trace, 2, 1)
        alarms = [d for d in drift if d["alarm"]]
        if alarms:
            figure.add_trace(
                marks(
                    [_day(d["week"]) for d in alarms],
                    [d["share"] for d in alarms],
                    "drift alarm: beyond τ significantly above the reference",
                    ALARM,
                ),
                2,
                1,
            )
    for key, name, colour in (("thumbs_down", "thumbs-down", ORANGE), ("escalated", "escalation", PURPLE)):
        for trace in line(
            [_day(w["week"]) for w in weeks],
            [w[key] / w["n"] if w["n"] else None for w in weeks],
            name,
            colour,
        ):
            figure.add_trace(trace, 2, 1)
    judged = [w for w in weeks if w["judge_n"]]
    for trace in line(
        [_day(w["week"]) for w in judged], [w["judge_mean"] for w in judged], "mean judge score", GREEN
    ):
        figure.add_trace(trace, 3, 1)
    # Real dates, one tick per ISO week: runs fall on their day, weeks on their Monday, gaps stay gaps.
    start = (week_monday(shown[0]) - timedelta(days=3)).isoformat()
    figure.update_xaxes(
        type="date",
        range=[start, window[1]],
        tick0=_day(shown[0]),
        dtick=7 * 24 * 3600 * 1000,
        tickformat="%G-W%V",
        hoverformat="%G-W%V (%a %d %b)",
    )
    if judged:  # a 0–1 score on at least a fifth of its scale, so noise does not read as a swing
        figure.update_yaxes(range=score_range([w["judge_mean"] for w in judged]), row=3, col=1)
    show(
        figure,
        "ISO week",
        ["Pass rate (%)", "Share of traces (%)", "Mean score (0–1)"],
        [True, True, False],
        height=640,
    )
    st.caption(
        "Bands are 95% intervals (Wilson for the pass rate, the drift run's interval for the share beyond τ)."
        " A pass rate holds from the run that measured it to the next run; labels name the eval-set version"
        " each run graded. Dotted: the live system on other eval sets (a frozen regression set, say)."
    )


def _waiting() -> None:
    """What waits at each station, one column each, with its age and the page that resolves it."""
    st.subheader("Where the loop is waiting")
    backlog = overview.station_backlog(db, retire_months=load_config().retire_months)
    for col, item in zip(st.columns(len(backlog)), backlog, strict=True):
        col.metric(item["station"], f"{item['waiting']:,}")
        if item["waiting"] and item["oldest"]:
            col.caption(f"{item['oldest_means']}: {item['oldest'][:10]} ({_age(item['age_days'])} ago)")
        elif item["waiting"]:  # rows from before the store kept times
            col.caption(f"{item['oldest_means']}: not recorded")
        else:
            col.caption("nothing waiting")
        col.page_link(item["page"], label=f"Open {item['page_title']}", icon=":material/arrow_forward:")


def _cycle_and_gate() -> None:
    cycle_col, gate_col = st.columns(2)
    with cycle_col:
        st.markdown("**Last weekly cycle**")
        cycle = overview.last_cycle(db)
        if cycle is None:
            st.caption("No cycle has run yet.")
        else:
            state = "needs attention" if cycle["needs_attention"] else cycle["status"]
            st.text(f"{cycle['week'] or ''} (started {cycle['started_at'][:16]}): {state}")
            for reason in cycle["attention"]:
                st.text(f"• {reason}")
        st.page_link("pages/cycle.py", label="Open Weekly cycle", icon=":material/arrow_forward:")
    with gate_col:
        st.markdown("**Last release decision**")
        gate = overview.last_gate(db)
        if gate is None:
            st.caption("No release decision recorded yet.")
        else:
            st.text(
                f"{gate['verdict']}: {gate['challenger']} against {gate['baseline']} on v{gate['version']}"
                f" ({gate['decided_at'][:10]}, {gate['decided_by']})"
            )
            if gate["failed"]:
                st.text("failed: " + ", ".join(gate["failed"]))
        st.page_link("pages/gate.py", label="Open Release gate", icon=":material/arrow_forward:")


def _my_queue() -> None:
    st.subheader("Your queue")
    queue = overview.queue_for(db, user)
    if user.role == "reviewer":
        done = review_progress(db, user)
        cols = st.columns(3)
        cols[0].metric("Scrubs awaiting review", f"{done['pending']:,}")
        cols[1].metric("Scrubs decided", f"{done['total'] - done['pending']:,}")
        cols[2].metric("Skipped by you", f"{done['skipped']:,}")
        st.page_link("pages/review.py", label="Open Review scrubs", icon=":material/arrow_forward:")
    cols = st.columns(3)
    cols[0].metric("Traces awaiting labels", f"{queue['open']:,}")
    cols[1].metric("Labeled by you", f"{queue['mine']:,}")
    cols[2].metric("Labeled by you, last 7 days", f"{queue['mine_week']:,}")
    st.page_link("pages/label.py", label="Open Label", icon=":material/arrow_forward:")
    recent = my_labels(db, user, limit=10)
    if recent:
        st.markdown("**Your latest labels**")
        show_table(recent, column_config={"id": None, "via": None})


def _what(health: dict) -> str:
    if health["version"] is None or health["system"] is None:
        return "Is the suite keeping up with production?"
    whose = "live since its release decision" if health["live"] else "no release shipped yet: the newest run"
    return (
        f"Is the suite keeping up with production? The pass rate of {md(health['system'])} ({whose}) on"
        f" {md(health['eval_set'])} v{health['version']}, beside drift and production signals over the same"
        " weeks."
    )


if user.role == "lead":
    health = overview.flywheel_health(db)
    st.caption(_what(health))
    _verdict(health)
    if health["weeks"]:
        _figures(health)
    _waiting()
    if health["weeks"]:
        _health_chart(health)
    _cycle_and_gate()
else:
    _my_queue()

counts = overview.loop_counts(db)
if counts["traces"] == 0:
    st.info(
        "No traces yet. A lead imports JSONL or CSV on the Import page, or runs `python -m flywheel ingest`."
    )
    st.stop()

st.subheader("Production traffic")
cols = st.columns(4)
cols[0].metric("Traces", f"{counts['traces']:,}", help=f"{counts['weeks']} weeks of traffic")
cols[1].metric("Sampled", f"{counts['sampled']:,}", help=f"in {counts['batches']} batches")
cols[2].metric("Labeled", f"{counts['labeled']:,}", help=f"{counts['failures']:,} of them failures")
cols[3].metric(
    "Quarantined lines", f"{counts['quarantined']:,}", help=f"over {counts['ingest_runs']} imports"
)
left, right = st.columns(2)
traffic = chart_frame(overview.weekly_traffic(db), "week", "cohort")
show(
    px.bar(traffic, x="week", y="traces", color="cohort", title="Traces per week by cohort"),
    "ISO week",
    "Traces (count)",
    container=left,
)
rates = chart_frame(overview.weekly_signal_rates(db), "week", "signal")
show(
    px.line(rates, x="week", y="share", color="signal", markers=True, title="Anomaly signals per week"),
    "ISO week",
    "Share of traces (%)",
    percent=True,
    container=right,
)
st.subheader("Intents gaining share: the last four ISO weeks against the weeks before")
show_table(
    overview.intent_mix(db),
    percent=["recent_share", "earlier_share"],
    column_config={"recent_share": "Share, last 4 weeks", "earlier_share": "Share, before"},
)

if user.role == "lead":
    st.subheader("Signal alerts, last four weeks")
    alerts = current_alerts(db, periods=4)
    if alerts:
        columns = ["period", "cohort", "signal", "direction", "value", "centre", "high", "n"]
        frame = pd.DataFrame(alerts)[columns]
        rates = (~frame["signal"].isin(VALUE_SIGNALS)).tolist()
        show_table(
            in_units(frame, ["value", "centre", "high"], rates),
            column_config={"period": "Week", "centre": "Band centre", "high": "Band high", "n": "Traces"},
        )
    else:
        st.caption("No signal left its control band in the last four weeks.")
