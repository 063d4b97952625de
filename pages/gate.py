import pandas as pd
import streamlit as st

from flywheel import evalsets, runs
from flywheel.auth import require_role
from flywheel.errors import FlywheelError
from pages._ui import current_user, database, md

db, user = database(), current_user()
require_role(user, "lead")
st.title("Release gate")
st.caption(
    "Two systems on the same rows of one version. Ship only with no regression on regression-class rows "
    "(codes that are regression or saturated metrics) and adversarial rows at or above the threshold."
)

versions = [v["version"] for v in evalsets.eval_set_versions(db)]
versions = [v for v in versions if len(runs.systems(db, v)) >= 2]
if not versions:
    st.info("The gate needs results of two systems on one version: import them on the Pass rate page.")
    st.stop()

left, middle, right = st.columns(3)
version = left.selectbox("Version", sorted(versions, reverse=True), key="gate_version")
systems = runs.systems(db, version)
baseline = middle.selectbox("Baseline", systems, key="gate_baseline")
others = [s for s in systems if s != baseline]
challenger = right.selectbox("Challenger", others, index=len(others) - 1, key="gate_challenger")

threshold = st.slider(
    "Adversarial pass rate the gate asks for",
    0.0,
    1.0,
    float(runs.adversarial_threshold(db)),
    step=0.05,
    format="percent",
    key="gate_threshold",
)
if threshold != runs.adversarial_threshold(db) and st.button("Save as the gate's threshold", key="gate_save"):
    try:
        runs.set_adversarial_threshold(db, user, threshold)
    except FlywheelError as error:
        st.error(md(error))
    else:
        st.rerun()

try:
    verdict = runs.gate(db, version, baseline, challenger, adversarial_min=threshold)
except FlywheelError as error:
    st.error(md(error))
    st.stop()

if verdict["verdict"] == "ship":
    st.success(f"**SHIP** {md(challenger)} on version {version}")
else:
    st.error(f"**BLOCK** {md(challenger)} on version {version}")
for reason in verdict["reasons"]:
    st.write(f"- {md(reason)}")

cols = st.columns(4)
for col, side in zip(cols[:2], ("baseline", "challenger"), strict=True):
    numbers = verdict[side]
    low, high = numbers["ci"]
    col.metric(
        f"{side}: {md(numbers['system'])}", "n/a" if numbers["rate"] is None else f"{numbers['rate']:.1%}"
    )
    col.caption(f"{numbers['passed']}/{numbers['total']} rows · 95% CI {low:.1%} – {high:.1%}")
cols[2].metric(
    "Exact McNemar p",
    f"{verdict['p_value']:.3g}",
    help=f"{len(verdict['regressions'])} pass→fail, {len(verdict['improvements'])} fail→pass",
)
adversarial = verdict["adversarial"]
cols[3].metric(
    "Adversarial (challenger)",
    "no rows" if adversarial["rate"] is None else f"{adversarial['rate']:.1%}",
    help=f"{adversarial['passed']}/{adversarial['total']} rows; threshold {adversarial['threshold']:.0%}",
)
st.caption(
    f"{verdict['paired']} rows paired; {verdict['unpaired']} active rows lack a result of either system. "
    f"{len(verdict['regressions'])} flipped pass→fail ({len(verdict['blocking'])} regression-class), "
    f"{len(verdict['improvements'])} fail→pass."
)

st.subheader("Flipped rows")
flips = runs.flipped_rows(db, verdict)
if flips:
    st.dataframe(pd.DataFrame(flips), hide_index=True)
else:
    st.caption("No row flipped between the two systems.")
st.code(
    f"python -m flywheel gate --db PATH --version {version} --baseline SYS --challenger SYS --json",
    language="bash",
)
