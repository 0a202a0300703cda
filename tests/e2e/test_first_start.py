"""The first start of a fresh checkout: no store, no numba cache. `make install` compiles UMAP's
numba kernels once (timed here as the install step); then `make app` on a store that does not exist
builds the demo store, embeds it with the shipped encoder and computes the UMAP in background jobs,
and Explore draws the coloured UMAP by itself. The timings go to test-artifacts/first-start.json
(bench/app_bench.py --first-start prints the same numbers); no timed asserts."""

from __future__ import annotations

import pytest
from _browser import ARTIFACTS, first_start, warm_numba

pytestmark = pytest.mark.e2e


def test_fresh_start_draws_a_coloured_umap(tmp_path, browser):
    """`browser` is the session's (tests/e2e/conftest.py): Playwright's sync API cannot nest."""
    cache = tmp_path / "numba_cache"  # empty: what a fresh clone has before `make install`
    install_s = warm_numba(cache)
    out = first_start(tmp_path, browser, cache, timeout_s=900)
    print(f"\nfirst start: install step {install_s:.0f} s; from the server start: health "
          f"{out['health_s']:.1f} s, title {out['title_s']:.1f} s, PCA preview {out.get('pca_s', '-')}, "
          f"coloured UMAP {out.get('umap_s', '-')} s; jobs {out['jobs']}")
    assert "umap_s" in out, out
    fig = out["figure"]
    classes = [t for t in fig["traces"] if t["points"]]
    assert fig["title"].startswith("UMAP of") and len(classes) >= 5, fig  # one colour per class
    assert sum(t["points"] for t in classes) == 2000
    assert len({str(t["colour"]) for t in classes}) == len(classes)
    assert [j["state"] for j in out["jobs"]] == ["done", "done"] and (ARTIFACTS / "first-start.png").exists()
