"""Explore's density view (pages/_density.py, lcdash.mapview) in AppTest: picked from the point-count
threshold (LCDASH_DENSITY_MIN_POINTS: 100 here, so the 300-point test store gets it), colouring,
the selection table and grid, neighbours by typed object id, zoom to the selection.

AppTest cannot lasso (tests/e2e/test_density_map.py does, in a browser); a selection is set through the
store like the plain Explore tests do."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lcdash import workspace
from lcdash.store import Store

APP = str(Path(__file__).parents[2] / "app.py")


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/explore.py")
    return at


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _keys(at: AppTest) -> set[str]:
    return {k for e in at.main if (k := getattr(e, "key", None))}


@pytest.fixture
def density(app_db, monkeypatch):
    monkeypatch.setenv("LCDASH_DENSITY_MIN_POINTS", "100")
    return app_db


def test_density_view_above_the_threshold_and_colours(density):
    at = _run(_app())
    keys = _keys(at)
    assert "explore_density_1_full" in keys and not any(k.startswith("explore_scatter") for k in keys)
    assert any(c.value.startswith("Density of all 300 points") for c in at.caption)
    assert any("UMAP #1" in c.value for c in at.caption)
    for option in ("survey", "period", "n_obs", "ra"):
        at.selectbox(key="explore_colour").set_value(option)
        _run(at)
    assert at.button(key="explore_zoom_in").disabled  # nothing selected yet


def test_plain_scatter_below_the_threshold(app_db, monkeypatch):
    monkeypatch.delenv("LCDASH_DENSITY_MIN_POINTS", raising=False)
    keys = _keys(_run(_app()))
    assert "explore_scatter_1_False" in keys and not any(k.startswith("explore_density") for k in keys)


def test_a_bad_threshold_is_one_warning_not_a_traceback(app_db, monkeypatch):
    monkeypatch.setenv("LCDASH_DENSITY_MIN_POINTS", "many")
    at = _run(_app())
    assert any("LCDASH_DENSITY_MIN_POINTS must be a whole number" in w.value for w in at.warning)
    assert "explore_scatter_1_False" in _keys(at)


def test_selection_table_neighbours_and_zoom(density):
    with Store(density) as store:
        objs = store.objects(label="RRab", columns=["oid", "object_id"]).head(9)
        token = workspace.save_selection(store, objs["oid"].tolist())
    at = _app()
    at.query_params["sel"] = token
    _run(at)
    assert any(s.value.startswith("Selection (9 objects)") for s in at.subheader)
    table = [d.value for d in at.dataframe if {"synthetic", "n_obs"} <= set(d.value.columns)]
    assert len(table) == 1 and sorted(table[0]["oid"]) == sorted(objs["oid"])
    # neighbours: the object box is a text box that follows the selection's first object
    box = at.text_input(key="explore_nn_object_text")
    assert box.value == str(objs["object_id"].iloc[0])
    assert not [d for d in at.dataframe if "distance" in d.value.columns]  # only when asked for
    at.button(key="explore_nn_go").click()
    _run(at)
    box = at.text_input(key="explore_nn_object_text")
    nn = [d.value for d in at.dataframe if "distance" in d.value.columns]
    assert len(nn) == 1 and len(nn[0]) == 10
    box.set_value("no such star")
    at.run()
    assert any("no object 'no such star'" in e.value for e in at.error)
    at.text_input(key="explore_nn_object_text").set_value(str(objs["object_id"].iloc[1]))
    _run(at)
    # zoom to the selection redraws the map for its area (a new chart key), and back
    at.button(key="explore_zoom_in").click()
    _run(at)
    keys = _keys(at)
    assert any(k.startswith("explore_density_1_z") for k in keys) and "explore_density_1_full" not in keys
    at.button(key="explore_zoom_out").click()
    _run(at)
    assert "explore_density_1_full" in _keys(at)
