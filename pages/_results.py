"""Showing stored evaluation runs: the one place the Probe and Compare pages draw results from.

Tables and plotly figures are built from `lcdash.store.results.load_run` (one row per model x spc x
fold); `show_run` draws a whole run. Figures are plain functions so they can be tested without
Streamlit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lcdash.report import MODEL_TITLES, summed_confusion
from lcdash.store import labels as label_store
from lcdash.store import results as results_store
from pages import _ui


def title(model: str) -> str:
    return MODEL_TITLES.get(model, model)


def _pm(values: pd.Series, scale: float = 100.0) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "-"
    return f"{v.mean() * scale:.1f} ± {v.std(ddof=0) * scale:.1f}"


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Model x spc rows: macro F1 / precision / recall / accuracy as "mean ± std" (%) over folds,
    training seconds and inference light curves per second."""
    rows = []
    for (model, spc), g in results.groupby(["model", "spc"], sort=True):
        rows.append(
            {
                "model": title(model),
                "spc": int(spc),
                "folds": len(g),
                "macro F1 [%]": _pm(g["macro_f1"]),
                "macro precision [%]": _pm(g["macro_precision"]),
                "macro recall [%]": _pm(g["macro_recall"]),
                "accuracy [%]": _pm(g["accuracy"]),
                "train s (mean)": round(float(g["train_seconds"].mean()), 1),
                "inference LC/s (mean)": round(float(g["infer_lc_per_s"].mean())),
            }
        )
    return pd.DataFrame(rows)


def per_class_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per-class precision / recall / F1 (mean over folds) and support of one model x spc."""
    rows: dict[str, list[dict]] = {}
    for pc in results["per_class"]:
        for cls, m in (pc or {}).items():
            rows.setdefault(cls, []).append(m)
    out = [
        {
            "class": cls,
            **{k: float(np.mean([m.get(k, np.nan) for m in ms])) for k in ("precision", "recall", "f1")},
            "support (per fold)": float(np.mean([m.get("support", 0) for m in ms])),
        }
        for cls, ms in rows.items()
    ]
    return pd.DataFrame(out).sort_values("f1", ascending=False) if out else pd.DataFrame()


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
                name=title(model),
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


#: One colour per model in every chart of a run (plotly's default palette order).
MODEL_COLOURS = {"probe": "#1f77b4", "rnn": "#ff7f0e", "cnn": "#2ca02c", "rf": "#d62728",
                 "rnn-folded": "#ffbb78", "cnn-folded": "#98df8a"}
_EXTRA_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def model_colour(model: str, i: int = 0) -> str:
    return MODEL_COLOURS.get(model, _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)])


def infer_includes(results: pd.DataFrame) -> dict:
    """What each model's inference time counts (the run's records say: e.g. "feature extraction +
    forest", "head only (embeddings precomputed)")."""
    out = {}
    for model, g in results.groupby("model", sort=False):
        said = [e.get("infer_includes") for e in g.get("extra", []) if isinstance(e, dict)]
        out[model] = next((x for x in said if x), "")
    return out


def _log_axis(fig, row: int, col: int, values) -> None:
    """A log axis with one tick per decade, labelled as plain numbers (0.1, 1, 10, 1000)."""
    v = np.asarray([x for x in values if x and np.isfinite(x) and x > 0], dtype=float)
    lo, hi = (np.floor(np.log10(v.min())), np.ceil(np.log10(v.max()))) if v.size else (0.0, 1.0)
    hi = max(hi, lo + 1)
    fig.update_yaxes(type="log", dtick=1, tickformat="~g", range=[lo - 0.05, hi + 0.05], row=row, col=col)


