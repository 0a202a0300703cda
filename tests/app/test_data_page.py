"""Data page (AppTest): filters, sandboxed SQL, the light-curve viewer (folding, aliases,
periodogram) and the upload -> mapping -> validation -> confirm -> ingest flow."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
from _apptest import open_page, run
from streamlit.testing.v1 import AppTest

from lcdash.periods import FINDER_VERSION, find_period
from lcdash.store import Store
from lcdash.store.periods import read_periods


def _objects_table(at: AppTest) -> pd.DataFrame:
    return at.dataframe(key="data_objects").value


def test_filters_narrow_the_objects_table(app_db):
    at = run(open_page("pages/data.py"))
    assert not at.error, [e.value for e in at.error]
    assert len(_objects_table(at)) == 300
    at.multiselect(key="data_label").set_value(["RRab"])
    at.number_input(key="data_n_lo").set_value(100)
    run(at)
    table = _objects_table(at)
    assert len(table) > 0 and set(table["label"]) == {"RRab"} and (table["n_obs"] >= 100).all()
    at.number_input(key="data_p_lo").set_value(0.6)
    run(at)
    assert (_objects_table(at)["period"] >= 0.6).all()


def test_sql_box_runs_and_refuses_writes(app_db):
    at = run(open_page("pages/data.py"))
    at.text_area(key="data_sql").set_value("SELECT label, count(*) AS n FROM objects GROUP BY label")
    at.button(key="data_sql_run").click()
    run(at)
    result = [d.value for d in at.dataframe if list(d.value.columns) == ["label", "n"]]
    assert result and result[0]["n"].sum() == 300
    at.text_area(key="data_sql").set_value("DELETE FROM objects")
    at.button(key="data_sql_run").click()
    run(at)
    assert any(e.value.startswith("SQL:") for e in at.error)
    with Store(app_db, read_only=False) as store:
        assert store.info()["objects"] == 300


def test_viewer_folds_and_takes_aliases_and_periodogram(app_db):
    at = run(open_page("pages/data.py"))
    first = _objects_table(at).iloc[0]
    key = f"data_period_{first['oid']}"
    period = at.number_input(key=key).value
    assert period == first["period"]  # folded at the catalogue period by default
    assert at.toggle(key=f"data_fold_{first['oid']}").value is True
    at.button(key=f"data_half_{first['oid']}").click()
    run(at)
    assert np.isclose(at.number_input(key=key).value, period / 2)
    at.button(key=f"data_double_{first['oid']}").click().run()
    at.button(key=f"data_double_{first['oid']}").click()
    run(at)
    assert np.isclose(at.number_input(key=key).value, period * 2)
    at.toggle(key=f"data_ls_{first['oid']}").set_value(True)
    run(at)
    best = [b for b in at.button if b.label.startswith("Best peak")]
    assert best, "the periodogram's best peak button is missing"
    best[0].click()
    run(at)
    assert np.isclose(at.number_input(key=key).value, float(best[0].label.split()[2]))


def _chart(at: AppTest, index: int = 0) -> dict:
    """The plotly figure of the page's index-th chart, as the page sent it."""
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def test_viewer_shows_the_period_finder_and_folds_at_a_candidate(app_db):
    """Issue 26: the finder's best period and reason, its ranked candidates one click each, the
    Fourier model drawn over the fold at the finder's period and only there."""
    with Store(app_db) as store:
        oid = int(store.objects(columns=["oid"])["oid"].min())
        lc = store.lightcurve(oid)
        band = lc.bands[0]
        sub = lc.select(band)
        expected = find_period(sub.time, sub.mag, sub.mag_err)
    assert expected.found and len(expected.candidates) >= 2
    at = run(open_page("pages/data.py"))
    assert int(_objects_table(at).iloc[0]["oid"]) == oid  # the viewer shows the first object
    caption = [c.value for c in at.caption if "found now" in c.value]
    assert caption and f"{expected.period:.6g} d" in caption[0] and expected.reason in caption[0]
    buttons = {b.key: b.label for b in at.button if b.key and b.key.startswith("data_cand")}
    keys = [f"data_cand{i}_{oid}_{band}" for i in range(len(expected.candidates))]
    assert [buttons.get(k) for k in keys] == [f"{c.period:.5g} d · {c.origin}" for c in expected.candidates]
    assert len(set(buttons.values())) == len(buttons)  # distinct labels

    key = f"data_period_{oid}"
    at.button(key=keys[1]).click()
    run(at)
    assert at.number_input(key=key).value == expected.candidates[1].period
    assert [t["name"] for t in _chart(at)["data"]] == [band]  # no model at another period
    at.button(key=keys[0]).click()
    run(at)
    assert at.number_input(key=key).value == expected.period
    traces = _chart(at)["data"]
    assert [t["name"] for t in traces][0] == band and traces[1]["name"].startswith("Fourier model")
    assert traces[1]["mode"] == "lines"


