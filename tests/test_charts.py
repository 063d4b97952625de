"""Charts and tables to convention: the helpers, and every chart and table the pages draw on the demo."""

import json
import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from pages._charts import (
    BLUE,
    CONVENTION,
    GREY,
    PALETTE,
    colours,
    finish,
    header,
    line,
    marks,
    percent_range,
    score_range,
    steps,
    table_frame,
)
from pages._nav import PAGES

LEAD_PAGES = [path for pages in PAGES.values() for path, _, _, roles in pages if "lead" in roles]
MISSING = {"None", "nan", "NaN", "null", "<NA>", "NaT"}  # "none" is a value (an adversarial kind)


# The helpers ------------------------------------------------------------------------------------------


def test_a_share_axis_fits_its_data_instead_of_squashing_it_into_the_top():
    figure = go.Figure(
        line(["v1", "v2", "v3"], [0.91, 0.88, 0.80], "bot", BLUE, [0.86, 0.83, 0.76], [0.95, 0.92, 0.85])
    )
    low, high = percent_range(figure)
    assert 0.70 <= low < 0.76 and 0.95 < high <= 1.0
    finish(figure, "Eval-set version", "Pass rate (%)", percent=True)
    assert figure.layout.yaxis.range == (low, high) and figure.layout.yaxis.tickformat == ".0%"


@pytest.mark.parametrize(
    "values, low, high",
    [
        ([0.5], 0.48, 0.52),  # one point: a margin either side, never a zero-width axis
        ([0.0, 0.01], 0.0, 0.03),  # never below 0%
        ([0.99, 1.0], 0.97, 1.01),  # a point at 100% is not cut in half
        ([], 0.0, 1.0),  # nothing to fit: the whole scale
        ([math.nan, 0.3], 0.28, 0.32),  # a missing value is ignored
    ],
)
def test_the_share_axis_range_edge_cases(values, low, high):
    figure = go.Figure(go.Scatter(x=list(range(len(values))), y=values))
    found = percent_range(figure)
    assert found == pytest.approx([low, high], abs=1e-9)


def test_a_reference_line_stays_inside_the_fitted_range():
    figure = go.Figure(go.Scatter(x=["a", "b"], y=[0.5, 0.55]))
    figure.add_hline(y=0.9)
    assert percent_range(figure)[1] > 0.9


def test_every_system_keeps_one_distinct_palette_hue_and_express_colours_are_replaced():
    hues = colours(["bot-b", "bot-a", "bot-b"])
    assert hues == {"bot-a": PALETTE[0], "bot-b": PALETTE[1]}
    frame = pd.DataFrame({"week": ["w1", "w1", "w2"], "n": [1, 2, 3], "cohort": ["a", "b", "a"]})
    figure = finish(px.bar(frame, x="week", y="n", color="cohort"), "ISO week", "Traces (count)")
    used = [trace.marker.color for trace in figure.data]
    assert len(set(used)) == 2 and set(used) <= set(PALETTE)


def test_intervals_and_markers_are_named_in_the_legend():
    traces = [*line(["w1", "w2"], [0.1, 0.2], "share beyond τ", BLUE, [0.05, 0.1], [0.15, 0.3])]
    traces.append(marks(["w2"], [0.2], "alarm"))
    names = [trace.name for trace in traces]
    assert names == ["share beyond τ: 95% interval", "share beyond τ", "alarm"]
    assert traces[0].fill == "toself" and traces[0].line.width == 0


def test_subplot_rows_get_their_own_titles_and_units():
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=2, cols=1, shared_xaxes=True)
    figure.add_trace(go.Scatter(x=["a"], y=[0.4]), 1, 1)
    figure.add_trace(go.Scatter(x=["a"], y=[12.0]), 2, 1)
    finish(figure, "ISO week", ["Share (%)", "Distance"], [True, False])
    assert figure.layout.yaxis.title.text == "Share (%)" and figure.layout.yaxis.tickformat
    assert figure.layout.yaxis2.title.text == "Distance" and not figure.layout.yaxis2.tickformat
    assert figure.layout.xaxis2.title.text == "ISO week"


