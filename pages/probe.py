"""Probe: train the few-shot classifier (Astromer 2's layer-weighted embedding + MLP head) on a label
set or the catalogue labels, as a background job; see macro F1, per-class scores, the confusion
matrix and the learned layer weights. Its predictions are written back so Explore can colour by them.
"""

from __future__ import annotations

import streamlit as st

from lcdash.evaluation import fitting_protocol, label_problems
from lcdash.store.embeddings import list_encoders
from pages import _results, _ui
from pages._results import ALL

SPC_CHOICES = [5, 10, 20, 50, 100, 200, 500]

st.title("Probe")
store, jm = _ui.store(), _ui.jobs()

encoders = list_encoders(store)
embedded = [r["name"] for r in encoders.to_dict("records") if r["n_embeddings"] > 0]
running = jm.list(states=list(_ui.ACTIVE), kinds=["probe"])
_results.prefill_from_job("probe", "probe", {
    "encoder": "encoder", "labels": "labels", "survey": "survey", "band": "band", "classes": "classes",
    "spc": "spc", "folds": "folds", "test_per_class": "test", "max_epochs": "epochs"})

with st.container(border=True):
    if not embedded:
        st.info("No encoder has embeddings yet: compute them on the Models page first.")
    c1, c2, c3, c4 = st.columns(4)
    encoder = c1.selectbox("Encoder", embedded, key="probe_encoder")
    source, survey, band, classes, counts = _results.label_selection(store, c2, c3, c4, key="probe",
                                                                    with_counts=True)
    c1, c2, c3, c4 = st.columns(4)
    folds = c2.number_input("Folds", min_value=1, max_value=10, value=3, key="probe_folds")
    fit_test, fit_spc = fitting_protocol(counts, classes, int(folds), SPC_CHOICES)
    spc_default = [20] if 20 in fit_spc else fit_spc[-1:]
    if "probe_spc" in st.session_state:  # e.g. a running job's settings: keep what the choices hold
        st.session_state["probe_spc"] = [v for v in st.session_state["probe_spc"] if v in fit_spc]
    spc = c1.multiselect("Samples per class", fit_spc, default=spc_default, key="probe_spc",
                         help="only the values these labels can fill after the test sets are set aside")
    test = c3.number_input("Test objects per class", min_value=1, value=fit_test, key="probe_test",
                           help=f"at most {fit_test} per class here without capping (smallest class / folds)")
    epochs = c4.number_input("Max epochs (0 = the head's default)", min_value=0, value=0, key="probe_epochs")
    st.caption(
        "Per fold: a test set per class, then `spc` training and ceil(0.2 × spc) validation objects "
        "per class; macro F1 mean ± std over folds. A final fit on every label predicts all "
        "embedded objects (Explore can colour by the predictions)."
    )
    problems = label_problems(counts, classes, source)
    for problem in problems:
        st.warning(problem)
    if running:
        st.caption("A probe job is running (below): the form shows its settings; train again when it ends.")
    if st.button("Train probe", type="primary", key="probe_go",
                 disabled=not embedded or bool(problems) or bool(running)):
        params = {
            "encoder": encoder,
            "labels": source,
            "survey": None if survey == ALL else survey,
            "band": None if band == ALL else band,
            "classes": classes or None,
            "spc": sorted(spc) or spc_default,
            "folds": int(folds),
            "test_per_class": int(test),
            "max_epochs": int(epochs) or None,
        }
        with _ui.guard("Starting the probe"), st.spinner("Exporting the embeddings for the job ..."):
            job_id = jm.submit("probe", params)
            st.query_params["probe_job"] = job_id
            st.rerun()


def opened(job) -> None:
    """A probe job just finished: show its run."""
    if job.state == "done" and job.result:
        st.query_params["probe_run"] = job.result["run_id"]


for job in running:
    _ui.watch_job(job.job_id, key="probe", on_done=opened)
_results.last_job_outcome("probe_job", "probe")

st.subheader("Results")
with _ui.guard("Showing the probe run"):
    run_id = _results.pick_run("probe", "probe_run", key="probe_run_pick")
    if run_id is None:
        st.caption("No probe run yet.")
    else:
        _results.show_run(run_id, key="probe_res", probe=True)
        st.caption(
            f"Predictions of this run are stored: on Explore, colour by `prediction: {run_id}` or "
            f"`confidence: {run_id}`."
        )
