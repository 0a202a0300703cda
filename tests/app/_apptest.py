"""Helpers shared by the AppTest page tests (imported as `_apptest`: pytest puts tests/app on sys.path,
as tests/e2e does for `_browser`): open a page through the real router, rerun, find a dataframe."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).parents[2] / "app.py")  # not resolved: the checkout as the test sees it


def open_page(page: str, **query) -> AppTest:
    """The real router (app.py) switched to `page` with these query parameters, not yet rerun, so page
    links and the sidebar work too."""
    at = AppTest.from_file(APP, default_timeout=60).run()  # the router runs once before a page switch
    at.switch_page(page)
    for k, v in query.items():
        at.query_params[k] = v
    return at


def run(at: AppTest) -> AppTest:
    """Rerun and fail on any uncaught exception (AppTest records it instead of raising)."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame(at: AppTest, column: str):
    """The first dataframe shown with this column (st.dataframe keys are not exposed to AppTest)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)
