"""Compare page (AppTest): renders on a small store, runs a quick comparison job, reopens the run."""

from __future__ import annotations

import time

from _apptest import frame, open_page, run


def test_compare_page_runs_a_quick_comparison(app_db):
    at = run(open_page("pages/compare.py"))
    assert not at.error, [e.value for e in at.error]
    assert any("No comparison yet" in c.value for c in at.caption)
    at.multiselect(key="compare_models").set_value(["probe", "rf"])
    at.multiselect(key="compare_classes").set_value(["RRab", "EA", "LPV"])
    at.multiselect(key="compare_spc").set_value([5, 10])
    at.number_input(key="compare_folds").set_value(2)
    at.number_input(key="compare_test").set_value(5)
    at.number_input(key="compare_epochs").set_value(2)
    run(at)
    at.button(key="compare_go").click()
    run(at)
    assert not at.error, [e.value for e in at.error]
    deadline = time.monotonic() + 300
    while not any(getattr(e, "key", None) == "compare_run_pick" for e in at.selectbox):
        assert time.monotonic() < deadline, [e.value for e in at.error]
        time.sleep(1.0)
        run(at)
    assert not at.error, [e.value for e in at.error]
    summary = frame(at, "macro F1 [%]")
    assert sorted(summary["spc"].unique()) == [5, 10] and len(summary) == 4
    assert set(summary["model"]) == {"Astromer probe", "Feature RF"}
    # reopen the run from the URL on a fresh session
    run_id = at.selectbox(key="compare_run_pick").value
    again = run(open_page("pages/compare.py", compare_run=run_id))
    assert again.selectbox(key="compare_run_pick").value == run_id
    assert not again.error, [e.value for e in again.error]
