"""lcdash.store: schema, ingest (all-or-nothing, idempotent), filters, light curves and batches."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pandas as pd
import pytest

from lcdash import io
from lcdash.errors import LcdashError, ValidationError
from lcdash.lightcurve import LightCurveBatch
from lcdash.store import Store
from lcdash.store.schema import SCHEMA_VERSION


def survey_frames(n_objects=5, bands=("g", "r"), n=10, seed=0, prefix="obj"):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_objects):
        for b in bands:
            k = n + i  # distinct lengths
            t = np.sort(rng.uniform(0, 100, k))
            rows.append(
                pd.DataFrame(
                    {
                        "object_id": f"{prefix}{i}",
                        "band": b,
                        "time": t,
                        "mag": 15 + rng.normal(0, 0.2, k),
                        "mag_err": rng.uniform(0.01, 0.1, k),
                    }
                )
            )
    obs = pd.concat(rows, ignore_index=True)
    objects = pd.DataFrame(
        {
            "object_id": [f"{prefix}{i}" for i in range(n_objects)],
            "label": ["A", "B"] * (n_objects // 2) + ["A"] * (n_objects % 2),
            "period": np.linspace(0.3, 3.0, n_objects),
            "ra": np.arange(n_objects, dtype=float),
            "dec": -np.arange(n_objects, dtype=float),
        }
    )
    return obs, objects


def snapshot(store: Store) -> dict:
    """Every row of the data tables, for row-for-row comparisons."""
    cur = store.cursor()
    try:
        return {
            "objects": cur.execute("SELECT * FROM objects ORDER BY oid").fetchall(),
            "lightcurves": cur.execute("SELECT * FROM lightcurves ORDER BY oid, band").fetchall(),
            "seq": cur.execute("SELECT max(oid) FROM objects").fetchall(),
        }
    finally:
        cur.close()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.duckdb")
    yield s
    s.close()


@pytest.fixture
def filled(store):
    obs, objects = survey_frames()
    o, j, rep = io.prepare(obs, objects=objects)
    store.ingest(o, j, survey="toy", validation=rep)
    return store


def test_schema_version_and_reopen(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
    with Store(path, read_only=True) as s:
        assert s.schema_version() == SCHEMA_VERSION
        with pytest.raises(LcdashError, match="read-only"):
            with s.transaction():
                pass
    with pytest.raises(LcdashError, match="no such store"):
        Store(tmp_path / "missing.duckdb", read_only=True)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as s:
        s.con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(LcdashError, match="newer than this lcdash"):
        Store(path)


def test_ingest_counts_and_contents(filled):
    info = filled.info()
    assert info["objects"] == 5 and info["lightcurves"] == 10
    assert info["observations"] == sum(2 * (10 + i) for i in range(5))
    assert info["classes"] == {"A": 3, "B": 2}
    assert info["bands"]["g"]["lightcurves"] == 5
    objs = filled.objects()
    assert list(objs["bands"].iloc[0]) == ["g", "r"]
    assert objs["n_obs"].tolist() == [2 * (10 + i) for i in range(5)]
    # the long view matches the lists
    long = filled.sql("SELECT oid, band, time FROM observations ORDER BY oid, band, time", limit=None)
    assert len(long) == info["observations"]


def test_idempotent_reingest_and_merge(filled):
    before = snapshot(filled)
    obs, objects = survey_frames()
    o, j, _ = io.prepare(obs, objects=objects)
    again = filled.ingest(o, j, survey="toy")
    assert (again.objects_new, again.objects_existing) == (0, 5)
    assert (again.observations_new, again.observations_present) == (0, len(o))
    assert snapshot(filled) == before
    # new points for an existing light curve merge uniquely on time; stored values win
    extra = pd.DataFrame(
        {
            "object_id": ["obj0"] * 3,
            "band": ["g"] * 3,
            "time": [o.time[0], 500.0, 501.0],
            "mag": [17.0, 14.0, 14.5],
            "mag_err": [0.1] * 3,
        }
    )
    r = filled.ingest(*io.prepare(extra, min_obs=1)[:2], survey="toy")
    assert (r.observations_new, r.observations_present, r.lightcurves_merged) == (2, 1, 1)
    lc = filled.read_batch([1], band="g")
    n = lc.length[0]
    assert n == 12 and lc.time[0, n - 1] == 501.0 and lc.mag[0, 0] != 17.0
    assert np.all(np.diff(lc.time[0, :n]) > 0)
    assert filled.objects(oids=[1])["n_obs"][0] == 22


def test_same_object_id_in_two_surveys(filled):
    obs, _ = survey_frames(n_objects=2)
    filled.ingest(*io.prepare(obs)[:2], survey="other")
    assert filled.info()["objects"] == 7
    with pytest.raises(LcdashError, match="several surveys"):
        filled.resolve(["obj0"])
    assert filled.resolve(["obj1", "obj0"], survey="other").tolist() == [7, 6]


def test_catalogue_update_on_reingest(filled):
    _, objects = survey_frames()
    objects["label"] = ["C", None, None, None, None]
    filled.ingest(*io.prepare(survey_frames()[0], objects=objects)[:2], survey="toy")
    labels = filled.objects()["label"].tolist()
    assert labels == ["C", "B", "A", "B", "A"]  # None does not erase


def test_failed_second_file_leaves_store_unchanged(filled, tmp_path):
    before = snapshot(filled)
    good = tmp_path / "new1.csv"
    bad = tmp_path / "new2.csv"
    survey_frames(1, prefix="new", seed=3)[0].to_csv(good, index=False)
    broken = survey_frames(1, prefix="newer", seed=4)[0].astype({"mag": object})
    broken.loc[3, "mag"] = "n/a?"
    broken.to_csv(bad, index=False)
    o, j, report = io.prepare(io.read_inputs([good, bad]))
    assert not report.ok
    with pytest.raises(ValidationError, match="new2.csv, column 'mag', row 4"):
        filled.ingest(o, j, survey="toy", validation=report)
    assert snapshot(filled) == before


def test_exception_during_insert_rolls_back(filled, monkeypatch):
    before = snapshot(filled)
    obs, objects = survey_frames(n_objects=3, prefix="fresh", seed=7)
    more, _ = survey_frames(n_objects=2, seed=9)  # merges into existing obj0, obj1 too
    more["time"] += 1000
    import lcdash.store.ingest as ingest_mod

    def boom(cur):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ingest_mod, "_update_object_counts", boom)
    o, j, _ = io.prepare(pd.concat([obs, more], ignore_index=True), objects=objects)
    with pytest.raises(RuntimeError, match="disk on fire"):
        filled.ingest(o, j, survey="toy")
    assert snapshot(filled) == before
    monkeypatch.undo()
    r = filled.ingest(o, j, survey="toy")  # the store still works
    assert r.objects_new == 3 and filled.info()["objects"] == 8
    assert filled.objects()["n_obs"].iloc[:2].tolist() == [20 + 20, 22 + 22]


def test_ingest_checks_invariants_without_prepare(store):
    obs, _ = survey_frames(2)
    with pytest.raises(ValidationError, match="no survey name"):
        store.ingest(obs)
    dup = pd.concat([obs, obs.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValidationError, match="two rows at time"):
        store.ingest(dup, survey="x")
    with pytest.raises(ValidationError, match="missing column"):
        store.ingest(obs.drop(columns=["mag"]), survey="x")
    shuffled = obs.sample(frac=1.0, random_state=1)  # unsorted input is sorted, not refused
    store.ingest(shuffled, survey="x")
    b = store.read_batch(store.objects()["oid"], band="r")
    assert all(np.all(np.diff(b.row(i)[0]) > 0) for i in range(len(b)))


def test_objects_filters(filled):
    assert filled.objects(label="A")["oid"].tolist() == [1, 3, 5]
    assert filled.objects(label=["A", "B"], limit=2)["oid"].tolist() == [1, 2]
    assert filled.objects(period=(1.0, 2.5))["oid"].tolist() == [3, 4]
    assert filled.objects(n_obs=(None, 22))["oid"].tolist() == [1, 2]
    assert filled.objects(oids=[4, 2])["oid"].tolist() == [2, 4]
    assert filled.objects(survey="nope").empty
    assert filled.objects(band="g", columns=["oid", "object_id"]).shape == (5, 2)
    assert filled.objects(labelled=False).empty
    assert filled.bands() == ["g", "r"] and filled.bands([1]) == ["g", "r"]
    assert filled.surveys() == ["toy"]
    assert filled.labels().to_dict() == {"A": 3, "B": 2}


def test_lightcurve_all_bands(filled):
    lc = filled.lightcurve(2)
    assert lc.object_id == "obj1" and lc.label == "B" and lc.period == pytest.approx(0.975)
    assert len(lc.time) == 22 and set(lc.band) == {"g", "r"}
    assert np.all(np.diff(lc.time) >= 0)
    assert lc.meta["oid"] == 2 and lc.meta["survey"] == "toy"
    with pytest.raises(LcdashError, match="no object with oid 999"):
        filled.lightcurve(999)


def test_read_batch_padding_order_and_save_load(filled, tmp_path):
    oids = [3, 1, 5]
    b = filled.read_batch(oids, band="r")
    assert b.oid.tolist() == oids and b.band == ["r"] * 3
    assert b.length.tolist() == [12, 10, 14] and b.time.shape == (3, 14)
    assert b.time.dtype == np.float64 and b.mag.dtype == np.float32 and b.mag_err.dtype == np.float32
    assert b.mask.sum(axis=1).tolist() == [12, 10, 14]
    assert np.all(b.mag[~b.mask] == 0) and np.all(b.time[~b.mask] == 0)
    lc = filled.lightcurve(3)
    np.testing.assert_allclose(b.row(0)[0], lc.time[lc.band == "r"])
    first = filled.read_batch(oids)  # band=None: each object's first band
    assert first.band == ["g"] * 3
    path = filled.export_batch(oids, "r", tmp_path / "batch.npz")
    back = LightCurveBatch.load(path)
    for f in ("oid", "time", "mag", "mag_err", "mask", "length"):
        np.testing.assert_array_equal(getattr(back, f), getattr(b, f))
    assert back.band == b.band
    sub = b[np.array([1])]
    assert sub.time.shape == (1, 10) and sub.oid.tolist() == [1]
    with pytest.raises(LcdashError, match="no band 'z'"):
        filled.read_batch([1], band="z")
    with pytest.raises(LcdashError, match="oid 42"):
        filled.read_batch([1, 42])
    assert len(filled.read_batch([])) == 0


def test_iter_batches_and_from_arrays(filled):
    batches = list(filled.iter_batches(range(1, 6), batch_size=2, band="g"))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert np.concatenate([b.oid for b in batches]).tolist() == [1, 2, 3, 4, 5]
    b = LightCurveBatch.from_arrays([np.arange(3.0), np.arange(5.0)], [np.ones(3), np.ones(5)])
    assert b.mask.sum() == 8 and np.isnan(b.mag_err[b.mask]).all()


def test_threads_share_one_store(filled):
    errors, results = [], []

    def work(i):
        try:
            for _ in range(5):
                results.append(len(filled.read_batch([1 + i % 5, 2])))
                filled.lightcurve(1 + i % 5)
                filled.objects(label="A")
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [2] * 30


def test_demo_store_is_synthetic(demo_db, tmp_path):
    with Store(demo_db, read_only=True) as s:
        info = s.info()
        assert info["objects"] == 300 and info["synthetic"] == 300
        assert all("synthetic" in name for name in info["surveys"])
        assert len(info["classes"]) >= 5
    copy = tmp_path / "demo.duckdb"
    shutil.copy(demo_db, copy)
    from lcdash.store.demo import create_demo_store

    with create_demo_store(copy, n_objects=300, seed=0) as s:  # idempotent
        assert s.info()["objects"] == 300


def test_shared_subset_ingest(shared_data, tmp_path):
    obs = pd.read_parquet(shared_data / "eros1" / "observations.parquet")
    objects = pd.read_parquet(shared_data / "eros1" / "objects.parquet")
    keep = objects["object_id"].iloc[:50]
    obs = obs[obs["object_id"].isin(keep)]
    o, j, rep = io.prepare(obs, objects=objects)
    assert rep.ok and len(j) == 50
    with Store(tmp_path / "s.duckdb") as s:
        r = s.ingest(o, j, validation=rep)
        assert r.surveys == ["EROS-1 (LMC photographic plates)"]
        info = s.info()
        assert info["observations"] == len(obs) and set(info["bands"]) == {"EROS1_B", "EROS1_R"}
        assert info["labelled"] == 50


def test_small_and_large_batch_paths_agree(filled, monkeypatch):
    import lcdash.store as store_mod

    oids = [5, 2, 2, 4]
    small = {b: filled.read_batch(oids, band=b) for b in (None, "r")}
    monkeypatch.setattr(store_mod, "SMALL_BATCH", 0)  # force the join path
    for b, got in small.items():
        big = filled.read_batch(oids, band=b)
        assert got.oid.tolist() == big.oid.tolist() == oids and got.band == big.band
        for f in ("time", "mag", "mag_err", "mask", "length"):
            np.testing.assert_array_equal(getattr(got, f), getattr(big, f))
    with pytest.raises(LcdashError, match="oid 42"):
        filled.read_batch([1, 42])


def test_open_errors_are_lcdash_errors(tmp_path):
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database")
    with pytest.raises(LcdashError, match="junk.duckdb: cannot open the store"):
        Store(junk)
    path = tmp_path / "s.duckdb"
    with Store(path):
        with pytest.raises(LcdashError, match="cannot open the store"):
            Store(path, read_only=True)  # same process, other mode


def test_a_version_2_store_moves_probe_results_out_of_timings(tmp_path):
    """Before version 3 a probe run kept its layer weights (gamma), classes and note in `timings`;
    opening such a store moves them into their own columns, where load_run reads them."""
    from lcdash.store.results import load_run

    db = tmp_path / "old.duckdb"
    old_timings = {"total_seconds": 3.5, "layer_weights": [0.2, 0.3, 0.5], "classes": ["EA", "RRab"],
                   "note": "protocol skipped"}  # fmt: skip
    with Store(db) as s:
        s.con.execute("ALTER TABLE eval_runs DROP COLUMN layer_weights; ALTER TABLE eval_runs DROP COLUMN "
                      "classes; ALTER TABLE eval_runs DROP COLUMN note")  # fmt: skip
        s.con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        s.con.execute("INSERT INTO eval_runs (run_id, kind, config, selection, timings) VALUES "
                      "('old', 'probe', '{}', '{}', ?), ('cmp', 'compare', '{}', '{}', ?)",
                      [json.dumps(old_timings), json.dumps({"total_seconds": 1})])  # fmt: skip
    with Store(db) as s:
        assert s.schema_version() == SCHEMA_VERSION >= 3
        info, _ = load_run(s, "old")
        assert info["layer_weights"] == [0.2, 0.3, 0.5] and info["classes"] == ["EA", "RRab"]
        assert info["note"] == "protocol skipped" and info["timings"] == {"total_seconds": 3.5}
        other, _ = load_run(s, "cmp")
        assert other["layer_weights"] is None and other["classes"] is None
        assert other["timings"] == {"total_seconds": 1}
