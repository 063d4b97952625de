"""Charts and tables to one convention, so every page reads the same way.

Charts: every axis titled with its unit, rates drawn as percentages (fractions in the data, ``%`` on the
axis), intervals drawn as named bands, markers named in the legend, the Okabe–Ito palette (distinct for
colour-blind readers) with one hue per system, a percentage axis fitted to its data with a margin, and
room for every label. Tables: readable headers, blanks for missing values, numbers formatted for people.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from flywheel.labeling.taxonomy import code_names
from pages._ui import as_text, database

# Okabe & Ito (2008), most distinct first; yellow last, it is faint on white.
BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, YELLOW, BLACK = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
PALETTE = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, BLACK, YELLOW)
ALARM = VERMILLION
GREY = "#7F7F7F"
CONVENTION = "flywheel-convention"  # layout.meta key: the figure went through ``finish``
INTERVAL = "95% interval"


def colours(names: Iterable[object]) -> dict[object, str]:
    """One palette hue per name, in sorted order, so a system keeps its colour across charts."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names), key=str))}


def fill(colour: str, alpha: float = 0.18) -> str:
    """``colour`` (``#rrggbb``) as a translucent fill for an interval band."""
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def band(
    x: Sequence, low: Sequence, high: Sequence, name: str, colour: str, group: str | None = None
) -> list:
    """An interval as a shaded band between ``low`` and ``high``, shown in the legend as ``name``."""
    x, low, high = list(x), list(low), list(high)
    return [
        go.Scatter(
            x=x + x[::-1],
            y=high + low[::-1],
            fill="toself",
            fillcolor=fill(colour),
            mode="lines",
            line={"width": 0},
            hoverinfo="skip",
            name=name,
            legendgroup=group or name,
        )
    ]


def line(
    x: Sequence,
    y: Sequence,
    name: str,
    colour: str,
    low: Sequence | None = None,
    high: Sequence | None = None,
    interval: str = INTERVAL,
    **style: object,
) -> list:
    """A measure over ``x`` as a line with markers, with its interval as a band named ``name, interval``."""
    traces = band(x, low, high, f"{name}: {interval}", colour, group=name) if low is not None else []
    style = {"mode": "lines+markers", "line": {"color": colour}, "marker": {"color": colour}, **style}
    return [*traces, go.Scatter(x=list(x), y=list(y), name=name, legendgroup=name, cliponaxis=False, **style)]


def steps(x: Sequence, *series: Sequence, until: object = None) -> tuple[list, list[list]]:
    """A measure that holds from one point to the next (a pass rate between runs) as the corners of a
    step line: each value is drawn flat until the next ``x``, the last one until ``until`` when given."""
    xs: list = []
    ys: list[list] = [[] for _ in series]
    ends = [*list(x)[1:], until][: len(x)]
    for i, (start, end) in enumerate(zip(x, ends, strict=True)):
        for corner in (start, end) if end is not None else (start,):
            xs.append(corner)
            for out, values in zip(ys, series, strict=True):
                out.append(values[i])
    return xs, ys


def marks(x: Sequence, y: Sequence, name: str, colour: str = ALARM, symbol: str = "x") -> go.Scatter:
    """Points that mean something (an alarm, an alert), named in the legend by what they mean."""
    return go.Scatter(
        x=list(x),
        y=list(y),
        mode="markers",
        name=name,
        cliponaxis=False,
        marker={"color": colour, "size": 13, "symbol": symbol, "line": {"width": 2, "color": colour}},
    )


