"""The large-map view (lcdash.mapview, lcdash.store.maps): density image, selections over all points,
colour categories, the figure, and the column reads from the store."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lcdash import mapview
from lcdash.errors import LcdashError
from lcdash.plots import CATEGORY_COLOURS, MISSING_COLOUR


def _grid(n: int = 10) -> mapview.MapPoints:
    """Points at the centres (i + 0.5, j + 0.5) of an n x n grid; oid = 1000 + 10 i + j."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return mapview.MapPoints(1000 + 10 * i.ravel() + j.ravel(), i.ravel() + 0.5, j.ravel() + 0.5)


def _text(values: pd.Series) -> list[str]:
    return values.astype("string").fillna("NA").tolist()


def _rgb(hex_colour: str) -> list[int]:
    return [int(hex_colour[k:k + 2], 16) for k in (1, 3, 5)]


# --- selections --------------------------------------------------------------------------------------


def test_box_selects_exactly_the_points_inside_in_any_corner_order():
    pts = _grid()
    want = sorted(1000 + 10 * i + j for i in (2, 3, 4) for j in (3, 4, 5))
    sel = {"box": [{"x": [2.1, 4.9], "y": [3.2, 5.8]}], "lasso": [], "points": []}
    assert mapview.selected_oids(pts, sel) == want
    flipped = {"box": [{"x": [4.9, 2.1], "y": [5.8, 3.2]}]}
    assert mapview.selected_oids(pts, flipped) == want


def test_lasso_selects_exactly_the_points_inside_the_polygon():
    pts = _grid()
    # a triangle with legs of 10.2 along the axes: inside are the centres with x + y < 10.2
    sel = {"lasso": [{"x": [0.0, 10.2, 0.0], "y": [0.0, 0.0, 10.2]}]}
    want = sorted(1000 + 10 * i + j for i in range(10) for j in range(10) if i + j + 1 < 10.2)
    got = mapview.selected_oids(pts, sel)
    assert got == want
    assert len(got) == 55
    # a concave L-shaped lasso: the notch's points are left out
    ell = {"lasso": [{"x": [0, 4, 4, 2, 2, 0], "y": [0, 0, 2, 2, 4, 4]}]}
    want = sorted(1000 + 10 * i + j for i in range(4) for j in range(4) if i < 2 or j < 2)
    assert mapview.selected_oids(pts, ell) == want


def test_boxes_and_lassos_are_unioned_and_objects_counted_once():
    # two bands of one object at different places: the object is listed once
    pts = mapview.MapPoints([7, 7, 8, 9], [0.5, 5.5, 5.6, 9.5], [0.5, 5.5, 5.4, 9.5])
    sel = {"box": [{"x": [0, 1], "y": [0, 1]}, {"x": [9, 10], "y": [9, 10]}],
           "lasso": [{"x": [5, 6, 6, 5], "y": [5, 5, 6, 6]}]}
    assert mapview.selected_oids(pts, sel) == [7, 8, 9]
    mask = mapview.selection_mask(pts.x, pts.y, {"box": [{"x": [0, 1], "y": [0, 1]}]})
    assert mask.tolist() == [True, False, False, False]


def test_a_click_selects_the_clicked_points_and_empty_selections_select_nothing():
    pts = _grid()
    clicked = {"box": [], "lasso": [], "points": [{"customdata": [1033.0]}, {"customdata": {"0": 1045}}]}
    assert mapview.selection_mask(pts.x, pts.y, clicked) is None
    assert mapview.selected_oids(pts, clicked) == [1033, 1045]
    assert mapview.selected_oids(pts, {"box": [], "lasso": [], "points": []}) == []
    # an area with nothing in it, and malformed areas, select nothing (no exception)
    assert mapview.selected_oids(pts, {"box": [{"x": [20, 30], "y": [20, 30]}]}) == []
    assert mapview.selected_oids(pts, {"lasso": [{"x": [1, 2], "y": [1]}], "box": [{"x": ["a", 1]}]}) == []


