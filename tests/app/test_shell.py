"""The app shell: app.py routes to every page and draws the sidebar (store, device, jobs); the
first-start workspace (demo store, job queueing, selections, PCA preview)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lcdash import workspace
from lcdash.store import Store

REPO = Path(__file__).parents[2]  # not resolved: the checkout as the test sees it
APP = str(REPO / "app.py")
PAGES = ["pages/data.py", "pages/explore.py", "pages/label.py", "pages/models.py", "pages/probe.py",
         "pages/compare.py"]


def test_app_opens_on_explore_with_sidebar(app_db):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Explore"
    side = " ".join(m.value for m in at.sidebar.markdown)
    assert "app.duckdb" in side and "**Device**" in side and "**Jobs**" in side
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "300 objects" in captions and "synthetic" in captions


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app_db, page):
    at = AppTest.from_file(APP, default_timeout=60).run()  # the router runs once before a page switch
    at.switch_page(page)
    at.run()
    assert not at.exception, (page, [e.value for e in at.exception])
    assert at.title, page


def test_unopenable_store_is_an_error_not_a_traceback(tmp_path, monkeypatch):
    bad = tmp_path / "not-a-store.duckdb"
    bad.write_bytes(b"this is not a duckdb file" * 100)
    monkeypatch.setenv("LCDASH_DB", str(bad))
    monkeypatch.setenv("LCDASH_FIRST_JOBS", "0")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any(str(bad) in e.value for e in at.error)


# --- workspace --------------------------------------------------------------------------------------


def test_store_path_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LCDASH_DB", raising=False)
    assert workspace.store_path() == workspace.DEFAULT_DB
    monkeypatch.setenv("LCDASH_DB", str(tmp_path / "x.duckdb"))
    assert workspace.store_path() == tmp_path / "x.duckdb"


def test_numba_cache_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    folder = workspace.configure_numba_cache(tmp_path / "nc")
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "nc") and folder.is_dir()
    # an explicit setting wins
    assert workspace.configure_numba_cache(tmp_path / "other") == tmp_path / "nc"


class FakeJobs:
    """Records submissions; jobs stay in the state the test gives them."""

    def __init__(self):
        self.jobs = []

    def submit(self, kind, params):
        job_id = f"{kind}-{len(self.jobs)}"
        self.jobs.append(SimpleNamespace(job_id=job_id, kind=kind, params=params, state="queued",
                                         created_at=str(len(self.jobs))))
        return job_id

    def list(self, states=None, kinds=None, limit=None):
        return [j for j in self.jobs if (not states or j.state in states) and (not kinds or j.kind in kinds)]


def test_bootstrap_creates_the_demo_store_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LCDASH_FIRST_JOBS", "1")
    path = tmp_path / "fresh" / "lcdash.duckdb"
    store, jobs, report = workspace.bootstrap(path, jobs_factory=lambda s: FakeJobs(), n_objects=40)
    try:
        assert report.created and path.exists()
        info = store.info()
        assert info["objects"] == 40 and info["synthetic"] == 40
        # without the shipped encoder nothing is queued; with it, the embed job would be
        assert report.encoder in (None, workspace.DEFAULT_ENCODER_NAME)
        assert (report.jobs == []) == (report.encoder is None)
    finally:
        store.close()
    store, _, report = workspace.bootstrap(path, jobs_factory=lambda s: FakeJobs(), n_objects=40)
    with store:
        assert not report.created and store.info()["objects"] == 40


def test_advance_queues_embed_then_project_once(app_db, monkeypatch):
    monkeypatch.setenv("LCDASH_FIRST_JOBS", "1")
    jobs = FakeJobs()
    with Store(app_db) as store:
        # the app store has embeddings and a projection: nothing to do
        assert workspace.advance(store, jobs, "tiny-test") == []
        with store.transaction() as cur:
            cur.execute("DELETE FROM projection_points")
            cur.execute("DELETE FROM projections")
        first = workspace.advance(store, jobs, "tiny-test")
        assert [j.kind for j in jobs.jobs] == ["project"] and first == [jobs.jobs[0].job_id]
        assert jobs.jobs[0].params == {"encoder": "tiny-test", **workspace.FIRST_PROJECTION}
        assert workspace.advance(store, jobs, "tiny-test") == []  # already queued
        jobs.jobs[0].state = "failed"
        assert workspace.advance(store, jobs, "tiny-test") == []  # never loops on a failure
        with store.transaction() as cur:
            cur.execute("DELETE FROM embeddings")
        assert [jobs.jobs[i].kind for i in range(len(jobs.jobs))] == ["project"]
        workspace.advance(store, jobs, "tiny-test")
        assert jobs.jobs[-1].kind == "embed" and jobs.jobs[-1].params == {"encoder": "tiny-test"}
        assert workspace.advance(store, jobs, "unknown-encoder") == []
        monkeypatch.setenv("LCDASH_FIRST_JOBS", "0")
        jobs.jobs.clear()
        assert workspace.advance(store, jobs, "tiny-test") == []


def test_selection_round_trip(app_db):
    with Store(app_db) as store:
        token = workspace.save_selection(store, [3, 1, 2])
        assert workspace.load_selection(store, token) == [3, 1, 2]
        assert workspace.save_selection(store, [5], token=token) == token
        assert workspace.load_selection(store, token) == [5]
        assert workspace.load_selection(store, "nope") == [] and workspace.load_selection(store, None) == []


def test_pca_preview_orders_components():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)) * np.array([10.0, 3.0, 1.0, 0.1, 0.1])
    xy = workspace.pca_preview(X)
    assert xy.shape == (200, 2) and xy.dtype == np.float32
    assert xy[:, 0].var() > xy[:, 1].var() > 1.0
    with pytest.raises(Exception, match="at least two"):
        workspace.pca_preview(X[:1])


@pytest.mark.slow
def test_first_start_jobs_reach_a_stored_umap(app_db, monkeypatch):
    """The real pipeline behind the first start: advance() queues the embed job, then the UMAP job,
    with real worker processes (UMAP compiles numba: slow), until Explore's projection is stored."""
    from lcdash.jobs import JobManager
    from lcdash.store.projections import find_projection
    from lcdash.tasks import KINDS

    monkeypatch.setenv("LCDASH_FIRST_JOBS", "1")
    with Store(app_db) as store:
        with store.transaction() as cur:
            for table in ("projection_points", "projections", "embeddings"):
                cur.execute(f"DELETE FROM {table}")
        jm = JobManager(store, kinds=KINDS)
        try:
            for kind in ("embed", "project"):
                (job_id,) = workspace.advance(store, jm, "tiny-test")
                assert job_id.startswith(kind)
                jm.wait(job_id, timeout_s=900).raise_for_state()
            params = {k: v for k, v in workspace.FIRST_PROJECTION.items() if k != "embedding"}
            assert find_projection(store, "tiny-test", "weighted", params) is not None
            assert workspace.advance(store, jm, "tiny-test") == []
        finally:
            jm.shutdown()