def test_find_periods_job_runs_to_done_and_stores_a_period_row_per_light_curve(app_db):
    at = run(open_page("pages/data.py"))
    assert any(c.value.startswith("0 of 300 light curves have a result") for c in at.caption)
    at.button(key="data_periods_go").click()
    run(at)
    assert not at.error, [e.value for e in at.error]
    seen_progress = bool(at.get("progress"))  # the job's bar, before its worker has even started
    deadline = time.monotonic() + 120
    while not any(s.value.startswith("Last periods job") for s in at.success):
        assert time.monotonic() < deadline, ([e.value for e in at.error], [s.value for s in at.success])
        time.sleep(0.5)
        run(at)
    assert seen_progress
    done = next(s.value for s in at.success if s.value.startswith("Last periods job"))
    assert "of 300 light curves got a period" in done
    assert any(c.value.startswith("300 of 300 light curves have a result") for c in at.caption)
    assert any(", stored: " in c.value for c in at.caption)  # the viewer reads the stored period now
    with Store(app_db) as store:
        stored = read_periods(store)
        curves = store.objects(columns=["oid", "bands"]).explode("bands")
    assert len(stored) == len(curves) == 300
    assert set(zip(stored["oid"], stored["band"], strict=True)) == set(
        zip(curves["oid"], curves["bands"], strict=True)
    )
    assert (stored["finder"] == FINDER_VERSION).all() and stored["period"].notna().any()
    # nothing left to do: the job is refused with a message, not started
    at.button(key="data_periods_go").click()
    run(at)
    assert any("already has a period" in e.value for e in at.error)


def _upload_csv() -> bytes:
    rng = np.random.default_rng(1)
    rows = []
    for k in range(3):
        t = np.sort(rng.uniform(0, 300, 40))
        rows.append(pd.DataFrame({"star": f"UP-{k}", "hjd": t, "Vmag": 15 + 0.3 * np.sin(t / 0.7),
                                  "e_Vmag": 0.02, "filter": "V"}))
    return pd.concat(rows).to_csv(index=False).encode()


def test_upload_mapping_validation_and_ingest(app_db):
    at = run(open_page("pages/data.py"))
    at.file_uploader(key="data_upload").set_value(("upload.csv", _upload_csv(), "text/csv"))
    run(at)
    sig = [s for s in at.selectbox if s.key and s.key.startswith("map_time_")][0].key.rsplit("_", 1)[1]
    guessed = {role: at.selectbox(key=f"map_{role}_{sig}").value
               for role in ("object_id", "time", "mag", "mag_err", "band")}
    assert guessed == {"object_id": "star", "time": "hjd", "mag": "Vmag", "mag_err": None, "band": "filter"}
    assert any("3 objects" in s.value for s in at.success)
    # The user corrects what the guess missed (VizieR's e_ prefix for errors).
    at.selectbox(key=f"map_mag_err_{sig}").set_value("e_Vmag")
    run(at)
    # A wrong correction is caught by the validation report, not ingested.
    at.selectbox(key=f"map_mag_{sig}").set_value("star")
    run(at)
    assert at.error and not [b for b in at.button if b.key == f"upload_confirm_{sig}"]
    at.selectbox(key=f"map_mag_{sig}").set_value("Vmag")
    at.text_input(key=f"upload_survey_{sig}").set_value("my survey")
    run(at)
    at.button(key=f"upload_confirm_{sig}").click()
    run(at)
    assert any(s.value.startswith("Ingested") for s in at.success)
    new = [d.value for d in at.dataframe if "bands" in d.value.columns and len(d.value) == 3]
    assert new and set(new[0]["object_id"]) == {"UP-0", "UP-1", "UP-2"}
    with Store(app_db, read_only=False) as store:
        assert len(store.objects(survey="my survey")) == 3


def test_unreadable_upload_is_an_error_message(app_db):
    at = run(open_page("pages/data.py"))
    at.file_uploader(key="data_upload").set_value(("broken.fits", b"not a fits file", "image/fits"))
    run(at)
    assert any("broken.fits" in e.value for e in at.error)
