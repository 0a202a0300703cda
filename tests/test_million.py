"""The store at scale (issue 14): streamed Parquet dataset ingest, chunked embeddings reads, the
sampled-fit projection and 100k-object label sets. Sizes here are small; the million lives in
bench/million_bench.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lcdash.errors import LcdashError
from lcdash.simulate import write_survey_parquet
from lcdash.store import Store


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 3-partition `lcdash demo --out-parquet` dataset of 150 objects."""
    root = tmp_path_factory.mktemp("dataset") / "survey"
    write_survey_parquet(root, 150, seed=3, objects_per_partition=50, n_obs=(20, 40))
    return root


def _contents(store: Store):
    cur = store.cursor()
    try:
        objs = cur.execute("SELECT object_id, survey, label, period, ra, dec, n_obs, bands, synthetic, meta "
                           "FROM objects ORDER BY object_id").df()
        lcs = cur.execute("SELECT o.object_id, l.band, l.n_obs, l.time, l.mag, l.mag_err FROM lightcurves l "
                          "JOIN objects o USING (oid) ORDER BY o.object_id, l.band").df()
    finally:
        cur.close()
    return objs, lcs


def test_streamed_dataset_ingest_equals_the_in_memory_ingest(dataset, tmp_path, monkeypatch):
    from lcdash.io import prepare
    from lcdash.store import ingest_dataset as module
    from lcdash.store.ingest_dataset import ingest_dataset, partitions

    monkeypatch.setattr(module, "INSERT_ROWS", 60)  # several writes (2 + 1 partitions), as at scale

    parts, catalogue = partitions(dataset)
    assert [name for name, _ in parts] == ["part=00000", "part=00001", "part=00002"]
    seen = []
    with Store(tmp_path / "streamed.duckdb") as streamed:
        # commit_rows=1: a transaction per batch, as above COMMIT_ROWS observations
        report = ingest_dataset(streamed, dataset, progress=lambda i, n, msg: seen.append((i, n)),
                                commit_rows=1)
        assert seen[0] == (0, 3) and seen[-1] == (3, 3)
        a = _contents(streamed)
        info_a = streamed.info()
    obs = pd.concat([pq.read_table(f).to_pandas() for _, files in parts for f in files], ignore_index=True)
    obs_p, objs_p, rep = prepare(obs, objects=pq.read_table(catalogue).to_pandas())
    rep.raise_if_errors()
    with Store(tmp_path / "memory.duckdb") as memory:
        expected = memory.ingest(obs_p, objs_p, survey="survey")
        b = _contents(memory)
        info_b = memory.info()
    assert report.objects_new == expected.objects_new == 150
    assert report.observations_new == expected.observations_new == len(obs_p)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    info_a.pop("path"), info_b.pop("path")
    assert info_a == info_b


def test_corrupt_partition_rolls_back_and_is_named(dataset, tmp_path, capsys, monkeypatch):
    import shutil

    from lcdash.cli import main
    from lcdash.store import ingest_dataset as module
    from lcdash.store.ingest_dataset import ingest_dataset

    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    (bad / "observations" / "part=00002" / "part-0.parquet").write_bytes(b"PAR1 not really parquet")
    db = tmp_path / "store.duckdb"
    with Store(db) as store:
        store.ingest(pd.DataFrame({"object_id": ["X"] * 5, "band": "V", "time": np.arange(5.0),
                                   "mag": np.ones(5)}), survey="before")
        before = _contents(store)
        with pytest.raises(LcdashError, match=r"partition part=00002 .*part-0\.parquet"):
            ingest_dataset(store, bad)
        after = _contents(store)
        pd.testing.assert_frame_equal(before[0], after[0])
        # in batches of committed transactions: partitions 0-1 commit, 2 fails, they are deleted again
        monkeypatch.setattr(module, "INSERT_ROWS", 60)
        with pytest.raises(LcdashError, match=r"partition part=00002"):
            ingest_dataset(store, bad, commit_rows=1)
        after = _contents(store)
    pd.testing.assert_frame_equal(before[0], after[0])   # partitions 0 and 1 went in, then rolled back
    pd.testing.assert_frame_equal(before[1], after[1])
    # the CLI streams a dataset folder too, and says which partition failed in one line
    code = main(["ingest", str(bad), "--db", str(db)])
    err = capsys.readouterr().err
    assert code != 0 and "part=00002" in err and "nothing was ingested" in err and "Traceback" not in err
    code = main(["ingest", str(dataset), "--db", str(db), "--survey", "mine"])
    out = capsys.readouterr().out
    assert code == 0 and "150 new object(s)" in out
    with Store(db, read_only=True) as store:
        assert store.info()["surveys"]["mine"]["objects"] == 150