def test_selection_key_changes_with_the_area_only():
    a = {"box": [{"x": [0, 1], "y": [0, 1]}], "lasso": [], "points": []}
    b = {"box": [{"x": [0, 2], "y": [0, 1]}], "lasso": [], "points": []}
    assert mapview.selection_key(a) == mapview.selection_key(dict(a))
    assert mapview.selection_key(a) != mapview.selection_key(b)


# --- the density image ------------------------------------------------------------------------------


def test_density_counts_put_points_in_the_right_pixel_per_category():
    x = np.array([0.05, 0.05, 0.95, 0.55, 5.0])
    y = np.array([0.95, 0.95, 0.05, 0.55, 0.5])  # the last one lies outside the extent
    codes = np.array([0, 1, 1, 0, 0])
    counts = mapview.density_counts(x, y, (0, 1, 0, 1), width=10, height=10, codes=codes, n_codes=2)
    assert counts.shape == (2, 10, 10)
    assert counts.sum() == 4
    assert counts[0, 0, 0] == 1 and counts[1, 0, 0] == 1      # top-left: large y is row 0
    assert counts[1, 9, 9] == 1                              # bottom-right
    assert counts[0, 4, 5] == 1


def test_categorical_image_mixes_colours_by_count_and_opacity_grows_with_count():
    # pixel (0, 0): 1 of category a; pixel (0, 1): 3 of a; pixel (1, 0): one of a and one of b
    x = np.array([0.25, 0.75, 0.75, 0.75, 0.25, 0.25])
    y = np.array([0.75, 0.75, 0.75, 0.75, 0.25, 0.25])
    col = mapview.colouring(pd.Series(["a", "a", "a", "a", "a", "b"]), "label")
    assert col.names == ["a", "b"]
    img = mapview.density_image(x, y, col, extent=(0, 1, 0, 1), width=2, height=2)
    a, b = np.array(_rgb(CATEGORY_COLOURS[0])), np.array(_rgb(CATEGORY_COLOURS[1]))
    assert img[0, 0, :3].tolist() == a.tolist()
    assert img[0, 1, :3].tolist() == a.tolist()
    np.testing.assert_allclose(img[1, 0, :3], (a + b) / 2, atol=1)
    assert img[1, 1, 3] == 0                                   # empty pixel: transparent
    assert 0 < img[0, 0, 3] < img[1, 0, 3] < img[0, 1, 3] == 255


def test_numeric_image_uses_the_mean_and_missing_values_are_grey():
    x = np.array([0.25, 0.25, 0.75, 0.75])
    y = np.array([0.75, 0.75, 0.75, 0.25])
    col = mapview.colouring(pd.Series([1.0, 3.0, 9.0, np.nan]), "period")
    assert col.values is not None and (col.vmin, col.vmax) == (1.0, 9.0) and not col.log
    img = mapview.density_image(x, y, col, extent=(0, 1, 0, 1), width=2, height=2)
    viridis = mapview._viridis(np.array([0.125, 1.0]))
    np.testing.assert_allclose(img[0, 0, :3], viridis[0], atol=1)  # mean 2 -> (2 - 1) / 8 of the scale
    np.testing.assert_allclose(img[0, 1, :3], viridis[1], atol=1)
    assert img[1, 1, :3].tolist() == _rgb(MISSING_COLOUR)
    assert img[1, 0, 3] == 0


def test_colouring_rules_match_the_plain_scatter():
    # 25 classes of 3 and 5 missing: the 19 kept classes and "(none)" fill MAX_CATEGORIES, 6 share "other"
    many = pd.Series([f"c{i:02d}" for i in range(25)] * 3 + [None] * 5)
    col = mapview.colouring(many, "label")
    assert len(col.names) == 21 and col.names[-2:] == ["(none)", "(other)"]
    assert col.colours[-1] == col.colours[-2] == MISSING_COLOUR
    assert col.colours[0] == CATEGORY_COLOURS[0]
    assert col.codes.min() >= 0 and col.codes.max() == 20
    assert np.bincount(col.codes).tolist()[-2:] == [5, 18]
    wide = mapview.colouring(pd.Series([0.1, 1.0, 100.0]), "period")
    assert wide.log and wide.vmin == pytest.approx(-1) and wide.vmax == pytest.approx(2)
    assert mapview.colouring(None).codes is None


