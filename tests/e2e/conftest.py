"""One real lcdash server (streamlit run app.py) per test session on a small store, and one headless
Chromium (Debian's /usr/bin/chromium; Playwright's own download does not work here).

The store is the 300-object demo store plus a tiny encoder with class-structured embeddings and a
stored projection (tests/conftest.py: build_app_store), so no test waits for a model or UMAP.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _browser import ARTIFACTS, CHROMIUM, launch, start_server, stop_server


@pytest.fixture(scope="session")
def e2e_db(app_template, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("e2e") / "e2e.duckdb"
    shutil.copy(app_template, path)
    return path


@pytest.fixture(scope="session")
def server(e2e_db):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("FAILED-*"):
        old.unlink()
    proc, url = start_server(e2e_db, ARTIFACTS / "e2e-server.log")
    yield url
    stop_server(proc)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    with launch() as b:
        yield b


@pytest.fixture(scope="module")
def page(browser, server):
    """One tab for a test module (the flows build on each other: upload, select, label, probe)."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    ctx.set_default_timeout(60_000)
    pg = ctx.new_page()
    pg.base_url = server
    yield pg
    ctx.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.failed_call = rep.failed


@pytest.fixture(autouse=True)
def screenshot_on_failure(request):
    """A full-page screenshot and the page's text in test-artifacts/ when a browser test fails."""
    yield
    if getattr(request.node, "failed_call", False) and "page" in request.fixturenames:
        pg = request.getfixturevalue("page")
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
        (ARTIFACTS / f"FAILED-{request.node.name}.txt").write_text(pg.locator("body").inner_text())
