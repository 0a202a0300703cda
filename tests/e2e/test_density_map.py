"""Explore's density view in a real browser: a lasso on the map selects every point inside it (also the
ones not drawn as markers), and the selection is labelled on the Label page; the labels land in the
store.

Its own server on a copy of the test store, with LCDASH_DENSITY_MIN_POINTS=100 (so the 300-point map
gets the density view) and LCDASH_DENSITY_SAMPLE=40 (so most points are not in the sample: a lasso that
only saw the sample would select a handful)."""

from __future__ import annotations

import re
import shutil

import duckdb
import numpy as np
import pytest
from _browser import ARTIFACTS, goto, shot, start_server, stop_server, wait_idle
from _mapdrive import DENSITY_DRAWN_JS, lasso_data
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from lcdash import mapview

pytestmark = pytest.mark.e2e

SAMPLE = 40


def _text(page) -> str:
    return page.locator("[data-testid='stMain']").inner_text()


def test_lasso_on_the_density_map_selects_all_points_inside_and_labels_them(app_template, browser, tmp_path):
    db = tmp_path / "density.duckdb"
    shutil.copy(app_template, db)
    con = duckdb.connect(str(db), read_only=True)
    oid, x, y = (np.asarray(c) for c in zip(*con.execute(
        "SELECT oid, x, y FROM projection_points WHERE proj_id = 1").fetchall(), strict=True))
    con.close()
    # a lasso around the left ~40% of the map (a quadrilateral, in data coordinates)
    x0, x1, y0, y1 = mapview.extent_of(x, y)
    cut = float(np.quantile(x, 0.4))
    xs = [x0 + 0.01 * (x1 - x0), cut, cut, x0 + 0.01 * (x1 - x0)]
    ys = [y0 + 0.01 * (y1 - y0), y0 + 0.01 * (y1 - y0), y1 - 0.01 * (y1 - y0), y1 - 0.01 * (y1 - y0)]
    expected = set(oid[mapview.select_lasso(x, y, xs, ys)].tolist())
    assert 60 < len(expected) < 250

    env = {"LCDASH_DENSITY_MIN_POINTS": "100", "LCDASH_DENSITY_SAMPLE": str(SAMPLE)}
    ARTIFACTS.mkdir(exist_ok=True)
    proc, url = start_server(db, ARTIFACTS / "e2e-density-server.log", env_extra=env)
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    ctx.set_default_timeout(60_000)
    page = ctx.new_page()
    selected = re.compile(r"Selection \([1-9][0-9,]* objects\)")
    try:
        for _attempt in range(3):  # a fresh load each time: a lost selection event is not resent
            goto(page, url + "/explore")
            page.wait_for_function(DENSITY_DRAWN_JS, arg=SAMPLE, timeout=60_000, polling=100)
            wait_idle(page)
            lasso_data(page, xs, ys)
            assert page.locator("[data-testid='stException']").count() == 0, _text(page)[-2000:]
            try:
                page.get_by_text(selected).wait_for(timeout=20_000)
                break
            except PlaywrightTimeout:
                continue
        wait_idle(page)
        shot(page, "e2e-density-lasso")
        n = int(re.search(r"Selection \(([0-9,]+) objects\)", _text(page)).group(1).replace(",", ""))
        # Every point inside, not only the <= 40 sampled ones (the drawn path is the polygon up to
        # pixel rounding, so a few points near its edges may differ).
        assert n > SAMPLE and abs(n - len(expected)) <= 0.1 * len(expected), (n, len(expected))

        page.get_by_text("Label this selection").click()
        wait_idle(page)
        page.get_by_role("textbox", name="Name", exact=True).fill("density set")
        page.get_by_role("button", name="Create").click()
        wait_idle(page)
        page.get_by_text(f"{n:,} objects selected on Explore").wait_for()
        typed = page.get_by_role("textbox", name="or new class").first
        typed.fill("lassoed")
        typed.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name=f"Label {n:,} objects").click()
        wait_idle(page)
        page.get_by_text(f"{n:,} labelled objects").wait_for()
        shot(page, "e2e-density-label")
    finally:
        ctx.close()
        stop_server(proc)  # DuckDB: one process at a time; read the store after the server is gone

    con = duckdb.connect(str(db), read_only=True)
    labelled = con.execute("SELECT l.oid, l.label FROM labels l JOIN label_sets s USING (set_id) "
                           "WHERE s.name = 'density set'").fetchall()
    con.close()
    got = {o for o, _ in labelled}
    assert len(got) == n and {lab for _, lab in labelled} == {"lassoed"}
    assert len(got & expected) >= 0.9 * len(expected)
