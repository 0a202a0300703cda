"""How fast does Explore draw a stored projection, and how much memory does the app take?

For each size (default 20,000 and 50,000 points) this builds a store with that many synthetic objects
(catalogue rows only: the scatter needs no light curves), a tiny registered encoder and a stored
projection of class-clustered points; starts the real app (`streamlit run app.py`) on it; and, in
headless Chromium, times the switch to Explore -> scatter drawn (every point in plotly's data):
"first" is the first Explore visit after the server start (the projection is read from DuckDB and the
figure built), "in-app" later ones (clicking Explore in the sidebar of the open app; Streamlit's caches
hit), "new tab" a visit from a fresh browser context (its HTTP cache empty, so the JavaScript bundles
load again). It also reports the app process's resident memory (RSS, from /proc).

`--first-start` instead times what a fresh clone does: the install step's numba compilation into an
empty cache, then `make app` on a store that does not exist yet (demo store, embedding job with the
shipped encoder, UMAP job) until Explore draws the coloured UMAP; the same measurement as
tests/e2e/test_first_start.py, with the job durations.

Headless Chromium here renders WebGL in software (SwiftShader, --disable-gpu) on a shared CPU: a
browser with a GPU draws faster; the numbers are an upper bound for the page.

    .venv/bin/python bench/app_bench.py                 # 20,000 and 50,000 points
    .venv/bin/python bench/app_bench.py --sizes 5000 --repeats 2
    .venv/bin/python bench/app_bench.py --first-start
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "e2e")]

from _browser import first_start, goto, launch, start_server, stop_server, warm_numba  # noqa: E402

CLASSES = ["RRab", "RRc", "DCEP", "EA", "EW", "LPV", "HADS_dScuti", "Rot", "QSO"]
DRAWN_JS = """(n) => {
  const el = document.querySelector('.js-plotly-plot');
  if (!el || !el._fullData) return false;
  return el._fullData.reduce((s, t) => s + (t.x ? t.x.length : 0), 0) >= n;
}"""


def build_store(folder: Path, n: int, seed: int = 0) -> Path:
    """A store of `n` catalogue objects with a stored 2-D projection (clustered by class)."""
    from lcdash.models.astromer import Astromer, AstromerConfig
    from lcdash.store import Store
    from lcdash.store.embeddings import register_encoder
    from lcdash.store.projections import save_projection
    from lcdash.weights import save_encoder

    rng = np.random.default_rng(seed)
    path = folder / f"bench-{n}.duckdb"
    enc_dir = folder / "encoder"
    if not (enc_dir / "model.safetensors").exists():
        cfg = AstromerConfig(n_layers=2, n_heads=2, d_model=16, d_ff=16)
        save_encoder(Astromer(cfg), cfg, enc_dir)
    labels = rng.choice(CLASSES, n)
    objects = pd.DataFrame({
        "oid": np.arange(1, n + 1, dtype=np.int64),
        "object_id": [f"BENCH-{i:06d}" for i in range(n)],
        "survey": "bench (synthetic)",
        "label": labels,
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-90, 90, n),
        "period": np.exp(rng.uniform(np.log(0.05), np.log(500), n)),
        "n_obs": rng.integers(50, 500, n).astype(np.int32),
    })
    centres = {c: rng.normal(0, 10, 2) for c in CLASSES}
    xy = np.stack([centres[c] for c in labels]) + rng.normal(0, 1.5, (n, 2))
    with Store(path) as store:
        with store.transaction() as cur:
            cur.register("_objs", objects)
            cur.execute("INSERT INTO objects (oid, object_id, survey, label, ra, dec, period, n_obs, "
                        "bands, synthetic) SELECT oid, object_id, survey, label, ra, dec, period, n_obs, "
                        "['V'], true FROM _objs")
        register_encoder(store, "bench-encoder", enc_dir, source="bench")
        save_projection(store, "bench-encoder", "weighted",
                        {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "seed": 0},
                        objects["oid"], "V", xy.astype(np.float32))
    return path


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_explore_new_tab(browser, url: str, n: int, timeout_ms: float = 180_000) -> float:
    """Seconds from opening Explore in a fresh browser context (empty HTTP cache: the Streamlit and
    plotly bundles load again) to the scatter holding all n points."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = ctx.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(url + "/explore")
        page.wait_for_function(DRAWN_JS, arg=n, timeout=timeout_ms, polling=50)
        return time.perf_counter() - t0
    finally:
        ctx.close()


