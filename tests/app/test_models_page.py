"""Models page (AppTest): lists encoders, starts an embedding job and sees it finish; bad input is an
st.error, not a traceback."""

from __future__ import annotations

import time

from _apptest import frame, open_page, run


def test_models_page_lists_encoders_and_embeds(app_db):
    at = run(open_page("pages/models.py"))
    assert not at.error, [e.value for e in at.error]
    table = frame(at, "arch")
    assert "tiny-test" in list(table["name"])  # (+ the shipped default encoder when present)
    at.selectbox(key="models_embed_encoder").set_value("tiny-test")
    at.checkbox(key="models_embed_overwrite").check()
    at.button(key="models_embed_go").click()
    run(at)
    assert not at.error, [e.value for e in at.error]
    deadline = time.monotonic() + 240
    while not any("embeddings stored" in s.value for s in at.success):
        assert time.monotonic() < deadline, ([e.value for e in at.error], [s.value for s in at.success])
        time.sleep(1.0)
        run(at)
    assert any("300 embeddings stored" in s.value for s in at.success)


def test_models_page_embeds_on_a_dask_cluster(app_db):
    """Issue 13: the store as SOURCE of a Dask run, from the page, as a job that finishes and reports."""
    at = run(open_page("pages/models.py"))
    at.selectbox(key="models_embed_encoder").set_value("tiny-test")
    at.radio(key="models_embed_where").set_value("Dask cluster")
    run(at)
    at.number_input(key="models_embed_workers").set_value(1)
    at.button(key="models_embed_go").click()
    run(at)
    assert not at.error, [e.value for e in at.error]
    deadline = time.monotonic() + 300
    while not any("embeddings stored" in s.value for s in at.success):
        assert time.monotonic() < deadline, ([e.value for e in at.error], [s.value for s in at.success])
        time.sleep(1.0)
        run(at)
    assert any("300 embeddings stored" in s.value for s in at.success)
    shown = " ".join(str(x.value) for x in [*at.markdown, *at.caption, *at.success])
    assert "**embed_catalog** encoder tiny-test on Dask (1 local workers)" in shown


def test_models_page_reports_bad_requests(app_db):
    at = run(open_page("pages/models.py"))
    at.text_input(key="models_train_name").set_value("tiny-test")  # taken
    at.button(key="models_train_go").click()
    run(at)
    assert any("already exists" in e.value for e in at.error)
    at.radio(key="models_import_how").set_value("Path on this machine")
    run(at)
    at.text_input(key="models_import_path").set_value("/no/such/archive.zip")
    run(at)
    at.button(key="models_import_go").click()
    run(at)
    assert any("no such file or folder" in e.value for e in at.error), [e.value for e in at.error]


def test_encoder_card_shows_what_it_is_and_how_good_its_map_is(app_db):
    """Issue 10: variant, source, training record (when there is one) and kNN accuracy on the labels."""
    at = run(open_page("pages/models.py"))
    at.selectbox(key="models_card").set_value("tiny-test")
    run(at)
    assert not at.error, [e.value for e in at.error]
    text = " ".join(m.value for m in at.markdown)
    assert "**tiny-test**: astromer2 (as published)" in text
    assert "no training record" in text
    # the fixture's embeddings are class-structured: neighbours share a class far above chance
    knn = float(text.split("kNN(10) accuracy of its map on the store's labels: ")[1].split(" ")[0])
    assert knn > 0.8