def finish(
    figure: go.Figure,
    x: str,
    y: str | Sequence[str],
    percent: bool | Sequence[bool] = False,
    height: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """``figure`` to convention: axis titles (one ``y`` per subplot row, top first), percentage axes
    formatted and fitted to their data, the palette for traces without a colour, room for labels."""
    ys = [y] if isinstance(y, str) else list(y)
    percents = [percent] * len(ys) if isinstance(percent, bool) else list(percent)
    names = _y_axes(figure)[: len(ys)] or ["yaxis"]
    for axis, text, is_percent in zip(names, ys, percents, strict=False):
        settings = {"title": {"text": text}, "automargin": True}
        if is_percent:
            settings |= {"tickformat": _tick_format(figure, axis), "range": percent_range(figure, axis)}
        figure.layout[axis].update(settings)
    for axis in _x_axes(figure):
        # Weeks and versions are categories: in order, not in the order the traces first name them.
        order = figure.layout[axis].categoryorder
        figure.layout[axis].update(automargin=True, categoryorder=order or "category ascending")
    _recolour(figure)
    # make_subplots numbers its rows top to bottom: the last x axis is the one drawn under the chart.
    figure.layout[_x_axes(figure)[-1]].update(title={"text": x})
    figure.update_layout(
        template="plotly_white",
        colorway=list(PALETTE),
        height=height or figure.layout.height,
        margin={"l": 10, "r": 30, "t": 70 if title or figure.layout.title.text else 40, "b": 10},
        legend=_legend(bool(title or figure.layout.title.text), _top_title_room(figure)),
        meta={CONVENTION: {"x": x, "y": ys, "percent": percents}},
    )
    if title:
        figure.update_layout(title={"text": title, "x": 0, "xanchor": "left"})
    return figure


def _legend(titled: bool, above: float = 0.0) -> dict:
    # Over the plot when the chart has no title; on the right when it has, so the two never overlap.
    # ``above``: room (in paper units) that a subplot title over the top row takes, kept free of it.
    if titled:
        return {"orientation": "v", "yanchor": "top", "y": 1, "x": 1.02, "title": None}
    return {"orientation": "h", "yanchor": "bottom", "y": 1.02 + above, "x": 0, "title": None}


def _top_title_room(figure: go.Figure) -> float:
    """Paper height of the title make_subplots puts over the top row (0 when there is none)."""
    annotations = figure.layout.annotations or ()
    top = any(a.yanchor == "bottom" and _number(a.y) and a.y >= 0.99 for a in annotations)
    # a 14px title and its gap, over a plot area of about four fifths of the figure
    return 28 / (0.8 * (figure.layout.height or 450)) if top else 0.0


def _recolour(figure: go.Figure) -> None:
    """Colours from outside the palette (plotly express's defaults) mapped onto it, in order of use."""
    ours, mapping = {*PALETTE, GREY}, {}
    used = {getattr(getattr(t, p, None), "color", None) for t in figure.data for p in ("marker", "line")}
    free = [c for c in PALETTE if c not in used] or list(PALETTE)
    for trace in figure.data:
        for part in ("marker", "line"):
            style = getattr(trace, part, None)
            colour = getattr(style, "color", None) if style is not None else None
            if isinstance(colour, str) and colour.startswith("#") and colour not in ours:
                new = mapping.setdefault(colour, free[len(mapping) % len(free)])
                style.color = new


def show(figure: go.Figure, x: str, y: str | Sequence[str], percent=False, container=st, **options) -> None:
    """Draw ``figure`` to convention (see ``finish``) at the container's width."""
    key = options.pop("key", None)
    container.plotly_chart(finish(figure, x, y, percent, **options), width="stretch", key=key)


def percent_range(figure: go.Figure, axis: str = "yaxis") -> list[float]:
    """A share axis's range: fits the data (points, bands, error bars) with a margin, inside 0–100%."""
    values = [v for v in _axis_values(figure, axis) if v is not None and not math.isnan(v)]
    if not values:
        return [0.0, 1.0]
    low, high = min(values), max(values)
    pad = max(0.02, 0.12 * (high - low))
    return [max(0.0, low - pad), min(1.0 + pad / 2, high + pad)]


def score_range(values: Sequence[float], span: float = 0.2) -> list[float]:
    """An axis for a 0–1 score: fitted to the data, at least ``span`` wide, inside 0–1 (with room for the
    markers at the edges)."""
    values = [v for v in values if _number(v)]
    if not values:
        return [0.0, 1.0]
    low, high = min(values), max(values)
    width = max(span, 1.25 * (high - low))
    centre = (low + high) / 2
    low, high = centre - width / 2, centre + width / 2
    if low < 0.0:  # against an edge: the rest from the other side
        low, high = 0.0, min(1.0, width)
    elif high > 1.0:
        low, high = max(0.0, 1.0 - width), 1.0
    return [max(-0.02, low - 0.02), min(1.02, high + 0.02)]


def _tick_format(figure: go.Figure, axis: str) -> str:
    low, high = percent_range(figure, axis)
    return ".1%" if high - low < 0.1 else ".0%"


def _axis_values(figure: go.Figure, axis: str) -> list[float]:
    ref = "y" + axis.removeprefix("yaxis")
    values: list[float] = []
    for trace in figure.data:
        if (getattr(trace, "yaxis", None) or "y") != ref or trace.y is None:
            continue
        ys = [float(v) for v in trace.y if _number(v)]
        values += ys
        error = getattr(trace, "error_y", None)
        if error is not None and error.array is not None:
            plus = list(error.array)
            minus = list(error.arrayminus) if error.arrayminus is not None else plus
            values += [v + p for v, p in zip(ys, plus, strict=False) if _number(p)]
            values += [v - m for v, m in zip(ys, minus, strict=False) if _number(m)]
    for shape in figure.layout.shapes or ():
        if shape.yref == ref and _number(shape.y0) and _number(shape.y1):
            values += [float(shape.y0), float(shape.y1)]
    return values


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _y_axes(figure: go.Figure) -> list[str]:
    return sorted((k for k in figure.layout.to_plotly_json() if k.startswith("yaxis")), key=_axis_order)


def _x_axes(figure: go.Figure) -> list[str]:
    found = sorted((k for k in figure.layout.to_plotly_json() if k.startswith("xaxis")), key=_axis_order)
    return found or ["xaxis"]


def _axis_order(name: str) -> int:
    return int(name[5:] or 1)


def in_units(frame: pd.DataFrame, columns: Sequence[str], percent: Sequence[bool]) -> pd.DataFrame:
    """``frame`` with ``columns`` as text, each row in its own unit: a percentage where ``percent`` is
    true for the row (a rate), a plain number otherwise (milliseconds, dollars); blank when missing."""
    out = frame.copy()
    for column in columns:
        out[column] = [
            "" if not _number(v) else f"{v:.1%}" if is_rate else f"{v:,.4g}"
            for v, is_rate in zip(frame[column], percent, strict=True)
        ]
    return out


# Tables -----------------------------------------------------------------------------------------------

HEADERS = {
    "row_id": "Row",
    "trace_id": "Trace",
    "started_at": "Started",
    "finished_at": "Finished",
    "created_at": "Created",
    "decided_at": "Decided",
    "decided_by": "Decided by",
    "ran_at": "Ran",
    "imported_at": "Imported",
    "at": "Time (UTC)",
    "n": "Traces",
    "id": "ID",
    "ci": "95% interval",
    "p_value": "p-value",
    "tau": "τ",
    "far_tau": "Far τ",
    "line_no": "Line",
    "eval_version": "Eval-set version",
    "share_beyond": "Share beyond τ",
    "ref_share": "Reference share",
    "far_share": "Far share",
    "far_ref_share": "Far reference share",
    "mean_distance": "Mean distance",
    "merged_into": "Merged into",
    "batch_id": "Batch",
    "scrub_id": "Scrub",
    "entity_id": "Entity ID",
    "claimed_by": "Claimed by",
    "claim_expires": "Claim expires",
}


def header(column: object) -> str:
    """A column key as people read it: ``row_id`` → Row, ``started_at`` → Started, else sentence case."""
    key = str(column)
    if key in HEADERS:
        return HEADERS[key]
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else key


STORED_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2}(\.\d+)?)?Z")


