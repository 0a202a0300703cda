"""Shared fixtures. ../shared holds real data; tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LCDASH_SHARED", REPO.parent / "shared"))


def pytest_collection_modifyitems(config, items):
    if config.getoption("-m"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with pytest -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(scope="session")
def shared_data(shared) -> Path:
    path = shared / "data"
    if not (path / "catalina_train" / "observations.parquet").exists():
        pytest.skip("../shared/data is absent")
    return path


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine two spinning OpenMP threads make tiny models
    10-25x slower in wall time; results do not depend on it. Opt in per module with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> Path:
    """Path to a small synthetic store (300 objects, create_demo_store); closed, so open it yourself.

    Session-scoped and shared: open it read-only (Store(demo_db, read_only=True)) or copy it
    (shutil.copy) to a tmp dir before writing.
    """
    from lcdash.store.demo import create_demo_store

    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    create_demo_store(path, n_objects=300, seed=0).close()
    return path


def build_app_store(path: Path, demo_db: Path, encoder_dir: Path, encoder: str = "tiny-test") -> Path:
    """A copy of the demo store with a tiny registered encoder, class-structured random embeddings and
    a stored 2-D projection (no model run, no UMAP): what the app pages need, built in seconds."""
    import shutil

    import numpy as np

    from lcdash.models.astromer import Astromer, AstromerConfig
    from lcdash.store import Store
    from lcdash.store.embeddings import register_encoder, save_embeddings
    from lcdash.store.projections import save_projection
    from lcdash.weights import save_encoder

    shutil.copy(demo_db, path)
    if not (encoder_dir / "model.safetensors").exists():
        cfg = AstromerConfig(n_layers=2, n_heads=2, d_model=16, d_ff=16)
        save_encoder(Astromer(cfg), cfg, encoder_dir)
    rng = np.random.default_rng(0)
    with Store(path) as store:
        register_encoder(store, encoder, encoder_dir, source="test")
        objs = store.objects(columns=["oid", "label", "bands"])
        codes = objs["label"].astype("category").cat.codes.to_numpy()
        centres = rng.normal(0, 3, (codes.max() + 1, 16))
        layers = centres[codes][:, None, :] + rng.normal(0, 1, (len(objs), 3, 16))
        bands = [b[0] for b in objs["bands"]]
        save_embeddings(store, encoder, objs["oid"], bands, np.ones(len(objs)), layers.astype("float32"))
        xy = centres[codes][:, :2] * 2 + rng.normal(0, 0.5, (len(objs), 2))
        save_projection(store, encoder, "weighted", params={"n_neighbors": 15, "min_dist": 0.1,
                        "metric": "cosine", "seed": 0}, oids=objs["oid"], bands=bands, xy=xy)
    return path


@pytest.fixture(scope="session")
def app_template(demo_db, tmp_path_factory) -> Path:
    """The demo store + a tiny encoder, embeddings and a stored projection (see build_app_store)."""
    folder = tmp_path_factory.mktemp("app")
    return build_app_store(folder / "app.duckdb", demo_db, folder / "encoder")


@pytest.fixture
def app_db(app_template, tmp_path, monkeypatch) -> Path:
    """A private copy of app_template that the app under test opens (LCDASH_DB), with the first-start
    jobs switched off (LCDASH_FIRST_JOBS=0) so no worker process is spawned."""
    import shutil

    path = tmp_path / "app.duckdb"
    shutil.copy(app_template, path)
    monkeypatch.setenv("LCDASH_DB", str(path))
    monkeypatch.setenv("LCDASH_FIRST_JOBS", "0")
    return path
