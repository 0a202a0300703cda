"""Plotly figure builders for the app (no Streamlit here): light curves, folded light curves,
periodograms, the embedding scatter and small multiples; an evaluation run's figures (macro F1
against spc, confusion matrices, layer weights, speed), one colour per model.

Conventions astronomers expect: magnitude axes inverted (brighter is up), error bars, each band in
its own colour (the same colour for a band everywhere), folded views showing two cycles.

Inputs are plain pandas frames so the builders do not depend on store internals: a light curve is a
frame with columns band, time, mag, mag_err (+ phase for a folded view).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lcdash import scores

# Passband colours roughly following wavelength (blue to red), so multi-band plots read at a glance.
BAND_COLOURS = {
    "u": "#7b3294", "U": "#7b3294", "B": "#2166ac", "g": "#1a9850", "G": "#1a9850",
    "V": "#66a61e", "r": "#d7301f", "R": "#d7301f", "i": "#8c2d04", "I": "#8c2d04",
    "z": "#404040", "y": "#636363", "W1": "#b2182b", "W2": "#67001f",
}
_FALLBACK = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
             "#bcbd22", "#17becf"]
# Categories in the scatter: a qualitative palette with enough distinct entries for ~20 classes.
CATEGORY_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                    "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39",
                    "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]
MISSING_COLOUR = "#c8c8c8"
MAX_CATEGORIES = 20  # beyond this, the rarest categories share one "other" trace


def band_colour(band: str, index: int = 0) -> str:
    """The colour of a passband: a fixed one for common bands, else a palette entry by index."""
    return BAND_COLOURS.get(str(band), _FALLBACK[index % len(_FALLBACK)])


def _bands(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["band"].astype(str))) if len(frame) else []


def _empty(message: str, height: int = 300) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_layout(height=height, xaxis_visible=False, yaxis_visible=False)
    return fig


def _error_bars(values) -> dict | None:
    err = np.asarray(values, dtype=float)
    if err.size == 0 or np.all(~np.isfinite(err)):
        return None
    return {"type": "data", "array": np.nan_to_num(err, nan=0.0), "visible": True, "thickness": 1,
            "width": 0}


def lightcurve_figure(frame: pd.DataFrame, title: str | None = None, height: int = 380) -> go.Figure:
    """Magnitude against time, one trace per band with error bars, magnitude axis inverted."""
    if frame is None or len(frame) == 0:
        return _empty("no observations", height)
    fig = go.Figure()
    for i, band in enumerate(_bands(frame)):
        part = frame[frame["band"].astype(str) == band]
        fig.add_trace(go.Scatter(
            x=part["time"], y=part["mag"], mode="markers", name=band,
            marker={"size": 5, "color": band_colour(band, i)},
            error_y=_error_bars(part["mag_err"]) if "mag_err" in part else None,
            hovertemplate="t=%{x:.5f} d<br>mag=%{y:.3f}<extra>" + band + "</extra>",
        ))
    fig.update_layout(title=title, height=height, margin={"l": 50, "r": 10, "t": 40 if title else 10,
                                                          "b": 40},
                      xaxis_title="time [d]", yaxis_title="magnitude", legend_title_text="band")
    # whole days, never "53.5k": the reader wants the date as the catalogue gives it (MJD, HJD, ...)
    fig.update_xaxes(tickformat=".0f" if frame["time"].abs().max() >= 1000 else None)
    fig.update_yaxes(autorange="reversed")
    return fig


def folded_figure(
    frame: pd.DataFrame,
    period: float,
    title: str | None = None,
    cycles: int = 2,
    height: int = 380,
    model: pd.DataFrame | None = None,
    model_name: str = "model",
    model_band: str | None = None,
) -> go.Figure:
    """Magnitude against phase (frame has a `phase` column in [0, 1)), drawn over `cycles` cycles,
    one trace per band with error bars, magnitude axis inverted.

    `model` (columns phase in [0, 1] and mag, e.g. `phase_curve` of the period finder's Fourier
    series) is drawn over the points as a line across the same cycles, in `model_band`'s colour
    (dark grey without), named `model_name` in the legend.
    """
    if frame is None or len(frame) == 0:
        return _empty("no observations", height)
    if "phase" not in frame:
        raise ValueError("folded_figure needs a 'phase' column (LightCurve.fold gives it)")
    fig = go.Figure()
    bands = _bands(frame)
    for i, band in enumerate(bands):
        part = frame[frame["band"].astype(str) == band]
        phase = np.concatenate([part["phase"].to_numpy() + c for c in range(cycles)])
        mag = np.tile(part["mag"].to_numpy(), cycles)
        err = np.tile(part["mag_err"].to_numpy(dtype=float), cycles) if "mag_err" in part else []
        fig.add_trace(
            go.Scatter(
                x=phase,
                y=mag,
                mode="markers",
                name=band,
                marker={"size": 5, "color": band_colour(band, i)},
                error_y=_error_bars(err),
                hovertemplate="phase=%{x:.3f}<br>mag=%{y:.3f}<extra>" + band + "</extra>",
            )
        )
    if model is not None and len(model):
        order = np.argsort(model["phase"].to_numpy(dtype=float), kind="stable")
        m_phase = model["phase"].to_numpy(dtype=float)[order]
        m_mag = model["mag"].to_numpy(dtype=float)[order]
        # one line across the cycles; a gap (None) between cycles when the curve does not reach phase 1
        xs, ys = [], []
        for c in range(cycles):
            xs += [*(m_phase + c), None]
            ys += [*m_mag, None]
        colour = band_colour(model_band, bands.index(model_band)) if model_band in bands else "#333333"
        fig.add_trace(
            go.Scatter(
                x=xs[:-1],
                y=ys[:-1],
                mode="lines",
                name=model_name,
                connectgaps=False,
                line={"color": colour, "width": 2.5},
                opacity=0.85,
                hovertemplate="phase=%{x:.3f}<br>model=%{y:.3f}<extra>" + model_name + "</extra>",
            )
        )
    fig.update_layout(
        title=title or f"folded at P = {period:.6g} d",
        height=height,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        xaxis_title="phase",
        yaxis_title="magnitude",
        legend_title_text="band",
    )
    fig.update_xaxes(range=[0, cycles])
    fig.update_yaxes(autorange="reversed")
    return fig


def phase_curve(
    model: Callable[[np.ndarray], np.ndarray], period: float, epoch: float, points: int = 400
) -> pd.DataFrame:
    """A periodic model (magnitude as a function of time in days, e.g. `PeriodResult.model`) over one
    cycle of a fold at `period` with phase 0 at `epoch` (the fold's own epoch, `LightCurve.fold`):
    columns phase (0 to 1 inclusive, `points` + 1 values) and mag, for `folded_figure(model=...)`."""
    if not (np.isfinite(period) and period > 0):
        raise ValueError(f"period must be a positive number of days, got {period}")
    phase = np.linspace(0.0, 1.0, int(points) + 1)
    mag = np.asarray(model(float(epoch) + phase * float(period)), dtype=float)
    return pd.DataFrame({"phase": phase, "mag": mag})


def periodogram_figure(
    period: np.ndarray, power: np.ndarray, marks: Mapping[str, float] | None = None, height: int = 300
) -> go.Figure:
    """Lomb-Scargle power against period (log axis); `marks` draws labelled vertical lines
    (e.g. best, P/2, 2P, catalogue, the period finder's).

    The marks are line traces in data coordinates, not layout shapes: on a log axis plotly reads a
    shape's x as log10(x), which put a 0.5 d mark at 10^0.5 and a 1e21 d axis. The x range is fixed
    to the periods computed plus the marks (within a factor 10 of them; farther ones are left out).
    The marks are named in a legend above the plot, not by text at the top of each line: lines a
    factor 2 apart (best, P/2, 2P) sit a few pixels apart on a log axis spanning decades, and their
    labels ("best = catalogue = folded") printed over one another.
    """
    period = np.asarray(period, dtype=float)
    power = np.asarray(power, dtype=float)
    ok = np.isfinite(period) & np.isfinite(power) & (period > 0)
    period, power = period[ok], power[ok]
    order = np.argsort(period)
    fig = go.Figure(
        go.Scatter(
            x=period[order],
            y=power[order],
            mode="lines",
            name="power",
            line={"width": 1, "color": "#333"},
            showlegend=False,
            hovertemplate="P=%{x:.6g} d<br>power=%{y:.3f}<extra></extra>",
        )
    )
    lo, hi = (float(period.min()), float(period.max())) if period.size else (0.1, 100.0)
    top = float(power.max()) * 1.15 if power.size else 1.0
    dash = {"catalogue": "dot", "folded": "dashdot"}
    # marks at the same period (best = catalogue = folded, often) share one line and one legend entry
    groups: dict[float, list[str]] = {}
    for name, value in (marks or {}).items():
        if value is None or not np.isfinite(value) or value <= 0 or not lo / 10 <= value <= hi * 10:
            continue
        same = next((v for v in groups if abs(v / float(value) - 1) < 0.005), float(value))
        groups.setdefault(same, []).append(name)
    shown = []
    for i, (value, names) in enumerate(groups.items()):
        name = " = ".join(names)
        shown.append(float(value))
        colour = _FALLBACK[i % len(_FALLBACK)]
        fig.add_trace(
            go.Scatter(
                x=[value, value],
                y=[0, top],
                mode="lines",
                name=name,
                line={"color": colour, "width": 1.5, "dash": dash.get(names[0], "dash")},
                hovertemplate=f"{name}: {value:.6g} d<extra></extra>",
            )
        )
    lo, hi = min([lo, *shown]), max([hi, *shown])
    fig.update_layout(
        height=height,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        xaxis_title="period [d]",
        yaxis_title="power",
        showlegend=bool(groups),
        legend={
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": 1.02,
            "yanchor": "bottom",
            "font": {"size": 11},
        },
    )
    fig.update_xaxes(type="log", range=[math.log10(lo) - 0.02, math.log10(hi) + 0.02])
    fig.update_yaxes(range=[0, top * 1.1])
    return fig


def is_categorical(values: pd.Series) -> bool:
    """Colour by category (one trace each) unless the column is numeric with many distinct values."""
    if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == bool:
        return True
    if pd.api.types.is_numeric_dtype(values):
        return values.nunique(dropna=True) <= 12 and pd.api.types.is_integer_dtype(values)
    return True


def embedding_scatter(points: pd.DataFrame, color: str | None = None, title: str | None = None,
                      height: int = 620, revision: str = "explore", marker_size: float = 4.0) -> go.Figure:
    """The WebGL scatter of a 2-D projection.

    `points` has columns x, y, oid (+ the `color` column). Object ids go into custom_data
    (customdata[0]) so a selection maps back to objects whatever the trace; categorical colours make
    one Scattergl trace per category (the rarest beyond MAX_CATEGORIES share "other"; missing values
    are grey), numeric ones one trace with a colour bar. `uirevision` keeps zoom and legend state
    across reruns.
    """
    fig = go.Figure()
    marker = {"size": marker_size, "opacity": 0.8}
    if len(points) == 0:
        return _empty("no points", height)
    if color is None or color not in points:
        fig.add_trace(_scatter_trace(points, "objects", {**marker, "color": CATEGORY_COLOURS[0]}, None))
    elif is_categorical(points[color]):
        values = points[color].astype("string").fillna("(none)")
        counts = values.value_counts()
        keep = list(counts.index[:MAX_CATEGORIES]) if len(counts) > MAX_CATEGORIES else list(counts.index)
        if len(counts) > MAX_CATEGORIES:
            values = values.where(values.isin(keep), "(other)")
        groups = values.groupby(values, sort=False).indices  # category -> row positions, one pass
        cats = sorted(groups, key=lambda c: (c in ("(none)", "(other)"), c))
        for i, cat in enumerate(cats):
            part = points.iloc[groups[cat]]
            col = MISSING_COLOUR if cat in ("(none)", "(other)") else CATEGORY_COLOURS[i % len(
                CATEGORY_COLOURS)]
            fig.add_trace(_scatter_trace(part, cat, {**marker, "color": col}, color))
        fig.update_layout(legend={"title": {"text": color}, "itemsizing": "constant"})
    else:
        values = pd.to_numeric(points[color], errors="coerce")
        ok = values.notna().to_numpy()
        shown = values[ok]
        log = bool(len(shown)) and shown.min() > 0 and shown.max() / shown.min() > 100
        cvals = np.log10(shown) if log else shown
        fig.add_trace(_scatter_trace(points[ok], color, {
            **marker, "color": cvals.to_numpy(), "colorscale": "Viridis", "showscale": True,
            "colorbar": {"title": {"text": f"log10 {color}" if log else color}},
        }, color))
        if (~ok).any():
            fig.add_trace(_scatter_trace(points[~ok], f"no {color}", {**marker, "color": MISSING_COLOUR},
                                         color))
    fig.update_layout(title=title, height=height, dragmode="lasso", uirevision=revision,
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
                      xaxis={"showticklabels": False, "title": None},
                      yaxis={"showticklabels": False, "title": None, "scaleanchor": None},
                      hovermode="closest", legend={"itemsizing": "constant"})
    return fig


def _scatter_trace(part: pd.DataFrame, name: str, marker: dict, color: str | None) -> go.Scattergl:
    # Numeric customdata and a numpy text array keep plotly.py's validation and JSON encoding cheap
    # (typed arrays): an object-dtype customdata costs ~10x more at 50,000 points. float64, never
    # int64: plotly.js decodes int64 into a BigInt64Array, and a selection event carrying BigInts
    # cannot be JSON-encoded back to Streamlit (the lasso silently selects nothing). float64 holds
    # every oid below 2**53 exactly.
    numeric = color is not None and name == color
    custom = part[["oid", color]] if numeric else part[["oid"]]
    custom = custom.to_numpy(np.float64)
    hover = "%{text}" if "object_id" in part else "oid %{customdata[0]}"
    if numeric:
        hover += f"<br>{color}: %{{customdata[1]:.4g}}"
    elif color:
        hover += f"<br>{color}: {name}"
    text = part["object_id"].to_numpy(dtype=object) if "object_id" in part else None
    return go.Scattergl(x=part["x"].to_numpy(), y=part["y"].to_numpy(), mode="markers", name=str(name),
                        marker=marker, customdata=custom, text=text, hovertemplate=hover + "<extra></extra>",
                        selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 0.25}})


def selected_oid(point: Mapping) -> int | None:
    """The object id of one selected point of `embedding_scatter` (Streamlit's selection event):
    customdata[0], which arrives as a list, or as a {"0": ...} dict when plotly.js held the
    customdata as a typed array."""
    custom = point.get("customdata")
    if isinstance(custom, Mapping):
        custom = custom.get("0", custom.get(0))
    elif isinstance(custom, (list, tuple)):
        custom = custom[0] if custom else None
    try:
        return None if custom is None else int(custom)
    except (TypeError, ValueError):
        return None


def highlight_trace(points: pd.DataFrame, name: str = "neighbours", colour: str = "#000000",
                    symbol: str = "circle-open", size: float = 10) -> go.Scattergl:
    """An overlay trace (e.g. an object and its nearest neighbours) for the embedding scatter."""
    return go.Scattergl(x=points["x"], y=points["y"], mode="markers", name=name,
                        customdata=points[["oid"]].to_numpy(np.float64),
                        marker={"size": size, "color": colour, "symbol": symbol, "line": {"width": 2}},
                        hovertemplate="oid %{customdata[0]}<extra>" + name + "</extra>")


def small_multiples(curves: Sequence[Mapping], cols: int = 4, panel_height: int = 170,
                    cycles: int = 2) -> go.Figure:
    """A grid of small light curves. Each entry: title, frame (band, time, mag [, phase]) and
    optionally period; with a period (and a phase column) the panel is folded over `cycles` cycles,
    else magnitude against time. Magnitude axes inverted; no error bars (too small to read)."""
    curves = list(curves)
    if not curves:
        return _empty("nothing selected", panel_height)
    cols = max(1, min(cols, len(curves)))
    rows = math.ceil(len(curves) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[str(c.get("title", "")) for c in curves],
                        horizontal_spacing=0.03, vertical_spacing=min(0.08, 0.3 / rows))
    seen: set[str] = set()
    for k, curve in enumerate(curves):
        frame = curve["frame"]
        period = curve.get("period")
        folded = period is not None and np.isfinite(period) and "phase" in frame
        r, c = divmod(k, cols)
        for i, band in enumerate(_bands(frame)):
            part = frame[frame["band"].astype(str) == band]
            if folded:
                x = np.concatenate([part["phase"].to_numpy() + j for j in range(cycles)])
                y = np.tile(part["mag"].to_numpy(), cycles)
            else:
                x, y = part["time"].to_numpy(), part["mag"].to_numpy()
            fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=band, legendgroup=band,
                                     showlegend=band not in seen,
                                     marker={"size": 3, "color": band_colour(band, i)},
                                     hoverinfo="skip"), row=r + 1, col=c + 1)
            seen.add(band)
        fig.update_yaxes(autorange="reversed", row=r + 1, col=c + 1)
        fig.update_xaxes(showticklabels=False, row=r + 1, col=c + 1)
    fig.update_annotations(font_size=10)
    fig.update_layout(height=panel_height * rows + 40, margin={"l": 30, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "title": {"text": "band"}})
    return fig


# --- an evaluation run's figures (the Probe and Compare pages; report.md draws its own with matplotlib)

#: One colour per model in every chart of a run (plotly's default palette order).
MODEL_COLOURS = {"probe": "#1f77b4", "rnn": "#ff7f0e", "cnn": "#2ca02c", "rf": "#d62728",
                 "rnn-folded": "#ffbb78", "cnn-folded": "#98df8a"}
_EXTRA_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def model_colour(model: str, i: int = 0) -> str:
    """A model's colour; models without one take the i-th spare colour."""
    return MODEL_COLOURS.get(model, _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)])


def confusion_figure(classes, matrix, name: str = "", height: int = 420) -> go.Figure:
    """Row-normalised confusion matrix (true class per row), counts in the hover text."""
    mat = np.asarray(matrix, dtype=float)
    norm = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
    fig = go.Figure(
        go.Heatmap(
            z=norm,
            x=list(classes),
            y=list(classes),
            zmin=0,
            zmax=1,
            colorscale="Blues",
            text=[[f"{int(c)}" for c in row] for row in mat],
            texttemplate="%{z:.2f}",
            hovertemplate="true %{y}<br>predicted %{x}<br>fraction %{z:.2f}<br>count %{text}<extra></extra>",
            colorbar={"title": "recall"},
        )
    )
    fig.update_layout(
        title=name or None,
        height=height,
        margin=dict(l=10, r=10, t=40 if name else 10, b=10),
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
    )
    return fig


def layer_weights_figure(weights, height: int = 280) -> go.Figure:
    """The probe's softmax(gamma) per layer (input embedding, then each block) against uniform."""
    w = np.asarray(weights, dtype=float)
    labels = ["input"] + [f"block {i}" for i in range(1, len(w))]
    fig = go.Figure(go.Bar(x=labels, y=w, text=[f"{v:.2f}" for v in w], textposition="outside"))
    fig.add_hline(y=1 / len(w), line_dash="dot", annotation_text="uniform")
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=10, b=10),
        yaxis_title="softmax(γ)",
        yaxis_range=[0, max(w.max() * 1.25, 1.5 / len(w))],
    )
    return fig


