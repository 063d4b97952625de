import plotly.express as px
import streamlit as st

from flywheel.overview import intent_mix, loop_counts, weekly_signal_rates, weekly_traffic
from pages._ui import chart_frame, database

db = database()
st.title("Overview")
st.caption("Production traces flow in, get sampled, scrubbed, labeled and folded into the eval set.")

counts = loop_counts(db)
cols = st.columns(6)
cols[0].metric("Traces", f"{counts['traces']:,}", help=f"{counts['weeks']} weeks of traffic")
cols[1].metric("Sampled", f"{counts['sampled']:,}", help=f"in {counts['batches']} batches")
cols[2].metric("Awaiting scrub review", f"{counts['scrub_pending']:,}")
cols[3].metric(
    "Approved scrubs", f"{counts['scrub_approved']:,}", help=f"{counts['scrub_rejected']} rejected"
)
cols[4].metric("Labeled", f"{counts['labeled']:,}", help=f"{counts['failures']:,} of them failures")
cols[5].metric(
    "Quarantined lines",
    f"{counts['quarantined']:,}",
    help=f"over {counts['ingest_runs']} imports; {counts['changed_duplicates']} re-sent traces differed",
)

if counts["traces"] == 0:
    st.info(
        "No traces yet. A lead imports JSONL or CSV on the Import page, or runs `python -m flywheel ingest`."
    )
    st.stop()

left, right = st.columns(2)
traffic = chart_frame(weekly_traffic(db), "week", "cohort")
left.plotly_chart(
    px.bar(traffic, x="week", y="traces", color="cohort", title="Traces per week by cohort"),
    width="stretch",
)
rates = chart_frame(weekly_signal_rates(db), "week", "signal")
right.plotly_chart(
    px.line(
        rates, x="week", y="share", color="signal", markers=True, title="Anomaly signals per week"
    ).update_yaxes(tickformat=".1%"),
    width="stretch",
)
st.subheader("Intents gaining share: the last four ISO weeks against the weeks before")
st.dataframe(
    intent_mix(db),
    hide_index=True,
    column_config={
        "recent_share": st.column_config.NumberColumn("share, last 4 weeks", format="percent"),
        "earlier_share": st.column_config.NumberColumn("share, before", format="percent"),
    },
)

from flywheel.signal_alerts import current_alerts  # noqa: E402 - the alerts block of the online-quality station

st.subheader("Signal alerts, last four weeks")
alerts = current_alerts(db, periods=4)
if alerts:
    st.dataframe(
        alerts,
        hide_index=True,
        column_order=["period", "cohort", "signal", "direction", "value", "centre", "high", "n"],
    )
else:
    st.caption("No signal left its control band in the last four weeks.")
