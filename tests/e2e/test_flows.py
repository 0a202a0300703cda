"""The app in a real browser: upload a file, lasso on the UMAP, label the selection, train a probe in
the background, compare models. The tests build on each other (one server, one tab, in order).
Screenshots go to test-artifacts/."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from _browser import goto, settle_charts, shot, wait_idle
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = pytest.mark.e2e

JOB_TIMEOUT_MS = 420_000  # a worker process on a busy 2-core machine


def _text(page) -> str:
    return page.locator("[data-testid='stMain']").inner_text()


def _set_number(page, label: str, value) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def tall_shot(page, name: str, height: int = 3000) -> None:
    """Streamlit scrolls inside its main container, so a "full page" screenshot shows one viewport:
    grow the viewport for the shot (results pages are long), then restore it."""
    before = page.viewport_size
    page.set_viewport_size({"width": before["width"], "height": height})
    settle_charts(page)
    shot(page, name)
    page.set_viewport_size(before)


def lasso(page, path) -> None:
    """Drag the mouse along `path` (fractions of the plot area) on the first plotly chart."""
    drag = page.locator(".js-plotly-plot .nsewdrag").first
    drag.wait_for()
    wait_idle(page)
    drag.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    box = drag.bounding_box()
    # keep clear of the plot's corners, where plotly's corner-zoom handles sit
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x0 + w / 2, y0 + h / 2, steps=5)  # hover first: plotly arms its drag handlers
    page.wait_for_timeout(300)
    page.mouse.move(x0 + w * path[0][0], y0 + h * path[0][1], steps=5)
    page.mouse.down()
    for fx, fy in path[1:]:
        page.mouse.move(x0 + w * fx, y0 + h * fy, steps=12)
    page.mouse.up()


def test_lasso_on_the_umap_and_label_the_selection(page):
    selected = re.compile(r"Selection \([1-9][0-9,]* objects\)")
    # A lasso around the left part of the map (dragmode is lasso by default on this figure). The
    # chart may still be settling after the page load, so try again if nothing got selected.
    for attempt in range(3):
        # a fresh load each time: the chart keeps a drawn lasso, so a lost event would not resend
        goto(page, page.base_url + "/explore")
        lasso(page, [(0.05, 0.05), (0.4, 0.05), (0.4, 0.95), (0.05, 0.95), (0.05, 0.06)])
        shot(page, f"e2e-2-lasso-drawn-{attempt}")
        assert page.locator("[data-testid='stException']").count() == 0, _text(page)[-2000:]
        try:
            page.get_by_text(selected).wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            continue
    page.get_by_text(selected).wait_for(timeout=5_000)
    wait_idle(page)
    n = int(re.search(r"Selection \(([0-9,]+) objects\)", _text(page)).group(1).replace(",", ""))
    assert 0 < n < 300
    shot(page, "e2e-2-lasso")

    page.get_by_text("Label this selection").click()
    wait_idle(page)
    assert "sel=" in page.url
    name = page.get_by_role("textbox", name="Name", exact=True)
    name.fill("e2e set")
    page.get_by_role("button", name="Create").click()
    wait_idle(page)
    page.get_by_text(f"{n:,} objects selected on Explore").wait_for()
    typed = page.get_by_role("textbox", name="or new class").first
    typed.fill("interesting")
    typed.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name=f"Label {n:,} objects").click()
    wait_idle(page)
    page.get_by_text(f"{n:,} labelled objects").wait_for()
    shot(page, "e2e-3-label")
    # A refresh loses nothing: the set, its labels and the selection come back from the store.
    page.reload()
    wait_idle(page)
    page.get_by_text(f"{n:,} labelled objects").wait_for()
    page.get_by_text(f"{n:,} objects selected on Explore").wait_for()


def test_upload_a_file_and_see_it_in_the_table(page, tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for k in range(3):
        t = np.sort(rng.uniform(0, 300, 30))
        rows.append(pd.DataFrame({"object_id": f"E2E-{k}", "mjd": t, "mag": 15 + 0.3 * np.sin(t),
                                  "mag_err": 0.02, "band": "V"}))
    csv = tmp_path / "e2e_upload.csv"
    pd.concat(rows).to_csv(csv, index=False)

    goto(page, page.base_url + "/data")
    assert "**Device**" not in _text(page)  # sanity: markdown is rendered, not shown raw
    assert page.locator("[data-testid='stSidebar']").get_by_text("Device").count() > 0
    page.get_by_role("tab", name="Add light curves").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(csv))
    wait_idle(page)
    page.get_by_text("Validation report").wait_for()
    survey = page.get_by_role("textbox", name="Survey name")
    survey.fill("e2e upload")
    survey.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name=re.compile(r"Ingest 3 objects")).click()
    wait_idle(page)
    page.get_by_text("Ingested:").wait_for()
    shot(page, "e2e-1-upload")
    # The new objects are in the store: filter the Browse table by the new survey.
    goto(page, page.base_url + "/data")
    page.get_by_text("SQL (read-only sandbox)").click()
    sql = page.get_by_role("textbox", name="Query")
    sql.fill("SELECT object_id, n_obs FROM objects WHERE survey = 'e2e upload' ORDER BY object_id")
    page.get_by_role("button", name="Run query").click()
    wait_idle(page)
    page.get_by_text("3 rows").wait_for()
    shot(page, "e2e-1-upload-sql")


def test_probe_job_runs_to_the_end(page):
    goto(page, page.base_url + "/probe")
    _set_number(page, "Folds", 1)
    _set_number(page, "Test objects per class", 5)
    _set_number(page, "Max epochs (0 = the head's default)", 3)
    page.get_by_role("button", name="Train probe").click()
    wait_idle(page)
    page.get_by_text("Predictions of this run are stored").wait_for(timeout=JOB_TIMEOUT_MS)
    wait_idle(page)
    assert "failed" not in _text(page)
    tall_shot(page, "e2e-4-probe")


def test_compare_shows_the_results_table(page):
    goto(page, page.base_url + "/compare")
    # Samples per class: drop the default 100 (too many for this small store); Backspace removes
    # the last chip of a multiselect.
    spc = page.locator("[data-testid='stMultiSelect']", has_text="Samples per class").locator("input")
    spc.click()
    spc.press("Backspace")
    spc.press("Escape")
    wait_idle(page)
    chips = page.locator("[data-testid='stMultiSelect']", has_text="Samples per class")
    assert "100" not in chips.inner_text()
    _set_number(page, "Folds", 1)
    _set_number(page, "Test objects per class", 5)
    _set_number(page, "Max epochs (0 = each model's default)", 2)
    page.get_by_role("button", name="Run comparison").click()
    wait_idle(page)
    page.get_by_role("button", name="Download report.md").wait_for(timeout=JOB_TIMEOUT_MS)
    wait_idle(page)
    results = page.locator("[data-testid='stDataFrame']")
    assert results.count() >= 1
    tall_shot(page, "e2e-5-compare")