def test_iter_embeddings_and_map_input_chunks_match_the_whole_read(tmp_path):
    from lcdash.projection import map_input, map_input_chunks
    from lcdash.store.embeddings import (
        DEFAULT_ENCODER,
        iter_embeddings,
        load_embeddings,
        register_default_encoder,
        save_embeddings,
    )

    with Store(tmp_path / "emb.duckdb") as store:
        enc = register_default_encoder(store)
        if enc is None:
            pytest.skip("the shipped encoder is absent")
        shape = (enc["n_layers"] + 1, enc["d_model"])
        rng = np.random.default_rng(0)
        oids = rng.permutation(np.arange(1, 1001))
        layers = rng.normal(size=(1000, *shape)).astype(np.float32)
        save_embeddings(store, DEFAULT_ENCODER, oids, "V", np.ones(1000, np.int32), layers)
        chunks = list(iter_embeddings(store, DEFAULT_ENCODER, chunk_size=300))
        assert [len(c[0]) for c in chunks][:3] == [300, 300, 300] and sum(len(c[0]) for c in chunks) == 1000
        oid_all, _, layers_all = load_embeddings(store, DEFAULT_ENCODER)
        got_oid = np.concatenate([c[0] for c in chunks])
        got = np.concatenate([c[2] for c in chunks])
        order = np.argsort(got_oid)
        np.testing.assert_array_equal(got_oid[order], oid_all)
        np.testing.assert_array_equal(got[order], layers_all)
        keys, X = map_input_chunks(((c[0], c[1]), c[2]) for c in chunks)
        np.testing.assert_allclose(X, map_input(got), rtol=1e-4, atol=1e-5)
        assert list(iter_embeddings(store, DEFAULT_ENCODER, band="nope")) == []