@pytest.mark.parametrize(
    "column, expected",
    [
        ("row_id", "Row"),
        ("started_at", "Started"),
        ("trace_id", "Trace"),
        ("flaky_rows", "Flaky rows"),
        ("n", "Traces"),
    ],
)
def test_headers_read_as_words(column, expected):
    assert header(column) == expected


def test_tables_show_blanks_full_codes_and_readable_values():
    frame = pd.DataFrame(
        {
            "row_id": ["r1", "r2"],
            "code": ["CARD_INTERNAL_ERROR", None],
            "score": [0.5, None],
            "count": [1200, 3],
            "criteria": ['{"complete": true, "safety": false}', None],
            "tags": [["faq", "card"], []],
            "started_at": ["2026-12-07T14:21:27.605Z", "2026-12-07T14:21Z, and more"],
        }
    )
    out, config = table_frame(frame, codes={"CARD_INTERNAL_ERROR": "Card internal error"})
    assert list(out["code"]) == ["CARD_INTERNAL_ERROR — Card internal error", ""]
    assert list(out["score"]) == ["0.5", ""]
    assert out["count"].tolist() == [1200, 3] and config["count"]["type_config"]["format"] == "localized"
    assert list(out["criteria"]) == ["complete: yes; safety: no", ""]
    assert list(out["tags"]) == ["faq, card", ""]
    assert list(out["started_at"]) == ["2026-12-07 14:21 UTC", "2026-12-07T14:21Z, and more"]
    assert config["row_id"]["label"] == "Row"
    assert all(config[c].get("width") != "small" for c in config)


# Every chart and table the pages draw ----------------------------------------------------------------


@pytest.fixture(scope="module")
def drawn(demo_template, tmp_path_factory):
    """Every plotly figure and table of every page a lead opens on the demo, with the page it came from."""
    import os
    import shutil

    path = tmp_path_factory.mktemp("charts") / "demo.db"
    shutil.copy(demo_template, path)
    before = {k: os.environ.get(k) for k in ("FLYWHEEL_DB", "FLYWHEEL_EMBED_WORKER")}
    os.environ.update(FLYWHEEL_DB=str(path), FLYWHEEL_EMBED_WORKER="off")
    try:
        at = AppTest.from_file("../app.py", default_timeout=180)
        at.session_state["user_name"] = "ana"
        at.run()
        charts, tables = [], []
        for page in LEAD_PAGES:
            at.switch_page(page)
            at.run()
            assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
            charts += [(page, json.loads(c.proto.spec)) for c in at.get("plotly_chart")]
            tables += [(page, t) for t in at.dataframe]
    finally:
        for key, value in before.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return charts, tables


def test_the_demo_draws_charts_on_the_pages_that_have_them(drawn):
    charts, _ = drawn
    pages = {page for page, _ in charts}
    assert {"pages/overview.py", "pages/drift.py", "pages/quality.py", "pages/online.py"} <= pages
    assert len(charts) >= 10


def test_every_chart_has_titled_axes_with_units_and_went_through_the_convention(drawn):
    charts, _ = drawn
    for page, spec in charts:
        layout = spec["layout"]
        meta = layout.get("meta", {}).get(CONVENTION)
        assert meta, f"{page}: a chart drawn without the convention helper"
        y_axes = sorted(k for k in layout if k.startswith("yaxis"))
        titled = [layout[k].get("title", {}).get("text") for k in y_axes[: len(meta["y"])]]
        assert all(titled), f"{page}: a y axis without a title {titled}"
        x_titles = [layout[k].get("title", {}).get("text") for k in layout if k.startswith("xaxis")]
        assert any(x_titles), f"{page}: no x axis title"
        for axis in (k for k in layout if k.startswith(("xaxis", "yaxis"))):
            assert layout[axis].get("automargin"), f"{page}: {axis} may clip its labels"


