import pandas as pd
import plotly.express as px
import streamlit as st
from plotly.subplots import make_subplots

from flywheel import overview
from flywheel.config import load_config
from flywheel.labeling.labels import my_labels
from flywheel.labeling.taxonomy import taxonomy_entries
from flywheel.online.signal_alerts import VALUE_SIGNALS, current_alerts
from flywheel.review.scrubs import review_progress
from pages._charts import (
    ALARM,
    BLUE,
    GREEN,
    ORANGE,
    PURPLE,
    VERMILLION,
    in_units,
    line,
    marks,
    show,
    show_table,
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
            f"Pass rate, v{point['version']}",
            _pct(point["rate"]),
            help=f"{md(health['system'])}: {point['passed']} of {point['n']} rows",
        )
        cols[0].caption(f"95% interval {_pct(point['low'])} – {_pct(point['high'])}")
    recent = weeks[-overview.RECENT_WEEKS :]
    before = weeks[: -overview.RECENT_WEEKS]
    for col, key, title in ((cols[1], "thumbs_down", "Thumbs-down"), (cols[2], "escalated", "Escalation")):
        now_share = _share(recent, key)
        then_share = _share(before, key)
        delta = (
            None if now_share is None or then_share is None else f"{(now_share - then_share) * 100:+.1f} pts"
        )
        col.metric(f"{title}, last {len(recent)} weeks", _pct(now_share), delta, delta_color="inverse")
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


def _health_chart(health: dict) -> None:
    weeks = health["weeks"][-overview.RECENT_WEEKS - overview.EARLIER_WEEKS :]
    shown = {w["week"] for w in weeks}
    first = min(shown) if shown else ""
    suite = [p for p in health["suite"] if p["rate"] is not None and p["week"] >= first]
    drift = [d for d in health["drift"] if d["week"] in shown]
    order = sorted(shown | {p["week"] for p in suite})
    figure = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.07,
        row_heights=[0.32, 0.4, 0.28],
        subplot_titles=("The suite", "Production", "Judge"),
    )
    system = chart_text(health["system"] or "")
    if suite:
        for trace in line(
            [p["week"] for p in suite],
            [p["rate"] for p in suite],
            f"pass rate, {system}",
            BLUE,
            [p["low"] for p in suite],
            [p["high"] for p in suite],
            text=[f"v{p['version']}" for p in suite],
            textposition="top center",
            mode="lines+markers+text",
        ):
            figure.add_trace(trace, 1, 1)
    if drift:
        for trace in line(
            [d["week"] for d in drift],
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
                    [d["week"] for d in alarms],
                    [d["share"] for d in alarms],
                    "drift alarm: beyond τ significantly above the reference",
                    ALARM,
                ),
                2,
                1,
            )
    for key, name, colour in (("thumbs_down", "thumbs-down", ORANGE), ("escalated", "escalation", PURPLE)):
        for trace in line(
            [w["week"] for w in weeks], [w[key] / w["n"] if w["n"] else None for w in weeks], name, colour
        ):
            figure.add_trace(trace, 2, 1)
    judged = [w for w in weeks if w["judge_n"]]
    for trace in line(
        [w["week"] for w in judged], [w["judge_mean"] for w in judged], "mean judge score", GREEN
    ):
        figure.add_trace(trace, 3, 1)
    figure.update_xaxes(categoryorder="array", categoryarray=order, type="category")
    show(
        figure,
        "ISO week",
        ["Pass rate (%)", "Share of traces (%)", "Mean score (0–1)"],
        [True, True, False],
        height=640,
    )
    st.caption(
        "Bands are 95% intervals (Wilson for the pass rate, the drift run's interval for the share beyond τ)."
        " Labels on the pass-rate line name the eval-set version each run graded."
    )


def _backlog() -> None:
    st.subheader("What waits at each station")
    for item in overview.station_backlog(db, retire_months=load_config().retire_months):
        left, middle, right = st.columns([3, 2, 2], vertical_alignment="center")
        left.metric(item["station"], f"{item['waiting']:,}")
        if item["waiting"]:
            middle.caption(f"{item['oldest_means']}: {item['oldest'][:10]} ({_age(item['age_days'])} ago)")
        else:
            middle.caption("nothing waiting")
        right.page_link(item["page"], label=f"Open {item['page_title']}", icon=":material/arrow_forward:")
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
        names = {e["code"]: e["name"] for e in taxonomy_entries(db)}
        show_table(recent, codes=names, column_config={"id": None, "via": None})


def _what(health: dict) -> str:
    if health["version"] is None or health["system"] is None:
        return "Is the suite keeping up with production?"
    whose = "live since its release decision" if health["live"] else "no release shipped yet: the newest run"
    return (
        f"Is the suite keeping up with production? The pass rate of {md(health['system'])} ({whose}) on"
        f" eval-set v{health['version']}, beside drift and production signals over the same weeks."
    )


if user.role == "lead":
    health = overview.flywheel_health(db)
    st.caption(_what(health))
    _verdict(health)
    if health["weeks"]:
        _figures(health)
        _health_chart(health)
    _backlog()
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
