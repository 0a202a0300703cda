"""Projection helpers: layer selection and Astromer 2 weighting, nearest neighbours, UMAP."""

from __future__ import annotations

import numpy as np
import pytest

from lcdash.errors import LcdashError
from lcdash.projection import nearest_neighbours, select_embedding, umap_project, weighted_embedding


@pytest.fixture(scope="module")
def layers():
    return np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)


def test_weighted_embedding_math(layers):
    # Uniform gamma: 1/(L+1) * sum_l (1/(L+1)) x_l = mean over layers / (L+1).
    np.testing.assert_allclose(weighted_embedding(layers), layers.mean(axis=1) / 3, rtol=1e-6)
    gamma = np.array([0.0, np.log(2.0), np.log(5.0)])     # softmax -> [1, 2, 5] / 8
    want = (layers[:, 0] * 1 + layers[:, 1] * 2 + layers[:, 2] * 5) / 8 / 3
    np.testing.assert_allclose(weighted_embedding(layers, gamma), want, rtol=1e-5, atol=1e-7)
    # Shift-invariant in gamma (softmax), and one object [L+1, d] works.
    np.testing.assert_allclose(weighted_embedding(layers, gamma + 7), want, rtol=1e-5, atol=1e-7)
    assert weighted_embedding(layers[0]).shape == (1, 4)
    with pytest.raises(LcdashError, match="gamma has 2 values for 3 layers"):
        weighted_embedding(layers, [0.0, 1.0])


def test_select_embedding(layers):
    np.testing.assert_array_equal(select_embedding(layers, "last"), layers[:, 2])
    np.testing.assert_array_equal(select_embedding(layers, "layer_0"), layers[:, 0])
    np.testing.assert_allclose(select_embedding(layers, "weighted"), weighted_embedding(layers))
    w = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(select_embedding(layers, "weighted", w),
                               (0.5 * layers[:, 0] + 0.25 * layers[:, 1] + 0.25 * layers[:, 2]) / 3,
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(LcdashError, match="layers 0..2"):
        select_embedding(layers, "layer_3")
    with pytest.raises(LcdashError, match="unknown embedding"):
        select_embedding(layers, "max")
    with pytest.raises(LcdashError, match="summing to 1"):
        select_embedding(layers, "weighted", [1.0, 1.0, 1.0])


def test_nearest_neighbours_cosine_and_euclidean():
    X = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [2, 0.05], [1, 0]], dtype=np.float32)
    idx, dist = nearest_neighbours(X, 0, k=3)
    assert 0 not in idx                       # the query itself is excluded...
    assert idx[0] == 5 and dist[0] == pytest.approx(0.0, abs=1e-6)   # ...but its duplicate is not
    assert set(idx[1:]) == {1, 4} and np.all(np.diff(dist) >= 0)
    assert idx.dtype == np.int64 and dist.shape == (3,)
    e_idx, e_dist = nearest_neighbours(X, 3, k=2, metric="euclidean")
    assert e_idx.tolist() == [2, 1] and e_dist[0] == pytest.approx(np.sqrt(2), rel=1e-5)
    many, d = nearest_neighbours(X, [0, 2], k=10)       # k capped at N - 1
    assert many.shape == (2, 5) and 0 not in many[0] and 2 not in many[1]
    assert nearest_neighbours(X, -1, k=1)[0][0] == 0
    with pytest.raises(LcdashError, match="out of range"):
        nearest_neighbours(X, 6)
    with pytest.raises(LcdashError, match="unknown metric"):
        nearest_neighbours(X, 0, metric="manhattan")


def test_nearest_neighbours_agree_with_brute_force():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 16)).astype(np.float32)
    idx, dist = nearest_neighbours(X, 17, k=8)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    full = 1 - Xn @ Xn[17]
    full[17] = np.inf
    np.testing.assert_array_equal(idx, np.argsort(full)[:8])
    np.testing.assert_allclose(dist, np.sort(full)[:8], rtol=1e-4, atol=1e-5)


def test_bad_inputs():
    with pytest.raises(LcdashError, match="NaN"):
        nearest_neighbours(np.array([[1.0, np.nan], [1, 2], [3, 4]]), 0)
    with pytest.raises(LcdashError, match="at least 3 points"):
        umap_project(np.ones((2, 4)))
    with pytest.raises(LcdashError, match=r"\[N, D\]"):
        umap_project(np.ones(5))