def f1_figure(results: pd.DataFrame, height: int = 360) -> go.Figure:
    """Macro F1 against samples per class, mean ± std over folds, one line per model."""
    fig = go.Figure()
    for i, (model, g) in enumerate(results.groupby("model", sort=False)):
        s = g.groupby("spc")["macro_f1"].agg(["mean", lambda v: v.std(ddof=0)]).reset_index()
        s.columns = ["spc", "mean", "std"]
        fig.add_trace(
            go.Scatter(
                x=s["spc"],
                y=s["mean"] * 100,
                error_y=dict(array=s["std"] * 100),
                mode="lines+markers",
                name=scores.title(model),
                line={"color": model_colour(model, i)},
            )
        )
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title="samples per class",
        yaxis_title="macro F1 [%]",
        xaxis_type="log",
    )
    return fig


def _log_axis(fig, row: int, col: int, values) -> None:
    """A log axis with one tick per decade, labelled as plain numbers (0.1, 1, 10, 1000)."""
    v = np.asarray([x for x in values if x and np.isfinite(x) and x > 0], dtype=float)
    lo, hi = (np.floor(np.log10(v.min())), np.ceil(np.log10(v.max()))) if v.size else (0.0, 1.0)
    hi = max(hi, lo + 1)
    fig.update_yaxes(type="log", dtick=1, tickformat="~g", range=[lo - 0.05, hi + 0.05], row=row, col=col)