def test_every_share_axis_is_a_percentage_of_fractions_fitted_to_its_data(drawn):
    charts, _ = drawn
    for page, spec in charts:
        layout, meta = spec["layout"], spec["layout"]["meta"][CONVENTION]
        y_axes = sorted((k for k in layout if k.startswith("yaxis")), key=lambda k: int(k[5:] or 1))
        for axis, title, is_percent in zip(y_axes, meta["y"], meta["percent"], strict=False):
            says_percent = "(%)" in title or "%" in title.split(":")[-1]
            assert says_percent == is_percent, f"{page}: {title!r} and its format disagree"
            if not is_percent:
                continue
            assert "%" in layout[axis]["tickformat"], f"{page}: {title} not drawn as a percentage"
            ref = "y" + axis[5:]
            values = [
                v
                for t in spec["data"]
                if t.get("yaxis", "y") == ref
                for v in t.get("y", [])
                if isinstance(v, int | float)
            ]
            assert all(0 <= v <= 1 for v in values), f"{page}: {title} mixes percentages and fractions"
            low, high = layout[axis]["range"]
            if values and min(values) > 0.3:
                assert low > 0.1, f"{page}: {title} squashes {min(values):.2f}–{max(values):.2f} into the top"
            assert low <= min(values, default=low) and high >= max(values, default=high)


def test_every_chart_uses_the_palette(drawn):
    charts, _ = drawn
    allowed = {c.lower() for c in (*PALETTE, GREY)}
    for page, spec in charts:
        for trace in spec["data"]:
            for part in ("marker", "line"):
                colour = trace.get(part, {}).get("color")
                if isinstance(colour, str) and colour.startswith("#"):
                    assert colour.lower() in allowed, f"{page}: {trace.get('name')} drawn in {colour}"


def test_every_table_has_readable_headers_and_no_missing_value_words(drawn):
    _, tables = drawn
    assert len(tables) >= 10
    for page, table in tables:
        config = json.loads(table.proto.columns or "{}")
        frame = table.value
        for column in frame.columns:
            label = (config.get(str(column)) or {}).get("label") or str(column)
            assert "_" not in label, f"{page}: header {label!r} is a field name"
            cells = {str(v) for v in frame[column] if isinstance(v, str)}
            assert not cells & MISSING, f"{page}: {label} shows {cells & MISSING}"
            if column == "code" and "Name" not in [header(c) for c in frame.columns]:
                bare = {c for c in cells if c and c != "(none)" and " — " not in c}
                assert not bare, f"{page}: codes without their names {sorted(bare)[:3]}"


@pytest.mark.parametrize(
    "x, values, until, corners, held",
    [
        ([], [], "d9", [], []),
        (["d1"], [0.9], None, ["d1"], [0.9]),
        (["d1"], [0.9], "d9", ["d1", "d9"], [0.9, 0.9]),
        (["d1", "d5"], [0.9, 0.8], "d9", ["d1", "d5", "d5", "d9"], [0.9, 0.9, 0.8, 0.8]),
        (["d1", "d5"], [0.9, 0.8], None, ["d1", "d5", "d5"], [0.9, 0.9, 0.8]),
    ],
)
def test_a_measure_held_between_runs_is_drawn_as_steps(x, values, until, corners, held):
    got_x, (got_y, got_low) = steps(x, values, [v - 0.1 for v in values], until=until)
    assert got_x == corners and got_y == held
    assert got_low == pytest.approx([v - 0.1 for v in held])


@pytest.mark.parametrize(
    "values, low, high",
    [
        ([], 0.0, 1.0),
        ([0.8] * 10, 0.68, 0.92),  # a flat score keeps a fifth of the scale, not a swing of noise
        ([0.78, 0.81], 0.675, 0.915),
        ([0.0, 0.05], -0.02, 0.22),  # against 0: the rest of the span above
        ([0.99, 1.0], 0.78, 1.02),  # against 1: the rest below
        ([0.1, 0.9], -0.02, 1.02),
        ([float("nan"), 0.5], 0.38, 0.62),
    ],
)
def test_a_score_axis_fits_its_data_but_never_magnifies_noise(values, low, high):
    assert score_range(values) == pytest.approx([low, high])