def readable(value: object) -> object:
    """A cell for people: lists and mappings as plain text rather than JSON, booleans as yes/no, a stored
    UTC time to the minute."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and (moment := STORED_TIME.fullmatch(value)):
        return f"{moment[1]} {moment[2]} UTC"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {readable(v)}" for k, v in value.items() if v not in (None, "", [], {}))
    if isinstance(value, list | tuple):
        return ", ".join(str(readable(v)) for v in value)
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return readable(json.loads(value))
        except ValueError:
            return value
    return value


def table_frame(frame: pd.DataFrame, percent: Iterable[str] = (), codes: dict[str, str] | None = None):
    """``frame`` ready for ``st.dataframe`` with its column settings: numeric columns stay numbers
    (they sort) unless a value is missing, then they become formatted text with blanks; text columns
    are readable text; ``percent`` columns hold shares; ``codes`` names each taxonomy code."""
    percent, out, config = set(percent), frame.copy(), {}
    for column in out.columns:
        values = out[column]
        label = header(column)
        if codes and column == "code":
            named = [_coded(v, codes) for v in values]
            values = out[column] = pd.Series(named, index=out.index, dtype=object)
        if _numeric(values) and values.isna().any():
            out[column] = as_text(out[[column]], {column: _pattern(column in percent, values)})[column]
            config[column] = st.column_config.TextColumn(label)
        elif _numeric(values) and column in percent:  # still a number, so it sorts; one decimal throughout
            out[column] = values * 100
            config[column] = st.column_config.NumberColumn(label, format="%.1f%%")
        elif _numeric(values):
            fmt = "localized" if _integral(values) else "%.3g"
            config[column] = st.column_config.NumberColumn(label, format=fmt)
        else:
            out[column] = as_text(pd.DataFrame({column: values.map(readable)}))[column]
            config[column] = st.column_config.TextColumn(label, width=_width(out[column]))
    return out, config


def show_table(
    frame: pd.DataFrame | list[dict],
    percent: Iterable[str] = (),
    codes: dict[str, str] | None = None,
    container=st,
    **options: object,
):
    """Show a table to convention (see ``table_frame``); a ``code`` column is named from the taxonomy
    unless ``codes`` is given; ``options`` go to ``st.dataframe`` and their ``column_config`` entries win
    over the defaults."""
    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    if codes is None and "code" in frame.columns:  # every table names its codes; ``{}`` opts out
        codes = code_names(database())
    out, config = table_frame(frame, percent, codes)
    for column, setting in (options.pop("column_config", None) or {}).items():
        config[column] = _merged(config.get(column), setting)
    options.setdefault("hide_index", True)
    return container.dataframe(out, column_config=config, **options)


def _merged(default: object, given: object) -> object:
    if given is None:  # st.dataframe's way of hiding a column
        return None
    if isinstance(default, dict) and isinstance(given, dict):
        return {**default, **{k: v for k, v in given.items() if v is not None}}
    if isinstance(given, str):
        return {**default, "label": given} if isinstance(default, dict) else given
    return given


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _integral(values: pd.Series) -> bool:
    present = values.dropna()
    return pd.api.types.is_integer_dtype(values) or bool((present == present.round()).all())


def _pattern(is_percent: bool, values: pd.Series) -> str:
    if is_percent:
        return "{:.1%}"
    return "{:,.0f}" if _integral(values) else "{:,.3g}"


def _coded(code: object, names: dict[str, str]) -> object:
    if code is None or code == "" or (isinstance(code, float) and math.isnan(code)):
        return code
    name = names.get(str(code))
    return f"{code} — {name}" if name else code


def _width(values: pd.Series) -> str | None:
    # Never "small": it cut codes such as CARD_INTERNAL to "CARD_I".
    longest = max((len(str(v)) for v in values), default=0)
    return "large" if longest > 40 else None
