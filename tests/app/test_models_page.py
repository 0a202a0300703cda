"""Models page (AppTest): lists encoders, starts an embedding job and sees it finish; bad input is an
st.error, not a traceback."""

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


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()  # the router runs once before a page switch
    at.switch_page("pages/models.py")
    return at


def test_models_page_lists_encoders_and_embeds(app_db):
    at = _run(_app())
    assert not at.error, [e.value for e in at.error]
    table = _frame(at, "arch")
    assert "tiny-test" in list(table["name"])  # (+ the shipped default encoder when present)
    at.selectbox(key="models_embed_encoder").set_value("tiny-test")
    at.checkbox(key="models_embed_overwrite").check()
    at.button(key="models_embed_go").click()
    _run(at)
    assert not at.error, [e.value for e in at.error]
    deadline = time.monotonic() + 240
    while not any("embeddings stored" in s.value for s in at.success):
        assert time.monotonic() < deadline, ([e.value for e in at.error], [s.value for s in at.success])
        time.sleep(1.0)
        _run(at)
    assert any("300 embeddings stored" in s.value for s in at.success)


def test_models_page_reports_bad_requests(app_db):
    at = _run(_app())
    at.text_input(key="models_train_name").set_value("tiny-test")  # taken
    at.button(key="models_train_go").click()
    _run(at)
    assert any("already exists" in e.value for e in at.error)
    at.radio(key="models_import_how").set_value("Path on this machine")
    _run(at)
    at.text_input(key="models_import_path").set_value("/no/such/archive.zip")
    _run(at)
    at.button(key="models_import_go").click()
    _run(at)
    assert any("no such file or folder" in e.value for e in at.error), [e.value for e in at.error]
