import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from flywheel.auth import require_role
from flywheel.config import load_config
from flywheel.errors import FlywheelError
from flywheel.evals import runs
from flywheel.evals import versions as evalsets
from pages._charts import colours, line, show, show_table
from pages._ui import chart_text, current_user, database, md

db, user = database(), current_user()
require_role(user, "lead")
st.title("Pass rate")
st.caption(
    "Pass rate per eval-set version and system, with the rows behind each point and a 95% Wilson "
    "interval. A drop on a new version is split into rows carried from the previous version (a fall "
    "there is a regression) and rows new in it (a harder set)."
)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


all_versions = evalsets.eval_set_versions(db)
versions = [v["version"] for v in all_versions]
set_of = {v["version"]: v["eval_set"] for v in all_versions}
with st.expander("Import results", expanded=not runs.systems(db)):
    if not versions:
        st.info("No eval-set version yet: import a starter suite or fold in on the Eval sets page.")
    else:
        left, middle, right = st.columns(3)
        version = left.selectbox(
            "Version", versions, format_func=lambda v: f"v{v} · {set_of[v]}", key="results_version"
        )
        system = middle.text_input("System (model or release name)", key="results_system")
        run_label = right.text_input("Run label (optional)", key="results_label")
        upload = st.file_uploader(
            "Results: our JSONL/CSV (row_id, passed, ...), a promptfoo results JSON or an Inspect log",
            type=["jsonl", "csv", "json"],
            key="results_file",
        )
        if upload is not None and st.button("Import results", key="results_import"):
            try:
                report = runs.import_results(
                    db, user, version, system, upload.getvalue(), upload.name, run_label or None
                )
            except evalsets.BadRows as error:
                st.error(f"{md(upload.name)}: {len(error.problems)} bad lines, nothing imported")
                show_table(pd.DataFrame(error.problems, columns=["line", "reason"]), hide_index=True)
            except FlywheelError as error:
                st.error(md(error))
            else:
                st.success(md(report.summary()))

rates = runs.pass_rates(db)
if not rates:
    st.info("No results yet. Import a regression run above, or `python -m flywheel import-results`.")
    st.stop()

figure = go.Figure()
hues = colours(r["system"] for r in rates)
frozen = {s["name"] for s in evalsets.eval_sets(db) if s["frozen"]}
sets = sorted({r["eval_set"] for r in rates}, key=lambda name: (name in frozen, name))
for system in sorted({r["system"] for r in rates}):
    for eval_set in sets:  # a line never joins two sets: their versions are different suites
        points = [
            r for r in rates if r["system"] == system and r["eval_set"] == eval_set and r["rate"] is not None
        ]
        if not points:
            continue
        name = chart_text(system if len(sets) == 1 else f"{system} · {eval_set}")
        for trace in line(
            [f"v{r['version']}" for r in points],
            [r["rate"] for r in points],
            name,
            hues[system],
            [r["ci"][0] for r in points],
            [r["ci"][1] for r in points],
            customdata=[[r["passed"], r["total"], r["ci"][0], r["ci"][1]] for r in points],
            hovertemplate="%{x}: %{y:.1%} (%{customdata[0]}/%{customdata[1]} rows, "
            "95% CI %{customdata[2]:.1%}–%{customdata[3]:.1%})<extra>%{fullData.name}</extra>",
            line={"color": hues[system], "dash": "dot" if eval_set in frozen else "solid"},
        ):
            figure.add_trace(trace)
figure.update_xaxes(
    type="category",
    categoryorder="array",
    categoryarray=[f"v{v}" for v in sorted({r["version"] for r in rates})],
)
show(figure, "Eval-set version", "Pass rate (%)", percent=True, title="Pass rate per eval-set version")
table = pd.DataFrame(
    [
        {
            "version": r["version"],
            "set": r["eval_set"],
            "system": r["system"],
            "passed": r["passed"],
            "rows": r["total"],
            "rate": r["rate"],
            "95% CI": f"{_pct(r['ci'][0])} – {_pct(r['ci'][1])}",
            "flaky rows": r["flaky"],
            "adversarial": f"{r['adversarial']['passed']}/{r['adversarial']['total']}",
            "adversarial rate": r["adversarial"]["rate"],
            "coverage": f"{r['coverage']['passed']}/{r['coverage']['total']}",
        }
        for r in rates
    ]
)
show_table(table, percent=["rate", "adversarial rate"], hide_index=True)

