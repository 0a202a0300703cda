"""Label page (AppTest): create a set, label the selection and single objects, suggestions, edit and
remove, export; everything lands in the store (a fresh session sees it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from _apptest import open_page, run

from lcdash import workspace
from lcdash.store import Store
from lcdash.store import labels as label_store


def _labels(db: Path, name: str) -> pd.DataFrame:
    with Store(db) as store:
        return label_store.get_labels(store, name)


def test_create_set_and_label_the_selection(app_db):
    with Store(app_db) as store:
        oids = store.objects(label="EW", columns=["oid"])["oid"].head(5).tolist()
        token = workspace.save_selection(store, oids)
    at = run(open_page("pages/label.py", sel=token))
    assert any("No label set yet" in i.value for i in at.info)
    at.text_input(key="label_new_name").set_value("my binaries")
    [b for b in at.button if b.label == "Create"][0].click()
    run(at)
    assert at.selectbox(key="label_set").value == "my binaries"
    at.selectbox(key="label_sel_pick").set_value(None)
    at.text_input(key="label_sel_typed").set_value("contact binary")
    run(at)
    at.button(key="label_sel_go").click()
    run(at)
    got = _labels(app_db, "my binaries")
    assert sorted(got["oid"]) == sorted(oids) and set(got["label"]) == {"contact binary"}
    # A new session (a browser refresh) on the same URL finds the set, the labels and the selection.
    again = run(open_page("pages/label.py", sel=token, set="my binaries"))
    assert any("5 objects selected" in c.value for c in again.caption)
    assert len(again.dataframe(key="label_editor_my binaries").value) == 5


def test_label_one_object_edit_remove_and_export(app_db):
    with Store(app_db) as store:
        label_store.create_set(store, "few-shot")
        first = store.objects(columns=["oid", "object_id"]).head(3)
        label_store.set_labels(store, "few-shot", first["oid"].head(2), "RRab")
    at = run(open_page("pages/label.py", set="few-shot"))
    at.text_input(key="label_one_id").set_value(first["object_id"].iloc[2])
    at.selectbox(key="label_one_pick").set_value("RRc")
    run(at)
    at.button(key="label_one_go").click()
    run(at)
    got = _labels(app_db, "few-shot").set_index("object_id")["label"]
    assert got[first["object_id"].iloc[2]] == "RRc" and len(got) == 3

    # AppTest applies data_editor edits through the editor's session state (rows by position).
    at.session_state["label_editor_few-shot"] = {
        "edited_rows": {0: {"label": "DCEP"}, 1: {"remove": True}}, "added_rows": [], "deleted_rows": []}
    run(at)
    at.button(key="label_save").click()
    run(at)
    got = _labels(app_db, "few-shot").set_index("object_id")["label"]
    assert got.to_dict() == {first["object_id"].iloc[0]: "DCEP", first["object_id"].iloc[2]: "RRc"}

    downloads = {d.key for d in at.get("download_button")}
    assert {"label_csv", "label_parquet"} <= downloads


def test_unknown_object_is_an_error_message(app_db):
    with Store(app_db) as store:
        label_store.create_set(store, "s")
    at = run(open_page("pages/label.py", set="s"))
    at.text_input(key="label_one_id").set_value("NOT-A-STAR")
    at.selectbox(key="label_one_pick").set_value("RRc")
    run(at)
    at.button(key="label_one_go").click()
    run(at)
    assert any("NOT-A-STAR" in e.value for e in at.error)


def test_suggestions_come_from_the_map_and_can_be_selected(app_db):
    with Store(app_db) as store:
        label_store.create_set(store, "s")
    at = run(open_page("pages/label.py", set="s"))
    suggested = [d.value for d in at.dataframe if "rank" in d.value.columns][0]
    assert len(suggested) == 12 and suggested["oid"].is_unique
    at.button(key="label_suggest_select").click()
    run(at)
    assert any("12 objects selected" in c.value for c in at.caption)
