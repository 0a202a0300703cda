"""Showing stored evaluation runs: the one place the Probe and Compare pages draw results from, and
the widgets both pages share (runs, labels, the form of a running job).

Only Streamlit calls live here: the tables (`lcdash.scores`) and plotly figures (`lcdash.plots`) are
built by the library from `lcdash.store.results.load_run` (one row per model x spc x fold);
`show_run` draws a whole run.
"""

from __future__ import annotations

import streamlit as st

from lcdash import scores
from lcdash.plots import confusion_figure, f1_figure, layer_weights_figure, speed_figure
from lcdash.store import labels as label_store
from lcdash.store import results as results_store
from pages import _ui


def pick_run(kind: str, param: str, key: str) -> str | None:
    """A select box of the stored runs of `kind`, newest first; the choice lives in the URL (`param`)
    so a refresh or a page switch and back reopens the same run."""
    runs = results_store.list_runs(_ui.store(), kind=kind)
    if runs.empty:
        return None
    ids = list(runs["run_id"])
    labels = {r["run_id"]: scores.run_label(r) for r in runs.to_dict("records")}
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
        st.dataframe(scores.summary_table(results), hide_index=True, key=f"{key}_summary")
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
                st.markdown(f"**{scores.title(model)}**, {spc} per class, {len(part)} fold(s)")
                cls, mat = scores.summed_confusion(part.reset_index(drop=True))
                st.plotly_chart(confusion_figure(cls, mat), key=f"{key}_cm_{model}")
                with st.expander("Per-class scores"):
                    st.dataframe(scores.per_class_table(part), hide_index=True, key=f"{key}_pc_{model}")
        if not probe and len(models) > 1:
            st.markdown("**Training time and inference speed**")
            st.plotly_chart(speed_figure(results), key=f"{key}_speed")
            note = scores.speed_note(results)
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


# --- the form of a running job ------------------------------------------------------------------


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
