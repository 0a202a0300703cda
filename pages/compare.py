"""Compare: the few-shot evaluation protocol over several classifiers (Astromer probe, Becker 2020 RNN,
Aguirre 2019 CNN, feature Random Forest) as a background job; results side by side; earlier runs
stay listed and can be reopened."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lcdash import scores
from lcdash.classifiers import MODEL_NAMES
from lcdash.evaluation import EvalResult, fit_in_progress, fitting_protocol, label_problems
from lcdash.store.embeddings import list_encoders
from lcdash.store.results import list_runs, load_run
from pages import _cross_survey, _results, _ui
from pages._results import ALL

SPC_CHOICES = [5, 10, 20, 50, 100, 200, 500]

st.title("Compare")
store, jm = _ui.store(), _ui.jobs()

encoders = list_encoders(store)
embedded = [r["name"] for r in encoders.to_dict("records") if r["n_embeddings"] > 0]
names = list(encoders["name"])
running = jm.list(states=list(_ui.ACTIVE), kinds=["evaluate"])
_results.prefill_from_job("evaluate", "compare", {
    "models": "models", "encoder": "encoder", "labels": "labels", "survey": "survey", "band": "band",
    "classes": "classes", "spc": "spc", "folds": "folds", "test_per_class": "test",
    "max_epochs": "epochs", "scoring": "scoring", "sequence_input": "sequence_input"})

with st.container(border=True):
    # The design's point is Astromer-style vs RNN vs CNN side by side, with the feature RF as the
    # baseline: all of them by default (the probe only where an encoder exists).
    models = st.multiselect(
        "Models",
        list(MODEL_NAMES),
        default=list(MODEL_NAMES) if names else [m for m in MODEL_NAMES if not m.startswith("probe")],
        format_func=scores.title,
        key="compare_models",
    )
    c1, c2, c3, c4 = st.columns(4)
    encoder = c1.selectbox(
        "Encoder (for the probe)", embedded or names, key="compare_encoder", disabled="probe" not in models
    )
    source, survey, band, classes, counts = _results.label_selection(store, c2, c3, c4, key="compare",
                                                                    with_counts=True)
    c1, c2, c3, c4, c5 = st.columns(5)
    folds = c2.number_input("Folds", min_value=1, max_value=10, value=3, key="compare_folds")
    fit_test, fit_spc = fitting_protocol(counts, classes, int(folds), SPC_CHOICES)
    spc_default = [20] if 20 in fit_spc else fit_spc[-1:]
    if "compare_spc" in st.session_state:
        st.session_state["compare_spc"] = [v for v in st.session_state["compare_spc"] if v in fit_spc]
    spc = c1.multiselect("Samples per class", fit_spc, default=spc_default, key="compare_spc",
                         help="only the values these labels can fill after the test sets are set aside")
    test = c3.number_input("Test objects per class", min_value=1, value=fit_test, key="compare_test",
                           help=f"at most {fit_test} per class here without capping (smallest class / folds)")
    epochs = c4.number_input(
        "Max epochs (0 = each model's default)", min_value=0, value=10, key="compare_epochs"
    )
    scoring = c5.selectbox(
        "Score per",
        ["object", "window"],
        key="compare_scoring",
        help="object: one prediction per light curve; window: per 200-observation window, "
        "as the Astromer papers score",
    )
    sequence_input = st.radio(
        "RNN / CNN input",
        ["raw", "folded"],
        horizontal=True,
        key="compare_sequence_input",
        disabled=not {"rnn", "cnn"} & set(models),
        help="raw: the dt/dm sequences of the papers. folded: each light curve folded at its "
        "catalogue period (Lomb-Scargle where there is none), which gives sparse surveys' "
        "sequence models the period they cannot find themselves",
    )
    cross = _cross_survey.controls(store, key="compare_cross")  # across surveys (Aguirre 2019)
    if "probe" in models and encoder and encoder not in embedded:
        st.caption(f"{encoder} has no stored embeddings: the job embeds the selected objects itself.")
    st.caption(
        "Each model is trained on the same folds: a test set per class, then `spc` training and "
        "ceil(0.2 × spc) validation objects per class. A small max epochs gives a quick run."
    )
    problems = label_problems(counts, classes, source)
    for problem in problems:
        st.warning(problem)
    if running:
        st.caption("A comparison is running (below): the form shows its settings.")
    if st.button("Run comparison", type="primary", key="compare_go",
                 disabled=not models or bool(problems) or bool(running)):
        params = {
            "models": models,
            "encoder": encoder if "probe" in models else None,
            "labels": source,
            "survey": None if survey == ALL else survey,
            "band": None if band == ALL else band,
            "classes": classes or None,
            "spc": sorted(spc) or spc_default,
            "folds": int(folds),
            "test_per_class": int(test),
            "max_epochs": int(epochs) or None,
            "scoring": scoring,
            "sequence_input": sequence_input,
        }
        if cross:
            params.update(cross, survey=None, classes=None)
        with _ui.guard("Starting the comparison"), st.spinner("Exporting the light curves for the job ..."):
            job_id = jm.submit("evaluate", params)
            st.query_params["compare_job"] = job_id
            st.rerun()


def opened(job) -> None:
    if job.state == "done" and job.result:
        st.query_params["compare_run"] = job.result["run_id"]


@st.fragment(run_every=2.0)
def scores_so_far(job_id: str) -> None:
    """Mean macro F1 per model and spc over the folds finished so far (the job's progress metrics)."""
    metrics = jm.get(job_id).metrics or {}
    if metrics:
        rows = [
            {"model": scores.title(k.split("@")[0]), "spc": k.split("@")[1], "macro F1 [%]": 100 * v}
            for k, v in metrics.items()
            if "@" in k
        ]
        st.dataframe(rows, hide_index=True)


for job in running:
    _ui.watch_job(job.job_id, key="compare", on_done=opened, status=fit_in_progress)
    scores_so_far(job.job_id)
_results.last_job_outcome("compare_job", "comparison")

st.subheader("Results")
with _ui.guard("Listing earlier runs"), st.expander("All comparison runs"):
    st.dataframe(list_runs(store, kind="compare"), hide_index=True)
with _ui.guard("Showing the comparison"):
    run_id = _results.pick_run("compare", "compare_run", key="compare_run_pick")
    if run_id is None:
        st.caption("No comparison yet.")
    else:
        _results.show_run(run_id, key="compare_res")
        info = load_run(store, run_id)[0]
        if (info.get("config") or {}).get("train_surveys"):
            _cross_survey.show(EvalResult.from_run(*load_run(store, run_id)))
        report = Path(jm.folder(info["job_id"])) / "report.md" if info.get("job_id") else None
        if report is not None and report.exists():
            st.download_button(
                "Download report.md",
                report.read_text(),
                file_name=f"report-{run_id}.md",
                key="compare_report",
            )