def test_umap_keeps_blobs_apart():
    """300 points in 3 well separated 32-d blobs: each blob stays one tight cluster in 2-D."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32)) * 5
    labels = np.repeat(np.arange(3), 100)
    X = (centres[labels] + rng.normal(size=(300, 32))).astype(np.float32)
    steps = []
    xy = umap_project(X, n_neighbors=10, metric="euclidean", seed=0,
                      progress=lambda step, total, msg, metrics=None: steps.append(step))
    assert xy.shape == (300, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert steps[0] == 0 and steps[-1] == 3
    # Neighbours stay neighbours: each point's 2-D nearest neighbours are in its own blob.
    nn, _ = nearest_neighbours(xy, np.arange(300), k=5, metric="euclidean")
    assert (labels[nn] == labels[:, None]).mean() > 0.98
    # Blobs are separated: every between-centroid distance exceeds every blob's spread.
    cent = np.array([xy[labels == c].mean(axis=0) for c in range(3)])
    spread = max(np.linalg.norm(xy[labels == c] - cent[c], axis=1).max() for c in range(3))
    gaps = [np.linalg.norm(cent[a] - cent[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > spread
    # Same seed, same map.
    np.testing.assert_array_equal(umap_project(X, n_neighbors=10, metric="euclidean", seed=0), xy)


# -- stored projections --------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    from lcdash.simulate import SURVEY, simulate_survey
    from lcdash.store import Store

    s = Store(tmp_path / "proj.duckdb")
    s.ingest(*simulate_survey(n_objects=12, seed=1, n_obs=(60, 70), bands=("g", "r")), survey=SURVEY)
    yield s
    s.close()


def test_store_projection_round_trip(store, tmp_path):
    from lcdash.store import Store
    from lcdash.store.projections import (
        delete_projection,
        find_projection,
        list_projections,
        load_projection,
        save_projection,
    )

    objs = store.objects()
    oids = np.repeat(objs["oid"].to_numpy(), 2)
    bands = ["g", "r"] * len(objs)
    xy = np.random.default_rng(0).normal(size=(len(oids), 2)).astype(np.float32)
    params = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "seed": 0}
    assert find_projection(store, "enc", "weighted", params) is None
    w = np.full(3, 1 / 3)
    pid = save_projection(store, "enc", "weighted", params, oids, bands, xy, layer_weights=w)
    # Same parameters (in any order, numpy scalars too) find it: UMAP is not recomputed.
    same = {"seed": np.int64(0), "metric": "cosine", "min_dist": 0.1, "n_neighbors": 15}
    assert find_projection(store, "enc", "weighted", same) == pid
    assert find_projection(store, "enc", "weighted", same, layer_weights=w) == pid
    assert find_projection(store, "enc", "weighted", same, layer_weights=[0.5, 0.25, 0.25]) is None
    assert find_projection(store, "enc", "weighted", {**params, "seed": 1}) is None
    assert find_projection(store, "enc", "last", params) is None
    assert find_projection(store, "other", "weighted", params) is None

    pts = load_projection(store, pid)
    assert list(pts.columns) == ["oid", "band", "x", "y", "object_id", "survey", "label", "period", "n_obs"]
    assert len(pts) == len(oids)
    order = np.lexsort((bands, oids))
    np.testing.assert_allclose(pts[["x", "y"]].to_numpy(), xy[order])
    assert pts["object_id"].tolist() == np.repeat(objs["object_id"].to_numpy(), 2).tolist()
    assert pts["label"].notna().all()

    pid2 = save_projection(store, "enc", "last", {"seed": 1}, oids[::2], "g", xy[::2])
    listed = list_projections(store)
    assert listed["proj_id"].tolist() == [pid2, pid]
    assert listed["n_points"].tolist() == [len(objs), len(oids)]
    assert listed["params"].iloc[1] == params
    assert listed["layer_weights"].iloc[1] == pytest.approx(list(w))
    assert listed["layer_weights"].iloc[0] is None

    # Survives a new Store on the same file.
    path = store.path
    store.close()
    with Store(path) as again:
        assert find_projection(again, "enc", "weighted", params) == pid
        delete_projection(again, pid)
        assert find_projection(again, "enc", "weighted", params) is None
        assert again.con.execute("SELECT count(*) FROM projection_points").fetchall()[0][0] == len(objs)
        with pytest.raises(LcdashError, match="no projection"):
            load_projection(again, pid)


def test_store_projection_validation(store):
    from lcdash.store.projections import save_projection

    with pytest.raises(LcdashError, match=r"\[3, 2\]"):
        save_projection(store, "enc", "last", {}, [1, 2, 3], "g", np.zeros((3, 3)))
    with pytest.raises(LcdashError, match="twice"):
        save_projection(store, "enc", "last", {}, [1, 1], "g", np.zeros((2, 2)))
    with pytest.raises(LcdashError, match="NaN"):
        save_projection(store, "enc", "last", {}, [1, 2], "g", np.array([[0, 1], [np.nan, 1]]))
    with pytest.raises(LcdashError, match="JSON"):
        save_projection(store, "enc", "last", {"f": object()}, [1], "g", np.zeros((1, 2)))
    assert store.con.execute("SELECT count(*) FROM projections").fetchall()[0][0] == 0
