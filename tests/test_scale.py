"""embed-catalog on Dask distributed, import-embeddings and the streamed demo survey (lcdash.scale)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from lcdash.cli import main
from lcdash.models.astromer import Astromer, AstromerConfig
from lcdash.scale import MANIFEST, OUTPUT_FILE, iter_output, layers_of
from lcdash.simulate import simulate_survey, write_survey_parquet
from lcdash.store import Store
from lcdash.store.embeddings import load_embeddings
from lcdash.weights import save_encoder

REPO = Path(__file__).resolve().parents[1]
N_OBJECTS, SEED, BANDS = 36, 3, ("g", "r")


@pytest.fixture(scope="module")
def cluster():
    """One local 2-process cluster (1 thread each) for the module: `--scheduler` attaches to it."""
    import sys
    import types

    distributed = pytest.importorskip("distributed")
    # spawned workers re-run the parent's __main__; after the AppTests in one session that is the
    # app's script, so the workers start from a blank __main__ instead
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as lc:
            yield lc.scheduler_address
    finally:
        sys.modules["__main__"] = main


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    cfg = AstromerConfig.astromer2(n_layers=2, n_heads=2, d_model=8, d_ff=8)
    return save_encoder(Astromer(cfg), cfg, tmp_path_factory.mktemp("enc") / "tiny")


@pytest.fixture(scope="module")
def survey():
    return simulate_survey(N_OBJECTS, seed=SEED, bands=BANDS)  # what `lcdash demo` ingests


@pytest.fixture(scope="module")
def embedded_store(tmp_path_factory, encoder):
    """A store of the same survey, embedded with `lcdash embed` (the reference vectors)."""
    db = tmp_path_factory.mktemp("store") / "s.duckdb"
    assert main(["demo", "--db", str(db), "--n-objects", str(N_OBJECTS), "--seed", str(SEED),
                 "--bands", *BANDS]) == 0
    assert main(["embed", "--db", str(db), "--model", str(encoder), "--name", "tiny"]) == 0
    return db


def _reference(db) -> dict:
    with Store(db, read_only=True) as store:
        oid, band, layers = load_embeddings(store, "tiny")
        ids = store.objects(columns=["oid", "object_id"]).set_index("oid")["object_id"]
    return {(ids[o], b): layers[i] for i, (o, b) in enumerate(zip(oid, band, strict=True))}


def _output(out) -> dict:
    got = {}
    for _, table in iter_output(out):
        layers = layers_of(table)
        keys = zip(table.column("object_id").to_pylist(), table.column("band").to_pylist(), strict=True)
        for i, (o, b) in enumerate(keys):
            assert (str(o), b) not in got, f"{o} {b} embedded twice"
            got[(str(o), b)] = layers[i]
    return got


def _assert_same(got: dict, ref: dict) -> None:
    assert set(got) == set(ref)
    err = max(float(np.abs(got[k] - ref[k]).max()) for k in ref)
    assert err <= 1e-5, err


def _hive_dataset(folder: Path, observations: pd.DataFrame, n_parts: int) -> Path:
    ids = sorted(observations["object_id"].unique())
    for k in range(n_parts):
        part = folder / f"part={k}"
        part.mkdir(parents=True)
        observations[observations["object_id"].isin(ids[k::n_parts])].to_parquet(part / "part-0.parquet")
    return folder


def test_parquet_dataset_on_two_workers_matches_lcdash_embed(tmp_path, cluster, encoder, survey,
                                                              embedded_store, capsys):
    obs, _ = survey
    src = _hive_dataset(tmp_path / "obs", obs.rename(columns={"time": "hjd"}), 4)
    out = tmp_path / "out"
    args = ["embed-catalog", str(src), "--model", str(encoder), "--out", str(out), "--scheduler", cluster,
            "--map", "time=hjd"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["workers"] == 2 and report["embedded"] == 4 and report["failed"] == []
    assert report["light_curves"] == N_OBJECTS * len(BANDS)
    _assert_same(_output(out), _reference(embedded_store))
    table = pq.read_table(out / "part=0" / OUTPUT_FILE)
    assert table.column_names[:3] == ["object_id", "band", "n_windows"]
    # a re-run finds every partition done and adds nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob(OUTPUT_FILE)}
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["embedded"] == 0 and report["already_done"] == 4
    assert {p: p.stat().st_mtime_ns for p in out.rglob(OUTPUT_FILE)} == before


def test_store_source_round_trip_through_import(tmp_path, cluster, encoder, embedded_store, capsys):
    out = tmp_path / "out"
    assert main(["embed-catalog", str(embedded_store), "--model", str(encoder), "--out", str(out),
                 "--scheduler", cluster, "--chunk-size", "25"]) == 0
    assert (out / "_export" / "chunk=00000" / OUTPUT_FILE).exists()  # exported by the client
    ref = _reference(embedded_store)
    _assert_same(_output(out), ref)
    # another selection of the store is refused rather than mixed with this run's partitions
    assert main(["embed-catalog", str(embedded_store), "--model", str(encoder), "--out", str(out),
                 "--scheduler", cluster, "--band", "g"]) == 1
    assert "another selection of the store" in capsys.readouterr().err
    fresh = tmp_path / "fresh.duckdb"
    assert main(["demo", "--db", str(fresh), "--n-objects", str(N_OBJECTS), "--seed", str(SEED),
                 "--bands", *BANDS]) == 0
    for _ in range(2):  # importing twice adds nothing
        assert main(["import-embeddings", str(out), "--db", str(fresh), "--name", "tiny"]) == 0
    with Store(fresh, read_only=True) as store:
        assert store.sql("SELECT count(*) n FROM embeddings")["n"][0] == len(ref)
        oid, band, layers = load_embeddings(store, "tiny")
        ids = store.objects(columns=["oid", "object_id"]).set_index("oid")["object_id"]
    _assert_same({(ids[o], b): layers[i] for i, (o, b) in enumerate(zip(oid, band, strict=True))}, ref)


def test_hats_catalogue(tmp_path, cluster, encoder, survey, embedded_store):
    lsdb = pytest.importorskip("lsdb")
    npd = pytest.importorskip("nested_pandas")
    obs, objs = survey
    # ZTF-like names: objectid, and a nested lightcurve with hmjd / mag / magerr / band
    flat = obs.rename(columns={"object_id": "objectid", "time": "hmjd", "mag_err": "magerr"})
    nf = npd.NestedFrame(objs.rename(columns={"object_id": "objectid"}).set_index("objectid"))
    nf = nf.join_nested(flat.set_index("objectid"), "lightcurve").reset_index()
    cat = lsdb.from_dataframe(nf, ra_column="ra", dec_column="dec", highest_order=1, partition_rows=12)
    cat.write_catalog(tmp_path / "hats", catalog_name="sim")
    out = tmp_path / "out"
    assert main(["embed-catalog", str(tmp_path / "hats"), "--model", str(encoder), "--out", str(out),
                 "--scheduler", cluster]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source_spec"]["kind"] == "hats" and len(manifest["partitions"]) > 1
    assert all(p.startswith("Norder=") for p in manifest["partitions"])
    _assert_same(_output(out), _reference(embedded_store))


def test_interrupted_run_resumes_without_duplicates(tmp_path, cluster, encoder, survey, embedded_store):
    from lcdash.scale import embed_catalog

    src = _hive_dataset(tmp_path / "obs", survey[0], 6)
    out = tmp_path / "out"
    first = embed_catalog(src, encoder, out, scheduler=cluster)
    assert len(first.done) == 6
    # what a kill leaves: some partitions not written, a half-written temporary file
    for name in ("part=1", "part=4"):
        f = out / name / OUTPUT_FILE
        f.rename(f.with_name(f".{OUTPUT_FILE}.dead.tmp"))
    again = embed_catalog(src, encoder, out, scheduler=cluster)
    assert sorted(again.done) == ["part=1", "part=4"] and len(again.skipped) == 4
    assert not list(out.rglob("*.tmp"))
    _assert_same(_output(out), _reference(embedded_store))


def test_killed_cli_run_resumes(tmp_path, cluster, encoder, survey, embedded_store):
    src = _hive_dataset(tmp_path / "obs", survey[0], 12)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lcdash", "embed-catalog", str(src), "--model", str(encoder),
           "--out", str(out), "--scheduler", cluster]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(out.rglob(OUTPUT_FILE)):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and anything it started
    proc.wait()
    done_before = len(list(out.rglob(OUTPUT_FILE)))
    assert done_before >= 1
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["already_done"] >= done_before and report["embedded"] + report["already_done"] == 12
    _assert_same(_output(out), _reference(embedded_store))


def test_corrupt_partition_is_named_and_the_others_finish(tmp_path, cluster, encoder, survey, capsys):
    src = _hive_dataset(tmp_path / "obs", survey[0], 4)
    (src / "part=2" / "part-0.parquet").write_bytes(b"this is not parquet")
    out = tmp_path / "out"
    code = main(["embed-catalog", str(src), "--model", str(encoder), "--out", str(out),
                 "--scheduler", cluster, "--retries", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "failed partition part=2:" in err and "1 of 4 partitions failed (part=2)" in err
    assert "Traceback" not in err
    assert sorted(p.parent.name for p in out.rglob(OUTPUT_FILE)) == ["part=0", "part=1", "part=3"]
    assert json.loads((out / MANIFEST).read_text())["failed"].keys() == {"part=2"}
    # import takes what finished and says what is missing
    db = tmp_path / "s.duckdb"
    assert main(["demo", "--db", str(db), "--n-objects", str(N_OBJECTS), "--seed", str(SEED),
                 "--bands", *BANDS]) == 0
    assert main(["import-embeddings", str(out), "--db", str(db), "--name", "tiny"]) == 0
    assert "1 partition(s)" in capsys.readouterr().err


def test_bad_inputs_get_one_line(tmp_path, encoder, survey, capsys):
    assert main(["embed-catalog", str(tmp_path / "nope"), "--model", str(encoder), "--out",
                 str(tmp_path / "o")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    src = _hive_dataset(tmp_path / "obs", survey[0].drop(columns="mag"), 2)
    assert main(["embed-catalog", str(src), "--model", str(encoder), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "no column for mag" in err and "--map" in err and len(err.strip().splitlines()) == 1
    # an output folder of another encoder is refused, not mixed
    src2 = _hive_dataset(tmp_path / "obs2", survey[0], 1)
    out = tmp_path / "o2"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"weights_sha256": "0" * 64, "source": str(src2.resolve())}))
    assert main(["embed-catalog", str(src2), "--model", str(encoder), "--out", str(out)]) == 1
    assert "another encoder" in capsys.readouterr().err


def test_demo_streams_a_partitioned_survey(tmp_path, capsys):
    assert main(["demo", "--n-objects", "25", "--out-parquet", str(tmp_path / "big"),
                 "--partition-size", "10", "--seed", "4"]) == 0
    parts = sorted((tmp_path / "big" / "observations").iterdir())
    assert [p.name for p in parts] == ["part=00000", "part=00001", "part=00002"]
    seen = {}
    for p in parts:
        ids = set(pd.read_parquet(p / "part-0.parquet")["object_id"])
        assert not ids & set(seen), "an object spans partitions"
        seen.update(dict.fromkeys(ids, p.name))
    objects = pd.read_parquet(tmp_path / "big" / "objects.parquet")
    assert sorted(seen) == sorted(objects["object_id"]) and len(objects) == 25
    assert objects["object_id"].is_unique
    assert pq.ParquetFile(tmp_path / "big" / "objects.parquet").num_row_groups == 3
    # the same seed gives the same survey
    again = write_survey_parquet(tmp_path / "again", 25, seed=4, objects_per_partition=10)
    assert again["observations"] == sum(len(pd.read_parquet(p / "part-0.parquet")) for p in parts)
    assert main(["demo", "--n-objects", "5", "--out-parquet", str(tmp_path / "big")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["demo", "--n-objects", "5"]) == 1


def test_demo_hats_writer_gives_the_parquet_survey(tmp_path, cluster, encoder):
    lsdb = pytest.importorskip("lsdb")
    assert main(["demo", "--n-objects", "30", "--out-hats", str(tmp_path / "hats"), "--partition-size", "2",
                 "--seed", "5"]) == 0
    assert main(["demo", "--n-objects", "30", "--out-parquet", str(tmp_path / "pq"), "--partition-size", "2",
                 "--seed", "5"]) == 0
    cat = lsdb.open_catalog(str(tmp_path / "hats"))
    assert cat.nested_columns == ["lightcurve"] and cat.hc_structure.catalog_info.total_rows == 30
    assert len(cat.get_healpix_pixels()) > 1 and not (tmp_path / "hats" / "_staging").exists()
    for src in ("hats", "pq"):
        assert main(["embed-catalog", str(tmp_path / src), "--model", str(encoder), "--out",
                     str(tmp_path / f"emb-{src}"), "--scheduler", cluster]) == 0
    got = _output(tmp_path / "emb-hats")
    assert len(got) == 30
    _assert_same(got, _output(tmp_path / "emb-pq"))