def test_png_round_trip():
    from PIL import Image

    img = mapview.density_image(np.array([0.1, 0.9]), np.array([0.1, 0.9]), width=8, height=6)
    uri = mapview.png_data_uri(img)
    assert uri.startswith("data:image/png;base64,")
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert back.shape == (6, 8, 4)
    assert np.array_equal(back, img)


# --- the figure -------------------------------------------------------------------------------------


def test_density_figure_has_the_image_a_sample_trace_and_a_legend():
    rng = np.random.default_rng(0)
    n = 3000
    pts = mapview.MapPoints(np.arange(n) + 1, rng.normal(size=n), rng.normal(size=n))
    labels = pd.Series(rng.choice(["RRab", "EW", None], n))
    col = mapview.colouring(labels, "label")
    fig = mapview.density_figure(pts, col, sample=500, hover=lambda oids: [f"ID-{o}" for o in oids])
    assert len(fig.layout.images) == 1 and fig.layout.images[0].source.startswith("data:image/png")
    sample = fig.data[0]
    assert len(sample.x) == 500 and sample.marker.opacity == 0
    oids = np.asarray(sample.customdata)[:, 0].astype(np.int64)
    assert set(oids) <= set(pts.oid) and len(set(oids)) == 500
    assert list(sample.text[:2]) == [f"ID-{o}" for o in oids[:2]]
    legend = [t.name for t in fig.data[1:]]
    assert [name.split(" (")[0] for name in legend] == ["EW", "RRab", "(none)"]
    assert sum(int(name.split("(")[-1].rstrip(")").replace(",", "")) for name in legend) == n
    assert fig.layout.dragmode == "lasso"


def test_density_figure_zoomed_extent_samples_only_visible_points():
    pts = _grid()
    fig = mapview.density_figure(pts, None, extent=(0, 3, 0, 3), sample=50)
    sample = fig.data[0]
    assert len(sample.x) == 9
    assert max(sample.x) < 3 and max(sample.y) < 3
    assert list(fig.layout.xaxis.range) == [0, 3]
    numeric = mapview.colouring(pd.Series(np.arange(100.0)), "n_obs")
    fig = mapview.density_figure(pts, numeric, sample=20)
    assert fig.data[0].marker.showscale and len(fig.data) == 1


def test_image_size_is_coarser_for_fewer_points():
    assert mapview.image_size(1_000_000) == (mapview.IMAGE_WIDTH, mapview.IMAGE_HEIGHT)
    assert mapview.image_size(300) == (240, 144)
    w, h = mapview.image_size(40_000)
    assert w == 400 and h == 240
    fig = mapview.density_figure(_grid(), None)
    from PIL import Image

    png = base64.b64decode(fig.layout.images[0].source.split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (240, 144)


def test_sample_indices_are_stable_and_bounded():
    a = mapview.sample_indices(1_000_000, 20_000)
    assert a.size == 20_000 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, mapview.sample_indices(1_000_000, 20_000))
    assert mapview.sample_indices(10, 20).tolist() == list(range(10))


def test_threshold_from_the_environment(monkeypatch):
    monkeypatch.delenv(mapview.ENV_MIN_POINTS, raising=False)
    assert mapview.density_min_points() == mapview.DENSITY_MIN_POINTS
    monkeypatch.setenv(mapview.ENV_MIN_POINTS, "3000")
    assert mapview.density_min_points() == 3000
    for bad in ("lots", "0"):
        monkeypatch.setenv(mapview.ENV_MIN_POINTS, bad)
        with pytest.raises(LcdashError, match=mapview.ENV_MIN_POINTS):
            mapview.density_min_points()


def test_map_points_reject_ragged_arrays():
    with pytest.raises(LcdashError, match="as many x and y"):
        mapview.MapPoints([1, 2], [0.0], [0.0, 1.0])


# --- reads from the store ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    from lcdash.simulate import SURVEY, simulate_survey
    from lcdash.store import Store

    s = Store(tmp_path / "maps.duckdb")
    s.ingest(*simulate_survey(n_objects=12, seed=1, n_obs=(30, 40), bands=("g", "r")), survey=SURVEY)
    yield s
    s.close()