def time_explore_in_app(page, n: int, timeout_ms: float = 180_000) -> float:
    """Seconds from clicking Explore in the sidebar (coming from the Data page of an open app) to
    the scatter holding all n points: what a user waits for when switching pages."""
    goto(page, page.base_url + "/data", timeout_ms=timeout_ms)  # no chart there holds n points
    t0 = time.perf_counter()
    page.locator("[data-testid='stSidebarNav']").get_by_text("Explore", exact=True).click()
    page.wait_for_function(DRAWN_JS, arg=n, timeout=timeout_ms, polling=50)
    return time.perf_counter() - t0


def bench_first_start() -> None:
    """Install step (numba cache) and first start to a coloured UMAP, from an empty folder."""
    with tempfile.TemporaryDirectory(prefix="lcdash-first-") as tmp, launch() as browser:
        tmp = Path(tmp)
        install = warm_numba(tmp / "numba_cache")
        print(f"install step (UMAP kernels into an empty numba cache): {install:.1f} s", flush=True)
        out = first_start(tmp, browser, tmp / "numba_cache", name="bench-first-start")
    print(f"server healthy {out['health_s']:.1f} s; Explore title {out['title_s']:.1f} s; PCA preview "
          f"{out.get('pca_s', float('nan')):.1f} s; coloured UMAP {out.get('umap_s', float('nan')):.1f} s "
          "(from the server start)")
    for job in out["jobs"]:
        print(f"  job {job['kind']}: waited {job['wait_s']:.1f} s, ran {job['run_s']:.1f} s ({job['state']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000])
    ap.add_argument("--repeats", type=int, default=3, help="warm visits per size")
    ap.add_argument("--first-start", action="store_true",
                    help="time a fresh clone's first start to a coloured UMAP instead")
    args = ap.parse_args()
    if args.first_start:
        bench_first_start()
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="lcdash-bench-") as tmp, launch() as browser:
        tmp = Path(tmp)
        for n in args.sizes:
            t = time.perf_counter()
            db = build_store(tmp, n)
            print(f"[{n:,}] store built in {time.perf_counter() - t:.1f} s", flush=True)
            proc, url = start_server(db, tmp / f"server-{n}.log")
            try:
                idle = rss_mb(proc.pid)
                # Warm the process (imports, router, device name) on another page first.
                warm = browser.new_page()
                goto(warm, url + "/data", timeout_ms=180_000)
                warm.close()
                base = rss_mb(proc.pid)
                tab = browser.new_page(viewport={"width": 1500, "height": 1100})
                tab.base_url = url
                first = time_explore_in_app(tab, n)  # projection read from DuckDB, figure built
                in_app = [time_explore_in_app(tab, n) for _ in range(args.repeats)]
                tab.close()
                new_tab = time_explore_new_tab(browser, url, n)
                after = rss_mb(proc.pid)
            finally:
                stop_server(proc)
            row = {"points": n, "first_s": first, "in_app_s_median": float(np.median(in_app)),
                   "in_app_s_max": max(in_app), "new_tab_s": new_tab, "rss_idle_mb": idle,
                   "rss_before_mb": base, "rss_after_mb": after}
            rows.append(row)
            print(f"[{n:,}] Explore -> scatter drawn: first {first:.2f} s, in-app "
                  + ", ".join(f"{w:.2f}" for w in in_app)
                  + f" s, new tab (empty browser cache) {new_tab:.2f} s; app RSS {base:.0f} MiB before, "
                  f"{after:.0f} MiB after", flush=True)
    print()
    print(pd.DataFrame(rows).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