def speed_figure(results: pd.DataFrame, height: int = 320) -> go.Figure:
    """Training seconds (mean over folds, per spc) and inference light curves per second, per model,
    one colour per model in both panels; what each inference time counts is in the bar's label."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training time [s]", "inference [light curves / s]"))
    includes = infer_includes(results)
    train_all, infer_all = [], []
    for i, (model, g) in enumerate(results.groupby("model", sort=False)):
        colour = model_colour(model, i)
        s = g.groupby("spc")[["train_seconds", "infer_lc_per_s"]].mean().reset_index()
        train_all += list(s["train_seconds"])
        fig.add_trace(
            go.Bar(x=[f"spc {v}" for v in s["spc"]], y=s["train_seconds"], name=title(model),
                   legendgroup=model, marker_color=colour,
                   hovertemplate="%{y:.1f} s<extra>" + title(model) + "</extra>"),
            1, 1,
        )
        rate = float(g["infer_lc_per_s"].mean())
        infer_all.append(rate)
        what = includes.get(model) or "model"
        fig.add_trace(
            go.Bar(x=[f"{title(model)}<br><sub>{what}</sub>"], y=[rate], name=title(model), legendgroup=model,
                   showlegend=False, marker_color=colour, text=[f"{rate:,.0f}"], textposition="outside",
                   hovertemplate=f"{rate:,.0f} light curves/s<br>{what}<extra>{title(model)}</extra>"),
            1, 2,
        )
    _log_axis(fig, 1, 1, train_all)
    _log_axis(fig, 1, 2, infer_all)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), barmode="group")
    return fig


def speed_note(results: pd.DataFrame) -> str | None:
    """Say so when the inference speeds count different work (the probe's head alone against models
    that prepare their own inputs)."""
    includes = infer_includes(results)
    head_only = [m for m, w in includes.items() if "head only" in w]
    if head_only and len(includes) > 1:
        return ("Not like with like: the probe's inference counts its head only (the embeddings were "
                "computed beforehand and the encoder's speed is not known for this run), while the "
                "other models' times include preparing their inputs (features, dt/dm sequences). "
                "The encoder's own rate is on the Models page's embedding jobs.")
    return None


def run_label(row) -> str:
    when = pd.Timestamp(row["created_at"]).strftime("%Y-%m-%d %H:%M")
    best = f", best {row['best']} F1 {row['best_macro_f1'] * 100:.1f}%" if row.get("best") else ""
    return f"{when} · {row['models']} · spc {row['spc']}{best} · {row['run_id']}"


def pick_run(kind: str, param: str, key: str) -> str | None:
    """A select box of the stored runs of `kind`, newest first; the choice lives in the URL (`param`)
    so a refresh or a page switch and back reopens the same run."""
    runs = results_store.list_runs(_ui.store(), kind=kind)
    if runs.empty:
        return None
    ids = list(runs["run_id"])
    labels = {r["run_id"]: run_label(r) for r in runs.to_dict("records")}
    wanted = st.query_params.get(param)
    index = ids.index(wanted) if wanted in ids else 0
    run_id = st.selectbox("Run", ids, index=index, format_func=labels.get, key=key)
    st.query_params[param] = run_id
    return run_id


def last_job_outcome(param: str, what: str) -> None:
    """Say so when the job this page last started (its id in the URL, `param`) failed or was cancelled:
    the pages watch only active jobs, so this keeps the outcome on the page after the job has ended."""
    last = st.query_params.get(param)
    if last:
        with _ui.guard(f"Reading the last {what} job"):
            job = _ui.jobs().get(last)
            if job.state == "failed":
                st.error(f"The {what} job failed: {job.error}")
            elif job.state == "cancelled":
                st.warning(f"The {what} job was cancelled.")


def show_run(run_id: str, key: str, probe: bool = False) -> None:
    """Draw one stored run: summary, F1 against spc, per-class scores and confusion matrices at a
    chosen spc, layer weights (probe), timings."""
    info, results = results_store.load_run(_ui.store(), run_id)
    sel, timings = info.get("selection") or {}, info.get("timings") or {}
    classes = sel.get("classes") or info.get("classes") or []
    bits = [
        f"{len(classes)} classes",
        f"{sel.get('n_objects', sel.get('n_labelled', '?'))} objects",
        f"labels: {sel.get('label_source', 'catalogue')}",
    ]
    if sel.get("survey"):
        bits.append(f"survey {sel['survey']}")
    enc = (info.get("config") or {}).get("encoder") or {}
    if enc.get("name"):
        bits.append(f"encoder {enc['name']}")
    if timings.get("total_seconds") is not None:
        bits.append(f"{timings['total_seconds']:.0f} s")
    if timings.get("cancelled"):
        bits.append("cancelled before the end")
    st.caption(" · ".join(bits))
    if info.get("note"):
        st.info(info["note"])
    if sel.get("capped_classes"):
        st.caption(f"Fewer test / training objects than asked in: {', '.join(sel['capped_classes'])}")
    if results.empty:
        st.warning("This run has no finished fits.")
    else:
        st.dataframe(summary_table(results), hide_index=True, key=f"{key}_summary")
        spcs = sorted(int(s) for s in results["spc"].unique())
        if len(spcs) > 1:
            st.plotly_chart(f1_figure(results), key=f"{key}_f1")
        spc = (
            st.select_slider("Samples per class", spcs, value=spcs[-1], key=f"{key}_spc")
            if len(spcs) > 1
            else spcs[0]
        )
        at = results[results["spc"] == spc]
        models = list(dict.fromkeys(at["model"]))
        cols = st.columns(min(len(models), 2))
        for i, model in enumerate(models):
            part = at[at["model"] == model]
            with cols[i % len(cols)]:
                st.markdown(f"**{title(model)}**, {spc} per class, {len(part)} fold(s)")
                cls, mat = summed_confusion(part.reset_index(drop=True))
                st.plotly_chart(confusion_figure(cls, mat), key=f"{key}_cm_{model}")
                with st.expander("Per-class scores"):
                    st.dataframe(per_class_table(part), hide_index=True, key=f"{key}_pc_{model}")
        if not probe and len(models) > 1:
            st.markdown("**Training time and inference speed**")
            st.plotly_chart(speed_figure(results), key=f"{key}_speed")
            note = speed_note(results)
            if note:
                st.caption(note)
    weights = info.get("layer_weights")
    if probe and weights:
        st.markdown("**Learned layer weights** (softmax γ of the final fit; Astromer 2's weighted embedding)")
        st.plotly_chart(layer_weights_figure(weights), key=f"{key}_gamma")


ALL = "(all)"


def label_selection(store, c_labels, c_survey, c_band, key: str, with_counts: bool = False):
    """The label source, survey, band and classes widgets the Probe and Compare pages share.
    Returns (source, survey, band, classes) with ALL left as is for the caller to map to None, and
    the {class: labelled objects} counts last when `with_counts`."""
    source = c_labels.selectbox(
        "Labels",
        label_store.label_sources(store),
        key=f"{key}_labels",
        format_func=lambda s: "catalogue labels" if s == "catalogue" else f"label set: {s}",
    )
    survey = c_survey.selectbox("Survey", [ALL, *store.surveys()], key=f"{key}_survey")
    band = c_band.selectbox("Band", [ALL, *store.bands()], key=f"{key}_band")
    counts: dict[str, int] = {}
    with _ui.guard("Reading the labels"):
        counts = label_store.source_counts(store, source, None if survey == ALL else survey)
    classes = st.multiselect(
        "Classes (none chosen = all)",
        list(counts),
        key=f"{key}_classes",
        format_func=lambda c: f"{c} ({counts.get(c, 0)})",
    )
    classes = [c for c in classes if c in counts]
    if with_counts:
        return source, survey, band, classes, counts
    return source, survey, band, classes


# --- defaults that fit the store, checks before a job starts, the form of a running job ----------


def fitting_protocol(counts: dict, classes, folds: int, spc_choices, want_test: int = 100):
    """What the protocol can honour on these label counts: (test objects per class, spc choices).

    Fold k's test set comes from the k-th of `folds` parts of each class, so at most
    n_min // folds test objects per class exist without a cap; the rest of the class must hold
    spc training + ceil(0.2 x spc) validation objects. The demo store (222 per class, 3 folds) gives
    74 test objects and spc up to 100."""
    import math

    sizes = [int(counts[c]) for c in (classes or counts) if c in counts]
    if not sizes:
        return want_test, list(spc_choices)
    n_min = min(sizes)
    test = max(1, min(want_test, n_min // max(int(folds), 1)))
    fits = [s for s in spc_choices if s + math.ceil(0.2 * s) <= n_min - test]
    return test, fits or [min(spc_choices)]


def label_problems(counts: dict, classes, source: str) -> list[str]:
    """Plain-text reasons a probe or comparison cannot run on these labels (checked before the job
    starts): fewer than two classes, or a class too small for one test, training and validation
    object."""
    chosen = [c for c in (classes or list(counts)) if c in counts]
    what = "the catalogue labels" if source == "catalogue" else f"label set {source}"
    if len(chosen) < 2:
        have = ", ".join(f"{c} ({counts[c]})" for c in chosen) or "no labelled objects"
        return [f"A classifier needs at least two classes; {what} has {len(chosen)}: {have}. "
                "Label objects of another class on the Label page, or pick other labels."]
    small = [f"{c} ({counts[c]})" for c in chosen if counts[c] < 3]
    if small:
        return [f"Every class needs at least 3 labelled objects (one each to test, train and "
                f"validate); too few in {what}: {', '.join(small)}."]
    return []


def prefill_from_job(kind: str, prefix: str, fields: dict) -> None:
    """After a browser refresh, show the settings of this page's running job in its form instead of
    the defaults: `fields` maps job parameter -> widget key (without `prefix`_). Done once per
    session, before the widgets are drawn; values the widget cannot show are left alone."""
    flag = f"_{prefix}_prefilled"
    if st.session_state.get(flag):
        return
    st.session_state[flag] = True
    active = _ui.jobs().list(states=list(_ui.ACTIVE), kinds=[kind])
    if not active:
        return
    params = active[0].params or {}
    for param, key in fields.items():
        value = params.get(param)
        if param in ("survey", "band") and value is None:
            value = ALL
        if param == "max_epochs" and value is None:
            value = 0
        if param == "classes" and value is None:
            value = []
        if value is not None:
            st.session_state[f"{prefix}_{key}"] = value


def fit_in_progress(job) -> str | None:
    """What the comparison is fitting now. The job reports after each fit (its message then names the
    fit that just ended), and fits run fold by fold, spc by spc, model by model, so the next one
    follows from the step count."""
    params = job.params or {}
    models, spcs, folds = params.get("models") or [], sorted(params.get("spc") or []), params.get("folds")
    total = job.total or 0
    if not (models and spcs and folds) or job.state != "running":
        return None
    if not total:
        return "loading libraries and preparing the inputs (RF features, folded curves, embeddings)"
    if job.step >= total:
        return "writing the report"
    fit, n = int(job.step), len(models)
    model, spc = models[fit % n], spcs[(fit // n) % len(spcs)]
    fold = fit // (n * len(spcs))
    last = f" · last finished: {job.message}" if fit else ""
    return (f"training {title(model)} (spc {spc}, fold {fold + 1} of {folds}) · "
            f"fit {fit + 1} of {total}{last}")
