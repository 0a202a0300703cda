"""Label: named few-shot label sets kept in the store. Label the current selection (from Explore) or
single objects, see what to label next, edit and remove labels, export CSV / Parquet.

Everything is written to the store at once, so a browser refresh or a second user loses nothing;
the current selection travels as a token in the URL (`?sel=...`) whose object ids live in the store.
"""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from lcdash.store import labels as label_store
from lcdash.suggest import suggest_next
from pages import _ui

st.title("Label")
store = _ui.store()
_ui.selection_token()  # keep the selection token in the URL

# --- the label set ------------------------------------------------------------------------------------

sets = label_store.list_sets(store)
names = list(sets["name"])
left, right = st.columns([2, 3])
with right.expander("New label set", expanded=not names):
    with st.form("label_new_set", clear_on_submit=True):
        new_name = st.text_input("Name", key="label_new_name")
        new_desc = st.text_input("Description (optional)", key="label_new_desc")
        if st.form_submit_button("Create"):
            with _ui.guard("Creating the label set"):
                label_store.create_set(store, new_name.strip(), description=new_desc.strip())
                st.query_params["set"] = new_name.strip()
                st.rerun()
if not names:
    st.info("No label set yet: create one (a name such as 'my RR Lyrae') to start labelling.")
    st.stop()
wanted = st.query_params.get("set")
current = left.selectbox(
    "Label set", names, index=names.index(wanted) if wanted in names else 0, key="label_set"
)
st.query_params["set"] = current
labels = label_store.get_labels(store, current)
counts = labels["label"].value_counts()
left.caption(
    f"{len(labels):,} labelled objects: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none")
)
known = sorted(set(counts.index) | set(store.labels().index))


def label_input(key: str) -> str:
    """A class name: pick a known one or type a new one."""
    a, b = st.columns(2)
    picked = a.selectbox(
        "Class",
        [None, *known],
        key=f"{key}_pick",
        format_func=lambda v: "— type a new class —" if v is None else v,
    )
    typed = b.text_input("or new class", key=f"{key}_typed", disabled=picked is not None)
    return (picked or typed or "").strip()


# --- label the selection / one object ---------------------------------------------------------------

sel_col, one_col = st.columns(2)
with sel_col:
    st.subheader("Current selection")
    selected = _ui.current_selection()
    if selected:
        objs = store.objects(oids=selected, columns=["oid", "object_id", "label"])
        st.caption(
            f"{len(selected):,} objects selected on Explore (catalogue labels: "
            + ", ".join(f"{k} {v}" for k, v in objs["label"].value_counts().items())
            + ")"
        )
        cls = label_input("label_sel")
        if st.button(
            f"Label {len(selected):,} objects", type="primary", key="label_sel_go", disabled=not cls
        ):
            with _ui.guard("Labelling the selection"):
                n = label_store.set_labels(store, current, selected, cls)
                st.toast(f"{n} objects labelled {cls} in {current}")
                st.rerun()
    else:
        st.caption("Nothing selected: lasso some points on the Explore page, or label single objects.")

with one_col:
    st.subheader("One object")
    object_id = st.text_input("Object id", key="label_one_id", placeholder="e.g. SIM-000012")
    cls_one = label_input("label_one")
    if st.button("Label this object", key="label_one_go", disabled=not (object_id and cls_one)):
        with _ui.guard(f"Labelling {object_id}"):
            oid = int(store.resolve([object_id.strip()])[0])
            label_store.set_labels(store, current, [oid], cls_one)
            st.toast(f"{object_id} labelled {cls_one}")
            st.rerun()

# --- what to label next ------------------------------------------------------------------------------

st.subheader("What to label next")
s1, s2 = st.columns([1, 3])
n_suggest = s1.number_input("How many", 1, 200, 12, key="label_n_suggest")
suggestions = pd.DataFrame()
with _ui.guard("Suggestions"):
    suggestions = suggest_next(store, current, n=int(n_suggest))
if len(suggestions) and suggestions["entropy"].notna().any():
    st.caption("The objects the latest probe is least sure about (highest prediction entropy), spread "
               "over the embedding map so that one region does not take every suggestion.")
elif len(suggestions):
    st.caption("No probe has run yet, so there is no uncertainty to rank by: these are spread over the "
               "map, away from the labelled objects, so the picks cover unlabelled regions. After a "
               "probe run (Probe page) they are ranked by its prediction entropy.")
if len(suggestions):
    about = store.objects(oids=suggestions["oid"], columns=["oid", "object_id", "survey", "label", "period"])
    shown = suggestions.merge(about.rename(columns={"label": "catalogue"}), on="oid", how="left")
    cols = ["rank", "object_id", "catalogue", "entropy", "period", "survey", "oid"]
    if shown["entropy"].isna().all():
        cols.remove("entropy")
    st.dataframe(shown[cols], hide_index=True, key="label_suggestions",
                 column_config={"entropy": st.column_config.NumberColumn(format="%.3f"),
                                "period": st.column_config.NumberColumn("period [d]", format="%.5f")})
    if st.button("Select the suggestions (then label them above)", key="label_suggest_select"):
        _ui.set_selection(suggestions["oid"].tolist())
        st.rerun()
else:
    st.caption("No suggestions yet: they need a probe run (Probe page) or a stored map (Explore page).")

# --- edit, remove, export ----------------------------------------------------------------------------

st.subheader(f"Labels in {current}")
if len(labels):
    meta = store.objects(oids=labels["oid"], columns=["oid", "label"])
    table = labels[["oid", "object_id", "survey", "label"]].merge(
        meta.rename(columns={"label": "catalogue"}), on="oid", how="left")
    table = table[["object_id", "label", "catalogue", "survey", "oid"]].assign(remove=False)
    edited = st.data_editor(
        table,
        hide_index=True,
        key=f"label_editor_{current}",
        disabled=["object_id", "catalogue", "survey", "oid"],
        column_config={
            "label": st.column_config.TextColumn("label", required=True),
            "remove": st.column_config.CheckboxColumn("remove"),
        },
    )
    changed = edited[(edited["label"] != table["label"]) & ~edited["remove"]]
    removed = edited[edited["remove"]]
    if st.button(
        f"Save {len(changed)} change(s), remove {len(removed)}",
        key="label_save",
        disabled=changed.empty and removed.empty,
    ):
        with _ui.guard("Saving the edits"):
            for cls, part in changed.groupby("label"):
                label_store.set_labels(store, current, part["oid"].tolist(), str(cls).strip())
            if len(removed):
                label_store.remove_labels(store, current, removed["oid"].tolist())
            st.rerun()
    e1, e2, _ = st.columns([1, 1, 3])
    with _ui.guard("Export"):
        frame = label_store.export_labels(store, current)
        e1.download_button(
            "Download CSV", frame.to_csv(index=False).encode(), f"{current}.csv", "text/csv", key="label_csv"
        )
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        e2.download_button(
            "Download Parquet",
            buf.getvalue(),
            f"{current}.parquet",
            "application/octet-stream",
            key="label_parquet",
        )
else:
    st.caption("No labels in this set yet.")

with st.expander("Delete this label set"):
    if st.button(f"Delete {current} and its {len(labels)} labels", key="label_delete_set"):
        with _ui.guard("Deleting the label set"):
            label_store.delete_set(store, current)
            del st.query_params["set"]
            st.rerun()
