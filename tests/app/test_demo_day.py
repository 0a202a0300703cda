"""Issue 11 (demo-day quality), what AppTest and plain calls can see: nothing demo-specific on a
user's store, defaults that fit the store, checks before a job starts, running jobs' settings in
the form, the Compare status and speed chart, readable text everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from _apptest import open_page, run

from lcdash import evaluation, plots, scores, workspace
from lcdash.store import Store
from lcdash.store import labels as label_store


class NoJobs:
    def __init__(self, store=None):
        self.submitted = []

    def submit(self, kind, params):
        self.submitted.append(kind)
        return kind

    def list(self, states=None, kinds=None, limit=None):
        return []


def test_a_users_store_gets_nothing_demo_specific(app_db, monkeypatch):
    """LCDASH_DB=an existing store: the shipped demo encoder is not registered, no job is queued."""
    monkeypatch.setenv("LCDASH_FIRST_JOBS", "1")
    jobs = NoJobs()
    store, _, report = workspace.bootstrap(app_db, jobs_factory=lambda s: jobs)
    with store:
        assert not workspace.is_demo_store(store, app_db)
        assert report.encoder is None and report.jobs == [] and jobs.submitted == []
        names = set(store.con.execute("SELECT name FROM encoders").df()["name"])
        assert workspace.DEFAULT_ENCODER_NAME not in names
        assert workspace.advance(store, jobs, report.encoder) == []


def test_the_demo_store_is_marked_and_starts_its_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("LCDASH_FIRST_JOBS", "1")
    path = tmp_path / "fresh.duckdb"
    jobs = NoJobs()
    store, _, report = workspace.bootstrap(path, jobs_factory=lambda s: jobs, n_objects=30)
    with store:
        assert report.created and workspace.is_demo_store(store, path)
        if report.encoder:  # the shipped encoder is in the checkout
            assert jobs.submitted == ["embed"]
    store, _, report = workspace.bootstrap(path, jobs_factory=lambda s: NoJobs(), n_objects=30)
    with store:
        assert not report.created and workspace.is_demo_store(store, path)


def test_fitting_protocol_on_the_demo_counts():
    counts = {c: 222 for c in ["RRab", "EA", "LPV"]}
    test, spc = evaluation.fitting_protocol(counts, [], 3, [5, 10, 20, 50, 100, 200, 500])
    assert test == 74 and spc == [5, 10, 20, 50, 100]  # 100 + 20 validation <= 222 - 74
    assert evaluation.fitting_protocol({"a": 30, "b": 500}, ["a", "b"], 3, [5, 10, 20]) == (10, [5, 10])


def test_label_problems_in_plain_text():
    one = evaluation.label_problems({"LPV-like": np.int64(12)}, [], "my set")
    assert one and "at least two classes" in one[0] and "LPV-like (12)" in one[0]
    assert "np." not in one[0] and "[" not in one[0]
    assert evaluation.label_problems({"a": 10, "b": 2}, [], "catalogue")[0].endswith("b (2).")
    assert evaluation.label_problems({"a": 10, "b": 20}, ["a", "b"], "catalogue") == []


def test_probe_page_defaults_fit_the_store_and_a_one_class_set_is_refused(app_db):
    at = run(open_page("pages/probe.py"))
    # the 300-object test store: smallest class / 3 folds bounds the test set
    with Store(app_db) as store:
        smallest = int(store.con.execute("SELECT min(n) FROM (SELECT count(*) n FROM objects "
                                         "GROUP BY label)").fetchone()[0])
    assert at.number_input(key="probe_test").value == min(100, smallest // 3)
    assert not at.warning, [w.value for w in at.warning]
    assert at.button(key="probe_go").disabled is False
    with Store(app_db) as store:
        label_store.create_set(store, "one class")
        oids = store.objects(columns=["oid"])["oid"].head(8).tolist()
        label_store.set_labels(store, "one class", oids, "LPV-like")
    at = run(open_page("pages/probe.py"))
    at.selectbox(key="probe_labels").set_value("one class")
    run(at)
    assert any("at least two classes" in w.value and "LPV-like (8)" in w.value for w in at.warning)
    assert at.button(key="probe_go").disabled is True


def test_compare_selects_every_model_by_default(app_db):
    at = run(open_page("pages/compare.py"))
    assert at.multiselect(key="compare_models").value == ["probe", "rnn", "cnn", "rf", "probe+features"]


def test_compare_status_names_the_fit_in_progress():
    from types import SimpleNamespace

    params = {"models": ["probe", "rnn", "cnn", "rf"], "spc": [20], "folds": 3}
    job = SimpleNamespace(params=params, state="running", total=12, step=1,
                          message="probe spc=20 fold=0: macro F1 0.412")
    text = evaluation.fit_in_progress(job)
    assert text.startswith("training Becker RNN (spc 20, fold 1 of 3) · fit 2 of 12")
    assert "last finished: probe" in text
    job.step, job.total, job.message = 0, 0, "starting"
    assert "preparing the inputs" in evaluation.fit_in_progress(job)
    job.step, job.total = 12, 12
    assert evaluation.fit_in_progress(job) == "writing the report"


def test_speed_chart_colours_ticks_and_like_with_like():
    results = pd.DataFrame([
        {"model": m, "spc": 20, "fold": 0, "train_seconds": t, "infer_lc_per_s": r,
         "extra": {"infer_includes": w}}
        for m, t, r, w in [("probe", 0.4, 90_000.0, "head only (embeddings precomputed)"),
                           ("rnn", 30.0, 3000.0, "dt/dm inputs + GRU"),
                           ("rf", 5.0, 170.0, "feature extraction + forest")]])
    fig = plots.speed_figure(results)
    colours = {}
    for trace in fig.data:
        colours.setdefault(trace.legendgroup, set()).add(trace.marker.color)
    assert all(len(c) == 1 for c in colours.values()) and len({next(iter(c)) for c in colours.values()}) == 3
    for axis in (fig.layout.yaxis, fig.layout.yaxis2):
        assert axis.type == "log" and axis.dtick == 1 and axis.tickformat == "~g"
    assert any("feature extraction" in str(t.x[0]) for t in fig.data if t.xaxis == "x2")
    assert "head only" in scores.speed_note(results)


def test_periodogram_axis_and_marks_stay_in_range():
    period = np.geomspace(0.05, 50, 500)
    fig = plots.periodogram_figure(period, np.random.default_rng(0).random(500),
                                   {"best": 0.7, "P/2": 0.35, "2P": 1.4, "catalogue": 0.7, "far": 1e6})
    lo, hi = fig.layout.xaxis.range
    assert fig.layout.xaxis.type == "log" and -1.4 < lo < -1.2 and 1.6 < hi < 1.8
    assert not fig.layout.shapes  # shapes on a log axis read x as log10(x)
    names = [t.name for t in fig.data[1:]]
    assert names == ["best = catalogue", "P/2", "2P"]  # one line per period; "far" is out of range
    assert all(isinstance(t, go.Scatter) and t.x[0] == t.x[1] for t in fig.data[1:])


def test_lightcurve_time_axis_reads_whole_days():
    frame = pd.DataFrame({"band": "V", "time": [53500.1, 53600.2], "mag": [15.0, 15.1], "mag_err": 0.01})
    assert plots.lightcurve_figure(frame).layout.xaxis.tickformat == ".0f"


def test_report_lists_are_plain_text():
    from lcdash.report import _plain_list

    assert _plain_list([np.str_("LPV-like"), "EA"]) == "LPV-like, EA"
    assert _plain_list({"LPV-like": 3}) == "LPV-like (3)"


def test_map_coverage_counts_objects_missing_from_the_map(app_db):
    with Store(app_db) as store:
        proj = workspace.find_projection(store, "tiny-test", "weighted", {k: v for k, v in
                                         workspace.FIRST_PROJECTION.items() if k != "embedding"})
        before = workspace.map_coverage(store, "tiny-test", proj)
        assert before["unembedded"] == 0 and before["unmapped"] == 0
        oids = store.objects(columns=["oid"])["oid"].head(3).tolist()
        store.con.execute("DELETE FROM embeddings WHERE oid IN (?, ?, ?)", oids)
        after = workspace.map_coverage(store, "tiny-test", proj)
        assert after["unembedded"] == 3 and after["objects"] == before["objects"]


def test_explore_says_how_many_objects_are_missing(app_db):
    with Store(app_db) as store:
        oids = store.objects(columns=["oid"])["oid"].head(7).tolist()
        store.con.execute("DELETE FROM embeddings WHERE oid IN (" + ",".join("?" * 7) + ")", oids)
    at = run(open_page("pages/explore.py"))
    text = " ".join(m.value for m in at.markdown)
    assert "7 of the store's 300 objects are not on this map" in text
    assert any(b.label.startswith("Embed the 7 missing objects") for b in at.button)
    # the demo encoder of this store is tiny-test (astromer1 config?): the label follows its arch
    labels = at.radio(key="explore_embedding").options
    assert labels[0].startswith("layer-weighted")


def test_label_page_does_not_claim_an_entropy_ranking_without_a_probe(app_db):
    with Store(app_db) as store:
        label_store.create_set(store, "first set")
    at = run(open_page("pages/label.py", set="first set"))
    text = " ".join(c.value for c in at.caption)
    assert "highest prediction entropy" not in text
    assert "No probe has run yet" in text


def test_hidden_home_redirects_to_explore(app_db):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).parents[2] / "app.py"), default_timeout=60).run()
    assert at.title[0].value == "Explore"


def _running_job(db: Path, tmp_path: Path, kind: str, params: dict) -> str:
    """A job row in state running whose "worker" is this test process (alive, never reporting):
    what a browser refresh finds while a real job runs."""
    import os

    from lcdash.store import jobs as jobs_table

    folder = tmp_path / f"{kind}-job"
    folder.mkdir()
    job_id = f"{kind}-20260101-000000-test00"
    with Store(db) as store:
        jobs_table.insert_job(store, job_id, kind, params, str(folder))
        jobs_table.update_job(store, job_id, state="running", pid=os.getpid(),
                              started_at=jobs_table.utcnow(), message="starting")
    return job_id


def test_after_a_refresh_the_probe_form_shows_the_running_job(app_db, tmp_path):
    params = {"encoder": "tiny-test", "labels": "catalogue", "survey": None, "band": None,
              "classes": ["EA", "LPV", "RRab"], "spc": [5], "folds": 2, "test_per_class": 4,
              "max_epochs": 7}
    _running_job(app_db, tmp_path, "probe", params)
    at = run(open_page("pages/probe.py"))  # a fresh session: what a refresh gives
    assert at.multiselect(key="probe_classes").value == ["EA", "LPV", "RRab"]
    assert at.multiselect(key="probe_spc").value == [5]
    assert at.number_input(key="probe_folds").value == 2
    assert at.number_input(key="probe_test").value == 4
    assert at.number_input(key="probe_epochs").value == 7
    assert at.button(key="probe_go").disabled is True  # no second copy while it runs
    bars = " ".join(str(p.proto.text) for p in at.get("progress"))
    assert "starting the worker" in bars


def test_after_a_refresh_the_compare_form_shows_the_running_job(app_db, tmp_path):
    params = {"models": ["rnn", "rf"], "encoder": None, "labels": "catalogue", "survey": None,
              "band": None, "classes": None, "spc": [5], "folds": 1, "test_per_class": 6,
              "max_epochs": 3, "scoring": "object", "sequence_input": "folded"}
    _running_job(app_db, tmp_path, "evaluate", params)
    at = run(open_page("pages/compare.py"))
    assert at.multiselect(key="compare_models").value == ["rnn", "rf"]
    assert at.number_input(key="compare_folds").value == 1
    assert at.number_input(key="compare_epochs").value == 3
    assert at.radio(key="compare_sequence_input").value == "folded"
    assert at.button(key="compare_go").disabled is True