def test_sampled_fit_projection_records_its_parameters_and_covers_every_object(tmp_path, capsys):
    from lcdash import tasks
    from lcdash.projection import sampled_fit_params
    from lcdash.store.embeddings import DEFAULT_ENCODER, register_default_encoder, save_embeddings
    from lcdash.store.projections import find_projection, list_projections, load_projection

    assert sampled_fit_params(1000) is None  # small maps keep the full fit
    with Store(tmp_path / "proj.duckdb") as store:
        enc = register_default_encoder(store)
        if enc is None:
            pytest.skip("the shipped encoder is absent")
        shape = (enc["n_layers"] + 1, enc["d_model"])
        rng = np.random.default_rng(1)
        n = 900
        centres = rng.normal(size=(3, *shape)) * 3
        cls = np.repeat(np.arange(3), n // 3)
        layers = (centres[cls] + rng.normal(size=(n, *shape))).astype(np.float32)
        oids = np.arange(10, 10 + n)
        save_embeddings(store, DEFAULT_ENCODER, oids, "V", np.ones(n, np.int32), layers)
        params = {"encoder": DEFAULT_ENCODER, "embedding": "weighted", "n_neighbors": 10, "min_dist": 0.1,
                  "metric": "euclidean", "seed": 0, "fit_sample": 300, "sampled_fit_above": 500}
        steps = []

        def progress(step, total=None, message=None, metrics=None):
            steps.append((step, total))

        prep = tasks.project_prepare(store, params, tmp_path)
        result = tasks.project_run(tmp_path, {**params, **prep}, progress)
        assert result["sampled_fit"] == {"sample_size": 300, "sample_seed": 0, "threshold": 500,
                                         "transform_batch": 20_000}
        assert steps[-1] == (n, n) and len(steps) >= 4 and all(t == n for _, t in steps)
        done = tasks.project_finalize(store, tmp_path, {**params, **prep}, result)
        points = load_projection(store, done["proj_id"])
        assert sorted(points["oid"]) == oids.tolist() and np.isfinite(points[["x", "y"]].to_numpy()).all()
        stored = list_projections(store).iloc[0]["params"]
        assert stored["sampled_fit"]["sample_size"] == 300 and stored["n_neighbors"] == 10
        # Explore asks with the UMAP parameters only: the sampled fit is found
        asked = {"n_neighbors": 10, "min_dist": 0.1, "metric": "euclidean", "seed": 0}
        assert find_projection(store, DEFAULT_ENCODER, "weighted", asked) == done["proj_id"]
        assert find_projection(store, DEFAULT_ENCODER, "weighted", {**asked, "seed": 1}) is None
        # the placed (transformed) points keep the blobs: each class's centroid nearer its own points
        xy = points.set_index("oid").loc[oids, ["x", "y"]].to_numpy()
        cent = np.stack([xy[cls == c].mean(0) for c in range(3)])
        nearest = np.argmin(((xy[:, None] - cent[None]) ** 2).sum(-1), axis=1)
        assert (nearest == cls).mean() > 0.95
    # the CLI runs the same job with a progress bar
    import json

    from lcdash.cli import main

    code = main(["project", "--db", str(tmp_path / "proj.duckdb"), "--metric", "euclidean", "--seed", "1",
                 "--n-neighbors", "10", "--fit-sample", "300", "--sampled-fit-above", "500"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["n_points"] == n and out["sampled_fit"]["sample_size"] == 300


def test_label_set_of_100k_objects(tmp_path):
    from lcdash.store import labels as L

    n = 100_000
    ids = np.char.add("S", np.arange(n).astype(str))
    obs = pd.DataFrame({"object_id": np.repeat(ids, 3), "band": "V", "time": np.tile(np.arange(3.0), n),
                        "mag": np.ones(3 * n)})
    with Store(tmp_path / "labels.duckdb") as store:
        store.ingest(obs, survey="big")
        oids = store.objects(columns=["oid"])["oid"].to_numpy()
        s = L.create_set(store, "big set")
        assert L.set_labels(store, s, oids, "A") == n
        assert L.set_labels(store, s, oids[: n // 4], "B") == n // 4    # relabel a quarter
        got = L.get_labels(store, s)
        assert len(got) == n and got["oid"].tolist() == sorted(oids.tolist())
        assert L.label_counts(store, s).to_dict() == {"A": n - n // 4, "B": n // 4}
        assert L.remove_labels(store, s, oids[:10]) == 10
        assert L.list_sets(store).iloc[0]["n_labels"] == n - 10


def test_read_batch_index_path_in_chunks_equals_the_join_path(dataset, tmp_path, monkeypatch):
    import lcdash.store as store_mod
    from lcdash.store.ingest_dataset import ingest_dataset

    with Store(tmp_path / "rb.duckdb") as store:
        ingest_dataset(store, dataset)
        oids = np.random.default_rng(0).permutation(store.objects(columns=["oid"])["oid"].to_numpy())[:40]
        oids = np.r_[oids, oids[:3]]  # repeats keep their places
        monkeypatch.setattr(store_mod, "SMALL_BATCH", 7)  # 40 oids: six IN lists
        chunked = store.read_batch(oids)
        monkeypatch.setattr(store_mod, "INDEX_READ_MAX", 0)  # the hash join
        joined = store.read_batch(oids)
    assert chunked.oid.tolist() == joined.oid.tolist() == oids.tolist()
    for f in ("time", "mag", "mag_err", "mask", "length"):
        np.testing.assert_array_equal(getattr(chunked, f), getattr(joined, f))