st.subheader("Carried rows against new rows")
systems = runs.systems(db)
live = runs.live_system(db)
# the live system first: a system with no results here would only say "not a regression" about nothing
default = systems.index(live["system"]) if live and live["system"] in systems else 0
system = st.selectbox("System", systems, index=default, key="split_system")
splits = [s for s in (runs.carried_vs_new(db, v, system) for v in versions) if s]
for split in sorted(splits, key=lambda s: s["version"]):
    fell = split["carried_fell"]
    if fell:
        verdict = f"{len(fell)} carried rows fell: a regression (exact McNemar p = {split['p_value']:.3g})"
    elif split["carried_now"]["total"]:
        verdict = "no carried row fell: not a regression"
    else:  # nothing paired: no claim either way
        verdict = f"no row graded on both versions: nothing to compare, no verdict on v{split['version']}"
    st.write(
        f"**v{split['previous']} → v{split['version']}**: all rows {_pct(split['all_before']['rate'])} → "
        f"{_pct(split['all_now']['rate'])}; carried rows ({split['carried_now']['total']}) "
        f"{_pct(split['carried_before']['rate'])} → {_pct(split['carried_now']['rate'])}; new rows "
        f"({split['new']['total']}) {_pct(split['new']['rate'])}. {verdict}."
    )
if not splits:
    st.caption(f"{md(system)} has results on one version only.")

st.subheader("Slices: starter, failure and coverage rows")
st.caption(
    "Coverage rows are traces the model once handled well, kept so it keeps doing so: a fall there is "
    "lost ground, not a harder set. Code-checked rows are graded by their check, not by a judge."
)


def _version_picker(choices: set[int], key: str) -> int | None:
    """Newest first; the suite refreshed from production (not a frozen set) chosen until someone picks."""
    ordered, current = sorted(choices, reverse=True), evalsets.current_version(db)
    index = ordered.index(current) if current in ordered else 0
    return st.selectbox(
        "Version", ordered, index=index, format_func=lambda v: f"v{v} · {set_of.get(v, '')}", key=key
    )


slice_version = _version_picker({r["version"] for r in rates if r["system"] == system}, "slice_version")
if slice_version is not None:
    slices = pd.DataFrame(runs.pass_rate_slices(db, slice_version, system))
    slices["ci"] = slices["ci"].map(lambda ci: f"{ci[0]:.1%} – {ci[1]:.1%}")
    show_table(
        slices[["slice", "rows", "passed", "total", "rate", "ci", "flaky"]],
        hide_index=True,
        percent=["rate"],
        key="slices_table",
    )

st.subheader("Per taxonomy code, with its metric lifecycle")
code_version = _version_picker({r["version"] for r in rates}, "code_version")
stages = runs.lifecycle(db, up_to=code_version, saturated_versions=load_config().saturated_versions)
codes = pd.DataFrame(runs.per_code(db, code_version, system))
if not codes.empty:
    codes["stage"] = codes["code"].map(lambda c: stages.get(c, {}).get("stage", "no results"))
    codes["ci"] = codes["ci"].map(lambda ci: f"{ci[0]:.1%} – {ci[1]:.1%}")
    show_table(
        codes[["code", "stage", "passed", "total", "rate", "ci", "flaky"]],
        hide_index=True,
        percent=["rate"],
    )
st.caption(
    "capability: still low, the hill to climb · regression: at least 90%, must stay · "
    "saturated: 100% on the last versions run, a candidate to retire."
)

flagged = runs.retired_failing(db)
st.subheader("Retired rows that fail again")
if flagged:
    st.warning(f"{len(flagged)} retired rows failed again after they were archived.")
    show_table(pd.DataFrame(flagged), hide_index=True)
else:
    st.caption("No retired row has failed again.")
