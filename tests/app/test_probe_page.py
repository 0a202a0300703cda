"""Probe page (AppTest): renders on a small store, starts a tiny probe job, shows its run."""

from __future__ import annotations

import time

from _apptest import frame, open_page, run
from streamlit.testing.v1 import AppTest


def _until(at: AppTest, done, timeout_s: float = 240.0) -> AppTest:
    """Rerun the page (each run polls the job manager) until `done(at)`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run(at)
        if done(at):
            return at
        time.sleep(1.0)
    raise AssertionError(f"not done in time; errors: {[e.value for e in at.error]}")


def test_probe_page_trains_and_shows_a_run(app_db):
    at = run(open_page("pages/probe.py"))
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="probe_encoder").value == "tiny-test"
    assert any("No probe run yet" in c.value for c in at.caption)
    at.multiselect(key="probe_classes").set_value(["RRab", "EA", "LPV"])
    at.multiselect(key="probe_spc").set_value([5])
    at.number_input(key="probe_folds").set_value(2)
    at.number_input(key="probe_test").set_value(5)
    at.number_input(key="probe_epochs").set_value(3)
    run(at)
    at.button(key="probe_go").click()
    run(at)
    assert not at.error, [e.value for e in at.error]
    job_id = at.query_params["probe_job"]
    job_id = job_id[0] if isinstance(job_id, list) else job_id
    assert job_id.startswith("probe-")
    _until(at, lambda a: any(getattr(e, "key", None) == "probe_run_pick" for e in a.selectbox))
    assert not at.error, [e.value for e in at.error]
    summary = frame(at, "macro F1 [%]")
    assert list(summary["spc"]) == [5] and summary["folds"].iloc[0] == 2
    assert any("prediction: " in c.value for c in at.caption)
    assert any("layer weights" in m.value for m in at.markdown)
