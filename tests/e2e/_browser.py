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