def test_store_reads_are_aligned_with_projection_points(store):
    from lcdash import workspace
    from lcdash.store import maps
    from lcdash.store.projections import save_projection

    objs = store.objects()
    oids = np.repeat(objs["oid"].to_numpy(), 2)[::-1]          # saved in reverse order, two bands each
    bands = ["r", "g"] * len(objs)
    xy = np.random.default_rng(1).normal(size=(len(oids), 2)).astype(np.float32)
    pid = save_projection(store, "enc", "weighted", {"seed": 0}, oids, bands, xy)
    full = workspace.projection_points(store, pid)
    light = maps.projection_arrays(store, pid)
    assert maps.projection_size(store, pid) == len(oids) == len(light)
    assert light["oid"].tolist() == full["oid"].tolist()
    assert light["band"].astype(str).tolist() == full["band"].tolist()
    np.testing.assert_array_equal(light[["x", "y"]].to_numpy(), full[["x", "y"]].to_numpy())
    for column in ("label", "period", "n_obs", "synthetic"):
        got = maps.projection_column(store, pid, column)
        assert _text(got) == _text(full[column]), column
    with pytest.raises(LcdashError, match="no column"):
        maps.projection_column(store, pid, "label; DROP TABLE objects")
    picked = [int(objs["oid"].iloc[3]), 999_999, int(objs["oid"].iloc[0])]
    assert maps.object_ids(store, picked) == [objs["object_id"].iloc[3], "", objs["object_id"].iloc[0]]
    assert maps.find_object(store, objs["object_id"].iloc[5]) == int(objs["oid"].iloc[5])
    assert maps.find_object(store, "no such star") is None
    assert maps.any_synthetic(store, pid) == bool(objs["synthetic"].any())
    assert maps.projection_size(store, pid + 1) == 0


def test_map_input_from_batches_matches_the_in_memory_map_input():
    from lcdash.projection import map_input, nearest_neighbours

    rng = np.random.default_rng(2)
    layers = (rng.normal(0, 1, (500, 3, 8)) + rng.normal(5, 2, 8)).astype(np.float32)
    oid = np.arange(500) + 10
    batches = [(oid[lo:lo + 128], ["g"] * len(oid[lo:lo + 128]), layers[lo:lo + 128])
               for lo in range(0, 500, 128)]
    for kind in ("weighted", "last"):
        got_oid, got_band, X = mapview.map_input_batches(iter(batches), kind)
        assert got_oid.tolist() == oid.tolist() and set(got_band) == {"g"}
        want = map_input(layers, kind)
        np.testing.assert_allclose(X, want, atol=1e-4)
        assert nearest_neighbours(X, 7, k=5)[0].tolist() == nearest_neighbours(want, 7, k=5)[0].tolist()
    with pytest.raises(LcdashError, match="no embeddings"):
        mapview.map_input_batches(iter([]))


def test_iter_embeddings_streams_every_row_in_order(store):
    from lcdash.models.astromer import Astromer, AstromerConfig
    from lcdash.store import maps
    from lcdash.store.embeddings import load_embeddings, register_encoder, save_embeddings
    from lcdash.weights import save_encoder

    cfg = AstromerConfig(n_layers=1, n_heads=1, d_model=4, d_ff=4)
    folder = Path(store.path).parent / "enc"
    save_encoder(Astromer(cfg), cfg, folder)
    register_encoder(store, "enc", folder)
    objs = store.objects()
    layers = np.random.default_rng(3).normal(size=(len(objs), 2, 4)).astype(np.float32)
    save_embeddings(store, "enc", objs["oid"], "g", np.ones(len(objs)), layers)
    parts = list(maps.iter_embeddings(store, "enc", batch_rows=5))
    assert len(parts) >= 2
    oid, band, want = load_embeddings(store, "enc")
    got_oid = np.concatenate([p[0] for p in parts])
    order = np.argsort(got_oid, kind="stable")                 # storage order; compare by oid
    assert got_oid[order].tolist() == oid.tolist()
    assert [sum((p[1] for p in parts), [])[i] for i in order] == band
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts])[order], want)
