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
