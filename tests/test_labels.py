"""Few-shot label sets in the store: CRUD, upsert, export, persistence, suggestions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lcdash.errors import LcdashError
from lcdash.simulate import SURVEY, simulate_survey
from lcdash.store import Store
from lcdash.store import labels as L
from lcdash.suggest import suggest_next


@pytest.fixture(scope="module")
def survey():
    return simulate_survey(n_objects=40, seed=2, n_obs=(60, 80))


@pytest.fixture
def store(tmp_path, survey):
    s = Store(tmp_path / "labels.duckdb")
    s.ingest(*survey, survey=SURVEY, synthetic=True)
    yield s
    s.close()


def test_sets_crud(store):
    a = L.create_set(store, "rr lyrae", "my first set")
    b = L.create_set(store, "binaries")
    assert a != b
    sets = L.list_sets(store)
    assert sets["name"].tolist() == ["rr lyrae", "binaries"]
    assert sets["n_labels"].tolist() == [0, 0] and sets.loc[0, "description"] == "my first set"
    with pytest.raises(LcdashError, match="already exists"):
        L.create_set(store, "binaries")
    with pytest.raises(LcdashError, match="non-empty"):
        L.create_set(store, "  ")
    L.rename_set(store, b, "eclipsing", description="EA and EW")
    assert L.get_set(store, "eclipsing")["description"] == "EA and EW"
    with pytest.raises(LcdashError, match="already exists"):
        L.rename_set(store, "eclipsing", "rr lyrae")
    L.set_labels(store, a, [1, 2], "RRab")
    L.delete_set(store, "rr lyrae")
    assert L.list_sets(store)["name"].tolist() == ["eclipsing"]
    assert store.con.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
    with pytest.raises(LcdashError, match="no label set"):
        L.get_labels(store, a)
    assert not hasattr(L, "list_label_sets")  # one name per function (issue 12 removed the aliases)


def test_set_relabel_remove_and_counts(store):
    s = L.create_set(store, "few-shot")
    assert L.set_labels(store, s, [1, 2, 3, 3], "RRab") == 3
    assert L.set_labels(store, "few-shot", np.array([3, 4]), "EW") == 2     # oid 3 relabelled
    got = L.get_labels(store, s)
    assert got["oid"].tolist() == [1, 2, 3, 4]
    assert got["label"].tolist() == ["RRab", "RRab", "EW", "EW"]
    assert got["object_id"].tolist() == store.objects(oids=[1, 2, 3, 4])["object_id"].tolist()
    assert list(got.columns[:4]) == ["oid", "object_id", "label", "updated_at"]
    assert L.label_counts(store, s).to_dict() == {"EW": 2, "RRab": 2}
    assert L.remove_labels(store, s, [2, 99]) == 1
    assert L.get_labels(store, s)["oid"].tolist() == [1, 3, 4]
    assert L.list_sets(store).iloc[0][["n_labels", "n_classes"]].tolist() == [3, 2]
    with pytest.raises(LcdashError, match="unknown objects"):
        L.set_labels(store, s, [1, 12345], "RRc")
    assert L.get_labels(store, s)["label"].tolist() == ["RRab", "EW", "EW"]   # nothing written
    with pytest.raises(LcdashError, match="non-empty"):
        L.set_labels(store, s, [1], "")
    assert L.set_labels(store, s, [], "RRc") == 0


def test_labels_survive_reopen(tmp_path, survey):
    path = tmp_path / "persist.duckdb"
    with Store(path) as s:
        s.ingest(*survey, survey=SURVEY)
        sid = L.create_set(s, "kept")
        L.set_labels(s, sid, [5, 6, 7], "LPV")
    with Store(path) as s:
        assert L.get_labels(s, "kept")["oid"].tolist() == [5, 6, 7]
        assert L.list_sets(s)["name"].tolist() == ["kept"]
    with Store(path, read_only=True) as s:
        assert L.label_counts(s, sid).to_dict() == {"LPV": 3}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export(store, tmp_path, suffix):
    s = L.create_set(store, "export me")
    L.set_labels(store, s, [1, 2], "RRc")
    path = L.export_labels(store, s, tmp_path / f"out{suffix}")
    df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(df.columns) == ["survey", "object_id", "label", "label_set", "updated_at"]
    assert (df["survey"] == SURVEY).all() and (df["label_set"] == "export me").all()
    assert df["object_id"].tolist() == store.objects(oids=[1, 2])["object_id"].tolist()
    with pytest.raises(LcdashError, match=".csv or .parquet"):
        L.export_labels(store, s, tmp_path / "out.xlsx")


def _grid_points(n_side=10):
    g = np.arange(n_side, dtype=float)
    x, y = np.meshgrid(g, g)
    return pd.DataFrame({"oid": np.arange(1, n_side * n_side + 1), "x": x.ravel(), "y": y.ravel()})


def test_suggest_without_predictions_spreads_away_from_labels(store):
    pts = _grid_points(6)                      # 36 points on a 6x6 grid; oids 1..36
    s = L.create_set(store, "active")
    L.set_labels(store, s, [1, 2, 7, 8], "RRab")  # the corner near (0, 0)
    sug = suggest_next(store, s, pts, None, k=4)
    assert list(sug.columns) == ["oid", "x", "y", "entropy", "rank"]
    assert len(sug) == 4 and sug["rank"].tolist() == [1, 2, 3, 4]
    assert not set(sug["oid"]) & {1, 2, 7, 8}
    assert sug["entropy"].isna().all()
    # The first pick is the far corner (5, 5); picks are spread: pairwise distance >= 2.
    assert tuple(sug.loc[0, ["x", "y"]]) == (5.0, 5.0)
    xy = sug[["x", "y"]].to_numpy()
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    assert dist[np.triu_indices(4, 1)].min() >= 2
    # Duplicated bands (same oid twice) count once; no labels: start near the centre.
    twice = pd.concat([pts, pts])
    fresh = L.create_set(store, "fresh")
    sug2 = suggest_next(store, fresh, twice, None, k=36)
    assert sug2["oid"].is_unique and len(sug2) == 36


def test_suggest_with_predictions_is_uncertain_and_spread(store):
    rng = np.random.default_rng(0)
    # Two clumps far apart; the left clump is far more uncertain than the right one.
    left = pd.DataFrame({"x": rng.normal(0, 0.3, 100), "y": rng.normal(0, 0.3, 100)})
    right = pd.DataFrame({"x": rng.normal(10, 0.3, 100), "y": rng.normal(0, 0.3, 100)})
    pts = pd.concat([left, right], ignore_index=True)
    pts["oid"] = np.arange(1, 201)
    ent = np.r_[rng.uniform(0.9, 1.0, 100), rng.uniform(0.5, 0.6, 100)]
    ent[0] = 1.0                               # oid 1 (in the store) is the most uncertain
    preds = pd.DataFrame({"oid": pts["oid"], "entropy": ent})
    s = L.create_set(store, "probe")
    most = 1
    L.set_labels(store, s, [most], "EA")
    sug = suggest_next(store, s, pts, preds, k=6)
    assert len(sug) == 6 and most not in set(sug["oid"])
    assert np.all(np.diff(sug["entropy"].to_numpy()) <= 0)
    # Uncertain: all from the top quarter; spread: not all the same few points of one clump.
    assert (sug["entropy"] >= np.sort(ent)[-50]).all()
    xy = sug[["x", "y"]].to_numpy()
    assert np.linalg.norm(xy[:, None] - xy[None], axis=2).max() > 0.5
    with pytest.raises(LcdashError, match="entropy"):
        suggest_next(store, s, pts, preds.rename(columns={"entropy": "h"}))
    # Everything labelled: nothing to suggest.
    L.set_labels(store, s, pts["oid"][:40], "EA")
    assert suggest_next(store, s, pts.head(40), preds).empty


def test_suggest_defaults_use_latest_map_and_probe(store):
    from lcdash.store.projections import save_projection

    s = L.create_set(store, "defaults", description=None)
    assert suggest_next(store, s).empty                      # no map, no probe: nothing to suggest
    oids = store.objects()["oid"].to_numpy()
    rng = np.random.default_rng(3)
    save_projection(store, "enc", "last", {"seed": 0}, oids, "V", rng.normal(size=(len(oids), 2)))
    L.set_labels(store, s, oids[:5], "RRab")
    far = suggest_next(store, s, n=7)                        # map only: farthest points
    assert len(far) == 7 and far["entropy"].isna().all() and not set(far["oid"]) & set(oids[:5])
    with store.transaction() as cur:
        cur.execute("INSERT INTO eval_runs (run_id, kind, config, selection) "
                    "VALUES ('r1', 'probe', '{}', '{}')")
        for i, oid in enumerate(oids):
            cur.execute("INSERT INTO predictions VALUES ('r1', ?, 'V', 'EW', 0.5, ?)", [int(oid), i / 100])
    sug = suggest_next(store, s, k=3)                        # map + newest probe run
    assert len(sug) == 3 and sug["entropy"].notna().all()
    assert sug["entropy"].max() == pytest.approx((len(oids) - 1) / 100)
    assert suggest_next(store, s, predictions=None, k=3)["entropy"].isna().all()
    with pytest.raises(LcdashError, match="'latest'"):
        suggest_next(store, s, predictions="newest")


def test_export_frame_and_aliases(store):
    s = L.create_set(store, "frame")
    L.set_labels(store, s, [3], "EA")
    frame = L.export_labels(store, "frame")
    assert frame[["object_id", "label", "label_set"]].values.tolist() == [
        [store.objects(oids=[3])["object_id"][0], "EA", "frame"]]
    L.delete_set(store, "frame")
    assert L.list_sets(store).empty