def speed_figure(results: pd.DataFrame, height: int = 320) -> go.Figure:
    """Training seconds (mean over folds, per spc) and inference light curves per second, per model,
    one colour per model in both panels; what each inference time counts is in the bar's label."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training time [s]", "inference [light curves / s]"))
    includes = scores.infer_includes(results)
    train_all, infer_all = [], []
    for i, (model, g) in enumerate(results.groupby("model", sort=False)):
        colour, name = model_colour(model, i), scores.title(model)
        s = g.groupby("spc")[["train_seconds", "infer_lc_per_s"]].mean().reset_index()
        train_all += list(s["train_seconds"])
        fig.add_trace(
            go.Bar(x=[f"spc {v}" for v in s["spc"]], y=s["train_seconds"], name=name,
                   legendgroup=model, marker_color=colour,
                   hovertemplate="%{y:.1f} s<extra>" + name + "</extra>"),
            1, 1,
        )
        rate = float(g["infer_lc_per_s"].mean())
        infer_all.append(rate)
        what = includes.get(model) or "model"
        fig.add_trace(
            go.Bar(x=[f"{name}<br><sub>{what}</sub>"], y=[rate], name=name, legendgroup=model,
                   showlegend=False, marker_color=colour, text=[f"{rate:,.0f}"], textposition="outside",
                   hovertemplate=f"{rate:,.0f} light curves/s<br>{what}<extra>{name}</extra>"),
            1, 2,
        )
    _log_axis(fig, 1, 1, train_all)
    _log_axis(fig, 1, 2, infer_all)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), barmode="group")
    return fig
