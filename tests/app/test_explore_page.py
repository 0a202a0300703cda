"""Explore page (AppTest): stored projection drawn, colouring, selection table and grid, neighbours.

AppTest cannot lasso (plotly charts are UnknownElements), so a selection is set through the same
store-backed path the page uses (`workspace.save_selection` + the `sel` query parameter).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lcdash import workspace
from lcdash.store import Store

REPO = Path(__file__).parents[2]  # not resolved: the checkout as the test sees it
APP = str(REPO / "app.py")


def _app() -> AppTest:
    """The real router (app.py) on the Explore page, so page links and the sidebar work too."""
    at = AppTest.from_file(APP, default_timeout=60).run()  # the router runs once before a page switch
    at.switch_page("pages/explore.py")
    return at


def _frame(at: AppTest, columns: set[str]):
    """The one dataframe on the page with these columns (AppTest keeps keys only for widgets)."""
    found = [d.value for d in at.dataframe if columns <= set(d.value.columns)]
    assert len(found) == 1, [list(d.value.columns) for d in at.dataframe]
    return found[0]


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_draws_stored_projection_and_colours(app_db):
    at = _run(_app())
    assert not at.error, [e.value for e in at.error]
    assert any("UMAP #1" in c.value for c in at.caption)
    assert at.selectbox(key="explore_encoder").value == "tiny-test"
    scatter = [e for e in at.main if getattr(e, "key", "") == "explore_scatter_1_False"]
    assert scatter, "the scatter chart is missing"
    for option in ("survey", "period", "n_obs"):
        at.selectbox(key="explore_colour").set_value(option)
        _run(at)
        assert not at.error, (option, [e.value for e in at.error])


def test_selection_from_the_url_shows_table_grid_and_label_link(app_db):
    with Store(app_db) as store:
        oids = store.objects(label="RRab", columns=["oid"])["oid"].head(7).tolist()
        token = workspace.save_selection(store, oids)
    at = _app()
    at.query_params["sel"] = token
    _run(at)
    assert any(s.value.startswith("Selection (7 objects)") for s in at.subheader)
    table = _frame(at, {"synthetic", "n_obs"})
    assert sorted(table["oid"]) == sorted(oids) and set(table["label"]) == {"RRab"}
    assert at.query_params["sel"] == [token] or at.query_params["sel"] == token
    at.button(key="explore_clear").click()
    _run(at)
    assert any(s.value.startswith("Selection (0 objects)") for s in at.subheader)


def test_nearest_neighbours_share_the_class(app_db):
    at = _run(_app())
    nn = _frame(at, {"distance"})
    assert len(nn) == 10
    query = at.selectbox(key="explore_nn_object").value
    with Store(app_db, read_only=False) as store:
        label = store.objects(columns=["object_id", "label"]).set_index("object_id").loc[query, "label"]
    # The test embeddings are class centroids + noise: most neighbours share the query's class.
    assert (nn["label"] == label).mean() >= 0.7
    at.button(key="explore_nn_select").click()
    _run(at)
    assert any(s.value.startswith("Selection (11 objects)") for s in at.subheader)


def test_pca_preview_while_no_projection(app_db):
    with Store(app_db) as store, store.transaction() as cur:
        cur.execute("DELETE FROM projection_points")
        cur.execute("DELETE FROM projections")
    at = _run(_app())
    assert any("PCA preview" in i.value for i in at.info)
    at.button(key="explore_project_go")  # offered when no UMAP job is queued


@pytest.mark.parametrize("embedding", ["last"])
def test_other_embedding_offers_umap_job(app_db, embedding):
    at = _run(_app())
    at.radio(key="explore_embedding").set_value(embedding)
    _run(at)
    assert any("No stored UMAP" in i.value for i in at.info)


def test_selected_oid_reads_both_event_forms():
    from lcdash.plots import selected_oid

    assert selected_oid({"customdata": [12.0]}) == 12
    assert selected_oid({"customdata": {"0": 7, "1": 0.5}}) == 7  # a typed array, JSON-encoded
    assert selected_oid({"customdata": None}) is None and selected_oid({}) is None
