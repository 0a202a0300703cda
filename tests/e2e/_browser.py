"""Helpers shared by the browser tests and bench/app_bench.py: start/stop a real lcdash server,
launch Debian's Chromium headless, wait for Streamlit to settle."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("LCDASH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, log: Path, env_extra: dict | None = None, timeout_s: float = 120):
    """`streamlit run app.py` on a free port with LCDASH_DB=db; returns (process, base url)."""
    port = _free_port()
    env = {**os.environ, "LCDASH_DB": str(db), "LCDASH_FIRST_JOBS": "0", **(env_extra or {})}
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return proc, url
        except OSError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"streamlit did not become healthy in {timeout_s} s: {log.read_text()[-2000:]}")


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)




@contextmanager
def launch():
    """A headless Chromium (Playwright driving /usr/bin/chromium with the flags this platform needs)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_idle(page, timeout_ms: float = 60_000) -> None:
    """Wait until the app has rendered and no script run is in progress."""
    page.wait_for_selector(IDLE, timeout=timeout_ms)


def goto(page, url: str, timeout_ms: float = 120_000) -> None:
    """Open `url` and wait until its page has drawn its title (every lcdash page has one) and the
    script run has ended (the first visit of a fresh server opens the store first)."""
    page.goto(url)
    page.locator("[data-testid='stMain'] h1").first.wait_for(timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# --- the first start: a fresh server on a store that does not exist yet --------------------------

#: Which scatter Explore shows now: "umap" (the UMAP, coloured: one trace per class), "pca" (the PCA
#: preview), or null.
MAP_STATE_JS = """() => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    const t = el.layout && el.layout.title;
    const text = (t && (typeof t === 'string' ? t : t.text) || '').replace(/<[^>]*>/g, '');
    if (text.startsWith('UMAP of') && el._fullData && el._fullData.length > 1) return 'umap';
    if (text.startsWith('PCA preview')) return 'pca';
  }
  return null;
}"""
UMAP_FIGURE_JS = """() => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    const t = el.layout && el.layout.title;
    const text = (t && (typeof t === 'string' ? t : t.text) || '').replace(/<[^>]*>/g, '');
    if (text.startsWith('UMAP of')) return {title: text, traces: el._fullData.map(
      d => ({name: d.name, points: d.x ? d.x.length : 0, colour: d.marker && d.marker.color}))};
  }
  return null;
}"""


def warm_numba(cache: Path) -> float:
    """What `make install` does once (lcdash.workspace.warm_numba_cache), into `cache`, in a fresh
    interpreter; returns its wall seconds."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "from lcdash.workspace import warm_numba_cache as w; w()"],
                   cwd=REPO, env={**os.environ, "NUMBA_CACHE_DIR": str(cache)}, check=True,
                   capture_output=True)
    return time.monotonic() - t0


def first_start(folder: Path, browser, numba_cache: Path, timeout_s: float = 600,
                name: str = "first-start") -> dict:
    """Start the app on a store path that does not exist (so it builds the demo store, registers the
    shipped encoder and queues the embedding and UMAP jobs), open `/` in a new tab, and time the
    milestones from the server start: health, Explore's title, the PCA preview, the coloured UMAP.
    Saves a screenshot and the UMAP figure's traces in test-artifacts/ (`name`-*.png / .json) and
    returns the timings, the jobs' own durations and the figure summary."""
    import json

    db = folder / "lcdash.duckdb"
    env = {"LCDASH_FIRST_JOBS": "1", "NUMBA_CACHE_DIR": str(numba_cache)}
    t0 = time.monotonic()
    proc, url = start_server(db, folder / "server.log", env_extra=env)
    out: dict = {"health_s": time.monotonic() - t0}
    try:
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        page.goto(url + "/")
        page.locator("[data-testid='stMain'] h1").first.wait_for(timeout=timeout_s * 1000)
        out["title_s"] = time.monotonic() - t0
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            state = page.evaluate(MAP_STATE_JS)
            if state == "pca" and "pca_s" not in out:
                out["pca_s"] = time.monotonic() - t0
            if state == "umap":
                out["umap_s"] = time.monotonic() - t0
                break
            page.wait_for_timeout(250)
        wait_idle(page, timeout_ms=60_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        out["figure"] = page.evaluate(UMAP_FIGURE_JS)
        ctx.close()
    finally:
        stop_server(proc)
    out["jobs"] = _job_durations(db)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(out, indent=1, default=str))
    return out


def _job_durations(db: Path) -> list[dict]:
    """kind, queued -> started -> finished seconds of each job in the store (read after the server
    stopped: DuckDB takes one process at a time)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT kind, state, created_at, started_at, finished_at FROM jobs "
                           "ORDER BY created_at").fetchall()
    finally:
        con.close()
    out = []
    for kind, state, created, started, finished in rows:
        out.append({"kind": kind, "state": state, "created": str(created),
                    "wait_s": (started - created).total_seconds() if started and created else None,
                    "run_s": (finished - started).total_seconds() if finished and started else None})
    return out


CHARTS_DRAWN_JS = """() => {
  const charts = document.querySelectorAll("[data-testid='stPlotlyChart']");
  return Array.from(charts).every(c => { const el = c.querySelector('.js-plotly-plot');
                                          return el && el._fullLayout; });
}"""


def settle_charts(page, timeout_ms: float = 30_000) -> None:
    """Wait (without failing) until every plotly chart on the page has drawn: for screenshots."""
    try:
        page.wait_for_function(CHARTS_DRAWN_JS, timeout=timeout_ms, polling=250)
    except Exception:  # noqa: BLE001 - a screenshot of a half-drawn page still tells something
        pass
    page.wait_for_timeout(500)
