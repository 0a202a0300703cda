"""Compare page block: train and score across surveys (Aguirre, Pichara & Becker 2019).

`controls` draws the surveys to train on, the surveys to score on and the label map, and returns
the evaluate job's extra parameters (None when the block is off); `show` draws the per-survey
scores of a stored cross-survey run. The protocol is lcdash.evaluation's (make_cross_splits).
"""

from __future__ import annotations

import json

import streamlit as st

from lcdash.errors import ValidationError
from lcdash.evaluation import DEFAULT_LABEL_MAP, cross_survey_table, load_label_map
from pages import _ui

MAPS = {
    "default": "default (Catalina -> EROS-1 classes)",
    "none": "none (labels as they are)",
    "custom": "custom",
}


def controls(store, key: str) -> dict | None:
    """Training across surveys: {"train_surveys", "score_surveys", "label_map"} or None."""
    surveys = store.surveys()
    with st.expander("Train and score across surveys (Aguirre et al. 2019)"):
        on = st.checkbox(
            "Across surveys",
            key=f"{key}_on",
            disabled=len(surveys) < 2,
            help="train on A+B and score on each (per-survey scores), train on A and score on B, or train "
            "and score on B. spc counts per class per training survey; test objects come from each scored "
            "survey. The survey and class choices above are then ignored; the band applies to the surveys "
            "that have it, the others use their only band.",
        )
        c1, c2 = st.columns(2)
        train = c1.multiselect("Train on", surveys, default=surveys, key=f"{key}_train", disabled=not on)
        score = c2.multiselect("Score on", surveys, default=surveys, key=f"{key}_score", disabled=not on)
        kind = st.radio(
            "Label map", list(MAPS), format_func=MAPS.get, horizontal=True, key=f"{key}_map", disabled=not on
        )
        text = st.text_area(
            "Label map (JSON: label -> common class, null drops it; a label that is a common class maps to "
            "itself; any other label is an error)",
            json.dumps(DEFAULT_LABEL_MAP, indent=1),
            height=160,
            key=f"{key}_json",
            disabled=not on or kind != "custom",
        )
        if not on:
            return None
        if not train or not score:
            st.warning("Choose surveys to train on and surveys to score on.")
            return None
        label_map = None
        with _ui.guard("Reading the label map"):
            if kind == "custom":
                try:
                    label_map = load_label_map(json.loads(text))
                except json.JSONDecodeError as exc:
                    raise ValidationError(f"not valid JSON ({exc.msg}, line {exc.lineno})") from None
            else:
                label_map = load_label_map(kind)
        if label_map is None:
            return None
        return {"train_surveys": train, "score_surveys": score, "label_map": label_map}


def show(result) -> None:
    """Per-survey macro F1 of a cross-survey run (an EvalResult), each survey on its own test objects."""
    if not result.config.get("train_surveys"):
        return
    table = cross_survey_table([result])
    if table.empty:
        return
    st.markdown("**Scores per survey** (each on its own test objects)")
    shown = table.assign(
        **{"macro F1 [%]": 100 * table["macro_f1_mean"], "accuracy [%]": 100 * table["accuracy_mean"]}
    )
    st.dataframe(
        shown[["scored on", "model", "spc", "trained on", "macro F1 [%]", "accuracy [%]", "folds", "n_test"]],
        hide_index=True,
        column_config={
            "macro F1 [%]": st.column_config.NumberColumn(format="%.1f"),
            "accuracy [%]": st.column_config.NumberColumn(format="%.1f"),
        },
    )
