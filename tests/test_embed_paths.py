"""Every embed path x every kind of encoder (issue 25, point 5): one matrix.

Paths: `lcdash embed` (a store), `lcdash embed-file` (Parquet), `lcdash embed-catalog` on a Parquet
dataset, a HATS catalogue and a store (Dask), and the app's `embed` and `embed_catalog` jobs
(lcdash.tasks). Encoders: the shipped folded one (data/encoders/astromer2-logpe-folded-demo), tiny
unfolded Astromer 1 and 2. Every path must give, for every (object, band), the vectors of
`embed_batch` on that light curve: folded at the catalogue period on the store paths, which carry
it, and at the period `embed_batch` finds itself on the file paths, which do not.
The folded cells failed with "'FlatCurves' object is not iterable" before the fix.
"""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lcdash import io
from lcdash.cli import main
from lcdash.embed import embed_batch
from lcdash.models.astromer import Astromer, AstromerConfig
from lcdash.simulate import simulate_survey
from lcdash.store import Store
from lcdash.store.embeddings import load_embeddings, register_encoder
from lcdash.weights import load_encoder, save_encoder

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "encoders" / "astromer2-logpe-folded-demo"
N_OBJECTS, SEED, BANDS = 6, 11, ("g", "r")
ENCODERS = ["shipped-folded", "a2", "a1"]
PATHS = [
    "embed",
    "embed-file",
    "embed-catalog-parquet",
    "embed-catalog-hats",
    "embed-catalog-store",
    "job-embed",
    "job-embed-catalog",
]
CARRIES_PERIODS = {"embed", "embed-catalog-store", "job-embed", "job-embed-catalog"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cluster():
    """One local 2-process Dask cluster for the module (`--scheduler` / the job's `scheduler`)."""
    distributed = pytest.importorskip("distributed")
    main_module = sys.modules["__main__"]  # spawned workers re-run __main__: give them a blank one
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc:
            yield lc.scheduler_address
    finally:
        sys.modules["__main__"] = main_module


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("paths")


@pytest.fixture(scope="module")
def encoders(root) -> dict[str, Path]:
    out = {"shipped-folded": SHIPPED}
    for name, make in (("a2", AstromerConfig.astromer2), ("a1", AstromerConfig.astromer1)):
        torch.manual_seed(0)
        cfg = make(n_layers=2, n_heads=2, d_model=8, d_ff=8)
        out[name] = save_encoder(Astromer(cfg), cfg, root / f"enc-{name}")
    return out


@pytest.fixture(scope="module")
def survey():
    """6 objects x 2 bands of 60-400 observations: longer than the shipped encoder's 128-step
    window, so folded curves give several sub-curves and unfolded ones several windows."""
    obs, objs = simulate_survey(N_OBJECTS, seed=SEED, bands=BANDS)
    # every object has a catalogue period, which the store paths fold at (where a store has none,
    # what they fold at is the period finder's business, not this matrix's)
    assert objs["period"].notna().all()
    return obs, objs


@pytest.fixture(scope="module")
def inputs(root, survey) -> dict[str, Path]:
    """The same survey as a store, one Parquet file, a hive-partitioned dataset and a HATS catalogue."""
    obs, objs = survey
    db = root / "store.duckdb"
    with Store(db) as store:
        o, j, _ = io.prepare(obs, objects=objs[["object_id", "label", "period"]])
        store.ingest(o, j, survey="sim")
    obs.to_parquet(root / "obs.parquet")
    ids = sorted(obs["object_id"].unique())
    for k in range(3):
        part = root / "dataset" / f"part={k}"
        part.mkdir(parents=True)
        obs[obs["object_id"].isin(ids[k::3])].to_parquet(part / "part-0.parquet")
    paths = {"store": db, "file": root / "obs.parquet", "dataset": root / "dataset"}
    try:
        import lsdb
        import nested_pandas as npd
    except ImportError:
        return paths
    flat = obs.rename(columns={"object_id": "objectid", "time": "hmjd", "mag_err": "magerr"})
    base = objs[["object_id", "ra", "dec"]].rename(columns={"object_id": "objectid"}).set_index("objectid")
    nf = npd.NestedFrame(base).join_nested(flat.set_index("objectid"), "lightcurve").reset_index()
    cat = lsdb.from_dataframe(nf, ra_column="ra", dec_column="dec", highest_order=1, partition_rows=2)
    cat.write_catalog(root / "hats", catalog_name="sim")
    paths["hats"] = root / "hats"
    return paths


_REFERENCES: dict = {}


def reference(encoder_dir: Path, survey, with_periods: bool) -> dict:
    """embed_batch on each light curve given as plain (time, mag) arrays, with the catalogue period or
    none: what every path must reproduce. Keyed by (object_id, band)."""
    key = (str(encoder_dir), with_periods)
    if key not in _REFERENCES:
        obs, objs = survey
        model, _ = load_encoder(encoder_dir)
        period = objs.set_index("object_id")["period"]
        keys, curves, periods = [], [], []
        for (oid, band), g in obs.sort_values("time").groupby(["object_id", "band"], sort=True):
            keys.append((str(oid), str(band)))
            curves.append((g["time"].to_numpy(np.float64), g["mag"].to_numpy(np.float32)))
            periods.append(period[oid] if with_periods else np.nan)
        n_windows, layers = embed_batch(model, curves, periods=np.asarray(periods, np.float64))
        assert (n_windows > 0).all()
        _REFERENCES[key] = dict(zip(keys, layers, strict=True))
    return _REFERENCES[key]


def _store_vectors(db: Path, name: str) -> dict:
    with Store(db, read_only=True) as store:
        oid, band, layers = load_embeddings(store, name)
        ids = store.objects(columns=["oid", "object_id"]).set_index("oid")["object_id"]
    return {(str(ids[o]), str(b)): layers[i] for i, (o, b) in enumerate(zip(oid, band, strict=True))}


def _file_vectors(path: Path) -> dict:
    df = pd.read_parquet(path)
    cols = sorted((c for c in df.columns if c.startswith("layer_")), key=lambda c: int(c.split("_")[1]))
    layers = np.stack([np.stack(df[c].to_numpy()) for c in cols], 1)
    return {
        (str(o), str(b)): layers[i] for i, (o, b) in enumerate(zip(df["object_id"], df["band"], strict=True))
    }


def _catalog_vectors(out: Path) -> dict:
    from lcdash.scale import iter_output, layers_of

    got = {}
    for _, table in iter_output(out):
        layers = layers_of(table)
        keys = zip(table.column("object_id").to_pylist(), table.column("band").to_pylist(), strict=True)
        for i, (o, b) in enumerate(keys):
            assert (str(o), str(b)) not in got, f"{o} {b} embedded twice"
            got[(str(o), str(b))] = layers[i]
    return got


def _run_job(db: Path, encoder_dir: Path, kind: str, params: dict) -> dict:
    from lcdash import tasks
    from lcdash.jobs import JobManager

    store = Store(db)
    register_encoder(store, "enc", encoder_dir, source="test")
    jm = JobManager(store, kinds=tasks.KINDS)
    try:
        job = jm.wait(jm.submit(kind, {"encoder": "enc", **params}), poll_s=0.1, timeout_s=300)
        assert job.state == "done", f"{kind}: {job.error}\n{job.log_tail()}"
    finally:
        jm.shutdown()
        store.close()
    return _store_vectors(db, "enc")


def run_path(path: str, encoder_dir: Path, inputs: dict, work: Path, cluster: str, capsys) -> dict:
    """Embed the survey along `path`; -> {(object_id, band): layers [L+1, d]}."""

    def cli(*argv) -> None:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "Traceback" not in err

    db = work / "store.duckdb"
    if path in ("embed", "embed-catalog-store", "job-embed", "job-embed-catalog"):
        shutil.copy(inputs["store"], db)
    if path == "embed":
        cli("embed", "--db", db, "--model", encoder_dir, "--name", "enc")
        return _store_vectors(db, "enc")
    if path == "embed-file":
        cli("embed-file", inputs["file"], "--model", encoder_dir, "--out", work / "out.parquet")
        return _file_vectors(work / "out.parquet")
    if path.startswith("embed-catalog"):
        source = {"parquet": inputs["dataset"], "store": db, "hats": inputs.get("hats")}[path.split("-")[-1]]
        if source is None:
            pytest.skip("lsdb / nested_pandas are not installed")
        cli("embed-catalog", source, "--model", encoder_dir, "--out", work / "out", "--scheduler", cluster)
        return _catalog_vectors(work / "out")
    if path == "job-embed":
        return _run_job(db, encoder_dir, "embed", {})
    if path == "job-embed-catalog":
        return _run_job(db, encoder_dir, "embed_catalog", {"scheduler": cluster})
    raise AssertionError(path)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("path", PATHS)
def test_every_embed_path_with_every_encoder(
    path, encoder, encoders, survey, inputs, cluster, tmp_path, capsys
):
    got = run_path(path, encoders[encoder], inputs, tmp_path, cluster, capsys)
    ref = reference(encoders[encoder], survey, with_periods=path in CARRIES_PERIODS)
    assert set(got) == set(ref)
    layers = np.stack([got[k] for k in sorted(ref)])
    assert np.isfinite(layers).all() and layers.shape[1:] == next(iter(ref.values())).shape
    err = max(float(np.abs(got[k] - ref[k]).max()) for k in ref)
    assert err <= 1e-5, f"{path} with {encoder}: {err:.2e} from embed_batch"
