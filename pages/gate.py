import json

import pandas as pd
import streamlit as st

from flywheel.auth import require_role
from flywheel.config import load_config
from flywheel.errors import FlywheelError
from flywheel.evals import runs
from flywheel.evals import versions as evalsets
from pages._charts import show_table
from pages._ui import current_user, database, md

db, user = database(), current_user()
require_role(user, "lead")
config = load_config()
st.title("Release gate")
st.caption(
    "Two systems on the same rows of one version. Ship only when every criterion holds: complete (every "
    "active row graded for both), safety (adversarial rows all graded, none flips, rate at or above the "
    "threshold), zero regressions (waivable one by one, with a reason) and no loss in pass rate."
)

names = evalsets.set_names(db)
eval_set = None
if len(names) > 1:
    eval_set = st.selectbox("Eval set", names, key="gate_set")
versions = [v["version"] for v in evalsets.eval_set_versions(db, eval_set)]
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
    float(runs.adversarial_threshold(db, default_pct=config.gate_adversarial_pct)),
    step=0.05,
    format="percent",
    key="gate_threshold",
)
if threshold != runs.adversarial_threshold(db, default_pct=config.gate_adversarial_pct) and st.button(
    "Save as the gate's threshold", key="gate_save"
):
    try:
        runs.set_adversarial_threshold(db, user, threshold)
    except FlywheelError as error:
        st.error(md(error))
    else:
        st.rerun()
improve = st.checkbox("Require an improvement in pass rate", key="gate_require_improvement")

try:
    verdict = runs.gate(
        db,
        version,
        baseline,
        challenger,
        threshold,
        require_improvement=improve,
        default_adversarial_pct=config.gate_adversarial_pct,
    )
except FlywheelError as error:
    st.error(md(error))
    st.stop()

adversarial_ids = {r["row_id"] for r in runs.flipped_rows(db, verdict) if r["adversarial"]}
waivable = [r for r in verdict["regressions"] if r not in adversarial_ids and r not in verdict["flaky"]]
banner = st.container()
waivers = {}
if waivable:
    with st.expander(f"Waive regressions for this decision ({len(waivable)} waivable)"):
        st.caption("Adversarial rows take no waiver. A waiver holds for this decision only, with its reason.")
        for row_id in waivable:
            reason = st.text_input(f"Reason to waive {row_id}", key=f"gate_waive_{row_id}")
            if reason.strip():
                waivers[row_id] = reason
if waivers:
    verdict = runs.gate(
        db,
        version,
        baseline,
        challenger,
        threshold,
        waivers,
        improve,
        default_adversarial_pct=config.gate_adversarial_pct,
    )

with banner:
    if verdict["verdict"] == "ship":
        st.success(f"**SHIP** {md(challenger)} on version {version}")
    else:
        st.error(f"**BLOCK** {md(challenger)} on version {version}")
    for criterion in verdict["criteria"]:
        # Streamlit's own icon font: an emoji needs a font the reader's machine may not have
        mark = ":green[:material/check_circle:]" if criterion["ok"] else ":red[:material/cancel:]"
        st.markdown(f"{mark} **{criterion['name']}**: {md(criterion['detail'])}")

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
    f"{verdict['paired']} rows paired; {len(verdict['unpaired'])} active rows lack a graded result of "
    f"either system. {len(verdict['regressions'])} flipped pass→fail, {len(verdict['improvements'])} "
    f"fail→pass; {len(verdict['flaky'])} flaky."
)
if verdict["unpaired"]:
    st.text("Rows not graded for both systems: " + ", ".join(verdict["unpaired"]))
if verdict["flaky"]:
    st.text("Flaky rows (mixed results; listed apart, they neither block alone nor hide): ")
    st.text(", ".join(verdict["flaky"]))


def _side_by_side(flip: dict) -> None:
    """One flipped row in full: a lead judges the flip by reading both outputs against the expectation."""
    blocks = " · blocks" if flip["blocks"] else ""
    with st.expander(f"{md(flip['row_id'])} · {flip['flip']}{blocks} · {md(flip['code'] or 'no code')}"):
        st.caption("Scrubbed input")
        st.text(flip["input"])
        st.caption("Expected behaviour")
        st.text(flip["expected"] or "(none)")
        base, chal = st.columns(2)
        for col, side in ((base, "baseline"), (chal, "challenger")):
            with col.container(border=True):
                st.caption(f"{side}: {md(verdict[side]['system'])}")
                st.text(flip[f"{side}_output"] if flip[f"{side}_output"] is not None else "(no output)")


st.subheader("Flipped rows")
flips = runs.flipped_rows(db, verdict)
if flips:
    show_table(
        pd.DataFrame(flips)[["row_id", "flip", "blocks", "code", "adversarial"]],
        hide_index=True,
    )
    for flip in flips:
        _side_by_side(flip)
else:
    st.caption("No row flipped between the two systems.")

if st.button("Record this release decision", key="gate_record", type="primary"):
    try:
        decision = runs.record_decision(db, user, verdict)
    except FlywheelError as error:
        st.error(md(error))
    else:
        st.success(f"Decision {decision} recorded: {verdict['verdict']}.")

st.subheader("Release decisions")
live = runs.live_system(db)
if live:
    st.caption(
        f"Live system: {md(live['system'])}, shipped on version {live['version']} "
        f"by {md(live['decided_by'])} at {md(live['decided_at'])}."
    )
else:
    st.caption("No shipped decision yet: there is no live system.")
decisions = runs.release_decisions(db)
if decisions:
    table = pd.DataFrame(decisions)
    table["criteria"] = [", ".join(c["name"] for c in d["criteria"] if not c["ok"]) for d in decisions]
    table["waived"] = [json.dumps(d["waived"], ensure_ascii=False) for d in decisions]
    table = table.rename(columns={"criteria": "failed criteria"})
    columns = ["id", "decided_at", "decided_by", "version", "baseline", "challenger", "verdict"]
    show_table(table[[*columns, "failed criteria", "waived"]], hide_index=True)
st.code(
    f"python -m flywheel gate --db PATH --version {version} --baseline SYS --challenger SYS"
    " [--waive ROW_ID=REASON] [--require-improvement] --json",
    language="bash",
)
