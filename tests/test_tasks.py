"""The job kinds end to end on a copy of the small demo store, with a tiny encoder (fast on CPU).

One module-scoped store and JobManager: the tests run in order (embed first, the rest read its
embeddings), each job in a real worker process.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lcdash import tasks
from lcdash.errors import LcdashError
from lcdash.jobs import JobManager

CLASSES = ["RRab", "EA", "LPV"]


@pytest.fixture(scope="module")
def env(demo_db, tmp_path_factory):
    from lcdash.models.astromer import Astromer, AstromerConfig
    from lcdash.store import Store
    from lcdash.store.embeddings import register_encoder
    from lcdash.weights import save_encoder

    root = tmp_path_factory.mktemp("tasks")
    shutil.copy(demo_db, root / "store.duckdb")
    store = Store(root / "store.duckdb")
    cfg = AstromerConfig.astromer2(n_layers=2, d_model=16, n_heads=2, d_ff=16)
    save_encoder(Astromer(cfg), cfg, root / "tiny")
    register_encoder(store, "tiny", root / "tiny", source="test")
    jm = JobManager(store, kinds=tasks.KINDS)
    yield store, jm
    jm.shutdown()
    store.close()


def _run(jm, kind, params, timeout_s=300):
    job = jm.wait(jm.submit(kind, params), poll_s=0.1, timeout_s=timeout_s)
    assert job.state == "done", f"{kind}: {job.error}\n{job.traceback}\n{job.log_tail()}"
    return job


def test_embed_fills_the_embeddings_table_and_skips_done_objects(env):
    from lcdash.store.embeddings import load_embeddings

    store, jm = env
    n = len(store.objects())
    job = _run(jm, "embed", {"encoder": "tiny"})
    assert job.result["rows"] == n and job.result["encoder"] == "tiny"
    oid, band, layers = load_embeddings(store, "tiny")
    assert len(oid) == n and layers.shape == (n, 3, 16) and np.isfinite(layers).all()
    again = _run(jm, "embed", {"encoder": "tiny"})
    assert again.result["rows"] == 0  # nothing left to embed


def test_embed_catalog_job_on_a_local_dask_cluster_matches_the_embed_job(env):
    """The app's Dask route for its own store: exported by the app process, embedded by 2 Dask workers
    in partitions (the job's progress counts them), imported back; the same vectors as `embed`."""
    from lcdash.store.embeddings import get_encoder, load_embeddings, register_encoder

    pytest.importorskip("distributed")
    store, jm = env
    register_encoder(store, "tiny-dask", get_encoder(store, "tiny")["path"], source="test")
    job = _run(jm, "embed_catalog", {"encoder": "tiny-dask", "workers": 2})
    n = len(store.objects())
    assert job.result["rows"] == n and not job.result["failed"]
    assert job.result["workers"] == 2 and job.result["partitions"] >= 2
    assert job.step == job.total == job.result["partitions"]  # counted in partitions
    ref_oid, ref_band, ref = load_embeddings(store, "tiny")
    oid, band, got = load_embeddings(store, "tiny-dask")
    ref_at = {(o, b): i for i, (o, b) in enumerate(zip(ref_oid, ref_band, strict=True))}
    assert sorted(ref_at) == sorted(zip(oid, band, strict=True))
    order = [ref_at[(o, b)] for o, b in zip(oid, band, strict=True)]
    assert float(np.abs(got - ref[order]).max()) <= 1e-5
    with pytest.raises(Exception, match="workers must be at least 1"):
        jm.submit("embed_catalog", {"encoder": "tiny-dask", "workers": 0})


def test_probe_writes_a_run_predictions_and_layer_weights(env):
    from lcdash.store.results import list_runs, load_predictions, load_run

    store, jm = env
    params = {"encoder": "tiny", "labels": "catalogue", "classes": CLASSES, "spc": [5], "folds": 2,
              "test_per_class": 5, "max_epochs": 3, "seed": 0}  # fmt: skip
    job = _run(jm, "probe", params)
    run_id = job.result["run_id"]
    info, results = load_run(store, run_id)
    assert info["kind"] == "probe" and info["job_id"] == job.job_id
    assert len(results) == 2 and set(results["model"]) == {"probe"}
    assert results["macro_f1"].between(0, 1).all()
    assert len(info["layer_weights"]) == 3
    assert abs(sum(info["layer_weights"]) - 1) < 1e-5
    preds = load_predictions(store, run_id)
    assert len(preds) == len(store.objects()) and set(preds["label"]) <= set(CLASSES)
    assert run_id in set(list_runs(store, kind="probe")["run_id"])


def test_evaluate_compares_models_and_writes_a_report(env):
    from lcdash.store.results import load_run

    store, jm = env
    params = {"models": ["probe", "rf"], "encoder": "tiny", "labels": "catalogue", "classes": CLASSES,
              "spc": [5], "folds": 2, "test_per_class": 5, "max_epochs": 2, "rf_trees": 20}  # fmt: skip
    job = _run(jm, "evaluate", params)
    info, results = load_run(store, job.result["run_id"])
    assert info["kind"] == "compare"
    assert sorted(set(results["model"])) == ["probe", "rf"] and len(results) == 4
    assert (jm.folder(job.job_id) / "report.md").exists()
    assert set(job.result["macro_f1"]) == {"probe spc=5", "rf spc=5"}


@pytest.mark.slow
def test_pretrain_then_finetune_register_new_encoders(env):
    from lcdash.store.embeddings import get_encoder

    store, jm = env
    train = {"epochs": 1, "batch_size": 32, "patience": 1}
    model = {"arch": "astromer2", "n_layers": 1, "d_model": 16, "n_heads": 2, "d_ff": 16}
    job = _run(jm, "pretrain", {"name": "tiny-pre", "max_objects": 40, "train": train, "model": model})
    enc = get_encoder(store, "tiny-pre")
    assert enc["n_layers"] == 1 and "pretrained" in enc["source"]
    assert job.result["encoder"] == "tiny-pre"
    ft = _run(jm, "finetune", {"name": "tiny-ft", "base": "tiny-pre", "max_objects": 40, "train": train})
    assert "fine-tuned from tiny-pre" in get_encoder(store, "tiny-ft")["source"]
    assert ft.result["path"] != enc["path"]


def test_bad_requests_fail_at_submit_without_a_job(env):
    store, jm = env
    before = len(jm.list())
    with pytest.raises(LcdashError, match="no encoder named"):
        jm.submit("embed", {"encoder": "nope"})
    with pytest.raises(LcdashError, match="already exists"):
        jm.submit("pretrain", {"name": "tiny"})
    with pytest.raises(LcdashError, match="no labelled objects"):
        jm.submit("probe", {"encoder": "tiny", "labels": "catalogue", "survey": "no-such-survey"})
    assert len(jm.list()) == before


@pytest.mark.slow
def test_import_official_weights(env, shared):
    from lcdash.store.embeddings import get_encoder

    store, jm = env
    archive = shared / "weights" / "astromer" / "macho_a0.zip"
    if not archive.exists():
        pytest.skip(f"{archive} is absent")
    _run(jm, "import_weights", {"name": "macho", "path": str(archive)})
    enc = get_encoder(store, "macho")
    assert enc["arch"] == "astromer1" and enc["n_layers"] == 2 and "official" in enc["source"]


def test_label_sources_and_counts_include_label_sets(env):
    from lcdash.store import labels

    store, _ = env
    objs = store.objects(label=["RRab", "EA"], columns=["oid", "label"]).head(6)
    labels.create_set(store, "mine")
    for lab in ("RRab", "EA"):
        labels.set_labels(store, "mine", objs.loc[objs["label"] == lab, "oid"], f"my-{lab}")
    assert labels.label_sources(store) == ["catalogue", "mine"]
    oids, labs = labels.load_labels(store, "mine")
    assert sorted(oids) == sorted(objs["oid"]) and set(labs) == {"my-RRab", "my-EA"}
    counts = labels.source_counts(store, "catalogue")
    assert sum(counts.values()) == len(store.objects(labelled=True)) and list(counts.values()) == sorted(
        counts.values(), reverse=True
    )


@pytest.mark.slow
def test_project_stores_a_umap_with_probe_weights(env):
    from lcdash.store.projections import find_projection, load_projection
    from lcdash.store.results import list_runs

    store, jm = env
    runs = list_runs(store, kind="probe")["run_id"]  # from the probe test above, when it ran
    run_id = runs.iloc[0] if len(runs) else None
    params = {"n_neighbors": 10, "min_dist": 0.1, "metric": "cosine", "seed": 0}
    job = _run(jm, "project", {"encoder": "tiny", "embedding": "weighted", "run_id": run_id, **params}, 600)
    proj_id = job.result["proj_id"]
    stored = {**params, "run_id": run_id} if run_id else params
    assert find_projection(store, "tiny", "weighted", stored) == proj_id
    points = load_projection(store, proj_id)
    assert len(points) == len(store.objects()) and np.isfinite(points[["x", "y"]].to_numpy()).all()
