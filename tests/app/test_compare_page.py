"""Compare page (AppTest): renders on a small store, runs a quick comparison job, reopens the run."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).parents[2] / "app.py")


def _frame(at: AppTest, column: str):
    """The first dataframe shown with this column (st.dataframe keys are not exposed to AppTest)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_compare_page_runs_a_quick_comparison(app_db):
    at = AppTest.from_file(APP, default_timeout=60).run()  # the router runs once before a page switch
    at.switch_page("pages/compare.py")
    _run(at)
    assert not at.error, [e.value for e in at.error]
    assert any("No comparison yet" in c.value for c in at.caption)
    at.multiselect(key="compare_models").set_value(["probe", "rf"])
    at.multiselect(key="compare_classes").set_value(["RRab", "EA", "LPV"])
    at.multiselect(key="compare_spc").set_value([5, 10])
    at.number_input(key="compare_folds").set_value(2)
    at.number_input(key="compare_test").set_value(5)
    at.number_input(key="compare_epochs").set_value(2)
    _run(at)
    at.button(key="compare_go").click()
    _run(at)
    assert not at.error, [e.value for e in at.error]
    deadline = time.monotonic() + 300
    while not any(getattr(e, "key", None) == "compare_run_pick" for e in at.selectbox):
        assert time.monotonic() < deadline, [e.value for e in at.error]
        time.sleep(1.0)
        _run(at)
    assert not at.error, [e.value for e in at.error]
    summary = _frame(at, "macro F1 [%]")
    assert sorted(summary["spc"].unique()) == [5, 10] and len(summary) == 4
    assert set(summary["model"]) == {"Astromer probe", "Feature RF"}
    # reopen the run from the URL on a fresh session
    run_id = at.selectbox(key="compare_run_pick").value
    again = AppTest.from_file(APP, default_timeout=60).run()  # the router runs once before a page switch
    again.switch_page("pages/compare.py")
    again.query_params["compare_run"] = run_id
    _run(again)
    assert again.selectbox(key="compare_run_pick").value == run_id
    assert not again.error, [e.value for e in again.error]
