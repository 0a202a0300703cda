"""Compare page (AppTest): the across-surveys block (Aguirre et al. 2019) runs a job and shows the
per-survey scores; a label the map does not cover is reported, not raised."""

from __future__ import annotations

import json
import time

from _apptest import frame, open_page, run


def _second_survey(db) -> None:
    from lcdash.io import prepare
    from lcdash.simulate import simulate_survey
    from lcdash.store import Store

    obs, objs = simulate_survey(90, seed=5, classes=["RRab", "EW", "LPV"], n_obs=(40, 80))
    obs, objs, _ = prepare(obs, objects=objs.assign(survey="second (synthetic)"))
    with Store(db) as store:
        store.ingest(obs, objs, survey="second (synthetic)", synthetic=True)


def test_compare_page_trains_across_surveys(app_db):
    _second_survey(app_db)
    at = run(open_page("pages/compare.py"))
    at.multiselect(key="compare_models").set_value(["rf"])
    at.multiselect(key="compare_spc").set_value([5])
    at.number_input(key="compare_folds").set_value(1)
    at.number_input(key="compare_test").set_value(5)
    at.checkbox(key="compare_cross_on").check()
    run(at)
    # the default map has no entry for the demo's QSO (nor DCEP's siblings): a clear message
    at.button(key="compare_go").click()
    run(at)
    assert any("no entry for 'QSO'" in e.value for e in at.error), [e.value for e in at.error]
    at.radio(key="compare_cross_map").set_value("custom")
    run(at)
    custom = {"RRab": "RRLyrae", "RRc": "RRLyrae", "EW": "EB", "EA": "EB", "LPV": "Mira",
              "DCEP": None, "HADS_dScuti": None, "Rot": None, "QSO": None}  # fmt: skip
    at.text_area(key="compare_cross_json").set_value(json.dumps(custom))
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
    per_survey = frame(at, "scored on")
    scored = set(per_survey["scored on"])
    assert len(scored) == 2 and "second (synthetic)" in scored
    assert (per_survey["n_test"] == 15).all() and set(per_survey["trained on"]) == {
        " + ".join(sorted(scored))
    }
